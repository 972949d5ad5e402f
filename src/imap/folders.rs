//! The mailbox commands: LIST and LSUB with SPECIAL-USE and CHILDREN attributes,
//! CREATE, DELETE, RENAME, SUBSCRIBE and STATUS. The default mailboxes (INBOX and the
//! special-use ones, Requests) cannot be deleted or renamed away; everything else is
//! the user's to arrange, with `/` as the hierarchy separator.

use super::names::{self, SEPARATOR};
use super::session::{Done, mailbox_name};
use super::wire;
use crate::custody::UserInfo;
use crate::store::Store;
use crate::store::mailboxes::{self, DEFAULT_MAILBOXES, MailboxRow};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::status::StatusDataItemName;

fn is_default(name: &str) -> bool {
    DEFAULT_MAILBOXES.iter().any(|(n, _)| *n == name)
}

pub async fn create(
    store: &Store,
    user: &UserInfo,
    mailbox: &Mailbox<'_>,
    utf8: bool,
    limits: &crate::config::Imap,
) -> Done {
    let name = match mailbox_name(mailbox, utf8, limits.max_mailbox_name_bytes) {
        Ok(n) => n,
        Err(d) => return d,
    };
    if name == "INBOX" {
        return Done::no("INBOX exists already").code("ALREADYEXISTS");
    }
    let existing = match mailboxes::list(store, user.id).await {
        Ok(l) => l,
        Err(e) => return e.into(),
    };
    if existing.iter().any(|m| m.name == name) {
        return Done::no("Mailbox exists already").code("ALREADYEXISTS");
    }
    // Missing parents are created too (RFC 3501 6.3.3), all in one transaction.
    let mut wanted = Vec::new();
    let mut path = String::new();
    for level in name.split(SEPARATOR) {
        if !path.is_empty() {
            path.push(SEPARATOR);
        }
        path.push_str(level);
        if !existing.iter().any(|m| m.name == path) {
            wanted.push(path.clone());
        }
    }
    if existing.len() + wanted.len() > limits.max_mailboxes as usize {
        return Done::no("Too many mailboxes").code("LIMIT");
    }
    let user_id = user.id;
    match store
        .write(Box::new(move |c| {
            Box::pin(async move {
                for n in &wanted {
                    mailboxes::create_in(c, user_id, n, None).await?;
                }
                Ok(())
            })
        }))
        .await
    {
        Ok(()) => Done::ok("Create completed"),
        Err(crate::store::StoreError::Conflict(_)) => {
            Done::no("Mailbox exists already").code("ALREADYEXISTS")
        }
        Err(e) => e.into(),
    }
}

pub async fn delete(
    store: &Store,
    user: &UserInfo,
    mailbox: &Mailbox<'_>,
    utf8: bool,
    max: usize,
) -> Done {
    let name = match mailbox_name(mailbox, utf8, max) {
        Ok(n) => n,
        Err(d) => return d,
    };
    if is_default(&name) {
        return Done::no("This mailbox cannot be deleted").code("CANNOT");
    }
    let all = match mailboxes::list(store, user.id).await {
        Ok(l) => l,
        Err(e) => return e.into(),
    };
    let Some(row) = all.iter().find(|m| m.name == name) else {
        return Done::no("No such mailbox").code("NONEXISTENT");
    };
    // A mailbox with children would leave them without a parent; RFC 3501 allows
    // refusing that, as Dovecot does.
    let prefix = format!("{name}{SEPARATOR}");
    if all.iter().any(|m| m.name.starts_with(&prefix)) {
        return Done::no("Mailbox has children; delete them first").code("INUSE");
    }
    let id = row.id;
    match store
        .write(Box::new(move |c| {
            Box::pin(async move { mailboxes::delete_in(c, id).await })
        }))
        .await
    {
        Ok(()) => {
            store.mail_changed(user.id).await;
            Done::ok("Delete completed")
        }
        Err(e) => e.into(),
    }
}

