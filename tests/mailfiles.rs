//! `import` and `export`: mbox and Maildir fixtures into a user's mailboxes through
//! the store, checked over the store and byte for byte through the IMAP loader; re-runs,
//! interrupted runs, and export into another user. On SQLite, and on PostgreSQL too
//! when LNMP_TEST_DATABASE_URL is set.

mod common;

use indicatif::ProgressBar;
use lnmp_bridge::blob::BlobStore;
use lnmp_bridge::custody::Custody;
use lnmp_bridge::imap::message::Loader;
use lnmp_bridge::mailfiles::{self, ImportOptions, ImportSummary};
use lnmp_bridge::store::mail::{self, MailRow};
use lnmp_bridge::store::mailboxes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/mailfiles")
        .join(name)
}

/// A custody with users alice and bob, on one backend, and what to clean up after.
struct Env {
    custody: Custody,
    blobs: BlobStore,
    dir: tempfile::TempDir,
    pg: Option<(String, String)>,
}

impl Env {
    async fn close(self) {
        self.custody.store().close().await;
        if let Some((base, schema)) = self.pg {
            common::drop_pg_schema(&base, &schema).await;
        }
        drop(self.dir);
    }
}

/// The backends to run on: SQLite, and PostgreSQL if LNMP_TEST_DATABASE_URL is set.
fn backends() -> Vec<Option<String>> {
    let mut out = vec![None];
    if let Ok(url) = std::env::var("LNMP_TEST_DATABASE_URL") {
        out.push(Some(url));
    }
    out
}

async fn env(pg: Option<String>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = lnmp_bridge::config::Config::default();
    config.server.domain = "bridge.test".into();
    config.server.hostname = "mx.bridge.test".into();
    config.server.data_dir = dir.path().join("data");
    let pg = match pg {
        Some(base) => {
            let schema =
                format!("mailfiles_{}", std::process::id()) + &format!("_{}", rand_suffix());
            config.database.url = common::fresh_pg_schema(&base, &schema).await;
            Some((base, schema))
        }
        None => None,
    };
    let custody = lnmp_bridge::custody::open(&config).await.unwrap();
    for name in ["alice", "bob"] {
        custody.add_user(name, "correct horse").await.unwrap();
    }
    Env {
        custody,
        blobs: BlobStore::new(dir.path().join("data/blobs")),
        dir,
        pg,
    }
}

fn rand_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    format!("{:x}", h.finish())
}

fn options() -> ImportOptions {
    let config = lnmp_bridge::config::Config::default();
    ImportOptions::from_config(&config)
}

async fn import(e: &Env, user: &str, path: &Path, options: &ImportOptions) -> ImportSummary {
    mailfiles::import(
        &e.custody,
        &e.blobs,
        user,
        path,
        options,
        &ProgressBar::hidden(),
    )
    .await
    .unwrap()
}

/// Every message of the user: mailbox name → (bytes, flags, INTERNALDATE), by UID.
async fn contents(e: &Env, user: &str) -> BTreeMap<String, Vec<(Vec<u8>, String, i64)>> {
    let info = e.custody.user(user).await.unwrap();
    let identity = e.custody.identity(user).await.unwrap();
    let mut loader = Loader::new(
        e.custody.clone(),
        e.blobs.clone(),
        info.clone(),
        identity,
        4,
    );
    let mut out = BTreeMap::new();
    for b in mailboxes::list(e.custody.store(), info.id).await.unwrap() {
        let rows: Vec<MailRow> = mail::in_mailbox(e.custody.store(), b.id).await.unwrap();
        let mut msgs = Vec::new();
        for r in &rows {
            let bytes = loader.load(r, &[]).await.unwrap();
            msgs.push((bytes.to_vec(), r.flags.clone(), r.internal_date));
        }
        if !msgs.is_empty() {
            out.insert(b.name, msgs);
        }
    }
    out
}

