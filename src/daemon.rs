//! `serve` and `relay`: start the listeners and workers on shared state, and on SIGTERM or
//! Ctrl-C stop accepting, let in-flight work finish, and close the database cleanly.

use crate::config::{Config, RelayAccept};
use crate::custody::{self, Custody};
use crate::delivery::{Courier, CourierSettings};
use crate::http::{self, HttpLimits, HttpState};
use crate::lnmp::{Limits, Message};
use crate::metrics::Metrics;
use crate::relay::gate::AcceptGate;
use crate::relay::lookup::Resolver;
use crate::relay::outbox::{Outbox, RetryTiming};
use crate::relay::tls::{Trust, client_config};
use crate::relay::{ClientOptions, Relay, RelaySettings, subscriber};
use crate::smtp;
use crate::store::{self, Store, inbox};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The client side's TLS and limits: the public roots, the daemon's own certificate (so
/// it can reach its own relay), and the operator's CA file if any.
pub fn client_options(config: &Config) -> anyhow::Result<ClientOptions> {
    let mut files = Vec::new();
    if !config.relay_client.ca_file.as_os_str().is_empty() {
        files.push(config.relay_client.ca_file.clone());
    }
    let (own_cert, _) = crate::tls::self_signed_paths(config);
    if config.tls.cert_file.as_os_str().is_empty() && own_cert.exists() {
        files.push(own_cert);
    }
    let refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    Ok(ClientOptions {
        tls: client_config(Trust::Roots {
            public: true,
            files: &refs,
        })?,
        connect_timeout: Duration::from_secs(config.relay_client.publish_timeout_seconds),
        limits: Limits::default(),
    })
}

async fn relay_listener(
    config: &Config,
    certs: &Arc<crate::tls::CertStore>,
) -> anyhow::Result<(TcpListener, Option<tokio_rustls::TlsAcceptor>)> {
    let listen = config.relay_listen();
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (relay.listen)"))?;
    let tls = if config.relay.tls {
        Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::server_config_with(certs.clone(), &[b"http/1.1"])?,
        ))
    } else {
        None
    };
    Ok((listener, tls))
}

/// Runs the daemon until a shutdown signal.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let signal = shutdown_signal();
    let running = start(&config).await?;
    print_banner(&config, &running).await?;
    tracing::info!(http = %running.http, relay = ?running.relay, "serving");
    signal.await;
    running.stop().await;
    Ok(())
}

/// A started daemon: where it listens, and the handles to stop it.
pub struct Running {
    pub http: std::net::SocketAddr,
    pub http_tls: bool,
    pub relay: Option<std::net::SocketAddr>,
    pub smtp: Vec<(smtp::Listener, std::net::SocketAddr)>,
    /// (implicit TLS?, address) of each IMAP listener.
    pub imap: Vec<(bool, std::net::SocketAddr)>,
    /// The plain-HTTP listener answering ACME HTTP-01 challenges, if any.
    pub acme_http: Option<std::net::SocketAddr>,
    pub custody: Custody,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
}

impl Running {
    /// Stops accepting, lets in-flight work finish within the grace period, and closes
    /// the database.
    pub async fn stop(self) {
        tracing::info!("shutting down: no new connections; finishing in-flight work");
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some work did not finish within the grace period");
        }
        self.custody.store().close().await;
        tracing::info!("stopped");
    }
}

