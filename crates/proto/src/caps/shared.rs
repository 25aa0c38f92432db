//! Caps shared across proxy hosts (sans-I/O): the book of the leases this host holds per
//! shared destination group, the first-come-first-served queue of requests waiting for one,
//! and the health state machine (shared through Redis, fallback to a share, rejoining).
//!
//! The daemon's `caps::shared` module puts the book under one mutex and does the Redis I/O
//! outside it: the book says *whom* to ask (Redis, or nobody: the local share decides) and
//! records the answers. Time is given (`now`), never read.
//!
//! Health:
//! - `Shared`: Redis decides every lease (a Lua script: drop expired, count, add).
//! - `Fallback`: Redis cannot be reached; each host holds at most its share of each cap,
//!   `max(1, floor(cap / live_hosts))`, `live_hosts` being the last count seen in Redis.
//!   The shares add up to at most the cap (the slack: when there are more live hosts than
//!   the cap, each still has 1).
//! - `Rejoining`: Redis is back; this host re-registered every lease it holds, and for one
//!   lease time (by then every host has either re-registered or its leases are gone) both the
//!   share and Redis must agree to a new lease: the cap is never exceeded while Redis is up.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// What one group shares across hosts; `None`: not shared (local caps only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SharedLimits {
    /// Open connections toward the group from every source of every host.
    pub max_connections: Option<usize>,
    /// New connections per window from every host (GCRA: N per window, a burst of N).
    pub max_new_connections: Option<usize>,
}

/// Whether Redis is deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not heard from Redis yet: ask it (a failure means fallback).
    Starting,
    Shared,
    Fallback {
        since: Instant,
    },
    Rejoining {
        until: Instant,
    },
}

impl Health {
    pub fn name(&self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Shared => "shared",
            Health::Fallback { .. } => "fallback",
            Health::Rejoining { .. } => "rejoining",
        }
    }
}

/// A change of health, to be logged (once each) by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Redis was lost: each host uses its share.
    ToFallback,
    /// Redis is back; leases re-registered; shares apply for one lease time more.
    ToRejoining,
    /// Shared again.
    ToShared,
}

/// A waiting request's place in a group's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// A lease's number on this host (its Redis member is [`SharedBook::member`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub u64);

/// What a waiting request does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Not first in line, or the share is used up: wait for a release.
    Wait,
    /// First in line: ask Redis for this lease (then [`SharedBook::answer`]).
    AskRedis { lease: LeaseId, member: String },
    /// Granted from the local share (fallback).
    Granted(LeaseId),
}

/// What became of a lease given back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Released {
    /// It was not held (already released).
    NotHeld,
    /// Handed to the first in line on this host (still held, still in Redis).
    Handed,
    /// Gone: remove this member from Redis.
    Gone(String),
}

/// What a new connection's rate check does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateStep {
    /// No shared rate for this group, or granted from the local share.
    Go,
    /// Ask Redis (GCRA).
    AskRedis,
    /// The local share of the window is used up until then.
    WaitUntil(Instant),
}

#[derive(Default)]
struct Group {
    limits: SharedLimits,
    held: BTreeSet<LeaseId>,
    queue: VecDeque<Ticket>,
    /// Leases given back here in fallback or rejoining and handed to the first in line (held
    /// all along, within the share), until their ticket steps.
    handed: BTreeMap<Ticket, LeaseId>,
    /// Dials in the window, for the fallback share of the rate.
    dials: VecDeque<Instant>,
    /// Holders per host as last read from Redis (for the status view).
    holders: Vec<(String, usize)>,
}

/// One row per shared group, for the status view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedView {
    pub group: String,
    pub limits: SharedLimits,
    /// Leases held by this host.
    pub held: usize,
    /// Requests of this host waiting for a lease.
    pub waiting: usize,
    /// This host's share (what it may hold in fallback).
    pub share: Option<usize>,
    /// Holders per host as last read from Redis.
    pub holders: Vec<(String, usize)>,
}

/// The book of shared leases on this host.
pub struct SharedBook {
    /// `host|instance-`: the prefix of this process's members.
    prefix: String,
    next_lease: u64,
    next_ticket: u64,
    groups: BTreeMap<String, Group>,
    health: Health,
    live_hosts: usize,
    lease_time: Duration,
    window: Duration,
}

impl SharedBook {
    /// A book for `host` (its name in Redis: no `|`) in the process `instance` (unique per
    /// start, so that leases of an earlier process are never mistaken for ours). It starts in
    /// `Starting`: Redis decides (as when shared) until the first heartbeat round says whether
    /// it answers (then shared) or a call fails (then fallback).
    pub fn new(host: &str, instance: &str, lease_time: Duration, window: Duration) -> SharedBook {
        SharedBook {
            prefix: format!("{host}|{instance}-"),
            next_lease: 0,
            next_ticket: 0,
            groups: BTreeMap::new(),
            health: Health::Starting,
            live_hosts: 1,
            lease_time,
            window,
        }
    }

