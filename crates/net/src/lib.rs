//! greenarrow_proxy_net: the blocking stream layer shared by the daemon, the client library
//! and the test kit: [`bufconn::BufConn`] (buffered reads of SMTP lines and replies within
//! deadlines), [`tls`] (rustls configurations and streams for each side) and [`deadline`]
//! (the one deadline type: its arithmetic, with the clock read or the time given).

pub mod bufconn;
pub mod deadline;
pub mod tls;
