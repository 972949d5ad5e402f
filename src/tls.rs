//! TLS for every listener: the operator's certificate from files, a certificate obtained
//! by ACME (src/acme), or a self-signed one made on first start for the configured host
//! name and kept, so mail clients asked to trust it once are not asked again after a
//! restart.
//!
//! Every listener's rustls configuration resolves its certificate through one shared
//! [`CertStore`], so a renewed certificate is served by HTTPS, SMTP, IMAP and the relay
//! from the next handshake on, without a restart.

use crate::config::Config;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    #[error("the certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the self-signed certificate and its key are kept.
pub fn self_signed_paths(config: &Config) -> (PathBuf, PathBuf) {
    let dir = config.server.data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The certificate and key files in use: the operator's, else (with ACME on) the last
/// certificate ACME obtained, else a self-signed pair, made if none was made before.
pub fn certificate_files(config: &Config) -> Result<(PathBuf, PathBuf), TlsError> {
    if !config.tls.cert_file.as_os_str().is_empty() {
        return Ok((config.tls.cert_file.clone(), config.tls.key_file.clone()));
    }
    if config.acme.enabled {
        let files = crate::acme::CertFiles::new(config);
        if files.cert.exists() && files.key.exists() {
            return Ok((files.cert, files.key));
        }
    }
    self_signed_files(config)
}

/// The self-signed certificate and key, made if none was made before.
pub fn self_signed_files(config: &Config) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert, key) = self_signed_paths(config);
    if !cert.exists() || !key.exists() {
        let names = vec![
            config.server.hostname.clone(),
            config.server.domain.clone(),
            "localhost".to_owned(),
        ];
        write_self_signed(&cert, &key, names)?;
        tracing::info!(cert = %cert.display(), "made a self-signed certificate for {}", config.server.hostname);
    }
    Ok((cert, key))
}

fn write_self_signed(cert: &Path, key: &Path, mut names: Vec<String>) -> Result<(), TlsError> {
    names.dedup();
    let made =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let dir = cert.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    write_private(key, made.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, made.cert.pem()).map_err(|source| TlsError::Write {
        path: cert.to_owned(),
        source,
    })
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(data).and_then(|_| f.sync_all()))
        .map_err(|source| TlsError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Reads a PEM chain and key into the form rustls serves, checking they belong together.
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read_err = |path: &Path, e: &dyn std::fmt::Display| TlsError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_err(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(cert, &e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, &e))?;
    certified_key_der(chain, key)
}

/// A chain and key in DER into the form rustls serves, checking they belong together.
pub fn certified_key_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match()?;
    Ok(certified)
}

/// The certificate every listener serves, swapped in place when a new one arrives (an
/// ACME renewal): handshakes after the swap get the new one, connections already open
/// keep theirs.
///
/// It also answers ACME TLS-ALPN-01 challenges (RFC 8737): a handshake offering only the
/// `acme-tls/1` protocol gets the challenge certificate set for its server name.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    alpn_challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

/// The ALPN protocol of TLS-ALPN-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl CertStore {
    pub fn new(key: CertifiedKey) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: RwLock::new(Arc::new(key)),
            alpn_challenges: RwLock::new(HashMap::new()),
        })
    }

    /// Serves `key` to TLS-ALPN-01 validation handshakes for `name` until cleared.
    pub fn set_alpn_challenge(&self, name: &str, key: CertifiedKey) {
        let key = Arc::new(key);
        match self.alpn_challenges.write() {
            Ok(mut m) => m.insert(name.to_ascii_lowercase(), key),
            Err(p) => p.into_inner().insert(name.to_ascii_lowercase(), key),
        };
    }

    pub fn clear_alpn_challenge(&self, name: &str) {
        match self.alpn_challenges.write() {
            Ok(mut m) => m.remove(&name.to_ascii_lowercase()),
            Err(p) => p.into_inner().remove(&name.to_ascii_lowercase()),
        };
    }

    fn alpn_challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        match self.alpn_challenges.read() {
            Ok(m) => m.get(&name).cloned(),
            Err(p) => p.into_inner().get(&name).cloned(),
        }
    }

    /// The store for the certificate the config names (see [`certificate_files`]). An
    /// ACME certificate that does not load (a crash between writing its two files) gives
    /// way to the self-signed one until ACME renews it.
    pub fn from_config(config: &Config) -> Result<Arc<CertStore>, TlsError> {
        let (cert, key) = certificate_files(config)?;
        match certified_key(&cert, &key) {
            Ok(k) => Ok(CertStore::new(k)),
            Err(e) if config.acme.enabled && config.tls.cert_file.as_os_str().is_empty() => {
                tracing::warn!(cert = %cert.display(), error = %e, "the ACME certificate does not load; serving the self-signed one until it is renewed");
                let (cert, key) = self_signed_files(config)?;
                Ok(CertStore::new(certified_key(&cert, &key)?))
            }
            Err(e) => Err(e),
        }
    }

    /// Serves `key` from the next handshake on.
    pub fn replace(&self, key: CertifiedKey) {
        let key = Arc::new(key);
        match self.current.write() {
            Ok(mut g) => *g = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // Only the challenge certificate, or no handshake at all (RFC 8737 section 3).
            return self.alpn_challenge(hello.server_name()?);
        }
        Some(self.current())
    }
}

