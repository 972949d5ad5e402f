//! The relay's message store: every accepted message with its recipients, kept until it
//! expires (its own `expiry`, or the relay's retention), queried by filter for the keys
//! allowed to read it.

use super::{Result, Store, StoreError, inbox};
use crate::lnmp::{Filter, Limits, Message, PublicKey};
use sqlx::{AnyConnection, Row};

/// What inserting a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    Duplicate,
    /// Its payment proof was redeemed for it already (a race of two publishes).
    ProofUsed,
}

/// A message to commit, with the local users (by id) whose inbox it also goes to.
pub struct Incoming {
    pub message: Message,
    pub json: String,
    pub received_at: i64,
    pub expires_at: i64,
    pub local_recipients: Vec<i64>,
    /// Recipients that are email senders' derived keys: the message leaves as email.
    pub legacy_recipients: Vec<String>,
    /// Whether the local copies are filed in the users' INBOX here (false when the
    /// caller files them itself, in mailboxes of its choosing).
    pub file_in_inbox: bool,
    /// The payment proof that lets it in, redeemed in the same commit.
    pub redeem: Option<super::invoices::Redemption>,
}

/// Commits a message, its recipients and its local inbox copies in one transaction.
pub async fn insert(store: &Store, incoming: Incoming) -> Result<Stored> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move { insert_in(c, &incoming).await })
        }))
        .await
}

pub(crate) async fn insert_in(c: &mut AnyConnection, i: &Incoming) -> Result<Stored> {
    let m = &i.message;
    let id = m.id.to_hex();
    let exists: Option<i64> = sqlx::query_scalar("SELECT seq FROM relay_messages WHERE id = $1")
        .bind(&id)
        .fetch_optional(&mut *c)
        .await?;
    if exists.is_some() {
        return Ok(Stored::Duplicate);
    }
    if let Some(r) = &i.redeem
        && !super::invoices::redeem_with_credit_in(c, r).await?
    {
        return Ok(Stored::ProofUsed);
    }
    let created = i64::try_from(m.timestamp).unwrap_or(i64::MAX);
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO relay_messages (id, sender, kind, created_at, received_at, expires_at, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
    )
    .bind(&id)
    .bind(m.from.to_hex())
    .bind(i64::from(m.kind.code()))
    .bind(created)
    .bind(i.received_at)
    .bind(i.expires_at)
    .bind(&i.json)
    .fetch_one(&mut *c)
    .await
    .map_err(|e| StoreError::from(e).conflict_as(format!("message {id}")))?;
    for to in &m.to {
        sqlx::query("INSERT INTO relay_recipients (pubkey, created_at, seq) VALUES ($1, $2, $3)")
            .bind(to.to_hex())
            .bind(created)
            .bind(seq)
            .execute(&mut *c)
            .await?;
    }
    for user in &i.local_recipients {
        inbox::insert_in(c, *user, m, &i.json, i.received_at, i.file_in_inbox).await?;
    }
    for key in &i.legacy_recipients {
        super::bridge_out::legacy_in(c, key, &id, i.received_at).await?;
    }
    Ok(Stored::New)
}

/// A stored message's JSON.
pub async fn body(store: &Store, id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT body FROM relay_messages WHERE id = $1")
            .bind(id)
            .fetch_optional(store.pool())
            .await?,
    )
}

/// Stored messages that `reader` may see (as sender or recipient) matching any of
/// `filters`: per filter the newest `limit` (capped at `cap`), all sent oldest first.
pub async fn query(
    store: &Store,
    reader: &PublicKey,
    filters: &[Filter],
    cap: u32,
    limits: &Limits,
    now: i64,
) -> Result<Vec<(Message, String)>> {
    let me = reader.to_hex();
    let mut out: Vec<(Message, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for f in filters {
        let want = f.limit.unwrap_or(cap).min(cap) as usize;
        if want == 0 {
            continue;
        }
        let since = f.since.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX));
        let until = f
            .until
            .map_or(i64::MAX, |u| i64::try_from(u).unwrap_or(i64::MAX));
        // The reader's messages in the time window, newest first; the rest of the filter
        // is applied as rows stream in, until `want` match.
        let mut rows = sqlx::query(
            "SELECT m.body FROM relay_messages m WHERE m.expires_at > $1 \
             AND m.created_at >= $2 AND m.created_at <= $3 \
             AND (m.sender = $4 OR m.seq IN (SELECT r.seq FROM relay_recipients r WHERE r.pubkey = $4 \
                  AND r.created_at >= $2 AND r.created_at <= $3)) \
             ORDER BY m.created_at DESC, m.seq DESC",
        )
        .bind(now)
        .bind(since)
        .bind(until)
        .bind(&me)
        .fetch(store.pool());
        let mut matched = Vec::new();
        use futures_util::TryStreamExt;
        while let Some(row) = rows.try_next().await? {
            let body: String = row.try_get("body")?;
            let m = match Message::from_json(body.as_bytes(), limits) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an unreadable stored message");
                    continue;
                }
            };
            if f.matches(&m) {
                matched.push((m, body));
                if matched.len() >= want {
                    break;
                }
            }
        }
        for (m, body) in matched {
            if seen.insert(m.id) {
                out.push((m, body));
            }
        }
    }
    out.sort_by_key(|(m, _)| (m.timestamp, m.id));
    Ok(out)
}

