//! The key a user's stored mail (what their mail client APPENDs: sent copies, drafts)
//! is sealed under, derived from the user's own seed so it is as private as their
//! LNMP key, and a keyed digest that names each stored message without revealing it.

use crate::lnmp::{Algorithm, Identity};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
#[error("stored mail {0} is damaged or belongs to another user")]
pub struct Damaged(pub String);

pub struct MailVault {
    seal_key: Zeroizing<[u8; 32]>,
    name_key: Zeroizing<[u8; 32]>,
}

impl MailVault {
    pub fn for_identity(identity: &Identity) -> MailVault {
        let secret = identity.secret_bytes();
        let hk = Hkdf::<Sha256>::new(Some(b"lnmp-bridge/v1/mail-vault"), secret.as_ref());
        let mut seal_key = Zeroizing::new([0u8; 32]);
        let mut name_key = Zeroizing::new([0u8; 32]);
        hk.expand(b"seal", seal_key.as_mut())
            .expect("32 bytes is a valid HKDF output length");
        hk.expand(b"name", name_key.as_mut())
            .expect("32 bytes is a valid HKDF output length");
        MailVault { seal_key, name_key }
    }

    /// The name a message is stored under: the same bytes always get the same name,
    /// so a second APPEND of them keeps one body.
    pub fn name(&self, plaintext: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.name_key.as_ref())
            .expect("HMAC takes keys of any length");
        mac.update(plaintext);
        hex::encode(mac.finalize().into_bytes())
    }

    /// `nonce (12) || ChaCha20-Poly1305 ciphertext`, bound to the message's name.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(Algorithm::ChaCha20Poly1305.encrypt(
            &self.seal_key,
            &nonce,
            name.as_bytes(),
            plaintext,
        ));
        out
    }

    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Damaged> {
        let (nonce, ct) = sealed
            .split_first_chunk::<12>()
            .ok_or_else(|| Damaged(name.to_owned()))?;
        Algorithm::ChaCha20Poly1305
            .decrypt("stored mail", &self.seal_key, nonce, name.as_bytes(), ct)
            .map_err(|_| Damaged(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_mail_opens_only_for_its_owner_and_name() {
        let alice = MailVault::for_identity(&Identity::generate(&mut OsRng));
        let bob = MailVault::for_identity(&Identity::generate(&mut OsRng));
        let name = alice.name(b"hello");
        assert_eq!(name, alice.name(b"hello"));
        assert_ne!(name, bob.name(b"hello"));
        let sealed = alice.seal(&name, b"hello");
        assert_eq!(&alice.open(&name, &sealed).unwrap()[..], b"hello");
        assert!(bob.open(&name, &sealed).is_err());
        assert!(alice.open("other", &sealed).is_err());
        assert!(alice.open(&name, &sealed[..10]).is_err());
    }
}
