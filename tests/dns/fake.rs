//! A tiny scripted UDP DNS responder built on hickory-proto, for behaviour
//! dnsmasq cannot be told to show: slow answers and SERVFAIL for chosen names.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

/// Most queries answered at once (each waits on its own thread).
const MAX_IN_FLIGHT: usize = 256;

/// What to answer to one question.
pub struct Reply {
    pub code: ResponseCode,
    pub answers: Vec<RData>,
}

impl Reply {
    pub fn records(answers: Vec<RData>) -> Reply {
        Reply {
            code: ResponseCode::NoError,
            answers,
        }
    }
    pub fn code(code: ResponseCode) -> Reply {
        Reply {
            code,
            answers: Vec::new(),
        }
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
    response.metadata.response_code = reply.code;
    response.add_query(query.clone());
    for data in reply.answers {
        response.add_answer(Record::from_rdata(name.clone(), 60, data));
    }
    response.to_vec().ok()
}
