//! The address lookup document, served at
//! `https://<relay host>/.well-known/lnmp.json?name=<username>`: the key, relays and
//! prices behind a username. A client checks it against the checksum of the address it
//! looked up, so a lying or hijacked web server cannot swap in another key.

use super::address::{Address, checksum, validate_username};
use super::encoding::from_json;
use super::error::{Error, Result};
use super::identity::PublicKey;
use super::limits::Limits;
use super::message::validate_relays;
use serde::{Deserialize, Serialize};

/// Price surge when the recipient's inbox is full of unread mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Surge {
    /// Prices are multiplied by this...
    pub multiplier: u32,
    /// ...while more than this many messages are unread.
    pub threshold: u32,
}

/// What a user charges, in satoshis, by how well they know the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    pub stranger: u64,
    pub acquaintance: u64,
    pub friend: u64,
    /// The least that buys immediate attention.
    pub priority: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surge: Option<Surge>,
}

/// The answer to an address lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupDocument {
    pub v: u8,
    pub name: String,
    pub pubkey: PublicKey,
    /// Relay URLs where the user reads, most preferred first; at least one.
    pub relays: Vec<String>,
    pub prices: Prices,
}

impl LookupDocument {
    pub fn from_json(input: &[u8], limits: &Limits) -> Result<LookupDocument> {
        super::limits::within("lookup document", input.len(), 64 * 1024)?;
        let doc: LookupDocument = from_json("lookup document", input)?;
        if doc.v != super::VERSION {
            return Err(Error::UnsupportedVersion(doc.v.into()));
        }
        validate_username(&doc.name)?;
        if doc.relays.is_empty() {
            return Err(Error::invalid("relays", "at least one relay is required"));
        }
        validate_relays(&doc.relays, limits)?;
        Ok(doc)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a lookup document always serializes")
    }

    /// Checks that this document answers a lookup of `address`: same username, and the
    /// address's checksum is the one the published key gives.
    pub fn verify(&self, address: &Address) -> Result<()> {
        if self.name != address.username() {
            return Err(Error::invalid("name", "answers a different username"));
        }
        if checksum(&self.pubkey, &self.name) != address.checksum() {
            return Err(Error::ChecksumMismatch);
        }
        Ok(())
    }
}
