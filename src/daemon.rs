//! `serve`: starts every listener on shared state, and on SIGTERM or Ctrl-C stops
//! accepting, lets in-flight work finish, and closes the database cleanly.

use crate::config::Config;
use crate::custody::{self, Custody};
use crate::http::{self, HttpLimits, HttpState};
use crate::metrics::Metrics;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs the daemon until a shutdown signal.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let custody = custody::open(&config).await?;
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();

    let tls = if config.http.tls {
        let (cert, key) = crate::tls::certificate_files(&config)?;
        Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            &cert,
            &key,
            &[b"h2", b"http/1.1"],
        )?))
    } else {
        None
    };
    let listen = config.http_listen();
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
    let bound = listener.local_addr()?;
    let limits = HttpLimits {
        request_timeout: Duration::from_secs(config.limits.http_request_timeout_seconds),
        max_connections: config.limits.http_max_connections,
        shutdown_grace: Duration::from_secs(config.limits.shutdown_grace_seconds),
    };
    let app = http::router(
        HttpState {
            custody: custody.clone(),
            metrics: metrics.clone(),
        },
        &limits,
    );
    let http_task = tokio::spawn(http::serve(
        listener,
        tls.clone(),
        app,
        limits,
        shutdown.clone(),
    ));

    print_banner(&config, &custody, bound, tls.is_some()).await?;
    tracing::info!(%bound, "serving");

    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; finishing in-flight work");
    shutdown.cancel();
    if let Err(e) = http_task.await {
        tracing::error!(error = %e, "HTTP server task failed");
    }
    custody.store().close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn print_banner(
    config: &Config,
    custody: &Custody,
    bound: std::net::SocketAddr,
    tls: bool,
) -> anyhow::Result<()> {
    let scheme = if tls { "https" } else { "http" };
    let users = custody.list_users().await?;
    println!(
        "lnmp-bridge {} serving {}",
        env!("CARGO_PKG_VERSION"),
        config.server.domain
    );
    println!("  {scheme}://{bound}/.well-known/lnmp.json?name=<user>   address lookup");
    println!("  {scheme}://{bound}/healthz, /metrics");
    println!("  data in {}", config.server.data_dir.display());
    if users.is_empty() {
        println!("  no users yet: lnmp-bridge user add <name>");
    }
    for u in &users {
        println!("  user {:<16} {}   {}", u.username, u.email, u.address);
    }
    println!("Mail clients: this version does not serve SMTP or IMAP yet.");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
