//! One IMAP connection: framing (lines and literals, through imap-codec's
//! fragmentizer), the RFC 3501 states (not authenticated, authenticated, selected,
//! logout), and the commands. Mailbox commands live in [`super::folders`], message
//! rendering in [`super::message`] and [`super::structure`].
//!
//! Every limit holds before anything is buffered: a command line longer than
//! `imap.max_command_line` or a literal over `imap.max_literal_bytes` is refused
//! without reading it, and a client that sends only bad commands is disconnected.

use super::message::Loader;
use super::selected::{Selected, write_flags, write_set};
use super::structure::ParsedMessage;
use super::{ImapServer, folders, wire};
use crate::custody::UserInfo;
use crate::store::Store;
use crate::store::changes::{EVERYONE, UserId};
use crate::store::mail::{FlagChange, MailRow};
use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer, LiteralAnnouncement};
use imap_codec::imap_types::IntoStatic;
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::{
    Command, CommandBody, FetchModifier, SelectParameter, StoreModifier,
};
use imap_codec::imap_types::core::{LiteralMode, Tag};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::extensions::utf8::Utf8Kind;
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Section};
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Answers a connection over the limits and closes it. On the implicit-TLS port a
/// plaintext answer would be read as a broken handshake, so it is just closed.
pub async fn refuse_busy(mut tcp: TcpStream, implicit_tls: bool) {
    if implicit_tls {
        let _ = tcp.shutdown().await;
        return;
    }
    let _ = tcp
        .write_all(b"* BYE [UNAVAILABLE] Too many connections; try again later\r\n")
        .await;
    let _ = tcp.shutdown().await;
}

/// Runs a session to its end.
pub async fn run(
    server: Arc<ImapServer>,
    tcp: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
    shutdown: CancellationToken,
) {
    let mut session = Session::new(server.clone(), peer, implicit_tls, shutdown);
    if implicit_tls {
        let Some(acceptor) = server.tls.clone() else {
            return;
        };
        match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                let _ = drive(&mut session, tls, true).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!("TLS handshake timed out"),
        }
        return;
    }
    match drive(&mut session, tcp, true).await {
        Ok(Some(tcp)) => {
            let Some(acceptor) = server.tls.clone() else {
                return;
            };
            match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    session.tls = true;
                    let _ = drive(&mut session, tls, false).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "STARTTLS handshake failed"),
                Err(_) => tracing::debug!("STARTTLS handshake timed out"),
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "connection ended"),
    }
}

/// What the session is doing.
enum State {
    NotAuthenticated,
    Authenticated(Box<User>),
    Logout,
}

/// A logged-in user and, when a mailbox is selected, its view.
struct User {
    info: UserInfo,
    loader: Loader,
    selected: Option<Selected>,
    changes: broadcast::Receiver<UserId>,
    /// A change was announced that the selected view has not caught up with.
    stale: bool,
    last_catch_up: Instant,
}

impl User {
    /// Takes in the change announcements heard so far: any for this user makes the
    /// selected view stale.
    fn hear_changes(&mut self) {
        loop {
            match self.changes.try_recv() {
                Ok(u) if u == self.info.id || u == EVERYONE => self.stale = true,
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.stale = true,
                Err(_) => break,
            }
        }
    }
}

pub(super) struct Session {
    pub(super) server: Arc<ImapServer>,
    peer: SocketAddr,
    tls: bool,
    state: State,
    /// ENABLE CONDSTORE (or a CONDSTORE-using command) happened.
    condstore: bool,
    /// ENABLE UTF8=ACCEPT happened: mailbox names and strings travel as UTF-8.
    pub(super) utf8: bool,
    bad_commands: u32,
    shutdown: CancellationToken,
}

/// A framed connection: the stream, the fragmentizer, and the output buffer.
struct Conn<S> {
    stream: S,
    frag: Fragmentizer,
    out: Vec<u8>,
    /// Bytes read since the fragmentizer last produced a fragment.
    unframed: usize,
    /// How many of them may come before the next fragment: a command line, or a
    /// literal announced and accepted plus the line after it.
    allowance: usize,
    max_line: usize,
    max_literal: u32,
}