fn subject(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// The UTC Unix time of a calendar date.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(y, mo, d)
        .unwrap()
        .and_hms_opt(h, mi, s)
        .unwrap()
        .and_utc()
        .timestamp()
}

#[tokio::test]
async fn mbox_import_keeps_flags_dates_and_bytes_and_skips_duplicates() {
    for backend in backends() {
        let e = env(backend).await;
        let mbox = fixture("bob.mbox");
        let s = import(&e, "bob", &mbox, &options()).await;
        assert_eq!(s.imported, 4, "{s:?}");
        assert_eq!(
            s.duplicates, 1,
            "the second delivery of <lunch-1@example.org>"
        );
        assert!(s.folders_created.is_empty());
        assert_eq!(s.failed.len(), 1, "{s:?}");
        assert!(s.failed[0].what.contains("message 6"), "{:?}", s.failed);
        assert!(s.failed[0].why.contains("header"), "{:?}", s.failed);

        let all = contents(&e, "bob").await;
        assert_eq!(all.keys().collect::<Vec<_>>(), ["INBOX"]);
        let inbox = &all["INBOX"];
        let subjects: Vec<String> = inbox.iter().map(|m| subject(&m.0)).collect();
        assert_eq!(
            subjects,
            [
                "Lunch on Friday?",
                "=?UTF-8?B?R3LDvMOfZSBhdXMgTcO8bmNoZW4g4piV?=",
                "The report, attached",
                "backup ok"
            ]
        );
        let flags: Vec<&str> = inbox.iter().map(|m| m.1.as_str()).collect();
        assert_eq!(
            flags,
            [
                "\\Answered \\Seen",
                "\\Flagged $Label1 travel",
                "",
                "\\Deleted"
            ]
        );
        let dates: Vec<i64> = inbox.iter().map(|m| m.2).collect();
        assert_eq!(
            dates,
            [
                utc(2024, 1, 15, 9, 30, 0),
                utc(2024, 2, 20, 18, 5, 33),
                utc(2024, 3, 6, 7, 0, 1),
                utc(2024, 3, 7, 3, 0, 0)
            ]
        );
        // Byte for byte: CRLF, mbox bookkeeping headers gone, one `>` taken off.
        let first = String::from_utf8(inbox[0].0.clone()).unwrap();
        assert!(first.starts_with("Return-Path: <alice@example.org>\r\nReceived: "));
        assert!(!first.contains("Status:"));
        assert!(first.ends_with(
            "Content-Type: text/plain; charset=us-ascii\r\n\r\nHi Bob,\r\n\r\nShall we have lunch on Friday?\r\n\r\n\
             From the archives: last time we went to the noodle place.\r\n>From a quoted quote.\r\n\r\nAlice\r\n"
        ));
        assert!(!first.replace("\r\n", "").contains('\n'));
        let second = String::from_utf8(inbox[1].0.clone()).unwrap();
        assert!(second.contains(
            "schöne Grüße aus München! Wir sehen uns am Wochenende.\r\nFrom me to you, with love"
        ));
        assert!(
            second
                .starts_with("From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>\r\n")
        );
        // The attachment arrives whole.
        let parsed = mail_parser::MessageParser::default()
            .parse(&inbox[2].0)
            .unwrap();
        let att = parsed.attachment(0).unwrap();
        assert_eq!(
            att.contents(),
            (0..=255u8).cycle().take(768).collect::<Vec<u8>>()
        );

        // Sizes as IMAP counts them.
        let info = e.custody.user("bob").await.unwrap();
        let rows = mail::list(e.custody.store(), info.id, "INBOX")
            .await
            .unwrap();
        for (r, m) in rows.iter().zip(inbox) {
            assert_eq!(r.size, m.0.len() as i64);
        }

        // Again: everything is there already.
        let again = import(&e, "bob", &mbox, &options()).await;
        assert_eq!((again.imported, again.duplicates), (0, 5), "{again:?}");
        assert_eq!(again.failed.len(), 1);
        assert_eq!(mail::count(e.custody.store(), info.id).await.unwrap(), 4);
        e.close().await;
    }
}

