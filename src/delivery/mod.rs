//! Delivery: where accepted mail goes once the SMTP server has taken it, in one
//! transaction per message, committed before the server answers 250.
//!
//! - Mail for a local user is converted to LNMP content, sealed to the user, signed by
//!   the sender's key (a legacy sender's is derived from the master key and their
//!   address), and committed to the embedded relay's store, the user's LNMP inbox and
//!   a mailbox (INBOX or Junk) at once. Live relay subscribers hear of it after commit.
//!   With the embedded relay turned off, the copy is queued in the relay outbox for
//!   the relay the users publish instead.
//! - Mail from a user is signed with the user's custodial key and sealed once to the
//!   LNMP recipients named in To and Cc, and apart to each Bcc recipient; copies for
//!   local users are filed as above, copies for relays elsewhere queued in the relay
//!   outbox.
//! - Mail from a user to any other address is queued for outbound SMTP.
//!
//! Attachment blobs are written to the blob store before the transaction, so a
//! committed message never names a missing blob.

use crate::blob::BlobStore;
use crate::convert::{self, ConvertOptions, Converted, Origin};
use crate::custody::{Custody, UserInfo};
use crate::lnmp::{Draft, Identity, Kind, Message, Priority, PublicKey};
use crate::relay::outbox::Outbox;
use crate::relay::server::Relay;
use crate::store::{self, Store};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Convert(#[from] convert::ConvertError),
    #[error("cannot seal the message: {0}")]
    Seal(#[from] crate::lnmp::Error),
    #[error(transparent)]
    Blob(#[from] crate::blob::BlobError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Custody(#[from] crate::custody::CustodyError),
}

/// Where one recipient of a message goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// A user of this domain.
    Local(UserInfo),
    /// An LNMP address elsewhere, looked up and checked: its key and relays.
    Lnmp {
        pubkey: PublicKey,
        relays: Vec<String>,
    },
    /// An email address outside LNMP.
    Email(String),
    /// A reply address of ours: the answer goes back over LNMP (see outbound/).
    Reply(crate::store::reply_routes::ReplyRoute),
}

/// Who is told that mail could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTo {
    /// A user of this domain, in their INBOX.
    User(i64),
    /// An LNMP key: a local user's, or one elsewhere reached through these relays.
    Key {
        key: String,
        relays: Vec<String>,
    },
    Nobody,
}

/// A message from the email world, as the MX accepted it.
pub struct BridgedMail<'a> {
    /// The message as stored: our Received header, then the bytes as received.
    pub raw: &'a [u8],
    /// The envelope sender; empty for the null sender.
    pub mail_from: &'a str,
    /// Whose derived identity signs the LNMP message: the envelope sender, else the
    /// From address.
    pub sender: &'a str,
    pub authentication_results: Option<String>,
    /// Local recipients with the mailbox each copy is filed in.
    pub recipients: Vec<(UserInfo, &'static str)>,
    /// LNMP keys elsewhere, with the relays to publish to.
    pub remote: Vec<(PublicKey, Vec<String>)>,
    /// The failures this mail reports, marked so in the same commit.
    pub reported: Vec<Reported>,
    /// Local recipients who have it held until it is paid for: filed in Requests, kept
    /// out of the relay's store, with a held row and its invoice.
    pub holds: Vec<Hold>,
}

/// A copy held for one user until it is paid for.
#[derive(Debug, Clone)]
pub struct Hold {
    pub user: UserInfo,
    /// The key a payment is kept under: the sender and the body's hash.
    pub sender: String,
    pub body_hash: String,
    pub amount_msat: i64,
    /// Names the pay page.
    pub token: String,
    /// When the hold window ends.
    pub expires_at: i64,
    pub invoice: crate::lightning::Invoice,
}

impl<'a> BridgedMail<'a> {
    /// A report (DSN) from `sender`, our MAILER-DAEMON, about `reported`; its
    /// recipient is chosen by [`Courier::deliver_report`].
    pub fn report(raw: &'a [u8], sender: &'a str, reported: Vec<Reported>) -> BridgedMail<'a> {
        BridgedMail {
            raw,
            mail_from: "",
            sender,
            authentication_results: None,
            recipients: Vec::new(),
            remote: Vec::new(),
            reported,
            holds: Vec::new(),
        }
    }
}

