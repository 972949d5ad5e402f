//! The queue of mail leaving for the email world: a submitted message stored once, and a
//! row per recipient for the delivery worker to settle. Queued before the submission is
//! acknowledged, so nothing accepted is lost to a crash.

use super::{Result, Store};
use sqlx::AnyConnection;

/// A message to queue and the addresses it goes to.
#[derive(Debug, Clone)]
pub struct NewOutbound {
    pub user_id: Option<i64>,
    pub mail_from: String,
    pub recipients: Vec<String>,
    pub raw: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Queues a message inside the caller's transaction; returns its id.
pub(crate) async fn enqueue_in(c: &mut AnyConnection, m: &NewOutbound) -> Result<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO outbound_messages (user_id, mail_from, raw, created_at) \
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(m.user_id)
    .bind(&m.mail_from)
    .bind(&m.raw)
    .bind(m.created_at)
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

/// A queued recipient with its message's envelope sender.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueuedRecipient {
    pub message_id: i64,
    pub mail_from: String,
    pub recipient: String,
    pub state: String,
}

/// Every recipient still waiting for delivery, oldest first.
pub async fn queued(store: &Store) -> Result<Vec<QueuedRecipient>> {
    Ok(sqlx::query_as(
        "SELECT r.message_id, m.mail_from, r.recipient, r.state FROM outbound_recipients r \
         JOIN outbound_messages m ON m.id = r.message_id WHERE r.state = 'queued' ORDER BY r.id",
    )
    .fetch_all(store.pool())
    .await?)
}

/// The queued message's bytes.
pub async fn raw(store: &Store, message_id: i64) -> Result<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT raw FROM outbound_messages WHERE id = $1")
            .bind(message_id)
            .fetch_optional(store.pool())
            .await?,
    )
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
            };
            let id = store
                .write(Box::new(move |c| {
                    Box::pin(async move { enqueue_in(c, &m).await })
                }))
                .await
                .unwrap();
            let q = queued(&store).await.unwrap();
            assert_eq!(q.len(), 2);
            assert!(
                q.iter()
                    .all(|r| r.message_id == id && r.mail_from == "alice@d.test")
            );
            assert_eq!(q[1].recipient, "b@y.test");
            assert_eq!(
                raw(&store, id).await.unwrap().unwrap(),
                b"Subject: hi\r\n\r\nbody\r\n"
            );
        })
        .await;
    }
}
