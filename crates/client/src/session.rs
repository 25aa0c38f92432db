//! An SMTP session with an MX through the proxy: the envelope, DATA and BDAT, QUIT.

use super::{ClientError, ProxyClient, Stage};
use greenarrow_proxy_proto::protocol::ConnectReady;
use greenarrow_proxy_proto::smtp::{dot_stuff, Capabilities, Reply};

/// The result of one message.
#[derive(Debug)]
pub struct Delivery {
    pub accepted: Vec<String>,
    pub rejected: Vec<(String, Reply)>,
    /// The reply after the message data.
    pub final_reply: Reply,
}

/// What [`MxSession::envelope`] found out.
struct Envelope {
    accepted: Vec<String>,
    rejected: Vec<(String, Reply)>,
    /// The reply to DATA, when DATA was sent.
    data: Option<Reply>,
}

/// An SMTP session with an MX through the proxy.
pub struct MxSession<'a> {
    pub(super) client: &'a mut ProxyClient,
    /// What the proxy said about the connection.
    pub ready: ConnectReady,
    /// The MX's capabilities (post-TLS EHLO).
    pub caps: Capabilities,
}

impl MxSession<'_> {
    /// Send one command line and read its reply.
    pub fn command(&mut self, line: &str) -> Result<Reply, ClientError> {
        self.client.note(format!("C: {line}"));
        self.client.conn.send(format!("{line}\r\n").as_bytes())?;
        self.client.read()
    }

    /// Send MAIL FROM, one RCPT TO per recipient and, with `data`, DATA: in one batch when
    /// the MX offers PIPELINING, otherwise one by one (stopping after a refused MAIL). A
    /// refused MAIL, or no recipient accepted, is an error (after RSET). Returns the accepted
    /// and refused recipients and the reply to DATA, if sent.
    fn envelope(&mut self, from: &str, to: &[&str], data: bool) -> Result<Envelope, ClientError> {
        let c = &mut *self.client;
        c.stage = Stage::Envelope;
        let mut cmds = vec![format!("MAIL FROM:<{from}>")];
        cmds.extend(to.iter().map(|r| format!("RCPT TO:<{r}>")));
        if data {
            cmds.push("DATA".into());
        }
        let mut replies = Vec::with_capacity(cmds.len());
        for cmd in &cmds {
            c.note(format!("C: {cmd}"));
            c.conn.queue(format!("{cmd}\r\n").as_bytes());
            if !self.caps.pipelining {
                c.conn.flush()?;
                replies.push(c.read()?);
                if !replies[0].is_positive() {
                    break;
                }
            }
        }
        if self.caps.pipelining {
            c.conn.flush()?;
            for _ in &cmds {
                replies.push(c.read()?);
            }
        }
        let data_reply = if data && replies.len() == cmds.len() {
            replies.pop()
        } else {
            None
        };
        if !replies[0].is_positive() {
            if data_reply.as_ref().is_some_and(|d| d.code() == 354) {
                // Cannot happen with a sane MX; end the data phase cleanly anyway.
                c.conn.send(b".\r\n")?;
                c.read()?;
            }
            let reply = replies.swap_remove(0);
            self.rset_quietly();
            return Err(ClientError::Smtp {
                stage: "MAIL FROM",
                reply,
            });
        }
        let mut env = Envelope {
            accepted: Vec::new(),
            rejected: Vec::new(),
            data: data_reply,
        };
        for (r, rep) in to.iter().zip(replies.into_iter().skip(1)) {
            if rep.is_positive() {
                env.accepted.push(r.to_string());
            } else {
                env.rejected.push((r.to_string(), rep));
            }
        }
        if env.accepted.is_empty() {
            if env.data.as_ref().is_some_and(|d| d.code() == 354) {
                // A compliant MX refuses DATA without recipients; if it said 354 anyway,
                // end the (empty) data phase at once.
                self.client.conn.send(b".\r\n")?;
                self.client.read()?;
            }
            let reply = env
                .rejected
                .first()
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| Reply::new_single(554, "no recipients"));
            self.rset_quietly();
            return Err(ClientError::Smtp {
                stage: "RCPT TO",
                reply,
            });
        }
        Ok(env)
    }

    /// Deliver one message with MAIL, RCPT..., DATA (pipelined when the MX offers
    /// PIPELINING). `message` is the message as it should arrive; it is dot-stuffed here.
    pub fn send_mail(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> Result<Delivery, ClientError> {
        let env = self.envelope(from, to, true)?;
        let data = env
            .data
            .ok_or_else(|| ClientError::Protocol("no reply to DATA".into()))?;
        if data.code() != 354 {
            self.rset_quietly();
            return Err(ClientError::Smtp {
                stage: "DATA",
                reply: data,
            });
        }
        let c = &mut *self.client;
        let mut payload = Vec::with_capacity(message.len() + message.len() / 64 + 8);
        dot_stuff(message, &mut payload);
        c.note(format!("C: <{} octets of message data>", payload.len()));
        // From the first byte of data on, the MX may accept the message: no failover.
        c.stage = Stage::Data;
        c.conn.write_through(&payload)?;
        let final_reply = c.read()?;
        c.finished_message(&final_reply);
        if !final_reply.is_positive() {
            return Err(ClientError::Smtp {
                stage: "end of data",
                reply: final_reply,
            });
        }
        Ok(Delivery {
            accepted: env.accepted,
            rejected: env.rejected,
            final_reply,
        })
    }

    /// Deliver one message with BDAT in chunks of `chunk` octets (needs CHUNKING).
    pub fn send_mail_bdat(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
        chunk: usize,
    ) -> Result<Delivery, ClientError> {
        let env = self.envelope(from, to, false)?;
        let c = &mut *self.client;
        let chunks: Vec<&[u8]> = if message.is_empty() {
            vec![&[][..]]
        } else {
            message.chunks(chunk.max(1)).collect()
        };
        let n = chunks.len();
        c.stage = Stage::Data;
        for (i, part) in chunks.into_iter().enumerate() {
            let last = if i + 1 == n { " LAST" } else { "" };
            let cmd = format!("BDAT {}{last}", part.len());
            c.note(format!("C: {cmd} <{} octets>", part.len()));
            c.conn.queue(format!("{cmd}\r\n").as_bytes());
            c.conn.write_through(part)?;
        }
        let mut failure = None;
        let mut last = None;
        for _ in 0..n {
            let r = c.read()?;
            if !r.is_positive() && failure.is_none() {
                failure = Some(r.clone());
            }
            last = Some(r);
        }
        if let Some(reply) = failure {
            c.stage = Stage::Envelope;
            self.rset_quietly();
            return Err(ClientError::Smtp {
                stage: "BDAT",
                reply,
            });
        }
        let final_reply = last.ok_or_else(|| ClientError::Protocol("no BDAT reply".into()))?;
        c.finished_message(&final_reply);
        Ok(Delivery {
            accepted: env.accepted,
            rejected: env.rejected,
            final_reply,
        })
    }

    /// Deliver one message in one flight (RFC 3030 with PIPELINING, as Exim does): MAIL,
    /// one RCPT per recipient and `BDAT <size> LAST` with the whole message, in one write,
    /// then every reply: one round trip per message. Needs PIPELINING and CHUNKING. A refused
    /// MAIL, no recipient accepted, or a refused BDAT is an error (after RSET, which RFC 3030
    /// requires after a refused BDAT).
    pub fn send_mail_bdat_pipelined(
        &mut self,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> Result<Delivery, ClientError> {
        if !self.caps.pipelining || !self.caps.chunking {
            return Err(ClientError::Protocol(
                "a pipelined BDAT flight needs PIPELINING and CHUNKING from the MX".into(),
            ));
        }
        let c = &mut *self.client;
        c.stage = Stage::Envelope;
        let mut head = format!("MAIL FROM:<{from}>\r\n");
        for r in to {
            head.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        head.push_str(&format!("BDAT {} LAST\r\n", message.len()));
        c.note(format!(
            "C: MAIL, {} RCPT, BDAT {} LAST <{} octets>",
            to.len(),
            message.len(),
            message.len()
        ));
        c.conn.queue(head.as_bytes());
        // From the first byte of data on, the MX may accept the message: no failover.
        c.stage = Stage::Data;
        c.conn.write_through(message)?;
        let mail = c.read()?;
        let mut rcpts = Vec::with_capacity(to.len());
        for _ in to {
            rcpts.push(c.read()?);
        }
        let final_reply = c.read()?;
        let refused = |stage, reply| ClientError::Smtp { stage, reply };
        let err = if !mail.is_positive() {
            Some(refused("MAIL FROM", mail))
        } else if !rcpts.iter().any(Reply::is_positive) {
            let first = rcpts
                .first()
                .cloned()
                .unwrap_or_else(|| final_reply.clone());
            Some(refused("RCPT TO", first))
        } else if !final_reply.is_positive() {
            Some(refused("BDAT", final_reply.clone()))
        } else {
            None
        };
        if let Some(e) = err {
            c.stage = Stage::Envelope;
            self.rset_quietly();
            return Err(e);
        }
        c.finished_message(&final_reply);
        let mut delivery = Delivery {
            accepted: Vec::new(),
            rejected: Vec::new(),
            final_reply,
        };
        for (r, rep) in to.iter().zip(rcpts) {
            if rep.is_positive() {
                delivery.accepted.push(r.to_string());
            } else {
                delivery.rejected.push((r.to_string(), rep));
            }
        }
        Ok(delivery)
    }

    fn rset_quietly(&mut self) {
        let _ = self.command("RSET");
    }

    /// End the SMTP session (the proxy answers 221 and closes or keeps the MX connection);
    /// the proxy connection is then ready for another request.
    pub fn quit(self) -> Result<(), ClientError> {
        let c = self.client;
        c.note("C: QUIT".into());
        c.conn.send(b"QUIT\r\n")?;
        let r = c.read()?;
        if r.code() != 221 {
            return Err(ClientError::Smtp {
                stage: "QUIT",
                reply: r,
            });
        }
        c.stage = Stage::Request;
        Ok(())
    }
}
