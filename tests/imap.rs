//! The IMAP server end to end, in process: the whole daemon on loopback ports and raw
//! sockets speaking IMAP, two connections where state is shared, mail arriving over
//! SMTP (lettre) while a session idles.

mod common;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use lnmp_bridge::config::Config;
use lnmp_bridge::daemon::{self, Running};
use lnmp_bridge::smtp::Listener;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use common::{DOMAIN, HOST};

struct Bridge {
    running: Option<Running>,
    config: Config,
    dir: tempfile::TempDir,
}

impl Bridge {
    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }
    fn imap_port(&self, tls: bool) -> u16 {
        self.running()
            .imap
            .iter()
            .find(|(t, _)| *t == tls)
            .unwrap()
            .1
            .port()
    }
    fn smtp_port(&self, kind: Listener) -> u16 {
        common::smtp_port(self.running(), kind)
    }
    async fn stop(&mut self) {
        self.running.take().unwrap().stop().await;
    }
    /// Stops the daemon and starts it again on the same data.
    async fn restart(&mut self) {
        self.stop().await;
        self.running = Some(daemon::start(&self.config).await.unwrap());
    }
}

async fn bridge(tune: impl FnOnce(&mut Config)) -> Bridge {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::loopback_config(dir.path());
    config.smtp.verify = false;
    config.imap.allow_plaintext_auth_on_loopback = true;
    tune(&mut config);
    let running = common::start_with_users(&config).await;
    Bridge {
        running: Some(running),
        config,
        dir,
    }
}

/// A raw IMAP client: sends tagged commands, reads responses with their literals.
struct Client<S> {
    io: BufReader<S>,
    n: u32,
}

/// What a command got back: untagged lines (literals inline) and the tagged line.
struct Answer {
    untagged: Vec<Vec<u8>>,
    tagged: String,
}

impl Answer {
    fn ok(&self) -> bool {
        self.tagged.split(' ').nth(1) == Some("OK")
    }
    fn status(&self) -> &str {
        self.tagged.split(' ').nth(1).unwrap_or("")
    }
    fn lines(&self) -> Vec<String> {
        self.untagged
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }
    fn find(&self, needle: &str) -> Option<String> {
        self.lines().into_iter().find(|l| l.contains(needle))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// One response line, with any literal it announces read into it.
    async fn line(&mut self) -> Vec<u8> {
        common::raw_imap::response_line(&mut self.io).await
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    async fn cmd(&mut self, text: &str) -> Answer {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.send(format!("{tag} {text}\r\n").as_bytes()).await;
        self.until(&tag).await
    }

    /// Reads up to the tagged line of `tag`.
    async fn until(&mut self, tag: &str) -> Answer {
        let mut untagged = Vec::new();
        loop {
            let line = self.line().await;
            if line.starts_with(format!("{tag} ").as_bytes()) {
                return Answer {
                    untagged,
                    tagged: String::from_utf8_lossy(&line).trim_end().to_owned(),
                };
            }
            untagged.push(line);
        }
    }

    async fn login(&mut self, user: &str) {
        let a = self.cmd(&format!("LOGIN {user} pw-of-{user}")).await;
        assert!(a.ok(), "{}", a.tagged);
    }

    async fn closed(&mut self) -> bool {
        let mut buf = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.io.read_to_end(&mut buf)).await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    }
}

async fn connect(port: u16) -> Client<TcpStream> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut c = Client {
        io: BufReader::new(tcp),
        n: 0,
    };
    let greeting = String::from_utf8(c.line().await).unwrap();
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4rev1"),
        "{greeting}"
    );
    c
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let tls =
        lnmp_bridge::relay::tls::client_config(lnmp_bridge::relay::tls::Trust::Insecure).unwrap();
    tokio_rustls::TlsConnector::from(tls)
}

/// Appends `message` to `mailbox`; returns the APPENDUID's UID.
async fn append<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Client<S>,
    mailbox: &str,
    flags: &str,
    message: &[u8],
) -> u32 {
    c.n += 1;
    let tag = format!("t{}", c.n);
    c.send(
        format!(
            "{tag} APPEND {mailbox} ({flags}) {{{}+}}\r\n",
            message.len()
        )
        .as_bytes(),
    )
    .await;
    c.send(message).await;
    c.send(b"\r\n").await;
    let a = c.until(&tag).await;
    assert!(a.ok(), "{}", a.tagged);
    let code = a.tagged.split("APPENDUID ").nth(1).unwrap();
    code.split([' ', ']']).nth(1).unwrap().parse().unwrap()
}

