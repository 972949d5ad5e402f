//! Backup and restore end to end: mail in over SMTP and IMAP APPEND, a backup taken
//! while the daemon runs, the backup restored into a new folder with the same master
//! key, and the same mail read there over IMAP, byte for byte.

mod common;

use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::client::Tls;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use lnmp_bridge::backup::{self, BackupError, DatabasePart, Section};
use lnmp_bridge::config::Config;
use lnmp_bridge::daemon::Running;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use common::DOMAIN;

fn config_in(dir: &std::path::Path) -> Config {
    let mut config = common::loopback_config(dir);
    config.smtp.verify = false;
    config.imap.allow_plaintext_auth_on_loopback = true;
    config
}

fn imap_port(running: &Running) -> u16 {
    running.imap.iter().find(|(tls, _)| !tls).unwrap().1.port()
}

/// A raw IMAP client: tagged commands, answers with their literals.
struct Imap {
    io: BufReader<TcpStream>,
    n: u32,
}

impl Imap {
    async fn connect(port: u16, user: &str) -> Imap {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut c = Imap {
            io: BufReader::new(tcp),
            n: 0,
        };
        let (greeting, _) = c.line().await;
        assert!(greeting.starts_with(b"* OK"));
        let (tagged, _, _) = c.cmd(&format!("LOGIN {user} pw-of-{user}")).await;
        assert!(tagged.contains(" OK"), "{tagged}");
        c
    }

    /// One line, and the literal it announces if any.
    async fn line(&mut self) -> (Vec<u8>, Option<Vec<u8>>) {
        let (line, lit) = common::raw_imap::line_and_literal(&mut self.io).await;
        if lit.is_some() {
            // The rest of the response after the literal (")\r\n").
            let mut rest = Vec::new();
            self.io.read_until(b'\n', &mut rest).await.unwrap();
        }
        (line, lit)
    }

    /// Sends a command; returns the tagged line, the untagged lines and the literals.
    async fn cmd(&mut self, text: &str) -> (String, Vec<String>, Vec<Vec<u8>>) {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.io
            .get_mut()
            .write_all(format!("{tag} {text}\r\n").as_bytes())
            .await
            .unwrap();
        self.until(&tag).await
    }

    async fn until(&mut self, tag: &str) -> (String, Vec<String>, Vec<Vec<u8>>) {
        let mut lines = Vec::new();
        let mut literals = Vec::new();
        loop {
            let (line, lit) = self.line().await;
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            if let Some(l) = lit {
                literals.push(l);
            }
            if text.starts_with(&format!("{tag} ")) {
                return (text, lines, literals);
            }
            lines.push(text);
        }
    }

    async fn append(&mut self, message: &[u8]) {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.io
            .get_mut()
            .write_all(format!("{tag} APPEND INBOX {{{}}}\r\n", message.len()).as_bytes())
            .await
            .unwrap();
        let (cont, _) = self.line().await;
        assert!(cont.starts_with(b"+"), "{}", String::from_utf8_lossy(&cont));
        self.io.get_mut().write_all(message).await.unwrap();
        self.io.get_mut().write_all(b"\r\n").await.unwrap();
        let (tagged, _, _) = self.until(&tag).await;
        assert!(tagged.contains(" OK"), "{tagged}");
    }

    /// Every message of the INBOX, whole, in UID order.
    async fn all_messages(&mut self) -> Vec<Vec<u8>> {
        let (tagged, _, _) = self.cmd("SELECT INBOX").await;
        assert!(tagged.contains(" OK"), "{tagged}");
        let (tagged, _, literals) = self.cmd("UID FETCH 1:* (BODY.PEEK[])").await;
        assert!(tagged.contains(" OK"), "{tagged}");
        literals
    }
}

/// The INBOX once it holds `n` messages.
async fn wait_for(port: u16, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = Imap::connect(port, "alice").await;
        let all = c.all_messages().await;
        if all.len() >= n || Instant::now() > deadline {
            assert_eq!(all.len(), n, "messages in the INBOX");
            return all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn send_over_mx(running: &Running) {
    let port = common::smtp_port(running, lnmp_bridge::smtp::Listener::Mx);
    let mx = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::None)
        .hello_name(lettre::transport::smtp::extension::ClientId::Domain(
            "mail.example.test".into(),
        ))
        .build();
    let to: Mailbox = format!("alice@{DOMAIN}").parse().unwrap();
    let small = lettre::Message::builder()
        .from("Bob <bob@example.test>".parse::<Mailbox>().unwrap())
        .to(to.clone())
        .subject("Kept safe")
        .body("A message that must survive a backup.\n".to_owned())
        .unwrap();
    mx.send(small).await.unwrap();
    // Larger than smtp.max_inline_raw_bytes: it travels as a blob, which the backup
    // must carry too.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let with_blob = lettre::Message::builder()
        .from("Bob <bob@example.test>".parse::<Mailbox>().unwrap())
        .to(to)
        .subject("With an attachment")
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain("See the attachment.".to_owned()))
                .singlepart(
                    Attachment::new("data.bin".into())
                        .body(big, ContentType::parse("application/octet-stream").unwrap()),
                ),
        )
        .unwrap();
    mx.send(with_blob).await.unwrap();
}

