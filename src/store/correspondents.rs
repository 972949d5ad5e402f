//! Whom each user wrote to and the Message-IDs they sent: mail from those people, and
//! answers to those messages, reach the user without paying.

use super::{Result, Store, placeholders};
use sqlx::AnyConnection;

/// Records a user's submission: its recipients (email or LNMP addresses, lowercase)
/// and its Message-ID, inside the transaction that queues it.
pub(crate) async fn record_in(
    c: &mut AnyConnection,
    user_id: i64,
    recipients: &[String],
    message_id: Option<&str>,
    at: i64,
) -> Result<()> {
    for address in recipients {
        sqlx::query(
            "INSERT INTO correspondents (user_id, address, last_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, address) DO UPDATE SET last_at = excluded.last_at",
        )
        .bind(user_id)
        .bind(address.to_ascii_lowercase())
        .bind(at)
        .execute(&mut *c)
        .await?;
    }
    if let Some(id) = message_id {
        sqlx::query(
            "INSERT INTO sent_message_ids (user_id, message_id, sent_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, message_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(id)
        .bind(at)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Whether the user has written to `address`.
pub async fn wrote_to(store: &Store, user_id: i64, address: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM correspondents WHERE user_id = $1 AND address = $2",
    )
    .bind(user_id)
    .bind(address.to_ascii_lowercase())
    .fetch_one(store.pool())
    .await?;
    Ok(n > 0)
}

/// Whether any of `message_ids` (without angle brackets) is one the user sent.
pub async fn sent_any(store: &Store, user_id: i64, message_ids: &[String]) -> Result<bool> {
    // Bounded: a References field can be long, and only its last ids matter much.
    let ids: Vec<&String> = message_ids.iter().rev().take(100).collect();
    if ids.is_empty() {
        return Ok(false);
    }
    let sql = format!(
        "SELECT COUNT(*) FROM sent_message_ids WHERE user_id = $1 AND message_id IN ({})",
        placeholders(2, ids.len())
    );
    let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(user_id);
    for id in ids {
        q = q.bind(id.as_str());
    }
    Ok(q.fetch_one(store.pool()).await? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{add_user, each_backend};

    #[tokio::test]
    async fn remembers_recipients_and_ids() {
        each_backend(|store| async move {
            let u = add_user(&store, "alice").await.id;
            store
                .write(Box::new(move |c| {
                    Box::pin(async move {
                        record_in(c, u, &["Dan@Example.org".into()], Some("abc@x"), 1).await
                    })
                }))
                .await
                .unwrap();
            assert!(wrote_to(&store, u, "dan@example.org").await.unwrap());
            assert!(!wrote_to(&store, u, "eve@example.org").await.unwrap());
            assert!(
                sent_any(&store, u, &["zzz@y".into(), "abc@x".into()])
                    .await
                    .unwrap()
            );
            assert!(!sent_any(&store, u, &["zzz@y".into()]).await.unwrap());
            assert!(!sent_any(&store, u, &[]).await.unwrap());
        })
        .await;
    }
}
