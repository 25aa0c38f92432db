//! The thin Redis layer of the shared caps: a bounded pool of blocking connections (connect,
//! read and write bounded by `caps.shared.timeout`) and one Lua script per step, each taking
//! the time from Redis (`TIME`), so that every host's leases and rates share one clock.
//!
//! Keys (`P` = `caps.shared.key_prefix`): `P:lease:<group>` (sorted set: member
//! `host|instance-n`, score = expiry in Redis milliseconds), `P:rate:<group>` (the GCRA's
//! theoretical arrival time), `P:hosts` (sorted set: host, score = heartbeat expiry), and the
//! pub/sub channel `P:released:<group>` (a lease was given back).

use crate::config::SharedConfig;
use parking_lot::{Condvar, Mutex};
use redis::{Client, ClientTlsConfig, Connection, Script, TlsCertificates};
use std::fmt;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Connections to Redis open at once (in use and idle), besides the pub/sub listener's.
pub const MAX_OPEN: usize = 16;

struct Slots {
    idle: Vec<Connection>,
    /// In use and idle.
    open: usize,
}

/// Drop expired leases, count, add if below the cap. ARGV: cap, lease ms, member.
/// Returns {1, 0}, or {0, ms until the first lease expires}.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], 2 * lease)
  return {1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, math.max(1, tonumber(first[2]) - now)}
",
    )
});

/// Renew (or re-register) this host's members, drop expired ones; return every member.
/// ARGV: lease ms, members...
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], 2 * lease) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
",
    )
});

/// Remove members and tell the other hosts. ARGV: channel, members... Returns the count.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZREM', KEYS[1], ARGV[i])
end
if n > 0 then redis.call('PUBLISH', ARGV[1], n) end
return n
",
    )
});

/// This host is alive until now + lease; count the live hosts. ARGV: host, lease ms.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
",
    )
});

/// GCRA: N per window with a burst of N. ARGV: emission interval (window / N, ms), burst
/// tolerance ((N - 1) * interval, ms). Returns {1, 0} or {0, ms to wait}.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return {0, math.ceil(allow_at - now)} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', math.ceil(new_tat)), 'PX', math.max(1, math.ceil(new_tat - now)))
return {1, 0}
",
    )
});

/// A Redis call that failed (connection, timeout, or an error reply), or found every
/// connection of the pool busy.
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkError {
    Redis(redis::RedisError),
    /// All [`MAX_OPEN`] connections stayed in use for `caps.shared.timeout`: Redis answers,
    /// this host asks too much at once (not a reason to fall back).
    Busy,
}

impl LinkError {
    pub fn is_busy(&self) -> bool {
        matches!(self, LinkError::Busy)
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Redis(e) => write!(f, "redis: {e}"),
            LinkError::Busy => write!(f, "redis: all {MAX_OPEN} connections busy"),
        }
    }
}

impl std::error::Error for LinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LinkError::Redis(e) => Some(e),
            LinkError::Busy => None,
        }
    }
}

impl From<redis::RedisError> for LinkError {
    fn from(e: redis::RedisError) -> LinkError {
        LinkError::Redis(e)
    }
}

type Result<T> = std::result::Result<T, LinkError>;

/// Redis's answer to an acquire or a rate step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Granted,
    /// Full; the first room is expected after this long.
    Full(Duration),
}

fn answer(v: (i64, i64)) -> Answer {
    if v.0 == 1 {
        Answer::Granted
    } else {
        Answer::Full(Duration::from_millis(v.1.max(1) as u64))
    }
}

/// The pool of connections to one Redis, and the keys of one prefix.
pub struct Link {
    client: Client,
    slots: Mutex<Slots>,
    freed: Condvar,
    timeout: Duration,
    prefix: String,
    lease_ms: u64,
}

