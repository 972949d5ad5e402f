//! The SMTP server end to end, in process: the whole daemon on loopback ports, a DNS
//! server of our own for SPF/DKIM/DMARC, lettre as the mail client, and raw sockets for
//! what a well-behaved client never sends.

mod common;

use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use lnmp_bridge::config::Config;
use lnmp_bridge::daemon::Running;
use lnmp_bridge::lnmp::content::RawEmail;
use lnmp_bridge::lnmp::{Limits, Message, MessageContent};
use lnmp_bridge::smtp::Listener;
use lnmp_bridge::store;
use lnmp_bridge::testing::dns::{self, DnsServer, Zone};
use tokio::io::BufReader;
use tokio::net::TcpStream;

use common::raw_smtp::{Raw, raw};
use common::{DOMAIN, HOST};
const ZONE: &str = "
example.test TXT \"v=spf1 ip4:127.0.0.1 -all\"
_dmarc.example.test TXT \"v=DMARC1; p=reject\"
example.net TXT \"v=spf1 ip4:192.0.2.0/24 -all\"
_dmarc.example.net TXT \"v=DMARC1; p=reject\"
";

struct Bridge {
    running: Option<Running>,
    _dns: DnsServer,
    _dir: tempfile::TempDir,
}

impl Bridge {
    fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }
    fn port(&self, kind: Listener) -> u16 {
        common::smtp_port(self.running(), kind)
    }
    fn store(&self) -> &store::Store {
        self.running().custody.store()
    }
    async fn user(&self, name: &str) -> lnmp_bridge::custody::UserInfo {
        self.running().custody.user(name).await.unwrap()
    }
    async fn stop(mut self) {
        self.running.take().unwrap().stop().await;
    }
}

async fn bridge(tune: impl FnOnce(&mut Config)) -> Bridge {
    bridge_with_zone("", tune).await
}

