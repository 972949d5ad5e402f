//! LNMP messages waiting to become email: copies of what reached a user's INBOX for
//! their forward address, and messages to an email sender's derived key. A job is
//! committed with the message it is about, so nothing filed is missed by a crash, and
//! it is done in the transaction that queues its email, so nothing is sent twice.

use super::{Result, Store};
use sqlx::AnyConnection;

/// What a job turns into email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// The user's copy of an INBOX message, for their forward address.
    Forward { user_id: i64 },
    /// A message to the derived key of an email sender.
    Legacy { key: String },
}

/// Queues a job for a message a user's INBOX just got, if the user forwards.
pub(crate) async fn forward_in(
    c: &mut AnyConnection,
    user_id: i64,
    message_id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO bridge_out (kind, user_id, target, message_id, created_at, next_attempt_at) \
         SELECT 'forward', id, CAST(id AS TEXT), $1, $2, $2 FROM users \
         WHERE id = $3 AND forward_to IS NOT NULL ON CONFLICT DO NOTHING",
    )
    .bind(message_id)
    .bind(now)
    .bind(user_id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Queues a message to an email sender's derived key.
pub(crate) async fn legacy_in(
    c: &mut AnyConnection,
    key: &str,
    message_id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO bridge_out (kind, target, message_id, created_at, next_attempt_at) \
         VALUES ('legacy', $1, $2, $3, $3) ON CONFLICT DO NOTHING",
    )
    .bind(key)
    .bind(message_id)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// A job claimed for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub message_id: String,
    pub attempts: i64,
    /// The lease this claim holds; finishing checks it is still ours.
    pub claim: i64,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    kind: String,
    user_id: Option<i64>,
    target: String,
    message_id: String,
    attempts: i64,
    locked_until: i64,
}

/// Claims up to `max` due jobs for `lease` seconds.
pub async fn claim_due(store: &Store, now: i64, lease: i64, max: i64) -> Result<Vec<Job>> {
    let rows: Vec<JobRow> = super::claim_due(
        store,
        "bridge_out",
        "queued",
        "id, kind, user_id, target, message_id, attempts, locked_until",
        now,
        lease,
        max,
    )
    .await?;
    let mut jobs: Vec<Job> = rows
        .into_iter()
        .map(|r| Job {
            id: r.id,
            kind: match (r.kind.as_str(), r.user_id) {
                ("forward", Some(user_id)) => JobKind::Forward { user_id },
                _ => JobKind::Legacy { key: r.target },
            },
            message_id: r.message_id,
            attempts: r.attempts,
            claim: r.locked_until,
        })
        .collect();
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

/// How a job ended, recorded inside the transaction that did its work. Fails when
/// the claim ran out and another worker took the job, so that transaction (and the
/// email it queued) is rolled back rather than sent twice.
pub(crate) async fn finish_in(
    c: &mut AnyConnection,
    job: &Job,
    state: &str,
    detail: &str,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE bridge_out SET state = $1, detail = $2, locked_until = 0 \
         WHERE id = $3 AND state = 'queued' AND locked_until = $4",
    )
    .bind(state)
    .bind(detail)
    .bind(job.id)
    .bind(job.claim)
    .execute(&mut *c)
    .await?;
    if done.rows_affected() != 1 {
        return Err(super::StoreError::NotFound(format!(
            "bridge job {} under this claim",
            job.id
        )));
    }
    Ok(())
}

/// Ends a job without other work: `skipped` (by the loop rules) or `failed`.
pub async fn finish(store: &Store, job: &Job, state: &'static str, detail: String) -> Result<()> {
    let job = job.clone();
    store
        .write(Box::new(move |c| {
            Box::pin(async move { finish_in(c, &job, state, &detail).await })
        }))
        .await
}

/// Puts a job back for later (if the claim is still ours).
pub async fn retry(store: &Store, job: &Job, at: i64, detail: String) -> Result<()> {
    let (id, claim) = (job.id, job.claim);
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE bridge_out SET next_attempt_at = $1, detail = $2, locked_until = 0 \
                     WHERE id = $3 AND locked_until = $4",
                )
                .bind(at)
                .bind(detail)
                .bind(id)
                .bind(claim)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
}

/// A job's state and detail, for tests and the CLI.
pub async fn state_of(
    store: &Store,
    message_id: &str,
) -> Result<Vec<(String, String, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT kind, state, detail FROM bridge_out WHERE message_id = $1 ORDER BY id",
    )
    .bind(message_id)
    .fetch_all(store.pool())
    .await?)
}

/// When the next job is due, if any.
pub async fn next_due(store: &Store) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar(
            "SELECT MIN(CASE WHEN locked_until > next_attempt_at THEN locked_until ELSE next_attempt_at END) \
             FROM bridge_out WHERE state = 'queued'",
        )
            .fetch_one(store.pool())
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{add_user, each_backend};

    #[tokio::test]
    async fn forwards_only_for_users_who_forward_and_once() {
        each_backend(|store| async move {
            let alice = add_user(&store, "alice").await;
            let bob = add_user(&store, "bob").await;
            crate::store::users::set_forward(&store, "alice", Some("a@x.test".into()))
                .await
                .unwrap();
            let (a, b) = (alice.id, bob.id);
            store
                .write(Box::new(move |c| {
                    Box::pin(async move {
                        for _ in 0..2 {
                            forward_in(c, a, "m1", 5).await?;
                            forward_in(c, b, "m1", 5).await?;
                            legacy_in(c, "k1", "m2", 5).await?;
                        }
                        Ok(())
                    })
                }))
                .await
                .unwrap();
            let jobs = claim_due(&store, 5, 60, 10).await.unwrap();
            assert_eq!(jobs.len(), 2);
            assert_eq!(jobs[0].kind, JobKind::Forward { user_id: a });
            assert_eq!(jobs[1].kind, JobKind::Legacy { key: "k1".into() });
            assert!(claim_due(&store, 6, 60, 10).await.unwrap().is_empty());
            retry(&store, &jobs[0], 100, "later".into()).await.unwrap();
            finish(&store, &jobs[1], "done", "sent".into())
                .await
                .unwrap();
            assert!(
                finish(&store, &jobs[1], "done", "twice".into())
                    .await
                    .is_err(),
                "a job is finished once"
            );
            assert_eq!(next_due(&store).await.unwrap(), Some(100));
            let again = claim_due(&store, 100, 60, 10).await.unwrap();
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].attempts, 2);
            assert_eq!(
                state_of(&store, "m2").await.unwrap(),
                vec![("legacy".into(), "done".into(), Some("sent".into()))]
            );
        })
        .await;
    }
}