    /// The shared limits in force (start, reload); groups no longer shared keep their leases
    /// until they are released.
    pub fn configure(
        &mut self,
        limits: impl IntoIterator<Item = (String, SharedLimits)>,
        window: Duration,
    ) {
        self.window = window;
        for g in self.groups.values_mut() {
            g.limits = SharedLimits::default();
        }
        for (name, l) in limits {
            self.groups.entry(name).or_default().limits = l;
        }
    }

    /// The shared limits of `group` (default: nothing shared).
    pub fn limits(&self, group: &str) -> SharedLimits {
        self.groups.get(group).map(|g| g.limits).unwrap_or_default()
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// The live hosts last counted in Redis (at least 1).
    pub fn live_hosts(&self) -> usize {
        self.live_hosts
    }

    /// The Redis member of `lease`.
    pub fn member(&self, lease: LeaseId) -> String {
        format!("{}{}", self.prefix, lease.0)
    }

    /// This host's share of `cap`: `max(1, floor(cap / live_hosts))`.
    pub fn share(&self, cap: usize) -> usize {
        (cap / self.live_hosts.max(1)).max(1)
    }

    /// A request for a lease of `group` joins the queue.
    pub fn join(&mut self, group: &str) -> Ticket {
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.groups
            .entry(group.to_string())
            .or_default()
            .queue
            .push_back(t);
        t
    }

    /// Whether `ticket` is first in its group's line.
    pub fn is_first(&self, group: &str, ticket: Ticket) -> bool {
        self.groups
            .get(group)
            .is_some_and(|g| g.queue.front() == Some(&ticket))
    }

    /// Leases held, all groups.
    pub fn held_count(&self) -> usize {
        self.groups.values().map(|g| g.held.len()).sum()
    }

    /// A mark for [`SharedBook::redis_ok`]: leases numbered from here on were not in a
    /// [`SharedBook::held_members`] taken now.
    pub fn mark(&self) -> u64 {
        self.next_lease
    }

    /// What `ticket` does now.
    pub fn step(&mut self, group: &str, ticket: Ticket, now: Instant) -> Step {
        let share_cap = {
            let Some(g) = self.groups.get_mut(group) else {
                return Step::Wait;
            };
            if let Some(lease) = g.handed.remove(&ticket) {
                return Step::Granted(lease);
            }
            if g.queue.front() != Some(&ticket) {
                return Step::Wait;
            }
            g.limits.max_connections.map(|c| self.share(c))
        };
        let held = self.groups.get(group).map_or(0, |g| g.held.len());
        let within_share = share_cap.is_none_or(|s| held < s);
        self.tick(now);
        match self.health {
            Health::Shared | Health::Starting => self.ask(),
            Health::Rejoining { .. } if within_share => self.ask(),
            Health::Fallback { .. } if within_share => {
                let lease = self.take_lease();
                self.grant(group, ticket, lease);
                Step::Granted(lease)
            }
            _ => Step::Wait,
        }
    }

    fn take_lease(&mut self) -> LeaseId {
        let l = LeaseId(self.next_lease);
        self.next_lease += 1;
        l
    }

    fn ask(&mut self) -> Step {
        let lease = self.take_lease();
        Step::AskRedis {
            lease,
            member: self.member(lease),
        }
    }

    /// Redis answered `ticket`'s ask for `lease`: granted (true) or the cap is full. If a
    /// lease was handed to `ticket` meanwhile and Redis granted one too, the handed one is
    /// given back ([`SharedBook::release`]'s answer is returned: a member to remove).
    pub fn answer(
        &mut self,
        group: &str,
        ticket: Ticket,
        lease: LeaseId,
        granted: bool,
    ) -> Released {
        if !granted {
            return Released::NotHeld;
        }
        self.grant(group, ticket, lease);
        let handed = self
            .groups
            .get_mut(group)
            .and_then(|g| g.handed.remove(&ticket));
        match handed {
            Some(h) => self.release(group, h),
            None => Released::NotHeld,
        }
    }

    fn grant(&mut self, group: &str, ticket: Ticket, lease: LeaseId) {
        if let Some(g) = self.groups.get_mut(group) {
            g.queue.retain(|t| *t != ticket);
            g.held.insert(lease);
        }
    }

    /// `ticket` gives up (its wait expired, or it got a connection some other way); a lease
    /// handed to it meanwhile is given back.
    pub fn leave(&mut self, group: &str, ticket: Ticket) -> Released {
        let Some(g) = self.groups.get_mut(group) else {
            return Released::NotHeld;
        };
        g.queue.retain(|t| *t != ticket);
        match g.handed.remove(&ticket) {
            Some(h) => self.release(group, h),
            None => Released::NotHeld,
        }
    }

    /// A lease ends (its connection closed). In fallback and rejoining it goes to the first
    /// in line on this host if that one may hold one more (within the share); otherwise, and
    /// always when Redis decides (so that every host's first in line has the same chance at
    /// it), it is gone: the caller removes its member from Redis. Either way the caller wakes
    /// the waiters.
    pub fn release(&mut self, group: &str, lease: LeaseId) -> Released {
        let share = self
            .groups
            .get(group)
            .and_then(|g| g.limits.max_connections)
            .map(|c| self.share(c));
        let health = self.health;
        let Some(g) = self.groups.get_mut(group) else {
            return Released::NotHeld;
        };
        if !g.held.remove(&lease) {
            return Released::NotHeld;
        }
        let may = match health {
            Health::Shared | Health::Starting => false,
            Health::Fallback { .. } | Health::Rejoining { .. } => {
                share.is_some_and(|s| g.held.len() < s)
            }
        };
        if may {
            if let Some(t) = g.queue.pop_front() {
                g.held.insert(lease);
                g.handed.insert(t, lease);
                return Released::Handed;
            }
        }
        Released::Gone(self.member(lease))
    }

    /// A new connection toward `group` is about to be dialled: may it?
    pub fn rate(&mut self, group: &str, now: Instant) -> RateStep {
        let window = self.window;
        let live = self.live_hosts.max(1);
        let health = self.health;
        let Some(g) = self.groups.get_mut(group) else {
            return RateStep::Go;
        };
        let Some(n) = g.limits.max_new_connections else {
            return RateStep::Go;
        };
        while g
            .dials
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            g.dials.pop_front();
        }
        match health {
            Health::Shared | Health::Starting | Health::Rejoining { .. } => RateStep::AskRedis,
            Health::Fallback { .. } => {
                let share = (n / live).max(1);
                if g.dials.len() < share {
                    g.dials.push_back(now);
                    RateStep::Go
                } else {
                    RateStep::WaitUntil(g.dials.front().map_or(now, |&t| t + window))
                }
            }
        }
    }