/// A failure a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// A recipient of the outbound (SMTP) queue.
    Outbound(i64),
    /// A message of the relay outbox.
    Outbox(i64),
}

/// What the courier needs from the config.
#[derive(Debug, Clone)]
pub struct CourierSettings {
    pub convert: ConvertOptions,
    /// How long the embedded relay keeps a message.
    pub retention: Duration,
    /// How long outbound mail is retried.
    pub outbound_lifetime: Duration,
}

impl CourierSettings {
    pub fn from_config(c: &crate::config::Config) -> CourierSettings {
        CourierSettings {
            convert: ConvertOptions {
                max_inline_raw: c.smtp.max_inline_raw_bytes,
                max_parts: c.smtp.max_mime_parts,
                ..ConvertOptions::default()
            },
            retention: Duration::from_secs(u64::from(c.relay.retention_days) * 86_400),
            outbound_lifetime: Duration::from_secs(c.outbound.lifetime_hours * 3600),
        }
    }
}

pub struct Courier {
    custody: Custody,
    blobs: BlobStore,
    relay: Option<Arc<Relay>>,
    outbox: Arc<Outbox>,
    settings: CourierSettings,
}

/// A sealed message for local users, each with the mailbox their copy is filed in.
struct LocalCopy {
    users: Vec<(i64, &'static str)>,
    message: Message,
    json: String,
    /// Held until paid for: not in the relay's store, not announced to subscribers.
    hold: Option<Hold>,
}

impl Courier {
    pub fn new(
        custody: Custody,
        blobs: BlobStore,
        relay: Option<Arc<Relay>>,
        outbox: Arc<Outbox>,
        settings: CourierSettings,
    ) -> Courier {
        Courier {
            custody,
            blobs,
            relay,
            outbox,
            settings,
        }
    }

