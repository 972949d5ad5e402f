//! The domain's DKIM keys: made at quickstart (RSA-2048 and Ed25519, as RFC 8463
//! recommends signing with both), kept as PKCS#8 PEM files under data_dir/dkim/, and
//! published as TXT records. Outbound mail is signed with them.

use base64::Engine as _;
use ring::signature::KeyPair as _;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    #[error("cannot read the DKIM key {path}: {problem}")]
    Read { path: PathBuf, problem: String },
    #[error("cannot sign: {0}")]
    Sign(String),
    #[error("cannot make a DKIM key: {0}")]
    Generate(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    pub fn tag(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

/// A key on disk and what to publish for it.
#[derive(Debug, Clone)]
pub struct DkimKey {
    pub selector: String,
    pub algorithm: Algorithm,
    pub private_key_file: PathBuf,
    /// The `p=` value: SPKI DER for RSA, the raw 32-byte key for Ed25519, in base64.
    pub public_key: String,
}

impl DkimKey {
    /// The TXT record's value.
    pub fn txt(&self) -> String {
        match self.algorithm {
            Algorithm::Rsa => format!("v=DKIM1; k=rsa; h=sha256; p={}", self.public_key),
            Algorithm::Ed25519 => format!("v=DKIM1; k=ed25519; p={}", self.public_key),
        }
    }

    /// The record's name under `domain`.
    pub fn name(&self, domain: &str) -> String {
        format!("{}._domainkey.{domain}", self.selector)
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn write_private(path: &Path, pem: &str) -> Result<(), DkimError> {
    use std::io::Write;
    let err = |source| DkimError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
        .and_then(|mut f| f.write_all(pem.as_bytes()).and_then(|_| f.sync_all()))
        .map_err(err)
}

/// Makes an RSA-2048 and an Ed25519 key in `dir`, with selectors `<prefix>r` and `<prefix>e`.
pub fn generate(dir: &Path, prefix: &str) -> Result<Vec<DkimKey>, DkimError> {
    let gen_err = |e: &dyn std::fmt::Display| DkimError::Generate(e.to_string());

    let rsa = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).map_err(|e| gen_err(&e))?;
    let rsa_pem = rsa.to_pkcs8_pem(LineEnding::LF).map_err(|e| gen_err(&e))?;
    let rsa_pub = rsa
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| gen_err(&e))?;
    let rsa_file = dir.join(format!("{prefix}r.rsa.pem"));
    write_private(&rsa_file, &rsa_pem)?;

    let rng = ring::rand::SystemRandom::new();
    let ed_pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| gen_err(&e))?;
    let ed =
        ring::signature::Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).map_err(|e| gen_err(&e))?;
    let ed_pem = pem_encode("PRIVATE KEY", ed_pkcs8.as_ref());
    let ed_file = dir.join(format!("{prefix}e.ed25519.pem"));
    write_private(&ed_file, &ed_pem)?;

    Ok(vec![
        DkimKey {
            selector: format!("{prefix}r"),
            algorithm: Algorithm::Rsa,
            private_key_file: rsa_file,
            public_key: b64(rsa_pub.as_bytes()),
        },
        DkimKey {
            selector: format!("{prefix}e"),
            algorithm: Algorithm::Ed25519,
            private_key_file: ed_file,
            public_key: b64(ed.public_key().as_ref()),
        },
    ])
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The header fields signed when present. From is listed twice so a From added on
/// the way breaks the signature (over-signing, RFC 6376 8.15).
const SIGNED_HEADERS: [&str; 16] = [
    "From",
    "From",
    "Reply-To",
    "Sender",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
    "X-LNMP-Hops",
];

/// Signs outgoing mail with every key of the domain (RSA for every verifier,
/// Ed25519 for those that know it).
pub struct Signer {
    signers: Vec<(
        String,
        mail_auth::dkim::DkimSigner<mail_auth::common::crypto::DkimKey, mail_auth::dkim::Done>,
    )>,
}

impl Signer {
    /// Loads `<selector>.rsa.pem` and `<selector>.ed25519.pem` from `dir` (what
    /// quickstart writes). A missing folder means no keys: mail leaves unsigned.
    pub fn load(dir: &Path, domain: &str) -> Result<Signer, DkimError> {
        use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey};
        use mail_auth::dkim::{Canonicalization, DkimSigner};
        use rustls_pki_types::pem::PemObject as _;
        let mut signers = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Signer { signers });
            }
            Err(e) => {
                return Err(DkimError::Read {
                    path: dir.to_owned(),
                    problem: e.to_string(),
                });
            }
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let (selector, kind) = if let Some(sel) = name.strip_suffix(".rsa.pem") {
                (sel, Algorithm::Rsa)
            } else if let Some(sel) = name.strip_suffix(".ed25519.pem") {
                (sel, Algorithm::Ed25519)
            } else {
                continue;
            };
            let err = |problem: String| DkimError::Read {
                path: path.clone(),
                problem,
            };
            let pem = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
            let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| err(e.to_string()))?;
            let key = match kind {
                Algorithm::Rsa => {
                    DkimKey::Rsa(RsaKey::from_key_der(der).map_err(|e| err(e.to_string()))?)
                }
                Algorithm::Ed25519 => DkimKey::Ed25519(
                    Ed25519Key::from_pkcs8_der(der.secret_der()).map_err(|e| err(e.to_string()))?,
                ),
            };
            // Relaxed canonicalization for header and body, so the signatures survive
            // the usual rewrapping on the way.
            let signer = DkimSigner::from_key(key)
                .domain(domain)
                .selector(selector)
                .headers(SIGNED_HEADERS)
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed);
            signers.push((selector.to_owned(), signer));
        }
        Ok(Signer { signers })
    }

    /// The selectors mail is signed with.
    pub fn selectors(&self) -> Vec<&str> {
        self.signers.iter().map(|(s, _)| s.as_str()).collect()
    }

    /// The DKIM-Signature fields for `message` (CRLF line ends, as it will be sent),
    /// each ending in CRLF, to put in front of it.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DkimError> {
        use mail_auth::common::headers::HeaderWriter as _;
        let mut out = Vec::new();
        for (_, signer) in &self.signers {
            let signature = signer
                .sign(message)
                .map_err(|e| DkimError::Sign(e.to_string()))?;
            out.extend_from_slice(signature.to_header().as_bytes());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_private_and_published() {
        let dir = tempfile::tempdir().unwrap();
        let keys = generate(dir.path(), "t1").unwrap();
        assert_eq!(keys.len(), 2);
        assert!(
            keys[0]
                .txt()
                .starts_with("v=DKIM1; k=rsa; h=sha256; p=MIIBIjAN")
        );
        assert!(keys[1].txt().starts_with("v=DKIM1; k=ed25519; p="));
        assert_eq!(keys[1].public_key.len(), 44, "32 raw bytes in base64");
        for k in &keys {
            let pem = std::fs::read_to_string(&k.private_key_file).unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        }
        assert!(
            generate(dir.path(), "t1").is_err(),
            "never overwrites a key"
        );
        // The Ed25519 PEM reads back as the key whose public half is published.
        use rustls_pki_types::pem::PemObject as _;
        let pem = std::fs::read_to_string(&keys[1].private_key_file).unwrap();
        let der = rustls_pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        let kp = ring::signature::Ed25519KeyPair::from_pkcs8(der.secret_der()).unwrap();
        assert_eq!(b64(kp.public_key().as_ref()), keys[1].public_key);
    }
}