/// A bridge whose DNS also answers the zone lines in `extra`.
async fn bridge_with_zone(extra: &str, tune: impl FnOnce(&mut Config)) -> Bridge {
    let zone = Zone::parse(&format!("{ZONE}\n{extra}")).unwrap();
    let dns = dns::serve(zone, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::loopback_config(dir.path());
    config.dns.nameservers = vec![dns.addr().to_string()];
    config.dns.timeout_seconds = 2;
    tune(&mut config);
    let running = common::start_with_users(&config).await;
    Bridge {
        running: Some(running),
        _dns: dns,
        _dir: dir,
    }
}

/// The user's INBOX messages, opened with their key.
async fn inbox_of(b: &Bridge, user: &str, mailbox: &str) -> Vec<(Message, MessageContent)> {
    let custody = &b.running().custody;
    let info = custody.user(user).await.unwrap();
    let identity = custody.identity(user).await.unwrap();
    let rows = store::mail::list(b.store(), info.id, mailbox)
        .await
        .unwrap();
    let bodies = store::inbox::list(b.store(), info.id, 0).await.unwrap();
    let mut out = Vec::new();
    for row in rows {
        let m = bodies
            .iter()
            .map(|j| Message::from_json(j.as_bytes(), &Limits::default()).unwrap())
            .find(|m| m.id.to_hex() == row.message_id)
            .expect("every filed message is in the inbox");
        let content = m.open(&identity, &Limits::default()).unwrap();
        out.push((m, content));
    }
    out
}

/// A plain text message.
fn mail(from: &str, to: &str, subject: &str, body: &str) -> lettre::Message {
    lettre::Message::builder()
        .from(from.parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject(subject)
        .body(body.to_owned())
        .unwrap()
}

fn insecure_tls() -> TlsParameters {
    TlsParameters::builder(HOST.into())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap()
}

fn mx_transport(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::None)
        .hello_name(lettre::transport::smtp::extension::ClientId::Domain(
            "mail.example.test".into(),
        ))
        .build()
}

#[tokio::test]
async fn mail_from_the_email_world_reaches_the_users_inbox_sealed() {
    let b = bridge(|_| {}).await;
    let pdf = vec![0x25u8; 5000];
    let email = lettre::Message::builder()
        .from("Bob Sender <bob@example.test>".parse::<Mailbox>().unwrap())
        .to(format!("alice@{DOMAIN}").parse::<Mailbox>().unwrap())
        .subject("Quarterly numbers ✓")
        .message_id(Some("<q1@example.test>".into()))
        .in_reply_to("<q0@example.test>".into())
        .references("<root@example.test> <q0@example.test>".into())
        .multipart(
            MultiPart::mixed()
                .multipart(MultiPart::alternative_plain_html(
                    "Plain numbers".to_owned(),
                    "<p>HTML numbers</p>".to_owned(),
                ))
                .singlepart(
                    Attachment::new("report.pdf".into())
                        .body(pdf.clone(), ContentType::parse("application/pdf").unwrap()),
                ),
        )
        .unwrap();
    let sent = email.formatted();
    mx_transport(b.port(Listener::Mx))
        .send(email)
        .await
        .unwrap();

    let inbox = inbox_of(&b, "alice", "INBOX").await;
    assert_eq!(inbox.len(), 1);
    let (m, c) = &inbox[0];
    assert_eq!(c.subject.as_deref(), Some("Quarterly numbers ✓"));
    assert_eq!(c.body.trim(), "Plain numbers");
    assert_eq!(
        c.body_html.as_deref().map(str::trim),
        Some("<p>HTML numbers</p>")
    );
    assert_eq!(c.thread_id.as_deref(), Some("<root@example.test>"));
    assert_eq!(c.reply_to.as_deref(), Some("<q0@example.test>"));

    // The sender's identity is derived from its address, and remembered for replies.
    let bob_key = b
        .running()
        .custody
        .legacy_identity("bob@example.test")
        .public_key();
    assert_eq!(m.from, bob_key);
    assert_eq!(
        store::legacy::address_of(b.store(), &bob_key.to_hex())
            .await
            .unwrap()
            .as_deref(),
        Some("bob@example.test")
    );

    // Bridged mail carries its raw bytes and the verdict.
    let email_part = c.email.as_ref().expect("bridged mail is marked as such");
    let RawEmail::Inline(raw) = &email_part.raw else {
        panic!("a small message travels inline");
    };
    assert!(raw.starts_with(b"Received: from mail.example.test ([127.0.0.1])"));
    let at = raw.len() - sent.len() - 2;
    assert_eq!(
        &raw[at..],
        [&sent[..], b"\r\n"].concat(),
        "the message as sent follows our Received header"
    );
    assert!(raw[..at].starts_with(b"Received:") && raw[..at].ends_with(b"\r\n"));
    let ar = email_part.authentication_results.as_deref().unwrap();
    assert!(ar.starts_with(HOST), "{ar}");
    assert!(ar.contains("spf=pass"), "{ar}");
    assert!(ar.contains("dmarc=pass"), "{ar}");
    assert_eq!(email_part.mail_from.as_deref(), Some("bob@example.test"));

    // The attachment is an encrypted blob served over HTTP by its CID.
    assert_eq!(c.attachments.len(), 1);
    let a = &c.attachments[0];
    assert_eq!(
        (a.filename.as_str(), a.mime_type.as_str(), a.size),
        ("report.pdf", "application/pdf", 5000)
    );
    let url = format!("https://{}/ipfs/{}", b.running().http, a.cid);
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let blob = http.get(&url).send().await.unwrap();
    assert_eq!(blob.status(), 200);
    let blob = blob.bytes().await.unwrap();
    assert_eq!(&*a.open(&blob).unwrap(), &pdf[..]);
    let missing = http
        .get(format!(
            "https://{}/ipfs/{}",
            b.running().http,
            lnmp_bridge::lnmp::BlobId::of(b"x")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let metrics = common::fetch_text(&http, &format!("https://{}/metrics", b.running().http)).await;
    assert!(
        metrics.contains("lnmp_bridge_smtp_messages_total{listener=\"mx\",result=\"accepted\"} 1"),
        "{metrics}"
    );
    b.stop().await;
}

#[tokio::test]
async fn dmarc_reject_is_followed_and_failures_can_be_junked() {
    let b = bridge(|_| {}).await;
    let spoof = |from: &str| mail(from, &format!("alice@{DOMAIN}"), "spoof", "x");
    // example.net allows only 192.0.2.0/24 and publishes p=reject.
    let err = mx_transport(b.port(Listener::Mx))
        .send(spoof("ceo@example.net"))
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("DMARC"), "{err}");
    assert!(inbox_of(&b, "alice", "INBOX").await.is_empty());
    b.stop().await;

    let b = bridge(|c| c.smtp.dmarc_failure = lnmp_bridge::config::DmarcFailure::Junk).await;
    mx_transport(b.port(Listener::Mx))
        .send(spoof("ceo@example.net"))
        .await
        .unwrap();
    assert!(inbox_of(&b, "alice", "INBOX").await.is_empty());
    let junk = inbox_of(&b, "alice", "Junk").await;
    assert_eq!(junk.len(), 1);
    let ar = junk[0]
        .1
        .email
        .as_ref()
        .unwrap()
        .authentication_results
        .clone()
        .unwrap();
    assert!(ar.contains("spf=fail") && ar.contains("dmarc=fail"), "{ar}");
    b.stop().await;
}

fn submission(
    b: &Bridge,
    user: &str,
    password: &str,
    implicit: bool,
) -> AsyncSmtpTransport<Tokio1Executor> {
    let (port, tls) = if implicit {
        (b.port(Listener::Submissions), Tls::Wrapper(insecure_tls()))
    } else {
        (b.port(Listener::Submission), Tls::Required(insecure_tls()))
    };
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(tls)
        .credentials(Credentials::new(user.into(), password.into()))
        .authentication(vec![Mechanism::Plain])
        .build()
}

#[tokio::test]
async fn users_submit_to_local_users_and_to_the_email_world() {
    let b = bridge(|_| {}).await;
    let alice_lnmp = b.user("alice").await.address.to_string();
    for (implicit, subject) in [(false, "over STARTTLS"), (true, "over implicit TLS")] {
        let email = lettre::Message::builder()
            .from(
                format!("Alice <alice@{DOMAIN}>")
                    .parse::<Mailbox>()
                    .unwrap(),
            )
            .to(format!("bob@{DOMAIN}").parse::<Mailbox>().unwrap())
            .cc("carol@elsewhere.example".parse::<Mailbox>().unwrap())
            .subject(subject)
            .singlepart(SinglePart::plain("hello Bob".to_owned()))
            .unwrap();
        submission(&b, &format!("alice@{DOMAIN}"), "pw-of-alice", implicit)
            .send(email)
            .await
            .unwrap();
    }
    let bob = inbox_of(&b, "bob", "INBOX").await;
    assert_eq!(bob.len(), 2);
    let alice_key = b.user("alice").await.pubkey;
    assert!(
        bob.iter()
            .all(|(m, c)| m.from == alice_key && c.email.is_none())
    );
    assert_eq!(bob[1].1.subject.as_deref(), Some("over implicit TLS"));
    assert_eq!(bob[0].1.body.trim(), "hello Bob");

    let queued = store::outbound::list(b.store(), true).await.unwrap();
    assert_eq!(queued.len(), 2);
    assert!(
        queued
            .iter()
            .all(|q| q.recipient == "carol@elsewhere.example"
                && q.mail_from == format!("alice@{DOMAIN}"))
    );

    // Her LNMP address is hers too, as an envelope and header sender.
    let email = mail(
        &alice_lnmp,
        &format!("bob@{DOMAIN}"),
        "from my LNMP address",
        "x",
    );
    submission(&b, "alice", "pw-of-alice", false)
        .send(email)
        .await
        .unwrap();

    // Someone else's From is refused.
    let forged = mail(
        &format!("bob@{DOMAIN}"),
        &format!("bob@{DOMAIN}"),
        "forged",
        "x",
    );
    let err = submission(&b, "alice", "pw-of-alice", false)
        .send(forged)
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert_eq!(inbox_of(&b, "bob", "INBOX").await.len(), 3);

    // A wrong password is refused.
    let email = mail(
        &format!("alice@{DOMAIN}"),
        &format!("bob@{DOMAIN}"),
        "x",
        "x",
    );
    let err = submission(&b, "alice", "wrong", false)
        .send(email)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("535") || err.is_permanent(),
        "{err}"
    );
    b.stop().await;
}

async fn tls_upgrade(r: Raw<TcpStream>) -> Raw<tokio_rustls::client::TlsStream<TcpStream>> {
    let tls =
        lnmp_bridge::relay::tls::client_config(lnmp_bridge::relay::tls::Trust::Insecure).unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls);
    let tcp = r.io.into_inner();
    let s = connector
        .connect(rustls_pki_types::ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    Raw {
        io: BufReader::new(s),
    }
}

#[tokio::test]
async fn the_mx_is_no_open_relay_whatever_the_address_trick() {
    let b = bridge(|_| {}).await;
    let mut s = raw(b.port(Listener::Mx)).await;
    assert_eq!(s.cmd("EHLO client.example.test").await.0, 250);
    assert_eq!(s.cmd("MAIL FROM:<bob@example.test>").await.0, 250);
    let refused = [
        ("RCPT TO:<victim@elsewhere.example>", 554, "5.7.1"),
        (
            "RCPT TO:<victim%elsewhere.example@bridge.test>",
            550,
            "5.1.1",
        ),
        (
            "RCPT TO:<\"victim@elsewhere.example\"@bridge.test>",
            550,
            "5.1.1",
        ),
        (
            "RCPT TO:<@bridge.test:victim@elsewhere.example>",
            554,
            "5.7.1",
        ),
        (
            "RCPT TO:<victim!elsewhere.example@bridge.test>",
            550,
            "5.1.1",
        ),
        (
            "RCPT TO:<victim@elsewhere.example@bridge.test>",
            501,
            "5.1.3",
        ),
        // smtp-proto takes no address literals at all.
        ("RCPT TO:<victim@[192.0.2.1]>", 501, "5.1.3"),
        ("RCPT TO:<nobody@bridge.test>", 550, "5.1.1"),
        (
            "RCPT TO:<bob@elsewhere.example#x1y2z3@relay.example>",
            501,
            "5.1.3",
        ),
        ("RCPT TO:<alice#zzzzzz@bridge.test>", 550, "5.1.1"),
    ];
    for (cmd, code, status) in refused {
        let (c, text) = s.cmd(cmd).await;
        assert_eq!(c, code, "{cmd}: {text}");
        assert!(text.contains(status), "{cmd}: {text}");
    }
    // Local users in every spelling are taken; the session lives on after the refusals.
    let alice = b.user("alice").await.address.to_string();
    for ok in [
        format!("RCPT TO:<alice@{DOMAIN}>"),
        format!("RCPT TO:<Alice+lists@{DOMAIN}>"),
        format!("RCPT TO:<{alice}>"),
        "RCPT TO:<postmaster>".into(),
        format!("RCPT TO:<@relay.example:bob@{DOMAIN}>"),
    ] {
        let (c, text) = s.cmd(&ok).await;
        assert_eq!(c, 250, "{ok}: {text}");
    }
    assert_eq!(s.cmd("QUIT").await.0, 221);
    b.stop().await;
}

#[tokio::test]
async fn smuggled_end_of_data_is_refused_and_the_session_goes_on() {
    let b = bridge(|_| {}).await;
    let mut s = raw(b.port(Listener::Mx)).await;
    s.cmd("EHLO client.example.test").await;
    assert_eq!(s.cmd("MAIL FROM:<bob@example.test>").await.0, 250);
    assert_eq!(s.cmd(&format!("RCPT TO:<alice@{DOMAIN}>")).await.0, 250);
    assert_eq!(s.cmd("DATA").await.0, 354);
    s.send(
        format!(
            "From: bob@example.test\r\nSubject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<evil@example.test>\r\nRCPT TO:<bob@{DOMAIN}>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
        )
        .as_bytes(),
    )
    .await;
    let (code, text) = s.reply().await;
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("bare"), "{text}");
    // Nothing after the bare LF was read as commands, and the session still works.
    assert_eq!(s.cmd("RSET").await.0, 250);
    assert_eq!(s.cmd("MAIL FROM:<bob@example.test>").await.0, 250);
    assert_eq!(s.cmd(&format!("RCPT TO:<alice@{DOMAIN}>")).await.0, 250);
    assert_eq!(s.cmd("DATA").await.0, 354);
    s.send(b"From: bob@example.test\r\nSubject: fine\r\n\r\n..dot\r\n.\r\n")
        .await;
    assert_eq!(s.reply().await.0, 250);
    let inbox = inbox_of(&b, "alice", "INBOX").await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].1.subject.as_deref(), Some("fine"));
    assert_eq!(inbox[0].1.body.trim(), ".dot");
    assert!(inbox_of(&b, "bob", "INBOX").await.is_empty());

    // LF . CRLF is no end marker either: what follows stays inside the refused message.
    assert_eq!(s.cmd("MAIL FROM:<bob@example.test>").await.0, 250);
    assert_eq!(s.cmd(&format!("RCPT TO:<alice@{DOMAIN}>")).await.0, 250);
    assert_eq!(s.cmd("DATA").await.0, 354);
    s.send(
        format!(
            "Subject: outer\r\n\r\nouter\n.\r\nMAIL FROM:<bob@example.test>\r\nRCPT TO:<bob@{DOMAIN}>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(s.reply().await.0, 550);
    // A bare LF inside a command line never makes two commands of it.
    let (code, text) = s
        .cmd(&format!(
            "MAIL FROM:<bob@example.test>\nRCPT TO:<bob@{DOMAIN}>"
        ))
        .await;
    assert_eq!(code, 500, "{text}");
    assert_eq!(s.cmd("DATA").await.0, 503, "no transaction was started");
    assert_eq!(s.cmd("NOOP").await.0, 250);
    assert!(inbox_of(&b, "bob", "INBOX").await.is_empty());
    b.stop().await;

    // With normalize on, the same payload is one message with CRLF line ends.
    let b = bridge(|c| c.smtp.normalize_bare_newlines = true).await;
    let mut s = raw(b.port(Listener::Mx)).await;
    s.cmd("EHLO client.example.test").await;
    s.cmd("MAIL FROM:<bob@example.test>").await;
    s.cmd(&format!("RCPT TO:<alice@{DOMAIN}>")).await;
    s.cmd("DATA").await;
    s.send(
        format!(
            "From: bob@example.test\nSubject: one\n\nhello\n.\nRCPT TO:<bob@{DOMAIN}>\r\n.\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(s.reply().await.0, 250);
    let inbox = inbox_of(&b, "alice", "INBOX").await;
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].1.body.contains("RCPT TO"));
    assert!(inbox_of(&b, "bob", "INBOX").await.is_empty());
    b.stop().await;
}

#[tokio::test]
async fn starttls_drops_pipelined_plaintext_and_auth_needs_tls() {
    let b = bridge(|_| {}).await;
    let mut s = raw(b.port(Listener::Submission)).await;
    let (_, ehlo) = s.cmd("EHLO client").await;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(s.cmd("AUTH PLAIN AGFsaWNlAHB3LW9mLWFsaWNl").await.0, 538);
    assert_eq!(s.cmd("MAIL FROM:<alice@bridge.test>").await.0, 530);
    // A command pipelined behind STARTTLS in the clear must not run after the handshake.
    s.send(b"STARTTLS\r\nMAIL FROM:<alice@bridge.test>\r\n")
        .await;
    assert_eq!(s.reply().await.0, 220);
    let mut t = tls_upgrade(s).await;
    // The first thing read over TLS is the EHLO reply, not an answer to the injected MAIL.
    let (code, ehlo) = t.cmd("EHLO client").await;
    assert_eq!(code, 250, "{ehlo}");
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(t.cmd("MAIL FROM:<alice@bridge.test>").await.0, 530);
    // AUTH LOGIN, step by step.
    assert_eq!(t.cmd("AUTH LOGIN").await.0, 334);
    assert_eq!(t.cmd("YWxpY2U=").await.0, 334);
    assert_eq!(t.cmd("cHctb2YtYWxpY2U=").await.0, 235);
    assert_eq!(t.cmd("MAIL FROM:<bob@bridge.test>").await.0, 550);
    assert_eq!(t.cmd("MAIL FROM:<alice@bridge.test>").await.0, 250);
    assert_eq!(t.cmd("QUIT").await.0, 221);
    b.stop().await;
}

#[tokio::test]
async fn auth_failures_are_rate_limited_per_user_and_per_ip() {
    let b = bridge(|c| {
        c.smtp.allow_plaintext_auth_on_loopback = true;
        c.smtp.auth_failures_per_user = 3;
        c.smtp.auth_failures_per_ip = 5;
    })
    .await;
    let plain = |u: &str, p: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("\0{u}\0{p}"))
    };
    let mut s = raw(b.port(Listener::Submission)).await;
    s.cmd("EHLO client").await;
    for _ in 0..3 {
        assert_eq!(
            s.cmd(&format!("AUTH PLAIN {}", plain("alice", "bad")))
                .await
                .0,
            535
        );
    }
    // Alice's budget is spent: even the right password waits now.
    let (c, text) = s
        .cmd(&format!("AUTH PLAIN {}", plain("alice", "pw-of-alice")))
        .await;
    assert_eq!(c, 454, "{text}");
    // Bob is still fine from this IP, until the IP's budget runs out too.
    assert_eq!(
        s.cmd(&format!("AUTH PLAIN {}", plain("bob", "bad")))
            .await
            .0,
        535
    );
    assert_eq!(
        s.cmd(&format!("AUTH PLAIN {}", plain("bob", "bad")))
            .await
            .0,
        535
    );
    assert_eq!(
        s.cmd(&format!("AUTH PLAIN {}", plain("bob", "pw-of-bob")))
            .await
            .0,
        454
    );
    b.stop().await;
}

