//! The server side of SOCKS5 (RFC 1928) with username/password authentication (RFC 1929), as
//! a sans-I/O state machine.
//!
//! The listener keeps the bytes received and not yet consumed in a buffer and calls
//! [`Socks5Server::poll`] with all of them; each [`Step`] says how many bytes it took
//! (`consume`, exact: a client's pipelined next message stays in the buffer) and what the
//! listener must do:
//!
//! 1. Greeting `05 n methods…` → [`Step::Reply`] with the method choice (`05 00` or `05 02`).
//! 2. With `02`: `01 ulen user plen pass` → [`Step::Credentials`]; the listener checks them
//!    and sends [`Socks5Server::credentials_result`] (`01 00` / `01 01`, closing on failure).
//! 3. Requests `05 cmd 00 atyp addr port`:
//!    - at most one BIND, before the CONNECT, carrying the *source* address the client wants
//!      (KumoMTA's dialect: `BIND <source-ip>:0`) → [`Step::Bind`]; the listener answers with
//!      [`reply`] (success with the source, or a failure code, then closes);
//!    - CONNECT → [`Step::Connect`]; the listener connects and answers with [`reply`] (the
//!      real local `ip:port` on success). The machine is then done ([`Step::Done`]): the rest
//!      of the buffer is the client's first bytes for the MX.
//!
//! Any [`Socks5Error`] ends the session: send [`Socks5Error::reply_bytes`] if there are any,
//! then close.
//!
//! Accepted: methods 00 (with [`AuthMode::None`]) and 02 (with [`AuthMode::Password`]), never
//! 01 (GSSAPI); address types 1 (IPv4), 4 (IPv6) and 3 (a name: an IP literal, as msmtp always
//! sends, comes out as [`SocksAddr::Ip`]; anything else must be a valid host name and comes out
//! as [`SocksAddr::Domain`] for the caller to resolve). Addresses are returned as written: an
//! IPv4-mapped IPv6 address stays IPv6 here (so that the reply has the request's family); its
//! family is IPv4 by `dns::Family`, the rule the rest of the proxy uses. Refused: UDP ASSOCIATE and unknown
//! commands (07), an RFC 1928 inbound BIND (port ≠ 0) (07), a BIND by host name (08), a
//! second BIND (01), a CONNECT of the other family than the BIND (08), unknown address types
//! (08), a non-zero reserved byte or wrong version (01).

use crate::escape::escaped;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

mod error;
mod reply;
#[cfg(test)]
mod tests;

pub use error::Socks5Error;
pub use reply::{reply, AddrFamily, ReplyCode};

/// The longest message a client sends during the handshake (RFC 1929 with a 255-byte user name
/// and password): [`Socks5Server::poll`] never answers [`Step::NeedMore`] to this many bytes.
pub const MAX_MESSAGE_LEN: usize = 3 + 255 + 255;

/// Which authentication method the front-end requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Method 00: no authentication.
    None,
    /// Method 02: RFC 1929 username/password.
    Password,
}

impl AuthMode {
    /// The method byte.
    fn method(self) -> u8 {
        match self {
            AuthMode::None => 0x00,
            AuthMode::Password => 0x02,
        }
    }
}

/// A destination (or source) address from a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocksAddr {
    /// ATYP 1 or 4, or ATYP 3 holding an IP literal.
    Ip(SocketAddr),
    /// ATYP 3 holding a host name (syntax checked: letters, digits, hyphens, underscores;
    /// labels of 1–63; not all-numeric at the end), and the port. To be resolved by the caller.
    Domain(String, u16),
}

impl SocksAddr {
    /// The family the reply must have: the address's own for an IP, `None` for a host name
    /// (then [`reply`] follows the bound address).
    pub fn family(&self) -> Option<AddrFamily> {
        match self {
            SocksAddr::Ip(a) => Some(AddrFamily::of(a.ip())),
            SocksAddr::Domain(..) => None,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            SocksAddr::Ip(a) => a.port(),
            SocksAddr::Domain(_, port) => *port,
        }
    }
}

