//! Delivery: where accepted mail goes once the SMTP server has taken it, in one
//! transaction per message, committed before the server answers 250.
//!
//! - Mail for a local user is converted to LNMP content, sealed to the user, signed by
//!   the sender's key (a legacy sender's is derived from the master key and their
//!   address), and committed to the embedded relay's store, the user's LNMP inbox and
//!   a mailbox (INBOX or Junk) at once. Live relay subscribers hear of it after commit.
//!   With the embedded relay turned off, the copy is queued in the relay outbox for
//!   the relay the users publish instead.
//! - Mail from a user to an LNMP address elsewhere is sealed to the recipient and the
//!   user, signed with the user's custodial key, and queued in the relay outbox.
//! - Mail from a user to any other address is queued for outbound SMTP.
//!
//! Attachment blobs are written to the blob store before the transaction, so a
//! committed message never names a missing blob.

use crate::blob::BlobStore;
use crate::convert::{self, ConvertOptions, Converted, Origin};
use crate::custody::{Custody, UserInfo};
use crate::lnmp::{Address, Draft, Identity, Kind, Message, Priority, PublicKey};
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
        address: Address,
        pubkey: PublicKey,
        relays: Vec<String>,
    },
    /// An email address outside LNMP.
    Email(String),
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
                ..ConvertOptions::default()
            },
            retention: Duration::from_secs(u64::from(c.relay.retention_days) * 86_400),
            outbound_lifetime: Duration::from_secs(5 * 86_400),
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

/// A sealed message for one local user, ready to commit.
struct LocalCopy {
    user_id: i64,
    mailbox: &'static str,
    message: Message,
    json: String,
}

fn unix_now() -> u64 {
    store::now().max(0) as u64
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
        to: PublicKey,
        content: &crate::lnmp::MessageContent,
        relays: Vec<String>,
    ) -> Result<Message, DeliveryError> {
        let draft = Draft {
            to: vec![to],
            kind: Kind::Text,
            timestamp: unix_now(),
            content: content.clone(),
            relays,
            expiry: None,
            priority: Priority::Normal,
        };
        Ok(Message::seal(sender, &draft, &mut rand_core::OsRng)?)
    }

    fn local_key(user: &UserInfo) -> Result<PublicKey, DeliveryError> {
        Ok(user.pubkey)
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
        let sender_key = sender.public_key().to_hex();
        let mut copies = Vec::new();
        for (user, mailbox) in &mail.recipients {
            let message = Self::seal(
                &sender,
                Self::local_key(user)?,
                &converted.content,
                vec![self.custody.relay_url().to_owned()],
            )?;
            let json = message.to_json();
            copies.push(LocalCopy {
                user_id: user.id,
                mailbox,
                message,
                json,
            });
        }
        let size = mail.raw.len() as i64;
        let relay = self.user_relay();
        let copies = Arc::new(copies);
        let committed = copies.clone();
        self.store()
            .write(Box::new(move |c| {
                Box::pin(async move {
                    let now = store::now();
                    store::legacy::remember_in(c, &sender_key, &sender_address, now).await?;
                    for copy in committed.iter() {
                        file_local(c, copy, size, now, &relay).await?;
                    }
                    Ok(())
                })
            }))
            .await?;
        Ok(self.announce(&copies))
    }

    fn user_relay(&self) -> UserRelay {
        match &self.relay {
            Some(_) => UserRelay::Embedded {
                retention: self.settings.retention.as_secs() as i64,
            },
            None => UserRelay::Remote {
                url: self.custody.relay_url().to_owned(),
                lifetime: self.settings.outbound_lifetime.as_secs() as i64,
            },
        }
    }

    /// Tells live relay subscribers about committed local copies (or wakes the outbox
    /// that carries them to the users' relay); returns their ids.
    fn announce(&self, copies: &[LocalCopy]) -> Vec<String> {
        if self.relay.is_none() && !copies.is_empty() {
            self.outbox.wake();
        }
        copies
            .iter()
            .map(|c| {
                if let Some(relay) = &self.relay {
                    relay.announce(c.message.clone(), c.json.clone());
                }
                c.message.id.to_hex()
            })
            .collect()
    }

    /// Delivers mail a user submitted: local users get it in their inbox, LNMP
    /// addresses elsewhere through the relay outbox, email addresses through the
    /// outbound queue, all committed in one transaction.
    pub async fn submit(
        &self,
        user: &UserInfo,
        mail_from: &str,
        raw: &[u8],
        routes: &[Route],
    ) -> Result<(), DeliveryError> {
        let needs_lnmp = routes.iter().any(|r| !matches!(r, Route::Email(_)));
        let mut remote = Vec::new();
        let mut copies = Vec::new();
        let mut emails = Vec::new();
        if needs_lnmp {
            let mut converted = convert::from_mime(raw, Origin::Native, &self.settings.convert)?;
            self.store_blobs(&mut converted).await?;
            let identity = self.custody.identity(&user.username).await?;
            // One message per recipient: a Bcc recipient's key is never shown to the others.
            for r in routes {
                match r {
                    Route::Local(to) => {
                        let message = Self::seal(
                            &identity,
                            Self::local_key(to)?,
                            &converted.content,
                            vec![self.custody.relay_url().to_owned()],
                        )?;
                        let json = message.to_json();
                        copies.push(LocalCopy {
                            user_id: to.id,
                            mailbox: "INBOX",
                            message,
                            json,
                        });
                    }
                    Route::Lnmp { pubkey, relays, .. } => {
                        let message =
                            Self::seal(&identity, *pubkey, &converted.content, relays.clone())?;
                        let expires_at = self.outbox.lifetime_end(&message);
                        let json = message.to_json();
                        remote.push((message.id.to_hex(), json, relays.clone(), expires_at));
                    }
                    Route::Email(_) => {}
                }
            }
        }
        for r in routes {
            if let Route::Email(a) = r {
                emails.push(a.clone());
            }
        }
        let outbound = (!emails.is_empty()).then(|| {
            let now = store::now();
            store::outbound::NewOutbound {
                user_id: Some(user.id),
                mail_from: mail_from.to_owned(),
                recipients: emails,
                raw: raw.to_vec(),
                created_at: now,
                expires_at: now.saturating_add(self.settings.outbound_lifetime.as_secs() as i64),
            }
        });
        let size = raw.len() as i64;
        let relay = self.user_relay();
        let copies = Arc::new(copies);
        let committed = copies.clone();
        let queued_remote = !remote.is_empty();
        self.store()
            .write(Box::new(move |c| {
                Box::pin(async move {
                    let now = store::now();
                    for copy in committed.iter() {
                        file_local(c, copy, size, now, &relay).await?;
                    }
                    for (id, json, relays, expires_at) in &remote {
                        store::outbox::enqueue_in(c, id, json, relays, *expires_at).await?;
                    }
                    if let Some(o) = &outbound {
                        store::outbound::enqueue_in(c, o).await?;
                    }
                    Ok(())
                })
            }))
            .await?;
        self.announce(&copies);
        if queued_remote {
            self.outbox.wake();
        }
        Ok(())
    }
}

