//! Prometheus metrics: one registry for the process, rendered at /metrics in the
//! OpenMetrics text format. Each subsystem registers its own counters here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SmtpLabels {
    /// mx, submission or submissions.
    pub listener: &'static str,
    /// For messages: accepted, refused (5xx) or deferred (4xx).
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub smtp_sessions: Family<SmtpLabels, Counter>,
    pub smtp_messages: Family<SmtpLabels, Counter>,
    /// IMAP sessions, by listener (imap, imaps) and admission.
    pub imap_sessions: Family<SmtpLabels, Counter>,
    pub users: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lnmp_bridge");
        registry.register(
            "build",
            "Version of the running daemon",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            http_requests.clone(),
        );
        let smtp_sessions = Family::<SmtpLabels, Counter>::default();
        registry.register(
            "smtp_sessions",
            "SMTP sessions, by listener and how they were let in (accepted, refused when over the connection limits)",
            smtp_sessions.clone(),
        );
        let smtp_messages = Family::<SmtpLabels, Counter>::default();
        registry.register(
            "smtp_messages",
            "Messages read to their end by the SMTP server, by listener and answer",
            smtp_messages.clone(),
        );
        let imap_sessions = Family::<SmtpLabels, Counter>::default();
        registry.register(
            "imap_sessions",
            "IMAP sessions, by listener and how they were let in (accepted, refused when over the connection limits)",
            imap_sessions.clone(),
        );
        let users = Gauge::default();
        registry.register("users", "Users of the domain", users.clone());
        Metrics {
            registry,
            http_requests,
            smtp_sessions,
            smtp_messages,
            imap_sessions,
            users,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
