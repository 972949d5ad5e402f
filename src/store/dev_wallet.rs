//! The embedded dev wallet's invoices (table `dev_invoices`): the rows its node issued
//! and the state changes paying, settling and cancelling them make. Every change is one
//! conditional UPDATE, so two processes sharing the database (the daemon and
//! `lnmp-bridge dev pay`) can never settle one invoice twice.
//!
//! Hashes and preimages are lower-case hex; times are Unix seconds.

use super::{Result, Store};

/// A row of `dev_invoices`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DevInvoiceRow {
    pub payment_hash: String,
    /// NULL for a hold invoice until the daemon settles it.
    pub preimage: Option<String>,
    pub bolt11: String,
    pub amount_msat: i64,
    /// 1 for a hold invoice.
    pub hold: i64,
    /// 'open', 'accepted', 'settled' or 'canceled'.
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub settled_at: Option<i64>,
}

/// An invoice to record, in state 'open'.
#[derive(Debug, Clone)]
pub struct NewDevInvoice {
    pub payment_hash: String,
    /// None for a hold invoice.
    pub preimage: Option<String>,
    pub bolt11: String,
    pub amount_msat: i64,
    pub hold: bool,
    pub created_at: i64,
    pub expires_at: i64,
}

const COLUMNS: &str =
    "payment_hash, preimage, bolt11, amount_msat, hold, state, created_at, expires_at, settled_at";

/// Records a new invoice. A second one with the same payment hash is a
/// [`super::StoreError::Conflict`].
pub async fn insert(store: &Store, invoice: NewDevInvoice) -> Result<()> {
    let what = format!("dev invoice {}", invoice.payment_hash);
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO dev_invoices (payment_hash, preimage, bolt11, amount_msat, hold, \
                     state, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, 'open', $6, $7)",
                )
                .bind(invoice.payment_hash)
                .bind(invoice.preimage)
                .bind(invoice.bolt11)
                .bind(invoice.amount_msat)
                .bind(i64::from(invoice.hold))
                .bind(invoice.created_at)
                .bind(invoice.expires_at)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
        .map_err(|e| e.conflict_as(what))
}

pub async fn get(store: &Store, payment_hash: &str) -> Result<Option<DevInvoiceRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dev_invoices WHERE payment_hash = $1"
    ))
    .bind(payment_hash)
    .fetch_optional(store.pool())
    .await?)
}

/// Runs one UPDATE in a write and returns how many rows it changed.
async fn update(store: &Store, sql: &'static str, binds: Vec<Bind>) -> Result<u64> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                let mut q = sqlx::query(sql);
                for b in binds {
                    q = match b {
                        Bind::Text(s) => q.bind(s),
                        Bind::Int(i) => q.bind(i),
                    };
                }
                Ok(q.execute(&mut *c).await?.rows_affected())
            })
        }))
        .await
}

enum Bind {
    Text(String),
    Int(i64),
}

/// Pays an ordinary (not hold) invoice: 'open' and unexpired at `now` becomes
/// 'settled'. False if it was not in that state (already paid, expired, cancelled or
/// unknown): the caller reads the row to say which.
pub async fn settle_open(store: &Store, payment_hash: &str, now: i64) -> Result<bool> {
    // Placeholders are numbered in order of first appearance (SQLite reads them so).
    let n = update(
        store,
        "UPDATE dev_invoices SET state = 'settled', settled_at = $1 \
         WHERE payment_hash = $2 AND hold = 0 AND state = 'open' AND expires_at > $1",
        vec![Bind::Int(now), Bind::Text(payment_hash.to_owned())],
    )
    .await?;
    Ok(n == 1)
}

/// Pays a hold invoice: 'open' and unexpired at `now` becomes 'accepted', waiting for
/// [`settle_accepted`] or [`cancel`]. False if it was not in that state.
pub async fn accept_open_hold(store: &Store, payment_hash: &str, now: i64) -> Result<bool> {
    let n = update(
        store,
        "UPDATE dev_invoices SET state = 'accepted' \
         WHERE payment_hash = $1 AND hold = 1 AND state = 'open' AND expires_at > $2",
        vec![Bind::Text(payment_hash.to_owned()), Bind::Int(now)],
    )
    .await?;
    Ok(n == 1)
}