/// The next thing the client said.
enum Next {
    /// A complete message (command, continuation line, DONE) with its bytes.
    Message(Vec<u8>),
    /// The client went away, broke a limit beyond repair, or timed out.
    Closed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Reads until a complete message is framed. Literal announcements are answered
    /// here: a continuation for an accepted synchronizing literal, `NO [TOOBIG]` for
    /// one over the limit (the client then does not send it), and BYE for an
    /// oversized non-synchronizing one (it is coming anyway). Cancel-safe.
    async fn next(&mut self, timeout: Duration) -> std::io::Result<Next> {
        loop {
            while let Some(fragment) = self.frag.progress() {
                self.unframed = 0;
                self.allowance = self.max_line;
                if let FragmentInfo::Line {
                    announcement: Some(LiteralAnnouncement { mode, length }),
                    ..
                } = fragment
                {
                    if length > self.max_literal {
                        if mode == LiteralMode::NonSync {
                            self.out.extend_from_slice(
                                b"* BYE [TOOBIG] Literal larger than the server takes\r\n",
                            );
                            self.flush().await?;
                            return Ok(Next::Closed);
                        }
                        let tag = self.frag.decode_tag().map(|t| t.into_static());
                        self.frag.skip_message();
                        tagged(
                            &mut self.out,
                            tag.as_ref(),
                            "NO [TOOBIG]",
                            "Literal too big",
                        );
                        self.flush().await?;
                        continue;
                    }
                    self.allowance = self.max_line + length as usize;
                    if mode == LiteralMode::Sync {
                        self.out.extend_from_slice(b"+ OK\r\n");
                        self.flush().await?;
                    }
                    continue;
                }
                if self.frag.is_message_complete() {
                    if self.frag.is_max_message_size_exceeded() {
                        let tag = self.frag.decode_tag();
                        tagged(&mut self.out, tag.as_ref(), "BAD", "Command too long");
                        self.flush().await?;
                        continue;
                    }
                    return Ok(Next::Message(self.frag.message_bytes().to_vec()));
                }
            }
            // Answers to pipelined commands go out together, once input runs dry.
            self.flush().await?;
            if self.unframed > self.allowance {
                self.out
                    .extend_from_slice(b"* BYE Command line too long\r\n");
                self.flush().await?;
                return Ok(Next::Closed);
            }
            let mut buf = [0u8; 16 * 1024];
            let n = match tokio::time::timeout(timeout, self.stream.read(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => {
                    self.out
                        .extend_from_slice(b"* BYE Autologout; idle for too long\r\n");
                    self.flush().await?;
                    return Ok(Next::Closed);
                }
            };
            if n == 0 {
                return Ok(Next::Closed);
            }
            self.unframed += n;
            self.frag.enqueue_bytes(&buf[..n]);
        }
    }

    /// Writes out what is buffered. A client that stops reading is cut off after
    /// [`WRITE_TIMEOUT`] rather than holding its slot and buffers for ever.
    async fn flush(&mut self) -> std::io::Result<()> {
        let write = async {
            if !self.out.is_empty() {
                self.stream.write_all(&self.out).await?;
                self.out.clear();
            }
            self.stream.flush().await
        };
        tokio::time::timeout(WRITE_TIMEOUT, write)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    /// Writes out what is buffered once it is large, so a big FETCH streams.
    async fn flush_if_large(&mut self) -> std::io::Result<()> {
        if self.out.len() >= 256 * 1024 {
            self.flush().await?;
        }
        Ok(())
    }
}

/// How long one write to a client may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Writes `tag status text` (or `* status text` without a tag).
fn tagged(out: &mut Vec<u8>, tag: Option<&Tag>, status: &str, text: &str) {
    match tag {
        Some(t) => out.extend_from_slice(t.as_ref().as_bytes()),
        None => out.push(b'*'),
    }
    out.push(b' ');
    out.extend_from_slice(status.as_bytes());
    out.push(b' ');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// How a command left the connection.
enum Flow {
    Continue,
    Close,
    StartTls,
}

/// A command's outcome: the tagged status, its response code and text.
pub(super) struct Done {
    status: &'static str,
    code: String,
    text: String,
}

impl Done {
    pub(super) fn ok(text: impl Into<String>) -> Done {
        Done {
            status: "OK",
            code: String::new(),
            text: text.into(),
        }
    }
    pub(super) fn no(text: impl Into<String>) -> Done {
        Done {
            status: "NO",
            code: String::new(),
            text: text.into(),
        }
    }
    pub(super) fn bad(text: impl Into<String>) -> Done {
        Done {
            status: "BAD",
            code: String::new(),
            text: text.into(),
        }
    }
    /// Adds a response code, e.g. `TRYCREATE`.
    pub(super) fn code(mut self, code: impl Into<String>) -> Done {
        self.code = code.into();
        self
    }
    fn write(&self, out: &mut Vec<u8>, tag: &Tag) {
        out.extend_from_slice(tag.as_ref().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.as_bytes());
        out.push(b' ');
        if !self.code.is_empty() {
            out.push(b'[');
            out.extend_from_slice(self.code.as_bytes());
            out.extend_from_slice(b"] ");
        }
        out.extend_from_slice(self.text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

impl From<crate::store::StoreError> for Done {
    fn from(e: crate::store::StoreError) -> Done {
        tracing::error!(error = %e, "storage failed during an IMAP command");
        Done::no("Storage is unavailable; try again").code("SERVERBUG")
    }
}

/// Runs the session over `stream` until it ends, or returns the stream when the client
/// asked for STARTTLS (anything it sent after that command is dropped with the
/// fragmentizer, so no plaintext crosses into the TLS session).
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    stream: S,
    greet: bool,
) -> std::io::Result<Option<S>> {
    let server = session.server.clone();
    let limits = &server.settings.imap;
    let mut conn = Conn {
        stream,
        frag: Fragmentizer::new(
            limits
                .max_literal_bytes
                .saturating_add(limits.max_command_line.saturating_mul(4)),
        ),
        out: Vec::with_capacity(8192),
        unframed: 0,
        allowance: limits.max_command_line as usize,
        max_line: limits.max_command_line as usize,
        // Before login a literal is never longer than a command line: a stranger
        // cannot make the server hold an APPEND-sized buffer.
        max_literal: if session.logged_in() {
            limits.max_literal_bytes
        } else {
            limits.max_command_line
        },
    };
    if greet {
        conn.out.extend_from_slice(b"* OK [CAPABILITY ");
        conn.out
            .extend_from_slice(session.capabilities().as_bytes());
        conn.out.extend_from_slice(b"] lnmp-bridge ready\r\n");
        conn.flush().await?;
    }
    loop {
        let timeout = Duration::from_secs(if session.logged_in() {
            conn.max_literal = limits.max_literal_bytes;
            limits.command_timeout_seconds
        } else {
            limits.login_timeout_seconds
        });
        let next = tokio::select! {
            _ = session.shutdown.cancelled() => {
                conn.out.extend_from_slice(b"* BYE Server shutting down\r\n");
                let _ = conn.flush().await;
                return Ok(None);
            }
            n = conn.next(timeout) => n?,
        };
        let bytes = match next {
            Next::Message(b) => b,
            Next::Closed => return Ok(None),
        };
        let bytes = utf8_append_as_plain(bytes);
        let flow = match CommandCodec::default().decode(&bytes) {
            Ok((_, command)) => match session.command(&mut conn, command).await {
                Ok(flow) => flow,
                Err(e) => {
                    tracing::debug!(error = %e, "connection ended during a command");
                    return Ok(None);
                }
            },
            Err(_) => {
                session.bad_commands += 1;
                let tag = parse_tag(&bytes);
                tagged(
                    &mut conn.out,
                    tag.as_ref(),
                    "BAD",
                    "Syntax error in command",
                );
                if session.bad_commands >= session.server.settings.imap.max_bad_commands {
                    conn.out
                        .extend_from_slice(b"* BYE Too many bad commands\r\n");
                    conn.flush().await?;
                    return Ok(None);
                }
                Flow::Continue
            }
        };
        if !matches!(flow, Flow::Continue) {
            conn.flush().await?;
        }
        match flow {
            Flow::Continue => {}
            Flow::Close => return Ok(None),
            Flow::StartTls => return Ok(Some(conn.stream)),
        }
    }
}

/// RFC 6855's APPEND form for clients that enabled UTF8=ACCEPT, `APPEND box (flags)
/// UTF8 (~{n}\r\n<message>)`, which imap-codec does not parse, rewritten as the
/// plain form `APPEND box (flags) {n}\r\n<message>` (the message is taken as it
/// is either way). Anything else is returned unchanged.
fn utf8_append_as_plain(bytes: Vec<u8>) -> Vec<u8> {
    let line_end = bytes
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(bytes.len());
    let first = &bytes[..line_end];
    let upper = first.to_ascii_uppercase();
    let Some(at) = upper.windows(8).position(|w| w == b" UTF8 (~") else {
        return bytes;
    };
    if !upper.windows(8).any(|w| w == b" APPEND ") || !bytes.ends_with(b")\r\n") {
        return bytes;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..at]);
    out.push(b' ');
    // Skip " UTF8 (~", keep "{n}\r\n<message>", drop the closing ")".
    out.extend_from_slice(&bytes[at + 8..bytes.len() - 3]);
    out.extend_from_slice(b"\r\n");
    out
}

/// The tag of a message that did not parse, when it has one.
fn parse_tag(bytes: &[u8]) -> Option<Tag<'static>> {
    let end = bytes.iter().position(|&b| b == b' ')?;
    Tag::try_from(String::from_utf8(bytes[..end].to_vec()).ok()?).ok()
}

impl Session {
    fn new(
        server: Arc<ImapServer>,
        peer: SocketAddr,
        tls: bool,
        shutdown: CancellationToken,
    ) -> Session {
        Session {
            server,
            peer,
            tls,
            state: State::NotAuthenticated,
            condstore: false,
            utf8: false,
            bad_commands: 0,
            shutdown,
        }
    }

    fn store(&self) -> &Store {
        self.server.custody.store()
    }

    fn logged_in(&self) -> bool {
        matches!(self.state, State::Authenticated(_))
    }

    /// Whether LOGIN and AUTHENTICATE may be used on this connection.
    fn auth_allowed(&self) -> bool {
        self.tls
            || (self.server.settings.imap.allow_plaintext_auth_on_loopback
                && crate::net::is_loopback(self.peer.ip()))
    }

    fn capabilities(&self) -> String {
        let mut caps = vec!["IMAP4rev1", "SASL-IR", "ID", "ENABLE", "IDLE", "LITERAL+"];
        match &self.state {
            State::NotAuthenticated => {
                if !self.tls && self.server.tls.is_some() {
                    caps.push("STARTTLS");
                }
                if self.auth_allowed() {
                    caps.push("AUTH=PLAIN");
                } else {
                    caps.push("LOGINDISABLED");
                }
            }
            _ => caps.extend([
                "NAMESPACE",
                "UIDPLUS",
                "MOVE",
                "UNSELECT",
                "UTF8=ACCEPT",
                "SPECIAL-USE",
                "CHILDREN",
                "CONDSTORE",
            ]),
        }
        let mut s = caps.join(" ");
        if !matches!(self.state, State::NotAuthenticated) {
            s.push_str(&format!(
                " APPENDLIMIT={}",
                self.server.settings.imap.max_literal_bytes
            ));
        }
        s
    }

    /// Runs one command and writes its responses, the tagged one last.
    async fn command<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        command: Command<'_>,
    ) -> std::io::Result<Flow> {
        let tag = command.tag.clone();
        let mut flow = Flow::Continue;
        // FETCH, STORE and SEARCH by sequence number must not see EXPUNGE responses
        // (RFC 3501 7.4.1); the UID forms may.
        let mut allow_expunge = true;
        let done: Done = match command.body {
            CommandBody::Capability => {
                conn.out.extend_from_slice(b"* CAPABILITY ");
                conn.out.extend_from_slice(self.capabilities().as_bytes());
                conn.out.extend_from_slice(b"\r\n");
                Done::ok("Capability completed")
            }
            CommandBody::Noop => {
                self.force_catch_up();
                Done::ok("NOOP completed")
            }
            CommandBody::Check => match &mut self.state {
                State::Authenticated(user) if user.selected.is_some() => {
                    user.stale = true;
                    Done::ok("CHECK completed")
                }
                State::Authenticated(_) => Done::bad("No mailbox selected"),
                _ => Done::bad("Log in first"),
            },
            CommandBody::Logout => {
                conn.out.extend_from_slice(b"* BYE Logging out\r\n");
                self.state = State::Logout;
                flow = Flow::Close;
                Done::ok("Logout completed")
            }
            CommandBody::Id { .. } => {
                conn.out
                    .extend_from_slice(b"* ID (\"name\" \"lnmp-bridge\" \"version\" \"");
                conn.out
                    .extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
                conn.out.extend_from_slice(b"\")\r\n");
                Done::ok("ID completed")
            }
            CommandBody::StartTLS => match &self.state {
                State::NotAuthenticated if !self.tls && self.server.tls.is_some() => {
                    flow = Flow::StartTls;
                    Done::ok("Begin TLS negotiation now")
                }
                State::NotAuthenticated if self.tls => Done::bad("TLS is already active"),
                State::NotAuthenticated => Done::no("TLS is not available"),
                _ => Done::bad("STARTTLS is only allowed before login"),
            },
            CommandBody::Login { username, password } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let pass = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                self.login(&user, &pass, conn).await
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                self.authenticate(
                    conn,
                    &tag,
                    mechanism,
                    initial_response.map(|r| r.declassify().to_vec()),
                )
                .await?
            }
            CommandBody::Enable { capabilities } => self.enable(conn, capabilities.as_ref()),
            body => {
                if !matches!(self.state, State::Authenticated(_)) {
                    let done = Done::bad("Log in first");
                    done.write(&mut conn.out, &tag);
                    return Ok(flow);
                }
                match body {
                    CommandBody::Fetch { uid, .. }
                    | CommandBody::Store { uid, .. }
                    | CommandBody::Search { uid, .. } => allow_expunge = uid,
                    _ => {}
                }
                self.authenticated(conn, &tag, body).await?
            }
        };
        // Nothing follows BYE; a refused command counts toward the BAD limit.
        if done.status == "BAD" {
            self.bad_commands += 1;
        }
        if let State::Authenticated(user) = &mut self.state
            && !matches!(flow, Flow::Close)
        {
            user.hear_changes();
            let due = user.stale
                || user.last_catch_up.elapsed()
                    >= Duration::from_secs(self.server.settings.imap.idle_poll_seconds);
            if due && user.selected.is_some() {
                let condstore = self.condstore;
                if let Err(e) = catch_up(
                    self.server.custody.store(),
                    user,
                    condstore,
                    allow_expunge,
                    &mut conn.out,
                )
                .await
                {
                    tracing::warn!(error = %e, "cannot catch up with the mailbox");
                }
            }
        }
        done.write(&mut conn.out, &tag);
        if self.bad_commands >= self.server.settings.imap.max_bad_commands {
            conn.out
                .extend_from_slice(b"* BYE Too many bad commands\r\n");
            return Ok(Flow::Close);
        }
        Ok(flow)
    }

    /// Marks the selected view for catching up at the end of this command.
    fn force_catch_up(&mut self) {
        if let State::Authenticated(user) = &mut self.state {
            user.stale = true;
        }
    }

    async fn login<S>(&mut self, user: &str, password: &str, conn: &mut Conn<S>) -> Done {
        if !matches!(self.state, State::NotAuthenticated) {
            return Done::bad("Already logged in");
        }
        if !self.auth_allowed() {
            return Done::no("Log in over TLS (STARTTLS or port 993)").code("PRIVACYREQUIRED");
        }
        let _ = conn;
        self.check_password(user, password).await
    }

    /// Checks a user name (`alice` or `alice@domain`) and password under the rate
    /// limits, and logs the user in.
    async fn check_password(&mut self, user: &str, password: &str) -> Done {
        let settings = &self.server.settings;
        let name = match user.rsplit_once('@') {
            Some((local, domain)) if domain.eq_ignore_ascii_case(&settings.domain) => local,
            Some(_) => "",
            None => user,
        }
        .to_ascii_lowercase();
        let ip = self.peer.ip();
        let turn = self.server.custody.password_check_turn().await;
        {
            let mut limits = self
                .server
                .auth_limits
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !limits.begin(ip, &name) {
                return Done::no("Too many failed logins; try again later").code("UNAVAILABLE");
            }
        }
        let custody = &self.server.custody;
        let ok = !name.is_empty()
            && custody
                .verify_password(&name, password)
                .await
                .unwrap_or(false);
        if !ok {
            // A short pause makes guessing slower without holding a slot for long.
            drop(turn);
            tokio::time::sleep(Duration::from_millis(300)).await;
            self.bad_commands += 1;
            return Done::no("Invalid credentials").code("AUTHENTICATIONFAILED");
        }
        self.server
            .auth_limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .succeeded(ip, &name);
        drop(turn);
        let (info, identity) = match (custody.user(&name).await, custody.identity(&name).await) {
            (Ok(i), Ok(id)) => (i, id),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, user = %name, "cannot open the user's keys");
                return Done::no("Cannot open your mailbox now").code("UNAVAILABLE");
            }
        };
        let loader = Loader::new(
            custody.clone(),
            self.server.blobs.clone(),
            info.clone(),
            identity,
            settings.imap.message_cache,
        );
        let changes = self.store().mail_changes();
        tracing::info!(user = %name, "IMAP login");
        self.state = State::Authenticated(Box::new(User {
            info,
            loader,
            selected: None,
            changes,
            stale: false,
            last_catch_up: Instant::now(),
        }));
        Done::ok(format!("[CAPABILITY {}] Logged in", self.capabilities()))
    }

    /// AUTHENTICATE PLAIN, with the initial response on the command line (SASL-IR) or
    /// after a continuation.
    async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        tag: &Tag<'_>,
        mechanism: AuthMechanism<'_>,
        initial: Option<Vec<u8>>,
    ) -> std::io::Result<Done> {
        let _ = tag;
        if !matches!(self.state, State::NotAuthenticated) {
            return Ok(Done::bad("Already logged in"));
        }
        if !self.auth_allowed() {
            return Ok(Done::no("Log in over TLS (STARTTLS or port 993)").code("PRIVACYREQUIRED"));
        }
        if mechanism != AuthMechanism::Plain {
            return Ok(Done::no("Unsupported mechanism; use PLAIN"));
        }
        let response = match initial {
            Some(r) => zeroize::Zeroizing::new(r),
            None => {
                conn.out.extend_from_slice(b"+ \r\n");
                conn.flush().await?;
                let line = match conn.next(Duration::from_secs(120)).await? {
                    Next::Message(b) => b,
                    Next::Closed => return Err(std::io::ErrorKind::ConnectionAborted.into()),
                };
                let line = String::from_utf8_lossy(&line).into_owned();
                match crate::sasl::decode(&line) {
                    Ok(r) => r,
                    Err(crate::sasl::SaslError::Cancelled) => {
                        return Ok(Done::bad("Authentication cancelled"));
                    }
                    Err(crate::sasl::SaslError::Malformed) => {
                        return Ok(Done::bad("Invalid base64"));
                    }
                }
            }
        };
        let Ok(creds) = crate::sasl::plain(&response) else {
            return Ok(Done::bad("Malformed PLAIN response"));
        };
        let (user, password) = (creds.username, creds.password);
        Ok(self.check_password(&user, &password).await)
    }

    fn enable<S>(&mut self, conn: &mut Conn<S>, capabilities: &[CapabilityEnable<'_>]) -> Done {
        if !matches!(self.state, State::Authenticated(_)) {
            return Done::bad("Log in first");
        }
        let mut enabled = Vec::new();
        for c in capabilities {
            match c {
                CapabilityEnable::CondStore if !self.condstore => {
                    self.condstore = true;
                    enabled.push("CONDSTORE");
                }
                CapabilityEnable::Utf8(Utf8Kind::Accept) if !self.utf8 => {
                    self.utf8 = true;
                    enabled.push("UTF8=ACCEPT");
                }
                _ => {}
            }
        }
        conn.out.extend_from_slice(b"* ENABLED");
        for e in enabled {
            conn.out.push(b' ');
            conn.out.extend_from_slice(e.as_bytes());
        }
        conn.out.extend_from_slice(b"\r\n");
        Done::ok("Enabled")
    }

    /// Commands of the authenticated and selected states.
    async fn authenticated<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        tag: &Tag<'_>,
        body: CommandBody<'_>,
    ) -> std::io::Result<Done> {
        // Commands that use CONDSTORE turn it on for the session (RFC 7162 3.1).
        if enables_condstore(&body) {
            self.condstore = true;
        }
        let condstore = self.condstore;
        let utf8 = self.utf8;
        let server = self.server.clone();
        let State::Authenticated(user) = &mut self.state else {
            return Ok(Done::bad("Log in first"));
        };
        let store = server.custody.store().clone();
        let max_name = server.settings.imap.max_mailbox_name_bytes;
        let out = &mut conn.out;
        Ok(match body {
            CommandBody::Namespace => {
                out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                Done::ok("Namespace completed")
            }
            CommandBody::Select { mailbox, .. } => {
                select(&store, user, &mailbox, false, utf8, max_name, out).await
            }
            CommandBody::Examine { mailbox, .. } => {
                select(&store, user, &mailbox, true, utf8, max_name, out).await
            }
            CommandBody::Unselect => match user.selected.take() {
                Some(_) => Done::ok("Unselect completed"),
                None => Done::bad("No mailbox selected"),
            },
            CommandBody::Close => match user.selected.take() {
                Some(sel) => {
                    if !sel.read_only {
                        let deleted: Vec<i64> = sel
                            .rows
                            .iter()
                            .filter(|r| has_flag(&r.flags, "\\Deleted"))
                            .map(|r| r.uid)
                            .collect();
                        if !deleted.is_empty() {
                            let (uid, mailbox) = (user.info.id, sel.mailbox.id);
                            if let Err(e) = store
                                .write(Box::new(move |c| {
                                    Box::pin(async move {
                                        crate::store::mail::expunge_in(
                                            c, uid, mailbox, &deleted, true,
                                        )
                                        .await
                                    })
                                }))
                                .await
                            {
                                return Ok(e.into());
                            }
                            store.mail_changed(user.info.id).await;
                        }
                    }
                    Done::ok("Close completed")
                }
                None => Done::bad("No mailbox selected"),
            },
            CommandBody::Create { mailbox } => {
                folders::create(&store, &user.info, &mailbox, utf8, &server.settings.imap).await
            }
            CommandBody::Delete { mailbox } => {
                let done = folders::delete(&store, &user.info, &mailbox, utf8, max_name).await;
                if let Some(sel) = &user.selected
                    && crate::store::mailboxes::by_id(&store, sel.mailbox.id)
                        .await
                        .ok()
                        .flatten()
                        .is_none()
                {
                    user.selected = None;
                }
                done
            }
            CommandBody::Rename { from, to } => {
                folders::rename(&store, &user.info, &from, &to, utf8, &server.settings.imap).await
            }
            CommandBody::Subscribe { mailbox } => {
                folders::subscribe(&store, &user.info, &mailbox, true, utf8, max_name).await
            }
            CommandBody::Unsubscribe { mailbox } => {
                folders::subscribe(&store, &user.info, &mailbox, false, utf8, max_name).await
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => {
                folders::list(
                    &store,
                    &user.info,
                    &reference,
                    &mailbox_wildcard,
                    false,
                    utf8,
                    max_name,
                    out,
                )
                .await
            }
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                folders::list(
                    &store,
                    &user.info,
                    &reference,
                    &mailbox_wildcard,
                    true,
                    utf8,
                    max_name,
                    out,
                )
                .await
            }
            CommandBody::Status {
                mailbox,
                item_names,
            } => {
                folders::status(
                    &store,
                    &user.info,
                    &mailbox,
                    &item_names,
                    utf8,
                    max_name,
                    out,
                )
                .await
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let bytes: &[u8] = match &message {
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal(l) => {
                        l.data()
                    }
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal8(l) => {
                        l.data.as_ref()
                    }
                };
                let date = date.map(|d| d.as_ref().timestamp());
                let done =
                    append(&store, user, &mailbox, &flags, date, bytes, utf8, max_name).await;
                user.stale = true;
                done
            }
            CommandBody::Idle => {
                return self.idle(conn, tag).await;
            }
            body => {
                let Some(sel) = user.selected.as_mut() else {
                    return Ok(Done::bad("No mailbox selected"));
                };
                match body {
                    CommandBody::Expunge => expunge(&store, &user.info, sel, None).await,
                    CommandBody::ExpungeUid { sequence_set } => {
                        expunge(&store, &user.info, sel, Some(&sequence_set)).await
                    }
                    CommandBody::Search {
                        charset,
                        criteria,
                        uid,
                    } => {
                        let charset_ok = charset.as_ref().is_none_or(|c| {
                            let name = match c {
                                imap_codec::imap_types::core::Charset::Atom(a) => {
                                    a.as_ref().to_owned()
                                }
                                imap_codec::imap_types::core::Charset::Quoted(q) => {
                                    q.as_ref().to_owned()
                                }
                            };
                            name.eq_ignore_ascii_case("UTF-8")
                                || name.eq_ignore_ascii_case("US-ASCII")
                        });
                        if !charset_ok {
                            Done::no("Unsupported charset").code("BADCHARSET (UTF-8 US-ASCII)")
                        } else {
                            let key = if criteria.as_ref().len() == 1 {
                                criteria.as_ref()[0].clone()
                            } else {
                                SearchKey::And(criteria.clone())
                            };
                            search(user, &key, uid, out).await
                        }
                    }
                    CommandBody::Fetch {
                        sequence_set,
                        macro_or_item_names,
                        uid,
                        modifiers,
                    } => {
                        let changed_since = modifiers.iter().find_map(|m| match m {
                            FetchModifier::ChangedSince(n) => Some(n.get()),
                            _ => None,
                        });
                        let mut items: Vec<MessageDataItemName<'static>> = match macro_or_item_names
                        {
                            MacroOrMessageDataItemNames::Macro(m) => {
                                m.expand().into_iter().map(|i| i.into_static()).collect()
                            }
                            MacroOrMessageDataItemNames::MessageDataItemNames(v) => {
                                v.into_iter().map(|i| i.into_static()).collect()
                            }
                        };
                        // The same item twice is answered once.
                        let mut seen = Vec::with_capacity(items.len());
                        items.retain(|i| {
                            let new = !seen.contains(i);
                            if new {
                                seen.push(i.clone());
                            }
                            new
                        });
                        fetch(
                            &store,
                            user,
                            conn,
                            &sequence_set,
                            &items,
                            uid,
                            changed_since,
                            condstore,
                        )
                        .await?
                    }
                    CommandBody::Store {
                        sequence_set,
                        kind,
                        response,
                        flags,
                        uid,
                        modifiers,
                    } => {
                        let unchanged_since = modifiers
                            .iter()
                            .map(|m| match m {
                                StoreModifier::UnchangedSince(n) => *n,
                            })
                            .next();
                        store_flags(
                            &store,
                            user,
                            out,
                            &sequence_set,
                            kind,
                            response,
                            &flags,
                            uid,
                            unchanged_since,
                            condstore,
                        )
                        .await
                    }
                    CommandBody::Copy {
                        sequence_set,
                        mailbox,
                        uid,
                    } => {
                        let done = copy(
                            &store,
                            user,
                            out,
                            &sequence_set,
                            &mailbox,
                            uid,
                            false,
                            utf8,
                            max_name,
                        )
                        .await;
                        user.stale = true;
                        done
                    }
                    CommandBody::Move {
                        sequence_set,
                        mailbox,
                        uid,
                    } => {
                        let done = copy(
                            &store,
                            user,
                            out,
                            &sequence_set,
                            &mailbox,
                            uid,
                            true,
                            utf8,
                            max_name,
                        )
                        .await;
                        user.stale = true;
                        done
                    }
                    _ => Done::bad("Command not supported"),
                }
            }
        })
    }

    /// IDLE (RFC 2177): reports changes as they happen until the client says DONE.
    async fn idle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<S>,
        _tag: &Tag<'_>,
    ) -> std::io::Result<Done> {
        let settings = self.server.settings.imap.clone();
        let condstore = self.condstore;
        let store = self.store().clone();
        let State::Authenticated(user) = &mut self.state else {
            return Ok(Done::bad("Log in first"));
        };
        conn.out.extend_from_slice(b"+ idling\r\n");
        if user.selected.is_some() {
            user.stale = true;
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(settings.idle_timeout_seconds);
        let poll = Duration::from_secs(settings.idle_poll_seconds);
        loop {
            if user.stale
                && user.selected.is_some()
                && let Err(e) = catch_up(&store, user, condstore, true, &mut conn.out).await
            {
                tracing::warn!(error = %e, "cannot catch up with the mailbox");
            }
            conn.flush().await?;
            let me = user.info.id;
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    conn.out.extend_from_slice(b"* BYE Server shutting down\r\n");
                    conn.flush().await?;
                    return Err(std::io::ErrorKind::ConnectionAborted.into());
                }
                _ = tokio::time::sleep_until(deadline) => {
                    conn.out.extend_from_slice(b"* BYE IDLE lasted too long\r\n");
                    conn.flush().await?;
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                _ = tokio::time::sleep(poll) => {
                    user.stale = true;
                }
                word = user.changes.recv() => match word {
                    Ok(u) if u == me || u == EVERYONE => user.stale = true,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => user.stale = true,
                    Err(broadcast::error::RecvError::Closed) => {
                        user.changes = store.mail_changes();
                    }
                },
                next = conn.next(Duration::from_secs(settings.idle_timeout_seconds)) => {
                    match next? {
                        Next::Message(line) => {
                            let line = line.strip_suffix(b"\r\n").or_else(|| line.strip_suffix(b"\n")).unwrap_or(&line);
                            if line.eq_ignore_ascii_case(b"DONE") {
                                return Ok(Done::ok("Idle completed"));
                            }
                            return Ok(Done::bad("Expected DONE"));
                        }
                        Next::Closed => return Err(std::io::ErrorKind::ConnectionAborted.into()),
                    }
                }
            }
        }
    }
}

