//! The queue of mail leaving for the email world: a submitted message stored once, and a
//! row per recipient for the delivery worker to settle. Queued before the submission is
//! acknowledged, so nothing accepted is lost to a crash.

use super::{Result, Store};
use sqlx::AnyConnection;

/// Why a message is queued, which decides who is told when it cannot be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A user submitted it: a DSN goes to their INBOX.
    Submission,
    /// A copy of a user's INBOX for their forward address: a DSN to their INBOX.
    Forward,
    /// An LNMP message to an email sender's derived key: the LNMP sender is told over
    /// LNMP, through these relays, in answer to this message id.
    Lnmp {
        sender: String,
        message_id: String,
        relays: Vec<String>,
    },
    /// A report we made: nobody is told of its failure (no report about a report).
    Report,
}

impl Origin {
    fn tag(&self) -> &'static str {
        match self {
            Origin::Submission => "submission",
            Origin::Forward => "forward",
            Origin::Lnmp { .. } => "lnmp",
            Origin::Report => "report",
        }
    }
}

/// A message to queue and the addresses it goes to.
#[derive(Debug, Clone)]
pub struct NewOutbound {
    pub user_id: Option<i64>,
    /// The envelope sender; empty for the null sender (reports).
    pub mail_from: String,
    pub recipients: Vec<String>,
    pub raw: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
    pub origin: Origin,
}

/// Queues a message inside the caller's transaction; returns its id.
pub(crate) async fn enqueue_in(c: &mut AnyConnection, m: &NewOutbound) -> Result<i64> {
    let (sender, lnmp_id, relays) = match &m.origin {
        Origin::Lnmp {
            sender,
            message_id,
            relays,
        } => (
            Some(sender.as_str()),
            Some(message_id.as_str()),
            relays.join(" "),
        ),
        _ => (None, None, String::new()),
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO outbound_messages (user_id, mail_from, raw, created_at, origin, lnmp_sender, lnmp_id, lnmp_relays) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(m.user_id)
    .bind(&m.mail_from)
    .bind(&m.raw)
    .bind(m.created_at)
    .bind(m.origin.tag())
    .bind(sender)
    .bind(lnmp_id)
    .bind(relays)
    .fetch_one(&mut *c)
    .await?;
    for r in &m.recipients {
        sqlx::query(
            "INSERT INTO outbound_recipients (message_id, recipient, next_attempt_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(r)
        .bind(m.created_at)
        .bind(m.expires_at)
        .execute(&mut *c)
        .await?;
    }
    Ok(id)
}

/// A recipient claimed for a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Claimed {
    /// The recipient row.
    pub id: i64,
    pub message_id: i64,
    pub recipient: String,
    /// Attempts including this one.
    pub attempts: i64,
    pub expires_at: i64,
    /// The lease this claim holds; settling checks it is still ours.
    pub locked_until: i64,
}

/// Claims up to `max` due recipients for `lease` seconds, so no other worker (or node)
/// tries them meanwhile. A worker that dies leaves its claims to expire and be retaken.
pub async fn claim_due(store: &Store, now: i64, lease: i64, max: i64) -> Result<Vec<Claimed>> {
    let mut rows: Vec<Claimed> = super::claim_due(
        store,
        "outbound_recipients",
        "queued",
        "id, message_id, recipient, attempts, expires_at, locked_until",
        now,
        lease,
        max,
    )
    .await?;
    rows.sort_by_key(|r| (r.message_id, r.id));
    Ok(rows)
}

/// A queued message as the worker reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedMessage {
    pub id: i64,
    pub user_id: Option<i64>,
    pub mail_from: String,
    pub raw: Vec<u8>,
    pub created_at: i64,
    pub origin: String,
    pub lnmp_sender: Option<String>,
    pub lnmp_id: Option<String>,
    pub lnmp_relays: String,
}

impl QueuedMessage {
    pub fn origin(&self) -> Origin {
        match self.origin.as_str() {
            "forward" => Origin::Forward,
            "report" => Origin::Report,
            "lnmp" => Origin::Lnmp {
                sender: self.lnmp_sender.clone().unwrap_or_default(),
                message_id: self.lnmp_id.clone().unwrap_or_default(),
                relays: self
                    .lnmp_relays
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            },
            _ => Origin::Submission,
        }
    }
}

pub async fn message(store: &Store, id: i64) -> Result<Option<QueuedMessage>> {
    Ok(sqlx::query_as(
        "SELECT id, user_id, mail_from, raw, created_at, origin, lnmp_sender, lnmp_id, lnmp_relays \
         FROM outbound_messages WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.pool())
    .await?)
}

/// How one delivery attempt for a recipient ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Try again at this time.
    Retry {
        at: i64,
    },
    /// Given up on; `report` asks for the sender to be told.
    Failed {
        report: bool,
    },
}

