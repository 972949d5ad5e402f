//! Sealing and opening: the content is encrypted once under a random content key, and
//! that key is wrapped for each recipient (and the sender) by ephemeral-static ECDH and
//! HKDF-SHA256. The envelope (version, from, to, timestamp, kind, algorithm) is the
//! associated data, so a relay cannot move a ciphertext into another envelope.
//! The plaintext is padded (Padmé) so its length leaks only its order of magnitude.

use super::content::MessageContent;
use super::encoding::Canonical;
use super::error::{Error, Result};
use super::identity::{Identity, PublicKey};
use super::limits::{Limits, within};
use super::message::{
    Encrypted, Kind, Message, MessageId, Priority, WrappedKey, key_holders, validate_recipients,
    validate_relays,
};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Smallest padded plaintext: short messages all look alike.
pub const MIN_PADDED: usize = 256;
/// AEAD tag length of both algorithms.
pub const TAG_LEN: usize = 16;
/// Smallest ciphertext a valid message can carry.
pub const MIN_CIPHERTEXT: usize = MIN_PADDED + TAG_LEN;

/// HKDF salt of the key-wrapping key.
const WRAP_SALT: &[u8] = b"LNMP/1/wrap";

/// The AEAD used for the content and its key wraps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// The one v1 senders use.
    #[default]
    #[serde(rename = "ChaCha20-Poly1305")]
    ChaCha20Poly1305,
    /// Accepted when opening, for implementations with AES hardware and no ChaCha.
    #[serde(rename = "AES-256-GCM")]
    Aes256Gcm,
}

impl Algorithm {
    pub fn code(self) -> u8 {
        match self {
            Algorithm::ChaCha20Poly1305 => 1,
            Algorithm::Aes256Gcm => 2,
        }
    }

    pub(crate) fn encrypt(
        self,
        key: &[u8; 32],
        nonce: &[u8; 12],
        aad: &[u8],
        msg: &[u8],
    ) -> Vec<u8> {
        let payload = Payload { msg, aad };
        let out = match self {
            Algorithm::ChaCha20Poly1305 => {
                ChaCha20Poly1305::new(key.into()).encrypt(nonce.into(), payload)
            }
            Algorithm::Aes256Gcm => Aes256Gcm::new(key.into()).encrypt(nonce.into(), payload),
        };
        // Both fail only past 2^36 bytes of plaintext, far beyond every limit.
        out.expect("AEAD encryption within size limits")
    }

    pub(crate) fn decrypt(
        self,
        what: &'static str,
        key: &[u8; 32],
        nonce: &[u8; 12],
        aad: &[u8],
        msg: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let payload = Payload { msg, aad };
        let out = match self {
            Algorithm::ChaCha20Poly1305 => {
                ChaCha20Poly1305::new(key.into()).decrypt(nonce.into(), payload)
            }
            Algorithm::Aes256Gcm => Aes256Gcm::new(key.into()).decrypt(nonce.into(), payload),
        };
        out.map(Zeroizing::new).map_err(|_| Error::Decrypt(what))
    }
}

/// What a sender wants to send, before sealing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub to: Vec<PublicKey>,
    pub kind: Kind,
    pub timestamp: u64,
    pub content: MessageContent,
    pub relays: Vec<String>,
    pub expiry: Option<u64>,
    pub priority: Priority,
}

/// The random values one sealing consumes. Drawn fresh for every message; fixed only
/// to make test vectors.
pub struct SealSecrets {
    pub content_key: Zeroizing<[u8; 32]>,
    pub nonce: [u8; 12],
    pub ephemeral: Zeroizing<[u8; 32]>,
    /// BIP340 auxiliary randomness for the signature.
    pub aux: [u8; 32],
    pub algorithm: Algorithm,
}

impl SealSecrets {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> SealSecrets {
        let mut s = SealSecrets {
            content_key: Zeroizing::new([0; 32]),
            nonce: [0; 12],
            ephemeral: Zeroizing::new([0; 32]),
            aux: [0; 32],
            algorithm: Algorithm::default(),
        };
        rng.fill_bytes(s.content_key.as_mut());
        rng.fill_bytes(&mut s.nonce);
        rng.fill_bytes(&mut s.aux);
        // A 32-byte draw is a valid secret key except with probability ~2^-128.
        loop {
            rng.fill_bytes(s.ephemeral.as_mut());
            if Identity::from_secret_bytes(&s.ephemeral).is_ok() {
                return s;
            }
        }
    }
}

