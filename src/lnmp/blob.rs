//! Attachments: each file is encrypted under its own key into a blob named by an IPFS
//! CIDv1 (raw codec, sha2-256) of the ciphertext, so any content-addressed store can
//! hold it without learning what it is. The key travels inside the sealed content.

use super::encoding::{hex_bytes, tagged_hash};
use super::error::{Error, Result};
use super::seal::Algorithm;
use cid::Cid;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// Multicodec of raw bytes.
const RAW_CODEC: u64 = 0x55;
/// Multihash code of sha2-256.
const SHA2_256: u64 = 0x12;
/// Associated data of every blob: binds the ciphertext to its use.
const BLOB_AAD: &str = "LNMP/1/blob";

/// A CIDv1 (raw, sha2-256), written in base32 lower case (`bafkrei...`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobId([u8; 32]);

impl BlobId {
    /// The id of these exact bytes.
    pub fn of(bytes: &[u8]) -> BlobId {
        BlobId(Sha256::digest(bytes).into())
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for BlobId {
    type Err = Error;
    /// Accepts any multibase spelling of a CIDv1 raw sha2-256.
    fn from_str(s: &str) -> Result<BlobId> {
        let bad = |r: &str| Error::invalid("cid", r.to_owned());
        let cid = Cid::try_from(s).map_err(|e| bad(&e.to_string()))?;
        if cid.version() != cid::Version::V1 || cid.codec() != RAW_CODEC {
            return Err(bad("must be a CIDv1 with the raw codec"));
        }
        if cid.hash().code() != SHA2_256 {
            return Err(bad("must hash with sha2-256"));
        }
        let digest: [u8; 32] = cid
            .hash()
            .digest()
            .try_into()
            .map_err(|_| bad("sha2-256 digest must be 32 bytes"))?;
        Ok(BlobId(digest))
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mh = cid::multihash::Multihash::<64>::wrap(SHA2_256, &self.0)
            .expect("32 bytes fit a 64-byte multihash");
        write!(f, "{}", Cid::new_v1(RAW_CODEC, mh))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

impl Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A reference to an encrypted file: where its blob is, how to open it, how to check it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAttachment {
    pub cid: BlobId,
    pub filename: String,
    /// Bytes of the plaintext file.
    pub size: u64,
    pub mime_type: String,
    #[serde(with = "hex_bytes")]
    pub key: [u8; 32],
    pub algorithm: Algorithm,
    /// Satoshis asked to fetch the blob, if the holder charges for it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::encoding::present"
    )]
    pub price: Option<u64>,
    /// SHA-256 of the plaintext file.
    #[serde(with = "hex_bytes")]
    pub sha256: [u8; 32],
}

impl fmt::Debug for FileAttachment {
    /// Leaves the key out, so attachments can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileAttachment")
            .field("cid", &self.cid)
            .field("filename", &self.filename)
            .field("size", &self.size)
            .field("mime_type", &self.mime_type)
            .field("algorithm", &self.algorithm)
            .field("price", &self.price)
            .field("sha256", &hex::encode(self.sha256))
            .finish_non_exhaustive()
    }
}

/// An encrypted blob and the attachment that describes it.
pub struct SealedBlob {
    pub attachment: FileAttachment,
    /// `nonce (12) || AEAD ciphertext and tag`: the bytes to store under `attachment.cid`.
    pub bytes: Vec<u8>,
}

impl FileAttachment {
    /// Encrypts a file under a fresh key.
    pub fn seal<R: RngCore + CryptoRng>(
        filename: &str,
        mime_type: &str,
        data: &[u8],
        rng: &mut R,
    ) -> SealedBlob {
        let mut key = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 12];
        rng.fill_bytes(key.as_mut());
        rng.fill_bytes(&mut nonce);
        FileAttachment::seal_with(
            filename,
            mime_type,
            data,
            &key,
            &nonce,
            Algorithm::default(),
        )
    }

    /// Encrypts a file under the given key and nonce (test vectors use fixed values).
    pub fn seal_with(
        filename: &str,
        mime_type: &str,
        data: &[u8],
        key: &[u8; 32],
        nonce: &[u8; 12],
        algorithm: Algorithm,
    ) -> SealedBlob {
        let aad = tagged_hash(BLOB_AAD, &[]);
        let mut bytes = Vec::with_capacity(12 + data.len() + 16);
        bytes.extend_from_slice(nonce);
        bytes.extend_from_slice(&algorithm.encrypt(key, nonce, &aad, data));
        SealedBlob {
            attachment: FileAttachment {
                cid: BlobId::of(&bytes),
                filename: filename.to_owned(),
                size: data.len() as u64,
                mime_type: mime_type.to_owned(),
                key: *key,
                algorithm,
                price: None,
                sha256: Sha256::digest(data).into(),
            },
            bytes,
        }
    }

    /// Opens a blob fetched for this attachment, checking that it is the blob named by
    /// the CID and that the file is the one described.
    pub fn open(&self, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if BlobId::of(blob) != self.cid {
            return Err(Error::invalid(
                "blob",
                "does not hash to the attachment's cid",
            ));
        }
        let (nonce, ciphertext) = blob
            .split_first_chunk::<12>()
            .ok_or_else(|| Error::invalid("blob", "shorter than a nonce"))?;
        let aad = tagged_hash(BLOB_AAD, &[]);
        let data = self
            .algorithm
            .decrypt("blob", &self.key, nonce, &aad, ciphertext)?;
        if data.len() as u64 != self.size {
            return Err(Error::invalid("blob", "size differs from the attachment's"));
        }
        if <[u8; 32]>::from(Sha256::digest(&data[..])) != self.sha256 {
            return Err(Error::invalid(
                "blob",
                "sha256 differs from the attachment's",
            ));
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cid_is_cidv1_raw_sha256_base32() {
        let id = BlobId::of(b"hello");
        let s = id.to_string();
        assert!(s.starts_with("bafkrei"), "{s}");
        assert_eq!(s.parse::<BlobId>().unwrap(), id);
        // A CIDv0 (dag-pb) is not a blob id.
        assert!(
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
                .parse::<BlobId>()
                .is_err()
        );
        assert!("bafy".parse::<BlobId>().is_err());
    }

    #[test]
    fn blobs_open_and_detect_tampering() {
        let sealed =
            FileAttachment::seal("a.txt", "text/plain", b"file body", &mut rand_core::OsRng);
        let a = &sealed.attachment;
        assert_eq!(&a.open(&sealed.bytes).unwrap()[..], b"file body");
        let mut bad = sealed.bytes.clone();
        bad[20] ^= 1;
        assert!(a.open(&bad).is_err());
        let mut wrong_hash = a.clone();
        wrong_hash.cid = BlobId::of(&bad);
        assert_eq!(wrong_hash.open(&bad), Err(Error::Decrypt("blob")));
        let mut wrong_size = a.clone();
        wrong_size.size += 1;
        assert!(wrong_size.open(&sealed.bytes).is_err());
        let mut wrong_sum = a.clone();
        wrong_sum.sha256[0] ^= 1;
        assert!(wrong_sum.open(&sealed.bytes).is_err());
    }
}
