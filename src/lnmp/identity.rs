//! Identities: a 32-byte seed, its BIP39 mnemonic, the key derived from it at
//! m/138'/0'/0', and the x-only public key that names a user on the network.

use super::encoding::hex_array;
use super::error::{Error, Result};
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use secp256k1::{Keypair, Parity, Scalar, Secp256k1, SecretKey, XOnlyPublicKey, schnorr};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha512;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;
use zeroize::{Zeroize, Zeroizing};

/// One signing-and-verification context for the whole process; building one is costly.
pub(crate) static SECP: LazyLock<Secp256k1<secp256k1::All>> = LazyLock::new(Secp256k1::new);

/// The hardened BIP32 path of the messaging key: purpose 138, account 0, index 0.
pub const DERIVATION_PATH: [u32; 3] = [138, 0, 0];

const HARDENED: u32 = 0x8000_0000;

/// The 32 bytes a user's identity grows from. They are the entropy of a 24-word BIP39
/// mnemonic, so a custodial user can write them down and leave. Zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed(Zeroizing<[u8; 32]>);

impl Seed {
    /// Draws a fresh seed from a cryptographic RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Seed {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Seed(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Seed {
        Seed(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 24 English BIP39 words that encode this seed.
    pub fn to_mnemonic(&self) -> Zeroizing<String> {
        // 32 bytes is a valid BIP39 entropy length, so this cannot fail.
        let m = bip39::Mnemonic::from_entropy(self.0.as_ref())
            .expect("32 bytes is valid BIP39 entropy");
        Zeroizing::new(m.to_string())
    }

    /// Reads 24 BIP39 English words back into a seed. Case and runs of white space
    /// between words are forgiven; a wrong word, count or checksum is not.
    pub fn from_mnemonic(words: &str) -> Result<Seed> {
        let normalized = Zeroizing::new(
            words
                .split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(" "),
        );
        let m = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, &normalized)
            .map_err(|e| Error::Mnemonic(e.to_string()))?;
        let entropy = Zeroizing::new(m.to_entropy());
        let bytes: [u8; 32] = entropy
            .as_slice()
            .try_into()
            .map_err(|_| Error::Mnemonic(format!("{} words; a seed is 24", m.word_count())))?;
        Ok(Seed::from_bytes(bytes))
    }

