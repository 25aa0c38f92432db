//! greenarrow_proxy_testkit: tooling for tests, benchmarks and `gaproxy`, never linked into
//! the daemon: a scriptable test MX ([`testmx`]) and certificates made at run time
//! ([`certgen`]).

pub mod bin_path;
pub mod certgen;
pub mod testmx;
