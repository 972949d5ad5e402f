//! The master key: 32 random bytes that encrypt every custodial seed at rest, kept in a
//! 0600 file apart from the database (or given in LNMP_MASTER_KEY), so that a copy of
//! the database alone yields no user's key.
//!
//! A check value stored in the database tells at start whether the key is the right one.
//! A wrong key is an error that changes nothing: no vault ever wipes itself.

use crate::lnmp::seal::Algorithm;
use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable that carries the key itself, as 64 hex digits.
pub const ENV_VAR: &str = "LNMP_MASTER_KEY";

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error(
        "master key file {0} not found; it was made by `lnmp-bridge quickstart` (restore it from your backup, or set {ENV_VAR})"
    )]
    Missing(PathBuf),
    #[error("cannot read master key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write master key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "master key file {path} is readable by other users (mode {mode:o}); run: chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{0} must hold exactly 64 hex digits")]
    Malformed(String),
    #[error(
        "the master key does not open this database: wrong key file or {ENV_VAR}? Nothing was changed."
    )]
    Wrong,
    #[error("sealed data is damaged or belongs to another record")]
    Damaged,
}

/// Purposes a subkey is derived for; each gets its own HKDF info string.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// Custodial seeds of users.
    Seed,
    /// The check value that recognizes the key.
    Check,
    /// Identities of legacy email senders, derived from their address.
    LegacySender,
    /// Tokens of reply addresses.
    ReplyRoute,
    /// The embedded dev wallet's node key (src/lightning/dev.rs).
    DevNode,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Purpose::Seed => b"lnmp-bridge/v1/seed",
            Purpose::Check => b"lnmp-bridge/v1/check",
            Purpose::LegacySender => b"lnmp-bridge/v1/legacy-sender",
            Purpose::ReplyRoute => b"lnmp-bridge/v1/reply-route",
            Purpose::DevNode => b"lnmp-bridge/v1/dev-node",
        }
    }
}

const CHECK_PLAINTEXT: &[u8] = b"lnmp-bridge master key check";
const CHECK_AAD: &[u8] = b"settings:master_key_check";

pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut());
        MasterKey(k)
    }

    pub fn from_hex(text: &str, origin: &str) -> Result<MasterKey, MasterKeyError> {
        let text = text.trim();
        let mut k = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, k.as_mut())
            .map_err(|_| MasterKeyError::Malformed(origin.to_owned()))?;
        Ok(MasterKey(k))
    }

    /// The key from LNMP_MASTER_KEY if set, else from `path`.
    pub fn load(path: &Path) -> Result<MasterKey, MasterKeyError> {
        if let Ok(v) = std::env::var(ENV_VAR) {
            return MasterKey::from_hex(&Zeroizing::new(v), ENV_VAR);
        }
        let read_err = |source| MasterKeyError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MasterKeyError::Missing(path.to_owned()));
            }
            Err(e) => return Err(read_err(e)),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(MasterKeyError::Permissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let _ = meta;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read_err)?);
        MasterKey::from_hex(&text, &path.display().to_string())
    }

    /// Writes the key to a new 0600 file (and its folder); never overwrites.
    pub fn create_file(&self, path: &Path) -> Result<(), MasterKeyError> {
        let write_err = |source| MasterKeyError::Write {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(path).map_err(write_err)?;
        let text = Zeroizing::new(hex::encode(&self.0[..]) + "\n");
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(write_err)
    }

    fn subkey(&self, purpose: Purpose) -> Zeroizing<[u8; 32]> {
        let mut k = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(b"lnmp-bridge master key"), self.0.as_ref())
            .expand(purpose.info(), k.as_mut())
            .expect("32 bytes is a valid HKDF output length");
        k
    }

    /// Encrypts `plaintext` for `purpose`, bound to `aad` (the record it belongs to):
    /// `nonce (12) || ChaCha20-Poly1305 ciphertext`.
    pub fn seal(&self, purpose: Purpose, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(Algorithm::ChaCha20Poly1305.encrypt(
            &self.subkey(purpose),
            &nonce,
            aad,
            plaintext,
        ));
        out
    }

    pub fn open(
        &self,
        purpose: Purpose,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, MasterKeyError> {
        let (nonce, ct) = sealed
            .split_first_chunk::<12>()
            .ok_or(MasterKeyError::Damaged)?;
        Algorithm::ChaCha20Poly1305
            .decrypt("sealed record", &self.subkey(purpose), nonce, aad, ct)
            .map_err(|_| MasterKeyError::Damaged)
    }

    /// A value to store beside the data, by which [`MasterKey::verify_check`] knows this key.
    pub fn check_value(&self) -> Vec<u8> {
        self.seal(Purpose::Check, CHECK_AAD, CHECK_PLAINTEXT)
    }

    pub fn verify_check(&self, stored: &[u8]) -> Result<(), MasterKeyError> {
        match self.open(Purpose::Check, CHECK_AAD, stored) {
            Ok(p) if p.as_slice() == CHECK_PLAINTEXT => Ok(()),
            _ => Err(MasterKeyError::Wrong),
        }
    }

    /// 32 bytes derived for `purpose` from `input`, e.g. a legacy sender's seed from its
    /// address: the same address always yields the same identity under this key.
    pub fn derive(&self, purpose: Purpose, input: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut k = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(self.subkey(purpose).as_ref()), input)
            .expand(b"lnmp-bridge/v1/derive", k.as_mut())
            .expect("32 bytes is a valid HKDF output length");
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_check() {
        let k = MasterKey::generate();
        let s = k.seal(Purpose::Seed, b"user:alice", b"secret");
        assert_eq!(
            &k.open(Purpose::Seed, b"user:alice", &s).unwrap()[..],
            b"secret"
        );
        assert!(matches!(
            k.open(Purpose::Seed, b"user:bob", &s),
            Err(MasterKeyError::Damaged)
        ));
        assert!(matches!(
            k.open(Purpose::Check, b"user:alice", &s),
            Err(MasterKeyError::Damaged)
        ));
        let other = MasterKey::generate();
        assert!(matches!(
            other.open(Purpose::Seed, b"user:alice", &s),
            Err(MasterKeyError::Damaged)
        ));
        k.verify_check(&k.check_value()).unwrap();
        assert!(matches!(
            other.verify_check(&k.check_value()),
            Err(MasterKeyError::Wrong)
        ));
        assert_eq!(
            *k.derive(Purpose::LegacySender, b"a@b.c"),
            *k.derive(Purpose::LegacySender, b"a@b.c")
        );
        assert_ne!(
            *k.derive(Purpose::LegacySender, b"a@b.c"),
            *other.derive(Purpose::LegacySender, b"a@b.c")
        );
    }

    #[test]
    fn files_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        assert!(matches!(
            MasterKey::load(&path),
            Err(MasterKeyError::Missing(_))
        ));
        let k = MasterKey::generate();
        k.create_file(&path).unwrap();
        let loaded = MasterKey::load(&path).unwrap();
        assert_eq!(*loaded.0, *k.0);
        assert!(MasterKey::generate().create_file(&path).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            assert!(matches!(
                MasterKey::load(&path),
                Err(MasterKeyError::Permissions { .. })
            ));
        }
        assert!(matches!(
            MasterKey::from_hex("abc", "x"),
            Err(MasterKeyError::Malformed(_))
        ));
    }
}
