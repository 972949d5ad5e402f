//! The SQLite writer: one task owns the only write connection and commits queued writes
//! in groups, so many small writes share one fsync instead of taking turns for the lock.
//!
//! Each write runs inside its own SAVEPOINT, so a failing write is rolled back alone and
//! the rest of its group still commits. A caller hears back only after COMMIT.

use super::{Result, StoreError, WriteFn};
use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, Connection, Executor};
use tokio::sync::{mpsc, oneshot};

/// A queued write with its caller's reply channel, its result type erased.
trait Pending: Send {
    /// Runs the write; the returned completion delivers its outcome after the commit.
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, Completion>;
    /// Fails the write without running it.
    fn abort(self: Box<Self>, reason: String);
}

/// Delivers a write's outcome once its group's commit result is known.
type Finish = Box<dyn FnOnce(&Result<(), String>) + Send>;

struct Completion {
    failed: bool,
    finish: Finish,
}

struct Write<T> {
    f: WriteFn<T>,
    reply: oneshot::Sender<Result<T>>,
}

fn commit_failed(reason: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(format!("commit failed: {reason}")))
}

impl<T: Send + 'static> Pending for Write<T> {
    fn run<'c>(self: Box<Self>, conn: &'c mut AnyConnection) -> BoxFuture<'c, Completion> {
        Box::pin(async move {
            let outcome = (self.f)(conn).await;
            let reply = self.reply;
            Completion {
                failed: outcome.is_err(),
                finish: Box::new(move |commit| {
                    let result = match (outcome, commit) {
                        (Err(e), _) => Err(e),
                        (Ok(v), Ok(())) => Ok(v),
                        (Ok(_), Err(reason)) => Err(commit_failed(reason)),
                    };
                    // The caller may have gone away; the write is committed regardless.
                    let _ = reply.send(result);
                }),
            }
        })
    }

    fn abort(self: Box<Self>, reason: String) {
        let _ = self.reply.send(Err(commit_failed(&reason)));
    }
}

enum Msg {
    Write(Box<dyn Pending>),
    Shutdown(oneshot::Sender<()>),
}

pub(super) struct Writer {
    queue: mpsc::Sender<Msg>,
}

impl Writer {
    pub(super) fn start(conn: AnyConnection, group_max: usize) -> Writer {
        let group_max = group_max.max(1);
        let (queue, rx) = mpsc::channel(group_max * 4);
        tokio::spawn(run(conn, rx, group_max));
        Writer { queue }
    }

    pub(super) async fn submit<T: Send + 'static>(&self, f: WriteFn<T>) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Msg::Write(Box::new(Write { f, reply })))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Commits every write queued so far, then closes the connection; later writes fail
    /// with [`StoreError::WriterGone`].
    pub(super) async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.queue.send(Msg::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

async fn run(mut conn: AnyConnection, mut rx: mpsc::Receiver<Msg>, group_max: usize) {
    let mut stop = None;
    while stop.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut group = Vec::new();
        match first {
            Msg::Write(w) => group.push(w),
            Msg::Shutdown(s) => stop = Some(s),
        }
        while stop.is_none() && group.len() < group_max {
            match rx.try_recv() {
                Ok(Msg::Write(w)) => group.push(w),
                Ok(Msg::Shutdown(s)) => stop = Some(s),
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            commit_group(&mut conn, group).await;
        }
    }
    rx.close();
    let _ = conn.close().await;
    if let Some(s) = stop {
        let _ = s.send(());
    }
}

/// Runs a group in one transaction and reports to every caller after COMMIT.
async fn commit_group(conn: &mut AnyConnection, group: Vec<Box<dyn Pending>>) {
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
        for w in group {
            w.abort(e.to_string());
        }
        return;
    }
    let mut completions = Vec::with_capacity(group.len());
    let mut failure = None;
    let mut rest = group.into_iter();
    for w in rest.by_ref() {
        if let Err(e) = conn.execute("SAVEPOINT w").await {
            failure = Some(e.to_string());
            w.abort(e.to_string());
            break;
        }
        // A write that panics must not take the writer (and every later write) with
        // it: its statements are rolled back, and its caller, whose answer channel went
        // with the panic, sees the writer's error.
        let ran =
            futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(w.run(conn))).await;
        let end = match &ran {
            Ok(c) if !c.failed => "RELEASE w",
            _ => "ROLLBACK TO w; RELEASE w",
        };
        match ran {
            Ok(c) => completions.push(c),
            Err(_) => tracing::error!("a database write panicked; rolled back"),
        }
        if let Err(e) = conn.execute(end).await {
            failure = Some(e.to_string());
            break;
        }
    }
    let commit = match failure {
        Some(reason) => Err(reason),
        None => conn
            .execute("COMMIT")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    if commit.is_err() {
        let _ = conn.execute("ROLLBACK").await;
    }
    for w in rest {
        w.abort(commit.clone().err().unwrap_or_default());
    }
    for c in completions {
        (c.finish)(&commit);
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::each_backend;
    use crate::store::{StoreError, settings};
    use sqlx::AnyConnection;

    async fn put(c: &mut AnyConnection, name: &str) -> crate::store::Result<()> {
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2)")
            .bind(name)
            .bind(b"1".to_vec())
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_failing_or_panicking_write_leaves_the_others_and_the_writer_alone() {
        each_backend(|store| async move {
            let failing = store.write::<()>(Box::new(|c| {
                Box::pin(async move {
                    put(c, "a").await?;
                    Err(StoreError::Conflict("on purpose".into()))
                })
            }));
            let panicking = store.write::<()>(Box::new(|c| {
                Box::pin(async move {
                    put(c, "b").await?;
                    panic!("a bug inside a write");
                })
            }));
            let fine = store.write(Box::new(|c| Box::pin(async move { put(c, "c").await })));
            let (failing, panicking, fine) = tokio::join!(failing, panicking, fine);
            assert!(failing.is_err());
            assert!(panicking.is_err());
            fine.unwrap();
            assert_eq!(settings::get(&store, "a").await.unwrap(), None);
            assert_eq!(settings::get(&store, "b").await.unwrap(), None);
            assert_eq!(
                settings::get(&store, "c").await.unwrap().as_deref(),
                Some(&b"1"[..])
            );
            // The writer lives on.
            store
                .write(Box::new(|c| Box::pin(async move { put(c, "d").await })))
                .await
                .unwrap();
        })
        .await;
    }
}
