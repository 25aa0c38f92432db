//! The SMTP set-up sequence toward an MX, as a sans-I/O state machine:
//! banner → EHLO (HELO if EHLO is refused) → STARTTLS → TLS handshake → EHLO again.
//!
//! The driver (the daemon's `mx::connect`) performs each [`Action`] and feeds back what happened.
//! Which replies count as success, when to fall back to HELO, and what the TLS policy
//! demands are all decided here and unit-tested without sockets.

use crate::protocol::TlsPolicy;
use crate::smtp::{Capabilities, Reply};

/// What the driver must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Read one reply (the phase says which timeout applies).
    ReadReply(Phase),
    /// Send this command line, then read its reply.
    Send(Vec<u8>, Phase),
    /// Run the TLS handshake now (implicit TLS, or after `220` to STARTTLS). The input buffer
    /// must be empty at this point: bytes after the `220` are an injection attempt.
    StartTls,
    /// Set-up finished: hand the connection to the MTA.
    Done,
    /// Set-up failed.
    Fail(SetupFailure),
}

/// Which timeout applies to a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Banner,
    Command,
}

/// Why set-up failed (the driver turns it into a protocol failure reply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetupFailure {
    /// The banner was not 220.
    BannerRejected(Reply),
    /// EHLO and then HELO were refused (the last reply given).
    EhloRejected(Reply),
    /// The MX said 421 (closing) at some step.
    Closing(Reply),
    /// TLS is required but the MX does not offer it or refused STARTTLS.
    TlsNotOffered(String),
    /// An unexpected reply (e.g. a 3xx to EHLO, a 250 to STARTTLS).
    Unexpected(Reply),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Banner,
    Ehlo,
    Helo,
    StartTls,
    Handshake,
    EhloAfterTls,
    Done,
    Failed,
}

/// The set-up state machine.
#[derive(Debug)]
pub struct Setup {
    state: State,
    ehlo_name: String,
    policy: TlsPolicy,
    implicit_tls: bool,
    /// The banner reply.
    pub banner: Option<Reply>,
    /// The EHLO (post-TLS when TLS was established) or HELO reply.
    pub greeting: Option<Reply>,
    /// Capabilities from that reply (empty after HELO).
    pub caps: Capabilities,
    /// HELO had to be used.
    pub used_helo: bool,
    /// TLS is in place (implicit or STARTTLS).
    pub tls: bool,
    /// Why the connection stays in plaintext, when TLS was wanted.
    pub tls_note: Option<String>,
}

impl Setup {
    /// A new set-up for `ehlo_name` under `policy`; `implicit_tls` for SMTPS.
    pub fn new(ehlo_name: &str, policy: TlsPolicy, implicit_tls: bool) -> Setup {
        Setup {
            state: State::Banner,
            ehlo_name: ehlo_name.to_string(),
            policy,
            implicit_tls,
            banner: None,
            greeting: None,
            caps: Capabilities::default(),
            used_helo: false,
            tls: false,
            tls_note: None,
        }
    }

    /// The first action.
    pub fn start(&mut self) -> Action {
        if self.implicit_tls {
            self.state = State::Handshake;
            Action::StartTls
        } else {
            Action::ReadReply(Phase::Banner)
        }
    }

    fn ehlo(&self) -> Vec<u8> {
        format!("EHLO {}\r\n", self.ehlo_name).into_bytes()
    }

    fn fail(&mut self, f: SetupFailure) -> Action {
        self.state = State::Failed;
        Action::Fail(f)
    }

    /// The TLS handshake finished.
    pub fn on_tls_established(&mut self) -> Action {
        if self.state != State::Handshake {
            return self.fail(SetupFailure::TlsNotOffered(
                "TLS started out of sequence".into(),
            ));
        }
        self.tls = true;
        if self.implicit_tls && self.banner.is_none() {
            self.state = State::Banner;
            return Action::ReadReply(Phase::Banner);
        }
        self.state = State::EhloAfterTls;
        Action::Send(self.ehlo(), Phase::Command)
    }

