//! The bytes of a filed message as a mail client sees them: bridged mail exactly as it
//! arrived (its raw copy, inline in the sealed content or in the blob store), native
//! LNMP mail rendered as MIME, and mail the user stored themselves from the vault.
//! Each session keeps a few rendered messages at hand, since clients read one message
//! in many chunks.

use crate::blob::BlobStore;
use crate::custody::vault::MailVault;
use crate::custody::{Custody, UserInfo};
use crate::lnmp::{Identity, Limits, Message, PublicKey};
use crate::store::mail::{self, Body, MailRow};
use std::collections::VecDeque;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the message's body is gone")]
    Missing,
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("cannot open the message: {0}")]
    Open(String),
}

/// The most a session's cache of rendered messages holds, in bytes.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Opens and renders one user's messages.
pub struct Loader {
    custody: Custody,
    blobs: BlobStore,
    user: UserInfo,
    identity: Identity,
    vault: MailVault,
    /// By mail row, not by message: a held message's rendering changes when it is
    /// paid for and filed again.
    cache: VecDeque<(i64, Arc<Vec<u8>>)>,
    cache_len: usize,
    /// Sealed bodies read ahead of the client (see [`Loader::load`]).
    read_ahead: std::collections::HashMap<String, Body>,
}

/// How many messages past the one asked for are read ahead, and at most how many
/// bytes of them.
const READ_AHEAD: usize = 32;
const READ_AHEAD_BYTES: usize = 4 * 1024 * 1024;

impl Loader {
    pub fn new(
        custody: Custody,
        blobs: BlobStore,
        user: UserInfo,
        identity: Identity,
        cache_len: usize,
    ) -> Loader {
        let vault = MailVault::for_identity(&identity);
        Loader {
            custody,
            blobs,
            user,
            identity,
            vault,
            cache: VecDeque::new(),
            cache_len: cache_len.max(1),
            read_ahead: Default::default(),
        }
    }

    pub fn vault(&self) -> &MailVault {
        &self.vault
    }

    /// The message of `row`, as its client sees it. A row filed before its size was
    /// known gets it recorded now. `next` are the rows a client syncing in UID order
    /// asks for after this one: their sealed bodies are read in the same round trip,
    /// so a sync of thousands of messages does not wait on the database for each.
    pub async fn load(
        &mut self,
        row: &MailRow,
        next: &[MailRow],
    ) -> Result<Arc<Vec<u8>>, LoadError> {
        if let Some(pos) = self.cache.iter().position(|(id, _)| *id == row.id) {
            let hit = self.cache[pos].1.clone();
            return Ok(hit);
        }
        let store = self.custody.store().clone();
        let body = match self.read_ahead.remove(&row.message_id) {
            Some(body) => body,
            None => {
                self.read_ahead.clear();
                let mut ids = vec![row.message_id.clone()];
                let mut bytes = row.size.max(0);
                for r in next.iter().take(READ_AHEAD) {
                    bytes += r.size.max(0);
                    if bytes > READ_AHEAD_BYTES as i64 {
                        break;
                    }
                    ids.push(r.message_id.clone());
                }
                let mut found = if ids.len() == 1 {
                    mail::body(&store, self.user.id, &row.message_id)
                        .await?
                        .map(|b| [(row.message_id.clone(), b)].into_iter().collect())
                        .unwrap_or_default()
                } else {
                    mail::bodies(&store, self.user.id, &ids).await?
                };
                let body = found.remove(&row.message_id).ok_or(LoadError::Missing)?;
                self.read_ahead = found;
                body
            }
        };
        let bytes = match body {
            Body::Stored(sealed) => self
                .vault
                .open(&row.message_id, &sealed)
                .map_err(|e| LoadError::Open(e.to_string()))?
                .to_vec(),
            Body::Lnmp(json) => self.render(&json).await?,
        };
        let bytes = Arc::new(bytes);
        if row.size < 0 {
            let size = super::structure::ParsedMessage::parse(&bytes).rfc822_size();
            mail::set_size(&store, row.id, size as i64).await?;
        }
        // Kept by count and by bytes: a few large messages must not pin hundreds of
        // megabytes per connection.
        if bytes.len() <= CACHE_BYTES / 2 {
            while self.cache.len() >= self.cache_len
                || self.cache.iter().map(|(_, b)| b.len()).sum::<usize>() + bytes.len()
                    > CACHE_BYTES
            {
                if self.cache.pop_front().is_none() {
                    break;
                }
            }
            self.cache.push_back((row.id, bytes.clone()));
        }
        Ok(bytes)
    }

    /// An LNMP message of the user's as its client sees it: bridged mail's raw copy,
    /// native mail rendered (the forwarder sends the same bytes).
    pub async fn render(&self, json: &str) -> Result<Vec<u8>, LoadError> {
        let limits = Limits::default();
        let message = Message::from_json(json.as_bytes(), &limits)
            .map_err(|e| LoadError::Open(e.to_string()))?;
        let signature_ok = message.verify().is_ok();
        let content = message
            .open(&self.identity, &limits)
            .map_err(|e| LoadError::Open(e.to_string()))?;
        if let Some(email) = &content.email {
            let raw = self
                .blobs
                .raw_email(&email.raw)
                .await
                .map_err(|e| LoadError::Open(e.to_string()))?
                .ok_or(LoadError::Missing)?;
            let paid = message
                .payment
                .as_ref()
                .filter(|_| signature_ok)
                .map(|p| p.amount);
            return Ok(crate::convert::view::render_bridged(&raw, paid));
        }
        let mut files = Vec::with_capacity(content.attachments.len());
        for a in &content.attachments {
            files.push(self.file(a).await?);
        }
        let from_address = self.address_of(&message.from).await?;
        let mut to = Vec::new();
        for key in &message.to {
            to.push((String::new(), self.address_of(key).await?));
        }
        let view = crate::convert::NativeView {
            message: &message,
            content: &content,
            files: &files,
            from_address,
            to,
            signature_ok,
            paid_sats: message.payment.as_ref().map(|p| p.amount),
        };
        crate::convert::render_native(&view).map_err(|e| LoadError::Open(e.to_string()))
    }

    /// An attachment's bytes, or None when its blob is not here.
    async fn file(
        &self,
        file: &crate::lnmp::blob::FileAttachment,
    ) -> Result<Option<Vec<u8>>, LoadError> {
        self.blobs
            .open(file)
            .await
            .map_err(|e| LoadError::Open(e.to_string()))
    }

    /// The address a key is shown under, so a reply reaches it: a local user's LNMP
    /// address, the email address of a sender the MX gave an identity, the address of
    /// a contact with this key, or failing those the bare key.
    async fn address_of(&self, key: &PublicKey) -> Result<String, LoadError> {
        let store = self.custody.store();
        let hex = key.to_hex();
        if let Some(row) = crate::store::users::get_by_pubkey(store, &hex).await?
            && let Some(user) = self.custody.find_user(&row.username).await.ok().flatten()
        {
            return Ok(user.address.to_string());
        }
        if let Some(email) = crate::store::legacy::address_of(store, &hex).await? {
            return Ok(email);
        }
        for c in crate::store::contacts::list(store, self.user.id).await? {
            if let Ok(a) = c.address.parse::<crate::lnmp::address::Address>()
                && a.verify(key).is_ok()
            {
                return Ok(c.address);
            }
        }
        Ok(format!("{hex}@lnmp.invalid"))
    }
}
