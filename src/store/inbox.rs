//! The LNMP inbox of the domain's users: every verified message addressed to one of
//! them, whether it was published to the embedded relay or read from another relay.
//! The mail store renders it; the id keeps each message in once.

use super::{Result, Store};
use crate::lnmp::Message;
use sqlx::AnyConnection;

/// Adds a message to a user's inbox inside the caller's transaction; a message already
/// there is left as it is. With `file`, a new message is also filed in the user's
/// INBOX mailbox (its rendered size learnt later, see [`super::mail::set_size`]),
/// marked `$Paid` when it carries a payment.
pub(crate) async fn insert_in(
    c: &mut AnyConnection,
    user_id: i64,
    m: &Message,
    json: &str,
    received_at: i64,
    file: bool,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO inbox (user_id, message_id, created_at, received_at, body) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id, message_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(m.id.to_hex())
    .bind(i64::try_from(m.timestamp).unwrap_or(i64::MAX))
    .bind(received_at)
    .bind(json)
    .execute(&mut *c)
    .await?;
    let new = done.rows_affected() == 1;
    if new && file {
        let mail = super::mail::NewMail {
            message_id: m.id.to_hex(),
            internal_date: received_at,
            size: -1,
            flags: if m.payment.is_some() {
                "$Paid".into()
            } else {
                String::new()
            },
        };
        super::mail::file_in(c, user_id, "INBOX", &mail).await?;
    }
    Ok(new)
}

/// The JSON of a message some user's inbox holds (the same sealed message for all).
pub async fn any_body(store: &Store, message_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT body FROM inbox WHERE message_id = $1 LIMIT 1")
            .bind(message_id)
            .fetch_optional(store.pool())
            .await?,
    )
}

/// Adds a message to a user's inbox and files it in INBOX; false if it was there
/// already.
pub async fn insert(
    store: &Store,
    user_id: i64,
    m: Message,
    json: String,
    received_at: i64,
) -> Result<bool> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move { insert_in(c, user_id, &m, &json, received_at, true).await })
        }))
        .await
}

/// The user's messages since `since` (message time), oldest first, as stored JSON.
pub async fn list(store: &Store, user_id: i64, since: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT body FROM inbox WHERE user_id = $1 AND created_at >= $2 ORDER BY created_at, message_id",
    )
    .bind(user_id)
    .bind(since)
    .fetch_all(store.pool())
    .await?)
}

/// The newest message time in the user's inbox, where a subscription resumes.
pub async fn latest(store: &Store, user_id: i64) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT MAX(created_at) FROM inbox WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(store.pool())
            .await?,
    )
}