    /// Every lease held, per group, as Redis members (renewal, re-registration).
    pub fn held_members(&self) -> Vec<(String, Vec<String>)> {
        self.groups
            .iter()
            .filter(|(_, g)| !g.held.is_empty() || g.limits.max_connections.is_some())
            .map(|(name, g)| {
                (
                    name.clone(),
                    g.held.iter().map(|&l| self.member(l)).collect(),
                )
            })
            .collect()
    }

    /// A Redis call failed: fallback (from any state).
    pub fn redis_failed(&mut self, now: Instant) -> Option<Transition> {
        match self.health {
            Health::Fallback { .. } => None,
            _ => {
                self.health = Health::Fallback { since: now };
                Some(Transition::ToFallback)
            }
        }
    }

    /// A heartbeat succeeded and counted `live_hosts`; `reregistered`: the [`SharedBook::mark`]
    /// taken with the [`SharedBook::held_members`] that were all written again in this round
    /// (leaving fallback requires that no lease granted since is missing from Redis).
    pub fn redis_ok(
        &mut self,
        live_hosts: usize,
        reregistered: Option<u64>,
        now: Instant,
    ) -> Option<Transition> {
        self.live_hosts = live_hosts.max(1);
        let reregistered = reregistered.is_some_and(|mark| {
            self.groups
                .values()
                .all(|g| g.held.iter().all(|l| l.0 < mark))
        });
        match self.health {
            Health::Fallback { .. } if reregistered => {
                self.health = Health::Rejoining {
                    until: now + self.lease_time,
                };
                Some(Transition::ToRejoining)
            }
            Health::Starting => {
                self.health = Health::Shared;
                Some(Transition::ToShared)
            }
            _ => self.tick(now),
        }
    }

    /// Rejoining ends after one lease time.
    fn tick(&mut self, now: Instant) -> Option<Transition> {
        match self.health {
            Health::Rejoining { until } if now >= until => {
                self.health = Health::Shared;
                Some(Transition::ToShared)
            }
            _ => None,
        }
    }

    /// Holders per host, as read from Redis for `group`.
    pub fn set_holders(&mut self, group: &str, members: &[String]) {
        if let Some(g) = self.groups.get_mut(group) {
            g.holders = holders(members);
        }
    }

    /// One row per shared group.
    pub fn view(&self) -> Vec<SharedView> {
        self.groups
            .iter()
            .filter(|(_, g)| g.limits != SharedLimits::default() || !g.held.is_empty())
            .map(|(name, g)| SharedView {
                group: name.clone(),
                limits: g.limits,
                held: g.held.len(),
                waiting: g.queue.len() + g.handed.len(),
                share: g.limits.max_connections.map(|c| self.share(c)),
                holders: g.holders.clone(),
            })
            .collect()
    }
}

/// Members (`host|instance-n`) counted per host, sorted by host.
pub fn holders(members: &[String]) -> Vec<(String, usize)> {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for m in members {
        let host = m.split_once('|').map_or(m.as_str(), |(h, _)| h);
        *by.entry(host).or_insert(0) += 1;
    }
    by.into_iter().map(|(h, n)| (h.to_string(), n)).collect()
}
