//! One SMTP session: reading commands (pipelined), answering them, STARTTLS, AUTH,
//! the transaction, and handing the message over at its end.

use super::data::{DataProblem, DataReader, check_chunked};
use super::{Admit, InboundMail, Listener, Reply, SmtpServer, recipient, verify};
use crate::custody::UserInfo;
use crate::delivery::{BridgedMail, Route};
use crate::sasl;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, Request};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// The connection, before or after TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a session ends early.
enum End {
    /// The peer closed, timed out or broke the connection; nothing more to say.
    Gone,
    /// Say this, then close.
    Close(Reply),
}

impl From<std::io::Error> for End {
    fn from(_: std::io::Error) -> End {
        End::Gone
    }
}

/// Answers a connection over the limits with 421 and closes it.
pub(super) async fn refuse_busy(mut tcp: TcpStream, hostname: &str) {
    let mut out = Vec::new();
    Reply::new(
        421,
        "4.7.0",
        format!("{hostname} too many connections; try again later"),
    )
    .write_to(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(&out)).await;
}

/// The envelope of the transaction in progress.
#[derive(Default)]
struct Transaction {
    mail_from: Option<String>,
    routes: Vec<Route>,
    /// Addresses as given, for the Received header.
    rcpt_addresses: Vec<String>,
    /// BDAT chunks so far, and whether a limit was passed on the way.
    chunks: Vec<u8>,
    chunk_problem: Option<DataProblem>,
    chunking: bool,
    /// A BDAT of this transaction was refused: the transaction has failed.
    chunks_refused: bool,
    /// The server-wide permit to receive this message (BDAT holds it across chunks).
    receiving: Option<tokio::sync::OwnedSemaphorePermit>,
}

struct Session {
    server: Arc<SmtpServer>,
    kind: Listener,
    peer: SocketAddr,
    stream: Option<Stream>,
    inbuf: Vec<u8>,
    /// Where unread input starts in `inbuf`.
    start: usize,
    out: Vec<u8>,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    user: Option<UserInfo>,
    tx: Transaction,
    messages: usize,
    commands: usize,
    junk: usize,
    errors: usize,
    deadline: Instant,
    shutdown: CancellationToken,
    id: u64,
}

pub(super) async fn run(
    server: Arc<SmtpServer>,
    tcp: TcpStream,
    peer: SocketAddr,
    kind: Listener,
    shutdown: CancellationToken,
) {
    let deadline =
        Instant::now() + Duration::from_secs(server.settings.smtp.session_timeout_seconds);
    let mut s = Session {
        server,
        kind,
        peer,
        stream: Some(Stream::Plain(tcp)),
        inbuf: Vec::with_capacity(8192),
        start: 0,
        out: Vec::with_capacity(1024),
        helo: None,
        esmtp: false,
        tls: false,
        user: None,
        tx: Transaction::default(),
        messages: 0,
        commands: 0,
        junk: 0,
        errors: 0,
        deadline,
        shutdown,
        id: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
    };
    if kind == Listener::Submissions && !s.start_tls().await {
        return;
    }
    match s.serve().await {
        Ok(()) | Err(End::Gone) => {}
        Err(End::Close(r)) => {
            s.reply(r);
            let _ = s.flush().await;
        }
    }
    if let Some(mut st) = s.stream.take() {
        let _ = tokio::time::timeout(Duration::from_secs(2), st.shutdown()).await;
    }
}

/// A read of a line: the bytes up to and including LF, or (`complete == false`) the
/// first `max` bytes of a longer line.
struct Piece {
    bytes: Vec<u8>,
    complete: bool,
}

impl Session {
    fn settings(&self) -> &crate::config::Smtp {
        &self.server.settings.smtp
    }

    fn hostname(&self) -> &str {
        &self.server.settings.hostname
    }

