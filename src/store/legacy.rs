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

/// Records `address` as the email sender behind `pubkey`.
pub async fn remember(store: &Store, pubkey: &str, address: &str) -> Result<()> {
    let (k, a) = (pubkey.to_owned(), address.to_owned());
    store
        .write(Box::new(move |c| {
            Box::pin(async move { remember_in(c, &k, &a, super::now()).await })
        }))
        .await
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

/// Which of `keys` are derived keys of email senders.
pub async fn known_keys(store: &Store, keys: &[String]) -> Result<Vec<String>> {
    let mut known = Vec::new();
    for k in keys {
        let hit: Option<String> =
            sqlx::query_scalar("SELECT pubkey FROM legacy_senders WHERE pubkey = $1")
                .bind(k)
                .fetch_optional(store.pool())
                .await?;
        known.extend(hit);
    }
    Ok(known)
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
