//! TLSA look-ups for DANE (RFC 7672) with their DNSSEC status.
//!
//! The proxy does not validate DNSSEC itself: it asks a validating resolver on loopback (for
//! example unbound) with the AD bit set and trusts the AD bit of its answer, as Postfix does
//! with `smtp_dns_support_level = dnssec` (docs/TLS-POLICY.md says why). A resolver that is
//! not on loopback is never trusted for AD: the path to it could be forged, so no TLSA
//! answer from it counts ([`TlsaLookup::trusted`]; DANE then does not apply and the daemon
//! warns at start).
//!
//! The query is plain blocking I/O (UDP, then TCP when the answer is truncated), separate
//! from hickory's caching resolver so the header of the very answer is seen; hickory-proto
//! encodes and decodes the messages. Answers are cached for their TTL (failures briefly).

use greenarrow_proxy_proto::tls_policy::dane::{DaneFinding, Tlsa, TlsaSet};
use hickory_resolver::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Longest time an answer is kept (whatever its TTL).
const MAX_TTL: Duration = Duration::from_secs(3600);
/// Shortest time an answer is kept.
const MIN_TTL: Duration = Duration::from_secs(5);
/// How long a failed look-up is remembered before it is tried again.
const FAILURE_TTL: Duration = Duration::from_secs(10);
/// Most names cached; past it the cache is emptied (bounded memory).
const MAX_CACHED: usize = 10_000;
/// The EDNS payload size asked for (the DNS flag day 2020 value).
const PAYLOAD: u16 = 1232;

/// Blocking TLSA look-ups through the configured name servers, cached.
#[derive(Debug)]
pub struct TlsaLookup {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    /// Retries after a timeout or a network error (`dns.attempts`).
    attempts: usize,
    cache: Mutex<HashMap<String, (DaneFinding, Instant)>>,
}

impl TlsaLookup {
    /// Look-ups through `servers` (in turn), each query waiting `timeout`, the round of servers
    /// retried `attempts` times after timeouts or network errors.
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration, attempts: usize) -> TlsaLookup {
        TlsaLookup {
            servers,
            timeout,
            attempts,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the name servers' AD bit is trusted: all of them on loopback.
    pub fn trusted(&self) -> bool {
        !self.servers.is_empty() && self.servers.iter().all(|s| s.ip().is_loopback())
    }

    /// What `_<port>._tcp.<host>` holds. `NotLookedUp` when the resolver is not trusted.
    pub fn lookup(&self, host: &str, port: u16) -> DaneFinding {
        if !self.trusted() {
            return DaneFinding::NotLookedUp;
        }
        let owner = format!(
            "_{port}._tcp.{}.",
            host.trim_end_matches('.').to_ascii_lowercase()
        );
        let now = Instant::now();
        if let Some((finding, until)) = self.cache.lock().get(&owner) {
            if *until > now {
                return finding.clone();
            }
        }
        let (finding, ttl) = self.query(&owner);
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(owner, (finding.clone(), now + ttl));
        finding
    }

    fn query(&self, owner: &str) -> (DaneFinding, Duration) {
        let name = match Name::from_ascii(owner) {
            Ok(n) => n,
            Err(e) => return (DaneFinding::Failed(format!("{owner}: {e}")), FAILURE_TTL),
        };
        let mut last = String::from("no name server");
        for _ in 0..=self.attempts {
            for server in &self.servers {
                match exchange(*server, &name, self.timeout) {
                    Ok(answer) => return classify(&answer),
                    Err(e) => last = format!("{server}: {e}"),
                }
            }
        }
        (DaneFinding::Failed(last), FAILURE_TTL)
    }
}

/// The query for `name`'s TLSA records: recursion desired, AD set (RFC 6840 section 5.7: the
/// resolver then says whether it validated), EDNS with DO.
fn request(name: &Name) -> Result<(u16, Vec<u8>), io::Error> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.metadata.authentic_data = true;
    msg.add_query(Query::query(name.clone(), RecordType::TLSA));
    let mut edns = Edns::new();
    edns.set_max_payload(PAYLOAD);
    edns.set_dnssec_ok(true);
    msg.set_edns(edns);
    let bytes = msg.to_vec().map_err(io::Error::other)?;
    Ok((msg.metadata.id, bytes))
}

/// One query to `server`: UDP, then TCP if the answer is truncated.
fn exchange(server: SocketAddr, name: &Name, timeout: Duration) -> Result<Message, io::Error> {
    let (id, bytes) = request(name)?;
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(io::Error::other)?
    } else {
        "[::]:0".parse().map_err(io::Error::other)?
    };
    let udp = UdpSocket::bind(bind)?;
    udp.connect(server)?;
    udp.set_read_timeout(Some(timeout))?;
    udp.send(&bytes)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65_535];
    let answer = loop {
        let n = udp.recv(&mut buf)?;
        // Not ours (a late answer to an earlier query, a spoof): keep waiting until the deadline.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if m.metadata.id == id && asks(&m, name) {
                break m;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no matching answer",
            ));
        }
        udp.set_read_timeout(Some(left))?;
    };
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    let mut tcp = TcpStream::connect_timeout(&server, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let len = u16::try_from(bytes.len()).map_err(io::Error::other)?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    tcp.write_all(&framed)?;
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut body)?;
    let m = Message::from_vec(&body).map_err(io::Error::other)?;
    if m.metadata.id != id || !asks(&m, name) {
        return Err(io::Error::other("the TCP answer does not match the query"));
    }
    Ok(m)
}

