//! The IMAP server: how Thunderbird and every other mail client read the domain's
//! mail. IMAP4rev1 (RFC 3501) with the extensions clients lean on (IDLE, UIDPLUS,
//! MOVE, CONDSTORE, SPECIAL-USE, ...), on port 143 with STARTTLS and 993 with
//! implicit TLS.
//!
//! Commands are parsed by imap-codec (its fragmentizer frames lines and literals);
//! responses are written by [`wire`], so what goes out can be compared byte for byte
//! with Dovecot's. The mail itself lives in the store (`store::mail`): each row points
//! at a body sealed to the user, which [`message`] opens and renders, and
//! [`structure`] takes apart for FETCH. Sessions learn of changes made elsewhere
//! (SMTP, the relay, other sessions, other daemons) through `store::changes`.

mod folders;
pub mod message;
mod names;
pub mod search;
mod selected;
mod session;
pub mod structure;
pub mod wire;

use crate::blob::BlobStore;
use crate::custody::Custody;
use crate::net::ConnectionSlots;
use crate::ratelimit::AuthLimiter;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The server's settings, taken from the config.
#[derive(Debug, Clone)]
pub struct ImapSettings {
    pub hostname: String,
    pub domain: String,
    pub imap: crate::config::Imap,
}

pub struct ImapServer {
    settings: ImapSettings,
    custody: Custody,
    blobs: BlobStore,
    tls: Option<TlsAcceptor>,
    auth_limits: Mutex<AuthLimiter>,
    slots: Arc<ConnectionSlots>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl ImapServer {
    pub fn new(
        settings: ImapSettings,
        custody: Custody,
        blobs: BlobStore,
        tls: Option<TlsAcceptor>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<ImapServer> {
        let s = &settings.imap;
        let auth_limits = AuthLimiter::new(
            s.auth_failures_per_ip,
            s.auth_failures_per_user,
            Duration::from_secs(s.auth_window_seconds),
        );
        let slots = ConnectionSlots::new(s.max_connections, s.max_connections_per_ip);
        Arc::new(ImapServer {
            settings,
            custody,
            blobs,
            tls,
            auth_limits: Mutex::new(auth_limits),
            slots,
            metrics,
        })
    }

    fn count_session(&self, listener: &'static str, result: &'static str) {
        self.metrics
            .imap_sessions
            .get_or_create(&crate::metrics::SmtpLabels { listener, result })
            .inc();
    }

    /// Accepts connections on `listener` until `shutdown`, a session each.
    /// `implicit_tls` is the port-993 listener.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        implicit_tls: bool,
        shutdown: CancellationToken,
    ) {
        let name = if implicit_tls { "imaps" } else { "imap" };
        let tracker = tokio_util::task::TaskTracker::new();
        loop {
            let Some((tcp, peer)) = crate::net::accept(&listener, &shutdown, name).await else {
                break;
            };
            let _ = tcp.set_nodelay(true);
            let slot = self.slots.take(peer.ip());
            let server = self.clone();
            let shutdown = shutdown.clone();
            let span = tracing::info_span!("imap", listener = name, %peer);
            tracker.spawn(
                async move {
                    let Some(slot) = slot else {
                        server.count_session(name, "refused");
                        session::refuse_busy(tcp, implicit_tls).await;
                        return;
                    };
                    server.count_session(name, "accepted");
                    session::run(server.clone(), tcp, peer, implicit_tls, shutdown).await;
                    drop(slot);
                }
                .instrument(span),
            );
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// Binds every configured IMAP listener: (implicit TLS?, listener, bound address).
pub async fn bind(
    config: &crate::config::Config,
) -> anyhow::Result<Vec<(bool, TcpListener, SocketAddr)>> {
    use anyhow::Context;
    let mut out = Vec::new();
    for (tls, addr) in config.imap_listeners() {
        let key = if tls {
            "imap.tls_listen"
        } else {
            "imap.listen"
        };
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} ({key})"))?;
        let bound = l.local_addr()?;
        out.push((tls, l, bound));
    }
    Ok(out)
}
