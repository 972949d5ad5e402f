//! Messages filed in mailboxes: the rows IMAP numbers with UIDs and MODSEQs. Each row
//! points at an LNMP message sealed to the mailbox's owner (kept in `inbox`), so the
//! mail store holds no plaintext.

use super::{Result, Store, placeholders};
use sqlx::AnyConnection;

/// A message filed in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MailRow {
    pub id: i64,
    pub mailbox_id: i64,
    pub uid: i64,
    pub modseq: i64,
    pub message_id: String,
    pub internal_date: i64,
    pub size: i64,
    pub flags: String,
}

/// What to file: the LNMP message id, its rendered size, and the time it arrived.
#[derive(Debug, Clone)]
pub struct NewMail {
    pub message_id: String,
    pub internal_date: i64,
    pub size: i64,
    pub flags: String,
}

/// Files a message in the user's mailbox `mailbox` inside the caller's transaction,
/// taking the next UID and MODSEQ. Returns the UID.
pub(crate) async fn file_in(
    c: &mut AnyConnection,
    user_id: i64,
    mailbox: &str,
    mail: &NewMail,
) -> Result<i64> {
    // One statement takes the counters and moves them on, so concurrent deliveries
    // (several daemons on PostgreSQL) never share a UID.
    let (mailbox_id, uid, modseq): (i64, i64, i64) = sqlx::query_as(
        "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 \
         WHERE user_id = $1 AND name = $2 RETURNING id, uidnext - 1, highestmodseq",
    )
    .bind(user_id)
    .bind(mailbox)
    .fetch_optional(&mut *c)
    .await?
    .ok_or_else(|| super::StoreError::NotFound(format!("mailbox {mailbox}")))?;
    insert_row(c, mailbox_id, uid, modseq, mail).await?;
    // What reaches the INBOX goes to the user's forward address too (Junk and Requests
    // hold what was not let through, and are not forwarded).
    if mailbox == "INBOX" {
        super::bridge_out::forward_in(c, user_id, &mail.message_id, mail.internal_date).await?;
    }
    Ok(uid)
}

async fn insert_row(
    c: &mut AnyConnection,
    mailbox_id: i64,
    uid: i64,
    modseq: i64,
    mail: &NewMail,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO mail (mailbox_id, uid, modseq, message_id, internal_date, size, flags) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(mailbox_id)
    .bind(uid)
    .bind(modseq)
    .bind(&mail.message_id)
    .bind(mail.internal_date)
    .bind(mail.size)
    .bind(&mail.flags)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The rows of a mailbox with the given UIDs, by UID.
async fn rows_by_uid(c: &mut AnyConnection, mailbox_id: i64, uids: &[i64]) -> Result<Vec<MailRow>> {
    let mut rows = Vec::with_capacity(uids.len());
    // Bounded IN lists: SQLite takes at most 32766 parameters.
    for chunk in uids.chunks(500) {
        let mut part: Vec<MailRow> = sqlx::query_as(&format!(
            "SELECT {MAIL_COLUMNS} FROM mail m WHERE m.mailbox_id = $1 AND m.uid IN ({}) ORDER BY m.uid",
            placeholders(2, chunk.len())
        ))
        .bind(mailbox_id)
        .pipe(|q| chunk.iter().fold(q, |q, u| q.bind(*u)))
        .fetch_all(&mut *c)
        .await?;
        rows.append(&mut part);
    }
    Ok(rows)
}

/// The messages of the user's mailbox `mailbox`, by UID.
pub async fn list(store: &Store, user_id: i64, mailbox: &str) -> Result<Vec<MailRow>> {
    Ok(sqlx::query_as(
        "SELECT m.id, m.mailbox_id, m.uid, m.modseq, m.message_id, m.internal_date, m.size, m.flags \
         FROM mail m JOIN mailboxes b ON b.id = m.mailbox_id \
         WHERE b.user_id = $1 AND b.name = $2 ORDER BY m.uid",
    )
    .bind(user_id)
    .bind(mailbox)
    .fetch_all(store.pool())
    .await?)
}

/// How many messages are filed across all of the user's mailboxes.
pub async fn count(store: &Store, user_id: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM mail m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.user_id = $1",
    )
    .bind(user_id)
    .fetch_one(store.pool())
    .await?)
}

