//! LNMP messages made email. Two kinds of job (store::bridge_out):
//!
//! - **Forward**: a message reached a user's INBOX and the user forwards. The copy is
//!   what their mail client shows (bridged mail byte for byte, native mail rendered),
//!   with From and Reply-To set to a reply address of our domain (so DMARC passes at
//!   the receiver, and an answer comes back to us) and the original sender in the
//!   display name. Bounces, reports and mail past the hop limit are not forwarded.
//! - **Legacy**: an LNMP message to the derived key of an email sender. It is opened
//!   with that key, rendered as MIME threaded onto the email it answers, and queued
//!   for the sender's address; a local user writes from their own address, anyone
//!   else from a reply address that routes the answer back.
//!
//! Each job's email is queued in the same transaction that marks the job done.

use super::{Settings, headers};
use crate::blob::BlobStore;
use crate::convert::{self, Envelope};
use crate::custody::Custody;
use crate::delivery::Courier;
use crate::imap::message::Loader;
use crate::lnmp::{Limits, Message, MessageContent};
use crate::store::bridge_out::{self, Job, JobKind};
use crate::store::reply_routes::{Replier, ReplyRoute};
use crate::store::{self, Store, outbound};

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Custody(#[from] crate::custody::CustodyError),
    /// The job cannot be done, ever (its message is gone or unreadable).
    #[error("{0}")]
    Unworkable(String),
}

/// Tries at a job that keeps failing for local reasons (storage, custody).
const MAX_ATTEMPTS: i64 = 20;

pub struct Bridge {
    custody: Custody,
    blobs: BlobStore,
    settings: Settings,
}

/// What a job comes to.
enum Done {
    Queued {
        outbound: Box<outbound::NewOutbound>,
        route: Option<ReplyRoute>,
        detail: String,
        /// A user here wrote it: (user id, recipient, Message-ID), remembered so the
        /// recipient's answers pass the paywall.
        sent: Option<(i64, String, String)>,
    },
    Skipped(String),
}

impl Bridge {
    pub fn new(custody: Custody, blobs: BlobStore, settings: Settings) -> Bridge {
        Bridge {
            custody,
            blobs,
            settings,
        }
    }

    fn store(&self) -> &Store {
        self.custody.store()
    }

    fn reply_address(&self, token: &str) -> String {
        format!(
            "{}+{token}@{}",
            self.settings.reply_local_part, self.settings.domain
        )
    }

    /// Works the jobs that are due.
    pub async fn run_due(&self, _courier: &Courier) -> Result<(), BridgeError> {
        let jobs = bridge_out::claim_due(self.store(), store::now(), 600, 50).await?;
        for job in jobs {
            let result = match &job.kind {
                JobKind::Forward { user_id } => self.forward(*user_id, &job).await,
                JobKind::Legacy { key } => self.legacy(key, &job).await,
            };
            match result {
                Ok(Done::Queued {
                    outbound,
                    route,
                    detail,
                    sent,
                }) => {
                    let claimed = job.clone();
                    self.store()
                        .write(Box::new(move |c| {
                            Box::pin(async move {
                                if let Some(r) = &route {
                                    store::reply_routes::remember_in(c, r, store::now()).await?;
                                }
                                if let Some((user, to, message_id)) = &sent {
                                    store::correspondents::record_in(
                                        c,
                                        *user,
                                        std::slice::from_ref(to),
                                        Some(message_id),
                                        store::now(),
                                    )
                                    .await?;
                                }
                                outbound::enqueue_in(c, &outbound).await?;
                                bridge_out::finish_in(c, &claimed, "done", &detail).await
                            })
                        }))
                        .await?;
                    self.store().work_queued();
                }
                Ok(Done::Skipped(why)) => {
                    tracing::info!(message = %job.message_id, why, "not sent as email");
                    bridge_out::finish(self.store(), &job, "skipped", why).await?;
                }
                Err(BridgeError::Unworkable(why)) => {
                    tracing::warn!(message = %job.message_id, why, "cannot make email of an LNMP message");
                    bridge_out::finish(self.store(), &job, "failed", why).await?;
                }
                Err(e) if job.attempts >= MAX_ATTEMPTS => {
                    tracing::error!(message = %job.message_id, error = %e, "making email failed; giving up");
                    bridge_out::finish(self.store(), &job, "failed", e.to_string()).await?;
                }
                Err(e) => {
                    let at =
                        store::now() + self.settings.timing.backoff(job.attempts).as_secs() as i64;
                    tracing::warn!(message = %job.message_id, error = %e, "making email failed; retrying");
                    bridge_out::retry(self.store(), &job, at, e.to_string()).await?;
                }
            }
        }
        Ok(())
    }

