//! The relay client's outbox: messages waiting to be accepted by at least one of their
//! relays. Nothing queued is lost to a relay being down or the daemon restarting; a row
//! is claimed with a lease, so several daemons on one PostgreSQL share the work and a
//! crashed one's claims are taken over when the lease runs out.

use super::{Result, Store, now};
use sqlx::FromRow;

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: String,
    pub relays: String,
    pub body: String,
    pub attempts: i64,
    pub expires_at: i64,
}

impl OutboxRow {
    pub fn relay_urls(&self) -> Vec<String> {
        self.relays
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Where a queued message stands.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct OutboxState {
    pub state: String,
    pub attempts: i64,
    pub accepted_by: Option<String>,
    pub last_error: Option<String>,
}

/// Queues a message for `relays`; queuing the same message again changes nothing.
pub async fn enqueue(
    store: &Store,
    message_id: String,
    body: String,
    relays: Vec<String>,
    expires_at: i64,
) -> Result<()> {
    store
        .write(Box::new(move |c| {
            Box::pin(
                async move { enqueue_in(c, &message_id, &body, &relays, expires_at, None).await },
            )
        }))
        .await
}

/// Whose email the queued message came from: they hear of it if it cannot be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A user of this domain (their submission).
    User(i64),
    /// An email sender (their answer through a reply address).
    Email(String),
}

impl Sender {
    fn encode(&self) -> String {
        match self {
            Sender::User(id) => format!("user:{id}"),
            Sender::Email(a) => format!("email:{a}"),
        }
    }

    fn decode(s: &str) -> Option<Sender> {
        match s.split_once(':')? {
            ("user", id) => id.parse().ok().map(Sender::User),
            ("email", a) => Some(Sender::Email(a.to_owned())),
            _ => None,
        }
    }
}

/// What a report about a queued message needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReport {
    pub sender: Sender,
    /// The recipients as the email addressed them.
    pub recipients: Vec<String>,
    /// The email's header section.
    pub headers: Vec<u8>,
}

/// [`enqueue`] inside the caller's transaction, with whom to tell if it fails.
pub(crate) async fn enqueue_in(
    c: &mut sqlx::AnyConnection,
    message_id: &str,
    body: &str,
    relays: &[String],
    expires_at: i64,
    report: Option<&FailureReport>,
) -> Result<()> {
    let t = now();
    sqlx::query(
        "INSERT INTO relay_outbox (message_id, relays, body, next_attempt_at, expires_at, created_at, \
         report_to, report_rcpts, report_headers) \
         VALUES ($1, $2, $3, $4, $5, $4, $6, $7, $8) ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(message_id)
    .bind(relays.join("\n"))
    .bind(body)
    .bind(t)
    .bind(expires_at)
    .bind(report.map(|r| r.sender.encode()))
    .bind(report.map(|r| r.recipients.join(" ")).unwrap_or_default())
    .bind(report.map(|r| r.headers.clone()))
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// A message that could not be published, whose sender has not been told yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreported {
    pub id: i64,
    pub message_id: String,
    pub created_at: i64,
    pub last_error: Option<String>,
    pub report: FailureReport,
}

/// Failures waiting for their report.
pub async fn unreported(store: &Store, max: i64) -> Result<Vec<Unreported>> {
    type Row = (
        i64,
        String,
        i64,
        Option<String>,
        Option<String>,
        String,
        Option<Vec<u8>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, message_id, created_at, last_error, report_to, report_rcpts, report_headers \
         FROM relay_outbox WHERE report_state = 'pending' ORDER BY id LIMIT $1",
    )
    .bind(max)
    .fetch_all(store.pool())
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(id, message_id, created_at, last_error, to, rcpts, headers)| {
                Some(Unreported {
                    id,
                    message_id,
                    created_at,
                    last_error,
                    report: FailureReport {
                        sender: Sender::decode(&to?)?,
                        recipients: rcpts.split_whitespace().map(str::to_owned).collect(),
                        headers: headers.unwrap_or_default(),
                    },
                })
            },
        )
        .collect())
}

