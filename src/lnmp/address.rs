//! Human addresses: `username#checksum@relay`, such as `alice#a3f2b9@example.com`.
//!
//! The checksum ties the name to a key, so a typo or a swapped key is caught before
//! anything is sent. Every address with a relay is also a valid RFC 5321/5322 mailbox
//! (`#` is atext), so a mail client accepts one typed as a recipient.

use super::error::{Error, Result};
use super::identity::PublicKey;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Longest username; the whole local part then stays within RFC 5321's 64 octets.
pub const MAX_USERNAME: usize = 57;
/// Characters of base58btc kept as the checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Longest relay host name (RFC 1035).
pub const MAX_RELAY: usize = 253;

/// A parsed address. The username and relay are lowercase; the checksum keeps its case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    username: String,
    checksum: String,
    relay: Option<String>,
}

/// The checksum of `username` under `pubkey`: the first six base58btc characters of
/// SHA-256 over the key's 64 lowercase hex digits followed by the username's bytes.
pub fn checksum(pubkey: &PublicKey, username: &str) -> String {
    let mut h = Sha256::new();
    h.update(pubkey.to_hex().as_bytes());
    h.update(username.as_bytes());
    let digest = h.finalize();
    bs58::encode(digest).into_string()[..CHECKSUM_LEN].to_owned()
}

/// Checks a username: 1 to 57 of `a-z 0-9 . _ -`, starting and ending with a letter or
/// digit, no two dots in a row (so the local part stays an RFC 5322 dot-atom).
pub fn validate_username(username: &str) -> Result<()> {
    let field = "username";
    if username.is_empty() {
        return Err(Error::invalid(field, "empty"));
    }
    if username.len() > MAX_USERNAME {
        return Err(Error::TooLarge {
            field,
            actual: username.len(),
            limit: MAX_USERNAME,
        });
    }
    if let Some(c) = username
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        return Err(Error::invalid(
            field,
            format!("character {c:?} not allowed"),
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(username.chars().next()) || !edge_ok(username.chars().last()) {
        return Err(Error::invalid(
            field,
            "must start and end with a letter or digit",
        ));
    }
    if username.contains("..") {
        return Err(Error::invalid(field, "two dots in a row"));
    }
    Ok(())
}

/// Checks a relay host: a DNS name of letter-digit-hyphen labels, at least two of them.
fn validate_relay(relay: &str) -> Result<()> {
    let field = "relay";
    if relay.len() > MAX_RELAY {
        return Err(Error::TooLarge {
            field,
            actual: relay.len(),
            limit: MAX_RELAY,
        });
    }
    let labels: Vec<&str> = relay.split('.').collect();
    if labels.len() < 2 {
        return Err(Error::invalid(field, "not a fully qualified domain name"));
    }
    for label in labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(Error::invalid(field, format!("bad label {label:?}")));
        }
    }
    Ok(())
}

impl Address {
    /// The address of `username` under `pubkey`, optionally at a relay.
    pub fn new(pubkey: &PublicKey, username: &str, relay: Option<&str>) -> Result<Address> {
        validate_username(username)?;
        let relay = relay.map(str::to_ascii_lowercase);
        if let Some(r) = &relay {
            validate_relay(r)?;
        }
        Ok(Address {
            username: username.to_owned(),
            checksum: checksum(pubkey, username),
            relay,
        })
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    pub fn relay(&self) -> Option<&str> {
        self.relay.as_deref()
    }

    /// The local part as it appears in an email address: `username#checksum`.
    pub fn local_part(&self) -> String {
        format!("{}#{}", self.username, self.checksum)
    }

    /// Whether this address names `pubkey`.
    pub fn verify(&self, pubkey: &PublicKey) -> Result<()> {
        if checksum(pubkey, &self.username) == self.checksum {
            Ok(())
        } else {
            Err(Error::ChecksumMismatch)
        }
    }

    /// Whether a string looks like an LNMP address rather than a plain email address:
    /// a `#` in the local part. Says nothing of validity; parse for that.
    pub fn looks_like(s: &str) -> bool {
        s.rsplit_once('@').map_or(s, |(l, _)| l).contains('#')
    }
}

impl FromStr for Address {
    type Err = Error;

    /// Parses `username#checksum` or `username#checksum@relay`. The username and relay
    /// are folded to lowercase (mail software may change their case); the checksum is
    /// base58 and case-sensitive.
    fn from_str(s: &str) -> Result<Address> {
        let (local, relay) = match s.split_once('@') {
            Some((l, r)) => (l, Some(r)),
            None => (s, None),
        };
        let (username, checksum) = local
            .split_once('#')
            .ok_or_else(|| Error::invalid("address", "no '#' between username and checksum"))?;
        let username = username.to_ascii_lowercase();
        validate_username(&username)?;
        if checksum.len() != CHECKSUM_LEN || bs58::decode(checksum).into_vec().is_err() {
            return Err(Error::invalid(
                "checksum",
                format!("must be {CHECKSUM_LEN} base58 characters"),
            ));
        }
        let relay = relay.map(str::to_ascii_lowercase);
        if let Some(r) = &relay {
            validate_relay(r)?;
        }
        Ok(Address {
            username,
            checksum: checksum.to_owned(),
            relay,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.username, self.checksum)?;
        if let Some(r) = &self.relay {
            write!(f, "@{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lnmp::identity::Identity;

    fn key() -> PublicKey {
        Identity::from_secret_bytes(&[9; 32]).unwrap().public_key()
    }

    #[test]
    fn formats_parses_and_verifies() {
        let a = Address::new(&key(), "alice", Some("Example.COM")).unwrap();
        let s = a.to_string();
        assert!(
            s.starts_with("alice#") && s.ends_with("@example.com"),
            "{s}"
        );
        let back: Address = s.parse().unwrap();
        assert_eq!(back, a);
        back.verify(&key()).unwrap();
        let other = Identity::from_secret_bytes(&[10; 32]).unwrap().public_key();
        assert_eq!(back.verify(&other), Err(Error::ChecksumMismatch));
        // Case folding of the username and relay keeps the checksum valid.
        let shouted = format!("ALICE#{}@EXAMPLE.com", a.checksum());
        shouted.parse::<Address>().unwrap().verify(&key()).unwrap();
    }

    #[test]
    fn username_rules() {
        for ok in ["a", "alice", "a.b", "a_b-c", "0x", &"a".repeat(57)] {
            validate_username(ok).unwrap();
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "-a",
            "a-",
            "al ice",
            "al@ce",
            "ålice",
            &"a".repeat(58),
        ] {
            assert!(validate_username(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        let c = checksum(&key(), "alice");
        for bad in [
            "alice".to_string(),
            format!("alice#{}x@example.com", c),
            "alice#0OIl00@example.com".to_string(), // not base58
            format!("alice#{c}@localhost"),
            format!("alice#{c}@exa_mple.com"),
            format!("alice#{c}@-a.com"),
            format!("alice#{c}@a..com"),
            format!("alice#{c}@[127.0.0.1]"),
            format!("alice#{c}@x.com@y.com"),
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn looks_like_only_checks_the_local_part() {
        assert!(Address::looks_like("bob#x1y2z3@relay.com"));
        assert!(!Address::looks_like("bob@relay#x.com"));
        assert!(!Address::looks_like("bob@relay.com"));
    }
}
