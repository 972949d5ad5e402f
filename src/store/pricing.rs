//! Per-user pricing: overrides of the configured prices (NULL means "the default") and
//! free passes (DKIM domains and List-Ids whose mail is free).

use super::{Result, Store};

#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Overrides {
    pub stranger: Option<i64>,
    pub acquaintance: Option<i64>,
    pub friend: Option<i64>,
    pub priority: Option<i64>,
    pub surge_multiplier: Option<i64>,
    pub surge_threshold: Option<i64>,
    /// What the relay client pays for the user without asking, per message.
    pub autopay_cap: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    DkimDomain,
    ListId,
}

impl PassKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PassKind::DkimDomain => "dkim-domain",
            PassKind::ListId => "list-id",
        }
    }
}

pub async fn get(store: &Store, user_id: i64) -> Result<Overrides> {
    let row: Option<Overrides> = sqlx::query_as(
        "SELECT stranger, acquaintance, friend, priority, surge_multiplier, surge_threshold, \
         autopay_cap FROM pricing WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(store.pool())
    .await?;
    Ok(row.unwrap_or_default())
}

pub async fn set(store: &Store, user_id: i64, o: Overrides) -> Result<()> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO pricing (user_id, stranger, acquaintance, friend, priority, surge_multiplier, surge_threshold, autopay_cap) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id) DO UPDATE SET \
                     stranger = excluded.stranger, acquaintance = excluded.acquaintance, friend = excluded.friend, \
                     priority = excluded.priority, surge_multiplier = excluded.surge_multiplier, \
                     surge_threshold = excluded.surge_threshold, autopay_cap = excluded.autopay_cap",
                )
                .bind(user_id)
                .bind(o.stranger)
                .bind(o.acquaintance)
                .bind(o.friend)
                .bind(o.priority)
                .bind(o.surge_multiplier)
                .bind(o.surge_threshold)
                .bind(o.autopay_cap)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
}

pub async fn free_passes(store: &Store, user_id: i64, kind: PassKind) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT value FROM free_passes WHERE user_id = $1 AND kind = $2 ORDER BY value",
    )
    .bind(user_id)
    .bind(kind.as_str())
    .fetch_all(store.pool())
    .await?)
}

/// Adds or removes a free pass; adding one that exists and removing one that does not
/// are no-ops.
pub async fn set_free_pass(
    store: &Store,
    user_id: i64,
    kind: PassKind,
    value: &str,
    present: bool,
) -> Result<()> {
    let value = value.to_owned();
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                let sql = if present {
                    "INSERT INTO free_passes (user_id, kind, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
                } else {
                    "DELETE FROM free_passes WHERE user_id = $1 AND kind = $2 AND value = $3"
                };
                sqlx::query(sql)
                    .bind(user_id)
                    .bind(kind.as_str())
                    .bind(value)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{add_user, each_backend};

    #[tokio::test]
    async fn overrides_and_passes() {
        each_backend(|store| async move {
            let u = add_user(&store, "alice").await;
            assert_eq!(get(&store, u.id).await.unwrap(), Overrides::default());
            let o = Overrides {
                stranger: Some(500),
                surge_threshold: Some(0),
                ..Overrides::default()
            };
            set(&store, u.id, o.clone()).await.unwrap();
            assert_eq!(get(&store, u.id).await.unwrap(), o);
            set_free_pass(&store, u.id, PassKind::DkimDomain, "bank.example", true)
                .await
                .unwrap();
            set_free_pass(&store, u.id, PassKind::DkimDomain, "bank.example", true)
                .await
                .unwrap();
            set_free_pass(&store, u.id, PassKind::ListId, "news.example.org", true)
                .await
                .unwrap();
            assert_eq!(
                free_passes(&store, u.id, PassKind::DkimDomain)
                    .await
                    .unwrap(),
                ["bank.example"]
            );
            set_free_pass(&store, u.id, PassKind::DkimDomain, "bank.example", false)
                .await
                .unwrap();
            assert!(
                free_passes(&store, u.id, PassKind::DkimDomain)
                    .await
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(
                free_passes(&store, u.id, PassKind::ListId)
                    .await
                    .unwrap()
                    .len(),
                1
            );
        })
        .await;
    }
}
