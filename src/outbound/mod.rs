//! Mail leaving for the email world: the persistent queue and its delivery worker
//! (smarthost or the recipient domain's MX, with lettre), DKIM signing, delivery
//! status notifications, forwarding of the LNMP inbox, and replies routed back.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | `Outbound`: the worker loop — claims due recipients (leased, so nodes share the queue), delivers, settles, retries with backoff until the lifetime ends |
//! | `transport.rs` | one SMTP attempt with lettre, per-recipient answers |
//! | `mx.rs` | MX hosts of a domain (implicit MX, null MX) |
//! | `headers.rs` | header edits on raw messages: line ends, hops, loop markers |
//! | `dsn.rs` | RFC 3464 delivery status notifications |
//! | `report.rs` | telling senders of failures: a DSN in a user's INBOX, or over LNMP |
//! | `bridge.rs` | LNMP messages made email: forwards, and messages to email senders |

pub mod bridge;
pub mod dsn;
pub mod headers;
pub mod mx;
pub mod report;
pub mod transport;

use crate::delivery::Courier;
use crate::relay::outbox::RetryTiming;
use crate::store::{self, Store, outbound};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use transport::{Fate, Transport};

/// Settled messages are kept this long (seconds) for `queue list --all`, then deleted.
const KEEP_SETTLED: i64 = 7 * 86_400;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What the worker needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The longest one delivery attempt may take, all hosts included.
    pub deadline: Duration,
    /// How long a claim lasts: past the attempt's deadline, so no other node retakes a
    /// recipient while it is being delivered.
    pub claim: Duration,
    pub hostname: String,
    pub domain: String,
    pub timing: RetryTiming,
    pub max_parallel: usize,
    pub poll: Duration,
    pub max_hops: usize,
    pub reply_local_part: String,
}

impl Settings {
    pub fn from_config(c: &crate::config::Config) -> Settings {
        let o = &c.outbound;
        let deadline = c.outbound_attempt_seconds();
        let claim = match o.claim_seconds {
            0 => deadline + 300,
            set => set,
        };
        Settings {
            deadline: Duration::from_secs(deadline),
            claim: Duration::from_secs(claim),
            hostname: c.server.hostname.clone(),
            domain: c.server.domain.clone(),
            timing: RetryTiming {
                publish_timeout: Duration::from_secs(o.timeout_seconds),
                base: Duration::from_secs(o.retry_base_seconds),
                max: Duration::from_secs(o.retry_max_seconds),
                lifetime: Duration::from_secs(o.lifetime_hours * 3600),
            },
            max_parallel: o.max_parallel,
            poll: Duration::from_secs(o.poll_seconds),
            max_hops: o.max_hops,
            reply_local_part: o.reply_local_part.clone(),
        }
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    fn lease(&self) -> i64 {
        self.claim.as_secs() as i64
    }
}

/// The delivery worker.
pub struct Outbound {
    store: Store,
    transport: Transport,
    signer: crate::dkim::Signer,
    courier: Arc<Courier>,
    bridge: bridge::Bridge,
    settings: Settings,
}

impl Outbound {
    pub fn new(
        transport: Transport,
        signer: crate::dkim::Signer,
        courier: Arc<Courier>,
        bridge: bridge::Bridge,
        settings: Settings,
    ) -> Outbound {
        Outbound {
            store: courier.custody().store().clone(),
            transport,
            signer,
            courier,
            bridge,
            settings,
        }
    }

