//! Mail leaving for the email world, end to end in process: the whole daemon, a DNS
//! server of our own (MX, SPF, DKIM and DMARC records), and a receiving MTA written
//! here that records what it is given. What arrives is judged by the same SPF, DKIM
//! and DMARC checks the MX runs (mail-auth), so "DMARC passes" means the receiver
//! would say so. The interop suite checks the same with dkimpy and aiosmtpd.

mod common;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use lnmp_bridge::config::{Config, SmarthostTls};
use lnmp_bridge::daemon::{self, Running};
use lnmp_bridge::lnmp::{Draft, Identity, Kind, Limits, Message, MessageContent, Priority};
use lnmp_bridge::outbound::headers;
use lnmp_bridge::smtp::Listener;
use lnmp_bridge::store;
use lnmp_bridge::testing::dns::{self, DnsServer, Zone};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use common::{DOMAIN, HOST};

fn zone(sink_ip: &str) -> String {
    format!(
        "
bridge.test TXT \"v=spf1 ip4:127.0.0.1 -all\"
_dmarc.bridge.test TXT \"v=DMARC1; p=reject; adkim=s; aspf=s\"
mx.bridge.test A 127.0.0.1
remote.test MX 10 mx.remote.test
mx.remote.test A {sink_ip}
remote.test TXT \"v=spf1 ip4:127.0.0.1 -all\"
_dmarc.remote.test TXT \"v=DMARC1; p=reject\"
example.test MX 10 mx.remote.test
example.test TXT \"v=spf1 ip4:127.0.0.1 -all\"
_dmarc.example.test TXT \"v=DMARC1; p=reject\"
nomail.test MX 0 .
"
    )
}

/// One message as the receiving MTA got it.
#[derive(Debug, Clone)]
struct Received {
    mail_from: String,
    rcpt: Vec<String>,
    data: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<String> {
        headers::field_values(&self.data, name).into_iter().next()
    }
}