#[tokio::test]
async fn too_large_messages_are_refused_with_a_reason() {
    let e = env(None).await;
    let small = ImportOptions {
        max_message_bytes: 1200,
        ..options()
    };
    let s = import(&e, "bob", &fixture("bob.mbox"), &small).await;
    assert_eq!(s.imported, 3);
    assert_eq!(s.failed.len(), 2);
    assert!(s.failed[0].what.contains("message 3"));
    assert!(
        s.failed[0]
            .why
            .contains("imap.max_literal_bytes (1200 bytes)"),
        "{:?}",
        s.failed
    );
    e.close().await;
}

/// Copies a folder tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Sets the mtime of every file under `dir` to the time in its name (Maildir file
/// names start with the delivery time), as a mail server would have left them.
fn set_mtimes(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            set_mtimes(&entry.path());
        } else {
            let name = entry.file_name().into_string().unwrap();
            let secs: u64 = name.split('.').next().unwrap().parse().unwrap();
            let f = std::fs::File::options()
                .write(true)
                .open(entry.path())
                .unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap();
        }
    }
}

#[tokio::test]
async fn maildir_import_keeps_folders_flags_and_dates() {
    for backend in backends() {
        let e = env(backend).await;
        let dir = e.dir.path().join("Maildir");
        copy_tree(&fixture("maildir"), &dir);
        set_mtimes(&dir);
        let s = import(&e, "bob", &dir, &options()).await;
        assert_eq!((s.imported, s.duplicates), (7, 0), "{s:?}");
        assert!(s.failed.is_empty(), "{s:?}");
        let mut created = s.folders_created.clone();
        created.sort();
        assert_eq!(created, ["Archive/2024", "Café"]);
        let info = e.custody.user("bob").await.unwrap();
        let boxes = mailboxes::list(e.custody.store(), info.id).await.unwrap();
        assert!(
            boxes
                .iter()
                .any(|b| b.name == "Café" && b.special_use.is_none())
        );

        let all = contents(&e, "bob").await;
        let summary: BTreeMap<&str, Vec<(String, &str, i64)>> = all
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    v.iter()
                        .map(|m| (subject(&m.0), m.1.as_str(), m.2))
                        .collect(),
                )
            })
            .collect();
        let expected: BTreeMap<&str, Vec<(String, &str, i64)>> = [
            (
                "INBOX",
                vec![
                    // new/ comes first and is not \Seen.
                    (
                        "=?UTF-8?Q?Caf=C3=A9_demain=3F?=".to_owned(),
                        "",
                        1_700_000_003,
                    ),
                    ("Seen in the inbox".to_owned(), "\\Seen", 1_700_000_001),
                    (
                        "Flagged and answered".to_owned(),
                        "\\Answered \\Flagged",
                        1_700_000_002,
                    ),
                ],
            ),
            (
                "Sent",
                vec![(
                    "Re: Flagged and answered".to_owned(),
                    "\\Seen",
                    1_700_000_004,
                )],
            ),
            (
                "Drafts",
                vec![("Unfinished".to_owned(), "\\Draft \\Seen", 1_700_000_005)],
            ),
            (
                "Archive/2024",
                vec![("Old news".to_owned(), "\\Seen", 1_700_000_006)],
            ),
            (
                "Café",
                vec![(
                    "Deleted but kept".to_owned(),
                    "\\Deleted \\Seen",
                    1_700_000_007,
                )],
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(summary, expected);
        // The file's bytes exactly (it has CRLF line ends already).
        let file = std::fs::read(fixture("maildir/new/1700000003.M3P100.host")).unwrap();
        assert_eq!(all["INBOX"][0].0, file);

        let again = import(&e, "bob", &dir, &options()).await;
        assert_eq!((again.imported, again.duplicates), (0, 7), "{again:?}");
        assert!(again.folders_created.is_empty());
        e.close().await;
    }
}

