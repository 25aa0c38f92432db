//! A network namespace a test makes itself (tests/addresses.rs, the soak): created with
//! `ip netns add`, entered by the calling thread with setns(2) (threads and processes it starts
//! afterwards are inside too), deleted on drop. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).

use std::process::Command;

/// A network namespace of this test; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Create a namespace, bring its `lo` up and move this thread into it; None (with a
    /// message) where namespaces are not available.
    pub fn enter(tag: &str) -> Option<Netns> {
        let name = format!("gaproxy-test-{tag}-{}", std::process::id());
        let created = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .is_ok_and(|o| o.status.success());
        if !created {
            eprintln!("SKIPPED: cannot create a network namespace (not root, or no `ip`)");
            return None;
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        let fd = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        Some(ns)
    }

    /// `ip -n <ns> args...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        if let Err(e) = self.try_ip(args) {
            panic!("ip {args:?}: {e}");
        }
    }

    pub fn try_ip(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn add(&self, addr: &str) {
        self.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
    }

    pub fn del(&self, addr: &str) {
        self.ip(&["addr", "del", &format!("{addr}/32"), "dev", "lo"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