pub async fn rename(
    store: &Store,
    user: &UserInfo,
    from: &Mailbox<'_>,
    to: &Mailbox<'_>,
    utf8: bool,
    limits: &crate::config::Imap,
) -> Done {
    let max = limits.max_mailbox_name_bytes;
    let (from, to) = match (mailbox_name(from, utf8, max), mailbox_name(to, utf8, max)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(d), _) | (_, Err(d)) => return d,
    };
    let all = match mailboxes::list(store, user.id).await {
        Ok(l) => l,
        Err(e) => return e.into(),
    };
    let Some(source) = all.iter().find(|m| m.name == from).cloned() else {
        return Done::no("No such mailbox").code("NONEXISTENT");
    };
    if all.iter().any(|m| m.name == to) {
        return Done::no("Target mailbox exists already").code("ALREADYEXISTS");
    }
    if from == "INBOX" {
        return rename_inbox(store, user, &source, &to).await;
    }
    if is_default(&from) {
        return Done::no("This mailbox cannot be renamed").code("CANNOT");
    }
    if to.starts_with(&format!("{from}{SEPARATOR}")) {
        return Done::no("Cannot move a mailbox into itself").code("CANNOT");
    }
    // The mailbox moves with its children; missing parents of the new name appear.
    let prefix = format!("{from}{SEPARATOR}");
    let moves: Vec<(i64, String)> = all
        .iter()
        .filter(|m| m.name == from || m.name.starts_with(&prefix))
        .map(|m| (m.id, format!("{to}{}", &m.name[from.len()..])))
        .collect();
    let mut parents = Vec::new();
    let mut path = String::new();
    let levels: Vec<&str> = to.split(SEPARATOR).collect();
    for level in &levels[..levels.len() - 1] {
        if !path.is_empty() {
            path.push(SEPARATOR);
        }
        path.push_str(level);
        if !all.iter().any(|m| m.name == path) {
            parents.push(path.clone());
        }
    }
    let user_id = user.id;
    match store
        .write(Box::new(move |c| {
            Box::pin(async move {
                for p in &parents {
                    mailboxes::create_in(c, user_id, p, None).await?;
                }
                for (id, name) in &moves {
                    mailboxes::rename_in(c, *id, name).await?;
                }
                Ok(())
            })
        }))
        .await
    {
        Ok(()) => Done::ok("Rename completed"),
        Err(crate::store::StoreError::Conflict(_)) => {
            Done::no("Target mailbox exists already").code("ALREADYEXISTS")
        }
        Err(e) => e.into(),
    }
}

