//! The command handlers of [`Session`]: one method per verb.

use super::{Action, Mode, Session, Transaction, ADVERTISED_SIZE, MAX_RECIPIENTS};
use crate::testmx::body::{Body, DotDecoder};
use crate::testmx::command::{self, bdat_arg, path_arg, size_param};
use crate::testmx::faults::{is_positive, Faults};

impl Session {
    pub(super) fn line(&mut self, line: String, out: &mut Vec<Action>) {
        match self.mode {
            Mode::AuthPlain | Mode::AuthLoginPass => return self.auth_done(&line, out),
            Mode::AuthLoginUser => {
                if line.trim() == "*" {
                    return self.auth_done(&line, out);
                }
                self.mode = Mode::AuthLoginPass;
                return self.reply(out, "334 UGFzc3dvcmQ6");
            }
            _ => {}
        }
        let cmd = command::split(&line);
        let verb = cmd.verb.clone();
        let arg = cmd.arg.to_string();
        if self.keep() {
            out.push(Action::Command(line));
        }
        if matches!(self.mode, Mode::NoService) {
            if verb == "QUIT" {
                return self.quit(out);
            }
            return self.reply(out, "503 5.5.1 no service here");
        }
        if Faults::hits(&self.faults().reply_421_at, &verb) {
            return self.reply_421(out);
        }
        if Faults::hits(&self.faults().silent_at, &verb) {
            self.mode = Mode::Silent;
            return;
        }
        self.dispatch(&verb, &arg, out);
        if Faults::hits(&self.faults().stray_reply_after, &verb) {
            self.stray_reply(out);
        }
    }

    fn dispatch(&mut self, verb: &str, arg: &str, out: &mut Vec<Action>) {
        match verb {
            "EHLO" | "HELO" => self.hello(verb, arg, out),
            "MAIL" => self.mail(arg, out),
            "RCPT" => self.rcpt(arg, out),
            "DATA" => self.data(out),
            "BDAT" => self.bdat(arg, out),
            "RSET" => {
                self.txn = Transaction::default();
                self.reply(out, "250 2.0.0 reset");
            }
            "NOOP" => self.reply(out, "250 2.0.0 ok"),
            "QUIT" => self.quit(out),
            "STARTTLS" => self.starttls(arg, out),
            "AUTH" => self.auth(arg, out),
            _ => self.reply(out, "500 5.5.2 command not recognized"),
        }
    }