#[tokio::test]
async fn an_interrupted_import_finishes_on_the_next_run() {
    for backend in backends() {
        let e = env(backend).await;
        let whole = std::fs::read_to_string(fixture("bob.mbox")).unwrap();
        // Stopped after the second message.
        let cut = whole.find("From carol@example.com").unwrap();
        let prefix = e.dir.path().join("prefix.mbox");
        std::fs::write(&prefix, &whole[..cut]).unwrap();
        let first = import(&e, "bob", &prefix, &options()).await;
        assert_eq!(first.imported, 2, "{first:?}");
        let s = import(&e, "bob", &fixture("bob.mbox"), &options()).await;
        assert_eq!((s.imported, s.duplicates), (2, 3), "{s:?}");
        let all = contents(&e, "bob").await;
        let inbox = &all["INBOX"];
        let mut ids: Vec<String> = inbox
            .iter()
            .filter_map(|m| {
                String::from_utf8_lossy(&m.0)
                    .lines()
                    .find_map(|l| l.strip_prefix("Message-ID: ").map(str::to_owned))
            })
            .collect();
        ids.sort();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before, "each Message-ID once");
        assert_eq!(inbox.len(), 4);
        e.close().await;
    }
}

#[tokio::test]
async fn export_then_import_into_another_user_gives_the_same_mail() {
    for backend in backends() {
        let e = env(backend).await;
        let dir = e.dir.path().join("Maildir");
        copy_tree(&fixture("maildir"), &dir);
        set_mtimes(&dir);
        import(&e, "alice", &fixture("bob.mbox"), &options()).await;
        import(&e, "alice", &dir, &options()).await;

        let mut out = Vec::new();
        let s = mailfiles::export(
            &e.custody,
            &e.blobs,
            "alice",
            &mut out,
            &ProgressBar::hidden(),
        )
        .await
        .unwrap();
        assert_eq!(s.messages, 11);
        assert!(s.failed.is_empty());
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains('\r'), "LF line ends");
        assert!(text.starts_with("From alice@example.org Mon Jan 15 09:30:00 2024\nX-Folder: INBOX\nStatus: RO\nX-Status: A\n"));
        assert!(text.contains("\n>From the archives"));
        assert!(text.contains("\n>>From a quoted quote."));
        assert!(
            text.contains("\n>From me to you, with love"),
            "every From line quoted"
        );
        assert!(text.contains("\nX-Folder: Café\nStatus: RO\nX-Status: D\n"));
        assert!(text.contains("\nFrom cron@example.net Thu Mar  7 03:00:00 2024\n"));

        let file = e.dir.path().join("alice.mbox");
        std::fs::write(&file, &out).unwrap();
        let back = import(&e, "bob", &file, &options()).await;
        assert_eq!((back.imported, back.duplicates), (11, 0), "{back:?}");
        assert!(back.failed.is_empty());
        assert_eq!(contents(&e, "alice").await, contents(&e, "bob").await);
        e.close().await;
    }
}

