//! The one error type of the protocol core: every way outside input can be wrong.

/// What went wrong while parsing, verifying or opening protocol data.
///
/// Variants name the field at fault where there is one, so a relay can answer with a
/// precise reason and a log line says what to look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The JSON was not well formed or did not have the required shape.
    #[error("malformed {what} at `{path}`: {reason}")]
    Malformed {
        what: &'static str,
        path: String,
        reason: String,
    },
    /// A hex field held something other than lowercase hex digits.
    #[error("{field}: not lowercase hex")]
    Hex { field: &'static str },
    /// A field had the wrong number of bytes.
    #[error("{field}: expected {expected} bytes, got {actual}")]
    Length {
        field: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A base64 field did not decode.
    #[error("{field}: not standard base64")]
    Base64 { field: &'static str },
    /// 32 bytes that are not the x coordinate of a point on secp256k1.
    #[error("{field}: not a valid secp256k1 x-only public key")]
    InvalidPoint { field: &'static str },
    /// 32 bytes that are zero or not below the curve order.
    #[error("not a valid secp256k1 secret key")]
    InvalidSecretKey,
    /// A field or a whole input exceeded a limit.
    #[error("{field} too large: {actual} > {limit}")]
    TooLarge {
        field: &'static str,
        actual: usize,
        limit: usize,
    },
    /// The `v` of a message or document is not one this implementation speaks.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u64),
    /// A field held a value outside its allowed set (a rule of docs/PROTOCOL.md).
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A mnemonic that is not 24 valid BIP39 English words with a good checksum.
    #[error("invalid mnemonic: {0}")]
    Mnemonic(String),
    /// An address whose checksum is not the one its public key gives.
    #[error("address checksum does not match the public key")]
    ChecksumMismatch,
    /// The `id` is not the hash of the message's canonical form.
    #[error("message id does not match its contents")]
    IdMismatch,
    /// The Schnorr signature does not verify under the claimed key.
    #[error("signature does not verify")]
    BadSignature,
    /// The message carries no wrapped key for this identity.
    #[error("message is not sealed to this key")]
    NotARecipient,
    /// Authenticated decryption failed: wrong key, or the ciphertext or its envelope was altered.
    #[error("decryption failed: wrong key or altered {0}")]
    Decrypt(&'static str),
    /// A payment proof that does not match the invoice it claims to pay.
    #[error("payment proof rejected: {0}")]
    Payment(&'static str),
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