/// Settles a claimed recipient: the last answer (for the queue listing and the
/// report) and what happens next. Only while `claim` still holds: a worker that
/// outlived its lease must not overwrite what the next one did. Returns whether it did.
pub async fn settle(
    store: &Store,
    claimed: &Claimed,
    outcome: Outcome,
    reply: String,
    remote_mta: Option<String>,
    now: i64,
) -> Result<bool> {
    let (id, claim) = (claimed.id, claimed.locked_until);
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                let (state, next, report) = match outcome {
                    Outcome::Sent => ("sent", 0, "none"),
                    Outcome::Retry { at } => ("queued", at, "none"),
                    Outcome::Failed { report } => {
                        ("failed", 0, if report { "pending" } else { "none" })
                    }
                };
                let q = if state == "queued" {
                    "UPDATE outbound_recipients SET state = $1, next_attempt_at = $2, last_error = $3, \
                     remote_mta = $4, locked_until = 0, report_state = $5 \
                     WHERE id = $6 AND state = 'queued' AND locked_until = $7"
                } else {
                    "UPDATE outbound_recipients SET state = $1, settled_at = $2, last_error = $3, \
                     remote_mta = $4, locked_until = 0, report_state = $5 \
                     WHERE id = $6 AND state = 'queued' AND locked_until = $7"
                };
                let done = sqlx::query(q)
                    .bind(state)
                    .bind(if state == "queued" { next } else { now })
                    .bind(reply)
                    .bind(remote_mta)
                    .bind(report)
                    .bind(id)
                    .bind(claim)
                    .execute(&mut *c)
                    .await?;
                Ok(done.rows_affected() == 1)
            })
        }))
        .await
}

/// A failed recipient whose sender has not been told yet.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Unreported {
    pub id: i64,
    pub message_id: i64,
    pub recipient: String,
    pub last_error: Option<String>,
    pub remote_mta: Option<String>,
    pub settled_at: Option<i64>,
}

/// Failures waiting for their report, grouped by message (one report per message).
pub async fn unreported(store: &Store, max: i64) -> Result<Vec<Unreported>> {
    Ok(sqlx::query_as(
        "SELECT id, message_id, recipient, last_error, remote_mta, settled_at FROM outbound_recipients \
         WHERE report_state = 'pending' ORDER BY message_id, id LIMIT $1",
    )
    .bind(max)
    .fetch_all(store.pool())
    .await?)
}

/// Marks failures as reported, inside the transaction that commits their report. If
/// another node reported one of them meanwhile, this fails, so that transaction (and
/// its second report) is rolled back.
pub(crate) async fn mark_reported_in(c: &mut AnyConnection, ids: &[i64]) -> Result<()> {
    for id in ids {
        let done = sqlx::query(
            "UPDATE outbound_recipients SET report_state = 'done' WHERE id = $1 AND report_state = 'pending'",
        )
        .bind(id)
        .execute(&mut *c)
        .await?;
        if done.rows_affected() != 1 {
            return Err(super::StoreError::NotFound(format!(
                "outbound recipient {id} with a report pending"
            )));
        }
    }
    Ok(())
}

/// Marks failures as reported without a report (its recipient is gone).
pub async fn mark_reported(store: &Store, ids: Vec<i64>) -> Result<()> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move { mark_reported_in(c, &ids).await })
        }))
        .await
}

/// A row of the queue listing.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueueEntry {
    pub id: i64,
    pub message_id: i64,
    pub mail_from: String,
    pub recipient: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
}

/// Every recipient, newest last; with `all` false only those not yet sent.
pub async fn list(store: &Store, all: bool) -> Result<Vec<QueueEntry>> {
    let filter = if all { "" } else { "WHERE r.state <> 'sent' " };
    Ok(sqlx::query_as(&format!(
        "SELECT r.id, r.message_id, m.mail_from, r.recipient, r.state, r.attempts, r.next_attempt_at, \
         r.last_error FROM outbound_recipients r JOIN outbound_messages m ON m.id = r.message_id \
         {filter}ORDER BY r.id"
    ))
    .fetch_all(store.pool())
    .await?)
}

/// Makes every queued recipient due now (what `postqueue -f` does); returns how many.
pub async fn flush(store: &Store, now: i64) -> Result<u64> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                Ok(sqlx::query(
                    "UPDATE outbound_recipients SET next_attempt_at = $1 WHERE state = 'queued'",
                )
                .bind(now)
                .execute(&mut *c)
                .await?
                .rows_affected())
            })
        }))
        .await
}

