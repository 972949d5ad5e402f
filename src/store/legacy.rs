//! Email senders known by the LNMP key the bridge derived for them, so an LNMP message
//! to that key can be turned back into email to the right address.

use super::{Result, Store};
use sqlx::AnyConnection;

/// Records `address` as the email sender behind `pubkey`, inside the caller's transaction.
pub(crate) async fn remember_in(
    c: &mut AnyConnection,
    pubkey: &str,
    address: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO legacy_senders (pubkey, address, first_seen) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(pubkey)
    .bind(address)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The email address behind a derived key, if the MX has seen it.
pub async fn address_of(store: &Store, pubkey: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT address FROM legacy_senders WHERE pubkey = $1")
            .bind(pubkey)
            .fetch_optional(store.pool())
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::each_backend;

    #[tokio::test]
    async fn remembers_each_sender_once() {
        each_backend(|store| async move {
            for _ in 0..2 {
                store
                    .write(Box::new(|c| {
                        Box::pin(async move { remember_in(c, "k1", "bob@example.org", 5).await })
                    }))
                    .await
                    .unwrap();
            }
            assert_eq!(
                address_of(&store, "k1").await.unwrap().as_deref(),
                Some("bob@example.org")
            );
            assert_eq!(address_of(&store, "k2").await.unwrap(), None);
        })
        .await;
    }
}
