//! greenarrow_proxy_net: the blocking stream layer shared by the daemon, the client library
//! and the test kit: [`bufconn::BufConn`] (buffered reads of SMTP lines and replies within
//! deadlines) and [`tls`] (rustls configurations and streams for each side).

pub mod bufconn;
pub mod tls;
