//! Crate-wide macros.

/// Log at info level when `log_verbose` is on.
///
/// Key-values become structured journal fields (`MTA`, `SOURCE`, `MX`) and trail the text on
/// stderr: `verbose!(rt, mta = peer, mx = addr; "kept for reuse")`.
macro_rules! verbose {
    ($rt:expr, $($key:ident = $val:expr),+ ; $($arg:tt)+) => {
        if $rt.config.log_verbose {
            log::info!($($key:% = $val),+ ; $($arg)+);
        }
    };
}