#[tokio::test]
async fn bad_input_gets_the_right_code_and_the_session_lives_on() {
    let b = bridge(|c| {
        c.smtp.max_message_bytes = 4096;
        c.smtp.max_recipients = 2;
        c.smtp.max_command_line = 512;
    })
    .await;
    let mut s = raw(b.port(Listener::Mx)).await;
    assert_eq!(s.cmd("MAIL FROM:<bob@example.test>").await.0, 503);
    let (_, ehlo) = s.cmd("EHLO client.example.test").await;
    for cap in [
        "PIPELINING",
        "SIZE 4096",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "STARTTLS",
        "CHUNKING",
    ] {
        assert!(ehlo.contains(cap), "{cap} missing from {ehlo}");
    }
    assert!(!ehlo.contains("AUTH"), "no AUTH on the MX: {ehlo}");
    assert_eq!(s.cmd("AUTH PLAIN AGFsaWNlAHB3").await.0, 503);
    assert_eq!(s.cmd("FROBNICATE").await.0, 500);
    assert_eq!(s.cmd(&format!("NOOP {}", "x".repeat(600))).await.0, 500);
    assert_eq!(s.cmd("MAIL FROM:<not an address>").await.0, 501);
    assert_eq!(
        s.cmd("MAIL FROM:<bob@example.test> SIZE=999999").await.0,
        552
    );
    assert_eq!(s.cmd("MAIL FROM:<bob@example.test> FOO=BAR").await.0, 555);
    assert_eq!(s.cmd("RCPT TO:<alice@bridge.test>").await.0, 503);
    assert_eq!(s.cmd("DATA").await.0, 503);
    assert_eq!(s.cmd("VRFY alice").await.0, 252);
    assert_eq!(
        s.cmd("MAIL FROM:<bob@example.test> SMTPUTF8 BODY=8BITMIME")
            .await
            .0,
        250
    );
    assert_eq!(s.cmd("MAIL FROM:<bob@example.test>").await.0, 503);
    assert_eq!(s.cmd("DATA").await.0, 554);
    assert_eq!(s.cmd("RCPT TO:<alice@bridge.test>").await.0, 250);
    assert_eq!(s.cmd("RCPT TO:<bob@bridge.test>").await.0, 250);
    assert_eq!(s.cmd("RCPT TO:<alice@bridge.test>").await.0, 452);
    assert_eq!(s.cmd("DATA").await.0, 354);
    s.send(
        format!(
            "From: bob@example.test\r\nSubject: small\r\n\r\n{}\r\n.\r\n",
            "y".repeat(900)
        )
        .as_bytes(),
    )
    .await;
    let (code, text) = s.reply().await;
    assert_eq!(code, 250, "{text}");
    b.stop().await;

    let b = bridge(|c| c.smtp.max_message_bytes = 4096).await;
    let mut s = raw(b.port(Listener::Mx)).await;
    s.cmd("EHLO client.example.test").await;
    s.cmd("MAIL FROM:<bob@example.test>").await;
    s.cmd("RCPT TO:<alice@bridge.test>").await;
    s.cmd("DATA").await;
    s.send(
        format!(
            "Subject: big\r\n\r\n{}.\r\n",
            format!("{}\r\n", "y".repeat(900)).repeat(6)
        )
        .as_bytes(),
    )
    .await;
    let (code, text) = s.reply().await;
    assert_eq!((code, text.contains("5.3.4")), (552, true), "{text}");
    // A line over the data line limit.
    s.cmd("MAIL FROM:<bob@example.test>").await;
    s.cmd("RCPT TO:<alice@bridge.test>").await;
    s.cmd("DATA").await;
    s.send(format!("Subject: long\r\n\r\n{}\r\n.\r\n", "z".repeat(9000)).as_bytes())
        .await;
    assert_eq!(s.reply().await.0, 550);
    // BDAT, in two chunks, the second LAST.
    s.cmd("MAIL FROM:<bob@example.test>").await;
    s.cmd("RCPT TO:<alice@bridge.test>").await;
    let body = b"From: bob@example.test\r\nSubject: chunked\r\n\r\nin two parts\r\n";
    s.send(b"BDAT 20\r\n").await;
    s.send(&body[..20]).await;
    assert_eq!(s.reply().await.0, 250);
    s.send(format!("BDAT {} LAST\r\n", body.len() - 20).as_bytes())
        .await;
    s.send(&body[20..]).await;
    let (code, text) = s.reply().await;
    assert_eq!(code, 250, "{text}");
    let inbox = inbox_of(&b, "alice", "INBOX").await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].1.subject.as_deref(), Some("chunked"));
    // Too many errors end the session with 421.
    for _ in 0..30 {
        s.send(b"BOGUS\r\n").await;
    }
    let mut last = 0;
    for _ in 0..30 {
        let (c, _) = s.reply().await;
        last = c;
        if c == 421 {
            break;
        }
    }
    assert_eq!(last, 421);
    assert!(s.closed().await);
    b.stop().await;
}