/// A rustls server configuration from PEM files, with ALPN for `alpn` protocols.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with(CertStore::new(certified_key(cert, key)?), alpn)
}

/// A rustls server configuration serving whatever `certs` holds at each handshake.
pub fn server_config_with(
    certs: Arc<CertStore>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(certs);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new self-signed certificate for `name`, ready to serve.
    fn made(name: &str) -> CertifiedKey {
        let m = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let key = PrivateKeyDer::from_pem_slice(m.signing_key.serialize_pem().as_bytes()).unwrap();
        certified_key_der(vec![m.cert.der().clone()], key).unwrap()
    }

    #[test]
    fn a_replaced_certificate_is_served_from_the_next_handshake() {
        let store = CertStore::new(made("old.example.com"));
        let config = server_config_with(store.clone(), &[]).unwrap();
        let first = store.current().cert[0].clone();
        store.replace(made("new.example.com"));
        let second = store.current().cert[0].clone();
        assert_ne!(first, second);
        // The rustls config resolves through the same store.
        assert_eq!(handshake(config.clone(), None).unwrap(), second);
        store.replace(made("third.example.com"));
        assert_eq!(handshake(config, None).unwrap(), store.current().cert[0]);
    }

    #[test]
    fn tls_alpn_challenges_get_their_own_certificate_only() {
        let store = CertStore::new(made("new.example.com"));
        let config = server_config_with(store.clone(), &[b"http/1.1", ACME_TLS_ALPN]).unwrap();
        assert!(
            handshake(config.clone(), Some(ACME_TLS_ALPN)).is_none(),
            "no challenge set: no handshake"
        );
        let challenge = made("new.example.com");
        let expect = challenge.cert[0].clone();
        store.set_alpn_challenge("New.Example.com", challenge);
        assert_eq!(handshake(config.clone(), Some(ACME_TLS_ALPN)), Some(expect));
        assert_eq!(
            handshake(config.clone(), None),
            Some(store.current().cert[0].clone()),
            "ordinary handshakes are not affected"
        );
        store.clear_alpn_challenge("new.example.com");
        assert!(handshake(config, Some(ACME_TLS_ALPN)).is_none());
    }

    /// A handshake in memory for new.example.com; the certificate the server presented.
    fn handshake(
        config: Arc<ServerConfig>,
        alpn: Option<&[u8]>,
    ) -> Option<CertificateDer<'static>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::relay::tls::AcceptAnything(provider)))
            .with_no_client_auth();
        client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut c =
            rustls::ClientConnection::new(Arc::new(client), "new.example.com".try_into().unwrap())
                .unwrap();
        let mut s = rustls::ServerConnection::new(config).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut buf.as_slice()).unwrap();
            let failed = s.process_new_packets().is_err();
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut buf.as_slice()).unwrap();
            if failed || c.process_new_packets().is_err() {
                return None;
            }
            if !c.is_handshaking() {
                break;
            }
        }
        Some(c.peer_certificates()?[0].clone())
    }

    #[test]
    fn self_signed_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_owned();
        let (cert, key) = certificate_files(&config).unwrap();
        let first = std::fs::read(&cert).unwrap();
        server_config(&cert, &key, &[b"http/1.1"]).unwrap();
        certificate_files(&config).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), first, "kept across restarts");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::write(&cert, "junk").unwrap();
        assert!(matches!(
            server_config(&cert, &key, &[]),
            Err(TlsError::NoCertificate { .. })
        ));
    }
}
