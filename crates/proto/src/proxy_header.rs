//! The HAProxy PROXY protocol header, versions 1 and 2, as a receiver (sans-I/O).
//!
//! An MTA configured for an "HAProxy" egress (KumoMTA, Momentum, GreenArrow, PowerMTA, Halon)
//! opens a TCP connection and sends one PROXY header before its SMTP session. The header's
//! *source* is the IP address the MTA wants to send from, its *destination* is the MX. Call
//! [`parse`] with every byte received so far: it says [`Parsed::Incomplete`] until a whole
//! header is there, then gives the header and exactly how many bytes it took — the bytes after
//! it are the SMTP session and belong to the caller.
//!
//! What is accepted (the spec is haproxy's `doc/proxy-protocol.txt`):
//! - **Detection** from the first bytes: `PROXY ` is v1, the 12-byte signature
//!   `\r\n\r\n\0\r\nQUIT\n` is v2, anything else is refused as soon as one byte differs from
//!   both ([`ProxyHeaderError::NotProxy`]).
//! - **v1**: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`, at most [`V1_MAX_LEN`] bytes
//!   including CRLF; printable ASCII only; single spaces; addresses of the stated family
//!   (dotted quad without leading zeros for TCP4, any RFC 4291 text form for TCP6); ports
//!   decimal 0–65535 (one to five digits). `PROXY UNKNOWN` followed by CRLF or by a space and
//!   anything is a health check ([`HeaderKind::Local`]).
//! - **v2**: version 2; command PROXY with family/protocol `0x11` (TCP over IPv4) or `0x21`
//!   (TCP over IPv6), or command LOCAL with any family (a health check: the address block is
//!   skipped unread, as the spec says); a length field of at most [`V2_MAX_PAYLOAD`] bytes
//!   (so a header is at most [`MAX_HEADER_LEN`] bytes, refused as soon as the length is read).
//!   TLVs after the addresses must be well formed (each fits in the header) and are otherwise
//!   skipped, except `PP2_TYPE_CRC32C` (0x03): when present, its checksum is verified.
//! - **Ports**: any source port is accepted (KumoMTA sends 0, PowerMTA may send 9999); what to
//!   do with it is the caller's business (the proxy ignores it).
//! - **IPv4-mapped IPv6 addresses** (`::ffff:a.b.c.d`, which HAProxy writes when it mixes
//!   families) are returned as the IPv4 address they stand for, as everywhere else in the proxy;
//!   a header whose source and destination then differ in family is refused
//!   ([`ProxyHeaderError::FamilyMismatch`]).
//! - Which addresses are *permitted* (source configured and local, destination policy) is not
//!   this module's concern.

use crate::escape::escaped;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

mod crc32c;
mod error;
#[cfg(test)]
mod tests;

pub use error::{Endpoint, ProxyHeaderError};

/// The longest v1 header, CRLF included (the spec's bound: `PROXY UNKNOWN` with two full
/// IPv6 addresses and ports).
pub const V1_MAX_LEN: usize = 107;

/// The v2 signature, the first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The largest v2 length field accepted: addresses plus TLVs. Real senders stay far below it
/// (KumoMTA: 12 or 36 bytes, HAProxy with CRC32C and UNIQUE_ID: 22).
pub const V2_MAX_PAYLOAD: usize = 1024;

/// The most bytes [`parse`] can need: it never answers [`Parsed::Incomplete`] to an input at
/// least this long.
pub const MAX_HEADER_LEN: usize = 16 + V2_MAX_PAYLOAD;

/// The result of [`parse`] on the bytes received so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No complete header yet and nothing wrong so far: read more and call again with all the
    /// bytes. (Never returned for an input of [`MAX_HEADER_LEN`] bytes or more.)
    Incomplete,
    /// A complete, valid header.
    Header(Header),
}

/// A complete PROXY header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The header's exact length: `input[consumed..]` is the start of the SMTP session.
    pub consumed: usize,
    /// The protocol version the header was written in.
    pub version: Version,
    /// What the header asks for.
    pub kind: HeaderKind,
}

/// PROXY protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The text form, `PROXY TCP4 ...\r\n`.
    V1,
    /// The binary form starting with [`V2_SIGNATURE`].
    V2,
}