/// How local copies reach the user's relay.
#[derive(Clone)]
enum UserRelay {
    /// The embedded relay: its store is in this database, committed with the copy.
    Embedded { retention: i64 },
    /// The relay is elsewhere (`relay.enabled = false`): the copy is queued in the
    /// relay outbox for it.
    Remote { url: String, lifetime: i64 },
}

/// Commits one local copy: the user's relay (its store, or the outbox for it), the
/// user's LNMP inbox, and the mailbox.
async fn file_local(
    c: &mut sqlx::AnyConnection,
    copy: &LocalCopy,
    size: i64,
    now: i64,
    relay: &UserRelay,
) -> store::Result<()> {
    match relay {
        UserRelay::Embedded { retention } => {
            let incoming = store::relay::Incoming {
                message: copy.message.clone(),
                json: copy.json.clone(),
                received_at: now,
                expires_at: now.saturating_add(*retention),
                local_recipients: vec![copy.user_id],
            };
            store::relay::insert_in(c, &incoming).await?;
        }
        UserRelay::Remote { url, lifetime } => {
            store::inbox::insert_in(c, copy.user_id, &copy.message, &copy.json, now).await?;
            let id = copy.message.id.to_hex();
            let relays = [url.clone()];
            store::outbox::enqueue_in(c, &id, &copy.json, &relays, now.saturating_add(*lifetime))
                .await?;
        }
    }
    store::mail::file_in(
        c,
        copy.user_id,
        copy.mailbox,
        &store::mail::NewMail {
            message_id: copy.message.id.to_hex(),
            internal_date: now,
            size,
            flags: String::new(),
        },
    )
    .await?;
    Ok(())
}