/// Marks a failure reported, inside the transaction that commits its report; fails if
/// it was reported already (by another node), rolling that transaction back.
pub(crate) async fn mark_reported_in(c: &mut sqlx::AnyConnection, id: i64) -> Result<()> {
    let done = sqlx::query(
        "UPDATE relay_outbox SET report_state = 'done' WHERE id = $1 AND report_state = 'pending'",
    )
    .bind(id)
    .execute(&mut *c)
    .await?;
    if done.rows_affected() != 1 {
        return Err(super::StoreError::NotFound(format!(
            "relay outbox row {id} with a report pending"
        )));
    }
    Ok(())
}

/// Claims up to `max` due messages for `lease` seconds.
pub async fn claim_due(store: &Store, lease: i64, max: i64) -> Result<Vec<OutboxRow>> {
    super::claim_due(
        store,
        "relay_outbox",
        "pending",
        "id, message_id, relays, body, attempts, expires_at",
        now(),
        lease,
        max,
    )
    .await
}

async fn update(
    store: &Store,
    sql: &'static str,
    id: i64,
    a: Option<String>,
    b: Option<i64>,
) -> Result<()> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                let mut q = sqlx::query(sql);
                if let Some(a) = a {
                    q = q.bind(a);
                }
                if let Some(b) = b {
                    q = q.bind(b);
                }
                q.bind(id).execute(&mut *c).await?;
                Ok(())
            })
        }))
        .await
}

pub async fn mark_sent(store: &Store, id: i64, accepted_by: String) -> Result<()> {
    update(
        store,
        "UPDATE relay_outbox SET state = 'sent', accepted_by = $1, locked_until = 0 WHERE id = $2",
        id,
        Some(accepted_by),
        None,
    )
    .await
}

pub async fn mark_failed(store: &Store, id: i64, error: String) -> Result<()> {
    update(
        store,
        "UPDATE relay_outbox SET state = 'failed', last_error = $1, locked_until = 0, \
         report_state = CASE WHEN report_to IS NULL THEN 'none' ELSE 'pending' END WHERE id = $2",
        id,
        Some(error),
        None,
    )
    .await
}

/// The recipient asks for payment (an INVOICE) and nobody pays it here: the message
/// waits. A row the payer set aside already keeps its invoice and link.
pub async fn mark_payment(store: &Store, id: i64, detail: String) -> Result<()> {
    update(store, "UPDATE relay_outbox SET state = 'payment', last_error = $1, locked_until = 0 WHERE id = $2", id, Some(detail), None).await
}

/// Puts a claimed message back in the queue, due at `next_at`.
pub async fn retry(store: &Store, id: i64, next_at: i64, error: String) -> Result<()> {
    update(
        store,
        "UPDATE relay_outbox SET last_error = $1, next_attempt_at = $2, locked_until = 0 WHERE id = $3",
        id,
        Some(error),
        Some(next_at),
    )
    .await
}

/// A message set aside until its sender confirms paying the recipient's INVOICE.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AwaitingPayment {
    pub id: i64,
    pub message_id: String,
    pub body: String,
    pub invoice_bolt11: String,
    pub invoice_sats: i64,
    pub sender_user: i64,
    pub expires_at: i64,
}

/// Sets a claimed message aside for its sender's confirmation of `bolt11`; the link
/// that confirms it carries `token`.
pub async fn await_confirmation(
    store: &Store,
    id: i64,
    detail: String,
    bolt11: String,
    sats: i64,
    user_id: i64,
    token: String,
) -> Result<()> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE relay_outbox SET state = 'payment', last_error = $1, locked_until = 0, \
                     invoice_bolt11 = $2, invoice_sats = $3, sender_user = $4, confirm_token = $5 \
                     WHERE id = $6",
                )
                .bind(detail)
                .bind(bolt11)
                .bind(sats)
                .bind(user_id)
                .bind(token)
                .bind(id)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
}

/// The message a confirmation link names, while it still waits.
pub async fn by_confirm_token(store: &Store, token: &str) -> Result<Option<AwaitingPayment>> {
    Ok(sqlx::query_as(
        "SELECT id, message_id, body, invoice_bolt11, invoice_sats, sender_user, expires_at \
         FROM relay_outbox WHERE confirm_token = $1 AND state = 'payment' \
         AND invoice_bolt11 IS NOT NULL AND sender_user IS NOT NULL AND expires_at > $2",
    )
    .bind(token)
    .bind(now())
    .fetch_optional(store.pool())
    .await?)
}

