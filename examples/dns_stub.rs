//! A loopback DNS server for scripts: answers from a zone file until SIGTERM or Ctrl-C,
//! so SPF, DKIM, DMARC and MX lookups of a daemon under test stay offline.
//!
//!   cargo run --example dns_stub -- --listen 127.0.0.1:5353 --zone fixtures/dns/test.zone
//!
//! Listens on UDP and TCP (port 0 picks a free port) and prints one line,
//! `dns stub listening on <addr>`, once bound, for scripts to wait for. The zone format
//! is described in src/testing/dns.rs.

use anyhow::Context as _;
use clap::Parser;
use lnmp_bridge::testing::dns::{Zone, serve};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Address to answer on, UDP and TCP alike.
    #[arg(long, default_value = "127.0.0.1:5353")]
    listen: SocketAddr,
    /// The zone file.
    #[arg(long)]
    zone: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.zone)
        .with_context(|| format!("cannot read {}", args.zone.display()))?;
    let zone = Zone::parse(&text).with_context(|| format!("in {}", args.zone.display()))?;
    let server = serve(zone, args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "dns stub listening on {}", server.addr())?;
    stdout.flush()?;
    drop(stdout);

    shutdown().await?;
    drop(server);
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C (SIGINT).
async fn shutdown() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