#[tokio::test]
async fn the_commands_run_against_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = lnmp_bridge::config::Config::default();
    config.server.domain = "bridge.test".into();
    config.server.hostname = "mx.bridge.test".into();
    config.server.data_dir = dir.path().join("data");
    let custody = lnmp_bridge::custody::open(&config).await.unwrap();
    custody.add_user("carol", "correct horse").await.unwrap();
    custody.store().close().await;
    // bob.mbox holds one message that has no header: the rest is imported, and the
    // command fails so that a script notices.
    let err = mailfiles::import_command(&config, "carol", &fixture("bob.mbox"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "1 message could not be imported (listed above); the rest is in"
    );
    let out = dir.path().join("out/carol.mbox");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    mailfiles::export_command(&config, "carol", &out)
        .await
        .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.matches("\nX-Folder: INBOX\n").count(), 4);
    let err = mailfiles::import_command(&config, "carol", dir.path())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("neither an mbox file nor a Maildir"),
        "{err}"
    );
    let err = mailfiles::import_command(&config, "nobody", &fixture("bob.mbox"))
        .await
        .unwrap_err();
    assert!(!err.to_string().is_empty());

    // Over a smaller size limit, more are left out; the rest still comes in.
    let custody = lnmp_bridge::custody::open(&config).await.unwrap();
    custody.add_user("dave", "correct horse").await.unwrap();
    custody.store().close().await;
    let mut small = config.clone();
    small.imap.max_literal_bytes = 1200;
    let err = mailfiles::import_command(&small, "dave", &fixture("bob.mbox"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "2 messages could not be imported (listed above); the rest is in"
    );
    let out = dir.path().join("out/dave.mbox");
    mailfiles::export_command(&config, "dave", &out)
        .await
        .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.matches("\nX-Folder: INBOX\n").count(), 3);
}

/// A raw IMAP client, enough for LOGIN, SELECT, IDLE and FETCH.
struct Imap {
    io: tokio::io::BufReader<tokio::net::TcpStream>,
    n: u32,
}

impl Imap {
    async fn connect(port: u16) -> Imap {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut c = Imap {
            io: tokio::io::BufReader::new(tcp),
            n: 0,
        };
        assert!(c.line().await.starts_with(b"* OK"));
        c
    }

    /// One response line, with any literal it announces read into it.
    async fn line(&mut self) -> Vec<u8> {
        common::raw_imap::response_line(&mut self.io).await
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    /// Sends a command; returns the untagged lines, asserting it ended OK.
    async fn ok(&mut self, text: &str) -> Vec<Vec<u8>> {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.send(format!("{tag} {text}\r\n").as_bytes()).await;
        let mut untagged = Vec::new();
        loop {
            let line = self.line().await;
            if line.starts_with(format!("{tag} ").as_bytes()) {
                assert!(
                    line.starts_with(format!("{tag} OK").as_bytes()),
                    "{text}: {}",
                    String::from_utf8_lossy(&line)
                );
                return untagged;
            }
            untagged.push(line);
        }
    }
}

/// The import as the command runs it, in its own connection to the database while the
/// daemon runs: a session idling in INBOX hears of the new mail, and FETCH serves the
/// stored bytes exactly.
#[tokio::test]
async fn importing_while_the_daemon_runs_wakes_idle_sessions() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::loopback_config(dir.path());
        config.imap.allow_plaintext_auth_on_loopback = true;
        config.imap.idle_poll_seconds = 1;
        let mut schema = None;
        if let Some(base) = &backend {
            let name = format!("mailfiles_daemon_{}", rand_suffix());
            config.database.url = common::fresh_pg_schema(base, &name).await;
            schema = Some((base.clone(), name));
        }
        let running = common::start_with_users(&config).await;
        let port = running.imap.iter().find(|(tls, _)| !tls).unwrap().1.port();
        let mut idler = Imap::connect(port).await;
        idler.ok("LOGIN alice pw-of-alice").await;
        idler.ok("SELECT INBOX").await;
        idler.send(b"i1 IDLE\r\n").await;
        assert!(idler.line().await.starts_with(b"+ "));

