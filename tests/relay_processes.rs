//! The relay across processes on loopback: the daemon with its embedded relay, a
//! standalone relay, and the native client, talking through the real binary; and a relay
//! killed with SIGKILL in the middle of 1,000 publishes, restarted, losing none.

#![cfg(unix)]

use lnmp_bridge::lnmp::{Draft, Filter, Identity, Kind, Limits, Message, MessageContent, Priority};
use lnmp_bridge::relay::outbox::{Outbox, RetryTiming};
use lnmp_bridge::relay::tls::{Trust, client_config};
use lnmp_bridge::relay::{ClientOptions, Connection};
use lnmp_bridge::store::{Store, StoreOptions, outbox};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_lnmp-bridge");

fn cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env_remove("LNMP_MASTER_KEY");
    // These tests need no SMTP or IMAP: keep the listeners off.
    for key in [
        "SMTP__MX_LISTEN",
        "SMTP__SUBMISSION_LISTEN",
        "SMTP__SUBMISSIONS_LISTEN",
        "IMAP__LISTEN",
        "IMAP__TLS_LISTEN",
    ] {
        c.env(format!("LNMP__{key}"), "");
    }
    // The writers here are strangers to each other; the relay's price is tested apart.
    c.env("LNMP__PRICING__STRANGER", "0");
    c
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    common::stdout_of(&*c, out)
}

