//! Reply addresses: `reply+<token>@domain` stands for one conversation partner of one
//! side, so an email answer to it can be carried back over LNMP. The token is derived
//! from the master key (see `Custody::reply_token`), so the same pair always gets the
//! same address; the row says where the answer goes.

use super::{Result, Store};
use sqlx::AnyConnection;

/// Who may answer through a reply address, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replier {
    /// A user, from their forward address, answering as themselves.
    User(i64),
    /// An email sender answering an LNMP sender who wrote to them.
    Legacy(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyRoute {
    pub token: String,
    pub replier: Replier,
    /// The key the answer is sealed to.
    pub peer_key: String,
    /// Their LNMP or email address when known, else empty.
    pub peer_address: String,
    /// Relays the peer named in the message being answered.
    pub peer_relays: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    token: String,
    kind: String,
    user_id: Option<i64>,
    legacy_address: Option<String>,
    peer_key: String,
    peer_address: String,
    peer_relays: String,
}

/// Records a route (or refreshes the peer's relays) inside the caller's transaction.
pub(crate) async fn remember_in(c: &mut AnyConnection, r: &ReplyRoute, now: i64) -> Result<()> {
    let (kind, user_id, legacy) = match &r.replier {
        Replier::User(id) => ("forward", Some(*id), None),
        Replier::Legacy(a) => ("legacy", None, Some(a.as_str())),
    };
    sqlx::query(
        "INSERT INTO reply_routes (token, kind, user_id, legacy_address, peer_key, peer_address, peer_relays, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (token) DO UPDATE SET \
         peer_address = CASE WHEN excluded.peer_address = '' THEN reply_routes.peer_address ELSE excluded.peer_address END, \
         peer_relays = CASE WHEN excluded.peer_relays = '' THEN reply_routes.peer_relays ELSE excluded.peer_relays END",
    )
    .bind(&r.token)
    .bind(kind)
    .bind(user_id)
    .bind(legacy)
    .bind(&r.peer_key)
    .bind(&r.peer_address)
    .bind(r.peer_relays.join(" "))
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The route of a token, if there is one.
pub async fn get(store: &Store, token: &str) -> Result<Option<ReplyRoute>> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT token, kind, user_id, legacy_address, peer_key, peer_address, peer_relays \
         FROM reply_routes WHERE token = $1",
    )
    .bind(token)
    .fetch_optional(store.pool())
    .await?;
    Ok(row.and_then(|r| {
        let replier = match (r.kind.as_str(), r.user_id, r.legacy_address) {
            ("forward", Some(id), _) => Replier::User(id),
            ("legacy", _, Some(a)) => Replier::Legacy(a),
            _ => return None,
        };
        Some(ReplyRoute {
            token: r.token,
            replier,
            peer_key: r.peer_key,
            peer_address: r.peer_address,
            peer_relays: r
                .peer_relays
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{add_user, each_backend};

    #[tokio::test]
    async fn routes_are_kept_and_refreshed() {
        each_backend(|store| async move {
            let alice = add_user(&store, "alice").await;
            let mut r = ReplyRoute {
                token: "t1".into(),
                replier: Replier::User(alice.id),
                peer_key: "k".into(),
                peer_address: "bob@x.test".into(),
                peer_relays: vec!["wss://r1".into()],
            };
            let l = ReplyRoute {
                token: "t2".into(),
                replier: Replier::Legacy("bob@x.test".into()),
                peer_key: "k2".into(),
                peer_address: String::new(),
                peer_relays: vec![],
            };
            let (a, b) = (r.clone(), l.clone());
            store
                .write(Box::new(move |c| {
                    Box::pin(async move {
                        remember_in(c, &a, 1).await?;
                        remember_in(c, &b, 1).await
                    })
                }))
                .await
                .unwrap();
            assert_eq!(get(&store, "t1").await.unwrap().unwrap(), r);
            assert_eq!(get(&store, "t2").await.unwrap().unwrap(), l);
            assert_eq!(get(&store, "t3").await.unwrap(), None);
            // New relays replace the old; an unknown address keeps the known one.
            r.peer_relays = vec!["wss://r2".into()];
            let mut newer = r.clone();
            newer.peer_address = String::new();
            store
                .write(Box::new(move |c| {
                    Box::pin(async move { remember_in(c, &newer, 2).await })
                }))
                .await
                .unwrap();
            assert_eq!(get(&store, "t1").await.unwrap().unwrap(), r);
        })
        .await;
    }
}