/// Opens the store and starts every listener and worker the config asks for.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let config = config.clone();
    let custody = custody::open(&config).await?;
    let blobs = crate::blob::BlobStore::new(config.server.data_dir.join("blobs"));
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();

    let backend =
        crate::lightning::open(&config, custody.store().clone(), custody.master_key()).await?;
    if backend.name() == "dev" {
        tracing::warn!(
            "Lightning backend is the embedded dev wallet: invoices are real BOLT11 on regtest, \
             but NO REAL MONEY MOVES; `lnmp-bridge dev pay <bolt11>` marks one paid. \
             Set [lightning] backend = \"lnbits\" or \"lnd\" to take payments."
        );
    }
    // One certificate for every listener, swapped in place when ACME renews it.
    let certs = crate::tls::CertStore::from_config(&config)?;
    let challenges = crate::acme::Challenges::default();
    let http_tls = if config.http.tls {
        let mut alpn: Vec<&[u8]> = vec![b"h2", b"http/1.1"];
        if config.acme.enabled && config.acme.challenge == crate::config::AcmeChallenge::TlsAlpn01 {
            alpn.push(crate::tls::ACME_TLS_ALPN);
        }
        Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::server_config_with(certs.clone(), &alpn)?,
        ))
    } else {
        None
    };
    let listen = config.http_listen();
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
    let http_bound = listener.local_addr()?;
    let mut paywall_settings = crate::paywall::PaywallSettings::from_config(&config);
    if config.paywall.public_url.is_empty() {
        // Pay links name the port actually bound (http.listen may ask for any port).
        paywall_settings.public_url = format!(
            "{}://{}:{}",
            if config.http.tls { "https" } else { "http" },
            config.server.hostname,
            http_bound.port()
        );
    }
    let paywall = Arc::new(crate::paywall::Paywall::new(
        custody.clone(),
        backend,
        paywall_settings,
    ));
    let limits = HttpLimits {
        request_timeout: Duration::from_secs(config.limits.http_request_timeout_seconds),
        max_connections: config.limits.http_max_connections,
        shutdown_grace: Duration::from_secs(config.limits.shutdown_grace_seconds),
    };
    let app = http::router(
        HttpState {
            custody: custody.clone(),
            blobs: blobs.clone(),
            metrics: metrics.clone(),
            paywall: paywall.clone(),
        },
        &limits,
    )
    // Mail client autoconfig (src/http/autoconfig.rs) is served from the config's listeners.
    .layer(axum::Extension(Arc::new(
        http::autoconfig::Autoconfig::from_config(&config),
    )));
    // HTTP-01 challenges are answered on the HTTP front too (behind a proxy for port 80).
    let app = app.merge(crate::acme::challenge_router(challenges.clone()));
    let acme_http = start_acme(&config, &certs, challenges, &limits, &tasks, &shutdown).await?;
    tasks.spawn(http::serve(
        listener,
        http_tls.clone(),
        app,
        limits,
        shutdown.clone(),
    ));

    let relay_bound = if config.relay.enabled {
        let (listener, tls) = relay_listener(&config, &certs).await?;
        let bound = listener.local_addr()?;
        let gate = Arc::new(crate::paywall::gate::PaywallGate::new(
            AcceptGate::new(custody.store().clone(), config.relay.accept),
            paywall.clone(),
        ));
        let relay = Relay::new(
            RelaySettings::from_config(&config),
            custody.store().clone(),
            gate,
        );
        paywall.attach_relay(relay.clone());
        tasks.spawn(relay.clone().serve(listener, tls, shutdown.clone()));
        tasks.spawn(relay.clone().prune_loop(shutdown.clone()));
        Some((bound, relay))
    } else {
        None
    };

    // After the relay is attached: paid held mail is announced to its subscribers.
    tasks.spawn(crate::paywall::settle::run(
        paywall.clone(),
        shutdown.clone(),
    ));

    let opts = client_options(&config)?;
    let outbox = Outbox::new(
        custody.store().clone(),
        opts.clone(),
        RetryTiming::from_config(&config.relay_client),
    );
    tasks.spawn(outbox.clone().run(shutdown.clone()));
    let courier = Arc::new(Courier::new(
        custody.clone(),
        blobs.clone(),
        relay_bound.as_ref().map(|(_, r)| r.clone()),
        outbox.clone(),
        CourierSettings::from_config(&config),
    ));
    outbox.set_claim(Duration::from_secs(
        match config.relay_client.claim_seconds {
            0 => config.outbox_attempt_seconds() + 30,
            set => set,
        },
    ));
    outbox.set_payer(Arc::new(crate::paywall::autopay::AutoPay::new(
        paywall.clone(),
        courier.clone(),
    )));
    start_outbound(
        &config,
        &custody,
        &blobs,
        courier.clone(),
        &tasks,
        &shutdown,
    )?;
    let smtp_bound = start_smtp(
        &config,
        &custody,
        courier,
        paywall.clone(),
        &opts,
        metrics.clone(),
        &certs,
        &tasks,
        &shutdown,
    )
    .await?;
    let imap_bound = start_imap(
        &config,
        &custody,
        blobs,
        metrics.clone(),
        &certs,
        &tasks,
        &shutdown,
    )
    .await?;
    if !config.relay.read_relays.is_empty() {
        tasks.spawn(follow_read_relays(
            custody.clone(),
            config.relay.read_relays.clone(),
            opts,
            shutdown.clone(),
        ));
    }

    Ok(Running {
        http: http_bound,
        http_tls: http_tls.is_some(),
        relay: relay_bound.map(|(a, _)| a),
        smtp: smtp_bound,
        imap: imap_bound,
        acme_http,
        custody,
        shutdown,
        tasks,
        grace: Duration::from_secs(config.limits.shutdown_grace_seconds + 5),
    })
}

