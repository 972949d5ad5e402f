//! User rows: name, password hash, public key and sealed seed. Creating a user also
//! creates their mailboxes, in the same transaction.

use super::{Result, Store, StoreError, mailboxes, now};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub pubkey: String,
    pub sealed_seed: Vec<u8>,
    pub forward_to: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password_hash: String,
    pub pubkey: String,
    pub sealed_seed: Vec<u8>,
}

const COLUMNS: &str = "id, username, password_hash, pubkey, sealed_seed, forward_to, created_at";

/// Inserts a user and their default mailboxes; `Conflict` if the name or key is taken.
pub async fn insert(store: &Store, user: NewUser) -> Result<UserRow> {
    let name = user.username.clone();
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                let row: UserRow = sqlx::query_as(&format!(
                    "INSERT INTO users (username, password_hash, pubkey, sealed_seed, created_at) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
                ))
                .bind(&user.username)
                .bind(&user.password_hash)
                .bind(&user.pubkey)
                .bind(&user.sealed_seed)
                .bind(now())
                .fetch_one(&mut *c)
                .await?;
                mailboxes::create_defaults(c, row.id).await?;
                Ok(row)
            })
        }))
        .await
        .map_err(|e| e.conflict_as(format!("user {name}")))
}

pub async fn get(store: &Store, username: &str) -> Result<Option<UserRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE username = $1"))
            .bind(username)
            .fetch_optional(store.pool())
            .await?,
    )
}

/// The user, or `NotFound` naming them.
pub async fn require(store: &Store, username: &str) -> Result<UserRow> {
    get(store, username)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("user {username}")))
}

pub async fn get_by_id(store: &Store, id: i64) -> Result<Option<UserRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(store.pool())
            .await?,
    )
}

pub async fn get_by_pubkey(store: &Store, pubkey: &str) -> Result<Option<UserRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE pubkey = $1"))
            .bind(pubkey)
            .fetch_optional(store.pool())
            .await?,
    )
}

/// The ids of the users among `pubkeys` (hex), with their keys.
pub async fn ids_by_pubkeys(store: &Store, pubkeys: &[String]) -> Result<Vec<(i64, String)>> {
    if pubkeys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT id, pubkey FROM users WHERE pubkey IN ({})",
        super::placeholders(1, pubkeys.len())
    );
    let mut q = sqlx::query_as(&sql);
    for k in pubkeys {
        q = q.bind(k);
    }
    Ok(q.fetch_all(store.pool()).await?)
}

pub async fn list(store: &Store) -> Result<Vec<UserRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users ORDER BY username"))
            .fetch_all(store.pool())
            .await?,
    )
}

/// The user created first (quickstart's admin), if any.
pub async fn first(store: &Store) -> Result<Option<UserRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM users ORDER BY id LIMIT 1"))
            .fetch_optional(store.pool())
            .await?,
    )
}

pub async fn count(store: &Store) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(store.pool())
        .await?)
}

/// Runs one UPDATE or DELETE of a user by name; `NotFound` if no row matched.
async fn change(store: &Store, username: &str, sql: &'static str, binds: Vec<Bind>) -> Result<()> {
    let name = username.to_owned();
    let changed = store
        .write(Box::new(move |c| {
            Box::pin(async move {
                let mut q = sqlx::query(sql);
                for b in binds {
                    q = match b {
                        Bind::Text(t) => q.bind(t),
                        Bind::Bytes(b) => q.bind(b),
                    };
                }
                Ok(q.bind(name).execute(&mut *c).await?.rows_affected())
            })
        }))
        .await?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("user {username}")));
    }
    Ok(())
}

enum Bind {
    Text(String),
    Bytes(Vec<u8>),
}

pub async fn set_password_hash(store: &Store, username: &str, hash: String) -> Result<()> {
    change(
        store,
        username,
        "UPDATE users SET password_hash = $1 WHERE username = $2",
        vec![Bind::Text(hash)],
    )
    .await
}

