//! Messages filed in mailboxes: the rows IMAP numbers with UIDs and MODSEQs. Each row
//! points at an LNMP message sealed to the mailbox's owner (kept in `inbox`), so the
//! mail store holds no plaintext.

use super::{Result, Store};
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
    Ok(uid)
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