impl Link {
    pub fn new(cfg: &SharedConfig) -> Result<Link> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(cfg.redis.as_str())?;
        if let Some(p) = &cfg.password {
            let text = String::from_utf8_lossy(p.expose()).into_owned();
            let settings = info.redis_settings().clone().set_password(text);
            info = info.set_redis_settings(settings);
        }
        let client = if cfg.redis.starts_with("rediss:") {
            // rustls (ring): the system's roots, or `tls_ca_file`'s; a client certificate if
            // configured. The files were read and checked with the configuration.
            let client_tls = cfg.tls_client.as_ref().map(|(cert, key)| ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.expose().to_vec(),
            });
            Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls,
                    root_cert: cfg.tls_ca.clone(),
                },
            )?
        } else {
            Client::open(info)?
        };
        Ok(Link {
            client,
            slots: Mutex::new(Slots {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            timeout: cfg.timeout,
            prefix: cfg.key_prefix.clone(),
            lease_ms: cfg.lease.as_millis() as u64,
        })
    }

    /// A new connection with every timeout set (also the pub/sub listener's).
    pub fn connect(&self) -> Result<Connection> {
        let c = self.client.get_connection_with_timeout(self.timeout)?;
        c.set_read_timeout(Some(self.timeout))?;
        c.set_write_timeout(Some(self.timeout))?;
        Ok(c)
    }

    /// Run `f` on a pooled connection (a new one if none is idle and fewer than
    /// [`MAX_OPEN`] are open; else wait for one up to the timeout); the connection goes back to
    /// the pool only if the call worked. No lock is held during the call.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>) -> Result<T> {
        let until = Instant::now() + self.timeout;
        let pooled = {
            let mut st = self.slots.lock();
            loop {
                if let Some(c) = st.idle.pop() {
                    break Some(c);
                }
                if st.open < MAX_OPEN {
                    st.open += 1;
                    break None;
                }
                if self.freed.wait_until(&mut st, until).timed_out() {
                    return Err(LinkError::Busy);
                }
            }
        };
        let mut c = match pooled {
            Some(c) => c,
            None => match self.connect() {
                Ok(c) => c,
                Err(e) => {
                    self.close_one();
                    return Err(e);
                }
            },
        };
        match f(&mut c) {
            Ok(out) => {
                self.slots.lock().idle.push(c);
                self.freed.notify_one();
                Ok(out)
            }
            Err(e) => {
                drop(c);
                self.close_one();
                Err(e.into())
            }
        }
    }

    /// A connection of the pool was closed.
    fn close_one(&self) {
        let mut st = self.slots.lock();
        st.open = st.open.saturating_sub(1);
        drop(st);
        self.freed.notify_one();
    }

    /// Close every idle connection (after a failure: they may be dead).
    pub fn reset(&self) {
        let gone = {
            let mut st = self.slots.lock();
            let gone = std::mem::take(&mut st.idle);
            st.open = st.open.saturating_sub(gone.len());
            gone
        };
        drop(gone);
        self.freed.notify_all();
    }

    pub fn channel_pattern(&self) -> String {
        format!("{}:released:*", self.prefix)
    }

    fn key(&self, kind: &str, group: &str) -> String {
        format!("{}:{kind}:{group}", self.prefix)
    }

    pub fn acquire(&self, group: &str, cap: usize, member: &str) -> Result<Answer> {
        let key = self.key("lease", group);
        self.with(|c| {
            ACQUIRE
                .key(key)
                .arg(cap)
                .arg(self.lease_ms)
                .arg(member)
                .invoke::<(i64, i64)>(c)
        })
        .map(answer)
    }

    /// Renew `members` of `group`; every member in Redis after it.
    pub fn renew(&self, group: &str, members: &[String]) -> Result<Vec<String>> {
        let key = self.key("lease", group);
        self.with(|c| {
            RENEW
                .key(key)
                .arg(self.lease_ms)
                .arg(members)
                .invoke::<Vec<String>>(c)
        })
    }

    pub fn release(&self, group: &str, members: &[String]) -> Result<u64> {
        let key = self.key("lease", group);
        let channel = self.key("released", group);
        self.with(|c| RELEASE.key(key).arg(channel).arg(members).invoke::<u64>(c))
    }

    /// Announce `host`; the number of live hosts.
    pub fn heartbeat(&self, host: &str) -> Result<usize> {
        let key = format!("{}:hosts", self.prefix);
        self.with(|c| {
            HEARTBEAT
                .key(key)
                .arg(host)
                .arg(self.lease_ms)
                .invoke::<usize>(c)
        })
    }

    /// One new connection toward `group` under `n` per `window`.
    pub fn rate(&self, group: &str, n: usize, window: Duration) -> Result<Answer> {
        let key = self.key("rate", group);
        let interval = window.as_secs_f64() * 1000.0 / n.max(1) as f64;
        let tolerance = interval * (n.max(1) - 1) as f64;
        self.with(|c| {
            GCRA.key(key)
                .arg(interval)
                .arg(tolerance)
                .invoke::<(i64, i64)>(c)
        })
        .map(answer)
    }
}