/// Drains the change announcements and, when the user's mail changed, brings the
/// selected view up to date, writing the untagged responses.
async fn catch_up(
    store: &Store,
    user: &mut User,
    condstore: bool,
    allow_expunge: bool,
    out: &mut Vec<u8>,
) -> crate::store::Result<()> {
    user.hear_changes();
    let Some(sel) = user.selected.as_mut() else {
        return Ok(());
    };
    user.last_catch_up = Instant::now();
    let found = sel.catch_up(store, allow_expunge).await?;
    if allow_expunge {
        user.stale = false;
    }
    let shown: Vec<MailRow> = found
        .flag_changes
        .iter()
        .map(|(_, r)| r.clone())
        .chain(
            sel.rows
                .iter()
                .rev()
                .take(if found.new_messages {
                    sel.rows.len()
                } else {
                    0
                })
                .cloned(),
        )
        .collect();
    if sel.learn_keywords(&shown) {
        sel.write_flag_lists(out);
    }
    for seq in &found.expunged {
        out.extend_from_slice(format!("* {seq} EXPUNGE\r\n").as_bytes());
    }
    for (seq, row) in &found.flag_changes {
        out.extend_from_slice(format!("* {seq} FETCH (UID {} FLAGS ", row.uid).as_bytes());
        write_flags(out, &row.flags, sel.is_recent(row.uid));
        if condstore {
            out.extend_from_slice(format!(" MODSEQ ({})", row.modseq).as_bytes());
        }
        out.extend_from_slice(b")\r\n");
    }
    // EXPUNGE responses lower the count by themselves; EXISTS only announces growth.
    if found.new_messages {
        out.extend_from_slice(format!("* {} EXISTS\r\n", sel.exists()).as_bytes());
        out.extend_from_slice(format!("* {} RECENT\r\n", sel.recent.len()).as_bytes());
    }
    Ok(())
}

