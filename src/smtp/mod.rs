//! The SMTP server: the MX (mail from the email world, port 25, STARTTLS), submission
//! (port 587, STARTTLS and AUTH) and submissions (port 465, implicit TLS), one session
//! state machine on smtp-proto's parser over tokio.
//!
//! What a session accepts goes to [`crate::delivery::Courier`], which commits it before
//! the session answers 250. On the MX, the SPF/DKIM/DMARC verdict ([`verify`]) and the
//! [`Admission`] decision (the paywall's seam) come between the end of DATA and the
//! commit, so mail is refused inside the session rather than bounced later.

mod answer;
pub mod data;
mod recipient;
pub mod reply;
mod session;
pub mod verify;

use crate::custody::Custody;
use crate::delivery::Courier;
use crate::net::ConnectionSlots;
use crate::ratelimit::AuthLimiter;
use crate::relay::lookup::Resolver;
use futures_util::future::BoxFuture;
pub use reply::Reply;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The kind of an SMTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Mail from the email world for local users; no AUTH, no relaying.
    Mx,
    /// Mail clients: STARTTLS, then AUTH, then mail to anywhere.
    Submission,
    /// Mail clients over implicit TLS.
    Submissions,
}

impl Listener {
    pub fn name(self) -> &'static str {
        match self {
            Listener::Mx => "mx",
            Listener::Submission => "submission",
            Listener::Submissions => "submissions",
        }
    }
}

/// A message the MX has read, checked and is about to deliver: what the paywall
/// decides on.
pub struct InboundMail<'a> {
    pub peer: IpAddr,
    pub helo: &'a str,
    pub mail_from: &'a str,
    pub recipients: &'a [crate::custody::UserInfo],
    pub raw: &'a [u8],
    /// The From field's address (one address: the session refuses others).
    pub header_from: Option<&'a str>,
    pub verdict: &'a verify::Verdict,
}

/// What happens to a message from the email world once it has been read.
pub enum Admit {
    /// Deliver it to every recipient now.
    Deliver,
    /// Deliver it now to `deliver` only, hold it for `holds` until paid for (both in
    /// one commit), then answer `answer` (the usual 250 when None). With nothing to
    /// deliver or hold, nothing is committed.
    Partial {
        deliver: Vec<crate::custody::UserInfo>,
        holds: Vec<crate::delivery::Hold>,
        answer: Option<Reply>,
    },
    /// Answer with this reply and deliver nothing.
    Refuse(Reply),
}

/// The seam where the paywall decides, inside the session and after DATA, whether a
/// stranger must pay before their mail is delivered.
pub trait Admission: Send + Sync {
    fn admit<'a>(&'a self, mail: &'a InboundMail<'a>) -> BoxFuture<'a, Admit>;

    /// Told once what `admit` asked for is committed, with the answer the sender gets.
    fn committed<'a>(
        &'a self,
        _mail: &'a InboundMail<'a>,
        _holds: &'a [crate::delivery::Hold],
        _answer: &'a Reply,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// The server's settings, taken from the config.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub hostname: String,
    pub domain: String,
    pub smtp: crate::config::Smtp,
    /// Mail with more Received fields than this is refused as a loop.
    pub max_hops: usize,
}

pub struct SmtpServer {
    settings: SmtpSettings,
    metrics: Arc<crate::metrics::Metrics>,
    custody: Custody,
    courier: Arc<Courier>,
    verifier: verify::Verifier,
    admission: Arc<dyn Admission>,
    tls: Option<TlsAcceptor>,
    lookup: Resolver,
    auth_limits: Mutex<AuthLimiter>,
    slots: Arc<ConnectionSlots>,
    /// One permit per message being received, across all sessions.
    receiving: Arc<tokio::sync::Semaphore>,
}

impl SmtpServer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: SmtpSettings,
        custody: Custody,
        courier: Arc<Courier>,
        verifier: verify::Verifier,
        admission: Arc<dyn Admission>,
        tls: Option<TlsAcceptor>,
        lookup: Resolver,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<SmtpServer> {
        let s = &settings.smtp;
        let auth_limits = AuthLimiter::new(
            s.auth_failures_per_ip,
            s.auth_failures_per_user,
            Duration::from_secs(s.auth_window_seconds),
        );
        let receiving = Arc::new(tokio::sync::Semaphore::new(s.max_concurrent_messages));
        let slots = ConnectionSlots::new(s.max_connections, s.max_connections_per_ip);
        Arc::new(SmtpServer {
            settings,
            metrics,
            custody,
            courier,
            verifier,
            admission,
            tls,
            lookup,
            auth_limits: Mutex::new(auth_limits),
            slots,
            receiving,
        })
    }

    fn count_session(&self, kind: Listener, result: &'static str) {
        self.metrics
            .smtp_sessions
            .get_or_create(&crate::metrics::SmtpLabels {
                listener: kind.name(),
                result,
            })
            .inc();
    }

    fn count_message(&self, kind: Listener, reply: &Reply) {
        let result = match reply.code {
            200..=399 => "accepted",
            400..=499 => "deferred",
            _ => "refused",
        };
        self.metrics
            .smtp_messages
            .get_or_create(&crate::metrics::SmtpLabels {
                listener: kind.name(),
                result,
            })
            .inc();
    }

    /// Accepts connections on `listener` until `shutdown`, a session each.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        kind: Listener,
        shutdown: CancellationToken,
    ) {
        let tracker = tokio_util::task::TaskTracker::new();
        loop {
            let Some((tcp, peer)) = crate::net::accept(&listener, &shutdown, kind.name()).await
            else {
                break;
            };
            let _ = tcp.set_nodelay(true);
            // Admitted before a task is spawned, so a connection flood costs no more than
            // a short refusal each.
            let slot = self.slots.take(peer.ip());
            let server = self.clone();
            let shutdown = shutdown.clone();
            let span = tracing::info_span!("smtp", listener = kind.name(), %peer);
            tracker.spawn(
                async move {
                    let Some(slot) = slot else {
                        server.count_session(kind, "refused");
                        session::refuse_busy(tcp, &server.settings.hostname).await;
                        return;
                    };
                    server.count_session(kind, "accepted");
                    session::run(server.clone(), tcp, peer, kind, shutdown).await;
                    drop(slot);
                }
                .instrument(span),
            );
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// Binds every configured SMTP listener.
pub async fn bind(
    config: &crate::config::Config,
) -> anyhow::Result<Vec<(Listener, TcpListener, SocketAddr)>> {
    use anyhow::Context;
    let mut out = Vec::new();
    for (kind, addr) in config.smtp_listeners() {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (smtp.{}_listen)", kind.name()))?;
        let bound = l.local_addr()?;
        out.push((kind, l, bound));
    }
    Ok(out)
}