/// Queues a message again at once with `body` (the message now carrying its payment
/// proof). With `from_payment`, only a message still waiting for payment is taken (a
/// confirmation link used twice pays once).
pub async fn requeue_paid(
    store: &Store,
    id: i64,
    body: String,
    from_payment: bool,
) -> Result<bool> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                let sql = if from_payment {
                    "UPDATE relay_outbox SET body = $1, state = 'pending', next_attempt_at = $2, \
                     locked_until = 0, confirm_token = NULL WHERE id = $3 AND state = 'payment'"
                } else {
                    "UPDATE relay_outbox SET body = $1, state = 'pending', next_attempt_at = $2, \
                     locked_until = 0, confirm_token = NULL WHERE id = $3 AND state IN ('pending', 'payment')"
                };
                Ok(sqlx::query(sql)
                    .bind(body)
                    .bind(now())
                    .bind(id)
                    .execute(&mut *c)
                    .await?
                    .rows_affected()
                    == 1)
            })
        }))
        .await
}

/// Fails the messages that waited for payment past their lifetime, so their senders
/// hear of it like of any message no relay took. Returns how many.
pub async fn fail_unpaid(store: &Store, at: i64) -> Result<u64> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                Ok(sqlx::query(
                    "UPDATE relay_outbox SET state = 'failed', confirm_token = NULL, \
                     last_error = 'expired while waiting for payment: ' || COALESCE(last_error, '') \
                     WHERE state = 'payment' AND expires_at <= $1",
                )
                .bind(at)
                .execute(&mut *c)
                .await?
                .rows_affected())
            })
        }))
        .await
}

/// Takes a waiting message out of the payment state for paying now: true for one
/// caller only.
pub async fn take_for_payment(store: &Store, id: i64) -> Result<bool> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                Ok(sqlx::query(
                    "UPDATE relay_outbox SET confirm_token = NULL WHERE id = $1 AND state = 'payment' \
                     AND confirm_token IS NOT NULL",
                )
                .bind(id)
                .execute(&mut *c)
                .await?
                .rows_affected()
                    == 1)
            })
        }))
        .await
}

pub async fn state(store: &Store, message_id: &str) -> Result<Option<OutboxState>> {
    Ok(sqlx::query_as(
        "SELECT state, attempts, accepted_by, last_error FROM relay_outbox WHERE message_id = $1",
    )
    .bind(message_id)
    .fetch_optional(store.pool())
    .await?)
}

/// Messages still waiting to be sent.
pub async fn pending(store: &Store) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM relay_outbox WHERE state = 'pending'")
            .fetch_one(store.pool())
            .await?,
    )
}

/// When the next pending message is due, if any.
pub async fn next_due(store: &Store) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM relay_outbox WHERE state = 'pending'")
            .fetch_one(store.pool())
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::each_backend;

    #[tokio::test]
    async fn claims_lease_and_finish() {
        each_backend(|store| async move {
            for i in 0..5 {
                enqueue(
                    &store,
                    format!("m{i}"),
                    "{}".into(),
                    vec!["ws://a".into(), "ws://b".into()],
                    now() + 100,
                )
                .await
                .unwrap();
            }
            enqueue(&store, "m0".into(), "{}".into(), vec![], 0)
                .await
                .unwrap();
            assert_eq!(pending(&store).await.unwrap(), 5);
            let first = claim_due(&store, 60, 3).await.unwrap();
            assert_eq!(first.len(), 3);
            assert_eq!(first[0].relay_urls(), ["ws://a", "ws://b"]);
            assert_eq!(first[0].attempts, 1);
            // Leased rows are not handed out twice.
            let second = claim_due(&store, 60, 10).await.unwrap();
            assert_eq!(second.len(), 2);
            assert!(claim_due(&store, 60, 10).await.unwrap().is_empty());
            mark_sent(&store, first[0].id, "ws://a".into())
                .await
                .unwrap();
            mark_failed(&store, first[1].id, "invalid: nope".into())
                .await
                .unwrap();
            retry(&store, first[2].id, now() - 1, "timeout".into())
                .await
                .unwrap();
            let again = claim_due(&store, 60, 10).await.unwrap();
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].attempts, 2);
            assert_eq!(state(&store, "m0").await.unwrap().unwrap().state, "sent");
            assert_eq!(
                state(&store, &first[1].message_id)
                    .await
                    .unwrap()
                    .unwrap()
                    .state,
                "failed"
            );
            assert_eq!(pending(&store).await.unwrap(), 3);
        })
        .await;
    }
}