fn asks(m: &Message, name: &Name) -> bool {
    m.queries
        .first()
        .is_some_and(|q| q.name().eq_case(name) || q.name() == name)
        && m.queries.first().map(|q| q.query_type()) == Some(RecordType::TLSA)
}

/// What an answer means for DANE, and how long to keep it.
fn classify(m: &Message) -> (DaneFinding, Duration) {
    let secure = m.metadata.authentic_data;
    match m.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain if secure => return (DaneFinding::NoRecords, negative_ttl(m)),
        ResponseCode::NXDomain => return (DaneFinding::Insecure, negative_ttl(m)),
        // A validating resolver answers SERVFAIL for a bogus answer (RFC 4035 section 5.5).
        ResponseCode::ServFail => {
            return (
                DaneFinding::Failed(
                    "SERVFAIL: DNSSEC validation failed (bogus) or no answer".into(),
                ),
                FAILURE_TTL,
            )
        }
        other => {
            return (
                DaneFinding::Failed(format!("the name server answered {other}")),
                FAILURE_TTL,
            )
        }
    }
    let mut records = Vec::new();
    let mut ttl = u32::MAX;
    for r in &m.answers {
        if let RData::TLSA(t) = &r.data {
            ttl = ttl.min(r.ttl);
            records.push(Tlsa {
                usage: t.cert_usage.into(),
                selector: t.selector.into(),
                matching: t.matching.into(),
                data: t.cert_data.clone(),
            });
        }
    }
    if records.is_empty() {
        let finding = if secure {
            DaneFinding::NoRecords
        } else {
            DaneFinding::Insecure
        };
        return (finding, negative_ttl(m));
    }
    let ttl = clamp(Duration::from_secs(u64::from(ttl)));
    if !secure {
        return (DaneFinding::Insecure, ttl);
    }
    (DaneFinding::Secure(TlsaSet::new(records)), ttl)
}

/// The negative-caching TTL of an answer (RFC 2308: the SOA's minimum and TTL).
fn negative_ttl(m: &Message) -> Duration {
    let soa = m.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    });
    clamp(Duration::from_secs(u64::from(soa.unwrap_or(300))))
}

fn clamp(d: Duration) -> Duration {
    d.clamp(MIN_TTL, MAX_TTL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::OpCode;
    use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector, TLSA};
    use hickory_resolver::proto::rr::Record;

    fn answer(code: ResponseCode, ad: bool, tlsa: bool) -> Message {
        let name = Name::from_ascii("_25._tcp.mx.example.").unwrap();
        let mut m = Message::response(1, OpCode::Query);
        m.metadata.response_code = code;
        m.metadata.authentic_data = ad;
        m.add_query(Query::query(name.clone(), RecordType::TLSA));
        if tlsa {
            let t = TLSA::new(
                CertUsage::DaneEe,
                Selector::Spki,
                Matching::Sha256,
                vec![1; 32],
            );
            m.add_answer(Record::from_rdata(name, 600, RData::TLSA(t)));
        }
        m
    }

    #[test]
    fn answers_are_classified_by_their_ad_bit_and_code() {
        let (f, ttl) = classify(&answer(ResponseCode::NoError, true, true));
        let DaneFinding::Secure(set) = f else {
            panic!("{f:?}")
        };
        assert_eq!(
            set.records()[0].to_string(),
            format!("3 1 1 {}", "01".repeat(32))
        );
        assert_eq!(ttl, Duration::from_secs(600));
        assert_eq!(
            classify(&answer(ResponseCode::NoError, false, true)).0,
            DaneFinding::Insecure
        );
        assert_eq!(
            classify(&answer(ResponseCode::NoError, true, false)).0,
            DaneFinding::NoRecords
        );
        assert_eq!(
            classify(&answer(ResponseCode::NXDomain, true, false)).0,
            DaneFinding::NoRecords
        );
        assert_eq!(
            classify(&answer(ResponseCode::NXDomain, false, false)).0,
            DaneFinding::Insecure
        );
        assert!(matches!(
            classify(&answer(ResponseCode::ServFail, false, false)).0,
            DaneFinding::Failed(_)
        ));
    }

    #[test]
    fn a_resolver_that_does_not_answer_is_a_failed_look_up() {
        // A loopback port nothing listens on: the query is refused (ICMP), every attempt.
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let l = TlsaLookup::new(
            vec![SocketAddr::from(([127, 0, 0, 1], port))],
            Duration::from_millis(300),
            1,
        );
        let DaneFinding::Failed(why) = l.lookup("mx.example.", 25) else {
            panic!("not a failure")
        };
        assert!(why.starts_with(&format!("127.0.0.1:{port}: ")), "{why}");
        assert!(l.cache.lock().contains_key("_25._tcp.mx.example."));
    }

    #[test]
    fn only_loopback_resolvers_are_trusted() {
        let t = |s: &[&str]| {
            TlsaLookup::new(
                s.iter().map(|a| a.parse().unwrap()).collect(),
                Duration::from_secs(1),
                0,
            )
            .trusted()
        };
        assert!(t(&["127.0.0.1:53", "[::1]:53"]));
        assert!(!t(&["127.0.0.1:53", "192.0.2.53:53"]));
        assert!(!t(&[]));
        let l = TlsaLookup::new(
            vec!["192.0.2.53:53".parse().unwrap()],
            Duration::from_secs(1),
            0,
        );
        assert_eq!(l.lookup("mx.example", 25), DaneFinding::NotLookedUp);
    }
}