#[tokio::test]
async fn connections_per_ip_are_capped() {
    let b = bridge(|c| c.smtp.max_connections_per_ip = 2).await;
    let port = b.port(Listener::Mx);
    let _one = raw(port).await;
    let _two = raw(port).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut third = Raw {
        io: BufReader::new(tcp),
    };
    let (code, text) = third.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(third.closed().await);
    b.stop().await;
}

#[tokio::test]
async fn users_write_to_lnmp_addresses_elsewhere_through_the_relay_outbox() {
    // Bob's domain runs its own bridge with a plain ws:// relay on loopback.
    let relay_port = common::free_port();
    let other = bridge(|c| {
        c.server.domain = "other.test".into();
        c.server.hostname = "mx.other.test".into();
        c.relay.listen = format!("127.0.0.1:{relay_port}");
        c.relay.tls = false;
        c.relay.public_url = format!("ws://127.0.0.1:{relay_port}");
    })
    .await;
    let other_http = other.running().http;
    let other_cert = other._dir.path().join("data/tls/cert.pem");
    assert!(other_cert.exists());
    let b = bridge(|c| {
        c.relay_client.lookup_base = format!("https://localhost:{}", other_http.port());
        c.relay_client.ca_file = other_cert.clone();
    })
    .await;
    let bob = other.user("bob").await;
    let to = bob.address.to_string();
    assert!(to.contains('#') && to.ends_with("@other.test"), "{to}");

    let email = mail(
        &format!("alice@{DOMAIN}"),
        &to,
        "across domains",
        "hello over LNMP",
    );
    submission(&b, "alice", "pw-of-alice", false)
        .send(email)
        .await
        .unwrap();

    // The outbox publishes to bob's relay; his bridge keeps it in his inbox.
    let identity = other.running().custody.identity("bob").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let content = loop {
        let got = store::inbox::list(other.store(), bob.id, 0).await.unwrap();
        if let Some(json) = got.first() {
            let m = Message::from_json(json.as_bytes(), &Limits::default()).unwrap();
            assert_eq!(m.from, b.user("alice").await.pubkey);
            break m.open(&identity, &Limits::default()).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached bob's relay"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(content.subject.as_deref(), Some("across domains"));
    assert_eq!(content.body.trim(), "hello over LNMP");
    assert!(content.email.is_none(), "a user's own mail is native LNMP");

    // A wrong checksum or an unknown name is refused at RCPT, naming why.
    let (name, _) = to.split_once('#').unwrap();
    let mut s = raw(b.port(Listener::Submission)).await;
    s.cmd("EHLO client").await;
    s.cmd("STARTTLS").await;
    let mut t = tls_upgrade(s).await;
    t.cmd("EHLO client").await;
    assert_eq!(t.cmd("AUTH PLAIN AGFsaWNlAHB3LW9mLWFsaWNl").await.0, 235);
    assert_eq!(t.cmd(&format!("MAIL FROM:<alice@{DOMAIN}>")).await.0, 250);
    let (code, text) = t.cmd(&format!("RCPT TO:<{name}#aaaaaa@other.test>")).await;
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("checksum"), "{text}");
    let (code, text) = t.cmd("RCPT TO:<nobody#aaaaaa@other.test>").await;
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("no such user"), "{text}");
    b.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn without_the_embedded_relay_local_mail_is_queued_for_the_users_relay() {
    let b = bridge(|c| {
        c.relay.enabled = false;
        c.relay.public_url = "wss://relay.elsewhere.example".into();
    })
    .await;
    assert!(b.running().relay.is_none());
    let email = mail(
        "bob@example.test",
        &format!("alice@{DOMAIN}"),
        "via the outbox",
        "x",
    );
    mx_transport(b.port(Listener::Mx))
        .send(email)
        .await
        .unwrap();
    let inbox = inbox_of(&b, "alice", "INBOX").await;
    assert_eq!(inbox.len(), 1);
    let (m, _) = &inbox[0];
    assert_eq!(m.relays, vec!["wss://relay.elsewhere.example".to_owned()]);
    let state = store::outbox::state(b.store(), &m.id.to_hex())
        .await
        .unwrap();
    assert!(state.is_some(), "queued for the users' relay");
    b.stop().await;
}

#[tokio::test]
async fn dkim_signed_mail_passes_dmarc_and_a_tampered_copy_is_refused() {
    use mail_auth::common::crypto::Ed25519Key;
    use mail_auth::common::headers::HeaderWriter as _;
    use mail_auth::dkim::DkimSigner;

    // example.org publishes an Ed25519 DKIM key and p=reject, and no SPF at all: only
    // an aligned DKIM signature can pass DMARC.
    let seed = [7u8; 32];
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let public = ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec();
    let record = {
        use base64::Engine;
        format!(
            "ed._domainkey.example.org TXT \"v=DKIM1; k=ed25519; p={}\"\n_dmarc.example.org TXT \"v=DMARC1; p=reject\"",
            base64::engine::general_purpose::STANDARD.encode(&public)
        )
    };
    let b = bridge_with_zone(&record, |_| {}).await;
    let signer =
        DkimSigner::from_key(Ed25519Key::from_seed_and_public_key(&seed, &public).unwrap())
            .domain("example.org")
            .selector("ed")
            .headers(["From", "To", "Subject"]);
    let body = format!(
        "From: news@example.org\r\nTo: alice@{DOMAIN}\r\nSubject: signed\r\n\r\nsigned body\r\n"
    );
    let signed = format!(
        "{}{body}",
        signer.sign(body.as_bytes()).unwrap().to_header()
    );
    let send = |data: String| {
        let port = b.port(Listener::Mx);
        async move {
            let mut s = raw(port).await;
            s.cmd("EHLO mail.example.org").await;
            assert_eq!(s.cmd("MAIL FROM:<bounce@example.org>").await.0, 250);
            assert_eq!(s.cmd(&format!("RCPT TO:<alice@{DOMAIN}>")).await.0, 250);
            assert_eq!(s.cmd("DATA").await.0, 354);
            s.send(format!("{data}.\r\n").as_bytes()).await;
            s.reply().await
        }
    };
    let (code, text) = send(signed.clone()).await;
    assert_eq!(code, 250, "{text}");
    let inbox = inbox_of(&b, "alice", "INBOX").await;
    let ar = inbox[0]
        .1
        .email
        .as_ref()
        .unwrap()
        .authentication_results
        .clone()
        .unwrap();
    assert!(
        ar.contains("dkim=pass") && ar.contains("header.d=example.org"),
        "{ar}"
    );
    assert!(ar.contains("dmarc=pass"), "{ar}");

    let tampered = signed.replace("signed body", "changed body");
    let (code, text) = send(tampered).await;
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("DMARC"), "{text}");
    assert_eq!(inbox_of(&b, "alice", "INBOX").await.len(), 1);
    b.stop().await;
}

