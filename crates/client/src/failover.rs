//! Several proxies, tried in order: an MTA keeps delivering when one proxy host is down,
//! saturated or stopping, without ever sending a message twice by its own doing.
//!
//! The rule ([`decide`]) is a pure function of how far the attempt got ([`Stage`]), whether
//! a message was accepted in it, and the error:
//!
//! | Stage | Moves to the next proxy on |
//! |---|---|
//! | `Connect`, `Tls` | any failure (connection refused, timeout, handshake failure) |
//! | `Request` (AUTH, CONNECT) | `421 busy`, `451 source_not_local` (the address may live on another proxy host), the connection lost before the reply |
//! | `Envelope` (MAIL, RCPT, DATA up to 354) | the connection lost: no message data was sent |
//! | `Data`, `Accepted` | never: the MX may have accepted (or did accept) the message |
//!
//! Refusals by the MX (through the proxy) and the proxy's other failures (authentication,
//! policy, the MX unreachable) are the same through every proxy: they are returned.
//!
//! [`Failover`] applies the rule: it keeps one proxy connection (the one that worked last) and
//! runs a job — open, deliver, QUIT — on it, moving on when the rule says so; every proxy is
//! tried at most once per job (a connection that had served earlier jobs and was found closed
//! is first replaced by a fresh one to the same proxy). [`Endpoint::resolve`] turns `--proxy`
//! arguments into addresses; a name with several addresses gives one endpoint each.

use super::Endpoint;
use super::{ClientError, ProxyClient, ProxyClientConfig};
use greenarrow_proxy_proto::protocol::Failure;
use std::fmt;
use std::net::SocketAddr;

/// How far an attempt got when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TCP connection to the proxy.
    Connect,
    /// TLS handshake with the proxy.
    Tls,
    /// `AUTH` and the request, up to the ready reply: nothing reached the MX's SMTP session.
    Request,
    /// In the SMTP session, no message data sent (MAIL, RCPT, DATA up to its 354).
    Envelope,
    /// Message data sent (or being sent), the final reply not received: the MX may have
    /// accepted the message.
    Data,
    /// The MX accepted the message (final 2xx); e.g. the QUIT after it failed.
    Accepted,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Tls => "TLS handshake",
            Stage::Request => "request",
            Stage::Envelope => "envelope",
            Stage::Data => "message data",
            Stage::Accepted => "after acceptance",
        })
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try the same job through the next proxy.
    NextProxy,
    /// Return the error to the caller (its queue decides: retry later or bounce).
    Stop,
}

/// The failover rule. `accepted` is whether the MX accepted a message earlier in the same
/// job: then nothing is retried anywhere, whatever the stage.
pub fn decide(stage: Stage, accepted: bool, err: &ClientError) -> Decision {
    if accepted {
        return Decision::Stop;
    }
    let lost = matches!(
        err,
        ClientError::Connect(_) | ClientError::Tls(_) | ClientError::Io(_)
    );
    let next = match stage {
        Stage::Connect | Stage::Tls => true,
        Stage::Request => {
            lost || matches!(
                err,
                ClientError::Proxy(f)
                    if matches!(f.failure, Failure::Busy | Failure::SourceNotLocal)
            )
        }
        Stage::Envelope => lost,
        Stage::Data | Stage::Accepted => false,
    };
    if next {
        Decision::NextProxy
    } else {
        Decision::Stop
    }
}

/// One failed attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub proxy: SocketAddr,
    pub stage: Stage,
    pub error: String,
}

/// A job failed: the last error (what the caller's queue acts on) and every attempt.
#[derive(Debug)]
pub struct FailoverError {
    pub last: ClientError,
    /// Where it was when it failed for good.
    pub stage: Stage,
    /// The attempts moved away from, in order (the last one not included).
    pub attempts: Vec<Attempt>,
    /// The proxy of the last attempt (None when no proxy was given).
    pub proxy: Option<SocketAddr>,
}