/// The columns of a mail row, in [`MailRow`]'s order.
const MAIL_COLUMNS: &str =
    "m.id, m.mailbox_id, m.uid, m.modseq, m.message_id, m.internal_date, m.size, m.flags";

/// Every message of a mailbox, by UID: what SELECT numbers.
pub async fn in_mailbox(store: &Store, mailbox_id: i64) -> Result<Vec<MailRow>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {MAIL_COLUMNS} FROM mail m WHERE m.mailbox_id = $1 ORDER BY m.uid"
    ))
    .bind(mailbox_id)
    .fetch_all(store.pool())
    .await?)
}

/// What a session catching up learns: rows added or whose flags changed, the UIDs
/// expunged (with their MODSEQ), and the MODSEQ it now knows everything up to.
pub struct Changes {
    pub changed: Vec<MailRow>,
    pub expunged: Vec<(i64, i64)>,
    pub upto: i64,
}

/// What changed in a mailbox after MODSEQ `since`, up to the mailbox's HIGHESTMODSEQ
/// read first: every change up to it has committed (changes to a mailbox take its row
/// lock in MODSEQ order), so the two reads below agree even while others write, and
/// anything later is left for the next look. None if the mailbox is gone.
pub async fn changes_since(store: &Store, mailbox_id: i64, since: i64) -> Result<Option<Changes>> {
    let upto: Option<i64> = sqlx::query_scalar("SELECT highestmodseq FROM mailboxes WHERE id = $1")
        .bind(mailbox_id)
        .fetch_optional(store.pool())
        .await?;
    let Some(upto) = upto else {
        return Ok(None);
    };
    if upto <= since {
        return Ok(Some(Changes {
            changed: Vec::new(),
            expunged: Vec::new(),
            upto: since,
        }));
    }
    let changed = sqlx::query_as(&format!(
        "SELECT {MAIL_COLUMNS} FROM mail m WHERE m.mailbox_id = $1 AND m.modseq > $2 \
         AND m.modseq <= $3 ORDER BY m.uid"
    ))
    .bind(mailbox_id)
    .bind(since)
    .bind(upto)
    .fetch_all(store.pool())
    .await?;
    let expunged = sqlx::query_as(
        "SELECT uid, modseq FROM mail_expunged WHERE mailbox_id = $1 AND modseq > $2 \
         AND modseq <= $3 ORDER BY uid",
    )
    .bind(mailbox_id)
    .bind(since)
    .bind(upto)
    .fetch_all(store.pool())
    .await?;
    Ok(Some(Changes {
        changed,
        expunged,
        upto,
    }))
}

/// Takes the mailbox's next MODSEQ inside the caller's transaction (locking its row
/// until commit, so changes to one mailbox are ordered).
async fn next_modseq(c: &mut AnyConnection, mailbox_id: i64) -> Result<i64> {
    sqlx::query_scalar(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1 RETURNING highestmodseq",
    )
    .bind(mailbox_id)
    .fetch_optional(&mut *c)
    .await?
    .ok_or_else(|| super::StoreError::NotFound(format!("mailbox {mailbox_id}")))
}

/// A flag change asked for by STORE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagChange {
    Add,
    Remove,
    Replace,
}

