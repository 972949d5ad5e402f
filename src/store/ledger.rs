//! The ledger: users' balances kept by double entry. Every transaction is a set of
//! entries that sum to zero, posted once under a key (so settling the same payment
//! twice credits once), and a user's balance never goes below zero. Amounts are
//! millisatoshis.

use super::{Result, Store, StoreError, now};
use sqlx::AnyConnection;
use std::fmt;

/// Who holds money in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// A user's balance: what they earned from paid mail and deposited, minus what
    /// they paid.
    User(i64),
    /// The operator's share of what senders paid.
    Fees,
    /// The Lightning network outside: money that came in or went out.
    Lightning,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::User(id) => write!(f, "user:{id}"),
            Account::Fees => f.write_str("fees"),
            Account::Lightning => f.write_str("lightning"),
        }
    }
}

/// What a transaction was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A sender paid for mail to a user (email or LNMP).
    MailIncome,
    /// A user paid another relay's invoice for a message they sent.
    MailPayment,
    /// A user topped up their balance (deposit invoice, Lightning Address).
    Deposit,
    /// A user took money out (paid an invoice of theirs).
    Withdrawal,
    /// A payment that failed, given back.
    Refund,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MailIncome => "mail-income",
            Kind::MailPayment => "mail-payment",
            Kind::Deposit => "deposit",
            Kind::Withdrawal => "withdrawal",
            Kind::Refund => "refund",
        }
    }
}

/// A transaction to post: its entries must sum to zero.
#[derive(Debug, Clone)]
pub struct Posting {
    /// Unique per real-world event, e.g. `settle:<payment hash>`.
    pub key: String,
    pub kind: Kind,
    pub memo: String,
    pub entries: Vec<(Account, i64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("insufficient balance: {needed} msat needed, {available} msat available")]
    Insufficient { needed: i64, available: i64 },
    #[error("unbalanced transaction {0}")]
    Unbalanced(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> LedgerError {
        LedgerError::Store(e.into())
    }
}

/// Posts a transaction inside the caller's transaction. Returns false (and changes
/// nothing) when a transaction with this key was posted before. On
/// [`LedgerError::Insufficient`] some entries may be written: the caller must roll
/// back (return an error from its write), as [`post`] does.
pub async fn post_in(c: &mut AnyConnection, p: &Posting) -> std::result::Result<bool, LedgerError> {
    if p.entries.iter().map(|(_, a)| *a).sum::<i64>() != 0 {
        return Err(LedgerError::Unbalanced(p.key.clone()));
    }
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO ledger_transactions (key, kind, memo, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (key) DO NOTHING RETURNING id",
    )
    .bind(&p.key)
    .bind(p.kind.as_str())
    .bind(&p.memo)
    .bind(now())
    .fetch_optional(&mut *c)
    .await?;
    let Some(id) = id else {
        return Ok(false);
    };
    // Balance rows are locked in one order (by name) in every transaction, so two
    // postings never wait on each other in a cycle.
    let mut entries: Vec<(String, i64, bool)> = p
        .entries
        .iter()
        .map(|(a, amount)| (a.to_string(), *amount, matches!(a, Account::User(_))))
        .collect();
    entries.sort();
    for (name, amount, is_user) in &entries {
        let amount = *amount;
        sqlx::query(
            "INSERT INTO ledger_entries (transaction_id, account, amount_msat) VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(name)
        .bind(amount)
        .execute(&mut *c)
        .await?;
        if amount < 0 && *is_user {
            // Checked and moved in one statement, so two debits cannot both pass; a
            // user without a balance row has nothing to spend.
            let moved = sqlx::query(
                "UPDATE balances SET msat = msat + $1 WHERE account = $2 AND msat + $1 >= 0",
            )
            .bind(amount)
            .bind(name)
            .execute(&mut *c)
            .await?;
            if moved.rows_affected() == 0 {
                return Err(LedgerError::Insufficient {
                    needed: -amount,
                    available: balance_in(c, name).await?,
                });
            }
        } else {
            sqlx::query(
                "INSERT INTO balances (account, msat) VALUES ($1, $2) \
                 ON CONFLICT (account) DO UPDATE SET msat = balances.msat + excluded.msat",
            )
            .bind(name)
            .bind(amount)
            .execute(&mut *c)
            .await?;
        }
    }
    Ok(true)
}

/// Posts a transaction in a transaction of its own; nothing of it stays when it fails.
pub async fn post(store: &Store, p: Posting) -> std::result::Result<bool, LedgerError> {
    let refused = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = refused.clone();
    let done = store
        .write(Box::new(move |c| {
            Box::pin(async move {
                match post_in(c, &p).await {
                    Ok(done) => Ok(done),
                    Err(LedgerError::Store(e)) => Err(e),
                    Err(e) => {
                        // Roll back what was written, and say why outside.
                        let text = e.to_string();
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        Err(StoreError::Conflict(text))
                    }
                }
            })
        }))
        .await;
    if let Some(e) = refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    Ok(done?)
}

async fn balance_in(c: &mut AnyConnection, account: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT msat FROM balances WHERE account = $1")
            .bind(account)
            .fetch_optional(&mut *c)
            .await?
            .unwrap_or(0),
    )
}

/// An account's balance in millisatoshis.
pub async fn balance(store: &Store, account: Account) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT msat FROM balances WHERE account = $1")
            .bind(account.to_string())
            .fetch_optional(store.pool())
            .await?
            .unwrap_or(0),
    )
}