    pub fn custody(&self) -> &Custody {
        &self.custody
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    fn store(&self) -> &Store {
        self.custody.store()
    }

    async fn store_blobs(&self, converted: &mut Converted) -> Result<(), DeliveryError> {
        for b in std::mem::take(&mut converted.blobs) {
            self.blobs.put(b.bytes).await?;
        }
        Ok(())
    }

    fn seal(
        sender: &Identity,
        to: Vec<PublicKey>,
        content: &crate::lnmp::MessageContent,
        relays: Vec<String>,
    ) -> Result<Message, DeliveryError> {
        let draft = Draft {
            to,
            kind: Kind::Text,
            timestamp: store::unix_now(),
            content: content.clone(),
            relays,
            expiry: None,
            priority: Priority::Normal,
        };
        Ok(Message::seal(sender, &draft, &mut rand_core::OsRng)?)
    }

    /// Delivers mail from the email world to local users. Returns the LNMP ids, one per
    /// recipient, once everything is committed.
    pub async fn deliver_bridged(
        &self,
        mail: BridgedMail<'_>,
    ) -> Result<Vec<String>, DeliveryError> {
        let origin = Origin::Bridged {
            authentication_results: mail.authentication_results.clone(),
            // Empty for the null sender, as docs/PROTOCOL.md §6.7 says.
            mail_from: Some(mail.mail_from.to_owned()),
        };
        let mut converted = convert::from_mime(mail.raw, origin, &self.settings.convert)?;
        self.store_blobs(&mut converted).await?;
        let sender_address = mail.sender.to_ascii_lowercase();
        let sender = self.custody.legacy_identity(&sender_address);
        let mut batch = Batch {
            size: mail.raw.len() as i64,
            legacy_sender: Some((sender.public_key().to_hex(), sender_address)),
            reported: mail.reported.clone(),
            ..Batch::default()
        };
        for (user, mailbox) in &mail.recipients {
            let message = Self::seal(
                &sender,
                vec![user.pubkey],
                &converted.content,
                vec![self.custody.relay_url().to_owned()],
            )?;
            self.add(&mut batch, message, vec![(user.id, *mailbox)], Vec::new());
        }
        for hold in &mail.holds {
            let message = Self::seal(
                &sender,
                vec![hold.user.pubkey],
                &converted.content,
                vec![self.custody.relay_url().to_owned()],
            )?;
            let json = message.to_json();
            batch.copies.push(LocalCopy {
                users: vec![(hold.user.id, "Requests")],
                message,
                json,
                hold: Some(hold.clone()),
            });
        }
        // An email sender's answer that no relay takes comes back to them as a DSN.
        if !mail.mail_from.is_empty() && mail.reported.is_empty() && !mail.remote.is_empty() {
            batch.outbox_report = Some(store::outbox::FailureReport {
                sender: store::outbox::Sender::Email(mail.mail_from.to_owned()),
                recipients: Vec::new(),
                headers: header_section(mail.raw),
            });
        }
        for (key, relays) in &mail.remote {
            let message = Self::seal(
                &sender,
                vec![*key],
                &converted.content,
                vec![self.custody.relay_url().to_owned()],
            )?;
            self.add(&mut batch, message, Vec::new(), relays.clone());
        }
        self.commit(batch).await
    }

    /// Delivers a report (a DSN, as mail from the email world) to `to`; false when
    /// there is nobody to deliver it to, so the caller marks it done.
    pub async fn deliver_report(
        &self,
        mut mail: BridgedMail<'_>,
        to: ReportTo,
    ) -> Result<bool, DeliveryError> {
        match to {
            ReportTo::Nobody => return Ok(false),
            ReportTo::User(id) => match store::users::get_by_id(self.store(), id).await? {
                Some(row) => mail
                    .recipients
                    .push((self.custody.user(&row.username).await?, "INBOX")),
                None => return Ok(false),
            },
            ReportTo::Key { key, relays } => {
                match store::users::get_by_pubkey(self.store(), &key).await? {
                    Some(row) => mail
                        .recipients
                        .push((self.custody.user(&row.username).await?, "INBOX")),
                    None => {
                        let Ok(pubkey) = key.parse::<PublicKey>() else {
                            return Ok(false);
                        };
                        if relays.is_empty() {
                            return Ok(false);
                        }
                        mail.remote.push((pubkey, relays));
                    }
                }
            }
        }
        self.deliver_bridged(mail).await?;
        Ok(true)
    }

    /// Delivers mail a user submitted: local users get it in their inbox, LNMP
    /// addresses elsewhere through the relay outbox, email addresses through the
    /// outbound queue, all committed in one transaction. `routes` pairs each RCPT
    /// address with where it goes.
    ///
    /// The LNMP recipients named in To or Cc share one message, as they share one email
    /// (one id to reply to and thread on); every other recipient (Bcc) gets a message of
    /// its own, so no Bcc recipient's key is shown to anyone.
    pub async fn submit(
        &self,
        user: &UserInfo,
        mail_from: &str,
        raw: &[u8],
        routes: &[(String, Route)],
    ) -> Result<(), DeliveryError> {
        let mut batch = Batch {
            size: raw.len() as i64,
            ..Batch::default()
        };
        // A message no relay takes comes back to the user as a DSN.
        batch.outbox_report = Some(store::outbox::FailureReport {
            sender: store::outbox::Sender::User(user.id),
            recipients: routes
                .iter()
                .filter(|(_, r)| matches!(r, Route::Lnmp { .. }))
                .map(|(a, _)| a.clone())
                .collect(),
            headers: header_section(&without_bcc(raw)),
        });
        let lnmp: Vec<&(String, Route)> = routes
            .iter()
            .filter(|(_, r)| !matches!(r, Route::Email(_) | Route::Reply(_)))
            .collect();
        if !lnmp.is_empty() {
            let mut converted = convert::from_mime(raw, Origin::Native, &self.settings.convert)?;
            self.store_blobs(&mut converted).await?;
            let identity = self.custody.identity(&user.username).await?;
            let s = &converted.summary;
            let named: Vec<String> =
                s.to.iter()
                    .chain(&s.cc)
                    .map(|a| a.to_ascii_lowercase())
                    .collect();
            let (shown, hidden): (Vec<_>, Vec<_>) = lnmp
                .into_iter()
                .partition(|(rcpt, _)| named.contains(&rcpt.to_ascii_lowercase()));
            let mut groups: Vec<Vec<&Route>> = hidden.into_iter().map(|(_, r)| vec![r]).collect();
            if !shown.is_empty() {
                groups.insert(0, shown.into_iter().map(|(_, r)| r).collect());
            }
            for group in groups {
                let mut keys: Vec<PublicKey> = Vec::new();
                let mut locals: Vec<(i64, &'static str)> = Vec::new();
                let mut remote_relays: Vec<String> = Vec::new();
                for r in group {
                    let key = match r {
                        Route::Local(to) => {
                            if !locals.iter().any(|(id, _)| *id == to.id) {
                                locals.push((to.id, "INBOX"));
                            }
                            to.pubkey
                        }
                        Route::Lnmp { pubkey, relays, .. } => {
                            union(&mut remote_relays, relays);
                            *pubkey
                        }
                        Route::Email(_) | Route::Reply(_) => continue,
                    };
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
                let mut hint = remote_relays.clone();
                if !locals.is_empty() {
                    union(&mut hint, &[self.custody.relay_url().to_owned()]);
                }
                let message = Self::seal(&identity, keys, &converted.content, hint)?;
                self.add(&mut batch, message, locals, remote_relays);
            }
        }
        let emails: Vec<String> = routes
            .iter()
            .filter_map(|(_, r)| match r {
                Route::Email(a) => Some(a.clone()),
                _ => None,
            })
            .collect();
        let mut sent_raw = None;
        if !emails.is_empty() {
            let now = store::now();
            // A client may leave Bcc in the header; the recipients must not see it.
            let completed = self.completed(&without_bcc(raw));
            sent_raw = Some(completed.clone());
            batch.outbound = Some(store::outbound::NewOutbound {
                user_id: Some(user.id),
                mail_from: mail_from.to_owned(),
                recipients: emails,
                raw: completed,
                created_at: now,
                expires_at: now.saturating_add(self.settings.outbound_lifetime.as_secs() as i64),
                origin: store::outbound::Origin::Submission,
            });
        }
        let message_id = crate::outbound::headers::field_values(
            sent_raw.as_deref().unwrap_or(raw),
            "Message-ID",
        )
        .first()
        .map(|v| {
            v.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
        .filter(|v| !v.is_empty());
        batch.sent = Some((
            user.id,
            routes.iter().map(|(a, _)| a.to_ascii_lowercase()).collect(),
            message_id,
        ));
        self.commit(batch).await.map(|_| ())
    }

    /// The message with the Message-ID and Date RFC 5322 requires, added when the
    /// client left them out (as Postfix does for submissions): a receiver adding
    /// them later would break our DKIM signature, which signs their absence.
    fn completed(&self, raw: &[u8]) -> Vec<u8> {
        use crate::outbound::headers;
        let mut fields = Vec::new();
        if headers::field_values(raw, "Message-ID").is_empty() {
            let mut id = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
            fields.push(format!(
                "Message-ID: <{}@{}>",
                hex::encode(id),
                self.custody.domain()
            ));
        }
        if headers::field_values(raw, "Date").is_empty() {
            fields.push(format!(
                "Date: {}",
                mail_builder::headers::date::Date::new(store::now()).to_rfc822()
            ));
        }
        if fields.is_empty() {
            raw.to_vec()
        } else {
            headers::prepend_fields(raw, &fields)
        }
    }

    /// Adds a sealed message to `batch`: filed for `locals`, and queued in the relay
    /// outbox for `relays` — plus the users' own relay when it is not embedded.
    fn add(
        &self,
        batch: &mut Batch,
        message: Message,
        locals: Vec<(i64, &'static str)>,
        mut relays: Vec<String>,
    ) {
        let json = message.to_json();
        if !locals.is_empty() && self.relay.is_none() {
            union(&mut relays, &[self.custody.relay_url().to_owned()]);
        }
        if !relays.is_empty() {
            let expires_at = self.outbox.lifetime_end(&message);
            batch
                .outbox
                .push((message.id.to_hex(), json.clone(), relays, expires_at));
        }
        if !locals.is_empty() {
            batch.copies.push(LocalCopy {
                users: locals,
                message,
                json,
                hold: None,
            });
        }
    }

    /// Commits everything of one SMTP transaction at once, then tells live relay
    /// subscribers and wakes the outbox. Returns the ids of the local copies.
    async fn commit(&self, batch: Batch) -> Result<Vec<String>, DeliveryError> {
        let embedded = self.relay.is_some();
        let retention = self.settings.retention.as_secs() as i64;
        let batch = Arc::new(batch);
        let committed = batch.clone();
        self.store()
            .write(Box::new(move |c| {
                Box::pin(async move {
                    let b = &*committed;
                    let now = store::now();
                    if let Some((key, address)) = &b.legacy_sender {
                        store::legacy::remember_in(c, key, address, now).await?;
                    }
                    for copy in &b.copies {
                        let retention = (embedded && copy.hold.is_none()).then_some(retention);
                        file_local(c, copy, now, retention).await?;
                        if let Some(h) = &copy.hold {
                            hold_in(c, h, &copy.message.id.to_hex()).await?;
                        }
                    }
                    if let Some((user_id, recipients, message_id)) = &b.sent {
                        store::correspondents::record_in(
                            c,
                            *user_id,
                            recipients,
                            message_id.as_deref(),
                            now,
                        )
                        .await?;
                    }
                    // Mailbox rows are locked to take UIDs; taking them in one order in
                    // every transaction keeps concurrent deliveries from deadlocking.
                    let mut filings: Vec<(i64, &'static str, String)> = b
                        .copies
                        .iter()
                        .flat_map(|c| {
                            let id = c.message.id.to_hex();
                            c.users.iter().map(move |(u, m)| (*u, *m, id.clone()))
                        })
                        .collect();
                    filings.sort();
                    for (user_id, mailbox, message_id) in filings {
                        let mail = store::mail::NewMail {
                            message_id,
                            internal_date: now,
                            size: b.size,
                            flags: String::new(),
                        };
                        store::mail::file_in(c, user_id, mailbox, &mail).await?;
                    }
                    for (id, json, relays, expires_at) in &b.outbox {
                        store::outbox::enqueue_in(
                            c,
                            id,
                            json,
                            relays,
                            *expires_at,
                            b.outbox_report.as_ref(),
                        )
                        .await?;
                    }
                    if let Some(o) = &b.outbound {
                        store::outbound::enqueue_in(c, o).await?;
                    }
                    for r in &b.reported {
                        match r {
                            Reported::Outbound(id) => {
                                store::outbound::mark_reported_in(c, &[*id]).await?
                            }
                            Reported::Outbox(id) => store::outbox::mark_reported_in(c, *id).await?,
                        }
                    }
                    Ok(())
                })
            }))
            .await?;
        if !batch.outbox.is_empty() {
            self.outbox.wake();
        }
        if batch.outbound.is_some() {
            self.store().work_queued();
        }
        let mut users: Vec<i64> = batch
            .copies
            .iter()
            .flat_map(|c| c.users.iter().map(|(u, _)| *u))
            .collect();
        users.sort_unstable();
        users.dedup();
        for user in users {
            self.store().mail_changed(user).await;
        }
        Ok(batch
            .copies
            .iter()
            .map(|c| {
                if let Some(relay) = &self.relay
                    && c.hold.is_none()
                {
                    relay.announce(c.message.clone(), c.json.clone());
                }
                c.message.id.to_hex()
            })
            .collect())
    }
}

/// The message with every Bcc header field (and its folded lines) taken out of the
/// header section; the body is untouched.
fn without_bcc(raw: &[u8]) -> Vec<u8> {
    crate::outbound::headers::remove_fields(raw, &["Bcc"])
}

/// The header section of a message (through its blank line), for a report.
fn header_section(raw: &[u8]) -> Vec<u8> {
    raw[..crate::outbound::headers::body_start(raw)].to_vec()
}

/// Adds the URLs of `more` missing from `into`.
fn union(into: &mut Vec<String>, more: &[String]) {
    for u in more {
        if !into.contains(u) {
            into.push(u.clone());
        }
    }
}

/// What one SMTP transaction commits.
#[derive(Default)]
struct Batch {
    /// The stored size of the message, for the mailbox rows.
    size: i64,
    /// A legacy sender's derived key and address, remembered for replies.
    legacy_sender: Option<(String, String)>,
    copies: Vec<LocalCopy>,
    /// (message id, JSON, relays, expiry) for the relay outbox.
    outbox: Vec<(String, String, Vec<String>, i64)>,
    /// Who hears of it if the relay outbox cannot publish them.
    outbox_report: Option<store::outbox::FailureReport>,
    outbound: Option<store::outbound::NewOutbound>,
    /// The failures this batch reports.
    reported: Vec<Reported>,
    /// A user's submission: (user, recipients, Message-ID), remembered so that mail
    /// from those people and answers to it pass the paywall.
    sent: Option<(i64, Vec<String>, Option<String>)>,
}

/// Records a held copy and its invoice, in the transaction that files it.
async fn hold_in(c: &mut sqlx::AnyConnection, h: &Hold, message_id: &str) -> store::Result<()> {
    let held_id = store::held::insert_in(
        c,
        &store::held::NewHeld {
            user_id: h.user.id,
            message_id: message_id.to_owned(),
            sender: h.sender.clone(),
            body_hash: h.body_hash.clone(),
            amount_msat: h.amount_msat,
            token: h.token.clone(),
            expires_at: h.expires_at,
        },
    )
    .await?;
    store::invoices::insert_in(
        c,
        &store::invoices::NewInvoice {
            payment_hash: hex::encode(h.invoice.payment_hash),
            bolt11: h.invoice.bolt11.clone(),
            amount_msat: i64::try_from(h.invoice.amount_msat).unwrap_or(i64::MAX),
            purpose: store::invoices::Purpose::Held,
            user_id: Some(h.user.id),
            held_id: Some(held_id),
            message_id: None,
            shares: Vec::new(),
            expires_at: h.invoice.expires_at,
        },
    )
    .await?;
    Ok(())
}

/// Commits one local copy to the embedded relay's store (which files the users' LNMP
/// inbox rows too) or, with the relay elsewhere, to the inbox rows alone. `retention`
/// is the embedded relay's, None when it is off.
async fn file_local(
    c: &mut sqlx::AnyConnection,
    copy: &LocalCopy,
    now: i64,
    retention: Option<i64>,
) -> store::Result<()> {
    let user_ids: Vec<i64> = copy.users.iter().map(|(id, _)| *id).collect();
    match retention {
        Some(retention) => {
            let incoming = store::relay::Incoming {
                message: copy.message.clone(),
                json: copy.json.clone(),
                received_at: now,
                expires_at: now.saturating_add(retention),
                local_recipients: user_ids,
                legacy_recipients: Vec::new(),
                file_in_inbox: false,
                redeem: None,
            };
            store::relay::insert_in(c, &incoming).await?;
        }
        None => {
            for id in &user_ids {
                store::inbox::insert_in(c, *id, &copy.message, &copy.json, now, false).await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::without_bcc;

    #[test]
    fn bcc_fields_leave_the_header_and_nothing_else_changes() {
        let raw = b"From: a@x\r\nBcc: secret@y,\r\n  other@z\r\nTo: b@x\r\nBCC: s2@y\r\n\r\nBcc: in the body stays\r\n";
        assert_eq!(
            without_bcc(raw),
            b"From: a@x\r\nTo: b@x\r\n\r\nBcc: in the body stays\r\n".to_vec()
        );
        let plain = b"From: a@x\r\n\r\nbody\r\n";
        assert_eq!(without_bcc(plain), plain.to_vec());
    }
}