impl fmt::Display for FailoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.last)?;
        if !self.attempts.is_empty() {
            let tried: Vec<String> = self
                .attempts
                .iter()
                .map(|a| format!("{} ({}: {})", a.proxy, a.stage, a.error))
                .collect();
            write!(f, " (after trying {})", tried.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for FailoverError {}

/// A proxy connection over a list of proxies (see the module documentation).
pub struct Failover {
    base: ProxyClientConfig,
    endpoints: Vec<Endpoint>,
    /// The endpoint tried first: the one that worked last.
    current: usize,
    client: Option<ProxyClient>,
    transcript: Option<Vec<String>>,
}

impl Failover {
    /// `base` gives the TLS roots, secret and timeout (its `proxy` and `tls_name` are
    /// replaced by each endpoint's).
    pub fn new(base: ProxyClientConfig, endpoints: Vec<Endpoint>) -> Failover {
        Failover {
            base,
            endpoints,
            current: 0,
            client: None,
            transcript: None,
        }
    }

    /// Record transcripts (each proxy connection's, and a `*** ` line per failover).
    pub fn record_transcript(&mut self) {
        self.transcript = Some(Vec::new());
    }

    /// Take the transcript recorded so far.
    pub fn take_transcript(&mut self) -> Vec<String> {
        self.collect_transcript();
        self.transcript
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn collect_transcript(&mut self) {
        if let (Some(t), Some(c)) = (self.transcript.as_mut(), self.client.as_mut()) {
            t.extend(c.take_transcript());
        }
    }

    fn note(&mut self, line: String) {
        if let Some(t) = self.transcript.as_mut() {
            t.push(format!("*** {line}"));
        }
    }

    /// The proxy in use (or tried first next time).
    pub fn current(&self) -> Option<&Endpoint> {
        self.endpoints.get(self.current)
    }

    /// Run `job` on a proxy connection, moving to the next proxy when [`decide`] says so.
    /// The job must be safe to run again from its start after a failure the rule lets
    /// through (it is: nothing was accepted in it).
    pub fn run<T>(
        &mut self,
        mut job: impl FnMut(&mut ProxyClient) -> Result<T, ClientError>,
    ) -> Result<T, FailoverError> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(FailoverError {
                last: ClientError::Protocol("no proxy address given".into()),
                stage: Stage::Connect,
                attempts: Vec::new(),
                proxy: None,
            });
        }
        let mut attempts: Vec<(ClientError, Stage, Attempt)> = Vec::new();
        let mut tried = 0;
        // A connection kept from earlier jobs may have been closed by the proxy meanwhile
        // (mta_idle): replaced once by a fresh one to the same proxy, not counted as a try.
        let mut fresh_retry = true;
        loop {
            if tried >= n {
                // `tried` counts the attempts pushed: there is at least one.
                let (last, stage, proxy) = match attempts.pop() {
                    Some((e, s, a)) => (e, s, Some(a.proxy)),
                    None => (
                        ClientError::Protocol("no attempt made".into()),
                        Stage::Connect,
                        None,
                    ),
                };
                return Err(FailoverError {
                    last,
                    stage,
                    attempts: attempts.into_iter().map(|(_, _, a)| a).collect(),
                    proxy,
                });
            }
            if self.current >= n {
                self.current = 0;
            }
            let ep = self.endpoints[self.current].clone();
            let (result, stage, accepted, reused) = match self.client.as_mut() {
                Some(c) => {
                    let before = c.accepted();
                    let reused = c.opened() > 0;
                    let r = job(c);
                    (r, c.stage(), c.accepted() > before, reused)
                }
                None => match self.connect(&ep) {
                    Ok(()) => continue,
                    Err((e, stage)) => (Err(e), stage, false, false),
                },
            };
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let decision = decide(stage, accepted, &err);
            // Kept only back in the command state (an SMTP session left open would take the
            // next request line for an SMTP command).
            let keep = decision == Decision::Stop && stage == Stage::Request && still_usable(&err);
            if !keep {
                self.collect_transcript();
                self.client = None;
            }
            if decision == Decision::Stop {
                return Err(FailoverError {
                    last: err,
                    stage,
                    attempts: attempts.into_iter().map(|(_, _, a)| a).collect(),
                    proxy: Some(ep.addr),
                });
            }
            let lost = matches!(err, ClientError::Io(_));
            if reused && fresh_retry && stage == Stage::Request && lost {
                fresh_retry = false;
                self.note(format!(
                    "proxy {} closed the connection kept from before ({err}); reconnecting",
                    ep.addr
                ));
                continue;
            }
            tried += 1;
            self.current = (self.current + 1) % n;
            let next = self.endpoints.get(self.current).map(|e| e.addr);
            let attempt = Attempt {
                proxy: ep.addr,
                stage,
                error: err.to_string(),
            };
            match next {
                Some(next) if tried < n => self.note(format!(
                    "proxy {} failed ({stage}: {err}); trying {next}",
                    ep.addr
                )),
                _ => self.note(format!(
                    "proxy {} failed ({stage}: {err}); no proxy left",
                    ep.addr
                )),
            }
            attempts.push((err, stage, attempt));
        }
    }

    /// Connect to `ep` (TCP and TLS).
    fn connect(&mut self, ep: &Endpoint) -> Result<(), (ClientError, Stage)> {
        let cfg = ProxyClientConfig {
            proxy: ep.addr,
            tls_name: ep.tls_name.clone(),
            ..self.base.clone()
        };
        match ProxyClient::connect(&cfg) {
            Ok(mut c) => {
                if self.transcript.is_some() {
                    c.record_transcript();
                }
                self.note(format!("connected to proxy {}", ep.addr));
                self.client = Some(c);
                Ok(())
            }
            Err(e) => {
                let stage = match e {
                    ClientError::Tls(_) => Stage::Tls,
                    _ => Stage::Connect,
                };
                Err((e, stage))
            }
        }
    }

    /// End the proxy connection, if any.
    pub fn quit(mut self) -> Result<(), ClientError> {
        match self.client.take() {
            Some(c) => c.quit(),
            None => Ok(()),
        }
    }
}

/// After this error (returned to the caller), may the proxy connection serve another job?
fn still_usable(err: &ClientError) -> bool {
    match err {
        ClientError::Smtp { .. } => true,
        ClientError::Proxy(f) => !matches!(
            f.failure,
            Failure::Busy | Failure::AuthFailed | Failure::AuthTimeout | Failure::ProtocolError
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use greenarrow_proxy_net::bufconn::ReadError;
    use greenarrow_proxy_proto::protocol::FailureReply;
    use greenarrow_proxy_proto::smtp::Reply;
    use std::io;

    fn errors() -> Vec<(&'static str, ClientError)> {
        let proxy = |f| ClientError::Proxy(FailureReply::new(f, "x"));
        vec![
            (
                "connect",
                ClientError::Connect(io::Error::from(io::ErrorKind::ConnectionRefused)),
            ),
            ("io", ClientError::Io(ReadError::Closed)),
            ("busy", proxy(Failure::Busy)),
            ("source_not_local", proxy(Failure::SourceNotLocal)),
            ("auth_failed", proxy(Failure::AuthFailed)),
            ("connect_refused", proxy(Failure::ConnectRefused)),
            ("source_not_permitted", proxy(Failure::SourceNotPermitted)),
            (
                "smtp",
                ClientError::Smtp {
                    stage: "RCPT TO",
                    reply: Reply::new_single(450, "later"),
                },
            ),
            ("protocol", ClientError::Protocol("odd".into())),
        ]
    }

    /// The errors that move on, per stage; every other error stops.
    #[test]
    fn the_rule_table() {
        let all: Vec<&str> = errors().iter().map(|(n, _)| *n).collect();
        let table: &[(Stage, &[&str])] = &[
            (Stage::Connect, &all),
            (Stage::Tls, &all),
            (
                Stage::Request,
                &["connect", "io", "busy", "source_not_local"],
            ),
            (Stage::Envelope, &["connect", "io"]),
            (Stage::Data, &[]),
            (Stage::Accepted, &[]),
        ];
        for (stage, moving) in table {
            for (name, err) in errors() {
                let want = if moving.contains(&name) {
                    Decision::NextProxy
                } else {
                    Decision::Stop
                };
                assert_eq!(decide(*stage, false, &err), want, "{stage} {name}");
            }
        }
    }

    #[test]
    fn nothing_moves_once_a_message_was_accepted() {
        for stage in [Stage::Connect, Stage::Tls, Stage::Request, Stage::Envelope] {
            for (name, err) in errors() {
                assert_eq!(decide(stage, true, &err), Decision::Stop, "{stage} {name}");
            }
        }
    }
}