const APPENDED: &[u8] = b"From: alice@bridge.test\r\nTo: alice@bridge.test\r\nSubject: a note to self\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <note@bridge.test>\r\n\r\nRemember the master key.\r\n";

#[tokio::test]
async fn a_backup_taken_while_running_restores_into_a_new_folder_with_the_same_mail() {
    let old = tempfile::tempdir().unwrap();
    let config = config_in(old.path());
    let running = common::start_with_users(&config).await;
    send_over_mx(&running).await;
    let port = imap_port(&running);
    {
        let mut c = Imap::connect(port, "alice").await;
        c.append(APPENDED).await;
    }
    let before = wait_for(port, 3).await;
    assert!(
        before.iter().any(|m| m == APPENDED),
        "APPEND kept the bytes"
    );
    assert!(
        std::fs::read_dir(config.server.data_dir.join("blobs"))
            .is_ok_and(|mut d| d.next().is_some()),
        "the big message went to the blob store"
    );

    // The backup, while the daemon runs and while a session reads.
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().join("backup");
    let reading = tokio::spawn(async move { wait_for(port, 3).await });
    let report = backup::backup(&config, None, &dir).await.unwrap();
    reading.await.unwrap();
    let m = &report.manifest;
    assert_eq!(m.database, DatabasePart::Sqlite);
    assert!(!m.master_key_included);
    assert!(!m.master_key_check.is_empty());
    assert!(m.files.iter().any(|f| f.path.starts_with("blobs/")));
    assert!(m.files.iter().any(|f| f.path == "tls/cert.pem"));
    assert!(
        !m.files.iter().any(|f| f.path.contains("master.key")),
        "never the master key"
    );
    assert!(!dir.join("data").join("master.key").exists());
    backup::verify(&dir, m).unwrap();

    // A second backup into the same folder keeps the blobs it has.
    let again = backup::backup(&config, None, &dir).await.unwrap();
    let blobs = again
        .manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with("blobs/"))
        .count();
    assert!(again.copied <= again.manifest.files.len() - blobs);
    // Not into a folder with other things in it.
    let other = target.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("x"), "x").unwrap();
    assert!(matches!(
        backup::backup(&config, None, &other).await,
        Err(BackupError::NotEmpty(_))
    ));
    running.stop().await;

    // A new folder: without the master key, restore refuses and says why.
    let new = tempfile::tempdir().unwrap();
    let restored = config_in(new.path());
    let err = backup::restore(&restored, &dir, false).await.unwrap_err();
    assert!(matches!(err, BackupError::MasterKeyMissing(_)), "{err}");
    assert!(err.to_string().contains("master key"), "{err}");
    assert!(!restored.server.data_dir.join("lnmp-bridge.db").exists());

    // With the same master key it restores, and reads the same mail.
    std::fs::create_dir_all(&restored.server.data_dir).unwrap();
    copy_key(&config, &restored);
    let done = backup::restore(&restored, &dir, false).await.unwrap();
    assert!(done.files >= 3);
    // A second restore over it is refused without --force.
    assert!(matches!(
        backup::restore(&restored, &dir, false).await,
        Err(BackupError::DatabaseExists(_))
    ));
    let running = lnmp_bridge::daemon::start(&restored).await.unwrap();
    let after = wait_for(imap_port(&running), 3).await;
    assert_eq!(after, before, "the same messages, byte for byte");
    running.stop().await;

    // --force replaces it, keeping the old one aside.
    let forced = backup::restore(&restored, &dir, true).await.unwrap();
    assert!(!forced.replaced.is_empty());
    assert!(forced.replaced.iter().all(|p| p.exists()));
}

