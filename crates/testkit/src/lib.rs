//! greenarrow_proxy_testkit: tooling for tests, benchmarks and `gaproxy`, never linked into
//! the daemon: a scriptable test MX ([`testmx`]) and certificates made at run time
//! ([`certgen`]); and the support the daemon's integration tests share: their starting
//! points ([`fixtures`]), the daemon as a child process ([`daemon`]), a byte-level MTA
//! connection ([`raw`]), MTA-side clients ([`mta`]), a DNS responder ([`fakedns`]), a real
//! Redis ([`redis`]) and network namespaces ([`netns`]).
//!
//! It does not depend on the daemon's library (the daemon dev-depends on it); what needs the
//! daemon in-process stays in the daemon's tests/common.

pub mod bin_path;
pub mod certgen;
pub mod daemon;
pub mod dnssec;
pub mod fakedns;
pub mod fixtures;
pub mod mta;
pub mod netns;
pub mod raw;
pub mod redis;
pub mod stsserver;
pub mod testmx;