/// Applies a flag change to the rows `uids` of a mailbox, under one new MODSEQ. Rows
/// whose MODSEQ is above `unchanged_since` (CONDSTORE) are left alone and returned
/// as failed. Returns (rows changed, with their new flags and MODSEQ; failed UIDs).
///
/// The mailbox row is locked (its MODSEQ taken) before the rows are read, so two
/// sessions changing flags at once on PostgreSQL apply one after the other instead of
/// both starting from the same old flags, and UNCHANGEDSINCE is checked atomically.
pub async fn set_flags_in(
    c: &mut AnyConnection,
    mailbox_id: i64,
    uids: &[i64],
    change: FlagChange,
    flags: &[String],
    unchanged_since: Option<i64>,
) -> Result<(Vec<MailRow>, Vec<i64>)> {
    let modseq = next_modseq(c, mailbox_id).await?;
    let mut changed = Vec::new();
    let mut failed = Vec::new();
    // Rows that end with the same flags are updated in one statement.
    let mut by_result: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for mut row in rows_by_uid(c, mailbox_id, uids).await? {
        if unchanged_since.is_some_and(|u| row.modseq > u) {
            failed.push(row.uid);
            continue;
        }
        let new = apply_flags(&row.flags, change, flags);
        if new == row.flags {
            continue;
        }
        by_result.entry(new.clone()).or_default().push(row.uid);
        row.flags = new;
        row.modseq = modseq;
        changed.push(row);
    }
    for (new, group) in by_result {
        for chunk in group.chunks(500) {
            sqlx::query(&format!(
                "UPDATE mail SET flags = $1, modseq = $2 WHERE mailbox_id = $3 AND uid IN ({})",
                placeholders(4, chunk.len())
            ))
            .bind(&new)
            .bind(modseq)
            .bind(mailbox_id)
            .pipe(|q| chunk.iter().fold(q, |q, u| q.bind(*u)))
            .execute(&mut *c)
            .await?;
        }
    }
    Ok((changed, failed))
}

/// The flag list after a change: space-separated, system flags first, no duplicates
/// (flags compare case-insensitively, as RFC 3501 says).
pub fn apply_flags(current: &str, change: FlagChange, flags: &[String]) -> String {
    let mut out: Vec<&str> = match change {
        FlagChange::Replace => Vec::new(),
        _ => current.split_whitespace().collect(),
    };
    match change {
        FlagChange::Remove => out.retain(|f| !flags.iter().any(|g| g.eq_ignore_ascii_case(f))),
        FlagChange::Add | FlagChange::Replace => {
            for f in flags {
                if !out.iter().any(|g| g.eq_ignore_ascii_case(f)) {
                    out.push(f);
                }
            }
        }
    }
    out.sort_by_key(|f| (!f.starts_with('\\'), f.to_ascii_lowercase()));
    out.join(" ")
}

/// Removes the rows `uids` of a mailbox, leaving tombstones under one new MODSEQ, and
/// drops stored bodies nothing refers to any more. With `only_deleted`, a row goes only
/// if it has \Deleted now (EXPUNGE and CLOSE decide on the flags as committed, not on
/// a session's view of them). Returns the UIDs removed.
pub async fn expunge_in(
    c: &mut AnyConnection,
    user_id: i64,
    mailbox_id: i64,
    uids: &[i64],
    only_deleted: bool,
) -> Result<Vec<i64>> {
    // Lock first, then read: a row another session expunged meanwhile is not there.
    let modseq = next_modseq(c, mailbox_id).await?;
    let rows: Vec<(i64, String)> = rows_by_uid(c, mailbox_id, uids)
        .await?
        .into_iter()
        .filter(|r| {
            !only_deleted
                || r.flags
                    .split_whitespace()
                    .any(|f| f.eq_ignore_ascii_case("\\Deleted"))
        })
        .map(|r| (r.uid, r.message_id))
        .collect();
    let mut removed = Vec::with_capacity(rows.len());
    for (uid, message_id) in rows {
        let gone = sqlx::query("DELETE FROM mail WHERE mailbox_id = $1 AND uid = $2")
            .bind(mailbox_id)
            .bind(uid)
            .execute(&mut *c)
            .await?;
        if gone.rows_affected() == 0 {
            continue;
        }
        sqlx::query(
            "INSERT INTO mail_expunged (mailbox_id, uid, modseq) VALUES ($1, $2, $3) \
             ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
        )
        .bind(mailbox_id)
        .bind(uid)
        .bind(modseq)
        .execute(&mut *c)
        .await?;
        drop_orphan_in(c, user_id, &message_id).await?;
        super::held::expunged_in(c, user_id, &message_id).await?;
        removed.push(uid);
    }
    Ok(removed)
}

