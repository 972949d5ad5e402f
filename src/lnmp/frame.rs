//! Relay frames: the JSON objects clients and relays exchange over a WebSocket, one per
//! text message, each with a `"type"`. Parsing is strict: unknown types or fields, bad
//! values and oversized lists are errors, never guesses.

use super::encoding::{Canonical, from_json};
use super::error::{Error, Result};
use super::identity::{Identity, PublicKey};
use super::limits::{Limits, within};
use super::message::{Kind, Message, MessageId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A relay AUTH answer: proof that the holder of `pubkey` saw `challenge` from the relay
/// at `relay` around `timestamp`. Binding the relay URL stops one relay replaying a
/// client's answer to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthProof {
    pub pubkey: PublicKey,
    pub relay: String,
    pub challenge: String,
    pub timestamp: u64,
    #[serde(with = "super::encoding::hex_bytes")]
    pub signature: [u8; 64],
}

impl AuthProof {
    fn digest(pubkey: &PublicKey, relay: &str, challenge: &str, timestamp: u64) -> [u8; 32] {
        let mut c = Canonical::new("LNMP/1/auth");
        c.raw(&pubkey.to_bytes())
            .str16(relay)
            .str16(challenge)
            .u64(timestamp);
        c.finish()
    }

    pub fn sign(
        identity: &Identity,
        relay: &str,
        challenge: &str,
        timestamp: u64,
        aux: &[u8; 32],
    ) -> AuthProof {
        let pubkey = identity.public_key();
        let digest = AuthProof::digest(&pubkey, relay, challenge, timestamp);
        AuthProof {
            pubkey,
            relay: relay.to_owned(),
            challenge: challenge.to_owned(),
            timestamp,
            signature: identity.sign(&digest, aux),
        }
    }

    /// Checks the proof answers `challenge` of the relay at `relay`, was made within
    /// `max_skew` seconds of `now`, and is signed by `pubkey`.
    pub fn verify(&self, relay: &str, challenge: &str, now: u64, max_skew: u64) -> Result<()> {
        if self.relay != relay {
            return Err(Error::invalid("relay", "answers another relay"));
        }
        if self.challenge != challenge {
            return Err(Error::invalid("challenge", "not the challenge sent"));
        }
        if self.timestamp.abs_diff(now) > max_skew {
            return Err(Error::invalid(
                "timestamp",
                "too far from the relay's clock",
            ));
        }
        let digest = AuthProof::digest(&self.pubkey, &self.relay, &self.challenge, self.timestamp);
        self.pubkey.verify(&digest, &self.signature)
    }
}

/// Which stored and live messages a subscription or query wants. Every field present
/// must match; lists match when they contain the message's value (for `to`, any of its
/// recipients). An empty filter matches everything the subscriber may see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub ids: Option<Vec<MessageId>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub from: Option<Vec<PublicKey>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub to: Option<Vec<PublicKey>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub kinds: Option<Vec<Kind>>,
    /// Oldest timestamp wanted, inclusive.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub since: Option<u64>,
    /// Newest timestamp wanted, inclusive.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub until: Option<u64>,
    /// At most this many stored messages: the newest ones, sent oldest first.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub limit: Option<u32>,
}

impl Filter {
    pub fn matches(&self, m: &Message) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&m.id))
            && self.from.as_ref().is_none_or(|f| f.contains(&m.from))
            && self
                .to
                .as_ref()
                .is_none_or(|t| m.to.iter().any(|r| t.contains(r)))
            && self.kinds.as_ref().is_none_or(|k| k.contains(&m.kind))
            && self.since.is_none_or(|s| m.timestamp >= s)
            && self.until.is_none_or(|u| m.timestamp <= u)
    }

    fn validate(&self, limits: &Limits) -> Result<()> {
        let n = limits.max_filter_values;
        within("filter ids", self.ids.as_ref().map_or(0, Vec::len), n)?;
        within("filter from", self.from.as_ref().map_or(0, Vec::len), n)?;
        within("filter to", self.to.as_ref().map_or(0, Vec::len), n)?;
        within("filter kinds", self.kinds.as_ref().map_or(0, Vec::len), n)?;
        if let (Some(s), Some(u)) = (self.since, self.until)
            && s > u
        {
            return Err(Error::invalid("filter", "since is after until"));
        }
        Ok(())
    }
}

/// Frames a client sends to a relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ClientFrame {
    /// The answer to the relay's AUTH challenge.
    #[serde(rename = "AUTH")]
    Auth(AuthProof),
    /// Stored messages matching any filter, then EOSE, then live ones, until UNSUB.
    #[serde(rename = "SUB")]
    Sub { sub: String, filters: Vec<Filter> },
    #[serde(rename = "UNSUB")]
    Unsub { sub: String },
    #[serde(rename = "PUBLISH")]
    Publish { message: Box<Message> },
    /// Stored messages matching any filter, then EOSE; nothing live.
    #[serde(rename = "QUERY")]
    Query { sub: String, filters: Vec<Filter> },
}

