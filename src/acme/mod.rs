//! ACME: certificates for the configured host names obtained from an ACME server (Let's
//! Encrypt, or pebble in tests), kept in the data folder and renewed before they expire.
//!
//! - The account is made once and its credentials kept in `data_dir/acme/account.json`
//!   (mode 0600), made again only if the directory URL changes.
//! - HTTP-01 challenges are answered from [`Challenges`], served at
//!   `/.well-known/acme-challenge/<token>` by the plain-HTTP listener (`acme.http_listen`)
//!   and by the HTTP front.
//! - Each certificate has a fresh key; chain and key are written with temp file and rename
//!   to `data_dir/acme/<first host name>/` (`fullchain.pem`, `key.pem` with mode 0600),
//!   then swapped into the [`CertStore`] every listener resolves through.
//! - [`Manager::run`] looks at the expiry at start and every `check_interval_seconds`;
//!   a failure is logged and retried with capped exponential backoff while the current
//!   certificate (or the self-signed one) keeps serving.

use crate::config::{AcmeChallenge, Config};
use crate::tls::{CertStore, TlsError};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an ACME account file: {reason}")]
    AccountFile { path: PathBuf, reason: String },
    #[error("ACME server {directory}: {source}")]
    Server {
        directory: String,
        source: instant_acme::Error,
    },
    #[error("the authorization for {name} is {status}")]
    Authorization { name: String, status: String },
    #[error("the server offers no {kind} challenge for {name}")]
    NoChallenge { kind: &'static str, name: String },
    #[error("the order for {names} is {status}, not ready")]
    Order { names: String, status: String },
    #[error("cannot make the certificate request: {0}")]
    Csr(String),
    #[error("the certificate issued is unusable: {0}")]
    Certificate(#[from] TlsError),
}

/// Where the ACME certificate and its key are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn new(config: &Config) -> CertFiles {
        let names = config.acme_hostnames();
        let first = names
            .first()
            .cloned()
            .unwrap_or_else(|| config.server.hostname.clone());
        let dir = acme_dir(config).join(first);
        CertFiles {
            cert: dir.join("fullchain.pem"),
            key: dir.join("key.pem"),
            dir,
        }
    }
}

/// `data_dir/acme`.
pub fn acme_dir(config: &Config) -> PathBuf {
    config.server.data_dir.join("acme")
}

/// Where the account's credentials are kept.
pub fn account_file(config: &Config) -> PathBuf {
    acme_dir(config).join("account.json")
}

/// The HTTP-01 answers waiting to be fetched: token to key authorization.
#[derive(Debug, Clone, Default)]
pub struct Challenges(Arc<RwLock<HashMap<String, String>>>);

impl Challenges {
    pub fn insert(&self, token: String, key_authorization: String) {
        match self.0.write() {
            Ok(mut m) => m.insert(token, key_authorization),
            Err(p) => p.into_inner().insert(token, key_authorization),
        };
    }

    pub fn remove(&self, token: &str) {
        match self.0.write() {
            Ok(mut m) => m.remove(token),
            Err(p) => p.into_inner().remove(token),
        };
    }

    pub fn get(&self, token: &str) -> Option<String> {
        match self.0.read() {
            Ok(m) => m.get(token).cloned(),
            Err(p) => p.into_inner().get(token).cloned(),
        }
    }
}

/// The route answering HTTP-01 challenges, for the plain-HTTP listener and the HTTP front.
pub fn challenge_router(challenges: Challenges) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(answer_challenge))
        .with_state(challenges)
}

async fn answer_challenge(
    State(challenges): State<Challenges>,
    UrlPath(token): UrlPath<String>,
) -> Response {
    match challenges.get(&token) {
        Some(answer) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such challenge\n").into_response(),
    }
}

/// Whether a certificate expiring at `not_after` is due for renewal at `now` (both Unix
/// seconds).
pub fn needs_renewal(not_after: i64, now: i64, renew_before_days: u64) -> bool {
    let before = i64::try_from(renew_before_days.saturating_mul(86_400)).unwrap_or(i64::MAX);
    now.saturating_add(before) >= not_after
}

/// How long to wait before retry number `failures` (1 for the first): `base` doubled
/// each time, at most `max`.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(max)
}

