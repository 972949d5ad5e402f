//! Named values the daemon keeps for itself, such as the master key's check value.

use super::{Result, Store};
use sqlx::Row;

pub async fn get(store: &Store, name: &str) -> Result<Option<Vec<u8>>> {
    let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
        .bind(name)
        .fetch_optional(store.pool())
        .await?;
    Ok(row.map(|r| r.try_get("value")).transpose()?)
}

/// Sets `name` to `value` unless it is already set; returns the value now stored.
pub async fn set_once(store: &Store, name: &str, value: Vec<u8>) -> Result<Vec<u8>> {
    let name = name.to_owned();
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(&name)
                    .bind(value)
                    .execute(&mut *c)
                    .await?;
                let stored: Vec<u8> = sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                    .bind(&name)
                    .fetch_one(&mut *c)
                    .await?;
                Ok(stored)
            })
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::each_backend;

    #[tokio::test]
    async fn set_once_keeps_the_first_value() {
        each_backend(|store| async move {
            assert_eq!(get(&store, "k").await.unwrap(), None);
            assert_eq!(set_once(&store, "k", vec![1, 2]).await.unwrap(), vec![1, 2]);
            assert_eq!(set_once(&store, "k", vec![3]).await.unwrap(), vec![1, 2]);
            assert_eq!(get(&store, "k").await.unwrap(), Some(vec![1, 2]));
        })
        .await;
    }
}