/// RENAME INBOX moves its messages to a new mailbox and leaves INBOX empty (RFC
/// 3501 6.3.5).
async fn rename_inbox(store: &Store, user: &UserInfo, inbox: &MailboxRow, to: &str) -> Done {
    let (user_id, inbox_id, to) = (user.id, inbox.id, to.to_owned());
    let rows = match crate::store::mail::in_mailbox(store, inbox_id).await {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    let uids: Vec<i64> = rows.iter().map(|r| r.uid).collect();
    match store
        .write(Box::new(move |c| {
            Box::pin(async move {
                mailboxes::create_in(c, user_id, &to, None).await?;
                let target: i64 =
                    sqlx::query_scalar("SELECT id FROM mailboxes WHERE user_id = $1 AND name = $2")
                        .bind(user_id)
                        .bind(&to)
                        .fetch_one(&mut *c)
                        .await?;
                crate::store::mail::lock_mailboxes_in(c, &[inbox_id, target]).await?;
                crate::store::mail::copy_in(c, inbox_id, &uids, target).await?;
                crate::store::mail::expunge_in(c, user_id, inbox_id, &uids, false).await?;
                Ok(())
            })
        }))
        .await
    {
        Ok(()) => {
            store.mail_changed(user.id).await;
            Done::ok("Rename completed")
        }
        Err(e) => e.into(),
    }
}

pub async fn subscribe(
    store: &Store,
    user: &UserInfo,
    mailbox: &Mailbox<'_>,
    on: bool,
    utf8: bool,
    max: usize,
) -> Done {
    let name = match mailbox_name(mailbox, utf8, max) {
        Ok(n) => n,
        Err(d) => return d,
    };
    match mailboxes::get(store, user.id, &name).await {
        Ok(Some(row)) => match mailboxes::set_subscribed(store, row.id, on).await {
            Ok(()) => Done::ok(if on {
                "Subscribe completed"
            } else {
                "Unsubscribe completed"
            }),
            Err(e) => e.into(),
        },
        Ok(None) => Done::no("No such mailbox").code("NONEXISTENT"),
        Err(e) => e.into(),
    }
}

/// LIST and LSUB (RFC 3501 6.3.8-9) with the RFC 6154 special-use attributes and the
/// RFC 3348 child attributes. A level that exists only as a parent is listed
/// `\Noselect` where `%` stops at it.
#[allow(clippy::too_many_arguments)]
pub async fn list(
    store: &Store,
    user: &UserInfo,
    reference: &Mailbox<'_>,
    pattern: &ListMailbox<'_>,
    subscribed_only: bool,
    utf8: bool,
    max: usize,
    out: &mut Vec<u8>,
) -> Done {
    let verb = if subscribed_only { "LSUB" } else { "LIST" };
    let reference = match reference {
        Mailbox::Inbox => "INBOX".to_owned(),
        Mailbox::Other(o) => match decode(o.inner().as_ref(), utf8) {
            Some(r) => r,
            None => return Done::bad("Reference is not valid modified UTF-7"),
        },
    };
    let pattern_bytes: &[u8] = match pattern {
        ListMailbox::Token(t) => t.as_ref(),
        ListMailbox::String(s) => s.as_ref(),
    };
    let Some(pattern) = decode(pattern_bytes, utf8) else {
        return Done::bad("Pattern is not valid modified UTF-7");
    };
    // Matching costs the pattern's length times each name's: both stay bounded.
    if pattern.len() + reference.len() > 2 * max {
        return Done::bad("Reference or pattern too long");
    }
    if pattern.is_empty() {
        // The hierarchy delimiter and root name (RFC 3501 6.3.8).
        out.extend_from_slice(format!("* {verb} (\\Noselect) \"/\" \"\"\r\n").as_bytes());
        return Done::ok(format!("{verb} completed"));
    }
    let full = if reference.is_empty() || pattern.starts_with(SEPARATOR) {
        pattern
    } else if reference.ends_with(SEPARATOR) {
        format!("{reference}{pattern}")
    } else {
        format!("{reference}{SEPARATOR}{pattern}")
    };
    let all = match mailboxes::list(store, user.id).await {
        Ok(l) => l,
        Err(e) => return e.into(),
    };
    let mut shown: Vec<(String, Vec<&str>)> = Vec::new();
    let has_children = |name: &str| {
        let prefix = format!("{name}{SEPARATOR}");
        all.iter()
            .any(|m| m.name.starts_with(&prefix) && (!subscribed_only || m.subscribed != 0))
    };
    for m in &all {
        if subscribed_only && m.subscribed == 0 {
            continue;
        }
        if names::matches(&full, &m.name) {
            let mut attrs = vec![if has_children(&m.name) {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            }];
            if let Some(su) = &m.special_use {
                attrs.push(su.as_str());
            }
            shown.push((m.name.clone(), attrs));
        }
        // Parents that do not exist themselves, where `%` stops above this mailbox.
        let levels: Vec<&str> = m.name.split(SEPARATOR).collect();
        for depth in 1..levels.len() {
            let parent = levels[..depth].join("/");
            if all.iter().any(|x| x.name == parent) || shown.iter().any(|(n, _)| *n == parent) {
                continue;
            }
            if names::matches(&full, &parent) {
                shown.push((parent, vec!["\\Noselect", "\\HasChildren"]));
            }
        }
    }
    for (name, attrs) in shown {
        out.extend_from_slice(format!("* {verb} ({}) \"/\" ", attrs.join(" ")).as_bytes());
        wire::astring(out, &names::to_client(&name, utf8));
        out.extend_from_slice(b"\r\n");
    }
    Done::ok(format!("{verb} completed"))
}

fn decode(raw: &[u8], utf8: bool) -> Option<String> {
    if utf8 {
        String::from_utf8(raw.to_vec()).ok()
    } else {
        names::decode_utf7(raw).ok()
    }
}

pub async fn status(
    store: &Store,
    user: &UserInfo,
    mailbox: &Mailbox<'_>,
    items: &[StatusDataItemName],
    utf8: bool,
    max: usize,
    out: &mut Vec<u8>,
) -> Done {
    let name = match mailbox_name(mailbox, utf8, max) {
        Ok(n) => n,
        Err(d) => return d,
    };
    let row = match mailboxes::get(store, user.id, &name).await {
        Ok(Some(r)) => r,
        Ok(None) => return Done::no("No such mailbox").code("NONEXISTENT"),
        Err(e) => return e.into(),
    };
    let (messages, unseen, size) = match mailboxes::counts(store, row.id).await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    let mut parts = Vec::new();
    for item in items {
        let part = match item {
            StatusDataItemName::Messages => format!("MESSAGES {messages}"),
            StatusDataItemName::Recent => {
                let n = match mailboxes::recent_count(store, row.id).await {
                    Ok(n) => n,
                    Err(e) => return e.into(),
                };
                format!("RECENT {n}")
            }
            StatusDataItemName::UidNext => format!("UIDNEXT {}", row.uidnext),
            StatusDataItemName::UidValidity => format!("UIDVALIDITY {}", row.uidvalidity),
            StatusDataItemName::Unseen => format!("UNSEEN {unseen}"),
            StatusDataItemName::Size => format!("SIZE {size}"),
            StatusDataItemName::HighestModSeq => format!("HIGHESTMODSEQ {}", row.highestmodseq),
            _ => return Done::bad("Unknown STATUS item"),
        };
        parts.push(part);
    }
    out.extend_from_slice(b"* STATUS ");
    wire::astring(out, &names::to_client(&row.name, utf8));
    out.extend_from_slice(format!(" ({})\r\n", parts.join(" ")).as_bytes());
    Done::ok("Status completed")
}
