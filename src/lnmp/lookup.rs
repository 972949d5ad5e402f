//! The address lookup document, served at
//! `https://<relay host>/.well-known/lnmp.json?name=<username>`: the key, relays and
//! prices behind a username. A client checks it against the checksum of the address it
//! looked up, so a lying or hijacked web server cannot swap in another key.

use super::address::{Address, checksum, validate_username};
use super::encoding::from_json_versioned;
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
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
        let doc: LookupDocument = from_json_versioned("lookup document", input)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"v":1,"name":"alice","pubkey":"1909acbc2305a2ec8b3f4e104fa7be61c5cf1779bb58e94e902b42f224100137","relays":["wss://example.com:7138"],"prices":{"stranger":100,"acquaintance":10,"friend":0,"priority":1000}}"#;

    #[test]
    fn versions_nulls_and_relays() {
        let l = Limits::default();
        LookupDocument::from_json(DOC.as_bytes(), &l).unwrap();
        let v2 = DOC.replace(r#""v":1,"#, r#""v":2,"new":true,"#);
        assert_eq!(
            LookupDocument::from_json(v2.as_bytes(), &l),
            Err(Error::UnsupportedVersion(2))
        );
        let v300 = DOC.replace(r#""v":1,"#, r#""v":300,"#);
        assert_eq!(
            LookupDocument::from_json(v300.as_bytes(), &l),
            Err(Error::UnsupportedVersion(300))
        );
        let null_surge = DOC.replace(r#""priority":1000}"#, r#""priority":1000,"surge":null}"#);
        assert!(LookupDocument::from_json(null_surge.as_bytes(), &l).is_err());
        let no_relays = DOC.replace(r#"["wss://example.com:7138"]"#, "[]");
        assert!(LookupDocument::from_json(no_relays.as_bytes(), &l).is_err());
        let bad_name = DOC.replace(r#""alice""#, r#""Alice!""#);
        assert!(LookupDocument::from_json(bad_name.as_bytes(), &l).is_err());
    }
}