/// Starts the outbound worker: the SMTP queue, forwards, mail to email senders, DSNs.
fn start_outbound(
    config: &Config,
    custody: &Custody,
    blobs: &crate::blob::BlobStore,
    courier: Arc<Courier>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let dns = Arc::new(smtp::verify::authenticator(&config.dns)?);
    let transport =
        crate::outbound::transport::Transport::new(&config.outbound, &config.server.hostname, dns)?;
    let dkim_dir = config.dkim_dir();
    let signer = crate::dkim::Signer::load(&dkim_dir, &config.server.domain)?;
    if signer.selectors().is_empty() {
        tracing::warn!(
            dir = %dkim_dir.display(),
            "no DKIM keys: outgoing mail leaves unsigned and will fail DMARC (quickstart makes keys)"
        );
    }
    let settings = crate::outbound::Settings::from_config(config);
    let bridge =
        crate::outbound::bridge::Bridge::new(custody.clone(), blobs.clone(), settings.clone());
    let outbound = Arc::new(crate::outbound::Outbound::new(
        transport, signer, courier, bridge, settings,
    ));
    tasks.spawn(outbound.run(shutdown.clone()));
    Ok(())
}

/// With ACME on: binds the plain-HTTP listener for HTTP-01 challenges (if configured)
/// and starts the renewal loop, which swaps new certificates into `certs`.
async fn start_acme(
    config: &Config,
    certs: &Arc<crate::tls::CertStore>,
    challenges: crate::acme::Challenges,
    limits: &HttpLimits,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if !config.acme.enabled {
        return Ok(None);
    }
    let bound = if config.acme.http_listen.is_empty() {
        None
    } else {
        let listen = &config.acme.http_listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (acme.http_listen)"))?;
        let bound = listener.local_addr()?;
        tasks.spawn(http::serve(
            listener,
            None,
            crate::acme::challenge_router(challenges.clone()),
            limits.clone(),
            shutdown.clone(),
        ));
        Some(bound)
    };
    let manager = crate::acme::Manager::new(config, certs.clone(), challenges);
    tasks.spawn(manager.run(shutdown.clone()));
    Ok(bound)
}

