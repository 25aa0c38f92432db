//! The reaper thread: QUITs and closes idle connections once they pass `pool.idle_ttl` or
//! `pool.reuse_time_limit`. It sleeps until the next expiry (at most a second, so that new
//! limits from a reload apply promptly) and does all network I/O outside the pool lock.

use super::{Entry, Pool};
use crate::workers::WorkerPool;
use greenarrow_proxy_net::deadline::Deadline;
use log::info;
use parking_lot::{Condvar, Mutex};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long to wait for a 221 after QUIT on an expiring connection.
pub const QUIT_WAIT: Duration = Duration::from_secs(2);

/// At most this many threads say QUIT at once.
const QUIT_THREADS: usize = 16;

/// At most this many [`quit_detached`] jobs wait for a QUIT thread; beyond, connections are
/// closed without QUIT (a polite QUIT is a courtesy, threads are not free).
const MAX_DETACHED_QUITS: usize = 256;

/// Stack size of a QUIT thread (a TLS close included).
const QUIT_STACK: usize = 256 * 1024;

/// The threads that say QUIT off the sessions' path: started on demand (at most
/// [`QUIT_THREADS`]), then kept, with a queue of at most [`MAX_DETACHED_QUITS`] jobs.
fn quitters() -> &'static WorkerPool {
    static POOL: OnceLock<WorkerPool> = OnceLock::new();
    POOL.get_or_init(|| WorkerPool::new(QUIT_THREADS, MAX_DETACHED_QUITS, QUIT_STACK))
}

/// QUIT and close `conns` off the calling thread (a session's path must not wait for an MX's
/// `221`): a job for the QUIT threads, which run [`quit_all`]. When they are all busy and
/// their queue is full, the connections are closed without QUIT.
pub fn quit_detached<P: Send + 'static>(conns: Vec<Entry<P>>) {
    if conns.is_empty() {
        return;
    }
    // Refused, the job is dropped: the connections close without QUIT.
    let _ = quitters().try_submit(Box::new(move || quit_all(conns)));
}

/// Wait until every [`quit_detached`] job has ended, or `until`; true if none is left (a
/// drain waits for them: QUITs in progress are not cut off by the process's exit).
pub fn wait_detached_quits(until: Deadline) -> bool {
    quitters().wait_idle(until.remaining())
}

/// Say QUIT to each connection and close it, on up to [`QUIT_THREADS`] threads so that a slow
/// MX does not hold up the rest (each waits at most [`QUIT_WAIT`] per connection).
pub fn quit_all<P: Send>(conns: Vec<Entry<P>>) {
    if conns.len() <= 1 {
        conns.into_iter().for_each(|c| c.quit(QUIT_WAIT));
        return;
    }
    let work = parking_lot::Mutex::new(conns);
    let threads = work.lock().len().min(QUIT_THREADS);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let next = work.lock().pop();
                match next {
                    Some(c) => c.quit(QUIT_WAIT),
                    None => return,
                }
            });
        }
    });
}

/// Handle to stop the reaper.
pub struct Reaper {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// Start reaping `pool`; `verbose` logs each expiry.
    pub fn start<P: Send + Sync + 'static>(
        pool: Arc<Pool<P>>,
        verbose: impl Fn() -> bool + Send + 'static,
    ) -> std::io::Result<Reaper> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new().name("pool reaper".into()).spawn(move || loop {
            let now = Instant::now();
            let wake = pool
                .next_expiry()
                .map_or(now + Duration::from_secs(1), |t| t.min(now + Duration::from_secs(1)));
            {
                let (lock, cv) = &*s2;
                let mut stopped = lock.lock();
                if !*stopped {
                    cv.wait_until(&mut stopped, wake);
                }
                if *stopped {
                    return;
                }
            }
            let expired = pool.take_expired(Instant::now());
            if !expired.is_empty() && verbose() {
                for c in &expired {
                    info!(source:% = c.local().ip(), mx:% = c.remote(); "pool: closing an idle connection (idle or age limit reached)");
                }
            }
            quit_all(expired);
        })?;
        Ok(Reaper {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop the thread and wait for it.
    pub fn stop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock() = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop();
    }
}