    fn outbound(
        &self,
        user_id: Option<i64>,
        mail_from: String,
        to: String,
        raw: Vec<u8>,
        origin: outbound::Origin,
    ) -> Box<outbound::NewOutbound> {
        let now = store::now();
        Box::new(outbound::NewOutbound {
            user_id,
            mail_from,
            recipients: vec![to],
            raw,
            created_at: now,
            expires_at: now.saturating_add(self.settings.timing.lifetime.as_secs() as i64),
            origin,
        })
    }

    async fn forward(&self, user_id: i64, job: &Job) -> Result<Done, BridgeError> {
        let Some(row) = store::users::get_by_id(self.store(), user_id).await? else {
            return Ok(Done::Skipped("the user is gone".into()));
        };
        let Some(forward_to) = row.forward_to.clone() else {
            return Ok(Done::Skipped("forwarding is off".into()));
        };
        let user = self.custody.user(&row.username).await?;
        let json = match store::mail::body(self.store(), user_id, &job.message_id).await? {
            Some(store::mail::Body::Lnmp(json)) => json,
            _ => return Err(BridgeError::Unworkable("the message is gone".into())),
        };
        let limits = Limits::default();
        let message = Message::from_json(json.as_bytes(), &limits)
            .map_err(|e| BridgeError::Unworkable(e.to_string()))?;
        let identity = self.custody.identity(&user.username).await?;
        let content = message
            .open(&identity, &limits)
            .map_err(|e| BridgeError::Unworkable(e.to_string()))?;
        if content
            .email
            .as_ref()
            .is_some_and(|e| e.mail_from.as_deref() == Some(""))
        {
            return Ok(Done::Skipped(
                "a bounce (null sender) is not forwarded".into(),
            ));
        }
        let loader = Loader::new(
            self.custody.clone(),
            self.blobs.clone(),
            user.clone(),
            identity,
            1,
        );
        let raw = loader
            .render(&json)
            .await
            .map_err(|e| BridgeError::Unworkable(e.to_string()))?;
        if headers::is_report(&raw) {
            return Ok(Done::Skipped("a delivery report is not forwarded".into()));
        }
        let hops = headers::hop_count(&raw);
        if hops >= self.settings.max_hops {
            return Ok(Done::Skipped(format!("{hops} hops: a mail loop?")));
        }
        let sender = message.from.to_hex();
        let peer_address = self.address_of(&sender).await?;
        let original_from = headers::field_values(&raw, "From")
            .into_iter()
            .next()
            .unwrap_or_default();
        let display = display_of(&raw, &peer_address);
        let replier = Replier::User(user_id);
        let token = self.custody.reply_token(&replier, &sender);
        let reply = self.reply_address(&token);
        let mut fields = vec![
            headers::address_field("From", &display, &reply),
            headers::address_field("Reply-To", "", &reply),
        ];
        if !original_from.is_empty() {
            let shown: String = one_line(&original_from).chars().take(900).collect();
            fields.push(format!("X-Original-From: {shown}"));
        }
        fields.push(format!("X-LNMP-Hops: {}", hops + 1));
        let stripped = headers::remove_fields(
            &raw,
            &[
                "From",
                "Sender",
                "Reply-To",
                "Return-Path",
                "DKIM-Signature",
                "ARC-Seal",
                "ARC-Message-Signature",
                "ARC-Authentication-Results",
                "X-Original-From",
                "X-LNMP-Hops",
            ],
        );
        let out = headers::prepend_fields(&stripped, &fields);
        Ok(Done::Queued {
            outbound: self.outbound(
                Some(user_id),
                user.email.clone(),
                forward_to.clone(),
                out,
                outbound::Origin::Forward,
            ),
            route: Some(ReplyRoute {
                token,
                replier,
                peer_key: sender,
                peer_address,
                peer_relays: message.relays.clone(),
            }),
            detail: format!("forwarded to {forward_to}"),
            sent: None,
        })
    }

    /// The address a key is known by here: a local user's email address, an email
    /// sender's address; empty when unknown.
    async fn address_of(&self, key: &str) -> Result<String, BridgeError> {
        if let Some(row) = store::users::get_by_pubkey(self.store(), key).await? {
            return Ok(format!("{}@{}", row.username, self.settings.domain));
        }
        Ok(store::legacy::address_of(self.store(), key)
            .await?
            .unwrap_or_default())
    }