/// Binds the IMAP listeners and starts a server on each.
async fn start_imap(
    config: &Config,
    custody: &Custody,
    blobs: crate::blob::BlobStore,
    metrics: Arc<Metrics>,
    certs: &Arc<crate::tls::CertStore>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<(bool, std::net::SocketAddr)>> {
    let listeners = crate::imap::bind(config).await?;
    if listeners.is_empty() {
        return Ok(Vec::new());
    }
    let tls = tokio_rustls::TlsAcceptor::from(crate::tls::server_config_with(certs.clone(), &[])?);
    let server = crate::imap::ImapServer::new(
        crate::imap::ImapSettings {
            hostname: config.server.hostname.clone(),
            domain: config.server.domain.clone(),
            imap: config.imap.clone(),
        },
        custody.clone(),
        blobs,
        Some(tls),
        metrics,
    );
    let mut bound = Vec::new();
    for (implicit_tls, listener, addr) in listeners {
        tasks.spawn(
            server
                .clone()
                .serve(listener, implicit_tls, shutdown.clone()),
        );
        bound.push((implicit_tls, addr));
    }
    Ok(bound)
}

/// Binds the SMTP listeners and starts a server on each.
#[allow(clippy::too_many_arguments)]
async fn start_smtp(
    config: &Config,
    custody: &Custody,
    courier: Arc<Courier>,
    admission: Arc<dyn smtp::Admission>,
    opts: &ClientOptions,
    metrics: Arc<Metrics>,
    certs: &Arc<crate::tls::CertStore>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<(smtp::Listener, std::net::SocketAddr)>> {
    let listeners = smtp::bind(config).await?;
    if listeners.is_empty() {
        return Ok(Vec::new());
    }
    let tls = tokio_rustls::TlsAcceptor::from(crate::tls::server_config_with(certs.clone(), &[])?);
    let verifier = smtp::verify::Verifier::new(
        smtp::verify::authenticator(&config.dns)?,
        &config.server.hostname,
        &config.smtp,
    );
    let server = smtp::SmtpServer::new(
        smtp::SmtpSettings {
            hostname: config.server.hostname.clone(),
            domain: config.server.domain.clone(),
            smtp: config.smtp.clone(),
            max_hops: config.outbound.max_hops,
        },
        custody.clone(),
        courier,
        verifier,
        admission,
        Some(tls),
        Resolver::new(
            opts.tls.clone(),
            Some(config.relay_client.lookup_base.clone()).filter(|b| !b.is_empty()),
        )?,
        metrics,
    );
    let mut bound = Vec::new();
    for (kind, listener, addr) in listeners {
        tasks.spawn(server.clone().serve(listener, kind, shutdown.clone()));
        bound.push((kind, addr));
    }
    Ok(bound)
}

/// `relay`: only the relay, on its own store, taking every valid message unless the
/// config says otherwise.
pub async fn relay_only(mut config: Config, accept_all: bool) -> anyhow::Result<()> {
    if accept_all {
        config.relay.accept = RelayAccept::All;
    }
    let options = store::StoreOptions {
        max_connections: config.database.max_connections,
        sqlite_group_commit_max: config.database.sqlite_group_commit_max,
    };
    std::fs::create_dir_all(&config.server.data_dir)
        .with_context(|| format!("cannot create {}", config.server.data_dir.display()))?;
    let store = Store::open(&config.database_url(), &options).await?;
    store.migrate().await?;
    let certs = crate::tls::CertStore::from_config(&config)?;
    let (listener, tls) = relay_listener(&config, &certs).await?;
    let bound = listener.local_addr()?;
    let gate = Arc::new(AcceptGate::new(store.clone(), config.relay.accept));
    let relay = Relay::new(RelaySettings::from_config(&config), store.clone(), gate);
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(relay.clone().serve(listener, tls, shutdown.clone()));
    tasks.spawn(relay.clone().prune_loop(shutdown.clone()));
    println!(
        "lnmp-bridge relay listening on {bound}; AUTH answers must name {}",
        relay.settings.public_url
    );
    tracing::info!(%bound, url = %relay.settings.public_url, "relay serving");
    wait_for_signal().await;
    shutdown.cancel();
    tasks.close();
    let _ = tokio::time::timeout(
        Duration::from_secs(config.limits.shutdown_grace_seconds + 5),
        tasks.wait(),
    )
    .await;
    store.close().await;
    Ok(())
}

/// Keeps one subscription per user and read relay, starting ones for new users and
/// stopping those of removed users, every minute.
async fn follow_read_relays(
    custody: Custody,
    relays: Vec<String>,
    opts: ClientOptions,
    shutdown: CancellationToken,
) {
    let mut running: HashMap<(i64, String), CancellationToken> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let users = match custody.list_users().await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list users to follow their relays");
                continue;
            }
        };
        let wanted: Vec<(i64, String)> = users
            .iter()
            .flat_map(|u| relays.iter().map(move |r| (u.id, r.clone())))
            .collect();
        running.retain(|k, token| {
            let keep = wanted.contains(k);
            if !keep {
                token.cancel();
            }
            keep
        });
        for user in &users {
            let identity = match custody.identity(&user.username).await {
                Ok(i) => Arc::new(i),
                Err(e) => {
                    tracing::error!(user = %user.username, error = %e, "cannot open the user's key");
                    continue;
                }
            };
            let since = inbox::latest(custody.store(), user.id)
                .await
                .ok()
                .flatten()
                .unwrap_or(0)
                .max(0) as u64;
            for url in &relays {
                let key = (user.id, url.clone());
                if running.contains_key(&key) {
                    continue;
                }
                let token = shutdown.child_token();
                running.insert(key, token.clone());
                let store = custody.store().clone();
                let user_id = user.id;
                let handler: subscriber::Handler = Arc::new(move |m: Message| {
                    let store = store.clone();
                    Box::pin(async move { keep_in_inbox(&store, user_id, m).await })
                });
                tokio::spawn(subscriber::follow(
                    url.clone(),
                    identity.clone(),
                    opts.clone(),
                    since,
                    handler,
                    token,
                ));
            }
        }
    }
}

