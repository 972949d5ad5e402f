//! The invoices the bridge issued, on whatever Lightning backend, and what paying each
//! one does: release a held message, let an LNMP message through the relay, or credit
//! a user's balance. Amounts are millisatoshis.

use super::{Result, Store, now};
use sqlx::AnyConnection;

/// What settling an invoice does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Delivers a held message (email from a stranger).
    Held,
    /// Lets an LNMP message through the embedded relay (its proof is redeemed once).
    Relay,
    /// Credits the user's balance (a deposit or a Lightning Address payment).
    Deposit,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Held => "held",
            Purpose::Relay => "relay",
            Purpose::Deposit => "deposit",
        }
    }

    fn parse(s: &str) -> Purpose {
        match s {
            "held" => Purpose::Held,
            "relay" => Purpose::Relay,
            _ => Purpose::Deposit,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRow {
    pub id: i64,
    pub payment_hash: String,
    pub bolt11: String,
    pub amount_msat: i64,
    pub purpose: Purpose,
    pub user_id: Option<i64>,
    pub held_id: Option<i64>,
    pub message_id: Option<String>,
    /// For relay invoices: each local recipient and their share, `id:msat,...`.
    pub recipients: String,
    pub state: String,
    pub preimage: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

type Raw = (
    i64,
    String,
    String,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    String,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
);

const COLUMNS: &str = "id, payment_hash, bolt11, amount_msat, purpose, user_id, held_id, \
     message_id, recipients, state, preimage, created_at, expires_at, used_at";

fn row(r: Raw) -> InvoiceRow {
    InvoiceRow {
        id: r.0,
        payment_hash: r.1,
        bolt11: r.2,
        amount_msat: r.3,
        purpose: Purpose::parse(&r.4),
        user_id: r.5,
        held_id: r.6,
        message_id: r.7,
        recipients: r.8,
        state: r.9,
        preimage: r.10,
        created_at: r.11,
        expires_at: r.12,
        used_at: r.13,
    }
}

impl InvoiceRow {
    /// The relay invoice's recipients and their shares.
    pub fn shares(&self) -> Vec<(i64, i64)> {
        self.recipients
            .split(',')
            .filter_map(|p| {
                let (u, a) = p.split_once(':')?;
                Some((u.parse().ok()?, a.parse().ok()?))
            })
            .collect()
    }
}

/// An invoice to record.
#[derive(Debug, Clone)]
pub struct NewInvoice {
    pub payment_hash: String,
    pub bolt11: String,
    pub amount_msat: i64,
    pub purpose: Purpose,
    pub user_id: Option<i64>,
    pub held_id: Option<i64>,
    pub message_id: Option<String>,
    pub shares: Vec<(i64, i64)>,
    pub expires_at: i64,
}

pub async fn insert_in(c: &mut AnyConnection, i: &NewInvoice) -> Result<i64> {
    let recipients = i
        .shares
        .iter()
        .map(|(u, a)| format!("{u}:{a}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok(sqlx::query_scalar(
        "INSERT INTO invoices (payment_hash, bolt11, amount_msat, purpose, user_id, held_id, \
         message_id, recipients, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(&i.payment_hash)
    .bind(&i.bolt11)
    .bind(i.amount_msat)
    .bind(i.purpose.as_str())
    .bind(i.user_id)
    .bind(i.held_id)
    .bind(&i.message_id)
    .bind(recipients)
    .bind(now())
    .bind(i.expires_at)
    .fetch_one(&mut *c)
    .await?)
}

pub async fn insert(store: &Store, i: NewInvoice) -> Result<i64> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move { insert_in(c, &i).await })
        }))
        .await
}

pub async fn by_hash(store: &Store, payment_hash: &str) -> Result<Option<InvoiceRow>> {
    let r: Option<Raw> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE payment_hash = $1"
    ))
    .bind(payment_hash)
    .fetch_optional(store.pool())
    .await?;
    Ok(r.map(row))
}

/// Invoices not paid yet (including ones just past their expiry, which a late
/// settlement may still pay) with ids below `below`, newest first.
pub async fn open(store: &Store, below: i64, limit: i64) -> Result<Vec<InvoiceRow>> {
    let r: Vec<Raw> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE state = 'open' AND id < $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(below)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    Ok(r.into_iter().map(row).collect())
}

/// The newest invoice of a held message.
pub async fn latest_for_held(store: &Store, held_id: i64) -> Result<Option<InvoiceRow>> {
    let r: Option<Raw> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE held_id = $1 ORDER BY id DESC LIMIT 1"
    ))
    .bind(held_id)
    .fetch_optional(store.pool())
    .await?;
    Ok(r.map(row))
}