fn copy_key(from: &Config, to: &Config) {
    let key = to.master_key_file();
    std::fs::copy(from.master_key_file(), &key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[tokio::test]
async fn restore_with_another_master_key_fails_clearly_and_changes_nothing() {
    let old = tempfile::tempdir().unwrap();
    let config = config_in(old.path());
    let running = common::start_with_users(&config).await;
    let dir = old.path().join("backup");
    backup::backup(&config, None, &dir).await.unwrap();
    running.stop().await;

    let new = tempfile::tempdir().unwrap();
    let restored = config_in(new.path());
    lnmp_bridge::custody::master_key::MasterKey::generate()
        .create_file(&restored.master_key_file())
        .unwrap();
    let err = backup::restore(&restored, &dir, false).await.unwrap_err();
    assert!(matches!(err, BackupError::WrongMasterKey(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("not the key of this backup"), "{text}");
    assert!(text.contains("Nothing was restored"), "{text}");
    assert!(!restored.server.data_dir.join("lnmp-bridge.db").exists());
    assert!(!restored.server.data_dir.join("blobs").exists());

    // A damaged file is found before anything changes.
    let manifest = backup::read_manifest(&dir).unwrap();
    let victim = manifest
        .files
        .iter()
        .find(|f| f.section == Section::Database)
        .unwrap()
        .in_backup(&dir);
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    copy_key(&config, &{
        let mut c = restored.clone();
        c.secrets.master_key_file = new.path().join("right.key");
        c
    });
    let mut with_right_key = restored.clone();
    with_right_key.secrets.master_key_file = new.path().join("right.key");
    let err = backup::restore(&with_right_key, &dir, false)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Checksum(_)), "{err}");
}

#[tokio::test]
async fn postgres_backups_explain_pg_dump_and_keep_the_files() {
    let Some(url) = common::test_database_url() else {
        return;
    };
    let schema = format!("backup_{}", std::process::id());
    let url = common::fresh_pg_schema(&url, &schema).await;
    let old = tempfile::tempdir().unwrap();
    let mut config = config_in(old.path());
    config.database.url = url.clone();
    let running = common::start_with_users(&config).await;
    let dir = old.path().join("backup");
    let report = backup::backup(&config, None, &dir).await.unwrap();
    running.stop().await;
    let DatabasePart::Postgres {
        pg_dump,
        pg_restore,
    } = &report.manifest.database
    else {
        panic!("{:?}", report.manifest.database)
    };
    assert!(pg_dump.starts_with("pg_dump --format=custom"), "{pg_dump}");
    assert!(pg_restore.starts_with("pg_restore"), "{pg_restore}");
    assert!(!report.manifest.master_key_check.is_empty());
    assert!(!dir.join(backup::DATABASE).exists());
    assert!(
        report
            .manifest
            .files
            .iter()
            .any(|f| f.path == "tls/cert.pem")
    );

    // Restoring the files part onto the same database checks the key.
    let new = tempfile::tempdir().unwrap();
    let mut restored = config_in(new.path());
    restored.database.url = url;
    lnmp_bridge::custody::master_key::MasterKey::generate()
        .create_file(&restored.master_key_file())
        .unwrap();
    assert!(matches!(
        backup::restore(&restored, &dir, false).await,
        Err(BackupError::WrongMasterKey(_))
    ));
    std::fs::remove_file(restored.master_key_file()).unwrap();
    copy_key(&config, &restored);
    backup::restore(&restored, &dir, false).await.unwrap();
    assert!(restored.server.data_dir.join("tls/cert.pem").exists());
    if let Ok(base) = std::env::var("LNMP_TEST_DATABASE_URL") {
        common::drop_pg_schema(&base, &schema).await;
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_lnmp-bridge");

fn cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("LNMP_MASTER_KEY")
        .env_remove("LNMP_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn the_commands_back_up_remind_of_the_key_and_restore() {
    let old = tempfile::tempdir().unwrap();
    let out = cli(
        old.path(),
        &["quickstart", "--domain", "example.com", "--admin", "alice"],
    );
    assert!(out.status.success(), "{out:?}");
    let backup_dir = old.path().join("backup");
    let out = cli(
        old.path(),
        &[
            "--config",
            "lnmp-bridge.toml",
            "backup",
            backup_dir.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("VACUUM INTO"), "{text}");
    assert!(text.contains("master key is NOT in the backup"), "{text}");
    assert!(text.contains("master.key"), "{text}");
    assert!(text.contains("config    included"), "{text}");
    assert!(backup_dir.join("config/lnmp-bridge.toml").is_file());
    assert!(backup_dir.join("data/dkim/lnmp1r.rsa.pem").is_file());

    // A new machine: the same config file, no master key yet.
    let new = tempfile::tempdir().unwrap();
    std::fs::copy(
        old.path().join("lnmp-bridge.toml"),
        new.path().join("lnmp-bridge.toml"),
    )
    .unwrap();
    let restore = [
        "--config",
        "lnmp-bridge.toml",
        "restore",
        backup_dir.to_str().unwrap(),
    ];
    let out = cli(new.path(), &restore);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the master key is missing"), "{err}");
    std::fs::create_dir_all(new.path().join("data")).unwrap();
    let key = new.path().join("data/master.key");
    std::fs::copy(old.path().join("data/master.key"), &key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = cli(new.path(), &restore);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("The master key opens the restored database"),
        "{text}"
    );
    let out = cli(new.path(), &restore);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let mut forced = restore.to_vec();
    forced.push("--force");
    assert!(cli(new.path(), &forced).status.success());
    let out = cli(
        new.path(),
        &["--config", "lnmp-bridge.toml", "user", "list"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("alice"),
        "{out:?}"
    );
}