/// Kills a child process when dropped, so a failing test leaves nothing running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(c: &mut Command) -> Proc {
    Proc(
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn standalone_relay(dir: &Path, port: u16) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let url = format!("ws://127.0.0.1:{port}");
    spawn(
        cmd(
            dir,
            &[
                "relay",
                "--no-tls",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--public-url",
                &url,
            ],
        )
        .env("LNMP__RELAY__PUBLISH_RATE", "100000")
        .env("LNMP__RELAY__PUBLISH_BURST", "100000")
        .env("LNMP__RELAY__FRAME_RATE", "100000")
        .env("LNMP__RELAY__FRAME_BURST", "100000"),
    )
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_native_user_and_a_bridged_user_write_to_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (http, embedded, other) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let relay_dir = d.join("standalone");
    let _relay = standalone_relay(&relay_dir, other);
    let other_url = format!("ws://127.0.0.1:{other}");
    let daemon_env = |c: &mut Command| {
        c.env("LNMP__HTTP__LISTEN", format!("127.0.0.1:{http}"))
            .env("LNMP__RELAY__LISTEN", format!("127.0.0.1:{embedded}"))
            .env("LNMP__RELAY__TLS", "false")
            .env(
                "LNMP__RELAY__PUBLIC_URL",
                format!("ws://127.0.0.1:{embedded}"),
            )
            .env("LNMP__RELAY__READ_RELAYS", format!("[\"{other_url}\"]"));
    };
    let mut add = cmd(d, &["user", "add", "alice"]);
    daemon_env(&mut add);
    ok(&mut add);
    let mut serve = cmd(d, &["serve"]);
    daemon_env(&mut serve);
    let _daemon = spawn(&mut serve);
    wait_for_port(http);
    wait_for_port(embedded);
    wait_for_port(other);

    let alice = ok(&mut cmd(d, &["user", "list"]))
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();
    ok(&mut cmd(d, &["client", "keygen", "--key-file", "bob.key"]));
    let bob_key = ok(&mut cmd(d, &["client", "address", "--key-file", "bob.key"]))
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();

    // Bob writes to Alice's address: looked up over HTTPS, published to her domain's relay.
    let lookup = format!("https://127.0.0.1:{http}");
    ok(&mut cmd(
        d,
        &[
            "client",
            "send",
            "--key-file",
            "bob.key",
            "--to",
            &alice,
            "--subject",
            "hello",
            "--body",
            "first",
            "--insecure",
            "--lookup-url",
            &lookup,
        ],
    ));
    // And to her key on another relay, which the daemon follows for her.
    ok(&mut cmd(
        d,
        &[
            "client",
            "send",
            "--key-file",
            "bob.key",
            "--to",
            &alice,
            "--relay",
            &other_url,
            "--subject",
            "elsewhere",
            "--body",
            "second",
            "--insecure",
            "--lookup-url",
            &lookup,
        ],
    ));
    wait_until("both messages in Alice's inbox", 60, || {
        let inbox = ok(&mut cmd(d, &["user", "inbox", "alice"]));
        inbox.contains("subject: hello") && inbox.contains("subject: elsewhere")
    });
    let inbox = ok(&mut cmd(d, &["user", "inbox", "alice"]));
    assert_eq!(inbox.matches("subject: hello").count(), 1, "{inbox}");
    assert!(inbox.contains(&format!("from:    {bob_key}")));

    // Alice answers through the daemon's outbox; Bob reads it on his relay.
    let mut send = cmd(
        d,
        &[
            "user",
            "send",
            "alice",
            "--to",
            &bob_key,
            "--relay",
            &other_url,
            "--subject",
            "re: hello",
            "--body",
            "hi bob",
        ],
    );
    daemon_env(&mut send);
    assert!(ok(&mut send).contains("sent "));
    let bob_inbox = ok(&mut cmd(
        d,
        &[
            "client",
            "inbox",
            "--key-file",
            "bob.key",
            "--relay",
            &other_url,
        ],
    ));
    assert!(
        bob_inbox.contains("subject: re: hello") && bob_inbox.contains("hi bob"),
        "{bob_inbox}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_stream_loses_nothing() {
    const N: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let url = format!("ws://127.0.0.1:{port}");
    let relay_dir = tmp.path().join("relay");
    let mut relay = standalone_relay(&relay_dir, port);
    wait_for_port(port);

    let db = format!(
        "sqlite://{}?mode=rwc",
        tmp.path().join("client.db").display()
    );
    let store = Store::open(&db, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let opts = ClientOptions {
        tls: client_config(Trust::Insecure).unwrap(),
        connect_timeout: Duration::from_secs(5),
        limits: Limits::default(),
    };
    let timing = RetryTiming {
        publish_timeout: Duration::from_secs(3),
        base: Duration::from_secs(1),
        max: Duration::from_secs(2),
        lifetime: Duration::from_secs(3600),
    };
    let (alice, bob) = (
        Identity::from_secret_bytes(&[1; 32]).unwrap(),
        Identity::from_secret_bytes(&[2; 32]).unwrap(),
    );
    let box_ = Outbox::new(store.clone(), opts.clone(), timing);
    let now = lnmp_bridge::store::now() as u64;
    let mut ids = std::collections::HashSet::new();
    for i in 0..N {
        let d = Draft {
            to: vec![bob.public_key()],
            kind: Kind::Text,
            timestamp: now,
            content: MessageContent {
                body: format!("message {i}"),
                ..MessageContent::default()
            },
            relays: vec![],
            expiry: None,
            priority: Priority::Normal,
        };
        let m = Message::seal(&alice, &d, &mut rand_core::OsRng).unwrap();
        ids.insert(m.id);
        box_.enqueue(&m, vec![url.clone()]).await.unwrap();
    }
    let stop = CancellationToken::new();
    let worker = tokio::spawn(box_.clone().run(stop.clone()));

    // Kill the relay once a good part, but not all, went through.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = outbox::pending(&store).await.unwrap() as usize;
        if left <= N * 2 / 3 {
            assert!(
                left > 0,
                "everything went through before the kill; the test proves nothing"
            );
            break;
        }
        assert!(Instant::now() < deadline, "publishing stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.0.kill().unwrap();
    relay.0.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _relay = standalone_relay(&relay_dir, port);
    wait_for_port(port);

    let deadline = Instant::now() + Duration::from_secs(120);
    while outbox::pending(&store).await.unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} still queued",
            outbox::pending(&store).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    worker.await.unwrap();

    let bob_conn = Connection::connect(&url, Some(&bob), &opts).await.unwrap();
    let got = bob_conn
        .query(
            vec![Filter {
                to: Some(vec![bob.public_key()]),
                limit: Some(5000),
                ..Filter::default()
            }],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let distinct: std::collections::HashSet<_> = got.iter().map(|m| m.id).collect();
    assert_eq!(got.len(), N, "each message stored exactly once");
    assert_eq!(distinct, ids, "all of them");
    for id in ids.iter().take(10) {
        assert_eq!(
            outbox::state(&store, &id.to_hex())
                .await
                .unwrap()
                .unwrap()
                .state,
            "sent"
        );
    }
}
