//! Held mail: messages from strangers in the email world, filed in the user's Requests
//! folder until they are paid for, let in by the user, refused, or left past their
//! hold window. A payment is keyed to (user, sender, body hash), so the sender's
//! server retrying the same message finds what became of it.

use super::{Result, Store, mail, now};
use sqlx::AnyConnection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldState {
    /// Waiting in Requests for a payment.
    Held,
    /// Paid for and delivered to INBOX with its payment.
    Paid,
    /// The user let it in for free (moved it to INBOX).
    Accepted,
    /// The user deleted it.
    Refused,
    /// Its hold window ended unpaid; the copy is gone.
    Expired,
}

impl HeldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldState::Held => "held",
            HeldState::Paid => "paid",
            HeldState::Accepted => "accepted",
            HeldState::Refused => "refused",
            HeldState::Expired => "expired",
        }
    }

    fn parse(s: &str) -> HeldState {
        match s {
            "paid" => HeldState::Paid,
            "accepted" => HeldState::Accepted,
            "refused" => HeldState::Refused,
            "expired" => HeldState::Expired,
            _ => HeldState::Held,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldMessage {
    pub id: i64,
    pub user_id: i64,
    /// The LNMP message filed in Requests.
    pub message_id: String,
    /// The envelope sender (the From address for the null sender), lowercase.
    pub sender: String,
    pub body_hash: String,
    pub amount_msat: i64,
    /// Names the pay page: /pay/<token>.
    pub token: String,
    pub state: HeldState,
    pub created_at: i64,
    /// When the hold window ends.
    pub expires_at: i64,
}

type Raw = (
    i64,
    i64,
    String,
    String,
    String,
    i64,
    String,
    String,
    i64,
    i64,
);

const COLUMNS: &str =
    "id, user_id, message_id, sender, body_hash, amount_msat, token, state, created_at, expires_at";

fn row(r: Raw) -> HeldMessage {
    HeldMessage {
        id: r.0,
        user_id: r.1,
        message_id: r.2,
        sender: r.3,
        body_hash: r.4,
        amount_msat: r.5,
        token: r.6,
        state: HeldState::parse(&r.7),
        created_at: r.8,
        expires_at: r.9,
    }
}

/// A message to hold.
#[derive(Debug, Clone)]
pub struct NewHeld {
    pub user_id: i64,
    pub message_id: String,
    pub sender: String,
    pub body_hash: String,
    pub amount_msat: i64,
    pub token: String,
    pub expires_at: i64,
}

/// Records a held message inside the transaction that files it in Requests. A row
/// left by an earlier message with the same key that is gone (expired) is replaced.
pub async fn insert_in(c: &mut AnyConnection, h: &NewHeld) -> Result<i64> {
    sqlx::query(
        "DELETE FROM held_messages WHERE user_id = $1 AND sender = $2 AND body_hash = $3 \
         AND state = 'expired'",
    )
    .bind(h.user_id)
    .bind(&h.sender)
    .bind(&h.body_hash)
    .execute(&mut *c)
    .await?;
    sqlx::query_scalar(
        "INSERT INTO held_messages (user_id, message_id, sender, body_hash, amount_msat, token, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(h.user_id)
    .bind(&h.message_id)
    .bind(&h.sender)
    .bind(&h.body_hash)
    .bind(h.amount_msat)
    .bind(&h.token)
    .bind(now())
    .bind(h.expires_at)
    .fetch_one(&mut *c)
    .await
    .map_err(|e| super::StoreError::from(e).conflict_as("held message"))
}

/// What became of a message with this key, if it was ever held.
pub async fn find(
    store: &Store,
    user_id: i64,
    sender: &str,
    body_hash: &str,
) -> Result<Option<HeldMessage>> {
    let r: Option<Raw> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM held_messages WHERE user_id = $1 AND sender = $2 AND body_hash = $3"
    ))
    .bind(user_id)
    .bind(sender)
    .bind(body_hash)
    .fetch_optional(store.pool())
    .await?;
    Ok(r.map(row))
}

pub async fn by_token(store: &Store, token: &str) -> Result<Option<HeldMessage>> {
    let r: Option<Raw> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM held_messages WHERE token = $1"
    ))
    .bind(token)
    .fetch_optional(store.pool())
    .await?;
    Ok(r.map(row))
}