/// When to look again after a check that found nothing to do: at the check interval, or
/// when renewal falls due if sooner.
pub fn next_check(
    not_after: i64,
    now: i64,
    renew_before_days: u64,
    interval: Duration,
) -> Duration {
    let before = i64::try_from(renew_before_days.saturating_mul(86_400)).unwrap_or(i64::MAX);
    let due_in = not_after.saturating_sub(before).saturating_sub(now).max(1);
    interval.min(Duration::from_secs(due_in as u64))
}

/// The notAfter of a DER certificate, in Unix seconds.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    // serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... } }
    let (_, cert_body, _) = der_item(cert)?;
    let (_, mut tbs, _) = der_item(cert_body)?;
    let (tag, _, rest) = der_item(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    for _ in 0..3 {
        tbs = der_item(tbs)?.2; // serialNumber, signature, issuer
    }
    let (tag, validity, _) = der_item(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let after = der_item(validity)?.2;
    let (tag, time, _) = der_item(after)?;
    let text = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i32 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<u32> { rest.get(i..i + 2)?.parse().ok() };
    if rest.get(10..) != Some("Z") {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(year, field(0)?, field(2)?)?;
    let time = date.and_hms_opt(field(4)?, field(6)?, field(8)?)?;
    Some(time.and_utc().timestamp())
}

/// One DER item: (tag, contents, what follows).
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in input.get(2..2 + n)? {
            len = (len << 8) | *b as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, input.get(header..end)?, input.get(end..)?))
}

/// The expiry of the certificate kept in `files`, if there is one that loads with its
/// key (a pair left mismatched by a crash between the two writes counts as none).
pub fn kept_expiry(files: &CertFiles) -> Option<i64> {
    let kept = crate::tls::certified_key(&files.cert, &files.key).ok()?;
    not_after(kept.cert.first()?)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Writes `data` to `path` through a temporary file in the same folder and a rename, so
/// a reader sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, data: &[u8], private: bool) -> Result<(), AcmeError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let werr = |source| AcmeError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(werr)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if private { 0o600 } else { 0o644 };
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(werr)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    tmp.write_all(data).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
    tmp.persist(path).map_err(|e| werr(e.error))?;
    Ok(())
}

/// A challenge answer put up for the ACME server, taken down after the order.
enum Answer {
    Http(String),
    Alpn(String),
}

/// The self-signed certificate of a TLS-ALPN-01 answer (RFC 8737 section 3): `name` as
/// its only SAN, and the SHA-256 of the key authorization in a critical acmeIdentifier
/// extension.
pub fn alpn_challenge_cert(
    name: &str,
    digest: &[u8],
) -> Result<rustls::sign::CertifiedKey, AcmeError> {
    if digest.len() != 32 {
        return Err(AcmeError::Csr(
            "the key authorization digest is not SHA-256".into(),
        ));
    }
    let err = |e: rcgen::Error| AcmeError::Csr(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(err)?;
    let key = PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        key.serialize_der(),
    ));
    // Not through `certified_key_der`: its check parses the certificate with webpki,
    // which refuses the critical acmeIdentifier extension (the ACME server does not).
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::from)?;
    Ok(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    ))
}

/// What the manager needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub directory_url: String,
    pub contact: String,
    pub hostnames: Vec<String>,
    pub challenge: AcmeChallenge,
    pub ca_file: Option<PathBuf>,
    pub renew_before_days: u64,
    pub check_interval: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        let a = &config.acme;
        Settings {
            directory_url: a.directory_url.clone(),
            contact: a.contact.clone(),
            hostnames: config.acme_hostnames(),
            challenge: a.challenge,
            ca_file: Some(a.ca_file.clone()).filter(|p| !p.as_os_str().is_empty()),
            renew_before_days: a.renew_before_days,
            check_interval: Duration::from_secs(a.check_interval_seconds),
            retry_base: Duration::from_secs(a.retry_base_seconds),
            retry_max: Duration::from_secs(a.retry_max_seconds),
        }
    }
}

/// The account file: credentials and the directory they belong to.
#[derive(serde::Serialize, serde::Deserialize)]
struct AccountRecord {
    directory_url: String,
    credentials: AccountCredentials,
}