    fn reply(&mut self, r: Reply) {
        r.write_to(&mut self.out);
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stream = self.stream.as_mut().ok_or(End::Gone)?;
        match tokio::time::timeout(Duration::from_secs(60), stream.write_all(&self.out)).await {
            Ok(Ok(())) => {}
            _ => return Err(End::Gone),
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), stream.flush()).await;
        self.out.clear();
        Ok(())
    }

    /// Reads more input, waiting at most `timeout` (and never past the session's end).
    async fn fill(&mut self, timeout: Duration) -> Result<(), End> {
        // Replies to pipelined commands go out in one write, when input runs dry.
        self.flush().await?;
        if self.start > 0 {
            self.inbuf.drain(..self.start);
            self.start = 0;
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(End::Close(Reply::new(
                421,
                "4.4.2",
                format!("{} session time limit reached", self.hostname()),
            )));
        }
        let mut chunk = [0u8; 16 * 1024];
        let stream = self.stream.as_mut().ok_or(End::Gone)?;
        let read = tokio::select! {
            r = tokio::time::timeout(timeout.min(left), stream.read(&mut chunk)) => r,
            _ = self.shutdown.cancelled() => {
                return Err(End::Close(Reply::new(421, "4.3.2", format!("{} shutting down", self.server.settings.hostname))));
            }
        };
        match read {
            Err(_) => Err(End::Close(Reply::new(
                421,
                "4.4.2",
                format!("{} timeout exceeded", self.hostname()),
            ))),
            Ok(Err(_)) | Ok(Ok(0)) => Err(End::Gone),
            Ok(Ok(n)) => {
                self.inbuf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// The next line, or the first `max` bytes of an over-long one.
    async fn read_piece(&mut self, max: usize, timeout: Duration) -> Result<Piece, End> {
        loop {
            let avail = &self.inbuf[self.start..];
            if let Some(i) = avail.iter().position(|&b| b == b'\n')
                && i < max
            {
                let bytes = avail[..=i].to_vec();
                self.start += i + 1;
                return Ok(Piece {
                    bytes,
                    complete: true,
                });
            }
            if avail.len() >= max {
                let bytes = avail[..max].to_vec();
                self.start += max;
                return Ok(Piece {
                    bytes,
                    complete: false,
                });
            }
            self.fill(timeout).await?;
        }
    }

    /// The next command line, CRLF included. A line ends only at CRLF: one with a bare
    /// CR or LF inside, or longer than the limit, is refused whole, so `MAIL ...\nRCPT
    /// ...` can never become two commands.
    async fn read_command(&mut self) -> Result<Result<Vec<u8>, Reply>, End> {
        let max = self.settings().max_command_line;
        let timeout = Duration::from_secs(self.settings().command_timeout_seconds);
        let mut line = Vec::new();
        let mut too_long = false;
        let mut pending_cr = false;
        loop {
            let piece = self.read_piece(max, timeout).await?;
            // A CRLF split by the length limit still ends the line.
            let end = piece.complete
                && (piece.bytes.ends_with(b"\r\n") || (piece.bytes == b"\n" && pending_cr));
            pending_cr = !piece.complete && piece.bytes.ends_with(b"\r");
            if !too_long && line.len() + piece.bytes.len() <= max {
                line.extend_from_slice(&piece.bytes);
            } else {
                too_long = true;
                line.clear();
            }
            if end {
                break;
            }
        }
        if too_long {
            return Ok(Err(Reply::new(500, "5.5.2", "line too long")));
        }
        if line[..line.len() - 2]
            .iter()
            .any(|&b| b == b'\r' || b == b'\n')
        {
            return Ok(Err(Reply::new(
                500,
                "5.5.2",
                "bare CR or LF in a command line; lines must end in CRLF",
            )));
        }
        Ok(Ok(line))
    }

    /// Exactly `n` bytes (a BDAT chunk), kept only while `keep` allows.
    async fn read_exact_into(
        &mut self,
        mut n: usize,
        sink: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, End> {
        let timeout = Duration::from_secs(self.settings().data_timeout_seconds);
        let mut within = true;
        while n > 0 {
            if self.start == self.inbuf.len() {
                self.fill(timeout).await?;
            }
            let avail = &self.inbuf[self.start..];
            let take = avail.len().min(n);
            if within && sink.len() + take <= limit {
                sink.extend_from_slice(&avail[..take]);
            } else {
                within = false;
            }
            self.start += take;
            n -= take;
        }
        Ok(within)
    }

    /// Counts an error reply; too many end the session.
    fn error(&mut self, r: Reply) -> Result<(), End> {
        self.errors += 1;
        self.reply(r);
        if self.errors >= self.settings().max_errors {
            return Err(End::Close(Reply::new(
                421,
                "4.7.0",
                format!("{} too many errors", self.hostname()),
            )));
        }
        Ok(())
    }

    fn junk(&mut self) -> Result<(), End> {
        self.junk += 1;
        if self.junk > self.settings().max_junk_commands {
            return Err(End::Close(Reply::new(
                421,
                "4.7.0",
                format!("{} too many commands", self.hostname()),
            )));
        }
        Ok(())
    }

    /// TLS over the connection. False if the handshake failed (the session is over).
    async fn start_tls(&mut self) -> bool {
        let Some(acceptor) = self.server.tls.clone() else {
            return false;
        };
        let Some(Stream::Plain(tcp)) = self.stream.take() else {
            return false;
        };
        match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                self.stream = Some(Stream::Tls(Box::new(tls)));
                self.tls = true;
                true
            }
            _ => {
                tracing::debug!("TLS handshake failed or timed out");
                false
            }
        }
    }

    fn auth_offered(&self) -> bool {
        self.kind != Listener::Mx
            && (self.tls
                || (self.settings().allow_plaintext_auth_on_loopback
                    && crate::net::is_loopback(self.peer.ip())))
    }

    fn ehlo_lines(&self, host: &str) -> Vec<String> {
        let s = self.settings();
        let mut lines = vec![
            format!("{} Hello {host} [{}]", self.hostname(), self.peer.ip()),
            "PIPELINING".into(),
            format!("SIZE {}", s.max_message_bytes),
        ];
        if !self.tls && self.server.tls.is_some() {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() && self.user.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.extend(["ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8", "CHUNKING"].map(String::from));
        lines
    }

    async fn serve(&mut self) -> Result<(), End> {
        self.reply(Reply::multi(
            220,
            vec![format!("{} ESMTP lnmp-bridge", self.hostname())],
        ));
        loop {
            let line = match self.read_command().await? {
                Ok(line) => line,
                Err(r) => {
                    self.error(r)?;
                    continue;
                }
            };
            self.commands += 1;
            if self.commands > self.settings().max_commands {
                return Err(End::Close(Reply::new(
                    421,
                    "4.7.0",
                    format!("{} too many commands in one session", self.hostname()),
                )));
            }
            let parsed = Request::parse(&mut line.iter()).map(owned);
            let request: Request<String> = match parsed {
                Ok(r) => r,
                Err(e) => {
                    let r = match e {
                        smtp_proto::Error::UnknownCommand => {
                            self.junk()?;
                            Reply::new(500, "5.5.1", "command unrecognized")
                        }
                        smtp_proto::Error::InvalidSenderAddress => {
                            Reply::new(501, "5.1.7", "bad sender address syntax")
                        }
                        smtp_proto::Error::InvalidRecipientAddress => {
                            Reply::new(501, "5.1.3", "bad recipient address syntax")
                        }
                        smtp_proto::Error::SyntaxError { syntax } => {
                            Reply::new(501, "5.5.4", format!("syntax: {syntax}"))
                        }
                        smtp_proto::Error::InvalidParameter { param } => {
                            Reply::new(501, "5.5.4", format!("invalid parameter {param}"))
                        }
                        smtp_proto::Error::UnsupportedParameter { param } => {
                            Reply::new(555, "5.5.4", format!("unsupported parameter {param}"))
                        }
                        _ => Reply::new(500, "5.5.2", "syntax error"),
                    };
                    self.error(r)?;
                    continue;
                }
            };
            match request {
                Request::Ehlo { host } => self.hello(host, true)?,
                Request::Helo { host } => self.hello(host, false)?,
                Request::Lhlo { .. } => {
                    self.error(Reply::new(500, "5.5.1", "this is not an LMTP server"))?
                }
                Request::StartTls => {
                    if self.tls {
                        self.error(Reply::new(503, "5.5.1", "TLS already active"))?;
                    } else if self.server.tls.is_none() {
                        self.error(Reply::new(502, "5.5.1", "STARTTLS not available"))?;
                    } else {
                        self.reply(Reply::new(220, "2.0.0", "ready to start TLS"));
                        self.flush().await?;
                        // Anything the client pipelined after STARTTLS was sent in the
                        // clear and must not be read as if it came over TLS.
                        if self.start < self.inbuf.len() {
                            tracing::info!("discarding plaintext pipelined after STARTTLS");
                        }
                        self.inbuf.clear();
                        self.start = 0;
                        if !self.start_tls().await {
                            return Err(End::Gone);
                        }
                        // RFC 3207 4.2: forget everything learned before TLS.
                        self.helo = None;
                        self.esmtp = false;
                        self.user = None;
                        self.tx = Transaction::default();
                    }
                }
                Request::Auth {
                    mechanism,
                    initial_response,
                } => self.auth(mechanism, initial_response).await?,
                Request::Mail { from } => self.mail(from)?,
                Request::Rcpt { to } => self.rcpt(to, rcpt_was_null(&line)).await?,
                Request::Data => self.data().await?,
                Request::Bdat {
                    chunk_size,
                    is_last,
                } => self.bdat(chunk_size, is_last).await?,
                Request::Rset => {
                    // Not junk: MTAs probe cached connections with RSET.
                    self.tx = Transaction::default();
                    self.reply(Reply::new(250, "2.0.0", "ok"));
                }
                Request::Noop { .. } => {
                    self.junk()?;
                    self.reply(Reply::new(250, "2.0.0", "ok"));
                }
                Request::Vrfy { .. } => {
                    // Never a way to learn who exists here.
                    self.junk()?;
                    self.reply(Reply::new(
                        252,
                        "2.5.0",
                        "cannot VRFY; send some mail and see",
                    ));
                }
                Request::Help { .. } => {
                    self.junk()?;
                    self.reply(Reply::new(214, "2.0.0", "see RFC 5321"));
                }
                Request::Expn { .. }
                | Request::Etrn { .. }
                | Request::Atrn { .. }
                | Request::Burl { .. } => {
                    self.junk()?;
                    self.error(Reply::new(502, "5.5.1", "command not implemented"))?;
                }
                Request::Quit => {
                    self.reply(Reply::new(
                        221,
                        "2.0.0",
                        format!("{} closing connection", self.hostname()),
                    ));
                    self.flush().await?;
                    return Ok(());
                }
            }
        }
    }

    fn hello(&mut self, host: String, esmtp: bool) -> Result<(), End> {
        let host = host.trim().to_owned();
        if host.is_empty() || host.len() > 255 {
            return self.error(Reply::new(501, "5.5.4", "syntax: EHLO hostname"));
        }
        self.tx = Transaction::default();
        if esmtp {
            let lines = self.ehlo_lines(&host);
            self.reply(Reply::multi(250, lines));
        } else {
            let text = format!("{} Hello {host}", self.hostname());
            self.reply(Reply::multi(250, vec![text]));
        }
        self.helo = Some(host);
        self.esmtp = esmtp;
        Ok(())
    }

    async fn read_sasl_line(&mut self, challenge: &str) -> Result<String, End> {
        self.reply(Reply::multi(334, vec![challenge.to_owned()]));
        match self.read_command().await? {
            Ok(line) => Ok(String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_owned()),
            // Not base64, so it decodes as malformed.
            Err(_) => Ok(String::from("\u{0}")),
        }
    }

    async fn auth(&mut self, mechanism: u64, initial: String) -> Result<(), End> {
        if !self.auth_offered() {
            let r = if self.kind == Listener::Mx {
                Reply::new(
                    503,
                    "5.5.1",
                    "AUTH is not available on this port; use submission",
                )
            } else {
                Reply::new(538, "5.7.11", "encryption required: use STARTTLS first")
            };
            return self.error(r);
        }
        if self.helo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "send EHLO first"));
        }
        if self.user.is_some() {
            return self.error(Reply::new(503, "5.5.1", "already authenticated"));
        }
        if self.tx.mail_from.is_some() {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "AUTH not allowed during a mail transaction",
            ));
        }
        let creds = if mechanism == AUTH_PLAIN {
            let response = if initial.is_empty() {
                self.read_sasl_line("").await?
            } else {
                initial
            };
            sasl::decode(&response).and_then(|m| sasl::plain(&m))
        } else if mechanism == AUTH_LOGIN {
            let user = if initial.is_empty() {
                self.read_sasl_line("VXNlcm5hbWU6").await?
            } else {
                initial
            };
            match sasl::decode(&user).and_then(|u| sasl::text(&u)) {
                Ok(username) => {
                    let pass = self.read_sasl_line("UGFzc3dvcmQ6").await?;
                    sasl::decode(&pass)
                        .and_then(|p| sasl::text(&p))
                        .map(|password| sasl::Credentials {
                            username,
                            password: zeroize::Zeroizing::new(password),
                        })
                }
                Err(e) => Err(e),
            }
        } else {
            return self.error(Reply::new(
                504,
                "5.5.4",
                "unrecognized authentication mechanism; use PLAIN or LOGIN",
            ));
        };
        let creds = match creds {
            Ok(c) => c,
            Err(sasl::SaslError::Cancelled) => {
                return self.error(Reply::new(501, "5.0.0", "authentication cancelled"));
            }
            Err(sasl::SaslError::Malformed) => {
                return self.error(Reply::new(
                    501,
                    "5.5.2",
                    "malformed authentication response",
                ));
            }
        };
        // Mail clients log in with the full address; the user name is its local part.
        let domain = self.server.settings.domain.clone();
        let name = match creds.username.rsplit_once('@') {
            Some((n, d)) if d.eq_ignore_ascii_case(&domain) => n.to_ascii_lowercase(),
            Some(_) => String::new(),
            None => creds.username.to_ascii_lowercase(),
        };
        let ip = self.peer.ip();
        let _turn = self.server.custody.password_check_turn().await;
        let allowed = self
            .server
            .auth_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .begin(ip, &name);
        if !allowed {
            tracing::warn!(user = %name, "AUTH refused: too many failures");
            return self.error(Reply::new(
                454,
                "4.7.0",
                "too many failed attempts; try again later",
            ));
        }
        let checked = if name.is_empty() {
            Ok(None)
        } else {
            match self
                .server
                .custody
                .verify_password(&name, &creds.password)
                .await
            {
                Ok(true) => self.server.custody.find_user(&name).await,
                Ok(false) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let user = match checked {
            Ok(u) => u,
            Err(e) => {
                // Our failure, not the client's: give the attempt back and say so.
                tracing::error!(error = %e, "cannot check a password");
                self.server
                    .auth_limits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .succeeded(ip, &name);
                return self.error(Reply::new(454, "4.7.0", "temporary authentication failure"));
            }
        };
        match user {
            Some(u) => {
                self.server
                    .auth_limits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .succeeded(ip, &name);
                tracing::info!(user = %u.username, "authenticated");
                self.user = Some(u);
                self.reply(Reply::new(235, "2.7.0", "authentication successful"));
                Ok(())
            }
            None => {
                tracing::info!(user = %name, "AUTH failed");
                self.error(Reply::new(
                    535,
                    "5.7.8",
                    "authentication credentials invalid",
                ))
            }
        }
    }

    fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> Result<(), End> {
        if self.helo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "send EHLO first"));
        }
        if self.kind != Listener::Mx && self.user.is_none() {
            return self.error(Reply::new(530, "5.7.0", "authentication required"));
        }
        if self.tx.mail_from.is_some() {
            return self.error(Reply::new(503, "5.5.1", "nested MAIL command"));
        }
        if self.messages >= self.settings().max_messages_per_session {
            return Err(End::Close(Reply::new(
                421,
                "4.7.0",
                format!("{} too many messages in one session", self.hostname()),
            )));
        }
        // RFC 5321 4.1.1.11: parameters of extensions we did not advertise are refused.
        let allowed =
            smtp_proto::MAIL_BODY_7BIT | smtp_proto::MAIL_BODY_8BITMIME | smtp_proto::MAIL_SMTPUTF8;
        let unsupported = if from.flags & !allowed != 0 {
            Some("BODY=BINARYMIME, RET, REQUIRETLS or another unadvertised parameter")
        } else if from.env_id.is_some() {
            Some("ENVID")
        } else if from.hold_for != 0 || from.hold_until != 0 {
            Some("HOLDFOR/HOLDUNTIL")
        } else if from.mt_priority != 0 {
            Some("MT-PRIORITY")
        } else if from.by != 0 {
            Some("BY")
        } else if from.trans_id.is_some() || from.solicit.is_some() || from.mtrk.is_some() {
            Some("TRANSID, SOLICIT or MTRK")
        } else {
            None
        };
        if let Some(p) = unsupported {
            return self.error(Reply::new(
                555,
                "5.5.4",
                format!("unsupported parameter {p}"),
            ));
        }
        if from.size > self.settings().max_message_bytes {
            return self.error(Reply::new(
                552,
                "5.3.4",
                "message size exceeds the fixed limit",
            ));
        }
        let address = from.address;
        // The null sender is the user's too: read receipts (RFC 8098) are sent with it.
        if let Some(user) = &self.user
            && !address.is_empty()
            && !owns_address(user, &address)
        {
            return self.error(Reply::new(
                550,
                "5.7.1",
                format!(
                    "<{address}>: sender address is not yours; use {}",
                    user.email
                ),
            ));
        }
        self.tx = Transaction {
            mail_from: Some(address),
            ..Transaction::default()
        };
        self.reply(Reply::new(250, "2.1.0", "ok"));
        Ok(())
    }

    async fn rcpt(&mut self, to: smtp_proto::RcptTo<String>, null: bool) -> Result<(), End> {
        if self.tx.mail_from.is_none() {
            return self.error(Reply::new(503, "5.5.1", "need MAIL before RCPT"));
        }
        if null {
            return self.error(Reply::new(501, "5.1.3", "the null address is no recipient"));
        }
        if to.flags != 0 || to.orcpt.is_some() || to.rrvs != 0 {
            return self.error(Reply::new(
                555,
                "5.5.4",
                "unsupported parameter NOTIFY, ORCPT, RRVS or CONNEG",
            ));
        }
        if self.tx.routes.len() >= self.settings().max_recipients {
            // Not counted as an error: a client may pipeline past the limit and then
            // send the rest in another transaction (RFC 5321 4.5.3.1.8).
            self.reply(Reply::new(452, "4.5.3", "too many recipients"));
            return Ok(());
        }
        let address = to.address;
        let hostname = self.server.settings.hostname.clone();
        let routed = recipient::route(
            &self.server.custody,
            &self.server.lookup,
            &hostname,
            &address,
            self.user.as_ref(),
        )
        .await;
        match routed {
            Ok(Route::Local(u))
                if self
                    .tx
                    .routes
                    .iter()
                    .any(|r| matches!(r, Route::Local(v) if v.id == u.id)) =>
            {
                // The same user under another spelling gets one copy.
                self.reply(Reply::new(250, "2.1.5", "ok"));
                Ok(())
            }
            Ok(route)
                if !self.tx.routes.is_empty()
                    && (matches!(route, Route::Reply(_))
                        || self.tx.routes.iter().any(|r| matches!(r, Route::Reply(_)))) =>
            {
                // An answer through a reply address is judged and converted on its
                // own; the client sends the other recipients in another transaction.
                self.reply(Reply::new(
                    452,
                    "4.5.3",
                    "a reply address takes its message alone; send this recipient separately",
                ));
                Ok(())
            }
            Ok(route) => {
                self.tx.routes.push(route);
                self.tx.rcpt_addresses.push(address);
                self.reply(Reply::new(250, "2.1.5", "ok"));
                Ok(())
            }
            Err(r) => self.error(r),
        }
    }

    async fn data(&mut self) -> Result<(), End> {
        if self.tx.mail_from.is_none() {
            return self.error(Reply::new(503, "5.5.1", "need MAIL before DATA"));
        }
        if self.tx.routes.is_empty() {
            return self.error(Reply::new(554, "5.5.1", "no valid recipients"));
        }
        if self.tx.chunking {
            return self.error(Reply::new(503, "5.5.1", "DATA cannot follow BDAT"));
        }
        let Ok(permit) = self.server.receiving.clone().try_acquire_owned() else {
            return self.error(Reply::new(
                451,
                "4.3.2",
                "too busy receiving mail; try again later",
            ));
        };
        self.tx.receiving = Some(permit);
        self.reply(Reply::new(354, "", "end data with <CR><LF>.<CR><LF>"));
        let s = self.settings().clone();
        let mut reader = DataReader::new(s.max_message_bytes, s.normalize_bare_newlines);
        let timeout = Duration::from_secs(s.data_timeout_seconds);
        loop {
            let piece = self.read_piece(s.max_data_line, timeout).await?;
            if reader.push(&piece.bytes, piece.complete) {
                break;
            }
        }
        let result = reader.finish();
        self.finish_message(result).await
    }

    async fn bdat(&mut self, size: usize, last: bool) -> Result<(), End> {
        let limit = self.settings().max_message_bytes;
        if size > limit {
            // Reading a chunk this size just to stay in step is not worth it.
            return Err(End::Close(Reply::new(
                552,
                "5.3.4",
                "chunk exceeds the message size limit; closing",
            )));
        }
        // RFC 3030: a chunk is read whatever the answer, so the session stays in step;
        // a chunk that is refused is thrown away, and so is the rest of its transaction.
        let refusal = if self.tx.mail_from.is_none() {
            Some(Reply::new(503, "5.5.1", "need MAIL before BDAT"))
        } else if self.tx.routes.is_empty() {
            Some(Reply::new(554, "5.5.1", "no valid recipients"))
        } else if self.tx.chunks_refused {
            Some(Reply::new(
                503,
                "5.5.1",
                "an earlier BDAT failed; send RSET",
            ))
        } else if self.tx.receiving.is_none() {
            match self.server.receiving.clone().try_acquire_owned() {
                Ok(permit) => {
                    self.tx.receiving = Some(permit);
                    None
                }
                Err(_) => Some(Reply::new(
                    451,
                    "4.3.2",
                    "too busy receiving mail; try again later",
                )),
            }
        } else {
            None
        };
        if let Some(r) = refusal {
            self.read_exact_into(size, &mut Vec::new(), 0).await?;
            self.tx.chunks_refused = self.tx.mail_from.is_some();
            self.tx.chunks = Vec::new();
            return self.error(r);
        }
        let mut chunks = std::mem::take(&mut self.tx.chunks);
        let keep = if self.tx.chunk_problem.is_some() {
            0
        } else {
            limit
        };
        let within = self.read_exact_into(size, &mut chunks, keep).await?;
        self.tx.chunks = chunks;
        self.tx.chunking = true;
        if !within {
            self.tx.chunks = Vec::new();
            self.tx.chunk_problem.get_or_insert(DataProblem::TooLarge);
        }
        if !last {
            self.reply(Reply::new(250, "2.0.0", format!("{size} octets received")));
            return Ok(());
        }
        let chunks = std::mem::take(&mut self.tx.chunks);
        let result = match self.tx.chunk_problem {
            Some(p) => Err(p),
            None => check_chunked(chunks, self.settings().normalize_bare_newlines),
        };
        self.finish_message(result).await
    }

    /// Answers the end of a message and resets the transaction.
    async fn finish_message(&mut self, read: Result<Vec<u8>, DataProblem>) -> Result<(), End> {
        let tx = std::mem::take(&mut self.tx);
        let message = match read {
            Ok(m) => m,
            Err(p) => {
                self.server
                    .count_message(self.kind, &Reply::new(550, "", ""));
                let r = match p {
                    DataProblem::TooLarge => {
                        Reply::new(552, "5.3.4", "message size exceeds the fixed limit")
                    }
                    DataProblem::LineTooLong => Reply::new(
                        550,
                        "5.6.0",
                        format!(
                            "message has a line longer than {} octets",
                            self.settings().max_data_line
                        ),
                    ),
                    DataProblem::BareNewline => Reply::new(
                        550,
                        "5.6.11",
                        "message contains bare CR or LF; lines must end in CRLF",
                    ),
                };
                return self.error(r);
            }
        };
        self.messages += 1;
        let reply = match self.kind {
            Listener::Mx => self.inbound(&tx, message).await,
            _ => self.submission(&tx, message).await,
        };
        self.server.count_message(self.kind, &reply);
        // A decision on a complete message (a payment asked for, a policy refusal) is not
        // the client's mistake: it does not count toward max_errors, or a server with a
        // queue of mail for a paying user would be cut off. max_messages_per_session
        // bounds how many a session may send.
        self.reply(reply);
        Ok(())
    }

    fn received_header(&self, tx: &Transaction) -> String {
        let with = match (self.esmtp, self.tls, self.user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let helo: String = self
            .helo
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .collect();
        let for_clause = match tx.rcpt_addresses.as_slice() {
            [one] if !one.is_empty() => format!("\r\n\tfor <{one}>"),
            _ => String::new(),
        };
        let date = mail_builder::headers::date::Date::new(crate::store::now()).to_rfc822();
        format!(
            "Received: from {helo} ([{}])\r\n\tby {} (lnmp-bridge) with {with} id {:016x}{for_clause};\r\n\t{date}\r\n",
            self.peer.ip(),
            self.hostname(),
            self.id.wrapping_add(self.messages as u64),
        )
    }

    async fn inbound(&mut self, tx: &Transaction, message: Vec<u8>) -> Reply {
        let mail_from = tx.mail_from.clone().unwrap_or_default();
        let helo = self.helo.clone().unwrap_or_default();
        // DMARC judges one author domain: mail with several From fields, or one naming
        // several domains, would be exempt from it (RFC 7489 6.6.1), so it is refused.
        let froms = match one_from(&message) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let domain_of = |a: &String| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase());
        if froms.iter().any(|a| domain_of(a) != domain_of(&froms[0])) {
            return Reply::new(
                550,
                "5.7.1",
                "the From header names addresses in several domains",
            );
        }
        // RFC 5321 6.3: a message that has passed this many hosts is in a loop.
        let hops = crate::outbound::headers::hop_count(&message);
        if hops > self.server.settings.max_hops {
            return Reply::new(
                554,
                "5.4.6",
                format!("too many hops ({hops}): a mail loop?"),
            );
        }
        let verdict = self
            .server
            .verifier
            .check(self.peer.ip(), &helo, &mail_from, &message)
            .await;
        match &verdict.action {
            verify::Action::Reject(reason) => {
                return Reply::new(550, "5.7.1", format!("message refused: {reason}"));
            }
            verify::Action::Defer(reason) => {
                return Reply::new(451, "4.7.0", format!("{reason}; try again later"));
            }
            _ => {}
        }
        // Only the bridge says what was paid (docs/PROTOCOL.md §6.8): a sender's claim
        // is dropped before the message is stored, and the stored size stays true.
        let message =
            if crate::outbound::headers::field_values(&message, "X-LNMP-Payment").is_empty() {
                message
            } else {
                crate::outbound::headers::remove_fields(&message, &["X-LNMP-Payment"])
            };
        if let Some(Route::Reply(route)) = tx.routes.first() {
            return self.answer(tx, route, &froms[0], &message, &verdict).await;
        }
        let recipients: Vec<UserInfo> = tx
            .routes
            .iter()
            .filter_map(|r| match r {
                Route::Local(u) => Some(u.clone()),
                _ => None,
            })
            .collect();
        let inbound = InboundMail {
            peer: self.peer.ip(),
            helo: &helo,
            mail_from: &mail_from,
            recipients: &recipients,
            raw: &message,
            header_from: froms.first().map(String::as_str),
            verdict: &verdict,
        };
        let (recipients, holds, answer) = match self.server.admission.admit(&inbound).await {
            Admit::Deliver => (recipients.clone(), Vec::new(), None),
            Admit::Refuse(r) => return r,
            Admit::Partial {
                deliver,
                holds,
                answer,
            } => {
                if deliver.is_empty() && holds.is_empty() {
                    return answer.unwrap_or_else(|| Reply::new(250, "2.0.0", "ok"));
                }
                (deliver, holds, answer)
            }
        };
        let mailbox = if verdict.action == verify::Action::Junk {
            "Junk"
        } else {
            "INBOX"
        };
        let mut raw = self.received_header(tx).into_bytes();
        raw.extend_from_slice(&message);
        let sender = if mail_from.is_empty() {
            header_from(&message).unwrap_or_else(|| format!("postmaster@{helo}"))
        } else {
            mail_from.clone()
        };
        let delivered = self
            .server
            .courier
            .deliver_bridged(BridgedMail {
                raw: &raw,
                mail_from: &mail_from,
                sender: &sender,
                authentication_results: Some(verdict.authentication_results.clone()),
                recipients: recipients.into_iter().map(|u| (u, mailbox)).collect(),
                remote: Vec::new(),
                reported: Vec::new(),
                holds: holds.clone(),
            })
            .await;
        if let (Ok(_), Some(answer)) = (&delivered, answer) {
            tracing::info!(from = %mail_from, held = holds.len(), code = answer.code, "paywall");
            self.server
                .admission
                .committed(&inbound, &holds, &answer)
                .await;
            return answer;
        }
        match delivered {
            Ok(ids) => {
                tracing::info!(from = %mail_from, recipients = ids.len(), mailbox, "delivered");
                Reply::new(
                    250,
                    "2.0.0",
                    format!(
                        "ok: queued as {}",
                        ids.first().map(|s| &s[..16]).unwrap_or("-")
                    ),
                )
            }
            Err(crate::delivery::DeliveryError::Convert(e)) => {
                Reply::new(554, "5.6.0", format!("message refused: {e}"))
            }
            Err(e) => {
                tracing::error!(error = %e, "delivery failed");
                Reply::new(451, "4.3.0", "local error in processing; try again later")
            }
        }
    }

    /// Mail to a reply address (see `answer.rs`).
    async fn answer(
        &self,
        tx: &Transaction,
        route: &crate::store::reply_routes::ReplyRoute,
        from: &str,
        message: &[u8],
        verdict: &verify::Verdict,
    ) -> Reply {
        let mut raw = self.received_header(tx).into_bytes();
        raw.extend_from_slice(message);
        let mail_from = tx.mail_from.clone().unwrap_or_default();
        let helo = self.helo.clone().unwrap_or_default();
        let answer = super::answer::Answer {
            peer: self.peer.ip(),
            helo: &helo,
            mail_from: &mail_from,
            from,
            raw: &raw,
            verdict,
        };
        super::answer::take(&self.server, route, answer).await
    }

    async fn submission(&mut self, tx: &Transaction, message: Vec<u8>) -> Reply {
        let Some(user) = self.user.clone() else {
            return Reply::new(530, "5.7.0", "authentication required");
        };
        // The From header must name the user too, not only the envelope.
        let froms = match one_from(&message) {
            Ok(f) => f,
            Err(r) => return r,
        };
        if let Some(bad) = froms.iter().find(|f| !owns_address(&user, f)) {
            return Reply::new(
                550,
                "5.7.1",
                format!("From <{bad}> is not one of your addresses"),
            );
        }
        let mut raw = self.received_header(tx).into_bytes();
        raw.extend_from_slice(&message);
        let mail_from = tx.mail_from.clone().unwrap_or_default();
        let routes: Vec<(String, Route)> = tx
            .rcpt_addresses
            .iter()
            .cloned()
            .zip(tx.routes.iter().cloned())
            .collect();
        match self
            .server
            .courier
            .submit(&user, &mail_from, &raw, &routes)
            .await
        {
            Ok(()) => {
                tracing::info!(user = %user.username, recipients = tx.routes.len(), "submitted");
                Reply::new(250, "2.0.0", "ok: queued")
            }
            Err(crate::delivery::DeliveryError::Convert(e)) => {
                Reply::new(554, "5.6.0", format!("message refused: {e}"))
            }
            Err(e) => {
                tracing::error!(error = %e, "submission failed");
                Reply::new(451, "4.3.0", "local error in processing; try again later")
            }
        }
    }
}