    /// A reply arrived for the current step.
    pub fn on_reply(&mut self, reply: Reply) -> Action {
        let code = reply.code();
        if code == 421 {
            return self.fail(SetupFailure::Closing(reply));
        }
        match self.state {
            State::Banner => {
                if code != 220 {
                    return self.fail(SetupFailure::BannerRejected(reply));
                }
                self.banner = Some(reply);
                self.state = State::Ehlo;
                Action::Send(self.ehlo(), Phase::Command)
            }
            State::Ehlo | State::EhloAfterTls => {
                if (200..300).contains(&code) {
                    self.caps = Capabilities::from_ehlo_reply(&reply);
                    self.greeting = Some(reply);
                    return self.after_greeting();
                }
                if self.state == State::EhloAfterTls || code < 400 {
                    // After TLS, EHLO must work: no HELO downgrade.
                    return self.fail(SetupFailure::EhloRejected(reply));
                }
                self.state = State::Helo;
                Action::Send(
                    format!("HELO {}\r\n", self.ehlo_name).into_bytes(),
                    Phase::Command,
                )
            }
            State::Helo => {
                if !(200..300).contains(&code) {
                    return self.fail(SetupFailure::EhloRejected(reply));
                }
                self.used_helo = true;
                self.caps = Capabilities::default();
                self.greeting = Some(reply);
                self.after_greeting()
            }
            State::StartTls => {
                if code == 220 {
                    self.state = State::Handshake;
                    return Action::StartTls;
                }
                if code < 400 {
                    // Not a refusal: a reply to something else (a stray one in front of the
                    // 220). The MX is out of step; going on in plaintext would relay its 220
                    // to the MTA as the reply to the next command.
                    return self.fail(SetupFailure::Unexpected(reply));
                }
                let note = format!(
                    "STARTTLS refused by the MX: {} {}",
                    reply.code(),
                    reply.text()
                );
                self.plaintext_or_fail(note)
            }
            State::Handshake | State::Done | State::Failed => {
                self.fail(SetupFailure::Unexpected(reply))
            }
        }
    }

    fn after_greeting(&mut self) -> Action {
        if self.tls || self.policy == TlsPolicy::None {
            self.state = State::Done;
            return Action::Done;
        }
        if self.caps.starttls {
            self.state = State::StartTls;
            return Action::Send(b"STARTTLS\r\n".to_vec(), Phase::Command);
        }
        let note = if self.used_helo {
            "the MX refused EHLO, so STARTTLS is not available".to_string()
        } else {
            "the MX does not offer STARTTLS".to_string()
        };
        self.plaintext_or_fail(note)
    }

