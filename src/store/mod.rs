//! Storage: one `Store` over SQLite (the default) or PostgreSQL (several daemons on one
//! database), through sqlx's `Any` driver so every query is written once.
//!
//! Reads go to a connection pool. Writes go through [`Store::write`], which runs a
//! closure in a transaction and returns only after it is committed — the rule behind
//! every acknowledgement the daemon gives. On SQLite, which takes one writer at a time,
//! writes queue for a single writer task that commits them in groups (see `writer`);
//! on PostgreSQL each write is its own transaction on the pool.
//!
//! SQL uses `$1, $2, ...` placeholders, numbered in order of first appearance: SQLite
//! reads them as named parameters indexed by first appearance, PostgreSQL by number.
//! Schemas live in migrations/sqlite and migrations/postgres, kept in step.

pub mod bridge_out;
pub mod changes;
pub mod contacts;
pub mod correspondents;
pub mod dev_wallet;
pub mod held;
pub mod inbox;
pub mod invoices;
pub mod ledger;
pub mod legacy;
pub mod mail;
pub mod mailboxes;
pub mod outbound;
pub mod outbox;
pub mod pricing;
pub mod relay;
pub mod reply_routes;
pub mod settings;
pub mod users;
mod writer;

use futures_util::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database folder {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("a database write failed unexpectedly and was rolled back")]
    Panicked,
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
}

impl StoreError {
    /// Maps a unique-constraint violation to [`StoreError::Conflict`] naming `what`.
    pub(crate) fn conflict_as(self, what: impl Into<String>) -> StoreError {
        match &self {
            StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                StoreError::Conflict(what.into())
            }
            _ => self,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A write: a closure that runs its statements on the transaction's connection.
pub type WriteFn<T> =
    Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T>> + Send>;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub sqlite_group_commit_max: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            sqlite_group_commit_max: 256,
        }
    }
}

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    writer: Option<writer::Writer>,
    changes: changes::Changes,
    /// Cancelled by [`Store::close`], for the tasks the store runs.
    closed: tokio_util::sync::CancellationToken,
}

const SQLITE_PRAGMAS: &str =
    "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL;";

impl Store {
    /// Connects to `url` (`sqlite:` or `postgres://`). Creates a SQLite file and its
    /// folder if missing. Does not migrate: see [`Store::migrate`].
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let connect = AnyConnectOptions::from_str(url)?
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        if backend == Backend::Sqlite {
            create_sqlite_folder(url)?;
        }
        let mut pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Sqlite {
            pool = pool.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            });
        }
        let pool = pool.connect_with(connect.clone()).await?;
        let writer = match backend {
            Backend::Sqlite => {
                let mut conn = AnyConnection::connect_with(&connect).await?;
                // WAL lets readers proceed while the writer commits; it is a property of
                // the file, so setting it once per open is enough.
                conn.execute("PRAGMA journal_mode = WAL;").await?;
                conn.execute(SQLITE_PRAGMAS).await?;
                Some(writer::Writer::start(conn, options.sqlite_group_commit_max))
            }
            Backend::Postgres => None,
        };
        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                backend,
                writer,
                changes: changes::Changes::new(url, backend),
                closed: tokio_util::sync::CancellationToken::new(),
            }),
        })
    }

    /// Brings the schema up to date. On PostgreSQL sqlx takes an advisory lock, so
    /// several daemons starting at once migrate once.
    pub async fn migrate(&self) -> Result<()> {
        match self.inner.backend {
            Backend::Sqlite => {
                let mut conn = self.inner.pool.acquire().await?;
                sqlx::migrate!("migrations/sqlite").run(&mut *conn).await?;
            }
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.inner.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether the schema exists yet (false on a database never migrated).
    pub async fn has_schema(&self) -> Result<bool> {
        let sql = match self.inner.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'settings'"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'settings'"
            }
        };
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&self.inner.pool).await?;
        Ok(n > 0)
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The pool for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// Runs `f` in a transaction and returns its result once committed. If `f` fails,
    /// its statements are rolled back and nothing else is affected.
    pub async fn write<T: Send + 'static>(&self, f: WriteFn<T>) -> Result<T> {
        match &self.inner.writer {
            Some(w) => w.submit(f).await,
            None => {
                let mut tx = self.inner.pool.begin().await?;
                // A write that panics is rolled back (the transaction is dropped) and
                // reported, as on SQLite, rather than unwinding into its caller.
                let value =
                    futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(f(&mut tx)))
                        .await
                        .map_err(|_| StoreError::Panicked)??;
                tx.commit().await?;
                Ok(value)
            }
        }
    }

    /// Finishes queued writes and closes every connection.
    pub async fn close(&self) {
        self.inner.closed.cancel();
        if let Some(w) = &self.inner.writer {
            w.shutdown().await;
        }
        self.inner.pool.close().await;
    }
}

fn create_sqlite_folder(url: &str) -> Result<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::Folder {
            path: parent.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Unix time now, in seconds.
/// Claims up to `max` due rows of a work queue for `lease` seconds: rows in state
/// `pending` whose `next_attempt_at` has come and whose lease (`locked_until`) has
/// run out, oldest first; their `attempts` go up by one. A worker that dies leaves its
/// claims to run out and be taken over; on PostgreSQL, rows another node is claiming
/// right now are skipped, so nodes share a queue without waiting on each other.
pub(crate) async fn claim_due<T>(
    store: &Store,
    table: &'static str,
    pending: &'static str,
    returning: &'static str,
    now: i64,
    lease: i64,
    max: i64,
) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin + 'static,
{
    let due = format!(
        "SELECT id FROM {table} WHERE state = '{pending}' AND next_attempt_at <= $2 \
         AND locked_until <= $2 ORDER BY next_attempt_at, id LIMIT $3"
    );
    let sql = match store.backend() {
        // Materialized, so the planner cannot run the locking subquery more than once
        // (and claim more than LIMIT rows).
        Backend::Postgres => {
            let returning: Vec<String> = returning
                .split(',')
                .map(|c| format!("t.{}", c.trim()))
                .collect();
            format!(
                "WITH due AS MATERIALIZED ({due} FOR UPDATE SKIP LOCKED) \
                 UPDATE {table} AS t SET locked_until = $1, attempts = t.attempts + 1 \
                 FROM due WHERE t.id = due.id RETURNING {}",
                returning.join(", ")
            )
        }
        Backend::Sqlite => format!(
            "UPDATE {table} SET locked_until = $1, attempts = attempts + 1 WHERE id IN ({due}) \
             RETURNING {returning}"
        ),
    };
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                Ok(sqlx::query_as(&sql)
                    .bind(now + lease)
                    .bind(now)
                    .bind(max)
                    .fetch_all(&mut *c)
                    .await?)
            })
        }))
        .await
}

/// `$first, $first+1, ...`: n numbered placeholders for an IN list.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// [`now`] as the unsigned seconds LNMP timestamps use.
pub fn unix_now() -> u64 {
    now().max(0) as u64
}

#[cfg(test)]
pub(crate) mod testing;