/// Stores a message read from a relay in a user's inbox, if it verifies.
async fn keep_in_inbox(store: &Store, user_id: i64, mut m: Message) -> anyhow::Result<()> {
    if let Err(e) = m.verify() {
        tracing::warn!(id = %m.id, error = %e, "dropping a message that does not verify");
        return Ok(());
    }
    // A payment proof is checked only by the relay that issued its invoice; one read
    // from another relay cannot be, so it is not shown as paid.
    m.payment = None;
    let json = m.to_json();
    if inbox::insert(store, user_id, m, json, store::now()).await? {
        store.mail_changed(user_id).await;
    }
    Ok(())
}

async fn print_banner(config: &Config, running: &Running) -> anyhow::Result<()> {
    let (custody, http, tls, relay, smtp) = (
        &running.custody,
        running.http,
        running.http_tls,
        running.relay,
        &running.smtp,
    );
    let scheme = if tls { "https" } else { "http" };
    let users = custody.list_users().await?;
    println!(
        "lnmp-bridge {} serving {}",
        env!("CARGO_PKG_VERSION"),
        config.server.domain
    );
    println!("  {scheme}://{http}/.well-known/lnmp.json?name=<user>   address lookup");
    println!("  {scheme}://{http}/healthz, /metrics");
    if let Some(r) = relay {
        println!("  relay on {r}, advertised as {}", config.relay_url());
    }
    println!("  data in {}", config.server.data_dir.display());
    if users.is_empty() {
        println!("  no users yet: lnmp-bridge user add <name>");
    }
    for u in &users {
        println!("  user {:<16} {}   {}", u.username, u.email, u.address);
    }
    for (kind, addr) in smtp {
        let what = match kind {
            smtp::Listener::Mx => "SMTP MX (STARTTLS)",
            smtp::Listener::Submission => "SMTP submission (STARTTLS, AUTH)",
            smtp::Listener::Submissions => "SMTP submission (implicit TLS, AUTH)",
        };
        println!("  {what} on {addr}");
    }
    for (implicit_tls, addr) in &running.imap {
        let what = if *implicit_tls {
            "IMAP (implicit TLS)"
        } else {
            "IMAP (STARTTLS)"
        };
        println!("  {what} on {addr}");
    }
    println!(
        "Mail clients: IMAP and SMTP submission as above; log in with the user's name (or name@{}) and password.",
        config.server.domain
    );
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn wait_for_signal() {
    shutdown_signal().await
}

/// A future that ends at SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that comes while the
/// daemon is still starting is not lost (nor does it kill the process unhandled).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {}
                _ = wait(int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
