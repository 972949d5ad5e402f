//! The signed envelope of an LNMP message: who, to whom, when, what kind, the sealed
//! content, delivery hints, the signature, and an optional payment proof.
//!
//! The `id` is a tagged hash of the canonical form of every field except `id`,
//! `signature` and `payment`; the signature is BIP340 over the id. A payment proof is
//! attached after signing (the sender learns the preimage only by paying), so it is
//! checked against the invoice it pays, not against the signature.

use super::encoding::{Canonical, from_json_versioned, hex_bytes};
use super::error::{Error, Result};
use super::identity::{Identity, PublicKey};
use super::limits::{Limits, within};
use super::seal::Algorithm;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// A message id: the 32-byte tagged hash of the message's canonical form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; 32]);

impl MessageId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl FromStr for MessageId {
    type Err = Error;
    fn from_str(s: &str) -> Result<MessageId> {
        super::encoding::hex_array::<32>("id", s).map(MessageId)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.to_hex())
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What a message is, visible to relays so they can filter without opening it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Text = 1,
    Voice = 2,
    File = 3,
    Payment = 4,
    Receipt = 5,
    Presence = 6,
    Typing = 7,
    Reaction = 8,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Text,
        Kind::Voice,
        Kind::File,
        Kind::Payment,
        Kind::Receipt,
        Kind::Presence,
        Kind::Typing,
        Kind::Reaction,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u64) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| u64::from(k.code()) == code)
            .ok_or_else(|| Error::invalid("kind", format!("unknown kind {code}")))
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Kind::from_code(u64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The sender's urgency hint. Clients rank by it together with what was paid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub fn code(self) -> u8 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
            Priority::Urgent => 3,
        }
    }
}

/// The content key of a message wrapped for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    pub to: PublicKey,
    /// AEAD(KEK, zero nonce, content key): 32 bytes of key and 16 of tag.
    #[serde(with = "hex_bytes")]
    pub key: [u8; 48],
}

/// The sealed content and what a recipient needs to open it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encrypted {
    pub algorithm: Algorithm,
    /// The message's ephemeral public key for the key wraps.
    pub ephemeral: PublicKey,
    #[serde(with = "hex_bytes")]
    pub nonce: [u8; 12],
    /// One entry per recipient in `to`, in order, then the sender if not among them.
    pub keys: Vec<WrappedKey>,
    #[serde(with = "super::encoding::base64_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Proof that a Lightning invoice was paid for this message: the preimage of its
/// payment hash and the amount paid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentProof {
    #[serde(with = "hex_bytes")]
    pub preimage: [u8; 32],
    /// Satoshis paid.
    pub amount: u64,
    /// Optional routing hints from the payer; informative only.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub route: Option<String>,
}

impl PaymentProof {
    /// SHA-256 of the preimage: the payment hash of the invoice it settles.
    pub fn payment_hash(&self) -> [u8; 32] {
        Sha256::digest(self.preimage).into()
    }

    /// Checks the proof against the invoice it claims to pay: the preimage must hash to
    /// `payment_hash` and the claimed amount must be what that invoice asked.
    pub fn check(&self, payment_hash: &[u8; 32], invoiced_sats: u64) -> Result<()> {
        if &self.payment_hash() != payment_hash {
            return Err(Error::Payment(
                "preimage does not hash to the invoice's payment hash",
            ));
        }
        if self.amount != invoiced_sats {
            return Err(Error::Payment("amount differs from the invoice"));
        }
        Ok(())
    }
}

/// An LNMP message as it travels between clients and relays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub v: u8,
    pub id: MessageId,
    pub from: PublicKey,
    pub to: Vec<PublicKey>,
    /// Unix time in seconds, set by the sender.
    pub timestamp: u64,
    pub kind: Kind,
    pub encrypted: Encrypted,
    /// Relay URLs (ws:// or wss://) where the sender suggests replies and copies go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
    /// Unix time after which relays drop the message.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub expiry: Option<u64>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(with = "hex_bytes")]
    pub signature: [u8; 64],
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub payment: Option<PaymentProof>,
}

impl Message {
    /// Parses and structurally validates a message from JSON. Cryptographic checks are
    /// [`Message::verify`]'s.
    pub fn from_json(input: &[u8], limits: &Limits) -> Result<Message> {
        within("message", input.len(), limits.max_message_bytes)?;
        let message: Message = from_json_versioned("message", input)?;
        message.validate(limits)?;
        Ok(message)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a message always serializes")
    }