/// The stored name a client's mailbox argument refers to.
pub(super) fn mailbox_name(mailbox: &Mailbox<'_>, utf8: bool, max: usize) -> Result<String, Done> {
    match mailbox {
        Mailbox::Inbox => Ok("INBOX".into()),
        Mailbox::Other(other) => super::names::from_client(other.inner().as_ref(), utf8, max)
            .map_err(|e| Done::no(e.to_string()).code("CANNOT")),
    }
}

/// The flags a message's stored flag list holds, case-insensitively.
fn has_flag(flags: &str, flag: &str) -> bool {
    flags
        .split_whitespace()
        .any(|f| f.eq_ignore_ascii_case(flag))
}

/// A flag from a command as it is stored; \Recent and \* cannot be stored.
fn flag_text(f: &Flag<'_>) -> Option<String> {
    let s = f.to_string();
    if s.eq_ignore_ascii_case("\\Recent") || s == "\\*" {
        return None;
    }
    Some(s)
}

#[allow(clippy::too_many_arguments)]
async fn select(
    store: &Store,
    user: &mut User,
    mailbox: &Mailbox<'_>,
    read_only: bool,
    utf8: bool,
    max_name: usize,
    out: &mut Vec<u8>,
) -> Done {
    // A failed SELECT leaves no mailbox selected (RFC 3501 6.3.1).
    user.selected = None;
    let name = match mailbox_name(mailbox, utf8, max_name) {
        Ok(n) => n,
        Err(d) => return d,
    };
    let row = match crate::store::mailboxes::get(store, user.info.id, &name).await {
        Ok(Some(r)) => r,
        Ok(None) => return Done::no("No such mailbox").code("NONEXISTENT"),
        Err(e) => return e.into(),
    };
    let sel = match Selected::open(store, row, read_only).await {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    sel.write_flag_lists(out);
    out.extend_from_slice(format!("* {} EXISTS\r\n", sel.exists()).as_bytes());
    out.extend_from_slice(format!("* {} RECENT\r\n", sel.recent.len()).as_bytes());
    if let Some(i) = sel.rows.iter().position(|r| !has_flag(&r.flags, "\\Seen")) {
        out.extend_from_slice(format!("* OK [UNSEEN {}] First unseen\r\n", i + 1).as_bytes());
    }
    out.extend_from_slice(
        format!(
            "* OK [UIDVALIDITY {}] UIDs valid\r\n",
            sel.mailbox.uidvalidity
        )
        .as_bytes(),
    );
    out.extend_from_slice(
        format!("* OK [UIDNEXT {}] Predicted next UID\r\n", sel.uid_next()).as_bytes(),
    );
    // RFC 7162 3.1.2.1: a server that keeps MODSEQs sends HIGHESTMODSEQ on every
    // SELECT, whether or not the client enabled CONDSTORE.
    out.extend_from_slice(
        format!(
            "* OK [HIGHESTMODSEQ {}] Highest\r\n",
            sel.known_modseq.max(1)
        )
        .as_bytes(),
    );
    user.selected = Some(sel);
    user.stale = false;
    user.last_catch_up = Instant::now();
    if read_only {
        Done::ok("Examine completed").code("READ-ONLY")
    } else {
        Done::ok("Select completed").code("READ-WRITE")
    }
}

#[allow(clippy::too_many_arguments)]
async fn append(
    store: &Store,
    user: &mut User,
    mailbox: &Mailbox<'_>,
    flags: &[Flag<'_>],
    date: Option<i64>,
    bytes: &[u8],
    utf8: bool,
    max_name: usize,
) -> Done {
    let name = match mailbox_name(mailbox, utf8, max_name) {
        Ok(n) => n,
        Err(d) => return d,
    };
    let row = match crate::store::mailboxes::get(store, user.info.id, &name).await {
        Ok(Some(r)) => r,
        Ok(None) => return Done::no("No such mailbox").code("TRYCREATE"),
        Err(e) => return e.into(),
    };
    if bytes.is_empty() {
        return Done::no("Empty message");
    }
    let flags: Vec<String> = flags.iter().filter_map(flag_text).collect();
    let flags = crate::store::mail::apply_flags("", FlagChange::Add, &flags);
    let vault = user.loader.vault();
    let message_id = vault.name(bytes);
    let sealed = vault.seal(&message_id, bytes);
    let new = crate::store::mail::NewMail {
        message_id: message_id.clone(),
        internal_date: date.unwrap_or_else(crate::store::now),
        // As clients will count it: with CRLF line ends (FETCH sends them so).
        size: ParsedMessage::parse(bytes).rfc822_size() as i64,
        flags,
    };
    let (user_id, mailbox_id) = (user.info.id, row.id);
    let uid = match store
        .write(Box::new(move |c| {
            Box::pin(async move {
                crate::store::mail::store_body_in(c, user_id, &message_id, &sealed).await?;
                crate::store::mail::append_in(c, mailbox_id, &new).await
            })
        }))
        .await
    {
        Ok(uid) => uid,
        Err(e) => return e.into(),
    };
    store.mail_changed(user.info.id).await;
    Done::ok("Append completed").code(format!("APPENDUID {} {uid}", row.uidvalidity))
}

async fn expunge(
    store: &Store,
    user: &UserInfo,
    sel: &mut Selected,
    only: Option<&SequenceSet>,
) -> Done {
    if sel.read_only {
        return Done::no("Mailbox is read-only").code("READ-ONLY");
    }
    let positions = match only {
        Some(set) => match sel.resolve(set, true) {
            Ok(p) => p,
            Err(e) => return Done::bad(e),
        },
        None => (0..sel.rows.len()).collect(),
    };
    let uids: Vec<i64> = positions
        .into_iter()
        .map(|i| &sel.rows[i])
        .filter(|r| has_flag(&r.flags, "\\Deleted"))
        .map(|r| r.uid)
        .collect();
    if !uids.is_empty() {
        let (user_id, mailbox_id) = (user.id, sel.mailbox.id);
        if let Err(e) = store
            .write(Box::new(move |c| {
                Box::pin(async move {
                    crate::store::mail::expunge_in(c, user_id, mailbox_id, &uids, true).await
                })
            }))
            .await
        {
            return e.into();
        }
        store.mail_changed(user.id).await;
    }
    Done::ok("Expunge completed")
}

/// Whether a command turns CONDSTORE on (RFC 7162 3.1): SELECT/EXAMINE (CONDSTORE),
/// FETCH with CHANGEDSINCE or the MODSEQ item, STORE with UNCHANGEDSINCE, SEARCH
/// MODSEQ, STATUS HIGHESTMODSEQ.
fn enables_condstore(body: &CommandBody<'_>) -> bool {
    use imap_codec::imap_types::status::StatusDataItemName;
    match body {
        CommandBody::Select { parameters, .. } | CommandBody::Examine { parameters, .. } => {
            parameters.contains(&SelectParameter::CondStore)
        }
        CommandBody::Fetch {
            modifiers,
            macro_or_item_names,
            ..
        } => {
            modifiers
                .iter()
                .any(|m| matches!(m, FetchModifier::ChangedSince(_)))
                || matches!(macro_or_item_names,
                    MacroOrMessageDataItemNames::MessageDataItemNames(v)
                        if v.iter().any(|i| matches!(i, MessageDataItemName::ModSeq)))
        }
        CommandBody::Store { modifiers, .. } => !modifiers.is_empty(),
        CommandBody::Search { criteria, .. } => criteria.as_ref().iter().any(uses_modseq),
        CommandBody::Status { item_names, .. } => {
            item_names.contains(&StatusDataItemName::HighestModSeq)
        }
        _ => false,
    }
}

/// Whether a search program uses MODSEQ (the response then carries the highest).
fn uses_modseq(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(k) => uses_modseq(k),
        _ => false,
    }
}

async fn search(user: &mut User, key: &SearchKey<'_>, uid: bool, out: &mut Vec<u8>) -> Done {
    let needs_message = super::search::needs_message(key);
    let Some(sel) = user.selected.as_ref() else {
        return Done::bad("No mailbox selected");
    };
    let ctx = super::search::Context {
        max_seq: sel.exists(),
        max_uid: sel.rows.last().map_or(0, |r| r.uid as u32),
    };
    let rows = sel.rows.clone();
    let recent: Vec<bool> = rows.iter().map(|r| sel.is_recent(r.uid)).collect();
    let mut hits = Vec::new();
    let mut top_modseq = 0;
    for (i, row) in rows.iter().enumerate() {
        let bytes = if needs_message {
            match user.loader.load(row, &rows[i + 1..]).await {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(error = %e, uid = row.uid, "cannot open a message for SEARCH");
                    None
                }
            }
        } else {
            None
        };
        let flags: Vec<String> = row.flags.split_whitespace().map(str::to_owned).collect();
        let size = match (&bytes, row.size) {
            (_, s) if s >= 0 => s as u64,
            (Some(b), _) => b.len() as u64,
            (None, _) => 0,
        };
        let candidate = super::search::Candidate {
            seq: i as u32 + 1,
            uid: row.uid as u32,
            flags: &flags,
            recent: recent[i],
            internal_date: row.internal_date,
            size,
            modseq: row.modseq as u64,
            raw: bytes.as_deref().map(|b| b.as_slice()),
        };
        if super::search::matches(key, &candidate, &ctx) {
            hits.push(if uid { row.uid } else { i as i64 + 1 });
            top_modseq = top_modseq.max(row.modseq);
        }
    }
    out.extend_from_slice(b"* SEARCH");
    for h in &hits {
        out.extend_from_slice(format!(" {h}").as_bytes());
    }
    if uses_modseq(key) && !hits.is_empty() {
        out.extend_from_slice(format!(" (MODSEQ {top_modseq})").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Done::ok("Search completed")
}

/// Whether a FETCH item needs the message's bytes.
fn needs_body(item: &MessageDataItemName<'_>) -> bool {
    !matches!(
        item,
        MessageDataItemName::Flags
            | MessageDataItemName::Uid
            | MessageDataItemName::InternalDate
            | MessageDataItemName::ModSeq
    )
}

/// Writes the space between two FETCH items.
fn sep(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b' ');
    }
    *first = false;
}