    /// Works the queue until `shutdown`; deliveries in flight are finished first.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut work = self.store.work_watch();
        let mut mail = self.store.mail_changes();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut pruned = std::time::Instant::now();
        // Forwards, LNMP-to-email jobs and reports are looked at when work is announced
        // or the timer runs out, not after every delivery: that keeps the database's
        // writer free for the deliveries themselves.
        let mut sweep = true;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = std::time::Instant::now();
                match outbound::prune(&self.store, store::now() - KEEP_SETTLED).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(messages = n, "pruned settled outbound mail"),
                    Err(e) => tracing::warn!(error = %e, "cannot prune the outbound queue"),
                }
            }
            if std::mem::take(&mut sweep) {
                if let Err(e) = self.bridge.run_due(&self.courier).await {
                    tracing::warn!(error = %e, "turning LNMP messages into email failed; retrying");
                }
                if let Err(e) = report::send_due(&self.courier, &self.settings).await {
                    tracing::warn!(error = %e, "reporting failed deliveries failed; retrying");
                }
            }
            let free = self.settings.max_parallel.saturating_sub(tasks.len());
            if free > 0 {
                match self.claim(free).await {
                    Ok(groups) => {
                        for g in groups {
                            let me = self.clone();
                            tasks.spawn(async move { me.deliver(g).await });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the outbound queue"),
                }
            }
            // With every slot busy, due work waits for a slot, not a timer.
            let wait = if tasks.len() >= self.settings.max_parallel {
                self.settings.poll
            } else {
                self.until_next_due().await
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                    while tasks.try_join_next().is_some() {}
                }
                _ = work.changed() => sweep = true,
                r = mail.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                        mail = self.store.mail_changes();
                    }
                    sweep = true;
                }
                _ = tokio::time::sleep(wait) => sweep = true,
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn until_next_due(&self) -> Duration {
        let now = store::now();
        let mut next = now + self.settings.poll.as_secs() as i64;
        for due in [
            outbound::next_due(&self.store).await.ok().flatten(),
            store::bridge_out::next_due(&self.store)
                .await
                .ok()
                .flatten(),
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(due);
        }
        Duration::from_secs(next.saturating_sub(now).max(0) as u64).max(Duration::from_millis(200))
    }

    /// Claims due recipients, grouped by message and recipient domain (one SMTP
    /// transaction each), at most `groups` groups' worth.
    async fn claim(&self, groups: usize) -> store::Result<Vec<Vec<outbound::Claimed>>> {
        let claimed = outbound::claim_due(
            &self.store,
            store::now(),
            self.settings.lease(),
            groups as i64,
        )
        .await?;
        let mut by: BTreeMap<(i64, String), Vec<outbound::Claimed>> = BTreeMap::new();
        for c in claimed {
            let domain = c
                .recipient
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default();
            by.entry((c.message_id, domain)).or_default().push(c);
        }
        Ok(by.into_values().collect())
    }

    /// One attempt for recipients of one message at one domain, then settles each.
    async fn deliver(&self, group: Vec<outbound::Claimed>) {
        let Some(first) = group.first() else { return };
        let message = match outbound::message(&self.store, first.message_id).await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a queued message");
                return;
            }
        };
        let domain = first
            .recipient
            .rsplit_once('@')
            .map(|(_, d)| d.to_owned())
            .unwrap_or_default();
        let recipients: Vec<String> = group.iter().map(|c| c.recipient.clone()).collect();
        let deferred = |reply: String| transport::Outcome {
            fate: Fate::Deferred,
            reply,
            remote_mta: None,
            code: None,
        };
        let outcomes = match self.prepare(&message.raw) {
            // A broken key is ours to fix: the mail waits (and expires like any other).
            Err(e) => {
                tracing::error!(error = %e, "cannot sign outgoing mail; retrying later");
                vec![deferred(format!("local problem: {e}")); recipients.len()]
            }
            Ok(data) => match tokio::time::timeout(
                self.settings.deadline(),
                self.transport
                    .deliver(&message.mail_from, &domain, &recipients, &data),
            )
            .await
            {
                Ok(o) => o,
                Err(_) => {
                    vec![deferred("the delivery attempt took too long".into()); recipients.len()]
                }
            },
        };
        let now = store::now();
        let mut to_report = false;
        let reportable =
            !message.mail_from.is_empty() && message.origin() != outbound::Origin::Report;
        for (c, o) in group.iter().zip(outcomes) {
            let settled = match o.fate {
                Fate::Delivered => outbound::Outcome::Sent,
                Fate::Bounced => outbound::Outcome::Failed { report: reportable },
                Fate::Deferred => {
                    let at = now + self.settings.timing.backoff(c.attempts).as_secs() as i64;
                    if at >= c.expires_at {
                        outbound::Outcome::Failed { report: reportable }
                    } else {
                        outbound::Outcome::Retry { at }
                    }
                }
            };
            to_report |= matches!(settled, outbound::Outcome::Failed { report: true });
            match &settled {
                outbound::Outcome::Sent => {
                    tracing::info!(to = %c.recipient, relay = ?o.remote_mta, reply = %o.reply, "delivered")
                }
                outbound::Outcome::Retry { at } => {
                    tracing::info!(to = %c.recipient, reply = %o.reply, retry_in = at - now, "deferred")
                }
                outbound::Outcome::Failed { .. } => {
                    tracing::warn!(to = %c.recipient, reply = %o.reply, "delivery failed for good")
                }
            }
            let reply = if o.fate == Fate::Deferred
                && matches!(settled, outbound::Outcome::Failed { .. })
            {
                format!("gave up after {} attempts; last: {}", c.attempts, o.reply)
            } else {
                o.reply.clone()
            };
            match outbound::settle(&self.store, c, settled, reply, o.remote_mta.clone(), now).await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(to = %c.recipient, "the claim ran out before the attempt ended; another worker has it")
                }
                Err(e) => tracing::error!(error = %e, "cannot record a delivery attempt"),
            }
        }
        if to_report {
            self.store.work_queued();
        }
    }

    /// The bytes as sent: one line ending throughout (so dot-stuffing covers every
    /// line and nothing can smuggle a second message), then DKIM-signed.
    fn prepare(&self, raw: &[u8]) -> Result<Vec<u8>, crate::dkim::DkimError> {
        let normal = headers::normalize_line_endings(raw);
        let mut out = self.signer.sign(&normal)?;
        out.extend_from_slice(&normal);
        Ok(out)
    }
}
