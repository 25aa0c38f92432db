//! MTA-side clients for the front-end tests (PROXY, SOCKS5, the SMTP front-end): real programs
//! run as bounded child processes ([`clients`]: swaks, curl, msmtp; [`exim`]) and a
//! byte-faithful KumoMTA egress client in this process ([`kumo`]). A missing program makes its
//! test skip, never fail.

pub mod clients;
pub mod exim;
pub mod kumo;
