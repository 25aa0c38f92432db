//! A bounded pool of threads with a bounded queue: the session workers, and the threads that
//! say QUIT off the sessions' path (`pool::reaper::quit_detached`).
//!
//! Threads are started on demand, up to `max_workers`, and then stay for the life of the
//! process waiting for work. Accepted connections wait in a queue of at most `max_queued`
//! entries; when it is full, [`WorkerPool::try_submit`] hands the job back so the caller can
//! refuse the connection. Nothing here grows without bound.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;

/// A unit of work: one MTA session.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    queue: VecDeque<Job>,
    spawned: usize,
    idle: usize,
    /// Threads spawned that have not yet taken the lock for the first time: each will take
    /// a job from the queue, so jobs waiting for them are not "queued" against the limit.
    starting: usize,
    shutdown: bool,
}

struct Inner {
    state: Mutex<State>,
    work: Condvar,
    /// Signalled when a worker becomes idle (for [`WorkerPool::wait_idle`]).
    idle: Condvar,
    max_workers: usize,
    max_queued: usize,
    stack_size: usize,
}

/// Counts for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolCounts {
    /// Sessions being served now.
    pub busy: usize,
    /// Threads started so far.
    pub threads: usize,
    /// Connections waiting for a thread.
    pub queued: usize,
    /// The most threads the pool starts (`max_sessions` in force).
    pub max: usize,
}

/// The pool. Cloning shares it.
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<Inner>,
}

impl WorkerPool {
    /// A pool of at most `max_workers` threads of `stack_size` bytes and a queue of
    /// `max_queued` waiting jobs.
    pub fn new(max_workers: usize, max_queued: usize, stack_size: usize) -> WorkerPool {
        WorkerPool {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    spawned: 0,
                    idle: 0,
                    starting: 0,
                    shutdown: false,
                }),
                work: Condvar::new(),
                idle: Condvar::new(),
                max_workers: max_workers.max(1),
                max_queued,
                stack_size,
            }),
        }
    }

    /// Queue `job`; starts a thread if none is idle and the limit allows. Returns the job back
    /// when the pool is saturated (every thread busy and the queue full) or shut down.
    pub fn try_submit(&self, job: Job) -> Result<(), Job> {
        let mut st = self.inner.state.lock();
        if st.shutdown {
            return Err(job);
        }
        let can_spawn = st.spawned < self.inner.max_workers;
        let takers = st.idle + st.starting;
        let waiting_for_thread = st.queue.len() + 1 > takers;
        let truly_queued = st.queue.len().saturating_sub(takers);
        if waiting_for_thread && !can_spawn && truly_queued >= self.inner.max_queued {
            return Err(job);
        }
        st.queue.push_back(job);
        if waiting_for_thread && can_spawn {
            st.spawned += 1;
            st.starting += 1;
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("session".into())
                .stack_size(self.inner.stack_size)
                .spawn(move || worker(inner));
            if spawned.is_err() {
                st.spawned -= 1;
                st.starting -= 1;
                // No thread: take the job back out unless a waiting worker can run it.
                if st.idle + st.starting < st.queue.len() {
                    return st.queue.pop_back().map_or(Ok(()), Err);
                }
            }
        }
        drop(st);
        self.inner.work.notify_one();
        Ok(())
    }

    /// Current counts.
    pub fn counts(&self) -> PoolCounts {
        let st = self.inner.state.lock();
        PoolCounts {
            busy: st.spawned - st.idle - st.starting,
            threads: st.spawned,
            queued: st.queue.len(),
            max: self.inner.max_workers,
        }
    }

    /// Refuse new jobs from now on; idle threads exit.
    pub fn shutdown(&self) {
        self.inner.state.lock().shutdown = true;
        self.inner.work.notify_all();
    }

    /// Wait until no session is running or queued, or until `timeout`. True if idle.
    pub fn wait_idle(&self, timeout: std::time::Duration) -> bool {
        let deadline = greenarrow_proxy_net::deadline::Deadline::after(timeout).instant();
        let mut st = self.inner.state.lock();
        while st.spawned > st.idle || !st.queue.is_empty() {
            if self.inner.idle.wait_until(&mut st, deadline).timed_out() {
                return st.spawned == st.idle && st.queue.is_empty();
            }
        }
        true
    }
}

fn worker(inner: Arc<Inner>) {
    let mut st = inner.state.lock();
    st.starting -= 1;
    loop {
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            job();
            st = inner.state.lock();
            continue;
        }
        if st.shutdown {
            st.spawned -= 1;
            inner.idle.notify_all();
            return;
        }
        st.idle += 1;
        inner.idle.notify_all();
        inner.work.wait(&mut st);
        st.idle -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn bounded_threads_and_queue() {
        let pool = WorkerPool::new(2, 1, 64 * 1024);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let mk = || -> Job {
            let r = release_rx.clone();
            let s = started_tx.clone();
            Box::new(move || {
                s.send(()).unwrap();
                let _ = r.lock().recv();
            })
        };
        assert!(pool.try_submit(mk()).is_ok());
        assert!(pool.try_submit(mk()).is_ok());
        started_rx.recv().unwrap();
        started_rx.recv().unwrap();
        // Both threads busy: one may queue, the next is refused.
        assert!(pool.try_submit(mk()).is_ok());
        assert!(pool.try_submit(mk()).is_err());
        assert_eq!(
            pool.counts(),
            PoolCounts {
                busy: 2,
                threads: 2,
                queued: 1,
                max: 2
            }
        );
        for _ in 0..3 {
            release_tx.send(()).unwrap();
        }
        started_rx.recv().unwrap();
        assert!(pool.wait_idle(Duration::from_secs(10)));
        assert_eq!(pool.counts().threads, 2);
        pool.shutdown();
        assert!(pool.try_submit(Box::new(|| {})).is_err());
    }
}
