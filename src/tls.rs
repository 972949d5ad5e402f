//! TLS for every listener: the operator's certificate from files, or a self-signed one
//! made on first start for the configured host name and kept, so mail clients asked to
//! trust it once are not asked again after a restart.

use crate::config::Config;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The certificate and key files in use, making a self-signed pair if none is configured
/// and none was made before.
pub fn certificate_files(config: &Config) -> Result<(PathBuf, PathBuf), TlsError> {
    if !config.tls.cert_file.as_os_str().is_empty() {
        return Ok((config.tls.cert_file.clone(), config.tls.key_file.clone()));
    }
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
    write_private(key, made.key_pair.serialize_pem().as_bytes())?;
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

/// A rustls server configuration from PEM files, with ALPN for `alpn` protocols.
pub fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
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
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

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
