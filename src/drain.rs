//! Drains: source addresses and MXes the operator took out of service (`gaproxy drain`).
//!
//! A drained source address or MX gets no new connection (`453 drained`, checked by the egress
//! core for every front-end), its idle pooled connections are closed, and connections in use
//! finish their session but are not pooled afterwards. Drains survive a reload (SIGHUP); with a
//! `state_directory` they are kept in a file there and survive a restart too ([`store`]).

pub mod store;

pub use greenarrow_proxy_proto::control::MxTarget;

use crate::pool::PoolKey;
pub use greenarrow_proxy_proto::status::DrainList;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use store::StoreError;

/// A copy of the drains in force, to match pool keys without holding the drains' lock (a
/// pool filter runs under the pool's lock).
#[derive(Clone, Default)]
pub struct Set {
    sources: BTreeSet<IpAddr>,
    mx: BTreeSet<MxTarget>,
}

impl Set {
    /// Whether a connection from `source` to `mx` is drained (either end).
    pub fn key_drained(&self, source: IpAddr, mx: SocketAddr) -> bool {
        self.sources.contains(&source.to_canonical()) || self.mx.iter().any(|m| m.matches(mx))
    }

    /// Whether pooled connections under `key` are drained.
    pub fn matches(&self, key: &PoolKey) -> bool {
        self.key_drained(key.source, key.mx)
    }
}

/// The drains in force (one small mutex; held only to read or change the sets).
#[derive(Default)]
pub struct Drains {
    set: Mutex<Set>,
    /// The state directory the drains are kept in (None: not kept). Its lock orders the
    /// writers of the file: each writes the drains in force when it holds it, so the last
    /// write has the last change. Lock order: `store`, then `set`.
    store: Mutex<Option<PathBuf>>,
}

impl Drains {
    /// Keep the drains in `dir` from now on, adding those already kept there; how many
    /// were restored. Called once at start, before any connection is accepted.
    pub fn open(&self, dir: &Path) -> Result<usize, StoreError> {
        let mut store = self.store.lock();
        let kept = store::load(dir)?;
        let n = kept.sources.len() + kept.mx.len();
        {
            let mut set = self.set.lock();
            set.sources
                .extend(kept.sources.iter().map(|ip| ip.to_canonical()));
            set.mx.extend(kept.mx);
        }
        *store = Some(dir.to_path_buf());
        Ok(n)
    }

    /// The state directory the drains are kept in.
    pub fn directory(&self) -> Option<PathBuf> {
        self.store.lock().clone()
    }

    /// Write the drains in force to the state directory, after a change: the file kept,
    /// None when there is no state directory.
    pub fn persist(&self) -> Result<Option<PathBuf>, StoreError> {
        let store = self.store.lock();
        let Some(dir) = store.as_deref() else {
            return Ok(None);
        };
        store::save(dir, &self.list())?;
        Ok(Some(dir.join(store::FILE_NAME)))
    }

    /// Drain `ip`; false if it already was.
    pub fn drain_source(&self, ip: IpAddr) -> bool {
        self.set.lock().sources.insert(ip.to_canonical())
    }

    /// Drain `mx`; false if it already was.
    pub fn drain_mx(&self, mx: MxTarget) -> bool {
        self.set.lock().mx.insert(mx)
    }

    /// Undrain `ip`; false if it was not drained.
    pub fn undrain_source(&self, ip: IpAddr) -> bool {
        self.set.lock().sources.remove(&ip.to_canonical())
    }

    /// Undrain `mx` (exactly as drained); false if it was not drained.
    pub fn undrain_mx(&self, mx: MxTarget) -> bool {
        self.set.lock().mx.remove(&mx)
    }

    /// Undrain everything; how many drains ended.
    pub fn undrain_all(&self) -> usize {
        let mut s = self.set.lock();
        let n = s.sources.len() + s.mx.len();
        s.sources.clear();
        s.mx.clear();
        n
    }

    pub fn source_drained(&self, ip: IpAddr) -> bool {
        self.set.lock().sources.contains(&ip.to_canonical())
    }

    pub fn mx_drained(&self, addr: SocketAddr) -> bool {
        self.set.lock().mx.iter().any(|m| m.matches(addr))
    }

    /// Whether a connection from `source` to `mx` is drained (either end).
    pub fn key_drained(&self, source: IpAddr, mx: SocketAddr) -> bool {
        self.set.lock().key_drained(source, mx)
    }

    /// A copy of the drains in force.
    pub fn copy(&self) -> Set {
        self.set.lock().clone()
    }

    /// The drains in force.
    pub fn list(&self) -> DrainList {
        let s = self.set.lock();
        DrainList {
            sources: s.sources.iter().copied().collect(),
            mx: s.mx.iter().map(|m| m.to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_mx_drained_by_address_covers_every_port_and_by_address_and_port_one() {
        let d = Drains::default();
        assert!(d.drain_mx("192.0.2.1".parse().unwrap()));
        assert!(d.drain_mx("192.0.2.2:25".parse().unwrap()));
        assert!(
            !d.drain_mx("192.0.2.2:25".parse().unwrap()),
            "already drained"
        );
        assert!(d.mx_drained(sa("192.0.2.1:25")) && d.mx_drained(sa("192.0.2.1:2525")));
        assert!(d.mx_drained(sa("192.0.2.2:25")) && !d.mx_drained(sa("192.0.2.2:587")));
        assert!(!d.mx_drained(sa("192.0.2.3:25")));
        // The IPv4-mapped form of a drained address is the same MX.
        assert!(d.mx_drained(sa("[::ffff:192.0.2.1]:25")));
        assert_eq!(
            d.list().mx,
            vec!["192.0.2.1".to_string(), "192.0.2.2:25".to_string()]
        );
        assert!(d.undrain_mx("192.0.2.1".parse().unwrap()));
        assert!(!d.mx_drained(sa("192.0.2.1:25")));
    }

    #[test]
    fn a_drained_source_drains_its_pool_keys_until_undrained() {
        let d = Drains::default();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let key = PoolKey::new(ip, "mta.test", sa("127.0.0.1:25"));
        let other = PoolKey::new("127.0.0.3".parse().unwrap(), "mta.test", sa("127.0.0.1:25"));
        assert!(!d.copy().matches(&key));
        d.drain_source(ip);
        assert!(d.copy().matches(&key) && !d.copy().matches(&other));
        assert!(d.source_drained("::ffff:127.0.0.2".parse().unwrap()));
        assert_eq!(d.undrain_all(), 1);
        assert!(!d.copy().matches(&key));
        assert!(!d.undrain_source(ip));
    }

    #[test]
    fn mx_targets_parse_with_clear_errors() {
        assert_eq!(
            "[::1]:25".parse::<MxTarget>(),
            Ok(MxTarget::Addr(sa("[::1]:25")))
        );
        let e = "mx.example".parse::<MxTarget>().unwrap_err();
        assert!(e.contains("not an MX address"), "{e}");
    }
}
