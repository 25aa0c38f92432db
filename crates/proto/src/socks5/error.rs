//! Why a SOCKS5 handshake ends: [`Socks5Error`], with the reply to send, a message and a tag.

use super::{reply, AddrFamily, AuthMode, ReplyCode};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Why the handshake cannot go on. `Display` is one line for an operator (peer bytes escaped).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Socks5Error {
    /// The greeting's version byte is not 5 (a SOCKS4 client, or not SOCKS at all).
    BadGreetingVersion {
        /// The byte found.
        version: u8,
    },
    /// The client offers no method the front-end accepts.
    NoAcceptableMethod {
        /// The methods offered.
        offered: Vec<u8>,
        /// What the front-end requires.
        auth: AuthMode,
    },
    /// The RFC 1929 sub-negotiation's version byte is not 1.
    BadAuthVersion {
        /// The byte found.
        version: u8,
    },
    /// A request's version byte is not 5.
    BadRequestVersion {
        /// The byte found.
        version: u8,
    },
    /// A request's reserved byte is not 0.
    BadReserved {
        /// The byte found.
        byte: u8,
        /// The request's family.
        family: AddrFamily,
    },
    /// An address type other than 1, 3 or 4.
    UnsupportedAddressType {
        /// The ATYP found.
        atyp: u8,
    },
    /// UDP ASSOCIATE (3) or an undefined command.
    UnsupportedCommand {
        /// The command found.
        command: u8,
        /// The request's family.
        family: AddrFamily,
    },
    /// A BIND with a non-zero port: an RFC 1928 inbound BIND, which the proxy does not do.
    InboundBind {
        /// The request's address.
        addr: SocketAddr,
    },
    /// A BIND by host name: the source must be an IP address.
    BindHostName {
        /// The name, escaped.
        name: String,
    },
    /// A second BIND.
    SecondBind {
        /// The source already bound.
        first: IpAddr,
        /// The request's family.
        family: AddrFamily,
    },
    /// A CONNECT to an address of the other family than the BIND's source.
    FamilyMismatch {
        /// The BIND's source.
        source: IpAddr,
        /// The CONNECT's destination.
        destination: SocketAddr,
    },
    /// An ATYP 3 name that is neither an IP literal nor a valid host name.
    BadHostName {
        /// The name, escaped.
        name: String,
    },
    /// [`Socks5Server::poll`](super::Socks5Server::poll) was called before [`Socks5Server::credentials_result`](super::Socks5Server::credentials_result).
    CredentialsUnanswered,
    /// [`Socks5Server::poll`](super::Socks5Server::poll) was called after an error or a refused password.
    Finished,
}

impl Socks5Error {
    /// The reply code to send for a failed request, `None` before the request stage (then
    /// only [`reply_bytes`](Self::reply_bytes) tells what, if anything, to send).
    pub fn reply_code(&self) -> Option<ReplyCode> {
        use Socks5Error::*;
        match self {
            BadRequestVersion { .. }
            | BadReserved { .. }
            | SecondBind { .. }
            | BadHostName { .. } => Some(ReplyCode::GeneralFailure),
            UnsupportedCommand { .. } | InboundBind { .. } => Some(ReplyCode::CommandNotSupported),
            UnsupportedAddressType { .. } | BindHostName { .. } | FamilyMismatch { .. } => {
                Some(ReplyCode::AddressTypeNotSupported)
            }
            BadGreetingVersion { .. }
            | NoAcceptableMethod { .. }
            | BadAuthVersion { .. }
            | CredentialsUnanswered
            | Finished => None,
        }
    }

    /// The bytes to send before closing, if any: `05 FF` for no acceptable method, `01 01` for
    /// a bad RFC 1929 version, a whole reply with [`reply_code`](Self::reply_code) and the
    /// request's family (IPv4 when unknown) for a refused request; `None` for a greeting that
    /// is not SOCKS5.
    pub fn reply_bytes(&self) -> Option<Vec<u8>> {
        use Socks5Error::*;
        let family = match self {
            NoAcceptableMethod { .. } => return Some(vec![0x05, 0xff]),
            BadAuthVersion { .. } => return Some(vec![0x01, 0x01]),
            BadReserved { family, .. }
            | UnsupportedCommand { family, .. }
            | SecondBind { family, .. } => *family,
            InboundBind { addr } => AddrFamily::of(addr.ip()),
            FamilyMismatch { destination, .. } => AddrFamily::of(destination.ip()),
            _ => AddrFamily::V4,
        };
        self.reply_code()
            .map(|code| reply(code, None, Some(family)))
    }