/// The newest open relay invoice for an LNMP message, still payable at `at`.
pub async fn open_for_message(
    store: &Store,
    message_id: &str,
    at: i64,
) -> Result<Option<InvoiceRow>> {
    let r: Option<Raw> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM invoices WHERE message_id = $1 AND purpose = 'relay' \
         AND state = 'open' AND expires_at > $2 ORDER BY id DESC LIMIT 1"
    ))
    .bind(message_id)
    .bind(at)
    .fetch_optional(store.pool())
    .await?;
    Ok(r.map(row))
}

/// Marks an invoice paid; false if it was settled already (another node, an earlier
/// poll), so what settling does happens once.
pub async fn settle_in(c: &mut AnyConnection, id: i64, preimage: &str) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE invoices SET state = 'settled', preimage = $1, settled_at = $2 \
         WHERE id = $3 AND state <> 'settled'",
    )
    .bind(preimage)
    .bind(now())
    .bind(id)
    .execute(&mut *c)
    .await?
    .rows_affected()
        == 1)
}

/// Marks an open invoice expired (unpaid, not to be paid).
pub async fn expire_in(c: &mut AnyConnection, id: i64) -> Result<()> {
    sqlx::query("UPDATE invoices SET state = 'expired' WHERE id = $1 AND state = 'open'")
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub async fn expire(store: &Store, id: i64) -> Result<()> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move { expire_in(c, id).await })
        }))
        .await
}

/// Redeems a relay invoice's proof for `message_id`: true once, for the first
/// caller; the preimage is bearer data and is never accepted again.
pub async fn redeem_in(
    c: &mut AnyConnection,
    payment_hash: &str,
    message_id: &str,
    preimage: &str,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE invoices SET used_at = $1, state = 'settled', preimage = $2, \
         settled_at = COALESCE(settled_at, $1) \
         WHERE payment_hash = $3 AND message_id = $4 AND purpose = 'relay' AND used_at IS NULL",
    )
    .bind(now())
    .bind(preimage)
    .bind(payment_hash)
    .bind(message_id)
    .execute(&mut *c)
    .await?
    .rows_affected()
        == 1)
}

/// A relay invoice's proof to redeem in the commit that stores its message, with the
/// credit it brings.
#[derive(Debug, Clone)]
pub struct Redemption {
    pub payment_hash: String,
    pub message_id: String,
    pub preimage: String,
    pub posting: super::ledger::Posting,
}

/// Redeems inside the message's commit: false (and nothing credited) when the proof
/// was redeemed meanwhile.
pub async fn redeem_with_credit_in(c: &mut AnyConnection, r: &Redemption) -> Result<bool> {
    if !redeem_in(c, &r.payment_hash, &r.message_id, &r.preimage).await? {
        return Ok(false);
    }
    super::ledger::post_in(c, &r.posting)
        .await
        .map_err(|e| match e {
            super::ledger::LedgerError::Store(e) => e,
            other => super::StoreError::Conflict(other.to_string()),
        })?;
    Ok(true)
}

/// Deletes settled and expired invoices older than `before`, except relay invoices
/// whose proof was redeemed (kept so a preimage is never accepted twice).
pub async fn prune(store: &Store, before: i64) -> Result<u64> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                Ok(sqlx::query(
                    "DELETE FROM invoices WHERE state <> 'open' AND created_at < $1 \
                     AND used_at IS NULL",
                )
                .bind(before)
                .execute(&mut *c)
                .await?
                .rows_affected())
            })
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{add_user, each_backend};

    #[tokio::test]
    async fn settle_and_redeem_once() {
        each_backend(|store| async move {
            let u = add_user(&store, "alice").await.id;
            let id = insert(
                &store,
                NewInvoice {
                    payment_hash: "aa".into(),
                    bolt11: "lnbcrt1".into(),
                    amount_msat: 100_000,
                    purpose: Purpose::Relay,
                    user_id: None,
                    held_id: None,
                    message_id: Some("m1".into()),
                    shares: vec![(u, 100_000)],
                    expires_at: now() + 60,
                },
            )
            .await
            .unwrap();
            let open_now = open_for_message(&store, "m1", now())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(open_now.shares(), [(u, 100_000)]);
            assert!(
                open_for_message(&store, "m1", now() + 61)
                    .await
                    .unwrap()
                    .is_none()
            );
            let redeem = |hash: &'static str, msg: &'static str| {
                let store = store.clone();
                async move {
                    store
                        .write(Box::new(move |c| {
                            Box::pin(async move { redeem_in(c, hash, msg, "pre").await })
                        }))
                        .await
                        .unwrap()
                }
            };
            assert!(!redeem("aa", "other").await, "bound to its message");
            assert!(redeem("aa", "m1").await);
            assert!(!redeem("aa", "m1").await, "a preimage is accepted once");
            let settled = store
                .write(Box::new(move |c| {
                    Box::pin(async move { settle_in(c, id, "pre").await })
                }))
                .await
                .unwrap();
            assert!(!settled, "redeeming settled it");
            assert_eq!(prune(&store, now() + 10).await.unwrap(), 0);
        })
        .await;
    }
}
