//! Test support: run a storage test on every backend available — SQLite always, and
//! PostgreSQL when LNMP_TEST_DATABASE_URL is set, each in a fresh database or schema.

use super::{Store, StoreOptions};
use sqlx::Connection;
use std::future::Future;

/// The environment variable naming a PostgreSQL database tests may create schemas in.
pub const PG_URL_VAR: &str = "LNMP_TEST_DATABASE_URL";

/// Runs `test` against a migrated store on each backend, in turn.
pub async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::open(&url, &StoreOptions::default())
        .await
        .expect("open sqlite");
    store.migrate().await.expect("migrate sqlite");
    test(store.clone()).await;
    store.close().await;

    if let Ok(base) = std::env::var(PG_URL_VAR) {
        let (store, schema) = postgres_store(&base).await;
        test(store.clone()).await;
        store.close().await;
        drop_schema(&base, &schema).await;
    }
}

/// A migrated store in a new PostgreSQL schema of the database at `base`.
pub async fn postgres_store(base: &str) -> (Store, String) {
    let schema = format!(
        "t_{}",
        hex::encode(rand_core::RngCore::next_u64(&mut rand_core::OsRng).to_be_bytes())
    );
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to LNMP_TEST_DATABASE_URL");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create schema");
    conn.close().await.ok();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let store = Store::open(&url, &StoreOptions::default())
        .await
        .expect("open postgres");
    store.migrate().await.expect("migrate postgres");
    (store, schema)
}

pub async fn drop_schema(base: &str, schema: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(base).await {
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await;
    }
}

/// Adds a user with placeholder credentials, for tests of what hangs off users.
pub async fn add_user(store: &Store, name: &str) -> super::users::UserRow {
    super::users::insert(
        store,
        super::users::NewUser {
            username: name.into(),
            password_hash: "h".into(),
            pubkey: format!("key-of-{name}"),
            sealed_seed: vec![],
        },
    )
    .await
    .expect("insert a test user")
}