/// The request with its borrowed strings copied, so the input buffer can move on.
fn owned(r: Request<std::borrow::Cow<'_, str>>) -> Request<String> {
    match r {
        Request::Ehlo { host } => Request::Ehlo {
            host: host.into_owned(),
        },
        Request::Helo { host } => Request::Helo {
            host: host.into_owned(),
        },
        Request::Lhlo { host } => Request::Lhlo {
            host: host.into_owned(),
        },
        Request::Mail { from } => Request::Mail {
            from: from.into_owned(),
        },
        Request::Rcpt { to } => Request::Rcpt {
            to: to.into_owned(),
        },
        Request::Bdat {
            chunk_size,
            is_last,
        } => Request::Bdat {
            chunk_size,
            is_last,
        },
        Request::Auth {
            mechanism,
            initial_response,
        } => Request::Auth {
            mechanism,
            initial_response: initial_response.into_owned(),
        },
        Request::Noop { value } => Request::Noop {
            value: value.into_owned(),
        },
        Request::Vrfy { value } => Request::Vrfy {
            value: value.into_owned(),
        },
        Request::Expn { value } => Request::Expn {
            value: value.into_owned(),
        },
        Request::Help { value } => Request::Help {
            value: value.into_owned(),
        },
        Request::Etrn { name } => Request::Etrn {
            name: name.into_owned(),
        },
        Request::Atrn { .. } => Request::Atrn {
            domains: Vec::new(),
        },
        Request::Burl { uri, is_last } => Request::Burl {
            uri: uri.into_owned(),
            is_last,
        },
        Request::StartTls => Request::StartTls,
        Request::Data => Request::Data,
        Request::Rset => Request::Rset,
        Request::Quit => Request::Quit,
    }
}

