//! The shared caps' two threads.
//!
//! - The keeper: every third of the lease time, the heartbeat (this host is alive, how many
//!   are) and one renewal script per shared group (every lease this host holds; the answer is
//!   every holder, for the status view). In fallback, a successful round re-registers every
//!   lease held and only then moves to rejoining. Between rounds it gives leases back as their
//!   connections close (one script per group and batch), keeping the ones Redis did not take
//!   for the next round.
//! - The listener: subscribed to `P:released:*`; each message (a lease given back by any host)
//!   wakes the waiters here. Reconnects after a failure, a third of the lease time later.

use super::link::LinkError;
use super::{Inner, Note};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Releases kept for a later round at most (beyond, they expire in Redis by themselves).
const MAX_PENDING: usize = 100_000;

pub(super) fn spawn(inner: Arc<Inner>, notes: Receiver<Note>) {
    let keeper = inner.clone();
    let _ = std::thread::Builder::new()
        .name("caps.shared keeper".into())
        .spawn(move || keep(keeper, notes));
    let _ = std::thread::Builder::new()
        .name("caps.shared listener".into())
        .spawn(move || listen(inner));
}

fn period(inner: &Inner) -> Duration {
    inner.config.lease / 3
}

fn keep(inner: Arc<Inner>, notes: Receiver<Note>) {
    let mut pending: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut next_round = Instant::now();
    loop {
        let stopping = inner.stop.load(Ordering::SeqCst);
        if stopping && inner.state.lock().book.held_count() == 0 && pending.is_empty() {
            return;
        }
        let now = Instant::now();
        if now >= next_round {
            round(&inner, &mut pending);
            next_round = Instant::now() + period(&inner);
        }
        let wait = next_round.saturating_duration_since(Instant::now());
        match notes.recv_timeout(wait) {
            Ok(n) => {
                add(&mut pending, n);
                while let Ok(n) = notes.try_recv() {
                    add(&mut pending, n);
                }
                if let Err(e) = release(&inner, &mut pending) {
                    inner.failed(&e);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn add(pending: &mut BTreeMap<String, Vec<String>>, n: Note) {
    let Note::Release(group, member) = n;
    let total: usize = pending.values().map(Vec::len).sum();
    if total < MAX_PENDING {
        pending.entry(group).or_default().push(member);
    }
}

/// Give back the pending releases (what failed stays pending).
fn release(inner: &Inner, pending: &mut BTreeMap<String, Vec<String>>) -> Result<(), LinkError> {
    while let Some((group, members)) = pending.pop_first() {
        if let Err(e) = inner.link.release(&group, &members) {
            pending.insert(group, members);
            return Err(e);
        }
    }
    Ok(())
}

/// One round: releases still pending, the heartbeat, the renewals; then the health.
fn round(inner: &Inner, pending: &mut BTreeMap<String, Vec<String>>) {
    let result = (|| {
        release(inner, pending)?;
        let live = inner.link.heartbeat(&inner.config.host)?;
        let (held, mark) = {
            let st = inner.state.lock();
            (st.book.held_members(), st.book.mark())
        };
        let mut holders = Vec::with_capacity(held.len());
        for (group, members) in held {
            let all = inner.link.renew(&group, &members)?;
            holders.push((group, all));
        }
        Ok::<_, LinkError>((live, mark, holders))
    })();
    match result {
        Ok((live, mark, holders)) => {
            let t = {
                let mut st = inner.state.lock();
                for (group, all) in &holders {
                    st.book.set_holders(group, all);
                }
                let t = st.book.redis_ok(live, Some(mark), Instant::now());
                inner.bump(&mut st);
                t
            };
            inner.log(t);
        }
        Err(e) => inner.failed(&e),
    }
}

fn listen(inner: Arc<Inner>) {
    while !inner.stop.load(Ordering::SeqCst) {
        if let Err(e) = subscribed(&inner) {
            log::debug!("caps.shared listener: {e}");
        }
        // Wait a third of the lease time before reconnecting (or until stopped).
        let until = Instant::now() + period(&inner);
        while Instant::now() < until && !inner.stop.load(Ordering::SeqCst) {
            let generation = inner.state.lock().generation;
            inner.nap(generation, until);
        }
    }
}

/// Listen until the connection fails or the caps stop.
fn subscribed(inner: &Inner) -> Result<(), LinkError> {
    let mut conn = inner.link.connect()?;
    let mut ps = conn.as_pubsub();
    ps.psubscribe(inner.link.channel_pattern())?;
    // Releases may have been missed while not subscribed.
    {
        let mut st = inner.state.lock();
        inner.bump(&mut st);
    }
    ps.set_read_timeout(Some(Duration::from_secs(1)))?;
    while !inner.stop.load(Ordering::SeqCst) {
        match ps.get_message() {
            Ok(_) => {
                let mut st = inner.state.lock();
                inner.bump(&mut st);
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
