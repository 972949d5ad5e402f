//! Following a relay for one identity: connect, authenticate, subscribe from where we left
//! off, hand each new message on, and on any failure reconnect with backoff and do it
//! again. Messages seen twice (after a resubscription) are dropped by id.

use super::client::{ClientOptions, Connection, SeenIds, SubEvent};
use crate::lnmp::{Filter, Identity, Message};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Resubscriptions start this far before the newest message seen: senders' clocks differ,
/// so a message may arrive with a timestamp a little older than one already seen.
pub const RESUME_OVERLAP_SECS: u64 = 3600;

/// Receives messages from a followed relay; returns an error to have the subscription
/// restarted (and the message offered again).
pub type Handler = Arc<dyn Fn(Message) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// Follows `url` as `identity` until `shutdown`, reading messages addressed to it that
/// are newer than `since` (and then than the newest seen).
pub async fn follow(
    url: String,
    identity: Arc<Identity>,
    opts: ClientOptions,
    mut since: u64,
    handler: Handler,
    shutdown: CancellationToken,
) {
    let mut seen = SeenIds::new(10_000);
    let mut failures = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&url, &identity, &opts, &mut since, &handler, &mut seen) => r,
        };
        if let Err(e) = result {
            tracing::info!(relay = %url, "subscription interrupted: {e}");
        }
        // A session that lasted a while was healthy: start the backoff over.
        if started.elapsed() > Duration::from_secs(30) {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let wait = backoff(failures);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(500)
        .saturating_mul(1 << failures.min(7))
        .min(Duration::from_secs(60));
    let jitter = 0.5 + rand_core::RngCore::next_u32(&mut rand_core::OsRng) as f64 / u32::MAX as f64;
    base.mul_f64(jitter)
}

async fn session(
    url: &str,
    identity: &Identity,
    opts: &ClientOptions,
    since: &mut u64,
    handler: &Handler,
    seen: &mut SeenIds,
) -> anyhow::Result<()> {
    let conn = Connection::connect(url, Some(identity), opts).await?;
    let filter = Filter {
        to: Some(vec![identity.public_key()]),
        since: Some(since.saturating_sub(RESUME_OVERLAP_SECS)),
        ..Filter::default()
    };
    let mut events = conn.subscribe("inbox", vec![filter]).await?;
    while let Some(ev) = events.recv().await {
        match ev {
            SubEvent::Message(m) => {
                if !seen.first_time(m.id) {
                    continue;
                }
                let ts = m.timestamp;
                let id = m.id;
                if let Err(e) = handler(*m).await {
                    // Forget it, so the resubscription offers it again.
                    seen.forget(&id);
                    return Err(e.context("handling a message"));
                }
                *since = (*since).max(ts);
            }
            SubEvent::Eose => tracing::debug!(relay = url, "caught up"),
            SubEvent::Closed(reason) => anyhow::bail!("{reason}"),
        }
    }
    anyhow::bail!("connection closed")
}
