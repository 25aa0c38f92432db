//! The accept loop of the small service listeners (the control socket, the metrics listener):
//! one thread, one client at a time, polling its non-blocking listener so that it notices a
//! stop (reload, shutdown) within [`STOP_POLL`].

use log::warn;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the loop looks at its stop flag.
pub(crate) const STOP_POLL: Duration = Duration::from_millis(200);

/// Accept with `accept` on `listener` (non-blocking) and hand each client to `serve`, until
/// `stop` is set. `what` names the listener in the log.
pub(crate) fn accept_until_stopped<L: AsFd, S>(
    listener: &L,
    stop: &AtomicBool,
    what: &str,
    accept: impl Fn(&L) -> io::Result<S>,
    mut serve: impl FnMut(S),
) {
    let wait = PollTimeout::try_from(STOP_POLL.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    while !stop.load(Ordering::SeqCst) {
        let mut set = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut set, wait), Ok(n) if n > 0) {
            continue;
        }
        match accept(listener) {
            Ok(s) => serve(s),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => {
                warn!("{what}: accept: {e}");
                std::thread::sleep(STOP_POLL);
            }
        }
    }
}