        // Its own custody, as the `import` command opens it.
        let custody = lnmp_bridge::custody::open(&config).await.unwrap();
        let blobs = BlobStore::new(config.server.data_dir.join("blobs"));
        let s = mailfiles::import(
            &custody,
            &blobs,
            "alice",
            &fixture("bob.mbox"),
            &ImportOptions::from_config(&config),
            &ProgressBar::hidden(),
        )
        .await
        .unwrap();
        assert_eq!(s.imported, 4);
        custody.store().close().await;
        let started = std::time::Instant::now();
        // New keywords come first as a FLAGS line.
        loop {
            let line = String::from_utf8(idler.line().await).unwrap();
            if line == "* 4 EXISTS\r\n" {
                break;
            }
            assert!(
                line.starts_with("* FLAGS ") || line.starts_with("* OK [PERMANENTFLAGS"),
                "{line}"
            );
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        idler.send(b"DONE\r\n").await;
        loop {
            if idler.line().await.starts_with(b"i1 OK") {
                break;
            }
        }
        let fetched = idler
            .ok("UID FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[])")
            .await;
        assert_eq!(fetched.len(), 4);
        let first = &fetched[0];
        let text = String::from_utf8_lossy(first);
        assert!(text.contains("\\Answered"), "{text}");
        assert!(
            text.contains("INTERNALDATE \"15-Jan-2024 09:30:00 +0000\""),
            "{text}"
        );
        let at = first.windows(3).position(|w| w == b"}\r\n").unwrap() + 3;
        let open = first[..at].iter().rposition(|&b| b == b'{').unwrap();
        let len: usize = String::from_utf8_lossy(&first[open + 1..at - 3])
            .parse()
            .unwrap();
        let body = &first[at..at + len];
        let expected = {
            let info = running.custody.user("alice").await.unwrap();
            let identity = running.custody.identity("alice").await.unwrap();
            let mut loader = Loader::new(
                running.custody.clone(),
                BlobStore::new(config.server.data_dir.join("blobs")),
                info.clone(),
                identity,
                1,
            );
            let rows = mail::list(running.custody.store(), info.id, "INBOX")
                .await
                .unwrap();
            loader.load(&rows[0], &[]).await.unwrap()
        };
        assert_eq!(body, expected.as_slice());
        assert!(body.ends_with(b"\r\n\r\nAlice\r\n"));
        running.stop().await;
        if let Some((base, name)) = schema {
            common::drop_pg_schema(&base, &name).await;
        }
    }
}

/// An import stopped at an arbitrary point (its future dropped, as when the process
/// is killed) leaves whole messages only; the next run adds the rest, each once.
#[tokio::test]
async fn an_import_cut_off_mid_way_leaves_whole_messages_and_resumes() {
    for backend in backends() {
        let e = env(backend).await;
        let mut text = String::new();
        for i in 0..60 {
            text.push_str(&format!(
                "From sender@example.org Mon Jan 15 09:{:02}:00 2024\nFrom: sender@example.org\n\
                 Subject: number {i}\nMessage-ID: <n{i}@example.org>\n\nbody {i}\n\n",
                i % 60
            ));
        }
        let file = e.dir.path().join("many.mbox");
        std::fs::write(&file, text).unwrap();
        let info = e.custody.user("bob").await.unwrap();
        let progress = ProgressBar::hidden();
        let opts = options();
        let mut running = Box::pin(mailfiles::import(
            &e.custody, &e.blobs, "bob", &file, &opts, &progress,
        ));
        // Let it file some, then stop it where it stands.
        loop {
            tokio::select! {
                _ = &mut running => panic!("the import ended before it was cut off"),
                _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => {
                    if mail::count(e.custody.store(), info.id).await.unwrap() >= 10 {
                        break;
                    }
                }
            }
        }
        drop(running);
        let before = mail::count(e.custody.store(), info.id).await.unwrap();
        assert!((10..60).contains(&before), "{before}");
        let s = import(&e, "bob", &file, &options()).await;
        assert_eq!(s.imported + s.duplicates, 60, "{s:?}");
        assert!(s.duplicates >= before as u64, "{s:?}");
        let inbox = &contents(&e, "bob").await["INBOX"];
        let mut subjects: Vec<String> = inbox.iter().map(|m| subject(&m.0)).collect();
        subjects.sort();
        subjects.dedup();
        assert_eq!(subjects.len(), 60);
        assert_eq!(inbox.len(), 60);
        // Every stored body has its row and every row its body.
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM stored_mail WHERE user_id = $1")
            .bind(info.id)
            .fetch_one(e.custody.store().pool())
            .await
            .unwrap();
        assert_eq!(stored, 60);
        e.close().await;
    }
}