/// Drops a stored (APPENDed) body once no mail row of the user refers to it.
pub(crate) async fn drop_orphan_in(
    c: &mut AnyConnection,
    user_id: i64,
    message_id: &str,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM stored_mail WHERE user_id = $1 AND message_id = $2 AND NOT EXISTS \
         (SELECT 1 FROM mail m JOIN mailboxes b ON b.id = m.mailbox_id \
          WHERE b.user_id = $1 AND m.message_id = $2)",
    )
    .bind(user_id)
    .bind(message_id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Locks mailbox rows in id order, so transactions that touch two mailboxes (MOVE,
/// RENAME of INBOX) never wait on each other in a cycle.
pub async fn lock_mailboxes_in(c: &mut AnyConnection, ids: &[i64]) -> Result<()> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        sqlx::query("UPDATE mailboxes SET highestmodseq = highestmodseq WHERE id = $1")
            .bind(id)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// Copies the rows `uids` of mailbox `from` into mailbox `to` of the same user: new
/// UIDs, the same flags, INTERNALDATE and body. Returns (source UID, new UID) pairs.
pub async fn copy_in(
    c: &mut AnyConnection,
    from: i64,
    uids: &[i64],
    to: i64,
) -> Result<Vec<(i64, i64)>> {
    let rows = rows_by_uid(c, from, uids).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let n = rows.len() as i64;
    let (first_uid, modseq): (i64, i64) = sqlx::query_as(
        "UPDATE mailboxes SET uidnext = uidnext + $1, highestmodseq = highestmodseq + 1 \
         WHERE id = $2 RETURNING uidnext - $1, highestmodseq",
    )
    .bind(n)
    .bind(to)
    .fetch_optional(&mut *c)
    .await?
    .ok_or_else(|| super::StoreError::NotFound(format!("mailbox {to}")))?;
    let mut pairs = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let uid = first_uid + i as i64;
        let copy = NewMail {
            message_id: row.message_id.clone(),
            internal_date: row.internal_date,
            size: row.size,
            flags: row.flags.clone(),
        };
        insert_row(c, to, uid, modseq, &copy).await?;
        pairs.push((row.uid, uid));
    }
    let ids: Vec<String> = rows.into_iter().map(|r| r.message_id).collect();
    super::held::copied_in(c, to, &ids).await?;
    Ok(pairs)
}

/// Files a message in the mailbox with id `mailbox_id` (APPEND), inside the caller's
/// transaction. Returns the UID.
pub async fn append_in(c: &mut AnyConnection, mailbox_id: i64, mail: &NewMail) -> Result<i64> {
    let (uid, modseq): (i64, i64) = sqlx::query_as(
        "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 \
         WHERE id = $1 RETURNING uidnext - 1, highestmodseq",
    )
    .bind(mailbox_id)
    .fetch_optional(&mut *c)
    .await?
    .ok_or_else(|| super::StoreError::NotFound(format!("mailbox {mailbox_id}")))?;
    insert_row(c, mailbox_id, uid, modseq, mail).await?;
    Ok(uid)
}

/// Keeps a body the user stored (APPEND), sealed; a body already there stays.
pub async fn store_body_in(
    c: &mut AnyConnection,
    user_id: i64,
    message_id: &str,
    sealed: &[u8],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO stored_mail (user_id, message_id, sealed, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, message_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(message_id)
    .bind(sealed)
    .bind(super::now())
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Where a filed message's body lives.
#[derive(Debug, Clone)]
pub enum Body {
    /// An LNMP message sealed to the user: its JSON.
    Lnmp(String),
    /// A message the user stored, sealed under their storage key.
    Stored(Vec<u8>),
}

/// The body of the user's message `message_id`.
pub async fn body(store: &Store, user_id: i64, message_id: &str) -> Result<Option<Body>> {
    // One round trip for either kind: a client syncing a mailbox asks for thousands.
    let (lnmp, stored): (Option<String>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT (SELECT body FROM inbox WHERE user_id = $1 AND message_id = $2), \
         (SELECT sealed FROM stored_mail WHERE user_id = $1 AND message_id = $2)",
    )
    .bind(user_id)
    .bind(message_id)
    .fetch_one(store.pool())
    .await?;
    Ok(match (lnmp, stored) {
        (Some(json), _) => Some(Body::Lnmp(json)),
        (None, Some(sealed)) => Some(Body::Stored(sealed)),
        (None, None) => None,
    })
}

/// The bodies of several of the user's messages at once, by message id; ids with no
/// body are left out.
pub async fn bodies(
    store: &Store,
    user_id: i64,
    message_ids: &[String],
) -> Result<std::collections::HashMap<String, Body>> {
    let mut out = std::collections::HashMap::with_capacity(message_ids.len());
    for chunk in message_ids.chunks(200) {
        let list = placeholders(2, chunk.len());
        let lnmp: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT message_id, body FROM inbox WHERE user_id = $1 AND message_id IN ({list})"
        ))
        .bind(user_id)
        .pipe(|q| chunk.iter().fold(q, |q, id| q.bind(id)))
        .fetch_all(store.pool())
        .await?;
        for (id, json) in lnmp {
            out.insert(id, Body::Lnmp(json));
        }
        let stored: Vec<(String, Vec<u8>)> = sqlx::query_as(&format!(
            "SELECT message_id, sealed FROM stored_mail WHERE user_id = $1 AND message_id IN ({list})"
        ))
        .bind(user_id)
        .pipe(|q| chunk.iter().fold(q, |q, id| q.bind(id)))
        .fetch_all(store.pool())
        .await?;
        for (id, sealed) in stored {
            out.entry(id).or_insert(Body::Stored(sealed));
        }
    }
    Ok(out)
}

/// Records the rendered size of a row filed with size -1 (not rendered yet).
pub async fn set_size(store: &Store, row_id: i64, size: i64) -> Result<()> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query("UPDATE mail SET size = $1 WHERE id = $2 AND size < 0")
                    .bind(size)
                    .bind(row_id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        }))
        .await
}