/// Whether a message with this id is stored.
pub async fn contains(store: &Store, id: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM relay_messages WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await?;
    Ok(n > 0)
}

/// Deletes expired messages; returns how many.
pub async fn prune(store: &Store, now: i64) -> Result<u64> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                Ok(
                    sqlx::query("DELETE FROM relay_messages WHERE expires_at <= $1")
                        .bind(now)
                        .execute(&mut *c)
                        .await?
                        .rows_affected(),
                )
            })
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lnmp::{Draft, Identity, Kind, MessageContent, Priority};
    use crate::store::testing::each_backend;

    fn msg(from: &Identity, to: &[&Identity], ts: u64, kind: Kind) -> Message {
        let d = Draft {
            to: to.iter().map(|i| i.public_key()).collect(),
            kind,
            timestamp: ts,
            content: MessageContent::default(),
            relays: vec![],
            expiry: None,
            priority: Priority::Normal,
        };
        Message::seal(from, &d, &mut rand_core::OsRng).unwrap()
    }

    fn incoming(m: &Message, expires_at: i64) -> Incoming {
        Incoming {
            message: m.clone(),
            json: m.to_json(),
            received_at: 1,
            expires_at,
            local_recipients: vec![],
            legacy_recipients: vec![],
            file_in_inbox: true,
            redeem: None,
        }
    }

    #[tokio::test]
    async fn store_query_and_prune() {
        each_backend(|store| async move {
            let (a, b, c) = (
                Identity::from_secret_bytes(&[1; 32]).unwrap(),
                Identity::from_secret_bytes(&[2; 32]).unwrap(),
                Identity::from_secret_bytes(&[3; 32]).unwrap(),
            );
            let m1 = msg(&a, &[&b], 100, Kind::Text);
            let m2 = msg(&a, &[&b, &c], 200, Kind::File);
            let m3 = msg(&c, &[&a], 300, Kind::Text);
            let old = msg(&b, &[&c], 50, Kind::Text);
            for m in [&m1, &m2, &m3] {
                assert_eq!(
                    insert(&store, incoming(m, 10_000)).await.unwrap(),
                    Stored::New
                );
            }
            assert_eq!(
                insert(&store, incoming(&old, 5)).await.unwrap(),
                Stored::New
            );
            assert_eq!(
                insert(&store, incoming(&m1, 10_000)).await.unwrap(),
                Stored::Duplicate
            );
            assert!(contains(&store, &m1.id.to_hex()).await.unwrap());

            let l = Limits::default();
            let ids =
                |v: Vec<(Message, String)>| v.into_iter().map(|(m, _)| m.id).collect::<Vec<_>>();
            let all = Filter::default();
            // b sees what is to b (m1, m2), oldest first; c sees m2, m3 and not the expired one.
            assert_eq!(
                ids(query(
                    &store,
                    &b.public_key(),
                    std::slice::from_ref(&all),
                    100,
                    &l,
                    10
                )
                .await
                .unwrap()),
                [m1.id, m2.id]
            );
            assert_eq!(
                ids(query(
                    &store,
                    &c.public_key(),
                    std::slice::from_ref(&all),
                    100,
                    &l,
                    10
                )
                .await
                .unwrap()),
                [m2.id, m3.id]
            );
            // a is the sender of m1 and m2 and the recipient of m3.
            assert_eq!(
                query(
                    &store,
                    &a.public_key(),
                    std::slice::from_ref(&all),
                    100,
                    &l,
                    10
                )
                .await
                .unwrap()
                .len(),
                3
            );
            let files = Filter {
                kinds: Some(vec![Kind::File]),
                ..Filter::default()
            };
            assert_eq!(
                ids(query(&store, &b.public_key(), &[files], 100, &l, 10)
                    .await
                    .unwrap()),
                [m2.id]
            );
            let newest = Filter {
                limit: Some(1),
                ..Filter::default()
            };
            assert_eq!(
                ids(query(&store, &a.public_key(), &[newest], 100, &l, 10)
                    .await
                    .unwrap()),
                [m3.id]
            );
            let window = Filter {
                since: Some(150),
                until: Some(250),
                ..Filter::default()
            };
            assert_eq!(
                ids(query(&store, &a.public_key(), &[window], 100, &l, 10)
                    .await
                    .unwrap()),
                [m2.id]
            );
            assert_eq!(
                query(
                    &store,
                    &a.public_key(),
                    std::slice::from_ref(&all),
                    2,
                    &l,
                    10
                )
                .await
                .unwrap()
                .len(),
                2,
                "capped"
            );
            let none = Filter {
                ids: Some(vec![]),
                ..Filter::default()
            };
            assert!(
                query(&store, &a.public_key(), &[none], 100, &l, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );

            assert_eq!(prune(&store, 10).await.unwrap(), 1);
            assert!(!contains(&store, &old.id.to_hex()).await.unwrap());
        })
        .await;
    }
}
