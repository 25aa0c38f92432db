//! An in-process DNS responder for tests: real UDP on 127.0.0.1, hickory-proto
//! wire format, no external program.
//!
//! Two ways to answer:
//! - [`Zone`]: a static authoritative zone (A, AAAA, MX including the RFC 7505
//!   null MX, TXT), or one shared with the test that edits it ([`FakeDns::shared_zone`]), answering like an authoritative server: the records of the
//!   asked type, NODATA (no error, no answer, the zone's SOA in the authority
//!   section) for a name that exists with other types only, NXDOMAIN (with the
//!   SOA) for an unknown name under the zone, REFUSED outside it;
//! - a closure per question, for behaviour a zone cannot show: SERVFAIL for
//!   chosen names, slow answers.
//!
//! Used by `tests/dns` (the resolver) and `tests/dns_connect.rs` (CONNECT by name).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use parking_lot::Mutex;

/// Most queries answered at once (each waits on its own thread).
const MAX_IN_FLIGHT: usize = 256;
/// TTL of every record served, and the negative-caching TTL of a [`Zone`].
const TTL: u32 = 60;

/// What to answer to one question.
pub struct Reply {
    pub code: ResponseCode,
    pub answers: Vec<RData>,
    /// Authority section: (owner name, data), e.g. the zone's SOA on a negative answer.
    pub authority: Vec<(Name, RData)>,
    /// The AA bit.
    pub authoritative: bool,
    /// The TTL of the records served.
    pub ttl: u32,
}

impl Reply {
    /// NOERROR with `answers` (NODATA when empty).
    pub fn records(answers: Vec<RData>) -> Reply {
        Reply {
            code: ResponseCode::NoError,
            answers,
            authority: Vec::new(),
            authoritative: false,
            ttl: TTL,
        }
    }

    /// An empty answer with `code`.
    pub fn code(code: ResponseCode) -> Reply {
        Reply {
            code,
            answers: Vec::new(),
            authority: Vec::new(),
            authoritative: false,
            ttl: TTL,
        }
    }
}

/// A static authoritative zone. Names are case-insensitive, written without
/// the trailing dot.
///
/// ```ignore
/// let zone = Zone::new("test")
///     .mx("example.test", 10, "mx.example.test")
///     .addr("mx.example.test", "127.0.0.1")
///     .null_mx("nomail.test");
/// ```
#[derive(Clone, Debug)]
pub struct Zone {
    origin: String,
    /// (owner, data), owner lower case without trailing dot.
    records: Vec<(String, RData)>,
    /// The TTL of its records and of its negative answers.
    ttl: u32,
}

fn fqdn(name: &str) -> Name {
    if name.is_empty() || name == "." {
        return Name::root();
    }
    Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).unwrap()
}