/// `$first, $first+1, ...` for an IN list of `n` values.
/// Lets a query builder be threaded through a fold.
trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{add_user, each_backend};

    #[tokio::test]
    async fn filing_takes_increasing_uids_and_modseqs() {
        each_backend(|store| async move {
            let alice = add_user(&store, "alice").await;
            let mut uids = Vec::new();
            for n in 0..3 {
                let mail = NewMail {
                    message_id: format!("m{n}"),
                    internal_date: 1_700_000_000 + n,
                    size: 100 + n,
                    flags: String::new(),
                };
                let uid = store
                    .write(Box::new(move |c| {
                        Box::pin(async move { file_in(c, alice.id, "INBOX", &mail).await })
                    }))
                    .await
                    .unwrap();
                uids.push(uid);
            }
            assert_eq!(uids, vec![1, 2, 3]);
            let rows = list(&store, alice.id, "INBOX").await.unwrap();
            assert_eq!(rows.len(), 3);
            assert!(rows.windows(2).all(|w| w[0].modseq < w[1].modseq));
            assert_eq!(rows[2].message_id, "m2");
            let boxes = crate::store::mailboxes::list(&store, alice.id)
                .await
                .unwrap();
            let inbox = boxes.iter().find(|b| b.name == "INBOX").unwrap();
            assert_eq!(inbox.uidnext, 4);
            assert_eq!(count(&store, alice.id).await.unwrap(), 3);

            let missing = store
                .write(Box::new(move |c| {
                    Box::pin(async move {
                        let mail = NewMail {
                            message_id: "x".into(),
                            internal_date: 0,
                            size: 1,
                            flags: String::new(),
                        };
                        file_in(c, alice.id, "Nope", &mail).await
                    })
                }))
                .await;
            assert!(matches!(
                missing,
                Err(crate::store::StoreError::NotFound(_))
            ));
        })
        .await;
    }
}