pub async fn by_id_in(c: &mut AnyConnection, id: i64) -> Result<Option<HeldMessage>> {
    let r: Option<Raw> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM held_messages WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *c)
    .await?;
    Ok(r.map(row))
}

/// Held messages whose hold window has ended.
pub async fn due(store: &Store, at: i64, limit: i64) -> Result<Vec<HeldMessage>> {
    let r: Vec<Raw> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM held_messages WHERE state = 'held' AND expires_at <= $1 \
         ORDER BY expires_at LIMIT $2"
    ))
    .bind(at)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    Ok(r.into_iter().map(row).collect())
}

/// The held messages of a user, newest first.
pub async fn list(store: &Store, user_id: i64) -> Result<Vec<HeldMessage>> {
    let r: Vec<Raw> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM held_messages WHERE user_id = $1 ORDER BY id DESC"
    ))
    .bind(user_id)
    .fetch_all(store.pool())
    .await?;
    Ok(r.into_iter().map(row).collect())
}

/// Moves a held message on from 'held'; false if something else got there first.
/// Its invoices stay open: a BOLT11 handed out can still be paid until it expires, and
/// such a late payment must still be seen and credited (settle.rs).
async fn leave_held_in(c: &mut AnyConnection, id: i64, to: HeldState) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE held_messages SET state = $1, settled_at = $2 WHERE id = $3 AND state = 'held'",
    )
    .bind(to.as_str())
    .bind(now())
    .bind(id)
    .execute(&mut *c)
    .await?
    .rows_affected()
        == 1)
}

/// Where a message is filed among the user's mailboxes: (mailbox id, name, uid, flags,
/// size, internal date).
async fn filings_in(
    c: &mut AnyConnection,
    user_id: i64,
    message_id: &str,
) -> Result<Vec<(i64, String, i64, String, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT m.mailbox_id, b.name, m.uid, m.flags, m.size, m.internal_date FROM mail m \
         JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.user_id = $1 AND m.message_id = $2 \
         ORDER BY m.mailbox_id",
    )
    .bind(user_id)
    .bind(message_id)
    .fetch_all(&mut *c)
    .await?)
}

/// Delivers a paid held message: its stored JSON becomes `json` (the message with its
/// payment proof), and it moves from Requests to INBOX flagged `$Paid`. False (and
/// nothing changed) when it is no longer held.
pub async fn release_in(c: &mut AnyConnection, h: &HeldMessage, json: &str) -> Result<bool> {
    // Mailboxes first, as IMAP's MOVE and EXPUNGE take them before the held row, so the
    // two never wait on each other in a cycle.
    let filed = filings_in(c, h.user_id, &h.message_id).await?;
    let mut ids: Vec<i64> = filed.iter().map(|f| f.0).collect();
    let inbox: Option<i64> =
        sqlx::query_scalar("SELECT id FROM mailboxes WHERE user_id = $1 AND name = 'INBOX'")
            .bind(h.user_id)
            .fetch_optional(&mut *c)
            .await?;
    ids.extend(inbox);
    mail::lock_mailboxes_in(c, &ids).await?;
    if !leave_held_in(c, h.id, HeldState::Paid).await? {
        return Ok(false);
    }
    sqlx::query("UPDATE inbox SET body = $1 WHERE user_id = $2 AND message_id = $3")
        .bind(json)
        .bind(h.user_id)
        .bind(&h.message_id)
        .execute(&mut *c)
        .await?;
    // What is filed now, under the locks (the user may have moved it meanwhile).
    let filed = filings_in(c, h.user_id, &h.message_id).await?;
    for (mailbox_id, name, uid, flags, _size, internal_date) in filed {
        if name != "Requests" {
            continue;
        }
        let flags = mail::apply_flags(&flags, mail::FlagChange::Add, &["$Paid".to_owned()]);
        // Its rendering gains the payment's header fields: the size is learnt again.
        let copy = mail::NewMail {
            message_id: h.message_id.clone(),
            internal_date,
            size: -1,
            flags,
        };
        mail::file_in(c, h.user_id, "INBOX", &copy).await?;
        mail::expunge_in(c, h.user_id, mailbox_id, &[uid], false).await?;
    }
    Ok(true)
}

