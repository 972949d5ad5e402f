//! The outbox worker: takes queued messages (store::outbox), publishes each to its relays
//! at once, and settles it — sent when any relay accepts, failed when every relay refuses
//! for good or it expires, set aside when payment is asked — or retries it later with
//! exponential backoff and jitter. Connections to relays are kept and reused.

use super::client::{ClientOptions, Connection, PublishOutcome};
use crate::lnmp::{Limits, Message, RelayFrame};
use crate::store::{self, Store, outbox};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RetryTiming {
    pub publish_timeout: Duration,
    pub base: Duration,
    pub max: Duration,
    /// How long a message without an expiry of its own stays queued.
    pub lifetime: Duration,
}

impl RetryTiming {
    pub fn from_config(c: &crate::config::RelayClient) -> RetryTiming {
        RetryTiming {
            publish_timeout: Duration::from_secs(c.publish_timeout_seconds),
            base: Duration::from_secs(c.retry_base_seconds),
            max: Duration::from_secs(c.retry_max_seconds),
            lifetime: Duration::from_secs(c.outbox_lifetime_hours * 3600),
        }
    }

    /// The wait before attempt `attempts + 1`: base·2^(attempts−1), capped, ±25 % jitter.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let exp = attempts.clamp(1, 30) as u32 - 1;
        let raw = self.base.saturating_mul(1u32 << exp.min(20)).min(self.max);
        let jitter = 0.75
            + (rand_core::RngCore::next_u32(&mut rand_core::OsRng) as f64 / u32::MAX as f64) * 0.5;
        raw.mul_f64(jitter)
    }
}

/// What one attempt at one queued message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Sent {
        relay: String,
    },
    Failed(String),
    AwaitingPayment(String),
    Retry(String),
    /// The recipient's invoice was paid: publish this (the message with its proof)
    /// again at once.
    Paid(String),
}

/// What the payer made of a recipient relay's INVOICE.
pub enum Payment {
    /// Paid: the message with its payment proof.
    Paid(Box<Message>),
    /// Set aside for the sender (above their cap, or their balance is short).
    Waiting(String),
    /// Not payable (a bad invoice): the message fails.
    Refused(String),
    /// The payment failed this time (no route, the backend down): try again later.
    Retry(String),
}

/// The seam where the paywall pays an INVOICE for a message a user sent.
pub trait Payer: Send + Sync {
    fn pay<'a>(
        &'a self,
        row: &'a outbox::OutboxRow,
        message: &'a Message,
        invoice: &'a RelayFrame,
    ) -> BoxFuture<'a, Payment>;
}

pub struct Outbox {
    store: Store,
    opts: ClientOptions,
    timing: RetryTiming,
    wake: Notify,
    connections: Mutex<HashMap<String, Connection>>,
    payer: std::sync::OnceLock<Arc<dyn Payer>>,
    /// How long a claim lasts, in seconds; 0 until the daemon sets it from the config.
    claim: std::sync::atomic::AtomicU64,
}

