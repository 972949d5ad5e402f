//! Mailbox rows: each user's folders with the counters IMAP needs (UIDVALIDITY, UIDNEXT,
//! HIGHESTMODSEQ). UIDVALIDITY is set once, at creation, and never changes.

use super::{Result, Store, now};
use sqlx::AnyConnection;

/// The folders every user has, with their RFC 6154 special use. Requests holds mail
/// waiting on payment.
pub const DEFAULT_MAILBOXES: [(&str, Option<&str>); 7] = [
    ("INBOX", None),
    ("Sent", Some("\\Sent")),
    ("Drafts", Some("\\Drafts")),
    ("Trash", Some("\\Trash")),
    ("Junk", Some("\\Junk")),
    ("Archive", Some("\\Archive")),
    ("Requests", None),
];

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MailboxRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub special_use: Option<String>,
    pub uidvalidity: i64,
    pub uidnext: i64,
    pub highestmodseq: i64,
    pub subscribed: i64,
}

/// Creates the default mailboxes of a new user, inside the caller's transaction.
pub(crate) async fn create_defaults(c: &mut AnyConnection, user_id: i64) -> Result<()> {
    for (name, special_use) in DEFAULT_MAILBOXES {
        create_in(c, user_id, name, special_use).await?;
    }
    Ok(())
}

pub async fn list(store: &Store, user_id: i64) -> Result<Vec<MailboxRow>> {
    Ok(sqlx::query_as(
        "SELECT id, user_id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed \
         FROM mailboxes WHERE user_id = $1 ORDER BY id",
    )
    .bind(user_id)
    .fetch_all(store.pool())
    .await?)
}

const MAILBOX_COLUMNS: &str =
    "id, user_id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed";

/// The user's mailbox `name`, if it exists.
pub async fn get(store: &Store, user_id: i64, name: &str) -> Result<Option<MailboxRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE user_id = $1 AND name = $2"
    ))
    .bind(user_id)
    .bind(name)
    .fetch_optional(store.pool())
    .await?)
}

/// The mailbox with this id.
pub async fn by_id(store: &Store, id: i64) -> Result<Option<MailboxRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(store.pool())
    .await?)
}

/// A UIDVALIDITY never handed out before on this database: the clock, or one past the
/// last one given, so a mailbox deleted and created again within a second still gets
/// a new one.
async fn next_uidvalidity(c: &mut AnyConnection) -> Result<i64> {
    const NAME: &str = "imap.last_uidvalidity";
    let last: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
        .bind(NAME)
        .fetch_optional(&mut *c)
        .await?;
    let last = last
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let next = now().max(last + 1).clamp(1, i64::from(u32::MAX));
    sqlx::query(
        "INSERT INTO settings (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(NAME)
    .bind(next.to_string().into_bytes())
    .execute(&mut *c)
    .await?;
    Ok(next)
}

/// Creates a mailbox inside the caller's transaction.
pub async fn create_in(
    c: &mut AnyConnection,
    user_id: i64,
    name: &str,
    special_use: Option<&str>,
) -> Result<()> {
    let uidvalidity = next_uidvalidity(c).await?;
    sqlx::query(
        "INSERT INTO mailboxes (user_id, name, special_use, uidvalidity) VALUES ($1, $2, $3, $4)",
    )
    .bind(user_id)
    .bind(name)
    .bind(special_use)
    .bind(uidvalidity)
    .execute(&mut *c)
    .await
    .map_err(|e| super::StoreError::from(e).conflict_as(format!("mailbox {name}")))?;
    Ok(())
}

/// Deletes a mailbox and its messages (their tombstones go with it), and the stored
/// bodies no other mailbox refers to.
pub async fn delete_in(c: &mut AnyConnection, mailbox_id: i64) -> Result<()> {
    let owner: Option<i64> = sqlx::query_scalar("SELECT user_id FROM mailboxes WHERE id = $1")
        .bind(mailbox_id)
        .fetch_optional(&mut *c)
        .await?;
    let bodies: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT message_id FROM mail WHERE mailbox_id = $1")
            .bind(mailbox_id)
            .fetch_all(&mut *c)
            .await?;
    sqlx::query("DELETE FROM mail_expunged WHERE mailbox_id = $1")
        .bind(mailbox_id)
        .execute(&mut *c)
        .await?;
    sqlx::query("DELETE FROM mail WHERE mailbox_id = $1")
        .bind(mailbox_id)
        .execute(&mut *c)
        .await?;
    sqlx::query("DELETE FROM mailboxes WHERE id = $1")
        .bind(mailbox_id)
        .execute(&mut *c)
        .await?;
    if let Some(user_id) = owner {
        for id in &bodies {
            super::mail::drop_orphan_in(c, user_id, id).await?;
        }
    }
    Ok(())
}

/// Renames mailbox `mailbox_id` to `to`. It keeps its UIDVALIDITY: its UIDs still
/// name the same messages.
pub async fn rename_in(c: &mut AnyConnection, mailbox_id: i64, to: &str) -> Result<()> {
    sqlx::query("UPDATE mailboxes SET name = $1 WHERE id = $2")
        .bind(to)
        .bind(mailbox_id)
        .execute(&mut *c)
        .await
        .map_err(|e| super::StoreError::from(e).conflict_as(format!("mailbox {to}")))?;
    Ok(())
}

pub async fn set_subscribed(store: &Store, mailbox_id: i64, on: bool) -> Result<()> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE mailboxes SET subscribed = $1 WHERE id = $2")
                    .bind(i64::from(on))
                    .bind(mailbox_id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        }))
        .await
}

