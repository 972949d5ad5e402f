//! The command line end to end, in a temporary folder: quickstart, users, keys moved out
//! and back in, a wrong or missing master key, contacts, pricing, and the daemon's HTTP
//! front answering an address lookup that verifies against the user's address.

use lnmp_bridge::lnmp::{Address, Limits, LookupDocument};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_lnmp-bridge");

struct Run {
    dir: PathBuf,
}

impl Run {
    fn new(dir: &Path) -> Run {
        Run {
            dir: dir.to_owned(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(&self.dir)
            .env_remove("LNMP_MASTER_KEY")
            .env_remove("LNMP_CONFIG")
            .env("RUST_LOG", "warn");
        // Daemons started by these tests keep off the default SMTP and IMAP ports.
        for key in [
            "SMTP__MX_LISTEN",
            "SMTP__SUBMISSION_LISTEN",
            "SMTP__SUBMISSIONS_LISTEN",
            "IMAP__LISTEN",
            "IMAP__TLS_LISTEN",
        ] {
            c.env(
                format!("LNMP__{key}"),
                format!("127.0.0.1:{}", common::free_port()),
            );
        }
        c
    }

    fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        common::run_with_stdin(&mut self.cmd(args), stdin)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, "")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, "")
    }

    fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        common::stdout_of(args, self.run_stdin(args, stdin))
    }

    /// Runs and expects failure with one clear line on stderr; returns it.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8(out.stderr).unwrap();
        let line = err.lines().last().unwrap_or_default().to_owned();
        assert!(line.starts_with("lnmp-bridge: "), "{args:?}: {err}");
        line
    }
}

fn address_of(listing: &str, user: &str) -> String {
    listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(user))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("{user} not in {listing}"))
        .to_owned()
}

#[test]
fn quickstart_then_users_and_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Run::new(tmp.path());
    let out = r.ok(&["quickstart", "--domain", "example.com", "--admin", "alice"]);
    for want in [
        "example.com.",
        "IN MX     10 mail.example.com.",
        "v=spf1 mx -all",
        "_dmarc.example.com.",
        "lnmp1r._domainkey.example.com.",
        "k=ed25519",
        "_submissions._tcp.example.com.",
        "_imaps._tcp.example.com.",
        "autoconfig.example.com.",
        "alice@example.com",
        "alice#",
    ] {
        assert!(
            out.contains(want),
            "quickstart output lacks {want:?}:\n{out}"
        );
    }
    let key = tmp.path().join("data/master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(
        r.fails(&["quickstart", "--domain", "example.com", "--admin", "bob"])
            .contains("exists already")
    );

    r.ok_stdin(
        &["user", "add", "bob", "--password-stdin"],
        "a long enough password\n",
    );
    assert!(r.fails(&["user", "add", "bob"]).contains("already exists"));
    assert!(r.fails(&["user", "add", "Bad Name"]).contains("user name"));
    assert!(
        r.fails(&["user", "add", "carol", "--password-stdin"])
            .contains("at least 8")
    );
    let listing = r.ok(&["user", "list"]);
    let alice = address_of(&listing, "alice");
    let parsed: Address = alice.parse().unwrap();
    assert_eq!(parsed.relay(), Some("example.com"));

    // Export, remove, recreate (a new key), import: the old address comes back.
    let words = r.ok(&["user", "export-key", "alice"]);
    assert_eq!(words.split_whitespace().count(), 24);
    assert!(r.fails(&["user", "remove", "alice"]).contains("--yes"));
    r.ok(&["user", "remove", "alice", "--yes"]);
    r.ok(&["user", "add", "alice"]);
    let fresh = address_of(&r.ok(&["user", "list"]), "alice");
    assert_ne!(fresh, alice);
    let imported = r.ok_stdin(&["user", "import-key", "alice"], &words);
    assert!(imported.contains(&alice), "{imported}");
    assert_eq!(address_of(&r.ok(&["user", "list"]), "alice"), alice);
    assert_eq!(r.ok(&["user", "export-key", "alice"]), words);
    assert!(r.fails(&["user", "import-key", "bob"]).contains("mnemonic"));
    assert!(
        r.fails(&["user", "export-key", "nobody"])
            .contains("not found")
    );

    // Contacts and pricing.
    r.ok(&[
        "contacts",
        "add",
        "alice",
        "Dave@Example.ORG",
        "--level",
        "acquaintance",
    ]);
    assert!(
        r.ok(&["contacts", "list", "alice"])
            .contains("acquaintance   dave@example.org")
    );
    assert!(
        r.fails(&["contacts", "add", "alice", "not-an-address"])
            .contains("not an email")
    );
    r.ok(&["contacts", "remove", "alice", "dave@example.org"]);
    assert!(
        r.fails(&["contacts", "remove", "alice", "dave@example.org"])
            .contains("not found")
    );
    r.ok(&[
        "pricing",
        "set",
        "alice",
        "--stranger",
        "250",
        "--free-list-id",
        "news.example.org",
    ]);
    let shown = r.ok(&["pricing", "show", "alice"]);
    assert!(shown.contains("stranger           250  (user)"), "{shown}");
    assert!(shown.contains("news.example.org"), "{shown}");
    assert!(
        r.fails(&["pricing", "set", "alice", "--surge-multiplier", "0"])
            .contains("at least 1")
    );
    r.ok(&["pricing", "set", "alice", "--defaults"]);
    assert!(
        r.ok(&["pricing", "show", "alice"])
            .contains("stranger           100  (config)")
    );
}

