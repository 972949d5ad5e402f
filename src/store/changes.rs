//! Word that a user's mail changed (a delivery, a flag change, an expunge), so IMAP
//! sessions idling on it look again. The word carries no data: a session learns what
//! changed from the mail rows' MODSEQs, so a lost or repeated word costs at most a
//! look. Within a process it is a broadcast channel; on PostgreSQL it also goes
//! through NOTIFY, so sessions of every daemon on the database hear it.

use super::Backend;
use std::sync::OnceLock;
use tokio::sync::{broadcast, watch};

/// The PostgreSQL channel every daemon listens on.
const CHANNEL: &str = "lnmp_mail";

/// A user id, or [`EVERYONE`] after the cross-node listener lost its connection and
/// may have missed words.
pub type UserId = i64;
pub const EVERYONE: UserId = -1;

pub(super) struct Changes {
    local: broadcast::Sender<UserId>,
    /// Tells this process's own NOTIFYs apart from other nodes'.
    node: u64,
    url: String,
    backend: Backend,
    listening: OnceLock<()>,
    /// Counts queued outbound work, so each worker wakes without losing a word.
    work: watch::Sender<u64>,
}

impl Changes {
    pub(super) fn new(url: &str, backend: Backend) -> Changes {
        let (local, _) = broadcast::channel(4096);
        Changes {
            local,
            node: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
            url: url.to_owned(),
            backend,
            listening: OnceLock::new(),
            work: watch::Sender::new(0),
        }
    }
}

impl super::Store {
    /// Says that `user_id`'s mail changed. Call it after the change committed.
    pub async fn mail_changed(&self, user_id: UserId) {
        let c = &self.inner.changes;
        let _ = c.local.send(user_id);
        if c.backend == Backend::Postgres {
            let payload = format!("{}:{user_id}", c.node);
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(self.pool())
                .await
            {
                tracing::warn!(error = %e, "cannot tell other nodes about a mail change");
            }
        }
    }

    /// Says that work for the outbound workers was committed (mail to send, a message
    /// to turn into email). This process only: other nodes find it when they poll.
    pub fn work_queued(&self) {
        self.inner
            .changes
            .work
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes on every [`Store::work_queued`] after it is made.
    pub fn work_watch(&self) -> watch::Receiver<u64> {
        self.inner.changes.work.subscribe()
    }

    /// Hears every [`Store::mail_changed`], this node's and (on PostgreSQL) the others'.
    pub fn mail_changes(&self) -> broadcast::Receiver<UserId> {
        let c = &self.inner.changes;
        if c.backend == Backend::Postgres && c.listening.set(()).is_ok() {
            tokio::spawn(listen(
                c.url.clone(),
                c.node,
                c.local.clone(),
                self.inner.closed.clone(),
            ));
        }
        c.local.subscribe()
    }
}

/// Relays other nodes' NOTIFYs into this process until the store closes, reconnecting
/// with a pause when the connection drops.
async fn listen(
    url: String,
    node: u64,
    local: broadcast::Sender<UserId>,
    closed: tokio_util::sync::CancellationToken,
) {
    use sqlx::postgres::PgListener;
    let own = format!("{node}:");
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other nodes' mail changes");
                tokio::select! {
                    _ = closed.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed");
            tokio::select! {
                _ = closed.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => continue,
            }
        }
        // Words may have been missed while the connection was down.
        let _ = local.send(EVERYONE);
        loop {
            let n = tokio::select! {
                _ = closed.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match n {
                Ok(Some(n)) => {
                    let payload = n.payload();
                    if payload.starts_with(&own) {
                        continue;
                    }
                    if let Some(user) = payload
                        .split_once(':')
                        .and_then(|(_, u)| u.parse::<UserId>().ok())
                    {
                        let _ = local.send(user);
                    }
                }
                // The connection dropped; sqlx reconnects on the next call, and the
                // words in between are lost.
                Ok(None) => {
                    let _ = local.send(EVERYONE);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the LISTEN connection");
                    break;
                }
            }
        }
    }
}