/// INTERNALDATE's form: `17-Jul-1996 02:44:25 +0000`.
fn internal_date(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%d-%b-%Y %H:%M:%S +0000")
        .to_string()
}

#[allow(clippy::too_many_arguments)]
async fn fetch<S: AsyncRead + AsyncWrite + Unpin>(
    store: &Store,
    user: &mut User,
    conn: &mut Conn<S>,
    set: &SequenceSet,
    items: &[MessageDataItemName<'static>],
    uid: bool,
    changed_since: Option<u64>,
    condstore: bool,
) -> std::io::Result<Done> {
    let Some(sel) = user.selected.as_ref() else {
        return Ok(Done::bad("No mailbox selected"));
    };
    let positions = match sel.resolve(set, uid) {
        Ok(p) => p,
        Err(e) => return Ok(Done::bad(e)),
    };
    let read_only = sel.read_only;
    let wants_body = items.iter().any(needs_body);
    // Reading a body without PEEK sets \Seen (RFC 3501 6.4.5).
    let sets_seen = !read_only
        && items.iter().any(|i| match i {
            MessageDataItemName::BodyExt { peek, .. } => !peek,
            MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text => true,
            _ => false,
        });
    let show_modseq = condstore
        && (changed_since.is_some()
            || items
                .iter()
                .any(|i| matches!(i, MessageDataItemName::ModSeq)));
    let rows: Vec<(usize, MailRow, bool)> = positions
        .into_iter()
        .map(|i| (i, sel.rows[i].clone(), sel.is_recent(sel.rows[i].uid)))
        .filter(|(_, r, _)| changed_since.is_none_or(|c| r.modseq as u64 > c))
        .collect();
    let mailbox_id = sel.mailbox.id;
    // \Seen first, so the FLAGS written below are the new ones.
    let mut now_seen = std::collections::HashMap::new();
    if sets_seen {
        let unseen: Vec<i64> = rows
            .iter()
            .filter(|(_, r, _)| !has_flag(&r.flags, "\\Seen"))
            .map(|(_, r, _)| r.uid)
            .collect();
        if !unseen.is_empty() {
            let flags = vec!["\\Seen".to_owned()];
            match store
                .write(Box::new(move |c| {
                    Box::pin(async move {
                        crate::store::mail::set_flags_in(
                            c,
                            mailbox_id,
                            &unseen,
                            FlagChange::Add,
                            &flags,
                            None,
                        )
                        .await
                    })
                }))
                .await
            {
                Ok((changed, _)) => {
                    for r in changed {
                        now_seen.insert(r.uid, r);
                    }
                    store.mail_changed(user.info.id).await;
                }
                Err(e) => return Ok(e.into()),
            }
        }
    }
    let mut unreadable = 0usize;
    for (i, mut row, recent) in rows {
        let just_seen = now_seen.contains_key(&row.uid);
        if let Some(updated) = now_seen.remove(&row.uid) {
            if let Some(sel) = user.selected.as_mut()
                && let Some(slot) = sel.rows.get_mut(i)
                && slot.uid == updated.uid
            {
                slot.flags = updated.flags.clone();
                slot.modseq = updated.modseq;
            }
            row = updated;
        }
        // RFC822.SIZE alone needs the bytes only while the size is not recorded yet.
        let load = wants_body
            || (row.size < 0
                && items
                    .iter()
                    .any(|i| matches!(i, MessageDataItemName::Rfc822Size)));
        let bytes = if load {
            let next: &[MailRow] = user
                .selected
                .as_ref()
                .and_then(|s| s.rows.get(i + 1..))
                .unwrap_or(&[]);
            match user.loader.load(&row, next).await {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(error = %e, uid = row.uid, "cannot open a message for FETCH");
                    None
                }
            }
        } else {
            None
        };
        if load && bytes.is_none() {
            // The rest of the set is still answered; this message gets no data.
            unreadable += 1;
            continue;
        }
        let parsed = bytes.as_deref().map(|b| ParsedMessage::parse(b));
        conn.out
            .extend_from_slice(format!("* {} FETCH (", i + 1).as_bytes());
        let mut first = true;
        let mut wrote_uid = false;
        let mut wrote_flags = false;
        let mut wrote_modseq = false;
        for item in items {
            let out = &mut conn.out;
            match item {
                // Each of these is written once, however often it is asked for.
                MessageDataItemName::Uid if !wrote_uid => {
                    sep(out, &mut first);
                    out.extend_from_slice(format!("UID {}", row.uid).as_bytes());
                    wrote_uid = true;
                }
                MessageDataItemName::Flags if !wrote_flags => {
                    sep(out, &mut first);
                    out.extend_from_slice(b"FLAGS ");
                    write_flags(out, &row.flags, recent);
                    wrote_flags = true;
                }
                MessageDataItemName::ModSeq if !wrote_modseq => {
                    sep(out, &mut first);
                    out.extend_from_slice(format!("MODSEQ ({})", row.modseq).as_bytes());
                    wrote_modseq = true;
                }
                MessageDataItemName::InternalDate => {
                    sep(out, &mut first);
                    out.extend_from_slice(b"INTERNALDATE \"");
                    out.extend_from_slice(internal_date(row.internal_date).as_bytes());
                    out.push(b'"');
                }
                MessageDataItemName::Rfc822Size => {
                    sep(out, &mut first);
                    let size = parsed.as_ref().map_or(row.size, |p| p.rfc822_size() as i64);
                    out.extend_from_slice(format!("RFC822.SIZE {}", size.max(0)).as_bytes());
                }
                MessageDataItemName::Envelope => {
                    if let Some(p) = &parsed {
                        sep(out, &mut first);
                        out.extend_from_slice(b"ENVELOPE ");
                        p.envelope(out);
                    }
                }
                MessageDataItemName::Body => {
                    if let Some(p) = &parsed {
                        sep(out, &mut first);
                        out.extend_from_slice(b"BODY ");
                        p.body_structure(out, false);
                    }
                }
                MessageDataItemName::BodyStructure => {
                    if let Some(p) = &parsed {
                        sep(out, &mut first);
                        out.extend_from_slice(b"BODYSTRUCTURE ");
                        p.body_structure(out, true);
                    }
                }
                MessageDataItemName::Rfc822 => {
                    if let Some(p) = &parsed {
                        sep(out, &mut first);
                        out.extend_from_slice(b"RFC822 ");
                        wire::literal(out, &p.section(None));
                    }
                }
                MessageDataItemName::Rfc822Header => {
                    if let Some(p) = &parsed {
                        sep(out, &mut first);
                        out.extend_from_slice(b"RFC822.HEADER ");
                        let h = p.section(Some(&Section::Header(None)));
                        wire::literal(out, &h);
                    }
                }
                MessageDataItemName::Rfc822Text => {
                    if let Some(p) = &parsed {
                        sep(out, &mut first);
                        out.extend_from_slice(b"RFC822.TEXT ");
                        let t = p.section(Some(&Section::Text(None)));
                        wire::literal(out, &t);
                    }
                }
                MessageDataItemName::BodyExt {
                    section, partial, ..
                } => {
                    if let Some(p) = &parsed {
                        sep(out, &mut first);
                        out.extend_from_slice(b"BODY[");
                        write_section(out, section.as_ref());
                        out.push(b']');
                        let data = p.section(section.as_ref());
                        match partial {
                            Some((origin, count)) => {
                                out.extend_from_slice(format!("<{origin}> ").as_bytes());
                                let start = (*origin as usize).min(data.len());
                                let end =
                                    start.saturating_add(count.get() as usize).min(data.len());
                                wire::literal(out, &data[start..end]);
                            }
                            None => {
                                out.push(b' ');
                                wire::literal(out, &data);
                            }
                        }
                    }
                }
                _ => {}
            }
            // A FETCH naming one big section many times streams instead of piling up.
            conn.flush_if_large().await?;
        }
        let out = &mut conn.out;
        if uid && !wrote_uid {
            sep(out, &mut first);
            out.extend_from_slice(format!("UID {}", row.uid).as_bytes());
        }
        // A body read that set \Seen reports the new flags (RFC 3501 6.4.5), and with
        // CONDSTORE the new MODSEQ (RFC 7162 3.1.4).
        if just_seen && !wrote_flags {
            sep(out, &mut first);
            out.extend_from_slice(b"FLAGS ");
            write_flags(out, &row.flags, recent);
        }
        if (show_modseq || (condstore && just_seen)) && !wrote_modseq {
            sep(out, &mut first);
            out.extend_from_slice(format!("MODSEQ ({})", row.modseq).as_bytes());
        }
        out.extend_from_slice(b")\r\n");
        conn.flush_if_large().await?;
    }
    if unreadable > 0 {
        return Ok(Done::no(format!(
            "{unreadable} message(s) could not be read; the others were"
        ))
        .code("SERVERBUG"));
    }
    Ok(Done::ok("Fetch completed"))
}