/// The literal after `marker` in a FETCH line.
fn literal_after(line: &[u8], marker: &str) -> Vec<u8> {
    let at = line
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap_or_else(|| panic!("{marker} in {}", String::from_utf8_lossy(line)))
        + marker.len();
    let rest = &line[at..];
    let open = rest.iter().position(|&b| b == b'{').unwrap();
    let close = rest.iter().position(|&b| b == b'}').unwrap();
    let len: usize = std::str::from_utf8(&rest[open + 1..close])
        .unwrap()
        .parse()
        .unwrap();
    rest[close + 3..close + 3 + len].to_vec()
}

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Bob <bob@example.test>\r\nTo: alice@{DOMAIN}\r\nSubject: {subject}\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn insecure_tls() -> TlsParameters {
    TlsParameters::builder(HOST.into())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap()
}

fn mx(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::None)
        .build()
}

fn mail(from: &str, to: &str, subject: &str) -> lettre::Message {
    lettre::Message::builder()
        .from(from.parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject(subject)
        .body(format!("Body of {subject}\n"))
        .unwrap()
}

#[tokio::test]
async fn login_needs_tls_unless_allowed_on_loopback() {
    let mut b = bridge(|c| c.imap.allow_plaintext_auth_on_loopback = false).await;
    let mut c = connect(b.imap_port(false)).await;
    let caps = c.cmd("CAPABILITY").await;
    let line = caps.find("* CAPABILITY").unwrap();
    assert!(
        line.contains("STARTTLS") && line.contains("LOGINDISABLED"),
        "{line}"
    );
    assert!(!line.contains("AUTH=PLAIN"), "{line}");
    let a = c.cmd("LOGIN alice pw-of-alice").await;
    assert_eq!(a.status(), "NO", "{}", a.tagged);
    assert!(a.tagged.contains("PRIVACYREQUIRED"), "{}", a.tagged);
    // Commands pipelined after STARTTLS in plaintext are dropped, not run under TLS.
    c.send(b"s1 STARTTLS\r\ns2 LOGIN alice pw-of-alice\r\n")
        .await;
    let a = c.until("s1").await;
    assert!(a.ok());
    let tcp = c.io.into_inner();
    let s = tls_connector()
        .connect(rustls_pki_types::ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    let mut t = Client {
        io: BufReader::new(s),
        n: 10,
    };
    let caps = t.cmd("CAPABILITY").await;
    let line = caps.find("* CAPABILITY").unwrap();
    assert!(
        line.contains("AUTH=PLAIN") && !line.contains("STARTTLS"),
        "{line}"
    );
    assert_eq!(t.cmd("STARTTLS").await.status(), "BAD");
    // AUTHENTICATE PLAIN with SASL-IR, then the authenticated capabilities.
    let a = t.cmd("AUTHENTICATE PLAIN AGFsaWNlAHB3LW9mLWFsaWNl").await;
    assert!(a.ok(), "{}", a.tagged);
    assert!(
        a.tagged.contains("IDLE") && a.tagged.contains("CONDSTORE"),
        "{}",
        a.tagged
    );
    // Port 993 speaks TLS from the first byte.
    let tcp = TcpStream::connect(("127.0.0.1", b.imap_port(true)))
        .await
        .unwrap();
    let s = tls_connector()
        .connect(rustls_pki_types::ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    let mut i = Client {
        io: BufReader::new(s),
        n: 0,
    };
    assert!(
        String::from_utf8(i.line().await)
            .unwrap()
            .starts_with("* OK")
    );
    // AUTHENTICATE without SASL-IR gets a continuation.
    i.send(b"a1 AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(i.line().await, b"+ \r\n");
    i.send(b"AGFsaWNlAHB3LW9mLWFsaWNl\r\n").await;
    assert!(i.until("a1").await.ok());
    b.stop().await;
}

#[tokio::test]
async fn failed_logins_are_rate_limited() {
    let mut b = bridge(|c| c.imap.auth_failures_per_user = 2).await;
    let mut c = connect(b.imap_port(false)).await;
    for _ in 0..2 {
        let a = c.cmd("LOGIN alice wrong").await;
        assert!(a.tagged.contains("AUTHENTICATIONFAILED"), "{}", a.tagged);
    }
    let a = c.cmd("LOGIN alice pw-of-alice").await;
    assert!(a.tagged.contains("UNAVAILABLE"), "{}", a.tagged);
    // bob is not locked out by alice's guesser.
    let a = c.cmd("LOGIN bob@bridge.test pw-of-bob").await;
    assert!(a.ok(), "{}", a.tagged);
    b.stop().await;
}

#[tokio::test]
async fn mailboxes_are_listed_with_special_use_and_managed() {
    let mut b = bridge(|_| {}).await;
    let mut c = connect(b.imap_port(false)).await;
    c.login("alice").await;
    let list = c.cmd("LIST \"\" \"*\"").await;
    let lines = list.lines();
    for expected in [
        "* LIST (\\HasNoChildren) \"/\" INBOX",
        "* LIST (\\HasNoChildren \\Sent) \"/\" Sent",
        "* LIST (\\HasNoChildren \\Drafts) \"/\" Drafts",
        "* LIST (\\HasNoChildren \\Trash) \"/\" Trash",
        "* LIST (\\HasNoChildren \\Junk) \"/\" Junk",
        "* LIST (\\HasNoChildren \\Archive) \"/\" Archive",
        "* LIST (\\HasNoChildren) \"/\" Requests",
    ] {
        assert!(
            lines.iter().any(|l| l.trim_end() == expected),
            "{expected} in {lines:?}"
        );
    }
    let a = c.cmd("LIST \"\" \"\"").await;
    assert_eq!(a.lines()[0].trim_end(), "* LIST (\\Noselect) \"/\" \"\"");
    // CREATE makes parents; % stops at a level; RENAME moves children.
    assert!(c.cmd("CREATE Work/2026/Q4").await.ok());
    let a = c.cmd("LIST \"\" %").await;
    assert!(
        a.find("(\\HasChildren) \"/\" Work").is_some(),
        "{:?}",
        a.lines()
    );
    let a = c.cmd("LIST Work %").await;
    assert!(a.find("\"/\" Work/2026").is_some(), "{:?}", a.lines());
    assert_eq!(c.cmd("CREATE Work").await.status(), "NO");
    assert!(c.cmd("RENAME Work Projects").await.ok());
    let a = c.cmd("LIST \"\" Projects/*").await;
    assert_eq!(a.untagged.len(), 2, "{:?}", a.lines());
    assert_eq!(
        c.cmd("DELETE Projects").await.status(),
        "NO",
        "has children"
    );
    assert!(c.cmd("DELETE Projects/2026/Q4").await.ok());
    assert_eq!(c.cmd("DELETE Sent").await.status(), "NO");
    assert_eq!(c.cmd("DELETE Nope").await.status(), "NO");
    // International names travel in modified UTF-7, or UTF-8 after ENABLE UTF8=ACCEPT.
    assert!(c.cmd("CREATE &ZeVnLIqe-").await.ok());
    assert!(
        c.cmd("LIST \"\" &ZeVnLIqe-")
            .await
            .find("&ZeVnLIqe-")
            .is_some()
    );
    assert_eq!(c.cmd("CREATE &AGE-").await.status(), "NO", "encoded ASCII");
    // LSUB and SUBSCRIBE.
    assert!(c.cmd("UNSUBSCRIBE Junk").await.ok());
    let a = c.cmd("LSUB \"\" *").await;
    assert!(
        a.find("Junk").is_none() && a.find("INBOX").is_some(),
        "{:?}",
        a.lines()
    );
    // STATUS of a mailbox.
    append(&mut c, "Archive", "\\Seen", &message("one", "1")).await;
    append(&mut c, "Archive", "", &message("two", "2")).await;
    let a = c
        .cmd("STATUS Archive (MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT)")
        .await;
    let line = a.find("* STATUS Archive").unwrap();
    assert!(
        line.contains("MESSAGES 2") && line.contains("UNSEEN 1") && line.contains("UIDNEXT 3"),
        "{line}"
    );
    let uidvalidity = line
        .split("UIDVALIDITY ")
        .nth(1)
        .unwrap()
        .split([' ', ')'])
        .next()
        .unwrap()
        .to_owned();
    // UIDVALIDITY survives a restart; a mailbox made again gets a new one.
    assert!(c.cmd("CREATE Temp").await.ok());
    let first = c
        .cmd("STATUS Temp (UIDVALIDITY)")
        .await
        .find("UIDVALIDITY")
        .unwrap();
    assert!(c.cmd("DELETE Temp").await.ok());
    assert!(c.cmd("CREATE Temp").await.ok());
    let second = c
        .cmd("STATUS Temp (UIDVALIDITY)")
        .await
        .find("UIDVALIDITY")
        .unwrap();
    assert_ne!(first, second);
    b.restart().await;
    let mut c = connect(b.imap_port(false)).await;
    c.login("alice").await;
    let a = c.cmd("STATUS Archive (UIDVALIDITY MESSAGES)").await;
    assert!(
        a.find(&format!("UIDVALIDITY {uidvalidity}")).is_some(),
        "{:?}",
        a.lines()
    );
    b.stop().await;
}

#[tokio::test]
async fn appended_mail_is_fetched_byte_for_byte_in_chunks() {
    let mut b = bridge(|_| {}).await;
    let mut c = connect(b.imap_port(false)).await;
    c.login("alice").await;
    let mut big = message("big", &"0123456789abcdef\r\n".repeat(8000));
    big.extend_from_slice(b"end\r\n");
    let uid = append(&mut c, "Drafts", "\\Draft $Label1", &big).await;
    let a = c.cmd("SELECT Drafts").await;
    assert!(a.tagged.contains("[READ-WRITE]"), "{}", a.tagged);
    for expected in [
        "* 1 EXISTS",
        "[UIDVALIDITY ",
        "[UIDNEXT 2]",
        "[HIGHESTMODSEQ ",
        "$Label1",
    ] {
        assert!(a.find(expected).is_some(), "{expected} in {:?}", a.lines());
    }
    let a = c
        .cmd(&format!(
            "UID FETCH {uid} (UID RFC822.SIZE FLAGS INTERNALDATE)"
        ))
        .await;
    let line = &a.lines()[0];
    assert!(
        line.contains(&format!("RFC822.SIZE {}", big.len())),
        "{line}"
    );
    assert!(line.contains("FLAGS (\\Draft $Label1"), "{line}");
    // Thunderbird's chunked read.
    let mut got = Vec::new();
    let mut offset = 0;
    loop {
        let a = c
            .cmd(&format!("UID FETCH {uid} (BODY.PEEK[]<{offset}.65536>)"))
            .await;
        let chunk = literal_after(&a.untagged[0], &format!("BODY[]<{offset}>"));
        if chunk.is_empty() {
            break;
        }
        offset += chunk.len();
        got.extend(chunk);
    }
    assert_eq!(got, big);
    let a = c.cmd("FETCH 1 (BODY[HEADER.FIELDS (Subject From)])").await;
    let header = literal_after(&a.untagged[0], "BODY[HEADER.FIELDS (Subject From)]");
    assert_eq!(
        header,
        b"From: Bob <bob@example.test>\r\nSubject: big\r\n\r\n"
    );
    // A non-PEEK body fetch sets \Seen and says so.
    assert!(
        a.lines().iter().any(|l| l.contains("\\Seen")),
        "{:?}",
        a.lines()
    );
    let a = c.cmd("FETCH 1 (ENVELOPE BODYSTRUCTURE)").await;
    let line = &a.lines()[0];
    assert!(line.contains("\"big\""), "{line}");
    assert!(
        line.contains("(\"text\" \"plain\" (\"charset\" \"utf-8\")"),
        "{line}"
    );
    b.stop().await;
}

#[tokio::test]
async fn mail_delivered_by_smtp_wakes_an_idling_session_within_a_second() {
    let mut b = bridge(|_| {}).await;
    let mut idler = connect(b.imap_port(false)).await;
    idler.login("alice").await;
    assert!(idler.cmd("SELECT INBOX").await.find("* 0 EXISTS").is_some());
    idler.send(b"i1 IDLE\r\n").await;
    assert_eq!(idler.line().await, b"+ idling\r\n");
    let sent = Instant::now();
    mx(b.smtp_port(Listener::Mx))
        .send(mail("carol@example.test", "alice@bridge.test", "hello"))
        .await
        .unwrap();
    let line = String::from_utf8(idler.line().await).unwrap();
    assert_eq!(line, "* 1 EXISTS\r\n");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(idler.line().await, b"* 1 RECENT\r\n");
    idler.send(b"DONE\r\n").await;
    assert!(idler.until("i1").await.ok());
    // Bridged mail is served from its raw copy: our Received line, then what was sent.
    let a = idler.cmd("FETCH 1 (FLAGS BODY.PEEK[])").await;
    let raw = literal_after(&a.untagged[0], "BODY[]");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("Received: from "), "{text}");
    assert!(
        text.contains("Subject: hello\r\n") && text.contains("Body of hello"),
        "{text}"
    );
    assert!(a.lines()[0].contains("FLAGS (\\Recent)"), "{:?}", a.lines());
    b.stop().await;
}

#[tokio::test]
async fn sessions_see_each_others_flags_and_expunges() {
    let mut b = bridge(|_| {}).await;
    let mut one = connect(b.imap_port(false)).await;
    let mut two = connect(b.imap_port(false)).await;
    one.login("alice").await;
    two.login("alice").await;
    for n in 1..=3 {
        append(&mut one, "INBOX", "", &message(&format!("m{n}"), "x")).await;
    }
    assert!(one.cmd("SELECT INBOX").await.ok());
    assert!(two.cmd("SELECT INBOX").await.ok());
    let a = one.cmd("STORE 2 +FLAGS (\\Deleted \\Flagged)").await;
    assert!(
        a.find("* 2 FETCH (FLAGS (\\Deleted \\Flagged").is_some(),
        "{:?}",
        a.lines()
    );
    let a = two.cmd("NOOP").await;
    assert!(
        a.find("* 2 FETCH (UID 2 FLAGS (\\Deleted \\Flagged")
            .is_some(),
        "{:?}",
        a.lines()
    );
    // A keyword new to the mailbox is announced in FLAGS, to both sessions.
    let a = one.cmd("STORE 3 +FLAGS ($label1)").await;
    assert!(
        a.find("* FLAGS (").is_some_and(|l| l.contains("$label1")),
        "{:?}",
        a.lines()
    );
    let a = two.cmd("NOOP").await;
    assert!(
        a.find("* FLAGS (").is_some_and(|l| l.contains("$label1")),
        "{:?}",
        a.lines()
    );
    // .SILENT says nothing to the one who stored.
    let a = one.cmd("STORE 1 +FLAGS.SILENT (\\Seen)").await;
    assert!(a.untagged.is_empty(), "{:?}", a.lines());
    // While two idles, one expunges; two hears of it at once.
    two.send(b"i1 IDLE\r\n").await;
    assert_eq!(two.line().await, b"+ idling\r\n");
    let a = one.cmd("EXPUNGE").await;
    assert!(a.find("* 2 EXPUNGE").is_some(), "{:?}", a.lines());
    let mut heard = Vec::new();
    let started = Instant::now();
    while !heard.iter().any(|l| l == "* 2 EXPUNGE\r\n") {
        heard.push(String::from_utf8(two.line().await).unwrap());
    }
    assert!(started.elapsed() < Duration::from_secs(1), "{heard:?}");
    // The other session's \Seen on message 1 came with it.
    assert!(
        heard
            .iter()
            .any(|l| l.starts_with("* 1 FETCH (UID 1 FLAGS (\\Seen)")),
        "{heard:?}"
    );
    two.send(b"DONE\r\n").await;
    assert!(two.until("i1").await.ok());
    let a = two.cmd("UID SEARCH ALL").await;
    assert_eq!(a.lines()[0].trim_end(), "* SEARCH 1 3");
    let a = two.cmd("SEARCH SEEN").await;
    assert_eq!(a.lines()[0].trim_end(), "* SEARCH 1");
    let a = two.cmd("SEARCH SUBJECT m3").await;
    assert_eq!(a.lines()[0].trim_end(), "* SEARCH 2");
    // UID EXPUNGE takes only the UIDs named.
    assert!(one.cmd("STORE 1:* +FLAGS (\\Deleted)").await.ok());
    let a = one.cmd("UID EXPUNGE 3").await;
    assert_eq!(a.lines(), vec!["* 2 EXPUNGE\r\n".to_owned()]);
    b.stop().await;
}

#[tokio::test]
async fn copy_makes_a_real_copy_and_move_takes_the_original() {
    let mut b = bridge(|_| {}).await;
    let mut c = connect(b.imap_port(false)).await;
    c.login("alice").await;
    for n in 1..=2 {
        append(
            &mut c,
            "INBOX",
            "\\Flagged",
            &message(&format!("c{n}"), "x"),
        )
        .await;
    }
    assert!(c.cmd("SELECT INBOX").await.ok());
    let a = c.cmd("COPY 1:2 Archive").await;
    assert!(a.tagged.contains("[COPYUID "), "{}", a.tagged);
    assert!(a.tagged.contains(" 1:2 1:2]"), "{}", a.tagged);
    assert!(c.cmd("COPY 1 Nowhere").await.tagged.contains("TRYCREATE"));
    let a = c.cmd("UID MOVE 2 Trash").await;
    assert!(a.find("* OK [COPYUID ").is_some(), "{:?}", a.lines());
    assert!(a.find("* 2 EXPUNGE").is_some(), "{:?}", a.lines());
    // Expunging the originals leaves the copies whole.
    assert!(c.cmd("STORE 1 +FLAGS (\\Deleted)").await.ok());
    assert!(c.cmd("CLOSE").await.ok());
    // Copies are new to every session: EXAMINE shows them \Recent without taking that.
    let a = c.cmd("EXAMINE Archive").await;
    assert!(a.tagged.contains("READ-ONLY"));
    assert!(a.find("* 2 RECENT").is_some(), "{:?}", a.lines());
    let a = c
        .cmd("FETCH 1:2 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    assert_eq!(a.untagged.len(), 2, "{:?}", a.lines());
    assert!(
        a.lines()[0].contains("\\Flagged") && a.lines()[0].contains("Subject: c1"),
        "{:?}",
        a.lines()
    );
    assert_eq!(
        c.cmd("STORE 1 +FLAGS (\\Seen)").await.status(),
        "NO",
        "read-only"
    );
    b.stop().await;
}

#[tokio::test]
async fn condstore_reports_and_guards_modseqs() {
    let mut b = bridge(|_| {}).await;
    let mut c = connect(b.imap_port(false)).await;
    c.login("alice").await;
    for n in 1..=3 {
        append(&mut c, "INBOX", "", &message(&format!("d{n}"), "x")).await;
    }
    let a = c.cmd("ENABLE CONDSTORE").await;
    assert!(a.find("* ENABLED CONDSTORE").is_some(), "{:?}", a.lines());
    let a = c.cmd("SELECT INBOX").await;
    let hms: u64 = a
        .find("HIGHESTMODSEQ")
        .unwrap()
        .split("HIGHESTMODSEQ ")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let a = c.cmd("STORE 2 +FLAGS (\\Answered)").await;
    let line = a.find("* 2 FETCH").unwrap();
    assert!(line.contains("MODSEQ ("), "{line}");
    let a = c
        .cmd(&format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})"))
        .await;
    assert_eq!(
        a.untagged.len(),
        1,
        "only message 2 changed: {:?}",
        a.lines()
    );
    assert!(a.lines()[0].starts_with("* 2 FETCH"), "{:?}", a.lines());
    // A store conditional on an old MODSEQ fails for the changed message.
    let a = c
        .cmd(&format!(
            "STORE 1:3 (UNCHANGEDSINCE {hms}) +FLAGS (\\Flagged)"
        ))
        .await;
    assert!(a.tagged.contains("[MODIFIED 2]"), "{}", a.tagged);
    let a = c.cmd(&format!("SEARCH MODSEQ {hms}")).await;
    assert!(
        a.lines()[0].starts_with("* SEARCH 1 2 3 (MODSEQ "),
        "{:?}",
        a.lines()
    );
    b.stop().await;
}

#[tokio::test]
async fn native_lnmp_mail_renders_with_its_lnmp_headers() {
    let mut b = bridge(|_| {}).await;
    // bob submits to alice: both are local, so the mail travels as native LNMP.
    let submission = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(b.smtp_port(Listener::Submission))
        .tls(Tls::Required(insecure_tls()))
        .credentials(Credentials::new("bob".into(), "pw-of-bob".into()))
        .authentication(vec![Mechanism::Plain])
        .build();
    submission
        .send(mail("bob@bridge.test", "alice@bridge.test", "native"))
        .await
        .unwrap();
    let mut c = connect(b.imap_port(false)).await;
    c.login("alice").await;
    assert!(c.cmd("SELECT INBOX").await.find("* 1 EXISTS").is_some());
    let a = c.cmd("FETCH 1 (RFC822.SIZE BODY.PEEK[])").await;
    let raw = literal_after(&a.untagged[0], "BODY[]");
    let text = String::from_utf8_lossy(&raw);
    assert!(
        a.lines()[0].contains(&format!("RFC822.SIZE {}", raw.len())),
        "{}",
        a.lines()[0]
    );
    for expected in [
        "X-LNMP-Id: ",
        "X-LNMP-Sender: ",
        "X-LNMP-Signature: valid",
        "Subject: native",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    // The From shows bob's LNMP address, so a reply goes back over LNMP.
    let bob = b.running().custody.user("bob").await.unwrap();
    assert!(text.contains(&bob.address.to_string()), "{text}");
    // The same bytes every time: clients read in chunks.
    let again = c.cmd("FETCH 1 (BODY.PEEK[])").await;
    assert_eq!(literal_after(&again.untagged[0], "BODY[]"), raw);
    b.stop().await;
}

#[tokio::test]
async fn bad_input_gets_no_or_bad_and_the_session_lives_on() {
    let mut b = bridge(|c| {
        c.imap.max_literal_bytes = 1000;
        c.imap.max_command_line = 8192;
    })
    .await;
    let mut c = connect(b.imap_port(false)).await;
    assert_eq!(c.cmd("SELECT INBOX").await.status(), "BAD", "not logged in");
    // Before login no literal may be longer than a command line.
    c.send(b"x0 LOGIN {9000}\r\n").await;
    let line = String::from_utf8(c.line().await).unwrap();
    assert!(line.starts_with("x0 NO [TOOBIG]"), "{line}");
    assert_eq!(c.cmd("FROBNICATE").await.status(), "BAD");
    c.login("alice").await;
    assert_eq!(
        c.cmd("FETCH 1 FLAGS").await.status(),
        "BAD",
        "nothing selected"
    );
    assert!(c.cmd("SELECT INBOX").await.ok());
    assert_eq!(
        c.cmd("FETCH 5 (FLAGS)").await.status(),
        "BAD",
        "no message 5"
    );
    assert_eq!(c.cmd("FETCH 0:x (FLAGS)").await.status(), "BAD");
    assert!(
        c.cmd("UID FETCH 1:4294967295 (FLAGS)").await.ok(),
        "UIDs that match nothing"
    );
    assert!(
        c.cmd("SEARCH CHARSET KOI8-R TEXT x")
            .await
            .tagged
            .contains("BADCHARSET")
    );
    // A synchronizing literal over the limit is refused before it is sent.
    c.send(b"x1 APPEND INBOX {5000}\r\n").await;
    let line = String::from_utf8(c.line().await).unwrap();
    assert!(line.starts_with("x1 NO [TOOBIG]"), "{line}");
    // Deep nesting and junk.
    let deep = format!("SEARCH {}ALL{}", "(".repeat(200), ")".repeat(200));
    let a = c.cmd(&deep).await;
    assert!(matches!(a.status(), "BAD" | "OK" | "NO"), "{}", a.tagged);
    assert!(c.cmd("NOOP").await.ok(), "the session lives on");
    // A line longer than the limit closes the connection with BYE.
    c.send(&vec![b'a'; 20_000]).await;
    let line = String::from_utf8(c.line().await).unwrap();
    assert!(line.starts_with("* BYE"), "{line}");
    assert!(c.closed().await);
    b.stop().await;
}

#[tokio::test]
async fn a_message_too_big_for_the_client_session_and_a_logout() {
    let mut b = bridge(|_| {}).await;
    let mut c = connect(b.imap_port(false)).await;
    c.login("alice").await;
    let a = c.cmd("NAMESPACE").await;
    assert_eq!(a.lines()[0], "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
    let a = c.cmd("ID (\"name\" \"test\")").await;
    assert!(a.find("* ID (\"name\" \"lnmp-bridge\"").is_some());
    assert!(c.cmd("SELECT INBOX").await.ok());
    assert!(c.cmd("UNSELECT").await.ok());
    assert_eq!(c.cmd("UNSELECT").await.status(), "BAD");
    // After ENABLE UTF8=ACCEPT, APPEND takes RFC 6855's UTF8 (~{n}) form.
    let a = c.cmd("ENABLE UTF8=ACCEPT").await;
    assert!(a.find("* ENABLED UTF8=ACCEPT").is_some(), "{:?}", a.lines());
    let msg = "Subject: Grüße\r\nFrom: a@b.test\r\n\r\nHallo\r\n".as_bytes();
    c.send(format!("u1 APPEND Drafts UTF8 (~{{{}}}\r\n", msg.len()).as_bytes())
        .await;
    assert!(c.line().await.starts_with(b"+"));
    c.send(msg).await;
    c.send(b")\r\n").await;
    let a = c.until("u1").await;
    assert!(a.tagged.contains("[APPENDUID "), "{}", a.tagged);
    let a = c.cmd("LOGOUT").await;
    assert!(a.find("* BYE").is_some() && a.ok());
    assert!(c.closed().await);
    let _ = &b.dir;
    b.stop().await;
}

/// Two daemons on one PostgreSQL database (a schema of its own): mail accepted by
/// node A's MX wakes an IDLE session on node B within a second, and a flag stored on
/// B is seen by a session on A. Skipped without LNMP_TEST_DATABASE_URL.
#[tokio::test]
async fn two_nodes_on_one_postgresql_wake_each_others_sessions() {
    let Some(base) = common::test_database_url() else {
        return;
    };
    let schema = format!("imap_{}", std::process::id());
    let url = common::fresh_pg_schema(&base, &schema).await;
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), hex::encode([7u8; 32])).unwrap();
    let node = |url: String, key: std::path::PathBuf| async move {
        bridge(move |c| {
            c.database.url = url;
            c.secrets.master_key_file = key;
        })
        .await
    };
    // Node A adds alice and bob; node B shares them through the database.
    let mut a = node(url.clone(), key.path().to_owned()).await;
    let mut b = {
        let dir = tempfile::tempdir().unwrap();
        let mut config = a.config.clone();
        config.server.data_dir = dir.path().join("data");
        let running = daemon::start(&config).await.unwrap();
        Bridge {
            running: Some(running),
            config,
            dir,
        }
    };
    let mut on_b = connect(b.imap_port(false)).await;
    on_b.login("alice").await;
    assert!(on_b.cmd("SELECT INBOX").await.ok());
    on_b.send(b"i1 IDLE\r\n").await;
    assert_eq!(on_b.line().await, b"+ idling\r\n");
    let sent = Instant::now();
    mx(a.smtp_port(Listener::Mx))
        .send(mail("carol@example.test", "alice@bridge.test", "across"))
        .await
        .unwrap();
    assert_eq!(on_b.line().await, b"* 1 EXISTS\r\n");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    on_b.send(b"DONE\r\n").await;
    on_b.until("i1").await;
    // A flag stored on B reaches an idling session on A.
    let mut on_a = connect(a.imap_port(false)).await;
    on_a.login("alice").await;
    assert!(on_a.cmd("SELECT INBOX").await.ok());
    on_a.send(b"i2 IDLE\r\n").await;
    assert_eq!(on_a.line().await, b"+ idling\r\n");
    assert!(on_b.cmd("STORE 1 +FLAGS (\\Flagged)").await.ok());
    let line = String::from_utf8(on_a.line().await).unwrap();
    assert!(
        line.starts_with("* 1 FETCH (UID 1 FLAGS (\\Flagged"),
        "{line}"
    );
    on_a.send(b"DONE\r\n").await;
    on_a.until("i2").await;
    b.stop().await;
    a.stop().await;
    common::drop_pg_schema(&base, &schema).await;
}
