//! Helpers shared by the integration tests that run the binary.

#![allow(dead_code)]

pub mod raw_imap;
pub mod raw_smtp;

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The stdout of a command that must have succeeded; fails showing `what` and its output.
pub fn stdout_of(what: impl std::fmt::Debug, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `cmd` with `stdin` as its standard input and collects its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The body of a GET that must succeed at the HTTP level.
pub async fn fetch_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// The domain and host name the in-process daemon tests use.
pub const DOMAIN: &str = "bridge.test";
pub const HOST: &str = "mx.bridge.test";

/// A config for a daemon run in process: [`DOMAIN`] with its data in `dir`, every
/// listener on a free loopback port, strangers' mail free. Tests tune it further
/// before starting.
pub fn loopback_config(dir: &std::path::Path) -> lnmp_bridge::config::Config {
    let mut config = lnmp_bridge::config::Config::default();
    config.server.domain = DOMAIN.into();
    config.server.hostname = HOST.into();
    config.server.data_dir = dir.join("data");
    config.http.listen = "127.0.0.1:0".into();
    config.relay.listen = "127.0.0.1:0".into();
    config.smtp.mx_listen = "127.0.0.1:0".into();
    config.smtp.submission_listen = "127.0.0.1:0".into();
    config.smtp.submissions_listen = "127.0.0.1:0".into();
    config.imap.listen = "127.0.0.1:0".into();
    config.imap.tls_listen = "127.0.0.1:0".into();
    // Mail from strangers passes free unless a test is about the paywall (which sets
    // its own price).
    config.pricing.stranger = 0;
    config
}

/// Validates `config`, starts the daemon, and adds the users alice and bob (password
/// `pw-of-<name>`).
pub async fn start_with_users(
    config: &lnmp_bridge::config::Config,
) -> lnmp_bridge::daemon::Running {
    config.validate().unwrap();
    let running = lnmp_bridge::daemon::start(config).await.unwrap();
    for name in ["alice", "bob"] {
        running
            .custody
            .add_user(name, &format!("pw-of-{name}"))
            .await
            .unwrap();
    }
    running
}

/// The port of a running daemon's SMTP listener of `kind`.
pub fn smtp_port(running: &lnmp_bridge::daemon::Running, kind: lnmp_bridge::smtp::Listener) -> u16 {
    running
        .smtp
        .iter()
        .find(|(k, _)| *k == kind)
        .unwrap()
        .1
        .port()
}

/// The PostgreSQL database of the tests that need one (LNMP_TEST_DATABASE_URL); without
/// it, says the test is skipped.
pub fn test_database_url() -> Option<String> {
    let url = std::env::var("LNMP_TEST_DATABASE_URL").ok();
    if url.is_none() {
        eprintln!("skipped: LNMP_TEST_DATABASE_URL is not set");
    }
    url
}

/// A new, empty PostgreSQL schema `schema` in the database at `base` (one a previous
/// run left is dropped first), and the database URL that works in it.
pub async fn fresh_pg_schema(base: &str, schema: &str) -> String {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(base).await.unwrap();
    for sql in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.unwrap();
    }
    admin.close().await.ok();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// Drops the schema `schema` of the database at `base`, if it can.
pub async fn drop_pg_schema(base: &str, schema: &str) {
    use sqlx::Connection;
    if let Ok(mut admin) = sqlx::PgConnection::connect(base).await {
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut admin)
            .await;
    }
}