/// A receiving MTA on loopback: takes everything except local parts starting with
/// "nobody" (550 5.1.1) and "later" (451 4.2.0), and records what it takes.
struct Sink {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    async fn start(port: u16) -> Sink {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let record = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut r = BufReader::new(r);
                    let _ = w.write_all(b"220 mx.remote.test ESMTP sink\r\n").await;
                    let (mut from, mut rcpt) = (String::new(), Vec::new());
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") {
                            b"250-mx.remote.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
                        } else if upper.starts_with("MAIL FROM:") {
                            from = addr_of(&line[10..]);
                            rcpt.clear();
                            b"250 2.1.0 ok\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            let to = addr_of(&line[8..]);
                            if to.starts_with("nobody") {
                                b"550 5.1.1 no such user here\r\n"
                            } else if to.starts_with("later") {
                                b"451 4.2.0 mailbox busy, try later\r\n"
                            } else {
                                rcpt.push(to);
                                b"250 2.1.5 ok\r\n"
                            }
                        } else if upper.starts_with("DATA") {
                            let _ = w.write_all(b"354 go ahead\r\n").await;
                            let mut data = Vec::new();
                            loop {
                                let mut l = Vec::new();
                                if r.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if l == b".\r\n" {
                                    break;
                                }
                                let l = if l.starts_with(b".") { &l[1..] } else { &l[..] };
                                data.extend_from_slice(l);
                            }
                            record.lock().unwrap().push(Received {
                                mail_from: from.clone(),
                                rcpt: rcpt.clone(),
                                data,
                            });
                            b"250 2.0.0 queued\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
                            b"250 ok\r\n"
                        } else {
                            b"502 5.5.2 not here\r\n"
                        };
                        let _ = w.write_all(reply).await;
                    }
                });
            }
        });
        Sink { port, got, task }
    }

    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (up to 20 s) until a message for `rcpt` arrived; returns them all.
    async fn wait_for(&self, rcpt: &str) -> Vec<Received> {
        for _ in 0..200 {
            let hits: Vec<Received> = self
                .all()
                .into_iter()
                .filter(|m| m.rcpt.iter().any(|r| r == rcpt))
                .collect();
            if !hits.is_empty() {
                return hits;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("nothing arrived for {rcpt}; got {:?}", self.all());
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn addr_of(arg: &str) -> String {
    let a = arg.trim();
    let a = a.split_whitespace().next().unwrap_or("");
    a.trim_start_matches('<')
        .trim_end_matches('>')
        .to_ascii_lowercase()
}

struct Bridge {
    running: Option<Running>,
    config: Config,
    dns: DnsServer,
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
    async fn restart(&mut self) {
        self.running.take().unwrap().stop().await;
        self.running = Some(daemon::start(&self.config).await.unwrap());
    }
    async fn stop(mut self) {
        self.running.take().unwrap().stop().await;
    }

    /// Judges `m` as a receiver would: SPF for its envelope from 127.0.0.1, DKIM, DMARC.
    async fn judge(&self, m: &Received) -> lnmp_bridge::smtp::verify::Verdict {
        let mut dns_config = self.config.dns.clone();
        dns_config.nameservers = vec![self.dns.addr().to_string()];
        let verifier = lnmp_bridge::smtp::verify::Verifier::new(
            lnmp_bridge::smtp::verify::authenticator(&dns_config).unwrap(),
            "mx.remote.test",
            &self.config.smtp,
        );
        verifier
            .check("127.0.0.1".parse().unwrap(), HOST, &m.mail_from, &m.data)
            .await
    }
}

async fn bridge(tune: impl FnOnce(&mut Config)) -> Bridge {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let keys = lnmp_bridge::dkim::generate(&data.join("dkim"), "t1").unwrap();
    let mut records = zone("127.0.0.1");
    for k in &keys {
        records.push_str(&format!("{} TXT \"{}\"\n", k.name(DOMAIN), k.txt()));
    }
    let dns = dns::serve(
        Zone::parse(&records).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut config = common::loopback_config(dir.path());
    let relay_port = common::free_port();
    config.relay.listen = format!("127.0.0.1:{relay_port}");
    config.relay.public_url = format!("ws://127.0.0.1:{relay_port}");
    config.relay.tls = false;
    config.smtp.submissions_listen = String::new();
    config.imap.listen = String::new();
    config.imap.tls_listen = String::new();
    config.dns.nameservers = vec![dns.addr().to_string()];
    config.dns.timeout_seconds = 2;
    config.outbound.retry_base_seconds = 1;
    config.outbound.retry_max_seconds = 2;
    config.outbound.poll_seconds = 1;
    config.outbound.timeout_seconds = 10;
    tune(&mut config);
    let running = common::start_with_users(&config).await;
    Bridge {
        running: Some(running),
        config,
        dns,
        _dir: dir,
    }
}

fn submission(b: &Bridge, user: &str) -> AsyncSmtpTransport<Tokio1Executor> {
    let tls = TlsParameters::builder(HOST.into())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap();
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(b.port(Listener::Submission))
        .tls(Tls::Required(tls))
        .credentials(Credentials::new(user.into(), format!("pw-of-{user}")))
        .authentication(vec![Mechanism::Plain])
        .build()
}

fn mx(b: &Bridge) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(b.port(Listener::Mx))
        .tls(Tls::None)
        .hello_name(lettre::transport::smtp::extension::ClientId::Domain(
            "mail.remote.test".into(),
        ))
        .build()
}

async fn send(
    t: &AsyncSmtpTransport<Tokio1Executor>,
    from: &str,
    to: &[&str],
    raw: &str,
) -> Result<(), lettre::transport::smtp::Error> {
    let envelope = Envelope::new(
        Some(from.parse().unwrap()),
        to.iter().map(|a| a.parse().unwrap()).collect(),
    )
    .unwrap();
    // lettre ends the data with CRLF.CRLF itself.
    let raw = raw.strip_suffix("\r\n").unwrap_or(raw);
    t.send_raw(&envelope, raw.as_bytes()).await.map(|_| ())
}

/// The user's INBOX, opened: (message, content) oldest first.
async fn inbox(b: &Bridge, user: &str) -> Vec<(Message, MessageContent)> {
    let custody = &b.running().custody;
    let info = custody.user(user).await.unwrap();
    let identity = custody.identity(user).await.unwrap();
    let rows = store::mail::list(b.store(), info.id, "INBOX")
        .await
        .unwrap();
    let bodies = store::inbox::list(b.store(), info.id, 0).await.unwrap();
    rows.iter()
        .map(|row| {
            let m = bodies
                .iter()
                .map(|j| Message::from_json(j.as_bytes(), &Limits::default()).unwrap())
                .find(|m| m.id.to_hex() == row.message_id)
                .unwrap();
            let c = m.open(&identity, &Limits::default()).unwrap();
            (m, c)
        })
        .collect()
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// What the embedded relay holds for Carol.
async fn carol_mail(b: &Bridge, carol: &Identity) -> Vec<Message> {
    store::relay::query(
        b.store(),
        &carol.public_key(),
        &[lnmp_bridge::lnmp::Filter::default()],
        100,
        &Limits::default(),
        store::now(),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|(m, _)| m)
    .collect()
}

fn raw_of(c: &MessageContent) -> Vec<u8> {
    match &c.email.as_ref().unwrap().raw {
        lnmp_bridge::lnmp::content::RawEmail::Inline(r) => r.clone(),
        _ => panic!("small mail is inline"),
    }
}

#[tokio::test]
async fn submitted_mail_leaves_signed_aligned_and_intact() {
    let sink = Sink::start(0).await;
    let b = bridge(|c| c.outbound.mx_port = sink.port).await;
    let raw = "From: Alice <alice@bridge.test>\r\nTo: carol@remote.test\r\nBcc: hidden@remote.test\r\n\
               Subject: dots\r\nMessage-ID: <dots-1@bridge.test>\r\n\r\nfirst\r\n.\r\n..two\r\n.leading\r\nlast\r\n";
    send(
        &submission(&b, "alice"),
        "alice@bridge.test",
        &["carol@remote.test", "hidden@remote.test"],
        raw,
    )
    .await
    .unwrap();
    let got = sink.wait_for("carol@remote.test").await;
    assert_eq!(
        got.len(),
        1,
        "both remote.test recipients in one transaction"
    );
    let m = &got[0];
    assert_eq!(m.mail_from, "alice@bridge.test");
    assert_eq!(m.rcpt, vec!["carol@remote.test", "hidden@remote.test"]);
    // The body arrives exactly as written: dot-stuffing was done and undone.
    assert!(
        m.data
            .ends_with(b"\r\n\r\nfirst\r\n.\r\n..two\r\n.leading\r\nlast\r\n"),
        "{:?}",
        String::from_utf8_lossy(&m.data[m.data.len().saturating_sub(80)..])
    );
    assert!(m.header("Bcc").is_none(), "Bcc never leaves");
    let sigs = headers::field_values(&m.data, "DKIM-Signature");
    assert_eq!(sigs.len(), 2, "RSA and Ed25519");
    assert!(sigs.iter().any(|s| s.contains("a=rsa-sha256")));
    assert!(sigs.iter().any(|s| s.contains("a=ed25519-sha256")));
    let verdict = b.judge(m).await;
    assert!(verdict.dmarc_pass, "{}", verdict.authentication_results);
    assert_eq!(verdict.dkim_domains, vec![DOMAIN.to_owned(); 2]);
    assert_eq!(verdict.spf, mail_auth::SpfResult::Pass);
    wait_until("the recipients settled as sent", || async {
        let q = store::outbound::list(b.store(), true).await.unwrap();
        q.len() == 2 && q.iter().all(|r| r.state == "sent")
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn failures_come_back_as_dsns_and_deferrals_are_retried_until_expiry() {
    let sink = Sink::start(0).await;
    let b = bridge(|c| c.outbound.mx_port = sink.port).await;
    let raw = "From: alice@bridge.test\r\nTo: nobody@remote.test, later@remote.test\r\n\
               Subject: will fail\r\nMessage-ID: <fail-1@bridge.test>\r\n\r\nsecret body text\r\n";
    send(
        &submission(&b, "alice"),
        "alice@bridge.test",
        &["nobody@remote.test", "later@remote.test"],
        raw,
    )
    .await
    .unwrap();
    // 550 at RCPT: a DSN for that recipient alone, in Alice's INBOX.
    wait_until("a DSN", || async { !inbox(&b, "alice").await.is_empty() }).await;
    let dsns = inbox(&b, "alice").await;
    let dsn = raw_of(&dsns[0].1);
    let text = String::from_utf8_lossy(&dsn);
    assert!(headers::is_report(&dsn), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; nobody@remote.test"),
        "{text}"
    );
    assert!(text.contains("Status: 5.1.1"), "{text}");
    assert!(text.contains("550 5.1.1 no such user here"), "{text}");
    assert!(
        !text.contains("Final-Recipient: rfc822; later@remote.test"),
        "the deferred one is not reported yet"
    );
    assert!(
        !text.contains("secret body text"),
        "the body is never returned"
    );
    assert_eq!(
        dsns[0].1.email.as_ref().unwrap().mail_from.as_deref(),
        Some(""),
        "from the null sender"
    );
    // 451: retried with backoff, still queued.
    wait_until("a second attempt", || async {
        store::outbound::list(b.store(), false)
            .await
            .unwrap()
            .iter()
            .any(|r| r.recipient == "later@remote.test" && r.attempts >= 2 && r.state == "queued")
    })
    .await;
    // Its lifetime ends: the next attempt gives up and reports.
    sqlx::query(
        "UPDATE outbound_recipients SET expires_at = 0 WHERE recipient = 'later@remote.test'",
    )
    .execute(b.store().pool())
    .await
    .unwrap();
    wait_until("the expiry DSN", || async {
        inbox(&b, "alice").await.len() == 2
    })
    .await;
    let second = raw_of(&inbox(&b, "alice").await[1].1);
    let text = String::from_utf8_lossy(&second);
    assert!(
        text.contains("Final-Recipient: rfc822; later@remote.test"),
        "{text}"
    );
    assert!(text.contains("Status: 4.2.0"), "{text}");
    assert!(text.contains("gave up after"), "{text}");
    // No DSN is forwarded or bounced again: the queue holds no mail from <>.
    let q = store::outbound::list(b.store(), true).await.unwrap();
    assert!(q.iter().all(|r| !r.mail_from.is_empty()));
    assert!(sink.all().is_empty());

    // A domain with a null MX fails at once.
    send(
        &submission(&b, "alice"),
        "alice@bridge.test",
        &["x@nomail.test"],
        "From: alice@bridge.test\r\nTo: x@nomail.test\r\nSubject: n\r\n\r\nx\r\n",
    )
    .await
    .unwrap();
    wait_until("the null MX DSN", || async {
        inbox(&b, "alice").await.len() == 3
    })
    .await;
    let third = raw_of(&inbox(&b, "alice").await[2].1);
    assert!(String::from_utf8_lossy(&third).contains("null MX"));
    b.stop().await;
}

#[tokio::test]
async fn a_smarthost_down_for_a_while_loses_nothing_across_a_restart() {
    let port = common::free_port();
    let mut b = bridge(|c| {
        c.outbound.smarthost = format!("127.0.0.1:{port}");
        c.outbound.smarthost_tls = SmarthostTls::None;
    })
    .await;
    for i in 0..3 {
        send(
            &submission(&b, "alice"),
            "alice@bridge.test",
            &["carol@remote.test"],
            &format!("From: alice@bridge.test\r\nTo: carol@remote.test\r\nSubject: held {i}\r\nMessage-ID: <held-{i}@bridge.test>\r\n\r\nx\r\n"),
        )
        .await
        .unwrap();
    }
    wait_until("failed attempts", || async {
        let q = store::outbound::list(b.store(), false).await.unwrap();
        q.len() == 3
            && q.iter().all(|r| {
                r.state == "queued"
                    && r.attempts >= 1
                    && r.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("cannot talk to"))
            })
    })
    .await;
    b.restart().await;
    let sink = Sink::start(port).await;
    store::outbound::flush(b.store(), store::now())
        .await
        .unwrap();
    wait_until("all three delivered", || async { sink.all().len() >= 3 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids: Vec<String> = sink
        .all()
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            "<held-0@bridge.test>",
            "<held-1@bridge.test>",
            "<held-2@bridge.test>"
        ]
    );
    let q = store::outbound::list(b.store(), true).await.unwrap();
    assert!(q.iter().all(|r| r.state == "sent"), "{q:?}");
    b.stop().await;
}

#[tokio::test]
async fn forwarded_mail_is_ours_to_sign_and_replies_find_their_way_back() {
    let sink = Sink::start(0).await;
    let b = bridge(|c| c.outbound.mx_port = sink.port).await;
    let custody = &b.running().custody;
    custody
        .set_forward("alice", Some("fwd@remote.test"))
        .await
        .unwrap();
    // An email from the world reaches Alice's INBOX, and her forward address.
    let original = "From: Dan Sender <dan@example.test>\r\nTo: alice@bridge.test\r\n\
                    Subject: lunch?\r\nMessage-ID: <lunch-1@example.test>\r\nAuto-Submitted: no\r\n\r\nAt noon?\r\n";
    send(
        &mx(&b),
        "dan@example.test",
        &["alice@bridge.test"],
        original,
    )
    .await
    .unwrap();
    let copy = sink.wait_for("fwd@remote.test").await.remove(0);
    assert_eq!(
        copy.mail_from, "alice@bridge.test",
        "bounces go to the forwarder"
    );
    let from = copy.header("From").unwrap();
    assert!(from.contains("Dan Sender (dan@example.test)"), "{from}");
    let reply_to = copy.header("Reply-To").unwrap();
    let reply_address = reply_to
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    assert!(
        reply_address.starts_with("reply+") && reply_address.ends_with("@bridge.test"),
        "{reply_to}"
    );
    assert!(from.contains(&reply_address));
    assert_eq!(
        copy.header("Message-ID").as_deref(),
        Some("<lunch-1@example.test>")
    );
    assert_eq!(
        copy.header("X-Original-From").as_deref(),
        Some("Dan Sender <dan@example.test>")
    );
    assert_eq!(
        copy.header("X-LNMP-Hops").as_deref(),
        Some("2"),
        "our Received + one"
    );
    let verdict = b.judge(&copy).await;
    assert!(verdict.dmarc_pass, "{}", verdict.authentication_results);

    // Alice answers from her forward address: it goes to Dan as email from her own
    // address, threaded on his message.
    let answer = format!(
        "From: fwd@remote.test\r\nTo: {reply_address}\r\nSubject: Re: lunch?\r\n\
         Message-ID: <answer-1@remote.test>\r\nIn-Reply-To: <lunch-1@example.test>\r\n\
         References: <lunch-1@example.test>\r\n\r\nYes!\r\n"
    );
    send(&mx(&b), "fwd@remote.test", &[&reply_address], &answer)
        .await
        .unwrap();
    let out = sink.wait_for("dan@example.test").await.remove(0);
    assert_eq!(out.mail_from, "alice@bridge.test");
    assert_eq!(out.header("From").as_deref(), Some("<alice@bridge.test>"));
    assert_eq!(
        out.header("In-Reply-To").as_deref(),
        Some("<lunch-1@example.test>")
    );
    assert!(
        out.header("References")
            .unwrap()
            .contains("<lunch-1@example.test>")
    );
    assert!(String::from_utf8_lossy(&out.data).contains("Yes!"));
    assert!(
        out.header("Received")
            .is_none_or(|r| !r.contains("remote.test")),
        "the forward address's path stays private"
    );
    assert!(b.judge(&out).await.dmarc_pass);

    // Anyone else, or an automatic reply, is refused at the reply address.
    let forged = answer.replace("From: fwd@remote.test", "From: mallory@remote.test");
    let e = send(&mx(&b), "mallory@remote.test", &[&reply_address], &forged)
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    let auto = answer.replace(
        "Subject: Re:",
        "Auto-Submitted: auto-replied\r\nSubject: Re:",
    );
    assert!(
        send(&mx(&b), "fwd@remote.test", &[&reply_address], &auto)
            .await
            .unwrap_err()
            .is_permanent()
    );
    // A signed message written to someone else cannot be sent on to the reply address.
    let elsewhere = answer.replace(&format!("To: {reply_address}"), "To: someone@remote.test");
    assert!(
        send(&mx(&b), "fwd@remote.test", &[&reply_address], &elsewhere)
            .await
            .unwrap_err()
            .is_permanent()
    );
    // Mail that has been round the loop too often is refused at the MX.
    let looped = format!(
        "{}{original}",
        "Received: from a.remote.test by b.remote.test; Thu, 26 Nov 2026 10:00:00 +0000\r\n"
            .repeat(26)
    );
    let e = send(&mx(&b), "dan@example.test", &["alice@bridge.test"], &looped)
        .await
        .unwrap_err();
    assert_eq!(e.status().map(u16::from), Some(554), "{e}");
    // A reply address mixed with another recipient must go alone.
    let e = send(
        &mx(&b),
        "fwd@remote.test",
        &[&reply_address, "bob@bridge.test"],
        &answer,
    )
    .await;
    assert!(e.is_err() || inbox(&b, "bob").await.len() <= 1);

    // Native LNMP mail from Bob (a user here) is forwarded rendered; the answer
    // comes back to Bob over LNMP, from Alice's key.
    let bob_raw =
        "From: bob@bridge.test\r\nTo: alice@bridge.test\r\nSubject: native\r\n\r\nhi from bob\r\n";
    send(
        &submission(&b, "bob"),
        "bob@bridge.test",
        &["alice@bridge.test"],
        bob_raw,
    )
    .await
    .unwrap();
    let copies = loop {
        let c: Vec<Received> = sink
            .all()
            .into_iter()
            .filter(|m| m.header("Subject").as_deref() == Some("native"))
            .collect();
        if !c.is_empty() {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let native = &copies[0];
    let lnmp_id = native.header("X-LNMP-Id").unwrap();
    let back = native.header("Reply-To").unwrap();
    let back = back
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    assert_ne!(back, reply_address, "one reply address per correspondent");
    let answer = format!(
        "From: fwd@remote.test\r\nTo: {back}\r\nSubject: Re: native\r\n\
         In-Reply-To: <{lnmp_id}@lnmp.invalid>\r\n\r\nhello bob\r\n"
    );
    send(&mx(&b), "fwd@remote.test", &[&back], &answer)
        .await
        .unwrap();
    wait_until("Bob's answer", || async {
        !inbox(&b, "bob").await.is_empty()
    })
    .await;
    let (m, c) = inbox(&b, "bob").await.remove(0);
    assert_eq!(m.from, custody.user("alice").await.unwrap().pubkey);
    assert_eq!(
        c.reply_to.as_deref(),
        Some(lnmp_id.as_str()),
        "threaded on the LNMP message"
    );
    assert!(c.body.contains("hello bob"));
    b.stop().await;
}

#[tokio::test]
async fn lnmp_mail_to_an_email_sender_leaves_as_threaded_email() {
    let sink = Sink::start(0).await;
    let b = bridge(|c| c.outbound.mx_port = sink.port).await;
    let custody = b.running().custody.clone();
    let original = "From: Dan <dan@example.test>\r\nTo: alice@bridge.test\r\n\
                    Subject: question\r\nMessage-ID: <q-1@example.test>\r\nReferences: <root@example.test>\r\n\r\n?\r\n";
    send(
        &mx(&b),
        "dan@example.test",
        &["alice@bridge.test"],
        original,
    )
    .await
    .unwrap();
    let (bridged, _) = inbox(&b, "alice").await.remove(0);
    let dan_key = bridged.from;
    let relay = custody.relay_url().to_owned();
    let publish = |m: &Message| {
        let store = b.store().clone();
        let (id, json, relay) = (m.id.to_hex(), m.to_json(), relay.clone());
        async move {
            store::outbox::enqueue(&store, id, json, vec![relay], store::now() + 3600)
                .await
                .unwrap();
        }
    };
    let draft = |to, subject: &str, reply_to: Option<String>| Draft {
        to: vec![to],
        kind: Kind::Text,
        timestamp: store::unix_now(),
        content: MessageContent {
            subject: Some(subject.into()),
            body: "the answer is 42".into(),
            reply_to,
            ..MessageContent::default()
        },
        relays: vec![relay.clone()],
        expiry: None,
        priority: Priority::Normal,
    };
    // Alice answers Dan over LNMP: email from her address, threaded on his.
    let alice = custody.identity("alice").await.unwrap();
    let answer = Message::seal(
        &alice,
        &draft(dan_key, "Re: question", Some(bridged.id.to_hex())),
        &mut rand_core::OsRng,
    )
    .unwrap();
    publish(&answer).await;
    let out = sink.wait_for("dan@example.test").await.remove(0);
    assert_eq!(out.mail_from, "alice@bridge.test");
    assert_eq!(out.header("From").as_deref(), Some("<alice@bridge.test>"));
    assert_eq!(out.header("To").as_deref(), Some("<dan@example.test>"));
    assert_eq!(
        out.header("In-Reply-To").as_deref(),
        Some("<q-1@example.test>")
    );
    let refs = out.header("References").unwrap();
    assert!(
        refs.contains("<root@example.test>") && refs.contains("<q-1@example.test>"),
        "{refs}"
    );
    assert!(b.judge(&out).await.dmarc_pass);

    // A stranger on LNMP writes to Dan: from a reply address, so Dan's answer comes
    // back to the stranger over LNMP.
    let carol = Identity::from_seed(&lnmp_bridge::lnmp::Seed::generate(&mut rand_core::OsRng));
    let hello = Message::seal(
        &carol,
        &draft(dan_key, "from carol", None),
        &mut rand_core::OsRng,
    )
    .unwrap();
    publish(&hello).await;
    let got = loop {
        let c: Vec<Received> = sink
            .all()
            .into_iter()
            .filter(|m| m.header("Subject").as_deref() == Some("from carol"))
            .collect();
        if !c.is_empty() {
            break c.into_iter().next().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(got.mail_from.starts_with("reply+"), "{}", got.mail_from);
    assert!(got.header("From").unwrap().contains(&got.mail_from));
    assert!(b.judge(&got).await.dmarc_pass);
    let answer = format!(
        "From: dan@example.test\r\nTo: {0}\r\nSubject: Re: from carol\r\n\
         In-Reply-To: <{1}@lnmp.invalid>\r\n\r\nhi carol\r\n",
        got.mail_from,
        hello.id.to_hex()
    );
    send(&mx(&b), "dan@example.test", &[&got.mail_from], &answer)
        .await
        .unwrap();
    // It is published to the relay Carol named (ours here), sealed to her.
    let mut found = None;
    for _ in 0..100 {
        let stored = carol_mail(&b, &carol).await;
        found = stored
            .into_iter()
            .find(|m| m.to.contains(&carol.public_key()) && m.from == dan_key);
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = found.expect("Dan's answer reached Carol's relay");
    let content = reply.open(&carol, &Limits::default()).unwrap();
    assert_eq!(
        content.reply_to.as_deref(),
        Some(hello.id.to_hex().as_str())
    );

    // An answer to a stranger whose relays never take it comes back to Dan as a DSN.
    let erin = Identity::from_seed(&lnmp_bridge::lnmp::Seed::generate(&mut rand_core::OsRng));
    let mut to_dan = draft(dan_key, "from erin", None);
    let dead_relay = format!("ws://127.0.0.1:{}", common::free_port());
    to_dan.relays = vec![dead_relay.clone()];
    let from_erin = Message::seal(&erin, &to_dan, &mut rand_core::OsRng).unwrap();
    publish(&from_erin).await;
    let got = loop {
        if let Some(m) = sink
            .all()
            .into_iter()
            .find(|m| m.header("Subject").as_deref() == Some("from erin"))
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let answer = format!(
        "From: dan@example.test\r\nTo: {0}\r\nSubject: Re: from erin\r\n\r\nhi erin\r\n",
        got.mail_from
    );
    send(&mx(&b), "dan@example.test", &[&got.mail_from], &answer)
        .await
        .unwrap();
    // The relay Erin named is down; her message's lifetime ends.
    wait_until("the answer queued for Erin's relay", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM relay_outbox WHERE relays = $1 AND report_to IS NOT NULL",
        )
        .bind(&dead_relay)
        .fetch_one(b.store().pool())
        .await
        .unwrap()
            == 1
    })
    .await;
    sqlx::query("UPDATE relay_outbox SET expires_at = 0 WHERE relays = $1")
        .bind(&dead_relay)
        .execute(b.store().pool())
        .await
        .unwrap();
    let bounce = loop {
        if let Some(m) = sink
            .all()
            .into_iter()
            .find(|m| m.mail_from.is_empty() && m.rcpt == ["dan@example.test"])
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = String::from_utf8_lossy(&bounce.data);
    assert!(headers::is_report(&bounce.data), "{text}");
    assert!(
        text.contains(&format!("Final-Recipient: rfc822; {}", got.mail_from)),
        "{text}"
    );
    assert!(text.contains("Status: 4.4.7"), "{text}");
    assert!(
        text.contains("Subject: Re: from erin"),
        "the original's header section: {text}"
    );
    assert!(!text.contains("hi erin"), "never the body");
    assert!(
        b.judge(&bounce)
            .await
            .dkim_domains
            .contains(&DOMAIN.to_owned())
    );

    // Carol writes to an email sender whose domain takes no mail: she is told over LNMP.
    store::legacy::remember(
        b.store(),
        &custody
            .legacy_identity("x@nomail.test")
            .public_key()
            .to_hex(),
        "x@nomail.test",
    )
    .await
    .unwrap();
    let lost = Message::seal(
        &carol,
        &draft(
            custody.legacy_identity("x@nomail.test").public_key(),
            "lost",
            None,
        ),
        &mut rand_core::OsRng,
    )
    .unwrap();
    publish(&lost).await;
    let mut report = None;
    for _ in 0..100 {
        let stored = carol_mail(&b, &carol).await;
        report = stored
            .into_iter()
            .filter(|m| m.to.contains(&carol.public_key()))
            .map(|m| m.open(&carol, &Limits::default()).unwrap())
            .find(|c| c.reply_to.as_deref() == Some(lost.id.to_hex().as_str()));
        if report.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = report.expect("Carol was told over LNMP");
    assert!(headers::is_report(&raw_of(&report)));
    b.stop().await;
}