impl fmt::Display for SocksAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocksAddr::Ip(a) => write!(f, "{a}"),
            SocksAddr::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// What the listener must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Not enough bytes for the next message: read more, then call again with all of them.
    NeedMore,
    /// Drop `consume` bytes and send `bytes` (the method selection) in one write.
    Reply {
        /// Bytes of input used.
        consume: usize,
        /// The bytes to send.
        bytes: Vec<u8>,
    },
    /// Drop `consume` bytes; check the credentials and send
    /// [`Socks5Server::credentials_result`].
    Credentials {
        /// Bytes of input used.
        consume: usize,
        /// The RFC 1929 user name (0–255 bytes, as sent).
        username: Vec<u8>,
        /// The password (0–255 bytes, as sent).
        password: Vec<u8>,
    },
    /// Drop `consume` bytes; the client wants to send from `source` (KumoMTA's BIND). Check
    /// it, then send [`reply`] with `Some(AddrFamily::of(source))`; on failure, close.
    Bind {
        /// Bytes of input used.
        consume: usize,
        /// The source address wanted (the request's port was 0).
        source: IpAddr,
    },
    /// Drop `consume` bytes; connect to `addr` (from the BIND's source if there was one) and
    /// send [`reply`] with `addr.family()`. The handshake is over.
    Connect {
        /// Bytes of input used.
        consume: usize,
        /// The destination.
        addr: SocksAddr,
    },
    /// The handshake is over (a CONNECT was returned): the input belongs to the relay.
    Done,
}