/// What a header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderKind {
    /// Connect from `source` (the address to bind; its port is what the sender wrote, often
    /// 0, and is not meant to be used) to `destination` (the MX). Both are of the same family.
    Proxied {
        /// The address the MTA wants to send from.
        source: SocketAddr,
        /// The MX address and port.
        destination: SocketAddr,
    },
    /// v2 LOCAL or v1 UNKNOWN: a health check or a connection made for the sender's own
    /// purposes; nothing to proxy.
    Local,
}

/// Parse a PROXY header (v1 or v2, detected) from the front of `input`, all the bytes received
/// so far on the connection. See the module documentation for what is accepted.
///
/// Errors are reported as soon as the bytes already received make the header unacceptable;
/// feeding the same bytes in any number of pieces gives the same header or the same kind of
/// error.
pub fn parse(input: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    const V1_PREFIX: &[u8] = b"PROXY ";
    if input.starts_with(V1_PREFIX) {
        parse_v1(input)
    } else if input.starts_with(&V2_SIGNATURE) {
        parse_v2(input)
    } else if V1_PREFIX.starts_with(input) || V2_SIGNATURE.starts_with(input) {
        Ok(Parsed::Incomplete)
    } else {
        Err(ProxyHeaderError::NotProxy {
            start: escaped(input, 16),
            hint: error::guess(input),
        })
    }
}

