//! Why a PROXY header is refused: [`ProxyHeaderError`], with messages for operators and tags.

use super::V1_MAX_LEN;
use std::fmt;
use std::net::IpAddr;

/// Which address of a header an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The first address (the wanted source).
    Source,
    /// The second address (the MX).
    Destination,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endpoint::Source => "source",
            Endpoint::Destination => "destination",
        })
    }
}

/// Why bytes are not an acceptable PROXY header. `Display` is one line an operator can read
/// (peer bytes are escaped, never raw); [`tag`](ProxyHeaderError::tag) classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// The bytes start with neither `PROXY ` nor the v2 signature (the peer does not speak
    /// the PROXY protocol, or speaks TLS, SOCKS or SMTP straight away).
    NotProxy {
        /// The first bytes received (at most 16), escaped.
        start: String,
        /// A guess at what the peer speaks, or "".
        hint: &'static str,
    },
    /// v1: no CRLF within the first [`V1_MAX_LEN`](super::V1_MAX_LEN) bytes.
    LineTooLong,
    /// v1: a byte other than printable ASCII before the CRLF (or a CR not followed by LF).
    BadCharacter {
        /// The offending byte.
        byte: u8,
        /// Its offset from the start of the header.
        offset: usize,
    },
    /// v1: the line ends with a bare LF.
    MissingCr,
    /// v1: not `PROXY <proto> <src> <dst> <sport> <dport>` with single spaces.
    BadSyntax {
        /// The line without its CRLF.
        line: String,
    },
    /// v1: the protocol word is not `TCP4`, `TCP6` or `UNKNOWN` (`UDP4`, lower case, ...).
    BadProtocol {
        /// The word found, escaped.
        found: String,
    },
    /// v1: an address that is not an address of the family the protocol word says.
    BadAddress {
        /// Which address.
        endpoint: Endpoint,
        /// `TCP4` or `TCP6`.
        protocol: &'static str,
        /// The text found.
        found: String,
    },
    /// v1: a port that is not a decimal number 0–65535.
    BadPort {
        /// Which port.
        endpoint: Endpoint,
        /// The text found.
        found: String,
    },
    /// Source and destination are of different families (possible only through an
    /// IPv4-mapped IPv6 address).
    FamilyMismatch {
        /// The source address (IPv4-mapped ones unmapped).
        source: IpAddr,
        /// The destination address (IPv4-mapped ones unmapped).
        destination: IpAddr,
    },
    /// v2: the version nibble is not 2.
    BadVersion {
        /// The version found.
        version: u8,
    },
    /// v2: the command nibble is neither LOCAL (0) nor PROXY (1).
    UnsupportedCommand {
        /// The command found.
        command: u8,
    },
    /// v2 PROXY: the family/protocol byte is not TCP over IPv4 or IPv6 (UDP, AF_UNIX,
    /// AF_UNSPEC, undefined values).
    UnsupportedFamily {
        /// The byte found.
        family: u8,
    },
    /// v2: the length field exceeds [`V2_MAX_PAYLOAD`](super::V2_MAX_PAYLOAD).
    TooLong {
        /// The length announced.
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// v2 PROXY: the length field is shorter than the family's address block.
    AddressesTruncated {
        /// The length announced.
        length: usize,
        /// The size of the address block (12 or 36).
        needed: usize,
    },
    /// v2: a TLV that does not fit in the header, or a CRC32C TLV whose value is not 4 bytes.
    BadTlv {
        /// Offset of the TLV from the start of the header.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// v2: the CRC32C TLV does not match the header.
    ChecksumMismatch {
        /// The checksum in the TLV.
        received: u32,
        /// The checksum of the header as received.
        computed: u32,
    },
}

impl ProxyHeaderError {
    /// A short machine-readable classification for logs, counters and the `421` line:
    /// `proxy_header_missing` (the peer sent no PROXY header), `proxy_header_too_long`,
    /// `proxy_header_unsupported` (a valid header asking for something this proxy does not
    /// do: UDP, AF_UNIX, mixed families, an unknown version or command),
    /// `proxy_header_checksum` (CRC32C mismatch) or `proxy_header_invalid` (malformed).
    pub fn tag(&self) -> &'static str {
        use ProxyHeaderError::*;
        match self {
            NotProxy { .. } => "proxy_header_missing",
            LineTooLong | TooLong { .. } => "proxy_header_too_long",
            FamilyMismatch { .. }
            | BadVersion { .. }
            | UnsupportedCommand { .. }
            | UnsupportedFamily { .. } => "proxy_header_unsupported",
            ChecksumMismatch { .. } => "proxy_header_checksum",
            BadCharacter { .. }
            | MissingCr
            | BadSyntax { .. }
            | BadProtocol { .. }
            | BadAddress { .. }
            | BadPort { .. }
            | AddressesTruncated { .. }
            | BadTlv { .. } => "proxy_header_invalid",
        }
    }
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProxyHeaderError::*;
        match self {
            NotProxy { start, hint } => {
                write!(f, "not a PROXY protocol header: the connection starts with \"{start}\"")?;
                if !hint.is_empty() {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            LineTooLong => write!(f, "PROXY v1 line without CRLF within {V1_MAX_LEN} bytes"),
            BadCharacter { byte, offset } => write!(
                f,
                "PROXY v1 line has the byte 0x{byte:02x} at offset {offset} (printable ASCII and a final CRLF only)"
            ),
            MissingCr => write!(f, "PROXY v1 line ends with a bare LF (CRLF required)"),
            BadSyntax { line } => write!(
                f,
                "malformed PROXY v1 line \"{line}\" (expected \"PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\" with single spaces)"
            ),
            BadProtocol { found } => write!(
                f,
                "PROXY v1 protocol \"{found}\" is not TCP4, TCP6 or UNKNOWN"
            ),
            BadAddress {
                endpoint,
                protocol,
                found,
            } => {
                let family = if *protocol == "TCP4" { "IPv4" } else { "IPv6" };
                write!(
                    f,
                    "PROXY v1 {endpoint} address \"{found}\" is not an {family} address ({protocol})"
                )
            }
            BadPort { endpoint, found } => write!(
                f,
                "PROXY v1 {endpoint} port \"{found}\" is not a decimal number 0-65535"
            ),
            FamilyMismatch {
                source,
                destination,
            } => write!(
                f,
                "PROXY header source {source} and destination {destination} are of different address families"
            ),
            BadVersion { version } => write!(
                f,
                "PROXY v2 signature followed by version {version} (only 2 is defined)"
            ),
            UnsupportedCommand { command } => write!(
                f,
                "PROXY v2 command {command} is neither LOCAL (0) nor PROXY (1)"
            ),
            UnsupportedFamily { family } => write!(
                f,
                "PROXY v2 address family and protocol 0x{family:02x} ({}) not supported: only TCP over IPv4 (0x11) or IPv6 (0x21)",
                describe_family(*family)
            ),
            TooLong { length, limit } => write!(
                f,
                "PROXY v2 header announces {length} bytes of addresses and TLVs; at most {limit} accepted"
            ),
            AddressesTruncated { length, needed } => write!(
                f,
                "PROXY v2 header announces {length} bytes, less than its {needed}-byte address block"
            ),
            BadTlv { offset, reason } => write!(f, "PROXY v2 TLV at offset {offset}: {reason}"),
            ChecksumMismatch { received, computed } => write!(
                f,
                "PROXY v2 CRC32C mismatch: the header says 0x{received:08x}, its bytes give 0x{computed:08x}"
            ),
        }
    }
}

impl std::error::Error for ProxyHeaderError {}

/// The v2 family/protocol byte in words.
fn describe_family(byte: u8) -> String {
    let family = match byte >> 4 {
        0 => "AF_UNSPEC",
        1 => "AF_INET",
        2 => "AF_INET6",
        3 => "AF_UNIX",
        _ => "undefined family",
    };
    let protocol = match byte & 0x0f {
        0 => "UNSPEC",
        1 => "STREAM",
        2 => "DGRAM",
        _ => "undefined protocol",
    };
    format!("{family} {protocol}")
}

/// What a peer that sent no PROXY header probably speaks.
pub(super) fn guess(input: &[u8]) -> &'static str {
    match input.first() {
        Some(0x16) => "looks like a TLS ClientHello: this front-end is plain TCP",
        Some(0x04 | 0x05) => "looks like SOCKS: use the socks5 front-end",
        _ if input.get(..4).is_some_and(|w| {
            w.eq_ignore_ascii_case(b"EHLO") || w.eq_ignore_ascii_case(b"HELO")
        }) =>
        {
            "looks like SMTP: the MTA is not configured to send a PROXY header"
        }
        _ => "",
    }
}