/// With no date on the `From ` line, INTERNALDATE is the Date header's.
#[tokio::test]
async fn the_date_header_stands_in_for_a_missing_from_line_date() {
    let e = env(None).await;
    let file = e.dir.path().join("nodate.mbox");
    std::fs::write(
        &file,
        "From someone\nFrom: a@example.org\nDate: Tue, 20 Feb 2024 19:05:00 +0100\nSubject: s\n\nb\n",
    )
    .unwrap();
    let s = import(&e, "bob", &file, &options()).await;
    assert_eq!(s.imported, 1, "{s:?}");
    let inbox = &contents(&e, "bob").await["INBOX"];
    assert_eq!(inbox[0].2, utc(2024, 2, 20, 18, 5, 0));
    e.close().await;
}

/// `X-Folder:` sends a message to its mailbox, created with its parents, as IMAP
/// CREATE would, within `imap.max_mailboxes`.
#[tokio::test]
async fn folders_are_created_with_their_parents_within_the_limit() {
    let e = env(None).await;
    let file = e.dir.path().join("folders.mbox");
    std::fs::write(
        &file,
        "From a@example.org Mon Jan 15 09:30:00 2024\nX-Folder: Projects/2025/q1\nFrom: a@example.org\nSubject: one\n\nb\n\n\
         From a@example.org Mon Jan 15 09:31:00 2024\nX-Folder: inbox\nFrom: a@example.org\nSubject: two\n\nb\n\n\
         From a@example.org Mon Jan 15 09:32:00 2024\nX-Folder: Other/deep\nFrom: a@example.org\nSubject: three\n\nb\n",
    )
    .unwrap();
    let tight = ImportOptions {
        max_mailboxes: 10,
        ..options()
    };
    let s = import(&e, "bob", &file, &tight).await;
    assert_eq!(s.imported, 2, "{s:?}");
    assert_eq!(
        s.folders_created,
        ["Projects", "Projects/2025", "Projects/2025/q1"]
    );
    assert_eq!(s.failed.len(), 1);
    assert!(s.failed[0].why.contains("imap.max_mailboxes (10)"), "{s:?}");
    let all = contents(&e, "bob").await;
    assert_eq!(subject(&all["Projects/2025/q1"][0].0), "one");
    assert_eq!(subject(&all["INBOX"][0].0), "two");
    assert!(!String::from_utf8_lossy(&all["INBOX"][0].0).contains("X-Folder"));
    e.close().await;
}

/// Two imports of the same file at once file each message once.
#[tokio::test]
async fn two_imports_at_once_file_each_message_once() {
    for backend in backends() {
        let e = env(backend).await;
        let opts = options();
        let (progress_a, progress_b) = (ProgressBar::hidden(), ProgressBar::hidden());
        let mbox = fixture("bob.mbox");
        let (a, b) = tokio::join!(
            mailfiles::import(&e.custody, &e.blobs, "bob", &mbox, &opts, &progress_a),
            mailfiles::import(&e.custody, &e.blobs, "bob", &mbox, &opts, &progress_b),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        // The same bytes are never filed twice (checked under the mailbox's lock).
        // A second delivery with other headers and the same Message-ID may be filed
        // by each of two imports at once: that check reads what was there at start.
        let inbox = &contents(&e, "bob").await["INBOX"];
        let mut bytes: Vec<&Vec<u8>> = inbox.iter().map(|m| &m.0).collect();
        bytes.sort();
        bytes.dedup();
        assert_eq!(bytes.len(), inbox.len());
        assert!((4..=5).contains(&inbox.len()), "{a:?} {b:?}");
        assert_eq!(a.imported + b.imported, inbox.len() as u64);
        e.close().await;
    }
}