/// Writes a section spec as the client will match it: `1.2.HEADER.FIELDS (From To)`.
fn write_section(out: &mut Vec<u8>, section: Option<&Section<'_>>) {
    use imap_codec::imap_types::fetch::Part;
    let part = |out: &mut Vec<u8>, p: &Part| {
        let nums: Vec<String> = p.0.as_ref().iter().map(|n| n.to_string()).collect();
        out.extend_from_slice(nums.join(".").as_bytes());
    };
    let fields = |out: &mut Vec<u8>, names: &[imap_codec::imap_types::core::AString<'_>]| {
        out.extend_from_slice(b" (");
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            wire::astring(out, n.as_ref());
        }
        out.push(b')');
    };
    let with_dot = |out: &mut Vec<u8>, p: &Option<Part>| {
        if let Some(p) = p {
            part(out, p);
            out.push(b'.');
        }
    };
    match section {
        None => {}
        Some(Section::Part(p)) => part(out, p),
        Some(Section::Header(p)) => {
            with_dot(out, p);
            out.extend_from_slice(b"HEADER");
        }
        Some(Section::HeaderFields(p, names)) => {
            with_dot(out, p);
            out.extend_from_slice(b"HEADER.FIELDS");
            fields(out, names.as_ref());
        }
        Some(Section::HeaderFieldsNot(p, names)) => {
            with_dot(out, p);
            out.extend_from_slice(b"HEADER.FIELDS.NOT");
            fields(out, names.as_ref());
        }
        Some(Section::Text(p)) => {
            with_dot(out, p);
            out.extend_from_slice(b"TEXT");
        }
        Some(Section::Mime(p)) => {
            part(out, p);
            out.extend_from_slice(b".MIME");
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn store_flags(
    store: &Store,
    user: &mut User,
    out: &mut Vec<u8>,
    set: &SequenceSet,
    kind: StoreType,
    response: StoreResponse,
    flags: &[Flag<'_>],
    uid: bool,
    unchanged_since: Option<u64>,
    condstore: bool,
) -> Done {
    let Some(sel) = user.selected.as_mut() else {
        return Done::bad("No mailbox selected");
    };
    if sel.read_only {
        return Done::no("Mailbox is read-only").code("READ-ONLY");
    }
    let positions = match sel.resolve(set, uid) {
        Ok(p) => p,
        Err(e) => return Done::bad(e),
    };
    let flag_list: Vec<String> = flags.iter().filter_map(flag_text).collect();
    let flags = flag_list.clone();
    let change = match kind {
        StoreType::Add => FlagChange::Add,
        StoreType::Remove => FlagChange::Remove,
        StoreType::Replace => FlagChange::Replace,
    };
    let uids: Vec<i64> = positions.iter().map(|&i| sel.rows[i].uid).collect();
    let mailbox_id = sel.mailbox.id;
    let since = unchanged_since.map(|u| u.min(i64::MAX as u64) as i64);
    let (changed, failed) = match store
        .write(Box::new(move |c| {
            Box::pin(async move {
                crate::store::mail::set_flags_in(c, mailbox_id, &uids, change, &flags, since).await
            })
        }))
        .await
    {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    if !changed.is_empty() {
        store.mail_changed(user.info.id).await;
    }
    // A changed row whose new flags are not what this session's view plus the change
    // gives was also changed by someone else: .SILENT does not hide that (RFC 3501
    // 6.4.6).
    let mut external = std::collections::HashSet::new();
    for row in &changed {
        if let Ok(i) = sel.rows.binary_search_by_key(&row.uid, |r| r.uid) {
            let expected = crate::store::mail::apply_flags(&sel.rows[i].flags, change, &flag_list);
            if expected != row.flags {
                external.insert(row.uid);
            }
            sel.rows[i].flags = row.flags.clone();
            sel.rows[i].modseq = row.modseq;
        }
    }
    // A keyword new to this mailbox is announced before the FETCH that shows it.
    if sel.learn_keywords(&changed) {
        sel.write_flag_lists(out);
    }
    let changed: std::collections::HashSet<i64> = changed.iter().map(|r| r.uid).collect();
    let failed_set: std::collections::HashSet<i64> = failed.iter().copied().collect();
    // Non-silent STORE reports every message of the set; with CONDSTORE the changed
    // ones are reported even for .SILENT, with UID and their new MODSEQ (RFC 7162
    // 3.1.3).
    for &i in &positions {
        let row = &sel.rows[i];
        if failed_set.contains(&row.uid) {
            continue;
        }
        let was_changed = changed.contains(&row.uid);
        let answer = response == StoreResponse::Answer || external.contains(&row.uid);
        let report = answer || (condstore && was_changed);
        if !report {
            continue;
        }
        out.extend_from_slice(format!("* {} FETCH (", i + 1).as_bytes());
        if uid || condstore {
            out.extend_from_slice(format!("UID {} ", row.uid).as_bytes());
        }
        if answer {
            out.extend_from_slice(b"FLAGS ");
            write_flags(out, &row.flags, sel.is_recent(row.uid));
            if condstore {
                out.push(b' ');
            }
        }
        if condstore {
            out.extend_from_slice(format!("MODSEQ ({})", row.modseq).as_bytes());
        }
        out.extend_from_slice(b")\r\n");
    }
    if !failed.is_empty() {
        let mut code = b"MODIFIED ".to_vec();
        let numbers: Vec<i64> = if uid {
            failed.clone()
        } else {
            failed
                .iter()
                .filter_map(|u| sel.seq_of(*u).map(i64::from))
                .collect()
        };
        write_set(&mut code, &numbers);
        return Done::ok("Conditional store failed")
            .code(String::from_utf8_lossy(&code).into_owned());
    }
    Done::ok("Store completed")
}

#[allow(clippy::too_many_arguments)]
async fn copy(
    store: &Store,
    user: &mut User,
    out: &mut Vec<u8>,
    set: &SequenceSet,
    mailbox: &Mailbox<'_>,
    uid: bool,
    moving: bool,
    utf8: bool,
    max_name: usize,
) -> Done {
    let Some(sel) = user.selected.as_ref() else {
        return Done::bad("No mailbox selected");
    };
    if moving && sel.read_only {
        return Done::no("Mailbox is read-only").code("READ-ONLY");
    }
    let positions = match sel.resolve(set, uid) {
        Ok(p) => p,
        Err(e) => return Done::bad(e),
    };
    let name = match mailbox_name(mailbox, utf8, max_name) {
        Ok(n) => n,
        Err(d) => return d,
    };
    let target = match crate::store::mailboxes::get(store, user.info.id, &name).await {
        Ok(Some(r)) => r,
        Ok(None) => return Done::no("No such mailbox").code("TRYCREATE"),
        Err(e) => return e.into(),
    };
    if positions.is_empty() {
        return Done::ok(if moving {
            "Move completed"
        } else {
            "Copy completed"
        });
    }
    if moving && target.id == sel.mailbox.id {
        return Done::no("Cannot move a message into its own mailbox").code("CANNOT");
    }
    let uids: Vec<i64> = positions.iter().map(|&i| sel.rows[i].uid).collect();
    let (from, to, user_id) = (sel.mailbox.id, target.id, user.info.id);
    let pairs = match store
        .write(Box::new(move |c| {
            Box::pin(async move {
                if moving {
                    crate::store::mail::lock_mailboxes_in(c, &[from, to]).await?;
                }
                let pairs = crate::store::mail::copy_in(c, from, &uids, to).await?;
                if moving {
                    let moved: Vec<i64> = pairs.iter().map(|(s, _)| *s).collect();
                    crate::store::mail::expunge_in(c, user_id, from, &moved, false).await?;
                }
                Ok(pairs)
            })
        }))
        .await
    {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    if pairs.is_empty() {
        // Everything named was expunged meanwhile: nothing copied, no COPYUID (its
        // sets may not be empty, RFC 4315 3).
        return Done::ok(if moving {
            "Move completed"
        } else {
            "Copy completed"
        });
    }
    store.mail_changed(user.info.id).await;
    let mut code = format!("COPYUID {} ", target.uidvalidity).into_bytes();
    let src: Vec<i64> = pairs.iter().map(|(s, _)| *s).collect();
    let dst: Vec<i64> = pairs.iter().map(|(_, d)| *d).collect();
    write_set(&mut code, &src);
    code.push(b' ');
    write_set(&mut code, &dst);
    let code = String::from_utf8_lossy(&code).into_owned();
    if moving {
        // RFC 6851: COPYUID goes in an untagged OK before the expunges.
        out.extend_from_slice(format!("* OK [{code}] Moved\r\n").as_bytes());
        user.stale = true;
        Done::ok("Move completed")
    } else {
        Done::ok("Copy completed").code(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_dates_use_the_imap_form() {
        assert_eq!(internal_date(0), "01-Jan-1970 00:00:00 +0000");
        assert_eq!(internal_date(1_700_000_000), "14-Nov-2023 22:13:20 +0000");
    }

    #[test]
    fn untagged_tags_come_from_the_line() {
        assert_eq!(parse_tag(b"a1 FOO\r\n").unwrap().as_ref(), "a1");
        assert!(parse_tag(b"\r\n").is_none());
    }

    #[test]
    fn sections_are_echoed_as_clients_match_them() {
        let mut out = Vec::new();
        write_section(&mut out, None);
        assert!(out.is_empty());
    }
}