    fn quit(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Quit);
        let text = format!("221 2.0.0 {} closing connection", self.config.hostname);
        self.reply(out, &text);
        self.close(out);
    }

    fn hello(&mut self, verb: &str, arg: &str, out: &mut Vec<Action>) {
        if arg.is_empty() {
            return self.reply(out, &format!("501 5.5.4 {verb} needs a domain"));
        }
        let helo = verb == "HELO";
        out.push(Action::Hello {
            name: arg.to_string(),
            helo,
        });
        self.txn = Transaction::default();
        let fault = if helo {
            self.faults().helo_reply.clone()
        } else {
            self.faults().ehlo_reply.clone()
        };
        if let Some(text) = fault {
            self.greeted = is_positive(&text);
            return self.reply(out, &text);
        }
        self.greeted = true;
        let host = &self.config.hostname;
        if helo {
            return self.reply(out, &format!("250 {host} greets {arg}"));
        }
        let c = &self.config;
        let mut lines = vec![format!("{host} greets {arg}")];
        lines.push(format!("SIZE {ADVERTISED_SIZE}"));
        for (on, ext) in [
            (c.pipelining, "PIPELINING"),
            (c.eightbitmime, "8BITMIME"),
            (c.smtputf8, "SMTPUTF8"),
            (c.chunking, "CHUNKING"),
            (c.starttls.is_some() && !self.tls, "STARTTLS"),
            (c.auth, "AUTH PLAIN LOGIN"),
        ] {
            if on {
                lines.push(ext.to_string());
            }
        }
        let last = lines.len() - 1;
        let text: String = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
            .collect();
        self.reply(out, &text);
    }

    fn mail(&mut self, arg: &str, out: &mut Vec<Action>) {
        if !self.greeted {
            return self.reply(out, "503 5.5.1 send EHLO or HELO first");
        }
        if self.txn.mail_from.is_some() {
            return self.reply(out, "503 5.5.1 nested MAIL command");
        }
        let Some(path) = path_arg(arg, "FROM:") else {
            return self.reply(out, "501 5.5.4 syntax: MAIL FROM:<address>");
        };
        if size_param(path.params).is_some_and(|s| s > ADVERTISED_SIZE) {
            return self.reply(out, "552 5.3.4 message size exceeds fixed limit");
        }
        self.txn.mail_from = Some(path.address);
        self.reply(out, "250 2.1.0 sender ok");
    }

    fn rcpt(&mut self, arg: &str, out: &mut Vec<Action>) {
        if self.txn.mail_from.is_none() {
            return self.reply(out, "503 5.5.1 need MAIL before RCPT");
        }
        let Some(path) = path_arg(arg, "TO:") else {
            return self.reply(out, "501 5.5.4 syntax: RCPT TO:<address>");
        };
        if self.txn.rcpt_to.len() >= MAX_RECIPIENTS {
            return self.reply(out, "452 4.5.3 too many recipients");
        }
        self.txn.rcpt_to.push(path.address);
        self.reply(out, "250 2.1.5 recipient ok");
    }

    fn data(&mut self, out: &mut Vec<Action>) {
        if self.txn.mail_from.is_none() || self.txn.chunks.is_some() {
            return self.reply(out, "503 5.5.1 bad sequence of commands");
        }
        if self.txn.rcpt_to.is_empty() {
            return self.reply(out, "554 5.5.1 no valid recipients");
        }
        self.mode = Mode::Data(DotDecoder::new(self.keep(), self.config.max_message_size));
        self.reply(out, "354 End data with <CR><LF>.<CR><LF>");
    }

    fn bdat(&mut self, arg: &str, out: &mut Vec<Action>) {
        let Some((size, last)) = bdat_arg(arg) else {
            // The chunk length is unknown: the byte stream cannot be followed any further.
            self.reply(out, "501 5.5.4 syntax: BDAT <size> [LAST]");
            return self.close(out);
        };
        let error = if !self.config.chunking {
            Some("502 5.5.1 CHUNKING not offered".to_string())
        } else if self.txn.mail_from.is_none() || self.txn.rcpt_to.is_empty() {
            Some("503 5.5.1 need MAIL and RCPT before BDAT".to_string())
        } else {
            self.txn.chunks.get_or_insert_with(Body::default);
            None
        };
        if size == 0 {
            self.chunk_done(last, error, out);
        } else {
            self.mode = Mode::Chunk {
                remaining: size,
                last,
                error,
            };
        }
    }

    fn starttls(&mut self, arg: &str, out: &mut Vec<Action>) {
        if self.config.starttls.is_none() {
            return self.reply(out, "502 5.5.1 STARTTLS not offered");
        }
        if self.tls {
            return self.reply(out, "503 5.5.1 TLS already active");
        }
        if !arg.is_empty() {
            return self.reply(out, "501 5.5.4 STARTTLS takes no argument");
        }
        if self.faults().stall_tls_handshake {
            self.reply(out, "220 2.0.0 ready to start TLS");
            self.mode = Mode::Silent;
            return;
        }
        if self.faults().inject_after_starttls {
            self.reply(out, "220 ready\r\n250 injected");
        } else {
            self.reply(out, "220 2.0.0 ready to start TLS");
        }
        out.push(Action::StartTls);
        self.mode = Mode::Stopped;
    }

    fn auth(&mut self, arg: &str, out: &mut Vec<Action>) {
        if !self.config.auth {
            return self.reply(out, "502 5.5.1 AUTH not offered");
        }
        if self.authenticated || self.txn.mail_from.is_some() {
            return self.reply(out, "503 5.5.1 AUTH not allowed now");
        }
        let mut words = arg.split_ascii_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next();
        match (mechanism.as_str(), initial) {
            ("PLAIN", Some(resp)) | ("LOGIN", Some(resp)) if resp == "*" => {
                self.auth_done(resp, out)
            }
            ("PLAIN", Some(resp)) => self.auth_done(resp, out),
            ("PLAIN", None) => {
                self.mode = Mode::AuthPlain;
                self.reply(out, "334 ");
            }
            ("LOGIN", Some(_)) => {
                self.mode = Mode::AuthLoginPass;
                self.reply(out, "334 UGFzc3dvcmQ6");
            }
            ("LOGIN", None) => {
                self.mode = Mode::AuthLoginUser;
                self.reply(out, "334 VXNlcm5hbWU6");
            }
            _ => self.reply(out, "504 5.5.4 unrecognized authentication mechanism"),
        }
    }

    /// The last step of AUTH: any credentials are accepted, `*` cancels.
    fn auth_done(&mut self, response: &str, out: &mut Vec<Action>) {
        self.mode = Mode::Command;
        if response.trim() == "*" {
            return self.reply(out, "501 5.7.0 authentication cancelled");
        }
        self.authenticated = true;
        out.push(Action::Authenticated);
        self.reply(out, "235 2.7.0 authentication successful");
    }
}