#[test]
fn a_wrong_or_missing_master_key_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Run::new(tmp.path());
    r.ok(&["quickstart", "--domain", "example.com", "--admin", "alice"]);
    let before = r.ok(&["user", "list"]);
    let words = r.ok(&["user", "export-key", "alice"]);
    let key = tmp.path().join("data/master.key");
    let good = std::fs::read(&key).unwrap();

    // Another key in the file.
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    for args in [&["user", "list"][..], &["user", "add", "eve"], &["serve"]] {
        let line = r.fails(args);
        assert!(
            line.contains("master key does not open this database"),
            "{args:?}: {line}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        format!("{}\n", "ab".repeat(32)),
        "key file untouched"
    );

    // No key at all: an error, and no new key made on a database that had one.
    std::fs::remove_file(&key).unwrap();
    assert!(r.fails(&["user", "list"]).contains("not found"));
    assert!(!key.exists());

    // A malformed key and one readable by others are refused too.
    std::fs::write(&key, "not hex\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(r.fails(&["user", "list"]).contains("64 hex digits"));
        std::fs::write(&key, &good).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(r.fails(&["user", "list"]).contains("chmod 600"));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(&key, &good).unwrap();

    // With the right key back, everything is as it was.
    assert_eq!(r.ok(&["user", "list"]), before);
    assert_eq!(r.ok(&["user", "export-key", "alice"]), words);

    // The key may also come from the environment.
    std::fs::remove_file(&key).unwrap();
    let hex = String::from_utf8(good).unwrap();
    let out = r
        .cmd(&["user", "list"])
        .env("LNMP_MASTER_KEY", hex.trim())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), before);
}

#[test]
fn config_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Run::new(tmp.path());
    std::fs::write(
        tmp.path().join("bad.toml"),
        "[http]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let line = r.fails(&["--config", "bad.toml", "config", "check"]);
    assert!(line.contains("http.listen"), "{line}");
    std::fs::write(
        tmp.path().join("typo.toml"),
        "[server]\ndomian = \"x.org\"\n",
    )
    .unwrap();
    assert!(
        r.fails(&["--config", "typo.toml", "config", "check"])
            .contains("domian")
    );
    assert!(
        r.fails(&["--config", "missing.toml", "config", "check"])
            .contains("missing.toml")
    );
    let out = r
        .cmd(&["config", "check"])
        .env("LNMP__SERVER__DOMAIN", "Bad_Domain")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.domain"));
    assert!(r.ok(&["config", "check"]).contains("lnmp.localhost"));
}

#[tokio::test]
async fn serve_answers_lookups_that_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Run::new(tmp.path());
    r.ok(&["user", "add", "alice"]);
    let alice: Address = address_of(&r.ok(&["user", "list"]), "alice")
        .parse()
        .unwrap();
    let port = common::free_port();
    let mut daemon = r
        .cmd(&["serve"])
        .env("LNMP__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("LNMP__LIMITS__SHUTDOWN_GRACE_SECONDS", "5")
        .env(
            "LNMP__RELAY__LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env("LNMP__RELAY__PUBLIC_URL", "wss://lnmp.localhost:7138")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = client.get(format!("{base}/healthz")).send().await
            && resp.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "daemon did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let resp = client
        .get(format!("{base}/.well-known/lnmp.json?name=alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let body = resp.bytes().await.unwrap();
    let doc = LookupDocument::from_json(&body, &Limits::default()).unwrap();
    doc.verify(&alice).unwrap();
    assert_eq!(doc.relays, ["wss://lnmp.localhost:7138"]);
    assert_eq!(doc.prices.stranger, 100);

    let resp = client
        .get(format!("{base}/.well-known/lnmp.json?name=ALICE"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "names are case-insensitive");
    for (q, status) in [
        ("?name=nobody", 404),
        ("", 400),
        ("?name=a..b", 400),
        ("?name=%ff", 400),
    ] {
        let resp = client
            .get(format!("{base}/.well-known/lnmp.json{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{q}");
        assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    }
    let metrics = common::fetch_text(&client, &format!("{base}/metrics")).await;
    assert!(
        metrics.contains(
            "lnmp_bridge_http_requests_total{route=\"/.well-known/lnmp.json\",status=\"404\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("lnmp_bridge_users 1"), "{metrics}");

    // SIGTERM: a clean, prompt exit.
    #[cfg(unix)]
    {
        let pid = daemon.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(s) = daemon.try_wait().unwrap() {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success());
    }
    #[cfg(not(unix))]
    daemon.kill().unwrap();
    let mut banner = String::new();
    std::io::Read::read_to_string(daemon.stdout.as_mut().unwrap(), &mut banner).unwrap();
    assert!(banner.contains("alice@lnmp.localhost"), "{banner}");
}

#[tokio::test]
async fn plain_http_behind_a_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let r = Run::new(tmp.path());
    let port = common::free_port();
    let mut daemon = r
        .cmd(&["serve"])
        .env("LNMP__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("LNMP__HTTP__TLS", "false")
        .env("LNMP__RELAY__ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await {
            break resp.text().await.unwrap();
        }
        assert!(Instant::now() < deadline, "daemon did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body, "ok\n");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}