impl Step {
    /// The bytes of input this step used (to drop before the next poll).
    pub fn consumed(&self) -> usize {
        match self {
            Step::Reply { consume, .. }
            | Step::Credentials { consume, .. }
            | Step::Bind { consume, .. }
            | Step::Connect { consume, .. } => *consume,
            Step::NeedMore | Step::Done => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Greeting,
    Credentials,
    AwaitingVerdict,
    Requests { bound: Option<IpAddr> },
    Done,
    Failed,
}

/// One client's SOCKS5 handshake, server side.
#[derive(Clone, Debug)]
pub struct Socks5Server {
    auth: AuthMode,
    state: State,
}

impl Socks5Server {
    /// A handshake requiring `auth`.
    pub fn new(auth: AuthMode) -> Socks5Server {
        Socks5Server {
            auth,
            state: State::Greeting,
        }
    }

    /// Whether a CONNECT has been returned.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The source chosen by a BIND, once its [`Step::Bind`] has been returned.
    pub fn bound_source(&self) -> Option<IpAddr> {
        match self.state {
            State::Requests { bound } => bound,
            _ => None,
        }
    }

    /// Take the next message from the front of `input` (every byte received and not yet
    /// consumed). On an error the machine is finished; later calls return
    /// [`Socks5Error::Finished`].
    pub fn poll(&mut self, input: &[u8]) -> Result<Step, Socks5Error> {
        let result = match self.state {
            State::Greeting => self.greeting(input),
            State::Credentials => self.credentials(input),
            State::AwaitingVerdict => Err(Socks5Error::CredentialsUnanswered),
            State::Requests { bound } => self.request(input, bound),
            State::Done => Ok(Step::Done),
            State::Failed => Err(Socks5Error::Finished),
        };
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// The RFC 1929 status to send after [`Step::Credentials`]: `01 00` when `ok`, else
    /// `01 01` (then close: the machine is finished). Outside that state it returns `01 01`
    /// and finishes the machine.
    pub fn credentials_result(&mut self, ok: bool) -> Vec<u8> {
        if ok && self.state == State::AwaitingVerdict {
            self.state = State::Requests { bound: None };
            vec![0x01, 0x00]
        } else {
            self.state = State::Failed;
            vec![0x01, 0x01]
        }
    }

    /// `05 n methods…`
    fn greeting(&mut self, input: &[u8]) -> Result<Step, Socks5Error> {
        let Some(&version) = input.first() else {
            return Ok(Step::NeedMore);
        };
        if version != 0x05 {
            return Err(Socks5Error::BadGreetingVersion { version });
        }
        let Some(&n) = input.get(1) else {
            return Ok(Step::NeedMore);
        };
        let consume = 2 + usize::from(n);
        let Some(methods) = input.get(2..consume) else {
            return Ok(Step::NeedMore);
        };
        let method = self.auth.method();
        if !methods.contains(&method) {
            return Err(Socks5Error::NoAcceptableMethod {
                offered: methods.to_vec(),
                auth: self.auth,
            });
        }
        self.state = match self.auth {
            AuthMode::None => State::Requests { bound: None },
            AuthMode::Password => State::Credentials,
        };
        Ok(Step::Reply {
            consume,
            bytes: vec![0x05, method],
        })
    }

    /// `01 ulen user plen pass`
    fn credentials(&mut self, input: &[u8]) -> Result<Step, Socks5Error> {
        let Some(&version) = input.first() else {
            return Ok(Step::NeedMore);
        };
        if version != 0x01 {
            return Err(Socks5Error::BadAuthVersion { version });
        }
        let Some(&ulen) = input.get(1) else {
            return Ok(Step::NeedMore);
        };
        let user_end = 2 + usize::from(ulen);
        let Some(&plen) = input.get(user_end) else {
            return Ok(Step::NeedMore);
        };
        let consume = user_end + 1 + usize::from(plen);
        let (Some(username), Some(password)) =
            (input.get(2..user_end), input.get(user_end + 1..consume))
        else {
            return Ok(Step::NeedMore);
        };
        self.state = State::AwaitingVerdict;
        Ok(Step::Credentials {
            consume,
            username: username.to_vec(),
            password: password.to_vec(),
        })
    }

    /// `05 cmd 00 atyp addr port`
    fn request(&mut self, input: &[u8], bound: Option<IpAddr>) -> Result<Step, Socks5Error> {
        let Some(&version) = input.first() else {
            return Ok(Step::NeedMore);
        };
        if version != 0x05 {
            return Err(Socks5Error::BadRequestVersion { version });
        }
        let Some(&[_, command, reserved, atyp]) = input.get(..4) else {
            // The reserved byte is judged once the address type gives the reply's family.
            return Ok(Step::NeedMore);
        };
        let addr_len = match atyp {
            0x01 => 4,
            0x04 => 16,
            0x03 => match input.get(4) {
                Some(&n) => 1 + usize::from(n),
                None => return Ok(Step::NeedMore),
            },
            atyp => return Err(Socks5Error::UnsupportedAddressType { atyp }),
        };
        let consume = 4 + addr_len + 2;
        let Some(message) = input.get(..consume) else {
            return Ok(Step::NeedMore);
        };
        let raw = message.get(4..4 + addr_len).unwrap_or_default();
        let port_bytes = message.get(4 + addr_len..).unwrap_or_default();
        let port = u16::from_be_bytes(port_bytes.try_into().unwrap_or([0, 0]));
        let addr = decode_addr(atyp, raw, port);
        let family = match &addr {
            Ok(a) => a.family().unwrap_or(AddrFamily::V4),
            Err(_) => AddrFamily::V4,
        };
        if reserved != 0 {
            return Err(Socks5Error::BadReserved {
                byte: reserved,
                family,
            });
        }
        if command != 0x01 && command != 0x02 {
            return Err(Socks5Error::UnsupportedCommand { command, family });
        }
        let addr = addr?;
        if command == 0x02 {
            if let Some(first) = bound {
                return Err(Socks5Error::SecondBind { first, family });
            }
            let source = match addr {
                SocksAddr::Ip(a) if a.port() != 0 => {
                    return Err(Socks5Error::InboundBind { addr: a })
                }
                SocksAddr::Ip(a) => a.ip(),
                SocksAddr::Domain(name, _) => return Err(Socks5Error::BindHostName { name }),
            };
            self.state = State::Requests {
                bound: Some(source),
            };
            return Ok(Step::Bind { consume, source });
        }
        if let (Some(source), SocksAddr::Ip(destination)) = (bound, &addr) {
            if !crate::family::Family::same(&source, &destination.ip()) {
                return Err(Socks5Error::FamilyMismatch {
                    source,
                    destination: *destination,
                });
            }
        }
        self.state = State::Done;
        Ok(Step::Connect { consume, addr })
    }
}

/// The address of a request from its type, raw bytes (for type 3: length byte and name) and
/// port.
fn decode_addr(atyp: u8, raw: &[u8], port: u16) -> Result<SocksAddr, Socks5Error> {
    let ip = match atyp {
        0x01 => <[u8; 4]>::try_from(raw).map(IpAddr::from).ok(),
        0x04 => <[u8; 16]>::try_from(raw).map(IpAddr::from).ok(),
        _ => None,
    };
    if let Some(ip) = ip {
        return Ok(SocksAddr::Ip(SocketAddr::new(ip, port)));
    }
    let name = raw.get(1..).unwrap_or_default();
    let bad = || Socks5Error::BadHostName {
        name: escaped(name, 64),
    };
    let text = std::str::from_utf8(name).map_err(|_| bad())?;
    if let Some(ip) = ip_literal(text) {
        return Ok(SocksAddr::Ip(SocketAddr::new(ip, port)));
    }
    if !is_host_name(text) {
        return Err(bad());
    }
    Ok(SocksAddr::Domain(text.to_string(), port))
}

/// `192.0.2.1`, `2001:db8::1` or `[2001:db8::1]`.
fn ip_literal(text: &str) -> Option<IpAddr> {
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    text.parse().ok()
}

/// A host name the resolver may be asked about: the protocol's host-name syntax, and a last
/// label that is not all digits (`1.2.3.256`, `127.000.0.1` are broken IP literals, not names).
fn is_host_name(text: &str) -> bool {
    let last = text
        .strip_suffix('.')
        .unwrap_or(text)
        .rsplit('.')
        .next()
        .unwrap_or_default();
    crate::protocol::request::is_valid_hostname(text) && !last.bytes().all(|b| b.is_ascii_digit())
}
