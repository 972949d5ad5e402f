//! Byte-level encodings shared by the protocol types: strict lowercase hex, base64,
//! BIP340-style tagged hashes, the canonical binary writer, and strict JSON parsing.

use super::error::{Error, Result};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serializer};
use sha2::{Digest, Sha256};

/// SHA256(SHA256(tag) || SHA256(tag) || data...), as in BIP340, so that no hash computed
/// for one purpose can be replayed as a hash for another.
pub(crate) fn tagged_hash(tag: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut c = Canonical::new(tag);
    for p in parts {
        c.raw(p);
    }
    c.finish()
}

/// The canonical binary form that ids, envelopes and signed challenges are hashed over:
/// big-endian integers, length-prefixed variable fields, nothing optional. It feeds a
/// tagged hash as it goes, so a megabyte of ciphertext is never copied to be hashed.
pub(crate) struct Canonical(Sha256);

impl Canonical {
    pub(crate) fn new(tag: &str) -> Self {
        let tag_hash = Sha256::digest(tag.as_bytes());
        let mut h = Sha256::new();
        h.update(tag_hash);
        h.update(tag_hash);
        Canonical(h)
    }
    pub(crate) fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.update([v]);
        self
    }
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.0.update(v.to_be_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.update(v.to_be_bytes());
        self
    }
    /// Fixed-size bytes, written as they are.
    pub(crate) fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.update(v);
        self
    }
    /// Variable bytes behind a u32 length.
    pub(crate) fn bytes32(&mut self, v: &[u8]) -> &mut Self {
        // Limits keep every field far below 4 GiB; saturate rather than wrap regardless.
        self.0
            .update(u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
        self.raw(v)
    }
    /// A short string behind a u16 length.
    pub(crate) fn str16(&mut self, v: &str) -> &mut Self {
        self.u16(u16::try_from(v.len()).unwrap_or(u16::MAX));
        self.raw(v.as_bytes())
    }
    /// A list count as u16.
    pub(crate) fn count(&mut self, n: usize) -> &mut Self {
        self.u16(u16::try_from(n).unwrap_or(u16::MAX))
    }
}

/// Decodes lowercase hex of exactly `N` bytes.
pub(crate) fn hex_array<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N]> {
    let v = hex_vec(field, s)?;
    v.as_slice().try_into().map_err(|_| Error::Length {
        field,
        expected: N,
        actual: v.len(),
    })
}

/// Decodes lowercase hex of any length.
pub(crate) fn hex_vec(field: &'static str, s: &str) -> Result<Vec<u8>> {
    if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(Error::Hex { field });
    }
    hex::decode(s).map_err(|_| Error::Hex { field })
}

pub(crate) fn base64_decode(field: &'static str, s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Error::Base64 { field })
}

pub(crate) fn base64_encode(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

/// Parses a JSON object strictly into `T`, reporting the path of the first bad field.
///
/// serde would also read a struct from a JSON array of its fields in order; every
/// protocol document is an object, so anything else is refused before parsing.
pub(crate) fn from_json<T: DeserializeOwned>(what: &'static str, input: &[u8]) -> Result<T> {
    if input.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Error::Malformed {
            what,
            path: ".".into(),
            reason: "not a JSON object".into(),
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(input);
    let value = serde_path_to_error::deserialize(de).map_err(|e| Error::Malformed {
        what,
        path: e.path().to_string(),
        reason: e.inner().to_string(),
    })?;
    Ok(value)
}

/// Like [`from_json`], but when parsing fails and the document's `v` is not the version
/// this implementation speaks, says so instead: a newer document is not a broken one.
pub(crate) fn from_json_versioned<T: DeserializeOwned>(
    what: &'static str,
    input: &[u8],
) -> Result<T> {
    #[derive(serde::Deserialize)]
    struct VersionProbe {
        v: Option<u64>,
    }
    from_json(what, input).map_err(|e| match serde_json::from_slice(input) {
        Ok(VersionProbe { v: Some(v) }) if v != u64::from(super::VERSION) => {
            Error::UnsupportedVersion(v)
        }
        _ => e,
    })
}

/// serde adapter for optional members: absent is `None`, but `null` is an error, since
/// docs/PROTOCOL.md gives no member a null value. Use with `#[serde(default)]`.
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// serde adapter: a fixed-size byte array as lowercase hex.
pub(crate) mod hex_bytes {
    use super::*;

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        v: &[u8; N],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> std::result::Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        hex_array::<N>("hex field", &s).map_err(serde::de::Error::custom)
    }
}

/// serde adapter: bytes of any length as standard base64 (with padding).
pub(crate) mod base64_bytes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&base64_encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64_decode("base64 field", &s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_strictly_lowercase() {
        assert_eq!(hex_array::<2>("f", "abcd").unwrap(), [0xab, 0xcd]);
        assert_eq!(hex_array::<2>("f", "ABCD"), Err(Error::Hex { field: "f" }));
        assert_eq!(hex_array::<2>("f", "abc"), Err(Error::Hex { field: "f" }));
        assert_eq!(
            hex_array::<2>("f", "abcdef"),
            Err(Error::Length {
                field: "f",
                expected: 2,
                actual: 3
            })
        );
    }

    #[test]
    fn tagged_hashes_are_separated_by_tag() {
        assert_ne!(tagged_hash("a", &[b"x"]), tagged_hash("b", &[b"x"]));
        assert_eq!(tagged_hash("a", &[b"xy"]), tagged_hash("a", &[b"x", b"y"]));
    }
}