/// How serious a NOTICE is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// Why a relay refused a frame or a subscription (ERROR's `code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// The frame did not parse.
    Malformed,
    /// The frame was larger than the relay accepts.
    TooLarge,
    /// Too many frames or publishes in too short a time.
    RateLimited,
    /// The command needs AUTH first.
    AuthRequired,
    /// The authenticated key may not do this (e.g. read another key's messages).
    Restricted,
    /// UNSUB of a subscription that does not exist.
    UnknownSubscription,
    /// The connection has as many subscriptions as the relay allows.
    TooManySubscriptions,
    /// The relay failed; the client may retry later.
    Internal,
}

/// The machine-readable start of an OK's reason: `"<code>: <text>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonCode {
    Invalid,
    Duplicate,
    Expired,
    TooLarge,
    RateLimited,
    AuthRequired,
    Restricted,
    PaymentRequired,
    Blocked,
    /// Any other failure, and any prefix this version does not know.
    Error,
}

impl ReasonCode {
    const ALL: [(ReasonCode, &'static str); 10] = [
        (ReasonCode::Invalid, "invalid"),
        (ReasonCode::Duplicate, "duplicate"),
        (ReasonCode::Expired, "expired"),
        (ReasonCode::TooLarge, "too-large"),
        (ReasonCode::RateLimited, "rate-limited"),
        (ReasonCode::AuthRequired, "auth-required"),
        (ReasonCode::Restricted, "restricted"),
        (ReasonCode::PaymentRequired, "payment-required"),
        (ReasonCode::Blocked, "blocked"),
        (ReasonCode::Error, "error"),
    ];

    pub fn as_str(self) -> &'static str {
        ReasonCode::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("error", |(_, s)| s)
    }
}

/// An OK's reason: a code for programs and a text for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: ReasonCode,
    pub text: String,
}

impl Reason {
    pub fn new(code: ReasonCode, text: impl Into<String>) -> Reason {
        Reason {
            code,
            text: text.into(),
        }
    }

    fn parse(s: &str) -> Reason {
        let (prefix, text) = s.split_once(':').unwrap_or((s, ""));
        match ReasonCode::ALL.iter().find(|(_, p)| *p == prefix) {
            // Exactly the one space Display writes, so every reason survives a round trip.
            Some((code, _)) => Reason::new(*code, text.strip_prefix(' ').unwrap_or(text)),
            None => Reason::new(ReasonCode::Error, s),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.text)
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Reason::parse(&String::deserialize(d)?))
    }
}

/// Frames a relay sends to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum RelayFrame {
    /// Sent first on every connection: the challenge an AUTH must sign.
    #[serde(rename = "AUTH")]
    Auth { challenge: String },
    /// A message for a subscription or query.
    #[serde(rename = "MSG")]
    Msg { sub: String, message: Box<Message> },
    /// End of stored messages for a subscription or query.
    #[serde(rename = "EOSE")]
    Eose { sub: String },
    /// The outcome of a PUBLISH (`id` is the message id) or AUTH (`id` is the challenge).
    #[serde(rename = "OK")]
    Ok {
        id: String,
        accepted: bool,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "super::encoding::present"
        )]
        reason: Option<Reason>,
    },
    /// Something for the operator's or user's eyes; no reply expected.
    #[serde(rename = "NOTICE")]
    Notice { severity: Severity, message: String },
    /// A frame was refused. With `sub`, that subscription is closed.
    #[serde(rename = "ERROR")]
    Error {
        code: ErrorCode,
        message: String,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "super::encoding::present"
        )]
        sub: Option<String>,
    },
    /// The recipient charges for this message: pay, then PUBLISH again with the proof.
    #[serde(rename = "INVOICE")]
    Invoice {
        /// The message this invoice is for.
        id: MessageId,
        /// Satoshis.
        amount: u64,
        description: String,
        bolt11: String,
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "super::encoding::present"
        )]
        expires_at: Option<u64>,
    },
}

/// Longest AUTH challenge, in bytes.
pub const MAX_CHALLENGE: usize = 256;