    /// The rules of docs/PROTOCOL.md that JSON shapes alone do not express.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        if self.v != super::VERSION {
            return Err(Error::UnsupportedVersion(self.v.into()));
        }
        validate_recipients(&self.to, limits)?;
        validate_relays(&self.relays, limits)?;
        let expected = key_holders(&self.from, &self.to);
        if self.encrypted.keys.len() != expected.len()
            || self
                .encrypted
                .keys
                .iter()
                .zip(&expected)
                .any(|(k, e)| k.to != *e)
        {
            return Err(Error::invalid(
                "encrypted.keys",
                "must wrap the key for each of `to` in order, then the sender",
            ));
        }
        if self.encrypted.ciphertext.len() < super::seal::MIN_CIPHERTEXT {
            return Err(Error::invalid(
                "encrypted.ciphertext",
                "shorter than the padding minimum",
            ));
        }
        if let Some(expiry) = self.expiry
            && expiry <= self.timestamp
        {
            return Err(Error::invalid("expiry", "not after the timestamp"));
        }
        Ok(())
    }

    /// The id this message's fields hash to.
    pub fn compute_id(&self) -> MessageId {
        let mut c = Canonical::new("LNMP/1/message");
        c.u8(self.v).raw(&self.from.to_bytes()).count(self.to.len());
        for to in &self.to {
            c.raw(&to.to_bytes());
        }
        c.u64(self.timestamp)
            .u8(self.kind.code())
            .u8(self.encrypted.algorithm.code())
            .raw(&self.encrypted.ephemeral.to_bytes())
            .raw(&self.encrypted.nonce)
            .count(self.encrypted.keys.len());
        for k in &self.encrypted.keys {
            c.raw(&k.to.to_bytes()).raw(&k.key);
        }
        c.bytes32(&self.encrypted.ciphertext)
            .count(self.relays.len());
        for r in &self.relays {
            c.str16(r);
        }
        match self.expiry {
            Some(e) => c.u8(1).u64(e),
            None => c.u8(0),
        };
        c.u8(self.priority.code());
        MessageId(c.finish())
    }

    /// Checks that the id is the hash of the message and the signature is the sender's.
    pub fn verify(&self) -> Result<()> {
        if self.compute_id() != self.id {
            return Err(Error::IdMismatch);
        }
        self.from.verify(&self.id.0, &self.signature)
    }

    /// Sets the id and signs it as `sender` (who must be `from`).
    pub(crate) fn sign(&mut self, sender: &Identity, aux: &[u8; 32]) {
        self.id = self.compute_id();
        self.signature = sender.sign(&self.id.0, aux);
    }

    /// Whether the message has expired at unix time `now`.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expiry.is_some_and(|e| e <= now)
    }
}

/// Who gets a wrapped key: every recipient in order, then the sender if not among them,
/// so the sender's own Sent copy opens.
pub(crate) fn key_holders(from: &PublicKey, to: &[PublicKey]) -> Vec<PublicKey> {
    let mut holders = to.to_vec();
    if !to.contains(from) {
        holders.push(*from);
    }
    holders
}

pub(crate) fn validate_recipients(to: &[PublicKey], limits: &Limits) -> Result<()> {
    if to.is_empty() {
        return Err(Error::invalid("to", "no recipient"));
    }
    within("to", to.len(), limits.max_recipients)?;
    let mut seen = HashSet::with_capacity(to.len());
    if !to.iter().all(|k| seen.insert(*k)) {
        return Err(Error::invalid("to", "a recipient appears twice"));
    }
    Ok(())
}

/// Relay URLs must be ws:// or wss:// with a host, within the length limit.
pub(crate) fn validate_relays(relays: &[String], limits: &Limits) -> Result<()> {
    within("relays", relays.len(), limits.max_relays)?;
    for r in relays {
        within("relay URL", r.len(), limits.max_relay_url)?;
        validate_relay_url(r)?;
    }
    Ok(())
}

/// A relay URL: `ws://` or `wss://`, a non-empty host, printable ASCII without spaces.
pub fn validate_relay_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| Error::invalid("relay URL", "must start with ws:// or wss://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(Error::invalid("relay URL", "no host"));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "relay URL",
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}
