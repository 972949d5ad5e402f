//! What a message says, once opened: subject, bodies, threading, mentions, reactions,
//! edits, lifecycle hints, attachments, and for bridged email its raw bytes.

use super::blob::FileAttachment;
use super::encoding::from_json;
use super::error::Result;
use super::identity::PublicKey;
use serde::{Deserialize, Serialize};

/// How `body` is to be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Formatting {
    #[default]
    Plain,
    Markdown,
    Html,
}

/// A reaction to an earlier message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reaction {
    /// The id of the message reacted to.
    pub target: String,
    /// The reaction itself, usually one emoji.
    pub emoji: String,
    /// True when this withdraws an earlier identical reaction.
    #[serde(default, skip_serializing_if = "is_false")]
    pub remove: bool,
}

/// An earlier version of an edited message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    /// When this version was written (unix seconds).
    pub timestamp: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub subject: Option<String>,
    pub body: String,
}

/// The original RFC 5322 bytes of a bridged email, inline or as an encrypted blob when
/// they are large. Kept so the mail can be shown byte for byte and its DKIM signatures
/// still verify after the trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawEmail {
    Inline(#[serde(with = "super::encoding::base64_bytes")] Vec<u8>),
    Blob(FileAttachment),
}

/// Marks content that came from the email world, so clients can tell bridged mail from
/// native LNMP mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgedEmail {
    pub raw: RawEmail,
    /// The receiving bridge's Authentication-Results (RFC 8601) for the mail.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub authentication_results: Option<String>,
    /// The SMTP envelope sender (MAIL FROM), empty for the null sender.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub mail_from: Option<String>,
}

/// The encrypted part of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageContent {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub subject: Option<String>,
    #[serde(default)]
    pub body: String,
    /// An HTML rendition of the same text, for mail that came with both.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub body_html: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub formatting: Formatting,
    /// Groups a conversation: the id (or RFC 5322 Message-ID) of its first message.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub thread_id: Option<String>,
    /// The id (or RFC 5322 Message-ID) of the message this answers.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<PublicKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edit_history: Vec<Edit>,
    /// Unix time at which the recipient's client should delete the message.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub delete_after: Option<u64>,
    /// Whether the sender asks for a read receipt.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_receipts: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<FileAttachment>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub email: Option<BridgedEmail>,
}

impl MessageContent {
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("content always serializes")
    }

    /// Parses decrypted content strictly: unknown fields are an error in v1.
    pub fn from_json_bytes(input: &[u8]) -> Result<MessageContent> {
        from_json("content", input)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