/// Sets (Some) or clears (None) the address the user's INBOX is forwarded to.
pub async fn set_forward(store: &Store, username: &str, address: Option<String>) -> Result<()> {
    let sql = if address.is_some() {
        "UPDATE users SET forward_to = $1 WHERE username = $2"
    } else {
        "UPDATE users SET forward_to = NULL WHERE username = $1"
    };
    change(
        store,
        username,
        sql,
        address.map(Bind::Text).into_iter().collect(),
    )
    .await
}

/// Replaces the user's identity (key import).
pub async fn set_identity(
    store: &Store,
    username: &str,
    pubkey: String,
    sealed_seed: Vec<u8>,
) -> Result<()> {
    change(
        store,
        username,
        "UPDATE users SET pubkey = $1, sealed_seed = $2 WHERE username = $3",
        vec![Bind::Text(pubkey.clone()), Bind::Bytes(sealed_seed)],
    )
    .await
    .map_err(|e| e.conflict_as(format!("a user with key {pubkey}")))
}

/// Deletes the user and, by cascade, everything that is theirs.
pub async fn remove(store: &Store, username: &str) -> Result<()> {
    change(
        store,
        username,
        "DELETE FROM users WHERE username = $1",
        vec![],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::each_backend;

    fn new(name: &str, key: &str) -> NewUser {
        NewUser {
            username: name.into(),
            password_hash: "h".into(),
            pubkey: key.into(),
            sealed_seed: vec![1, 2, 3],
        }
    }

    #[tokio::test]
    async fn users_lifecycle() {
        each_backend(|store| async move {
            let a = insert(&store, new("alice", "k1")).await.unwrap();
            assert_eq!(a.username, "alice");
            assert_eq!(get(&store, "alice").await.unwrap(), Some(a.clone()));
            assert_eq!(get_by_pubkey(&store, "k1").await.unwrap(), Some(a.clone()));
            assert!(matches!(
                insert(&store, new("alice", "k2")).await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                insert(&store, new("bob", "k1")).await,
                Err(StoreError::Conflict(_))
            ));
            insert(&store, new("bob", "k2")).await.unwrap();
            assert_eq!(count(&store).await.unwrap(), 2);
            assert_eq!(list(&store).await.unwrap().len(), 2);

            set_password_hash(&store, "alice", "h2".into())
                .await
                .unwrap();
            set_identity(&store, "alice", "k3".into(), vec![9])
                .await
                .unwrap();
            let a2 = require(&store, "alice").await.unwrap();
            assert_eq!(
                (
                    a2.password_hash.as_str(),
                    a2.pubkey.as_str(),
                    a2.sealed_seed.as_slice()
                ),
                ("h2", "k3", &[9u8][..])
            );
            assert!(matches!(
                set_identity(&store, "alice", "k2".into(), vec![]).await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                set_password_hash(&store, "nobody", "x".into()).await,
                Err(StoreError::NotFound(_))
            ));

            let boxes = crate::store::mailboxes::list(&store, a.id).await.unwrap();
            assert!(boxes.iter().any(|m| m.name == "INBOX"));
            remove(&store, "alice").await.unwrap();
            assert_eq!(get(&store, "alice").await.unwrap(), None);
            assert!(
                crate::store::mailboxes::list(&store, a.id)
                    .await
                    .unwrap()
                    .is_empty(),
                "mailboxes go with the user"
            );
            assert!(matches!(
                remove(&store, "alice").await,
                Err(StoreError::NotFound(_))
            ));
        })
        .await;
    }

    #[tokio::test]
    async fn concurrent_writes_all_commit() {
        each_backend(|store| async move {
            let mut tasks = Vec::new();
            for i in 0..200 {
                let s = store.clone();
                tasks.push(tokio::spawn(async move {
                    insert(&s, new(&format!("u{i}"), &format!("k{i}"))).await
                }));
            }
            // One failing write in the middle of a group must not take the others down.
            let dup = insert(&store, new("u0", "other")).await;
            let mut ok = 0;
            for t in tasks {
                if t.await.unwrap().is_ok() {
                    ok += 1;
                }
            }
            assert_eq!(ok + usize::from(dup.is_ok()), 200);
            assert_eq!(count(&store).await.unwrap(), 200);
        })
        .await;
    }
}