/// v1: `input` starts with `PROXY `.
fn parse_v1(input: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    use ProxyHeaderError::*;
    let window = input.get(..V1_MAX_LEN).unwrap_or(input);
    let mut lf = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' => {
                if i.checked_sub(1).and_then(|p| window.get(p)) != Some(&b'\r') {
                    return Err(MissingCr);
                }
                lf = Some(i);
                break;
            }
            b'\r' => {
                if !matches!(window.get(i + 1), Some(b'\n') | None) {
                    return Err(BadCharacter { byte: b, offset: i });
                }
            }
            0x20..=0x7e => {}
            _ => return Err(BadCharacter { byte: b, offset: i }),
        }
    }
    let Some(lf) = lf else {
        return if input.len() >= V1_MAX_LEN {
            Err(LineTooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    // Printable ASCII up to the CR (checked above), so this is valid UTF-8.
    let line = window.get(..lf.saturating_sub(1)).unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let syntax = || BadSyntax {
        line: escaped(line, V1_MAX_LEN),
    };
    let after = text.strip_prefix("PROXY ").ok_or_else(syntax)?;
    let (protocol, args) = match after.split_once(' ') {
        Some((p, a)) => (p, Some(a)),
        None => (after, None),
    };
    let header = |kind| {
        Ok(Parsed::Header(Header {
            consumed: lf + 1,
            version: Version::V1,
            kind,
        }))
    };
    let protocol = match protocol {
        "UNKNOWN" => return header(HeaderKind::Local),
        "TCP4" => "TCP4",
        "TCP6" => "TCP6",
        "" => return Err(syntax()),
        other => {
            return Err(BadProtocol {
                found: escaped(other.as_bytes(), 16),
            })
        }
    };
    let fields: Vec<&str> = args.unwrap_or_default().split(' ').collect();
    let [src, dst, sport, dport] = fields.as_slice() else {
        return Err(syntax());
    };
    if fields.iter().any(|f| f.is_empty()) {
        return Err(syntax());
    }
    let address = |endpoint, text: &str| {
        let ip = if protocol == "TCP4" {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        } else {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        };
        ip.map(|ip| ip.to_canonical()).map_err(|_| BadAddress {
            endpoint,
            protocol,
            found: escaped(text.as_bytes(), 48),
        })
    };
    let port = |endpoint, text: &str| {
        parse_port(text).ok_or_else(|| BadPort {
            endpoint,
            found: escaped(text.as_bytes(), 16),
        })
    };
    let source = address(Endpoint::Source, src)?;
    let destination = address(Endpoint::Destination, dst)?;
    let sport = port(Endpoint::Source, sport)?;
    let dport = port(Endpoint::Destination, dport)?;
    header(proxied(
        SocketAddr::new(source, sport),
        SocketAddr::new(destination, dport),
    )?)
}

/// A decimal port of one to five digits, at most 65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().and_then(|n| u16::try_from(n).ok())
}

/// `Proxied`, once both addresses (already unmapped) are known to be of one family.
fn proxied(source: SocketAddr, destination: SocketAddr) -> Result<HeaderKind, ProxyHeaderError> {
    if !crate::family::Family::same(&source.ip(), &destination.ip()) {
        return Err(ProxyHeaderError::FamilyMismatch {
            source: source.ip(),
            destination: destination.ip(),
        });
    }
    Ok(HeaderKind::Proxied {
        source,
        destination,
    })
}

/// The v2 family/protocol bytes accepted with PROXY (TCP over IPv4, over IPv6), and the TLV
/// type of the CRC32C checksum.
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;
const TLV_CRC32C: u8 = 0x03;

/// v2: `input` starts with the signature.
fn parse_v2(input: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    use ProxyHeaderError::*;
    let Some(&ver_cmd) = input.get(12) else {
        return Ok(Parsed::Incomplete);
    };
    if ver_cmd >> 4 != 2 {
        return Err(BadVersion {
            version: ver_cmd >> 4,
        });
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        command => return Err(UnsupportedCommand { command }),
    };
    let Some(&family) = input.get(13) else {
        return Ok(Parsed::Incomplete);
    };
    let block = match (local, family) {
        (true, _) => 0,
        (false, TCP4) => 12,
        (false, TCP6) => 36,
        (false, family) => return Err(UnsupportedFamily { family }),
    };
    let Some(&[hi, lo]) = input.get(14..16) else {
        return Ok(Parsed::Incomplete);
    };
    let length = usize::from(u16::from_be_bytes([hi, lo]));
    if length > V2_MAX_PAYLOAD {
        return Err(TooLong {
            length,
            limit: V2_MAX_PAYLOAD,
        });
    }
    if length < block {
        return Err(AddressesTruncated {
            length,
            needed: block,
        });
    }
    let Some(header) = input.get(..16 + length) else {
        return Ok(Parsed::Incomplete);
    };
    let done = |kind| {
        Ok(Parsed::Header(Header {
            consumed: header.len(),
            version: Version::V2,
            kind,
        }))
    };
    if local {
        return done(HeaderKind::Local);
    }
    let addresses = header.get(16..16 + block).unwrap_or_default();
    let Some((source, destination)) = endpoints(family, addresses) else {
        return Err(AddressesTruncated {
            length,
            needed: block,
        });
    };
    let kind = proxied(source, destination)?;
    check_tlvs(header, 16 + block)?;
    done(kind)
}

/// Source and destination from a TCP4 (12-byte) or TCP6 (36-byte) address block: both
/// addresses, then both ports. IPv4-mapped addresses are unmapped.
fn endpoints(family: u8, block: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let (source, destination, ports) = if family == TCP4 {
        let s: [u8; 4] = array(block, 0)?;
        let d: [u8; 4] = array(block, 4)?;
        (IpAddr::from(s), IpAddr::from(d), 8)
    } else {
        let s: [u8; 16] = array(block, 0)?;
        let d: [u8; 16] = array(block, 16)?;
        (IpAddr::from(s), IpAddr::from(d), 32)
    };
    let sport = u16::from_be_bytes(array(block, ports)?);
    let dport = u16::from_be_bytes(array(block, ports + 2)?);
    Some((
        SocketAddr::new(source.to_canonical(), sport),
        SocketAddr::new(destination.to_canonical(), dport),
    ))
}

/// `N` bytes of `bytes` at `at`, if there are that many.
fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Walk the TLVs of a complete v2 `header` from offset `start`: each must fit; a CRC32C TLV
/// must hold the checksum of the header computed with its own value zeroed.
fn check_tlvs(header: &[u8], start: usize) -> Result<(), ProxyHeaderError> {
    let mut offset = start;
    while offset < header.len() {
        let Some([kind, hi, lo]) = array::<3>(header, offset) else {
            return Err(ProxyHeaderError::BadTlv {
                offset,
                reason: "fewer than 3 bytes left for a TLV header",
            });
        };
        let value_at = offset + 3;
        let end = value_at + usize::from(u16::from_be_bytes([hi, lo]));
        if end > header.len() {
            return Err(ProxyHeaderError::BadTlv {
                offset,
                reason: "the TLV's value runs past the end of the header",
            });
        }
        if kind == TLV_CRC32C {
            let Some(value) = array::<4>(header, value_at).filter(|_| end == value_at + 4) else {
                return Err(ProxyHeaderError::BadTlv {
                    offset,
                    reason: "a CRC32C TLV must hold exactly 4 bytes",
                });
            };
            let received = u32::from_be_bytes(value);
            let computed = crc32c::with_zeroed(header, value_at, 4);
            if received != computed {
                return Err(ProxyHeaderError::ChecksumMismatch { received, computed });
            }
        }
        offset = end;
    }
    Ok(())
}