impl Outbox {
    pub fn new(store: Store, opts: ClientOptions, timing: RetryTiming) -> Arc<Outbox> {
        Arc::new(Outbox {
            store,
            opts,
            timing,
            wake: Notify::new(),
            connections: Mutex::new(HashMap::new()),
            payer: std::sync::OnceLock::new(),
            claim: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Sets how long a claim on a queued message lasts (another node takes it over
    /// after this when this one dies); it must outlast an attempt.
    pub fn set_claim(&self, claim: Duration) {
        self.claim
            .store(claim.as_secs(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Lets `payer` pay the INVOICEs recipients' relays send; without one a message
    /// asked to pay is set aside.
    pub fn set_payer(&self, payer: Arc<dyn Payer>) {
        let _ = self.payer.set(payer);
    }

    /// Queues a signed message for `relays` durably, then wakes the worker.
    pub async fn enqueue(&self, m: &Message, relays: Vec<String>) -> store::Result<()> {
        let expires_at = self.lifetime_end(m);
        outbox::enqueue(&self.store, m.id.to_hex(), m.to_json(), relays, expires_at).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Wakes the worker after messages were queued by another transaction.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// When a message queued now without an expiry of its own is given up.
    pub fn lifetime_end(&self, m: &Message) -> i64 {
        let lifetime_end = store::now().saturating_add(self.timing.lifetime.as_secs() as i64);
        m.expiry.map_or(lifetime_end, |e| {
            i64::try_from(e).unwrap_or(i64::MAX).min(lifetime_end)
        })
    }

    async fn connection(&self, url: &str) -> Result<Connection, String> {
        let mut conns = self.connections.lock().await;
        if let Some(c) = conns.get(url)
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        // Publishing needs no AUTH: the connection is anonymous.
        let c = Connection::connect(url, None, &self.opts)
            .await
            .map_err(|e| e.to_string())?;
        conns.insert(url.to_owned(), c.clone());
        Ok(c)
    }

    async fn publish_to(&self, url: &str, m: &Message) -> Result<PublishOutcome, String> {
        let conn = self.connection(url).await?;
        conn.publish(m, self.timing.publish_timeout)
            .await
            .map_err(|e| e.to_string())
    }

    /// One attempt at a claimed row: publish to all its relays at once and settle it.
    pub async fn attempt(&self, row: &outbox::OutboxRow) -> Settled {
        if store::now() >= row.expires_at {
            return Settled::Failed("expired before any relay accepted it".into());
        }
        let m = match Message::from_json(row.body.as_bytes(), &Limits::default()) {
            Ok(m) => m,
            Err(e) => return Settled::Failed(format!("unreadable queued message: {e}")),
        };
        let urls = row.relay_urls();
        if urls.is_empty() {
            return Settled::Failed("no relay to send to".into());
        }
        let tries = urls
            .iter()
            .map(|u| async { (u.clone(), self.publish_to(u, &m).await) });
        let results = futures_util::future::join_all(tries).await;
        let mut notes = Vec::new();
        let mut payment = None;
        let mut retry = false;
        for (url, r) in &results {
            match r {
                Ok(o) if o.delivered() => return Settled::Sent { relay: url.clone() },
                Ok(PublishOutcome::PaymentRequired { reason, invoice }) => {
                    if payment.is_none() {
                        payment = Some((format!("{url}: {reason}"), invoice.clone()));
                    }
                }
                Ok(o @ PublishOutcome::Refused(reason)) => {
                    retry |= o.retryable();
                    notes.push(format!("{url}: {reason}"));
                }
                Ok(_) => {}
                Err(e) => {
                    retry = true;
                    notes.push(format!("{url}: {e}"));
                }
            }
        }
        if let Some((why, invoice)) = payment {
            // Messages that carry a proof already were paid for: a relay asking again
            // is not paid twice.
            return match (self.payer.get(), invoice, &m.payment) {
                (Some(payer), Some(invoice), None) => match payer.pay(row, &m, &invoice).await {
                    Payment::Paid(paid) => Settled::Paid(paid.to_json()),
                    Payment::Waiting(why) => Settled::AwaitingPayment(why),
                    Payment::Refused(why) => Settled::Failed(why),
                    Payment::Retry(why) => Settled::Retry(why),
                },
                _ => Settled::AwaitingPayment(why),
            };
        }
        let note = notes.join("; ");
        if retry {
            Settled::Retry(note)
        } else {
            Settled::Failed(note)
        }
    }

    async fn settle(&self, row: &outbox::OutboxRow, s: &Settled) -> store::Result<()> {
        match s {
            Settled::Sent { relay } => outbox::mark_sent(&self.store, row.id, relay.clone()).await,
            Settled::Failed(why) => {
                tracing::warn!(message = %row.message_id, "giving up on a message: {why}");
                outbox::mark_failed(&self.store, row.id, why.clone()).await?;
                // Its sender may be due a report (outbound/report.rs).
                self.store.work_queued();
                Ok(())
            }
            Settled::AwaitingPayment(why) => {
                outbox::mark_payment(&self.store, row.id, why.clone()).await
            }
            Settled::Paid(body) => {
                outbox::requeue_paid(&self.store, row.id, body.clone(), false).await?;
                Ok(())
            }
            Settled::Retry(why) => {
                let wait = self.timing.backoff(row.attempts);
                tracing::debug!(message = %row.message_id, ?wait, "will retry: {why}");
                let next = store::now().saturating_add(wait.as_secs().max(1) as i64);
                outbox::retry(&self.store, row.id, next, why.clone()).await
            }
        }
    }

    /// Claims what is due and attempts each once; returns how many were attempted.
    pub async fn work_once(&self) -> store::Result<usize> {
        // A claim must outlast an attempt, payment included (a Lightning payment may
        // take a minute or two), or another node would take the row over mid-payment.
        let lease = match self.claim.load(std::sync::atomic::Ordering::Relaxed) {
            0 => {
                let paying = if self.payer.get().is_some() { 180 } else { 0 };
                self.timing.publish_timeout.as_secs() * 2 + 30 + paying
            }
            set => set,
        } as i64;
        let rows = outbox::claim_due(&self.store, lease, 64).await?;
        let n = rows.len();
        let work = rows.iter().map(|row| async move {
            let s = self.attempt(row).await;
            if let Err(e) = self.settle(row, &s).await {
                tracing::error!(error = %e, "cannot record an outbox attempt");
            }
        });
        futures_util::future::join_all(work).await;
        Ok(n)
    }

    /// Works the queue until `shutdown`: at once when something is queued here, and every
    /// few seconds for retries and for messages queued by other processes.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let worked = match self.work_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox unavailable");
                    0
                }
            };
            if worked > 0 {
                continue;
            }
            let wait = match outbox::next_due(&self.store).await {
                Ok(Some(t)) => Duration::from_secs((t - store::now()).clamp(0, 2) as u64),
                _ => Duration::from_secs(2),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let t = RetryTiming {
            publish_timeout: Duration::from_secs(1),
            base: Duration::from_secs(2),
            max: Duration::from_secs(60),
            lifetime: Duration::from_secs(3600),
        };
        for (attempts, nominal) in [
            (1, 2.0),
            (2, 4.0),
            (3, 8.0),
            (5, 32.0),
            (9, 60.0),
            (40, 60.0),
        ] {
            let d = t.backoff(attempts).as_secs_f64();
            assert!(
                d >= nominal * 0.75 && d <= nominal * 1.25,
                "{attempts}: {d}"
            );
        }
    }
}
