//! A user's contacts: addresses (email or LNMP) they know, and how well. Contacts pay the
//! price of their level, which for friends is usually nothing.

use super::{Result, Store, StoreError, now};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Friend,
    Acquaintance,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Friend => "friend",
            Level::Acquaintance => "acquaintance",
        }
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Level, String> {
        match s {
            "friend" => Ok(Level::Friend),
            "acquaintance" => Ok(Level::Acquaintance),
            other => Err(format!(
                "unknown contact level {other:?} (friend or acquaintance)"
            )),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub address: String,
    pub level: Level,
    pub created_at: i64,
}

/// Adds a contact, or changes the level of an existing one.
pub async fn upsert(store: &Store, user_id: i64, address: &str, level: Level) -> Result<()> {
    let address = address.to_owned();
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO contacts (user_id, address, level, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id, address) DO UPDATE SET level = excluded.level",
                )
                .bind(user_id)
                .bind(address)
                .bind(level.as_str())
                .bind(now())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
}

/// Adds a contact inside the caller's transaction unless the address is one already
/// (whose level stays as the user set it).
pub(crate) async fn add_in(
    c: &mut sqlx::AnyConnection,
    user_id: i64,
    address: &str,
    level: Level,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO contacts (user_id, address, level, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, address) DO NOTHING",
    )
    .bind(user_id)
    .bind(address)
    .bind(level.as_str())
    .bind(now())
    .execute(&mut *c)
    .await?;
    Ok(())
}

fn to_contact((address, level, created_at): (String, String, i64)) -> Result<Contact> {
    let level = level
        .parse()
        .map_err(|e: String| StoreError::Database(sqlx::Error::Decode(e.into())))?;
    Ok(Contact {
        address,
        level,
        created_at,
    })
}

pub async fn list(store: &Store, user_id: i64) -> Result<Vec<Contact>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT address, level, created_at FROM contacts WHERE user_id = $1 ORDER BY address",
    )
    .bind(user_id)
    .fetch_all(store.pool())
    .await?;
    rows.into_iter().map(to_contact).collect()
}

pub async fn get(store: &Store, user_id: i64, address: &str) -> Result<Option<Contact>> {
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT address, level, created_at FROM contacts WHERE user_id = $1 AND address = $2",
    )
    .bind(user_id)
    .bind(address)
    .fetch_optional(store.pool())
    .await?;
    row.map(to_contact).transpose()
}

pub async fn remove(store: &Store, user_id: i64, address: &str) -> Result<()> {
    let a = address.to_owned();
    let n = store
        .write(Box::new(move |c| {
            Box::pin(async move {
                Ok(
                    sqlx::query("DELETE FROM contacts WHERE user_id = $1 AND address = $2")
                        .bind(user_id)
                        .bind(a)
                        .execute(&mut *c)
                        .await?
                        .rows_affected(),
                )
            })
        }))
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("contact {address}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{add_user, each_backend};

    #[tokio::test]
    async fn contacts_upsert_list_remove() {
        each_backend(|store| async move {
            let u = add_user(&store, "alice").await;
            upsert(&store, u.id, "bob@example.org", Level::Acquaintance)
                .await
                .unwrap();
            upsert(&store, u.id, "bob@example.org", Level::Friend)
                .await
                .unwrap();
            upsert(&store, u.id, "carol#abcdef@example.com", Level::Friend)
                .await
                .unwrap();
            let all = list(&store, u.id).await.unwrap();
            assert_eq!(all.len(), 2);
            assert_eq!(
                get(&store, u.id, "bob@example.org")
                    .await
                    .unwrap()
                    .unwrap()
                    .level,
                Level::Friend
            );
            remove(&store, u.id, "bob@example.org").await.unwrap();
            assert!(matches!(
                remove(&store, u.id, "bob@example.org").await,
                Err(StoreError::NotFound(_))
            ));
            assert_eq!(list(&store, u.id).await.unwrap().len(), 1);
        })
        .await;
    }
}