/// How many transactions have keys starting with `prefix` (which holds no `%` or `_`).
pub async fn count_keys(store: &Store, prefix: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM ledger_transactions WHERE key LIKE $1")
            .bind(format!("{prefix}%"))
            .fetch_one(store.pool())
            .await?,
    )
}

/// One line of an account's history.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Entry {
    pub created_at: i64,
    pub kind: String,
    pub memo: String,
    pub amount_msat: i64,
}

/// The account's entries, newest first, at most `limit`.
pub async fn history(store: &Store, account: Account, limit: i64) -> Result<Vec<Entry>> {
    Ok(sqlx::query_as(
        "SELECT t.created_at, t.kind, t.memo, e.amount_msat FROM ledger_entries e \
         JOIN ledger_transactions t ON t.id = e.transaction_id \
         WHERE e.account = $1 ORDER BY e.id DESC LIMIT $2",
    )
    .bind(account.to_string())
    .bind(limit)
    .fetch_all(store.pool())
    .await?)
}

/// The sum of every account: zero unless the ledger is broken.
pub async fn total(store: &Store) -> Result<i64> {
    let t: Option<i64> = sqlx::query_scalar("SELECT CAST(SUM(msat) AS BIGINT) FROM balances")
        .fetch_one(store.pool())
        .await?;
    Ok(t.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{add_user, each_backend};

    fn income(key: &str, user: i64, msat: i64, fee: i64) -> Posting {
        Posting {
            key: key.into(),
            kind: Kind::MailIncome,
            memo: "paid mail".into(),
            entries: vec![
                (Account::Lightning, -msat),
                (Account::User(user), msat - fee),
                (Account::Fees, fee),
            ],
        }
    }

    #[tokio::test]
    async fn credits_once_and_never_goes_negative() {
        each_backend(|store| async move {
            let u = add_user(&store, "alice").await.id;
            assert!(
                post(&store, income("settle:a", u, 100_000, 10_000))
                    .await
                    .unwrap()
            );
            assert!(
                !post(&store, income("settle:a", u, 100_000, 10_000))
                    .await
                    .unwrap()
            );
            assert_eq!(balance(&store, Account::User(u)).await.unwrap(), 90_000);
            assert_eq!(balance(&store, Account::Fees).await.unwrap(), 10_000);
            let spend = |key: &str, msat: i64| Posting {
                key: key.into(),
                kind: Kind::MailPayment,
                memo: String::new(),
                entries: vec![(Account::User(u), -msat), (Account::Lightning, msat)],
            };
            match post(&store, spend("pay:1", 90_001)).await {
                Err(LedgerError::Insufficient { needed, available }) => {
                    assert_eq!((needed, available), (90_001, 90_000))
                }
                other => panic!("overdraft allowed: {other:?}"),
            }
            assert_eq!(balance(&store, Account::User(u)).await.unwrap(), 90_000);
            assert!(post(&store, spend("pay:2", 90_000)).await.unwrap());
            assert_eq!(balance(&store, Account::User(u)).await.unwrap(), 0);
            // A user with no balance row at all cannot spend either.
            let bob = add_user(&store, "bob").await.id;
            let first_debit = Posting {
                key: "pay:3".into(),
                kind: Kind::MailPayment,
                memo: String::new(),
                entries: vec![(Account::User(bob), -1), (Account::Lightning, 1)],
            };
            assert!(matches!(
                post(&store, first_debit).await,
                Err(LedgerError::Insufficient { .. })
            ));
            let unbalanced = Posting {
                key: "x".into(),
                kind: Kind::Deposit,
                memo: String::new(),
                entries: vec![(Account::User(u), 5)],
            };
            assert!(matches!(
                post(&store, unbalanced).await,
                Err(LedgerError::Unbalanced(_))
            ));
            assert_eq!(total(&store).await.unwrap(), 0);
            let h = history(&store, Account::User(u), 10).await.unwrap();
            assert_eq!(
                h.iter().map(|e| e.amount_msat).collect::<Vec<_>>(),
                [-90_000, 90_000]
            );
        })
        .await;
    }
}