    fn plaintext_or_fail(&mut self, note: String) -> Action {
        if self.policy == TlsPolicy::Opportunistic {
            self.tls_note = Some(note);
            self.state = State::Done;
            Action::Done
        } else {
            self.fail(SetupFailure::TlsNotOffered(note))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(raw: &str) -> Reply {
        crate::smtp::parse_reply(raw.as_bytes(), &Default::default())
            .unwrap()
            .unwrap()
            .0
    }

    const EHLO_TLS: &str = "250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n";
    const EHLO_PLAIN: &str = "250-mx.test\r\n250 PIPELINING\r\n";

    #[test]
    fn plain_policy_none() {
        let mut s = Setup::new("mta.test", TlsPolicy::None, false);
        assert_eq!(s.start(), Action::ReadReply(Phase::Banner));
        assert_eq!(
            s.on_reply(r("220 hi\r\n")),
            Action::Send(b"EHLO mta.test\r\n".to_vec(), Phase::Command)
        );
        assert_eq!(s.on_reply(r(EHLO_TLS)), Action::Done);
        assert!(!s.tls && s.caps.pipelining && s.tls_note.is_none());
    }

    #[test]
    fn starttls_then_second_ehlo() {
        let mut s = Setup::new("mta.test", TlsPolicy::Opportunistic, false);
        s.start();
        s.on_reply(r("220 hi\r\n"));
        assert_eq!(
            s.on_reply(r(EHLO_TLS)),
            Action::Send(b"STARTTLS\r\n".to_vec(), Phase::Command)
        );
        assert_eq!(s.on_reply(r("220 go ahead\r\n")), Action::StartTls);
        assert_eq!(
            s.on_tls_established(),
            Action::Send(b"EHLO mta.test\r\n".to_vec(), Phase::Command)
        );
        assert_eq!(
            s.on_reply(r("250-mx.test\r\n250 CHUNKING\r\n")),
            Action::Done
        );
        assert!(s.tls && s.caps.chunking && !s.caps.starttls);
    }

    #[test]
    fn opportunistic_without_starttls_stays_plain_with_a_note() {
        let mut s = Setup::new("mta.test", TlsPolicy::Opportunistic, false);
        s.start();
        s.on_reply(r("220 hi\r\n"));
        assert_eq!(s.on_reply(r(EHLO_PLAIN)), Action::Done);
        assert!(s.tls_note.unwrap().contains("does not offer STARTTLS"));
    }

    #[test]
    fn required_without_starttls_fails() {
        for policy in [TlsPolicy::Required, TlsPolicy::Verify] {
            let mut s = Setup::new("mta.test", policy, false);
            s.start();
            s.on_reply(r("220 hi\r\n"));
            assert!(matches!(
                s.on_reply(r(EHLO_PLAIN)),
                Action::Fail(SetupFailure::TlsNotOffered(_))
            ));
        }
        let mut s = Setup::new("mta.test", TlsPolicy::Required, false);
        s.start();
        s.on_reply(r("220 hi\r\n"));
        s.on_reply(r(EHLO_TLS));
        assert!(matches!(
            s.on_reply(r("454 4.7.0 not now\r\n")),
            Action::Fail(SetupFailure::TlsNotOffered(n)) if n.contains("454")
        ));
    }

    #[test]
    fn a_positive_reply_to_starttls_other_than_220_is_out_of_step_not_a_refusal() {
        // A stray reply in front of the real 220 (found by the soak): taking it for a refusal
        // went on in plaintext and left the 220 to be relayed to the MTA as its MAIL's reply.
        for policy in [TlsPolicy::Opportunistic, TlsPolicy::Required] {
            for reply in ["250 2.0.0 stray reply\r\n", "354 go on\r\n"] {
                let mut s = Setup::new("mta.test", policy, false);
                s.start();
                s.on_reply(r("220 hi\r\n"));
                s.on_reply(r(EHLO_TLS));
                assert!(
                    matches!(
                        s.on_reply(r(reply)),
                        Action::Fail(SetupFailure::Unexpected(_))
                    ),
                    "{policy:?} {reply:?}"
                );
                assert!(!s.tls && s.tls_note.is_none());
            }
        }
    }

    #[test]
    fn banner_and_ehlo_rejections() {
        let mut s = Setup::new("mta.test", TlsPolicy::None, false);
        s.start();
        assert!(matches!(
            s.on_reply(r("554 5.7.1 go away\r\n")),
            Action::Fail(SetupFailure::BannerRejected(_))
        ));

        let mut s = Setup::new("mta.test", TlsPolicy::None, false);
        s.start();
        s.on_reply(r("220 hi\r\n"));
        assert_eq!(
            s.on_reply(r("502 5.5.1 no EHLO\r\n")),
            Action::Send(b"HELO mta.test\r\n".to_vec(), Phase::Command)
        );
        assert_eq!(s.on_reply(r("250 hello\r\n")), Action::Done);
        assert!(s.used_helo);

        let mut s = Setup::new("mta.test", TlsPolicy::None, false);
        s.start();
        s.on_reply(r("220 hi\r\n"));
        s.on_reply(r("502 no\r\n"));
        assert!(matches!(
            s.on_reply(r("550 no HELO either\r\n")),
            Action::Fail(SetupFailure::EhloRejected(_))
        ));

        let mut s = Setup::new("mta.test", TlsPolicy::None, false);
        s.start();
        assert!(matches!(
            s.on_reply(r("421 busy\r\n")),
            Action::Fail(SetupFailure::Closing(_))
        ));
    }

    #[test]
    fn implicit_tls_starts_with_the_handshake() {
        let mut s = Setup::new("mta.test", TlsPolicy::Required, true);
        assert_eq!(s.start(), Action::StartTls);
        assert_eq!(s.on_tls_established(), Action::ReadReply(Phase::Banner));
        assert_eq!(
            s.on_reply(r("220 hi\r\n")),
            Action::Send(b"EHLO mta.test\r\n".to_vec(), Phase::Command)
        );
        assert_eq!(s.on_reply(r(EHLO_PLAIN)), Action::Done);
        assert!(s.tls);
    }
}