/// When the next queued recipient is due (or its lease runs out), if any.
pub async fn next_due(store: &Store) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT MIN(CASE WHEN locked_until > next_attempt_at THEN locked_until ELSE next_attempt_at END) \
         FROM outbound_recipients WHERE state = 'queued'",
    )
    .fetch_one(store.pool())
    .await?)
}

/// Messages whose every recipient is settled and reported are deleted.
pub async fn prune(store: &Store, settled_before: i64) -> Result<u64> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                Ok(sqlx::query(
                    "DELETE FROM outbound_messages WHERE created_at < $1 AND NOT EXISTS \
                     (SELECT 1 FROM outbound_recipients r WHERE r.message_id = outbound_messages.id \
                      AND (r.state = 'queued' OR r.report_state = 'pending' OR r.settled_at >= $1))",
                )
                .bind(settled_before)
                .execute(&mut *c)
                .await?
                .rows_affected())
            })
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{add_user, each_backend};

    #[tokio::test]
    async fn queues_a_message_once_with_a_row_per_recipient() {
        each_backend(|store| async move {
            let alice = add_user(&store, "alice").await;
            let m = NewOutbound {
                user_id: Some(alice.id),
                mail_from: "alice@d.test".into(),
                recipients: vec!["a@x.test".into(), "b@y.test".into()],
                raw: b"Subject: hi\r\n\r\nbody\r\n".to_vec(),
                created_at: 10,
                expires_at: 20,
                origin: Origin::Submission,
            };
            let id = store
                .write(Box::new(move |c| {
                    Box::pin(async move { enqueue_in(c, &m).await })
                }))
                .await
                .unwrap();
            let q = list(&store, false).await.unwrap();
            assert_eq!(q.len(), 2);
            assert!(
                q.iter()
                    .all(|r| r.message_id == id && r.mail_from == "alice@d.test")
            );
            assert_eq!(q[1].recipient, "b@y.test");
            let m = message(&store, id).await.unwrap().unwrap();
            assert_eq!(m.raw, b"Subject: hi\r\n\r\nbody\r\n");
            assert_eq!(m.origin(), Origin::Submission);

            // Claimed rows are leased: a second worker gets nothing until it expires.
            let claimed = claim_due(&store, 10, 60, 10).await.unwrap();
            assert_eq!(claimed.len(), 2);
            assert!(claimed.iter().all(|c| c.attempts == 1));
            assert!(claim_due(&store, 11, 60, 10).await.unwrap().is_empty());
            let again = claim_due(&store, 71, 60, 10).await.unwrap();
            assert_eq!(again.len(), 2, "a dead worker's claims are taken over");
            assert!(again.iter().all(|c| c.attempts == 2));

            assert!(
                !settle(&store, &claimed[0], Outcome::Sent, "late".into(), None, 72)
                    .await
                    .unwrap(),
                "a claim that ran out settles nothing"
            );
            settle(
                &store,
                &again[0],
                Outcome::Sent,
                "250 ok".into(),
                Some("mx.x.test".into()),
                72,
            )
            .await
            .unwrap();
            settle(
                &store,
                &again[1],
                Outcome::Retry { at: 500 },
                "451 later".into(),
                None,
                72,
            )
            .await
            .unwrap();
            assert!(claim_due(&store, 400, 60, 10).await.unwrap().is_empty());
            assert_eq!(next_due(&store).await.unwrap(), Some(500));
            assert_eq!(flush(&store, 401).await.unwrap(), 1);
            let third = claim_due(&store, 401, 60, 10).await.unwrap();
            assert_eq!(third.len(), 1);
            settle(
                &store,
                &third[0],
                Outcome::Failed { report: true },
                "550 5.1.1 no".into(),
                None,
                402,
            )
            .await
            .unwrap();
            let pending = unreported(&store, 10).await.unwrap();
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].recipient, "b@y.test");
            assert_eq!(pending[0].last_error.as_deref(), Some("550 5.1.1 no"));
            // Not pruned while its report is pending; pruned once reported.
            assert_eq!(prune(&store, 10_000).await.unwrap(), 0);
            mark_reported(&store, vec![pending[0].id]).await.unwrap();
            assert!(unreported(&store, 10).await.unwrap().is_empty());
            assert_eq!(list(&store, false).await.unwrap().len(), 1);
            assert_eq!(prune(&store, 10_000).await.unwrap(), 1);
            assert!(list(&store, true).await.unwrap().is_empty());
        })
        .await;
    }
}
