//! The end-of-run judgement: every message the MXes received set against what its MTA was told.

use crate::rig::Mx;
use crate::transact::{hash, id_of, Ledger, Outcome};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;

/// One message as an MX received it.
#[derive(Debug)]
pub struct Arrival {
    pub id: Option<u64>,
    pub mx: usize,
    pub peer: IpAddr,
    pub ehlo: Option<String>,
    pub from: String,
    pub rcpts: Vec<String>,
    pub len: usize,
    pub hash: u64,
}

/// Take what the MXes received so far (their bodies are hashed and dropped).
pub fn collect(mxes: &[Mx], into: &Mutex<Vec<Arrival>>) {
    for (i, m) in mxes.iter().enumerate() {
        let got = m.mx.take_messages();
        if got.is_empty() {
            continue;
        }
        let mut v = into.lock();
        for msg in got {
            v.push(Arrival {
                id: id_of(&msg.content),
                mx: i,
                peer: msg.peer.ip(),
                ehlo: msg.ehlo,
                from: msg.mail_from,
                rcpts: msg.rcpt_to,
                len: msg.content.len(),
                hash: hash(&msg.content),
            });
        }
    }
}

#[derive(Default, Debug)]
pub struct Verdict {
    pub messages: u64,
    pub accepted: u64,
    pub failed: u64,
    pub ambiguous: u64,
    pub lost: u64,
    pub lies: u64,
    pub misattributed: u64,
    /// Messages handed a reply nobody asked for through the native protocol or an SMTP-aware
    /// front-end (ambiguous; for the record).
    pub out_of_step: u64,
    /// The first few cases of each problem, for the log.
    pub details: Vec<String>,
}

impl Verdict {
    fn note(&mut self, s: String) {
        if self.details.len() < 30 {
            self.details.push(s);
        }
    }
}

pub fn judge(ledger: &Ledger, arrivals: &[Arrival]) -> Verdict {
    let sent = ledger.sent.lock();
    let mut v = Verdict {
        messages: sent.len() as u64,
        ..Verdict::default()
    };
    let mut by_id: HashMap<u64, Vec<&Arrival>> = HashMap::new();
    for a in arrivals {
        match a.id {
            Some(id) if sent.contains_key(&id) => by_id.entry(id).or_default().push(a),
            _ => {
                v.lies += 1;
                v.note(format!(
                    "a message nobody sent (or whose id was mangled) arrived: {a:?}"
                ));
            }
        }
    }
    for (id, s) in sent.iter() {
        match s.outcome {
            Outcome::Accepted => v.accepted += 1,
            Outcome::Failed => v.failed += 1,
            Outcome::Ambiguous => v.ambiguous += 1,
        }
        if s.relayed_out_of_step {
            v.out_of_step += 1;
        }
        let got = by_id.get(id).map_or(&[][..], |g| g.as_slice());
        match (s.outcome, got.len()) {
            (Outcome::Accepted, 0) => {
                v.lost += 1;
                v.note(format!(
                    "lost: message {id} was accepted ({}) and never arrived: {s:?}",
                    s.how
                ));
            }
            (Outcome::Failed, n) if n > 0 => {
                v.lies += 1;
                v.note(format!(
                    "lie: message {id} was told failed ({}) and arrived {n} time(s)",
                    s.how
                ));
            }
            (_, n) if n > 1 => {
                v.lies += 1;
                v.note(format!(
                    "lie: message {id} ({:?}) arrived {n} times",
                    s.outcome
                ));
            }
            _ => {}
        }
        for a in got {
            if a.len != s.len || a.hash != s.hash {
                v.lies += 1;
                v.note(format!(
                    "lie: message {id} arrived altered: {} bytes sent, {} arrived",
                    s.len, a.len
                ));
            }
            let rcpts_ok = !a.rcpts.is_empty() && a.rcpts.iter().all(|r| s.rcpts.contains(r));
            let ok = a.mx == s.mx
                && a.peer == s.source
                && a.ehlo.as_deref() == Some(s.ehlo.as_str())
                && a.from == s.from
                && rcpts_ok;
            if !ok {
                v.misattributed += 1;
                v.note(format!(
                    "misattributed: message {id} of MTA {} sent to MX {} from {} as {} arrived at MX {} from {} as {:?}, MAIL {} RCPT {:?}",
                    s.mta, s.mx, s.source, s.ehlo, a.mx, a.peer, a.ehlo, a.from, a.rcpts
                ));
            }
        }
    }
    v
}

/// The ambiguous messages by what happened (the reply's first words, or the error's).
pub fn ambiguous_kinds(ledger: &Ledger) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for s in ledger.sent.lock().values() {
        if s.outcome == Outcome::Ambiguous {
            let (way, how) = s.how.split_once(": ").unwrap_or(("?", &s.how));
            // Numbers (queue ids, sizes) left out, so that like goes with like.
            let how: String = how
                .trim_start_matches(|c: char| "[\"".contains(c))
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .take(36)
                .collect();
            let key = format!("{way}: {how}");
            *m.entry(key).or_default() += 1;
        }
    }
    m
}

/// The checks can fail: a ledger and arrivals with one case of each problem must be judged so.
/// Run before every soak (it costs nothing); a checker that cannot fail proves nothing.
pub fn self_test() -> Result<(), String> {
    use crate::transact::Sent;
    let ledger = Ledger::default();
    let source: IpAddr = "127.0.0.2".parse().unwrap();
    let sent = |outcome| Sent {
        mta: 0,
        mx: 0,
        source,
        ehlo: "mta0-0.soak.test".into(),
        from: "a@soak.test".into(),
        rcpts: vec!["b@soak.test".into()],
        len: 3,
        hash: hash(b"abc"),
        outcome,
        relayed_out_of_step: false,
        how: "canary".into(),
    };
    let arrived = |id| Arrival {
        id: Some(id),
        mx: 0,
        peer: source,
        ehlo: Some("mta0-0.soak.test".into()),
        from: "a@soak.test".into(),
        rcpts: vec!["b@soak.test".into()],
        len: 3,
        hash: hash(b"abc"),
    };
    {
        let mut l = ledger.sent.lock();
        for id in 1..=6 {
            l.insert(id, sent(Outcome::Accepted));
        }
        l.insert(8, sent(Outcome::Failed));
        l.insert(9, sent(Outcome::Ambiguous));
        l.insert(10, sent(Outcome::Ambiguous));
    }
    let mut a: Vec<Arrival> = [1, 3, 3, 4, 5, 6, 8, 9].into_iter().map(arrived).collect();
    // 2 lost; 3 twice; 4 altered; 5 from another source; 6 with another EHLO name; 8 told
    // failed; 9 ambiguous and arrived, 10 ambiguous and not: both fine; 11 nobody sent.
    a[3].hash ^= 1;
    a[4].peer = "127.0.0.3".parse().unwrap();
    a[5].ehlo = Some("mta1-0.soak.test".into());
    a.push(arrived(11));
    let v = judge(&ledger, &a);
    let got = (v.lost, v.lies, v.misattributed, v.ambiguous);
    if got == (1, 4, 2, 2) {
        Ok(())
    } else {
        Err(format!(
            "the checks' self-test: (lost, lies, misattributed, ambiguous) = {got:?}, expected (1, 4, 2, 2): {:?}",
            v.details
        ))
    }
}