#[tokio::test]
async fn to_and_cc_share_one_message_and_bcc_keys_stay_hidden() {
    let b = bridge(|_| {}).await;
    for name in ["carol", "dave"] {
        b.running()
            .custody
            .add_user(name, &format!("pw-of-{name}"))
            .await
            .unwrap();
    }
    let email = lettre::Message::builder()
        .from(format!("alice@{DOMAIN}").parse::<Mailbox>().unwrap())
        .to(format!("bob@{DOMAIN}").parse::<Mailbox>().unwrap())
        .cc(format!("Carol <carol@{DOMAIN}>")
            .parse::<Mailbox>()
            .unwrap())
        .bcc(format!("dave@{DOMAIN}").parse::<Mailbox>().unwrap())
        .subject("group")
        .body("to all of you".to_owned())
        .unwrap();
    submission(&b, "alice", "pw-of-alice", false)
        .send(email)
        .await
        .unwrap();
    let bob = inbox_of(&b, "bob", "INBOX").await;
    let carol = inbox_of(&b, "carol", "INBOX").await;
    let dave = inbox_of(&b, "dave", "INBOX").await;
    assert_eq!((bob.len(), carol.len(), dave.len()), (1, 1, 1));
    let shared = &bob[0].0;
    assert_eq!(carol[0].0.id, shared.id, "To and Cc get the same message");
    let (bob_key, carol_key, dave_key) = (
        b.user("bob").await.pubkey,
        b.user("carol").await.pubkey,
        b.user("dave").await.pubkey,
    );
    assert_eq!(shared.to, vec![bob_key, carol_key]);
    assert_ne!(dave[0].0.id, shared.id);
    assert_eq!(
        dave[0].0.to,
        vec![dave_key],
        "a Bcc copy names only its reader"
    );
    assert_eq!(dave[0].1.subject.as_deref(), Some("group"));
    b.stop().await;
}

