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
    // UIDVALIDITY is a nonzero 32-bit value; the creation time is the usual choice.
    let uidvalidity = now().clamp(1, i64::from(u32::MAX));
    for (name, special_use) in DEFAULT_MAILBOXES {
        sqlx::query(
            "INSERT INTO mailboxes (user_id, name, special_use, uidvalidity) VALUES ($1, $2, $3, $4)",
        )
        .bind(user_id)
        .bind(name)
        .bind(special_use)
        .bind(uidvalidity)
        .execute(&mut *c)
        .await?;
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