    async fn legacy(&self, key: &str, job: &Job) -> Result<Done, BridgeError> {
        let Some(address) = store::legacy::address_of(self.store(), key).await? else {
            return Err(BridgeError::Unworkable(format!(
                "no email sender has the key {key}"
            )));
        };
        let Some(json) = store::relay::body(self.store(), &job.message_id).await? else {
            return Err(BridgeError::Unworkable("the message is gone".into()));
        };
        let limits = Limits::default();
        let message = Message::from_json(json.as_bytes(), &limits)
            .map_err(|e| BridgeError::Unworkable(e.to_string()))?;
        if message.verify().is_err() {
            return Err(BridgeError::Unworkable(
                "the signature does not verify".into(),
            ));
        }
        let identity = self.custody.legacy_identity(&address);
        let mut content = message
            .open(&identity, &limits)
            .map_err(|e| BridgeError::Unworkable(e.to_string()))?;
        let sender = message.from.to_hex();
        let writer = store::users::get_by_pubkey(self.store(), &sender).await?;
        let (from, mail_from, route) = match &writer {
            Some(row) => {
                let email = format!("{}@{}", row.username, self.settings.domain);
                ((String::new(), email.clone()), email, None)
            }
            None => {
                let replier = Replier::Legacy(address.clone());
                let token = self.custody.reply_token(&replier, &sender);
                let reply = self.reply_address(&token);
                let display = format!("LNMP {}", &sender[..16]);
                (
                    (display, reply.clone()),
                    reply,
                    Some(ReplyRoute {
                        token,
                        replier,
                        peer_key: sender.clone(),
                        peer_address: String::new(),
                        peer_relays: message.relays.clone(),
                    }),
                )
            }
        };
        self.thread_onto_email(&mut content, &identity).await?;
        let mut files = Vec::with_capacity(content.attachments.len());
        for a in &content.attachments {
            files.push(self.blobs.open(a).await.ok().flatten());
        }
        let id = message.id.to_hex();
        let envelope = Envelope {
            from,
            to: vec![(String::new(), address.clone())],
            date: i64::try_from(message.timestamp).unwrap_or(i64::MAX),
            message_id: format!("{id}@{}", convert::threading::LNMP_ID_DOMAIN),
            extra_headers: vec![("X-LNMP-Id".into(), id.clone())],
        };
        content.email = None;
        let raw = convert::to_mime(&content, &envelope, &files)
            .map_err(|e| BridgeError::Unworkable(e.to_string()))?;
        let sent = writer.map(|row| (row.id, address.clone(), envelope.message_id.clone()));
        Ok(Done::Queued {
            sent,
            outbound: self.outbound(
                None,
                mail_from,
                address.clone(),
                raw,
                outbound::Origin::Lnmp {
                    sender,
                    message_id: id,
                    relays: message.relays.clone(),
                },
            ),
            route,
            detail: format!("sent as email to {address}"),
        })
    }

    /// An LNMP answer names the LNMP id of the bridged email it answers; the email
    /// world knows that email by its Message-ID. The bridged copy was sealed by the
    /// email sender's derived key, which can open it again.
    async fn thread_onto_email(
        &self,
        content: &mut MessageContent,
        identity: &crate::lnmp::Identity,
    ) -> Result<(), BridgeError> {
        let Some(answered) = content.reply_to.clone() else {
            return Ok(());
        };
        if answered.starts_with('<') {
            return Ok(());
        }
        let json = match store::relay::body(self.store(), &answered).await? {
            Some(j) => Some(j),
            None => store::inbox::any_body(self.store(), &answered).await?,
        };
        let Some(json) = json else { return Ok(()) };
        let limits = Limits::default();
        let Ok(original) = Message::from_json(json.as_bytes(), &limits) else {
            return Ok(());
        };
        let Ok(opened) = original.open(identity, &limits) else {
            return Ok(());
        };
        let Some(email) = opened.email else {
            return Ok(());
        };
        let Ok(Some(raw)) = self.blobs.raw_email(&email.raw).await else {
            return Ok(());
        };
        if let Some(id) = headers::field_values(&raw, "Message-ID").into_iter().next() {
            let id = id.trim().to_owned();
            let first = headers::field_values(&raw, "References")
                .into_iter()
                .next()
                .and_then(|r| r.split_whitespace().next().map(str::to_owned));
            content.reply_to = Some(convert::threading::to_message_id(&id));
            content.thread_id = Some(convert::threading::to_message_id(
                first.as_deref().unwrap_or(&id),
            ));
        }
        Ok(())
    }
}

/// A header value on one line, for copying into a field of ours.
fn one_line(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The display name of a forwarded copy: the original sender's name and address as
/// text, e.g. `Bob Smith (bob@example.org)`.
fn display_of(raw: &[u8], known_address: &str) -> String {
    let parsed = convert::parse_mail(raw);
    let from = parsed
        .as_ref()
        .and_then(|m| m.from())
        .and_then(|a| a.first());
    let name = from.and_then(|a| a.name()).unwrap_or("").trim().to_owned();
    let address = from
        .and_then(|a| a.address())
        .map(str::to_owned)
        .unwrap_or_else(|| known_address.to_owned());
    let text = match (name.is_empty(), address.is_empty()) {
        (false, false) => format!("{name} ({address})"),
        (true, false) => address,
        (false, true) => name,
        (true, true) => "unknown sender".into(),
    };
    one_line(&text)
}