/// Padmé (Nikitin et al., PETS 2019): rounds `len` up so that at most
/// O(log log len) bits of it remain, never below [`MIN_PADDED`].
pub fn padded_len(len: usize) -> usize {
    let len = len.max(MIN_PADDED);
    let e = usize::BITS - 1 - len.leading_zeros(); // floor(log2 len)
    let s = u32::BITS - e.leading_zeros(); // floor(log2 e) + 1
    let last_bits = e - s;
    let mask = (1usize << last_bits) - 1;
    (len + mask) & !mask
}

/// `u32 length || plaintext || zeros`, padded to [`padded_len`].
pub fn pad(plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
    let total = padded_len(4 + plaintext.len());
    let mut out = Zeroizing::new(Vec::with_capacity(total));
    // Content is bounded by Limits far below 4 GiB.
    out.extend_from_slice(&(plaintext.len() as u32).to_be_bytes());
    out.extend_from_slice(plaintext);
    out.resize(total, 0);
    out
}

fn unpad(padded: &[u8]) -> Result<&[u8]> {
    let bad = |reason: &str| Error::invalid("padding", reason.to_owned());
    if padded.len() != padded_len(padded.len()) {
        return Err(bad("not a padded length"));
    }
    let (len, rest) = padded.split_at_checked(4).ok_or_else(|| bad("too short"))?;
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    if len > rest.len() || padded_len(4 + len) != padded.len() {
        return Err(bad("length prefix does not fit"));
    }
    let (plaintext, zeros) = rest.split_at(len);
    if zeros.iter().any(|b| *b != 0) {
        return Err(bad("non-zero padding"));
    }
    Ok(plaintext)
}

/// The associated data of the content: a tagged hash of the envelope fields.
pub fn envelope_aad(
    from: &PublicKey,
    to: &[PublicKey],
    timestamp: u64,
    kind: Kind,
    alg: Algorithm,
) -> [u8; 32] {
    let mut c = Canonical::new("LNMP/1/envelope");
    c.u8(super::VERSION).raw(&from.to_bytes()).count(to.len());
    for k in to {
        c.raw(&k.to_bytes());
    }
    c.u64(timestamp).u8(kind.code()).u8(alg.code());
    c.finish()
}

/// The key-encryption key for one recipient and its associated data (E || R), from the
/// ECDH x coordinate `shared_x` (see [`Identity::shared_x`]).
pub fn wrap_key(
    shared_x: &[u8; 32],
    ephemeral: &PublicKey,
    recipient: &PublicKey,
) -> (Zeroizing<[u8; 32]>, [u8; 64]) {
    let mut info = [0u8; 64];
    info[..32].copy_from_slice(&ephemeral.to_bytes());
    info[32..].copy_from_slice(&recipient.to_bytes());
    let mut kek = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(WRAP_SALT), shared_x)
        .expand(&info, kek.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    (kek, info)
}

/// Each KEK is used exactly once (fresh ephemeral key per message), so a zero nonce is safe.
const WRAP_NONCE: [u8; 12] = [0; 12];

impl Message {
    /// Seals `draft` from `sender` with fresh randomness.
    pub fn seal<R: RngCore + CryptoRng>(
        sender: &Identity,
        draft: &Draft,
        rng: &mut R,
    ) -> Result<Message> {
        Message::seal_with(sender, draft, &SealSecrets::generate(rng))
    }