/// Settles an accepted hold invoice with its preimage (the caller has checked that it
/// hashes to `payment_hash`). False if the invoice was not 'accepted'.
pub async fn settle_accepted(
    store: &Store,
    payment_hash: &str,
    preimage: &str,
    now: i64,
) -> Result<bool> {
    let n = update(
        store,
        "UPDATE dev_invoices SET state = 'settled', preimage = $1, settled_at = $2 \
         WHERE payment_hash = $3 AND hold = 1 AND state = 'accepted'",
        vec![
            Bind::Text(preimage.to_owned()),
            Bind::Int(now),
            Bind::Text(payment_hash.to_owned()),
        ],
    )
    .await?;
    Ok(n == 1)
}

/// Cancels an invoice that is 'open' or 'accepted'. False if it was in neither state.
/// Forgets invoices that could no longer be paid before `before` (a hold invoice
/// waiting on the daemon stays).
pub async fn prune(store: &Store, before: i64) -> Result<u64> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                Ok(sqlx::query(
                    "DELETE FROM dev_invoices WHERE expires_at < $1 AND state <> 'accepted'",
                )
                .bind(before)
                .execute(&mut *c)
                .await?
                .rows_affected())
            })
        }))
        .await
}

pub async fn cancel(store: &Store, payment_hash: &str) -> Result<bool> {
    let n = update(
        store,
        "UPDATE dev_invoices SET state = 'canceled' \
         WHERE payment_hash = $1 AND state IN ('open', 'accepted')",
        vec![Bind::Text(payment_hash.to_owned())],
    )
    .await?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use crate::store::testing::each_backend;

    fn new(hash: &str, hold: bool, expires_at: i64) -> NewDevInvoice {
        NewDevInvoice {
            payment_hash: hash.into(),
            preimage: (!hold).then(|| format!("pre-{hash}")),
            bolt11: format!("lnbcrt-{hash}"),
            amount_msat: 21_000,
            hold,
            created_at: 100,
            expires_at,
        }
    }

    #[tokio::test]
    async fn ordinary_invoices_settle_once_and_not_after_expiry() {
        each_backend(|store| async move {
            insert(&store, new("aa", false, 200)).await.unwrap();
            assert!(matches!(
                insert(&store, new("aa", false, 200)).await,
                Err(StoreError::Conflict(_))
            ));
            let row = get(&store, "aa").await.unwrap().unwrap();
            assert_eq!(row.state, "open");
            assert_eq!(row.hold, 0);
            assert_eq!(row.preimage.as_deref(), Some("pre-aa"));
            // A hold-only change does not apply to an ordinary invoice.
            assert!(!accept_open_hold(&store, "aa", 150).await.unwrap());
            assert!(settle_open(&store, "aa", 150).await.unwrap());
            assert!(!settle_open(&store, "aa", 150).await.unwrap());
            let row = get(&store, "aa").await.unwrap().unwrap();
            assert_eq!((row.state.as_str(), row.settled_at), ("settled", Some(150)));
            assert!(!cancel(&store, "aa").await.unwrap());

            insert(&store, new("bb", false, 200)).await.unwrap();
            assert!(!settle_open(&store, "bb", 200).await.unwrap());
            assert_eq!(get(&store, "bb").await.unwrap().unwrap().state, "open");
            assert!(!settle_open(&store, "zz", 1).await.unwrap());
            assert_eq!(get(&store, "zz").await.unwrap(), None);
        })
        .await;
    }

    #[tokio::test]
    async fn hold_invoices_accept_then_settle_or_cancel() {
        each_backend(|store| async move {
            insert(&store, new("cc", true, 200)).await.unwrap();
            assert!(!settle_open(&store, "cc", 150).await.unwrap());
            assert!(!settle_accepted(&store, "cc", "pre", 150).await.unwrap());
            assert!(accept_open_hold(&store, "cc", 150).await.unwrap());
            assert!(!accept_open_hold(&store, "cc", 150).await.unwrap());
            assert!(settle_accepted(&store, "cc", "pre", 160).await.unwrap());
            let row = get(&store, "cc").await.unwrap().unwrap();
            assert_eq!(row.state, "settled");
            assert_eq!(row.preimage.as_deref(), Some("pre"));
            assert_eq!(row.settled_at, Some(160));

            insert(&store, new("dd", true, 200)).await.unwrap();
            assert!(accept_open_hold(&store, "dd", 150).await.unwrap());
            assert!(cancel(&store, "dd").await.unwrap());
            assert!(!cancel(&store, "dd").await.unwrap());
            assert!(!settle_accepted(&store, "dd", "pre", 160).await.unwrap());
            assert_eq!(get(&store, "dd").await.unwrap().unwrap().state, "canceled");
        })
        .await;
    }
}
