//! The SMTP server as a process: a daemon killed with SIGKILL while mail streams in has
//! every message it answered 250 for once it is started again.

#![cfg(unix)]

use lnmp_bridge::testing::dns;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_lnmp-bridge");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cmd(dir: &Path, mx: u16, dns: std::net::SocketAddr, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env_remove("LNMP_MASTER_KEY")
        .env("LNMP__SERVER__DOMAIN", "bridge.test")
        .env("LNMP__SERVER__HOSTNAME", "mx.bridge.test")
        .env(
            "LNMP__HTTP__LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env(
            "LNMP__RELAY__LISTEN",
            format!("127.0.0.1:{}", common::free_port()),
        )
        .env("LNMP__SMTP__MX_LISTEN", format!("127.0.0.1:{mx}"))
        // The senders here are strangers; this test is about durability, not the paywall.
        .env("LNMP__PRICING__STRANGER", "0")
        .env("LNMP__SMTP__SUBMISSION_LISTEN", "")
        .env("LNMP__SMTP__SUBMISSIONS_LISTEN", "")
        .env("LNMP__IMAP__LISTEN", "")
        .env("LNMP__IMAP__TLS_LISTEN", "")
        .env("LNMP__DNS__NAMESERVERS", format!("[\"{dns}\"]"));
    c
}

/// One session sending messages until the connection dies; records each subject the
/// server answered 250 for.
async fn send_until_killed(port: u16, session: usize, acked: Arc<Mutex<Vec<String>>>) {
    let Ok(tcp) = TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let mut io = BufReader::new(tcp);
    async fn reply(io: &mut BufReader<TcpStream>) -> Option<u16> {
        loop {
            let mut line = String::new();
            if io.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            if line.as_bytes().get(3) == Some(&b' ') {
                return line[..3].parse().ok();
            }
        }
    }
    reply(&mut io).await;
    io.get_mut()
        .write_all(b"EHLO load.example.test\r\n")
        .await
        .ok();
    reply(&mut io).await;
    for n in 0.. {
        let subject = format!("m-{session}-{n}");
        let data = "MAIL FROM:<bob@example.test>\r\nRCPT TO:<alice@bridge.test>\r\nDATA\r\n";
        if io.get_mut().write_all(data.as_bytes()).await.is_err() {
            return;
        }
        for _ in 0..3 {
            if reply(&mut io).await.is_none() {
                return;
            }
        }
        let body = format!(
            "From: bob@example.test\r\nSubject: {subject}\r\n\r\n{}\r\n.\r\n",
            "x".repeat(2000)
        );
        if io.get_mut().write_all(body.as_bytes()).await.is_err() {
            return;
        }
        match reply(&mut io).await {
            Some(250) => acked.lock().unwrap().push(subject),
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_answered_250_survives_sigkill() {
    let zone = dns::Zone::parse("example.test TXT \"v=spf1 ip4:127.0.0.1 -all\"").unwrap();
    let dns = dns::serve(zone, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mx = common::free_port();
    let mut add = cmd(
        dir,
        mx,
        dns.addr(),
        &["user", "add", "alice", "--password-stdin"],
    );
    let out = common::run_with_stdin(&mut add, "correct horse\n");
    common::stdout_of("user add", out);

    let mut daemon = Proc(
        cmd(dir, mx, dns.addr(), &["serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", mx)).is_err() {
        assert!(Instant::now() < deadline, "the MX never listened");
        std::thread::sleep(Duration::from_millis(50));
    }

    let acked = Arc::new(Mutex::new(Vec::new()));
    let sessions: Vec<_> = (0..4)
        .map(|s| tokio::spawn(send_until_killed(mx, s, acked.clone())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 80 {
        assert!(
            Instant::now() < deadline,
            "too slow: {} acked",
            acked.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL, mid-stream: no shutdown, no flush.
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    for s in sessions {
        let _ = s.await;
    }
    let acked = acked.lock().unwrap().clone();

    let out = cmd(dir, mx, dns.addr(), &["user", "inbox", "alice"])
        .output()
        .unwrap();
    let inbox = common::stdout_of("user inbox", out);
    let subjects: Vec<&str> = inbox
        .lines()
        .filter_map(|l| l.strip_prefix("subject: "))
        .collect();
    for s in &acked {
        assert_eq!(
            subjects.iter().filter(|x| *x == s).count(),
            1,
            "{s} was answered 250 but is not in the inbox exactly once"
        );
    }
    assert!(subjects.len() >= acked.len());
}
