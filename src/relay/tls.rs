//! TLS for the client side (wss:// relays, HTTPS lookups): the public roots, or the
//! certificates an operator names — such as a self-signed daemon's — or, for testing
//! only, no verification at all.

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("cannot read certificates from {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whom a client trusts.
pub enum Trust<'a> {
    /// The public web roots if `public`, and the certificates in these PEM files.
    Roots { public: bool, files: &'a [&'a Path] },
    /// Anything: for tests and first contact with a self-signed relay you chose to trust.
    Insecure,
}

pub fn client_config(trust: Trust<'_>) -> Result<Arc<ClientConfig>, ClientTlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::Roots { public, files } => {
            let mut roots = RootCertStore::empty();
            if public {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            for path in files {
                let err = |e: &dyn std::fmt::Display| ClientTlsError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                };
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| err(&e))? {
                    roots.add(cert.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider())))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts any certificate but still checks handshake signatures, so the session is
/// encrypted to whoever answered; it only does not know who that is.
#[derive(Debug)]
pub(crate) struct AcceptAnything(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