    /// The BIP39 seed (PBKDF2 of the mnemonic, empty passphrase) that BIP32 starts from.
    pub fn bip39_seed(&self) -> Zeroizing<[u8; 64]> {
        let m = bip39::Mnemonic::from_entropy(self.0.as_ref())
            .expect("32 bytes is valid BIP39 entropy");
        Zeroizing::new(m.to_seed_normalized(""))
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

/// Derives the secret key at a hardened BIP32 path from a BIP39 seed.
///
/// Written here rather than taken from a wallet library so every intermediate secret
/// lives in a zeroizing buffer; tests check it against an independent BIP32 implementation.
fn derive_hardened(seed: &[u8], path: &[u32]) -> Result<SecretKey> {
    let mut i = Zeroizing::new([0u8; 64]);
    let mut mac = Hmac::<Sha512>::new_from_slice(b"Bitcoin seed").expect("HMAC takes any key");
    mac.update(seed);
    i.copy_from_slice(&mac.finalize().into_bytes());
    let mut key = SecretKey::from_slice(&i[..32]).map_err(|_| Error::InvalidSecretKey)?;
    let mut chain = Zeroizing::new([0u8; 32]);
    chain.copy_from_slice(&i[32..]);
    for index in path {
        let mut mac = Hmac::<Sha512>::new_from_slice(chain.as_ref()).expect("HMAC takes any key");
        let mut data = Zeroizing::new([0u8; 37]);
        data[1..33].copy_from_slice(&key.secret_bytes());
        data[33..].copy_from_slice(&(index | HARDENED).to_be_bytes());
        mac.update(data.as_ref());
        i.copy_from_slice(&mac.finalize().into_bytes());
        let mut tweak_bytes = Zeroizing::new([0u8; 32]);
        tweak_bytes.copy_from_slice(&i[..32]);
        // IL >= n or a zero child key happens with probability below 2^-127; BIP32 says
        // to skip to the next index, we report it instead, as no real seed reaches it.
        let tweak = Scalar::from_be_bytes(*tweak_bytes).map_err(|_| Error::InvalidSecretKey)?;
        let mut child = key.add_tweak(&tweak).map_err(|_| Error::InvalidSecretKey)?;
        key.non_secure_erase();
        std::mem::swap(&mut key, &mut child);
        chain.copy_from_slice(&i[32..]);
    }
    Ok(key)
}

/// An x-only (BIP340) secp256k1 public key: 32 bytes, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(XOnlyPublicKey);

impl PublicKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey> {
        XOnlyPublicKey::from_slice(bytes)
            .map(PublicKey)
            .map_err(|_| Error::InvalidPoint {
                field: "public key",
            })
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.serialize()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    pub(crate) fn parse_field(field: &'static str, s: &str) -> Result<PublicKey> {
        let bytes = hex_array::<32>(field, s)?;
        XOnlyPublicKey::from_slice(&bytes)
            .map(PublicKey)
            .map_err(|_| Error::InvalidPoint { field })
    }

    /// The full point with even Y that BIP340 assigns to this x coordinate.
    pub(crate) fn even_point(&self) -> secp256k1::PublicKey {
        self.0.public_key(Parity::Even)
    }

    /// Verifies a BIP340 signature by this key over a 32-byte digest.
    pub fn verify(&self, digest: &[u8; 32], signature: &[u8; 64]) -> Result<()> {
        let sig = schnorr::Signature::from_slice(signature).map_err(|_| Error::BadSignature)?;
        SECP.verify_schnorr(&sig, &secp256k1::Message::from_digest(*digest), &self.0)
            .map_err(|_| Error::BadSignature)
    }
}

impl FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<PublicKey> {
        PublicKey::parse_field("public key", s)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A secret key and its public key: what signs, and what opens sealed messages.
/// The secret is erased when the identity is dropped.
pub struct Identity {
    keypair: Keypair,
    public: PublicKey,
}

impl Identity {
    /// The identity of a seed: BIP39 seed, then BIP32 at m/138'/0'/0'.
    pub fn from_seed(seed: &Seed) -> Identity {
        let bip39_seed = seed.bip39_seed();
        // Failure needs a HMAC output at or above the curve order: probability < 2^-127.
        let mut secret = derive_hardened(bip39_seed.as_ref(), &DERIVATION_PATH)
            .expect("derivation of a valid seed");
        let id = Identity::from_secret_key(&secret);
        secret.non_secure_erase();
        id
    }

    /// An identity straight from a 32-byte secret key (ephemeral keys, test vectors).
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Result<Identity> {
        let mut secret = SecretKey::from_slice(bytes).map_err(|_| Error::InvalidSecretKey)?;
        let id = Identity::from_secret_key(&secret);
        secret.non_secure_erase();
        Ok(id)
    }

    /// A fresh random identity (ephemeral keys).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Identity {
        loop {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(bytes.as_mut());
            if let Ok(id) = Identity::from_secret_bytes(&bytes) {
                return id;
            }
        }
    }

    fn from_secret_key(secret: &SecretKey) -> Identity {
        let keypair = Keypair::from_secret_key(&SECP, secret);
        let (xonly, _) = keypair.x_only_public_key();
        Identity {
            keypair,
            public: PublicKey(xonly),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The 32 secret bytes, for export under encryption.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.keypair.secret_bytes())
    }

    /// A BIP340 signature over a 32-byte digest. `aux` is BIP340's auxiliary randomness:
    /// fresh random bytes in use, fixed bytes only for test vectors.
    pub fn sign(&self, digest: &[u8; 32], aux: &[u8; 32]) -> [u8; 64] {
        let msg = secp256k1::Message::from_digest(*digest);
        SECP.sign_schnorr_with_aux_rand(&msg, &self.keypair, aux)
            .serialize()
    }

    /// The ECDH shared secret with `other`: the x coordinate of secret·P, where P is the
    /// even-Y point of `other`. Only x is used, so the parity that x-only keys drop does
    /// not matter: both sides compute ±(a·b)·G, whose x coordinates agree.
    pub fn shared_x(&self, other: &PublicKey) -> Zeroizing<[u8; 32]> {
        let mut secret = self.keypair.secret_key();
        let mut point = Zeroizing::new(secp256k1::ecdh::shared_secret_point(
            &other.even_point(),
            &secret,
        ));
        secret.non_secure_erase();
        let mut x = Zeroizing::new([0u8; 32]);
        x.copy_from_slice(&point[..32]);
        point.zeroize();
        x
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.keypair.non_secure_erase();
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardened_derivation_matches_bip32_test_vector_1() {
        let seed = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap();
        assert_eq!(
            hex::encode(derive_hardened(&seed, &[0]).unwrap().secret_bytes()),
            "edb2e14f9ee77d26dd93b4ecede8d16ed408ce149b6cd80b0715a2d911a0afea"
        );
    }

    #[test]
    fn hardened_derivation_agrees_with_an_independent_bip32() {
        use bitcoin::bip32::{ChildNumber, Xpriv};
        for fill in [0u8, 1, 7, 0xfe] {
            let seed = [fill; 64];
            for path in [&[0u32][..], &[138, 0, 0], &[44, 0, 0, 5]] {
                let ours = derive_hardened(&seed, path).unwrap();
                let master = Xpriv::new_master(bitcoin::NetworkKind::Main, &seed).unwrap();
                let chain: Vec<ChildNumber> = path
                    .iter()
                    .map(|i| ChildNumber::from_hardened_idx(*i).unwrap())
                    .collect();
                let theirs = master.derive_priv(&bitcoin::secp256k1::Secp256k1::new(), &chain);
                assert_eq!(
                    ours.secret_bytes(),
                    theirs.unwrap().private_key.secret_bytes()
                );
            }
        }
    }

    #[test]
    fn mnemonic_round_trips_and_rejects_bad_words() {
        let seed = Seed::from_bytes([0x42; 32]);
        let words = seed.to_mnemonic();
        assert_eq!(words.split(' ').count(), 24);
        assert_eq!(Seed::from_mnemonic(&words).unwrap(), seed);
        assert_eq!(
            Seed::from_mnemonic(&format!("  {}\n", words.to_uppercase())).unwrap(),
            seed
        );
        let mut bad: Vec<&str> = words.split(' ').collect();
        bad[3] = "notaword";
        assert!(matches!(
            Seed::from_mnemonic(&bad.join(" ")),
            Err(Error::Mnemonic(_))
        ));
        // 12 valid words are a valid mnemonic but not a 32-byte seed.
        let twelve = bip39::Mnemonic::from_entropy(&[7u8; 16])
            .unwrap()
            .to_string();
        assert!(matches!(
            Seed::from_mnemonic(&twelve),
            Err(Error::Mnemonic(_))
        ));
    }

    #[test]
    fn ecdh_agrees_whatever_the_parity() {
        let mut rng = rand_core::OsRng;
        for _ in 0..32 {
            let a = Identity::generate(&mut rng);
            let b = Identity::generate(&mut rng);
            assert_eq!(*a.shared_x(&b.public_key()), *b.shared_x(&a.public_key()));
        }
    }

    #[test]
    fn public_keys_reject_points_off_the_curve() {
        // x = 5 has no point on secp256k1 (5^3 + 7 = 132 is not a square mod p).
        let mut x = [0u8; 32];
        x[31] = 5;
        assert_eq!(
            PublicKey::from_bytes(&x),
            Err(Error::InvalidPoint {
                field: "public key"
            })
        );
        assert!(matches!("zz".parse::<PublicKey>(), Err(Error::Hex { .. })));
    }
}