fn bare(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    /// An empty zone for `origin` (e.g. `"test"`): every name under it is NXDOMAIN.
    pub fn new(origin: &str) -> Zone {
        Zone {
            origin: bare(origin),
            records: Vec::new(),
            ttl: TTL,
        }
    }

    /// Whether `name` (lower case, no trailing dot) is the origin or below it.
    fn contains(&self, name: &str) -> bool {
        name == self.origin
            || name
                .strip_suffix(self.origin.as_str())
                .is_some_and(|prefix| prefix.ends_with('.'))
    }

    /// Adds a record; panics if `owner` is not in the zone (a mistake in the test).
    pub fn record(mut self, owner: &str, data: RData) -> Zone {
        let owner = bare(owner);
        assert!(
            self.contains(&owner),
            "{owner} is not in zone {}",
            self.origin
        );
        self.records.push((owner, data));
        self
    }

    /// An A or AAAA record, by the address's family.
    pub fn addr(self, owner: &str, addr: &str) -> Zone {
        let data = match addr.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.record(owner, data)
    }

    /// Several A/AAAA records for one name, in this order.
    pub fn addrs(self, owner: &str, addrs: &[&str]) -> Zone {
        addrs.iter().fold(self, |zone, a| zone.addr(owner, a))
    }

    /// An MX record; `exchange` `"."` is the root (a null MX).
    pub fn mx(self, owner: &str, preference: u16, exchange: &str) -> Zone {
        self.record(owner, RData::MX(MX::new(preference, fqdn(exchange))))
    }

    /// A TXT record of one character string (`text` is at most 255 octets).
    pub fn txt(self, owner: &str, text: &str) -> Zone {
        self.record(owner, RData::TXT(TXT::new(vec![text.to_string()])))
    }

    /// Removes the records of `owner` of type `rtype` (a zone edited while served).
    pub fn remove(mut self, owner: &str, rtype: RecordType) -> Zone {
        let owner = bare(owner);
        self.records
            .retain(|(o, data)| !(*o == owner && data.record_type() == rtype));
        self
    }

    /// The TTL of the records and negative answers served (default 60 s; 0 to keep a
    /// resolver from caching what a test changes).
    pub fn ttl(mut self, ttl: u32) -> Zone {
        self.ttl = ttl;
        self
    }

    /// The RFC 7505 null MX: `MX 0 .`.
    pub fn null_mx(self, owner: &str) -> Zone {
        self.mx(owner, 0, ".")
    }

    /// The zone's SOA record, for the authority section of negative answers.
    fn soa(&self) -> (Name, RData) {
        let origin = fqdn(&self.origin);
        let soa = SOA::new(
            fqdn(&format!("ns.{}", self.origin)),
            fqdn(&format!("hostmaster.{}", self.origin)),
            1,
            3600,
            600,
            86400,
            self.ttl,
        );
        (origin, RData::SOA(soa))
    }

    /// The answer an authoritative server for this zone gives to `name`
    /// (any case, trailing dot optional) and `rtype`.
    pub fn answer(&self, name: &str, rtype: RecordType) -> Reply {
        let name = bare(name);
        if !self.contains(&name) {
            return Reply::code(ResponseCode::Refused);
        }
        let answers: Vec<RData> = self
            .records
            .iter()
            .filter(|(owner, data)| *owner == name && data.record_type() == rtype)
            .map(|(_, data)| data.clone())
            .collect();
        // A name exists if it owns records, or is the origin, or has names below
        // it (an empty non-terminal).
        let below = format!(".{name}");
        let exists = name == self.origin
            || self
                .records
                .iter()
                .any(|(owner, _)| *owner == name || owner.ends_with(&below));
        let mut reply = if !answers.is_empty() {
            Reply::records(answers)
        } else if exists {
            let mut r = Reply::records(Vec::new());
            r.authority.push(self.soa());
            r
        } else {
            let mut r = Reply::code(ResponseCode::NXDomain);
            r.authority.push(self.soa());
            r
        };
        reply.authoritative = true;
        reply.ttl = self.ttl;
        reply
    }
}

type Handler = dyn Fn(&str, RecordType) -> Reply + Send + Sync;

/// The responder; stops on drop.
pub struct FakeDns {
    pub addr: SocketAddr,
    /// How many queries were received.
    pub queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDns {
    /// Serves `zone`, answering at once.
    pub fn zone(zone: Zone) -> FakeDns {
        FakeDns::start(Duration::ZERO, move |name, rtype| zone.answer(name, rtype))
    }

    /// Serves the zone behind `zone`, which the test may change while it is served.
    pub fn shared_zone(zone: Arc<Mutex<Zone>>) -> FakeDns {
        FakeDns::start(Duration::ZERO, move |name, rtype| {
            zone.lock().answer(name, rtype)
        })
    }

    /// Answers every query after `delay` with `handler(name without trailing
    /// dot, lower case, type)`.
    pub fn start(
        delay: Duration,
        handler: impl Fn(&str, RecordType) -> Reply + Send + Sync + 'static,
    ) -> FakeDns {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let (stop, queries) = (stop.clone(), queries.clone());
            thread::spawn(move || serve(socket, delay, handler, stop, queries))
        };
        FakeDns {
            addr,
            queries,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    socket: Arc<UdpSocket>,
    delay: Duration,
    handler: Arc<Handler>,
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        queries.fetch_add(1, Ordering::SeqCst);
        let Ok(request) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if delay.is_zero() {
            if let Some(bytes) = answer(&request, &*handler) {
                let _ = socket.send_to(&bytes, peer);
            }
            continue;
        }
        if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (socket, handler, in_flight) = (socket.clone(), handler.clone(), in_flight.clone());
        thread::spawn(move || {
            // The simulated server latency (not a synchronisation point).
            thread::sleep(delay);
            if let Some(bytes) = answer(&request, &*handler) {
                let _ = socket.send_to(&bytes, peer);
            }
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn answer(request: &Message, handler: &Handler) -> Option<Vec<u8>> {
    let query = request.queries.first()?.clone();
    let name: &Name = query.name();
    let text = name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let reply = handler(&text, query.query_type());
    let mut response = Message::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = reply.authoritative;
    response.metadata.response_code = reply.code;
    response.add_query(query.clone());
    for data in reply.answers {
        response.add_answer(Record::from_rdata(name.clone(), reply.ttl, data));
    }
    for (owner, data) in reply.authority {
        response.add_authority(Record::from_rdata(owner, reply.ttl, data));
    }
    response.to_vec().ok()
}