#[tokio::test]
async fn envelopes_and_headers_that_hide_something_are_refused() {
    let b = bridge(|_| {}).await;
    let mut s = raw(b.port(Listener::Mx)).await;
    s.cmd("EHLO mail.example.test").await;
    // Parameters of extensions we do not offer.
    assert_eq!(s.cmd("MAIL FROM:<bob@example.test> RET=FULL").await.0, 555);
    assert_eq!(
        s.cmd("MAIL FROM:<bob@example.test> REQUIRETLS").await.0,
        555
    );
    assert_eq!(s.cmd("MAIL FROM:<bob@example.test>").await.0, 250);
    assert_eq!(
        s.cmd(&format!("RCPT TO:<alice@{DOMAIN}> NOTIFY=NEVER"))
            .await
            .0,
        555
    );
    assert_eq!(s.cmd("RCPT TO:<>").await.0, 501);
    // The same user twice, spelled two ways, gets one copy.
    assert_eq!(s.cmd(&format!("RCPT TO:<alice@{DOMAIN}>")).await.0, 250);
    assert_eq!(s.cmd(&format!("RCPT TO:<Alice+x@{DOMAIN}>")).await.0, 250);
    // A second From field is how a forger shows one sender and gets another checked.
    assert_eq!(s.cmd("DATA").await.0, 354);
    s.send(b"From: ceo@example.net\r\nFrom: bob@example.test\r\nSubject: two\r\n\r\nx\r\n.\r\n")
        .await;
    let (code, text) = s.reply().await;
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("more than one From"), "{text}");
    s.cmd("MAIL FROM:<bob@example.test>").await;
    s.cmd(&format!("RCPT TO:<alice@{DOMAIN}>")).await;
    s.cmd("DATA").await;
    s.send(b"From: ceo@example.net, bob@example.test\r\nSubject: two domains\r\n\r\nx\r\n.\r\n")
        .await;
    assert_eq!(s.reply().await.0, 550);
    // A refused BDAT chunk never becomes part of a message.
    s.cmd("MAIL FROM:<bob@example.test>").await;
    assert_eq!(s.cmd("RCPT TO:<nobody@bridge.test>").await.0, 550);
    s.send(b"BDAT 9\r\nINJECTED:").await;
    assert_eq!(s.reply().await.0, 554);
    assert_eq!(s.cmd(&format!("RCPT TO:<alice@{DOMAIN}>")).await.0, 250);
    let body = b"From: bob@example.test\r\nSubject: after\r\n\r\nx\r\n";
    s.send(format!("BDAT {} LAST\r\n", body.len()).as_bytes())
        .await;
    s.send(body).await;
    assert_eq!(
        s.reply().await.0,
        503,
        "the transaction failed with its chunk"
    );
    assert_eq!(s.cmd("RSET").await.0, 250);
    s.cmd("MAIL FROM:<bob@example.test>").await;
    s.cmd(&format!("RCPT TO:<alice@{DOMAIN}>")).await;
    s.cmd(&format!("RCPT TO:<ALICE@{DOMAIN}>")).await;
    s.send(format!("BDAT {} LAST\r\n", body.len()).as_bytes())
        .await;
    s.send(body).await;
    assert_eq!(s.reply().await.0, 250);
    let inbox = inbox_of(&b, "alice", "INBOX").await;
    assert_eq!(inbox.len(), 1, "one copy, however often alice was named");
    let RawEmail::Inline(raw_mail) = &inbox[0].1.email.as_ref().unwrap().raw else {
        panic!("inline");
    };
    assert!(!String::from_utf8_lossy(raw_mail).contains("INJECTED"));

    // On submission, two From fields are refused even if both are hers.
    let mut s = raw(b.port(Listener::Submission)).await;
    s.cmd("EHLO client").await;
    s.cmd("STARTTLS").await;
    let mut t = tls_upgrade(s).await;
    t.cmd("EHLO client").await;
    assert_eq!(t.cmd("AUTH PLAIN AGFsaWNlAHB3LW9mLWFsaWNl").await.0, 235);
    t.cmd(&format!("MAIL FROM:<alice@{DOMAIN}>")).await;
    t.cmd(&format!("RCPT TO:<bob@{DOMAIN}>")).await;
    t.cmd("DATA").await;
    t.send(
        format!("From: boss@{DOMAIN}\r\nFrom: alice@{DOMAIN}\r\nSubject: x\r\n\r\nx\r\n.\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(t.reply().await.0, 550);
    assert!(inbox_of(&b, "bob", "INBOX").await.is_empty());
    // Read receipts go out with the null sender; the From must still be hers.
    assert_eq!(t.cmd("MAIL FROM:<>").await.0, 250);
    t.cmd(&format!("RCPT TO:<bob@{DOMAIN}>")).await;
    t.cmd("DATA").await;
    t.send(format!("From: alice@{DOMAIN}\r\nSubject: receipt\r\n\r\nread\r\n.\r\n").as_bytes())
        .await;
    assert_eq!(t.reply().await.0, 250);
    assert_eq!(inbox_of(&b, "bob", "INBOX").await.len(), 1);
    b.stop().await;
}

#[tokio::test]
async fn messages_received_at_once_are_capped_server_wide() {
    let b = bridge(|c| c.smtp.max_concurrent_messages = 1).await;
    let port = b.port(Listener::Mx);
    let mut one = raw(port).await;
    let mut two = raw(port).await;
    for s in [&mut one, &mut two] {
        s.cmd("EHLO mail.example.test").await;
        assert_eq!(s.cmd("MAIL FROM:<bob@example.test>").await.0, 250);
        assert_eq!(s.cmd(&format!("RCPT TO:<alice@{DOMAIN}>")).await.0, 250);
    }
    assert_eq!(one.cmd("DATA").await.0, 354);
    let (code, text) = two.cmd("DATA").await;
    assert_eq!(code, 451, "{text}");
    one.send(b"From: bob@example.test\r\nSubject: first\r\n\r\nx\r\n.\r\n")
        .await;
    assert_eq!(one.reply().await.0, 250);
    // The permit is back once the first message is in.
    assert_eq!(two.cmd("DATA").await.0, 354);
    two.send(b"From: bob@example.test\r\nSubject: second\r\n\r\nx\r\n.\r\n")
        .await;
    assert_eq!(two.reply().await.0, 250);
    assert_eq!(inbox_of(&b, "alice", "INBOX").await.len(), 2);
    b.stop().await;
}