    /// A short machine-readable classification: `socks_protocol_error`,
    /// `socks_no_acceptable_method`, `socks_command_not_supported`,
    /// `socks_address_not_supported`, `socks_bad_host_name` or `socks_internal` (misuse of this
    /// API by the caller).
    pub fn tag(&self) -> &'static str {
        use Socks5Error::*;
        match self {
            BadGreetingVersion { .. }
            | BadAuthVersion { .. }
            | BadRequestVersion { .. }
            | BadReserved { .. }
            | SecondBind { .. } => "socks_protocol_error",
            NoAcceptableMethod { .. } => "socks_no_acceptable_method",
            UnsupportedCommand { .. } | InboundBind { .. } => "socks_command_not_supported",
            UnsupportedAddressType { .. } | BindHostName { .. } | FamilyMismatch { .. } => {
                "socks_address_not_supported"
            }
            BadHostName { .. } => "socks_bad_host_name",
            CredentialsUnanswered | Finished => "socks_internal",
        }
    }
}

/// `[00, 01]` as `00 01`.
fn hex_list(bytes: &[u8]) -> String {
    let words: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    words.join(" ")
}

impl fmt::Display for Socks5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Socks5Error::*;
        match self {
            BadGreetingVersion { version } => write!(
                f,
                "not a SOCKS5 greeting: version byte 0x{version:02x} (5 expected{})",
                if *version == 4 { "; a SOCKS4 client" } else { "" }
            ),
            NoAcceptableMethod { offered, auth } => {
                let wanted = match auth {
                    AuthMode::None => "no authentication (00)",
                    AuthMode::Password => "username/password (02)",
                };
                write!(
                    f,
                    "SOCKS5 client offers methods [{}] but this front-end requires {wanted}",
                    hex_list(offered)
                )
            }
            BadAuthVersion { version } => write!(
                f,
                "SOCKS5 username/password sub-negotiation with version 0x{version:02x} (1 expected)"
            ),
            BadRequestVersion { version } => write!(
                f,
                "SOCKS5 request with version byte 0x{version:02x} (5 expected)"
            ),
            BadReserved { byte, .. } => write!(
                f,
                "SOCKS5 request with reserved byte 0x{byte:02x} (0 expected)"
            ),
            UnsupportedAddressType { atyp } => write!(
                f,
                "SOCKS5 address type {atyp} not supported (1 IPv4, 3 name, 4 IPv6)"
            ),
            UnsupportedCommand { command, .. } => {
                let name = match command {
                    3 => " (UDP ASSOCIATE)",
                    _ => "",
                };
                write!(
                    f,
                    "SOCKS5 command {command}{name} not supported: only CONNECT, optionally after BIND <source-ip>:0"
                )
            }
            InboundBind { addr } => write!(
                f,
                "SOCKS5 BIND {addr}: inbound BIND is not supported; BIND <source-ip>:0 chooses the source address"
            ),
            BindHostName { name } => write!(
                f,
                "SOCKS5 BIND to the host name \"{name}\": the source must be an IP address"
            ),
            SecondBind { first, .. } => write!(
                f,
                "SOCKS5 second BIND (source {first} already chosen): one BIND, then CONNECT"
            ),
            FamilyMismatch {
                source,
                destination,
            } => write!(
                f,
                "SOCKS5 CONNECT {destination} from source {source}: different address families"
            ),
            BadHostName { name } => write!(
                f,
                "SOCKS5 destination \"{name}\" is neither an IP address nor a valid host name"
            ),
            CredentialsUnanswered => write!(
                f,
                "SOCKS5 handshake polled before the credentials were answered"
            ),
            Finished => write!(f, "SOCKS5 handshake polled after it failed"),
        }
    }
}

impl std::error::Error for Socks5Error {}