    /// Seals `draft` from `sender` with the given randomness (test vectors use fixed values).
    pub fn seal_with(sender: &Identity, draft: &Draft, secrets: &SealSecrets) -> Result<Message> {
        let limits = Limits::default();
        validate_recipients(&draft.to, &limits)?;
        validate_relays(&draft.relays, &limits)?;
        if let Some(e) = draft.expiry
            && e <= draft.timestamp
        {
            return Err(Error::invalid("expiry", "not after the timestamp"));
        }
        let plaintext = Zeroizing::new(draft.content.to_json_bytes());
        within("content", plaintext.len(), limits.max_content_bytes)?;

        let from = sender.public_key();
        let alg = secrets.algorithm;
        let aad = envelope_aad(&from, &draft.to, draft.timestamp, draft.kind, alg);
        let ciphertext = alg.encrypt(&secrets.content_key, &secrets.nonce, &aad, &pad(&plaintext));

        let ephemeral = Identity::from_secret_bytes(&secrets.ephemeral)?;
        let e_pub = ephemeral.public_key();
        let keys = key_holders(&from, &draft.to)
            .into_iter()
            .map(|to| {
                let (kek, info) = wrap_key(&ephemeral.shared_x(&to), &e_pub, &to);
                let wrapped = alg.encrypt(&kek, &WRAP_NONCE, &info, secrets.content_key.as_ref());
                WrappedKey {
                    to,
                    key: wrapped.try_into().expect("32-byte key plus 16-byte tag"),
                }
            })
            .collect();

        let mut message = Message {
            v: super::VERSION,
            id: MessageId([0; 32]),
            from,
            to: draft.to.clone(),
            timestamp: draft.timestamp,
            kind: draft.kind,
            encrypted: Encrypted {
                algorithm: alg,
                ephemeral: e_pub,
                nonce: secrets.nonce,
                keys,
                ciphertext,
            },
            relays: draft.relays.clone(),
            expiry: draft.expiry,
            priority: draft.priority,
            signature: [0; 64],
            payment: None,
        };
        message.sign(sender, &secrets.aux);
        Ok(message)
    }

    /// Verifies the message, then opens it as `recipient` (a recipient or the sender).
    pub fn open(&self, recipient: &Identity, limits: &Limits) -> Result<MessageContent> {
        self.verify()?;
        let me = recipient.public_key();
        let wrapped = self
            .encrypted
            .keys
            .iter()
            .find(|k| k.to == me)
            .ok_or(Error::NotARecipient)?;
        let e = &self.encrypted;
        let (kek, info) = wrap_key(&recipient.shared_x(&e.ephemeral), &e.ephemeral, &me);
        let key = e
            .algorithm
            .decrypt("wrapped key", &kek, &WRAP_NONCE, &info, &wrapped.key)?;
        let key: Zeroizing<[u8; 32]> = Zeroizing::new(
            key.as_slice()
                .try_into()
                .map_err(|_| Error::Decrypt("wrapped key"))?,
        );
        let aad = envelope_aad(&self.from, &self.to, self.timestamp, self.kind, e.algorithm);
        let padded = e.algorithm.decrypt(
            "ciphertext or envelope",
            &key,
            &e.nonce,
            &aad,
            &e.ciphertext,
        )?;
        let plaintext = unpad(&padded)?;
        within("content", plaintext.len(), limits.max_content_bytes)?;
        MessageContent::from_json_bytes(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padme_matches_the_paper() {
        assert_eq!(padded_len(0), 256);
        assert_eq!(padded_len(256), 256);
        assert_eq!(padded_len(257), 272);
        assert_eq!(padded_len(1000), 1024);
        assert_eq!(padded_len(1028), 1088);
        assert_eq!(padded_len(1_000_000), 1_015_808);
        // Overhead stays below 12 % from 256 bytes up.
        for len in [300usize, 5_000, 70_000, 3_000_000] {
            let p = padded_len(len);
            assert!(p >= len && (p - len) * 100 / len < 12, "{len} -> {p}");
            assert_eq!(padded_len(p), p, "padded lengths are fixed points");
        }
    }

    #[test]
    fn unpad_rejects_every_malformation() {
        let good = pad(b"hello");
        assert_eq!(unpad(&good).unwrap(), b"hello");
        let mut nonzero = good.clone();
        nonzero[100] = 1;
        assert!(unpad(&nonzero).is_err());
        let mut long = good.clone();
        long[..4].copy_from_slice(&1000u32.to_be_bytes());
        assert!(unpad(&long).is_err());
        // A length prefix that would have produced a bigger padded size.
        let big = pad(&[7u8; 300]);
        let mut shrunk = big.clone();
        shrunk[..4].copy_from_slice(&5u32.to_be_bytes());
        assert!(unpad(&shrunk).is_err());
        assert!(unpad(&good[..255]).is_err());
        assert!(unpad(&[]).is_err());
    }
}