/// Counts for STATUS: (messages, unseen, total size).
pub async fn counts(store: &Store, mailbox_id: i64) -> Result<(i64, i64, i64)> {
    let (messages, unseen, size): (i64, i64, i64) = sqlx::query_as(
        // ESCAPE makes the backslash of \Seen literal on PostgreSQL too; SUM over
        // BIGINT is NUMERIC there, hence the casts.
        "SELECT COUNT(*), \
         CAST(COALESCE(SUM(CASE WHEN (' ' || flags || ' ') LIKE '% \\Seen %' ESCAPE '!' THEN 0 ELSE 1 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(CASE WHEN size > 0 THEN size ELSE 0 END), 0) AS BIGINT) \
         FROM mail WHERE mailbox_id = $1",
    )
    .bind(mailbox_id)
    .fetch_one(store.pool())
    .await?;
    Ok((messages, unseen, size))
}

/// Takes the mailbox's messages no session has seen yet for the caller's session:
/// returns the UIDs `from..to` that are \Recent to it, and moves the mark to `to`.
/// The mark moves only if nobody moved it meanwhile, so two sessions (or two nodes)
/// never both get the same message as \Recent (RFC 3501 2.3.2).
pub async fn claim_recent(store: &Store, mailbox_id: i64) -> Result<(i64, i64)> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                loop {
                    let row: Option<(i64, i64)> =
                        sqlx::query_as("SELECT recent_from, uidnext FROM mailboxes WHERE id = $1")
                            .bind(mailbox_id)
                            .fetch_optional(&mut *c)
                            .await?;
                    let Some((from, to)) = row else {
                        return Ok((i64::MAX, i64::MAX));
                    };
                    if from >= to {
                        return Ok((to, to));
                    }
                    let done = sqlx::query(
                        "UPDATE mailboxes SET recent_from = $1 WHERE id = $2 AND recent_from = $3",
                    )
                    .bind(to)
                    .bind(mailbox_id)
                    .bind(from)
                    .execute(&mut *c)
                    .await?;
                    if done.rows_affected() == 1 {
                        return Ok((from, to));
                    }
                }
            })
        }))
        .await
}

/// The UIDs `from..to` that are \Recent without taking them (EXAMINE, RFC 3501 6.3.2).
pub async fn peek_recent(store: &Store, mailbox_id: i64) -> Result<(i64, i64)> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT recent_from, uidnext FROM mailboxes WHERE id = $1")
            .bind(mailbox_id)
            .fetch_optional(store.pool())
            .await?;
    Ok(row.unwrap_or((i64::MAX, i64::MAX)))
}

/// How many messages of the mailbox are \Recent (for STATUS).
pub async fn recent_count(store: &Store, mailbox_id: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM mail m JOIN mailboxes b ON b.id = m.mailbox_id \
         WHERE b.id = $1 AND m.uid >= b.recent_from",
    )
    .bind(mailbox_id)
    .fetch_one(store.pool())
    .await?)
}