/// Obtains and renews the certificate, and swaps it into the listeners' [`CertStore`].
pub struct Manager {
    settings: Settings,
    files: CertFiles,
    account_file: PathBuf,
    certs: Arc<CertStore>,
    challenges: Challenges,
}

impl Manager {
    pub fn new(config: &Config, certs: Arc<CertStore>, challenges: Challenges) -> Manager {
        Manager {
            settings: Settings::from_config(config),
            files: CertFiles::new(config),
            account_file: account_file(config),
            certs,
            challenges,
        }
    }

    /// Checks at once, then every check interval; renews when due, retrying failures
    /// with backoff. Returns when `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let s = &self.settings;
            let now = now_unix();
            let wait = match kept_expiry(&self.files) {
                Some(exp) if !needs_renewal(exp, now, s.renew_before_days) => {
                    failures = 0;
                    next_check(exp, now, s.renew_before_days, s.check_interval)
                }
                kept => {
                    let why = if kept.is_some() {
                        "renewing"
                    } else {
                        "obtaining"
                    };
                    tracing::info!(names = ?s.hostnames, directory = %s.directory_url, "ACME: {why} a certificate");
                    let attempt = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = self.obtain() => r,
                    };
                    match attempt {
                        Ok(exp) => {
                            failures = 0;
                            tracing::info!(
                                names = ?s.hostnames,
                                cert = %self.files.cert.display(),
                                not_after = exp,
                                "ACME: new certificate in service"
                            );
                            s.check_interval
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            let wait = backoff(failures, s.retry_base, s.retry_max);
                            tracing::warn!(
                                error = %e,
                                failures,
                                retry_in_seconds = wait.as_secs(),
                                "ACME: could not obtain a certificate; the current one keeps serving; will retry"
                            );
                            wait
                        }
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn server_err(&self) -> impl Fn(instant_acme::Error) -> AcmeError + '_ {
        |source| AcmeError::Server {
            directory: self.settings.directory_url.clone(),
            source,
        }
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        match &self.settings.ca_file {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        }
        .map_err(self.server_err())
    }

    /// The account, made on first use and kept.
    async fn account(&self) -> Result<Account, AcmeError> {
        let path = &self.account_file;
        match std::fs::read(path) {
            Ok(bytes) => {
                let record: AccountRecord =
                    serde_json::from_slice(&bytes).map_err(|e| AcmeError::AccountFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if record.directory_url == self.settings.directory_url {
                    return self
                        .builder()?
                        .from_credentials(record.credentials)
                        .await
                        .map_err(self.server_err());
                }
                tracing::info!("ACME: the directory URL changed; making an account there");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(AcmeError::Read {
                    path: path.clone(),
                    source,
                });
            }
        }
        let contact: Vec<&str> = if self.settings.contact.is_empty() {
            Vec::new()
        } else {
            vec![self.settings.contact.as_str()]
        };
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.directory_url.clone(),
                None,
            )
            .await
            .map_err(self.server_err())?;
        let record = AccountRecord {
            directory_url: self.settings.directory_url.clone(),
            credentials,
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| AcmeError::AccountFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(path, &json, true)?;
        tracing::info!(account = %account.id(), "ACME: account made");
        Ok(account)
    }

    /// Orders a certificate, answers its challenges, writes it and puts it in service.
    /// Returns its expiry.
    pub async fn obtain(&self) -> Result<i64, AcmeError> {
        let account = self.account().await?;
        let mut answers = Vec::new();
        let issued = self.order(&account, &mut answers).await;
        for a in &answers {
            match a {
                Answer::Http(token) => self.challenges.remove(token),
                Answer::Alpn(name) => self.certs.clear_alpn_challenge(name),
            }
        }
        if let Err(AcmeError::Server {
            source: instant_acme::Error::Api(problem),
            ..
        }) = &issued
            && problem
                .r#type
                .as_deref()
                .is_some_and(|t| t.ends_with(":accountDoesNotExist"))
        {
            // The server forgot the account (a test server restarted, or it was
            // deactivated): the next attempt makes a new one.
            tracing::warn!("ACME: the server does not know the account; a new one will be made");
            let _ = std::fs::remove_file(&self.account_file);
        }
        let (chain_pem, key_pem) = issued?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| AcmeError::Csr(format!("the chain does not parse: {e}")))?;
        let expiry = chain
            .first()
            .and_then(|c| not_after(c))
            .ok_or_else(|| AcmeError::Csr("the certificate's expiry does not parse".into()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| AcmeError::Csr(e.to_string()))?;
        let certified = crate::tls::certified_key_der(chain, key)?;
        // The key first: a crash between the two renames leaves a pair that does not
        // match, which is noticed on start (the self-signed one serves) and renewed.
        write_atomic(&self.files.key, key_pem.as_bytes(), true)?;
        write_atomic(&self.files.cert, chain_pem.as_bytes(), false)?;
        self.certs.replace(certified);
        Ok(expiry)
    }

    async fn order(
        &self,
        account: &Account,
        answers: &mut Vec<Answer>,
    ) -> Result<(String, String), AcmeError> {
        let names = &self.settings.hostnames;
        let ids: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(self.server_err())?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(self.server_err())?;
            let name = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Authorization {
                        name,
                        status: format!("{other:?}"),
                    });
                }
            }
            let (kind, label) = match self.settings.challenge {
                AcmeChallenge::Http01 => (ChallengeType::Http01, "HTTP-01"),
                AcmeChallenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "TLS-ALPN-01"),
            };
            let mut challenge = authz.challenge(kind).ok_or(AcmeError::NoChallenge {
                kind: label,
                name: name.clone(),
            })?;
            let key_authorization = challenge.key_authorization();
            match self.settings.challenge {
                AcmeChallenge::Http01 => {
                    let token = challenge.token.clone();
                    self.challenges
                        .insert(token.clone(), key_authorization.as_str().to_owned());
                    answers.push(Answer::Http(token));
                }
                AcmeChallenge::TlsAlpn01 => {
                    let cert = alpn_challenge_cert(&name, key_authorization.digest().as_ref())?;
                    self.certs.set_alpn_challenge(&name, cert);
                    answers.push(Answer::Alpn(name));
                }
            }
            challenge.set_ready().await.map_err(self.server_err())?;
        }
        let policy = RetryPolicy::new().timeout(Duration::from_secs(120));
        let status = order.poll_ready(&policy).await.map_err(self.server_err())?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Order {
                names: names.join(", "),
                status: format!("{status:?}"),
            });
        }
        let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Csr(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(names.clone())
            .map_err(|e| AcmeError::Csr(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| AcmeError::Csr(e.to_string()))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(self.server_err())?;
        let chain = order
            .poll_certificate(&policy)
            .await
            .map_err(self.server_err())?;
        Ok((chain, key.serialize_pem()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let mut c = Config::default();
        c.server.data_dir = dir.to_owned();
        c.server.hostname = "mail.example.com".into();
        c.acme.enabled = true;
        c
    }

    #[test]
    fn files_live_under_the_data_folder() {
        let mut c = config(Path::new("/srv/lnmp"));
        let f = CertFiles::new(&c);
        assert_eq!(f.dir, PathBuf::from("/srv/lnmp/acme/mail.example.com"));
        assert_eq!(f.cert, f.dir.join("fullchain.pem"));
        assert_eq!(f.key, f.dir.join("key.pem"));
        assert_eq!(
            account_file(&c),
            PathBuf::from("/srv/lnmp/acme/account.json")
        );
        c.acme.hostnames = vec!["mx.example.com".into(), "autoconfig.example.com".into()];
        assert_eq!(
            CertFiles::new(&c).dir,
            PathBuf::from("/srv/lnmp/acme/mx.example.com")
        );
    }

    #[test]
    fn renewal_falls_due_before_expiry() {
        let day = 86_400;
        let now = 1_000 * day;
        assert!(!needs_renewal(now + 31 * day, now, 30));
        assert!(needs_renewal(now + 30 * day, now, 30));
        assert!(needs_renewal(now + 29 * day, now, 30));
        assert!(needs_renewal(now - day, now, 30), "expired");
        assert!(needs_renewal(now + 90 * day, now, u64::MAX), "no overflow");
        let six_hours = Duration::from_secs(6 * 3600);
        assert_eq!(next_check(now + 60 * day, now, 30, six_hours), six_hours);
        assert_eq!(
            next_check(now + 30 * day + 100, now, 30, six_hours),
            Duration::from_secs(100)
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (b, m) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(backoff(1, b, m), Duration::from_secs(60));
        assert_eq!(backoff(2, b, m), Duration::from_secs(120));
        assert_eq!(backoff(3, b, m), Duration::from_secs(240));
        assert_eq!(backoff(7, b, m), m);
        assert_eq!(backoff(u32::MAX, b, m), m);
    }

    #[test]
    fn reads_the_expiry_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["mail.example.com".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 9);
        let cert = params.self_signed(&key).unwrap();
        let expect = chrono::NaiveDate::from_ymd_opt(2031, 7, 9)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        assert_eq!(not_after(cert.der()), Some(expect));
        // GeneralizedTime past 2049.
        params.not_after = rcgen::date_time_ymd(2060, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        assert!(not_after(cert.der()).is_some_and(|t| t > expect));
        assert_eq!(not_after(b"\x30\x05junk"), None);
        assert_eq!(not_after(&[]), None);
    }

    #[test]
    fn tls_alpn_answers_carry_the_digest_in_a_critical_extension() {
        let digest = [7u8; 32];
        let cert = alpn_challenge_cert("mail.example.com", &digest).unwrap();
        let der = cert.cert[0].as_ref();
        // id-pe-acmeIdentifier (1.3.6.1.5.5.7.1.31), critical, OCTET STRING of the digest.
        let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];
        let at = der.windows(oid.len()).position(|w| w == oid).unwrap();
        let rest = &der[at + oid.len()..];
        assert_eq!(&rest[..3], &[0x01, 0x01, 0xff], "critical");
        assert_eq!(&rest[3..7], &[0x04, 0x22, 0x04, 0x20]);
        assert_eq!(&rest[7..39], &digest);
        assert!(der.windows(16).any(|w| w == b"mail.example.com"));
        assert!(alpn_challenge_cert("mail.example.com", &[0; 20]).is_err());
    }

    #[test]
    fn atomic_writes_keep_keys_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        write_atomic(&path, b"one", true).unwrap();
        write_atomic(&path, b"two", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
    }

    #[tokio::test]
    async fn challenges_are_answered_while_pending() {
        let challenges = Challenges::default();
        let _routes = challenge_router(challenges.clone());
        let get = |t: &str| answer_challenge(State(challenges.clone()), UrlPath(t.to_owned()));
        assert_eq!(get("tok").await.status(), StatusCode::NOT_FOUND);
        challenges.insert("tok".into(), "tok.thumb".into());
        let r = get("tok").await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"tok.thumb");
        challenges.remove("tok");
        assert_eq!(get("tok").await.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn kept_certificate_is_preferred_once_present() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let files = CertFiles::new(&c);
        assert_eq!(kept_expiry(&files), None);
        let (self_cert, _) = crate::tls::certificate_files(&c).unwrap();
        assert_ne!(self_cert, files.cert, "self-signed until ACME delivers");
        let made = rcgen::generate_simple_self_signed(vec!["mail.example.com".into()]).unwrap();
        write_atomic(
            &files.key,
            made.signing_key.serialize_pem().as_bytes(),
            true,
        )
        .unwrap();
        write_atomic(&files.cert, made.cert.pem().as_bytes(), false).unwrap();
        assert!(kept_expiry(&files).is_some());
        assert_eq!(crate::tls::certificate_files(&c).unwrap().0, files.cert);
        // A key that does not match (a crash between the two writes): not kept, and the
        // self-signed certificate serves meanwhile.
        let other = rcgen::KeyPair::generate().unwrap();
        write_atomic(&files.key, other.serialize_pem().as_bytes(), true).unwrap();
        assert_eq!(kept_expiry(&files), None);
        let store = crate::tls::CertStore::from_config(&c).unwrap();
        let (self_cert, self_key) = crate::tls::self_signed_files(&c).unwrap();
        let self_signed = crate::tls::certified_key(&self_cert, &self_key).unwrap();
        assert_eq!(store.current().cert, self_signed.cert);
    }
}