/// Whether a RCPT line named the null path `<>` (smtp-proto reads `<>` and
/// `<postmaster>` alike).
fn rcpt_was_null(line: &[u8]) -> bool {
    line.windows(2).any(|w| w == b"<>")
}

/// Whether `address` is one of the user's: `name@domain` (any +detail) or their LNMP
/// address.
fn owns_address(user: &UserInfo, address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let Some((_, own_domain)) = user.email.rsplit_once('@') else {
        return false;
    };
    if !domain.eq_ignore_ascii_case(own_domain) {
        return false;
    }
    let (name, checksum) = match local.split_once('#') {
        Some((n, c)) => (n, Some(c)),
        None => (local, None),
    };
    let name = name.split_once('+').map_or(name, |(n, _)| n);
    name.eq_ignore_ascii_case(&user.username)
        && checksum.is_none_or(|c| c == user.address.checksum())
}

fn header_from(message: &[u8]) -> Option<String> {
    crate::convert::from_fields(message)
        .into_iter()
        .flatten()
        .next()
}

/// The addresses of the message's one From field; a message with none, or with
/// several, is refused (RFC 5322 3.6 allows exactly one).
fn one_from(message: &[u8]) -> Result<Vec<String>, Reply> {
    let mut fields = crate::convert::from_fields(message);
    match fields.len() {
        1 if !fields[0].is_empty() => Ok(fields.remove(0)),
        0 | 1 => Err(Reply::new(550, "5.6.0", "the message has no From address")),
        _ => Err(Reply::new(
            550,
            "5.7.1",
            "the message has more than one From header field",
        )),
    }
}