/// Ends a held message whose window passed unpaid: every copy and its body go.
pub async fn expire_in(c: &mut AnyConnection, h: &HeldMessage) -> Result<bool> {
    let filed = filings_in(c, h.user_id, &h.message_id).await?;
    let ids: Vec<i64> = filed.iter().map(|f| f.0).collect();
    mail::lock_mailboxes_in(c, &ids).await?;
    if !leave_held_in(c, h.id, HeldState::Expired).await? {
        return Ok(false);
    }
    for (mailbox_id, _, uid, ..) in filings_in(c, h.user_id, &h.message_id).await? {
        mail::expunge_in(c, h.user_id, mailbox_id, &[uid], false).await?;
    }
    sqlx::query("DELETE FROM inbox WHERE user_id = $1 AND message_id = $2")
        .bind(h.user_id)
        .bind(&h.message_id)
        .execute(&mut *c)
        .await?;
    Ok(true)
}

/// The user copied or moved messages into `to`: held ones that reach INBOX are let in
/// for free, and their senders become acquaintances. Called by [`mail::copy_in`].
pub(crate) async fn copied_in(
    c: &mut AnyConnection,
    to: i64,
    message_ids: &[String],
) -> Result<()> {
    let target: Option<(i64, String)> =
        sqlx::query_as("SELECT user_id, name FROM mailboxes WHERE id = $1")
            .bind(to)
            .fetch_optional(&mut *c)
            .await?;
    let Some((user_id, name)) = target else {
        return Ok(());
    };
    if name != "INBOX" {
        return Ok(());
    }
    for message_id in message_ids {
        let held: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, sender FROM held_messages WHERE user_id = $1 AND message_id = $2 \
             AND state = 'held'",
        )
        .bind(user_id)
        .bind(message_id)
        .fetch_optional(&mut *c)
        .await?;
        let Some((id, sender)) = held else { continue };
        if leave_held_in(c, id, HeldState::Accepted).await? {
            super::contacts::add_in(c, user_id, &sender, super::contacts::Level::Acquaintance)
                .await?;
        }
    }
    Ok(())
}

/// A message left one of the user's mailboxes: a held message that is now in none is
/// refused. Called by [`mail::expunge_in`].
pub(crate) async fn expunged_in(
    c: &mut AnyConnection,
    user_id: i64,
    message_id: &str,
) -> Result<()> {
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT h.id FROM held_messages h WHERE h.user_id = $1 AND h.message_id = $2 \
         AND h.state = 'held' AND NOT EXISTS (SELECT 1 FROM mail m JOIN mailboxes b \
         ON b.id = m.mailbox_id WHERE b.user_id = $1 AND m.message_id = $2 AND b.name <> 'Trash')",
    )
    .bind(user_id)
    .bind(message_id)
    .fetch_optional(&mut *c)
    .await?;
    if let Some(id) = held {
        leave_held_in(c, id, HeldState::Refused).await?;
    }
    Ok(())
}

/// Takes the right to send `sender` a payment request now: true unless they had one
/// after `cutoff`. Committed with the request, so two nodes never both send one.
pub async fn claim_request_in(
    c: &mut AnyConnection,
    sender: &str,
    at: i64,
    cutoff: i64,
) -> Result<bool> {
    let claimed: Option<String> = sqlx::query_scalar(
        "INSERT INTO payment_requests (sender, sent_at) VALUES ($1, $2) \
         ON CONFLICT (sender) DO UPDATE SET sent_at = excluded.sent_at \
         WHERE payment_requests.sent_at <= $3 RETURNING sender",
    )
    .bind(sender)
    .bind(at)
    .bind(cutoff)
    .fetch_optional(&mut *c)
    .await?;
    Ok(claimed.is_some())
}

/// Forgets when senders last had a payment request, for those before `before` (their
/// window is over).
pub async fn prune_requests(store: &Store, before: i64) -> Result<u64> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                Ok(
                    sqlx::query("DELETE FROM payment_requests WHERE sent_at < $1")
                        .bind(before)
                        .execute(&mut *c)
                        .await?
                        .rows_affected(),
                )
            })
        }))
        .await
}

/// Forgets what became of messages settled before `before` (paid, accepted, refused,
/// expired); a retry after that is a new message.
pub async fn prune(store: &Store, before: i64) -> Result<u64> {
    store
        .write(Box::new(move |c| {
            Box::pin(async move {
                Ok(sqlx::query(
                    "DELETE FROM held_messages WHERE state <> 'held' AND expires_at < $1",
                )
                .bind(before)
                .execute(&mut *c)
                .await?
                .rows_affected())
            })
        }))
        .await
}