/// A subscription id: 1 to `max_sub_id` printable ASCII characters, no spaces.
fn validate_sub(sub: &str, limits: &Limits) -> Result<()> {
    if sub.is_empty() {
        return Err(Error::invalid("sub", "empty"));
    }
    within("sub", sub.len(), limits.max_sub_id)?;
    if !sub.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "sub",
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

fn validate_filters(filters: &[Filter], limits: &Limits) -> Result<()> {
    if filters.is_empty() {
        return Err(Error::invalid("filters", "at least one filter is required"));
    }
    within("filters", filters.len(), limits.max_filters)?;
    filters.iter().try_for_each(|f| f.validate(limits))
}

impl ClientFrame {
    pub fn from_json(input: &[u8], limits: &Limits) -> Result<ClientFrame> {
        within("frame", input.len(), limits.max_message_bytes)?;
        let frame: ClientFrame = from_json("client frame", input)?;
        match &frame {
            ClientFrame::Auth(proof) => {
                // Both are hashed behind u16 lengths: bounded, no two pairs hash alike.
                within("relay", proof.relay.len(), limits.max_relay_url)?;
                within("challenge", proof.challenge.len(), MAX_CHALLENGE)?;
            }
            ClientFrame::Sub { sub, filters } | ClientFrame::Query { sub, filters } => {
                validate_sub(sub, limits)?;
                validate_filters(filters, limits)?;
            }
            ClientFrame::Unsub { sub } => validate_sub(sub, limits)?,
            ClientFrame::Publish { message } => message.validate(limits)?,
        }
        Ok(frame)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a frame always serializes")
    }
}

impl RelayFrame {
    pub fn from_json(input: &[u8], limits: &Limits) -> Result<RelayFrame> {
        within("frame", input.len(), limits.max_message_bytes)?;
        let frame: RelayFrame = from_json("relay frame", input)?;
        match &frame {
            RelayFrame::Msg { sub, message } => {
                validate_sub(sub, limits)?;
                message.validate(limits)?;
            }
            RelayFrame::Eose { sub } => validate_sub(sub, limits)?,
            RelayFrame::Auth { challenge } => within("challenge", challenge.len(), MAX_CHALLENGE)?,
            RelayFrame::Error { sub: Some(sub), .. } => validate_sub(sub, limits)?,
            _ => {}
        }
        Ok(frame)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a frame always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_proof_binds_relay_challenge_and_time() {
        let id = Identity::from_secret_bytes(&[3; 32]).unwrap();
        let p = AuthProof::sign(&id, "wss://r.example", "c1", 1000, &[0; 32]);
        p.verify("wss://r.example", "c1", 1010, 60).unwrap();
        assert!(p.verify("wss://other.example", "c1", 1010, 60).is_err());
        assert!(p.verify("wss://r.example", "c2", 1010, 60).is_err());
        assert!(p.verify("wss://r.example", "c1", 2000, 60).is_err());
        let mut forged = p.clone();
        forged.timestamp = 1001;
        assert_eq!(
            forged.verify("wss://r.example", "c1", 1010, 60),
            Err(Error::BadSignature)
        );
    }

    #[test]
    fn reasons_keep_their_code() {
        let r = Reason::new(ReasonCode::PaymentRequired, "100 sats");
        assert_eq!(r.to_string(), "payment-required: 100 sats");
        assert_eq!(Reason::parse("payment-required: 100 sats"), r);
        assert_eq!(Reason::parse("whatever: x").code, ReasonCode::Error);
        assert_eq!(Reason::parse("duplicate:").code, ReasonCode::Duplicate);
        for odd in [" ss", "\tx", "error:  two spaces"] {
            let r = Reason::parse(odd);
            assert_eq!(Reason::parse(&r.to_string()), r, "{odd:?}");
        }
    }

    #[test]
    fn strict_frames() {
        let l = Limits::default();
        let ok = br#"{"type":"SUB","sub":"s1","filters":[{"kinds":[1],"since":5}]}"#;
        assert!(matches!(
            ClientFrame::from_json(ok, &l).unwrap(),
            ClientFrame::Sub { .. }
        ));
        for bad in [
            &br#"{"type":"SUB","sub":"s1","filters":[{"kinds":[9]}]}"#[..],
            br#"{"type":"SUB","sub":"s1","filters":[]}"#,
            br#"{"type":"SUB","sub":"","filters":[{}]}"#,
            br#"{"type":"SUB","sub":"a b","filters":[{}]}"#,
            br#"{"type":"SUB","sub":"s","filters":[{"since":9,"until":1}]}"#,
            br#"{"type":"SUB","sub":"s","filters":[{}],"extra":1}"#,
            br#"{"type":"SUB","sub":"s","filters":[{"idz":[]}]}"#,
            br#"{"type":"NOPE"}"#,
            br#"{"sub":"s"}"#,
            br#"["SUB","s",{}]"#,
            br#"{"type":"UNSUB","sub":"s""#,
            b"\xff\xfe",
        ] {
            assert!(
                ClientFrame::from_json(bad, &l).is_err(),
                "{} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let tight = Limits {
            max_message_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            ClientFrame::from_json(ok, &tight),
            Err(Error::TooLarge { field: "frame", .. })
        ));
    }
}
