//! `lnmp-bridge doctor`: checks what a working domain needs and says what to fix.
//!
//! - DNS: the records quickstart asks for ([`crate::quickstart::expected_records`]),
//!   through the configured resolver (`dns.nameservers`), so tests feed it records. The
//!   host's address, MX, SPF, DMARC and each DKIM key (compared with the key files) are
//!   needed for mail to flow: a problem is a FAIL. The client-discovery records
//!   (autoconfig, RFC 6186 SRV) only help mail clients: a problem is a warning.
//! - The certificate the HTTPS listener serves (or, with the daemon stopped, the
//!   configured one): names, expiry, and whether the public roots trust it.
//! - Each listener of the running daemon answers as its protocol should.
//! - The database: reachable, migrated, and opened by the master key.
//! - The Lightning backend answers ([`crate::lightning::Backend::health`]).

use crate::config::{Config, LightningBackend};
use crate::dkim::{Algorithm, DkimKey};
use crate::smtp::Listener;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::proto::rr::{RData, RecordType};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpStream;

/// Certificates with fewer days left than this are a warning.
pub const WARN_DAYS: i64 = 14;
/// How long a listener may take to answer.
const LISTENER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, e.g. "dns DKIM lnmp1r._domainkey.example.com".
    pub name: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// For a warning or failure: what to do, in a plain sentence.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn bad(
        status: Status,
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every check, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .count()
    }

    /// The first check whose name contains `part`.
    pub fn find(&self, part: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name.contains(part))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "{:<4}  {}: {}", c.status.to_string(), c.name, c.detail)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "      fix: {fix}")?;
            }
        }
        write!(
            f,
            "{} checks: {} ok, {} warnings, {} failed",
            self.checks.len(),
            self.checks.len() - self.warnings() - self.failures(),
            self.warnings(),
            self.failures()
        )
    }
}

/// Where the daemon's listeners are, to knock on.
#[derive(Debug, Clone)]
pub struct Listeners {
    pub smtp: Vec<(Listener, SocketAddr)>,
    /// (implicit TLS?, address).
    pub imap: Vec<(bool, SocketAddr)>,
    pub http: SocketAddr,
    pub http_tls: bool,
    pub relay: Option<SocketAddr>,
    pub relay_tls: bool,
}

/// An address to connect to for one to listen on: the unspecified address is reached
/// on loopback.
fn reachable(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), a.port())
        }
        _ => a,
    }
}

impl Listeners {
    /// The listeners the config names (on this machine).
    pub fn from_config(config: &Config) -> Listeners {
        Listeners {
            smtp: config
                .smtp_listeners()
                .into_iter()
                .map(|(k, a)| (k, reachable(a)))
                .collect(),
            imap: config
                .imap_listeners()
                .into_iter()
                .map(|(t, a)| (t, reachable(a)))
                .collect(),
            http: reachable(config.http_listen()),
            http_tls: config.http.tls,
            relay: config
                .relay
                .enabled
                .then(|| reachable(config.relay_listen())),
            relay_tls: config.relay.tls,
        }
    }

    /// The listeners of a daemon started in this process.
    pub fn from_running(running: &crate::daemon::Running, config: &Config) -> Listeners {
        Listeners {
            smtp: running.smtp.clone(),
            imap: running.imap.clone(),
            http: running.http,
            http_tls: running.http_tls,
            relay: running.relay,
            relay_tls: config.relay.tls,
        }
    }
}

/// Runs every check.
pub async fn run(config: &Config, listeners: &Listeners) -> Report {
    let mut checks = Vec::new();
    let (db_checks, postmaster) = check_database(config).await;
    checks.extend(check_dns(config, &postmaster).await);
    let (listener_checks, served) = check_listeners(listeners).await;
    checks.extend(check_certificate(config, served));
    checks.extend(listener_checks);
    checks.extend(db_checks);
    Report { checks }
}

// ---------------------------------------------------------------------------------
// DNS

/// The resolver the daemon uses (`dns.nameservers`, else the system's).
fn resolver(config: &Config) -> Result<TokioResolver, String> {
    crate::smtp::verify::authenticator(&config.dns)
        .map(|a| a.resolver().clone())
        .map_err(|e| e.to_string())
}

/// What a lookup found: the records, none, or no answer at all.
enum Found<T> {
    Some(Vec<T>),
    None,
    Error(String),
}

async fn lookup(resolver: &TokioResolver, name: &str, kind: RecordType) -> Found<RData> {
    match resolver.lookup(name, kind).await {
        Ok(l) => {
            let v: Vec<RData> = l
                .answers()
                .iter()
                .filter(|r| r.record_type() == kind)
                .map(|r| r.data.clone())
                .collect();
            if v.is_empty() {
                Found::None
            } else {
                Found::Some(v)
            }
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Found::None,
        Err(e) => Found::Error(e.to_string()),
    }
}

async fn txt(resolver: &TokioResolver, name: &str) -> Found<String> {
    match lookup(resolver, name, RecordType::TXT).await {
        Found::Some(v) => Found::Some(
            v.into_iter()
                .filter_map(|r| match r {
                    RData::TXT(t) => {
                        Some(String::from_utf8_lossy(&t.txt_data.concat()).into_owned())
                    }
                    _ => None,
                })
                .collect(),
        ),
        Found::None => Found::None,
        Found::Error(e) => Found::Error(e),
    }
}

fn no_answer(name: &str, e: &str) -> Check {
    Check::bad(
        Status::Fail,
        name,
        format!("no answer from the resolver: {e}"),
        "check that the name servers in dns.nameservers (or /etc/resolv.conf) answer, then run doctor again",
    )
}

fn bare(name: &str) -> &str {
    name.trim_end_matches('.')
}

/// The `tag=value` pairs of a DKIM, DMARC or similar record.
fn tags(value: &str) -> Vec<(String, String)> {
    value
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.chars().filter(|c| !c.is_whitespace()).collect(),
            )
        })
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The DKIM keys in the config's DKIM folder, with the records they need.
pub fn dkim_keys(dir: &Path) -> Result<Vec<DkimKey>, String> {
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    use rustls_pki_types::pem::PemObject as _;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    let mut keys = Vec::new();
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let (selector, algorithm) = if let Some(s) = name.strip_suffix(".rsa.pem") {
            (s.to_owned(), Algorithm::Rsa)
        } else if let Some(s) = name.strip_suffix(".ed25519.pem") {
            (s.to_owned(), Algorithm::Ed25519)
        } else {
            continue;
        };
        let err = |e: &dyn fmt::Display| format!("{}: {e}", path.display());
        let pem = std::fs::read(&path).map_err(|e| err(&e))?;
        let der =
            rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|e| err(&e))?;
        let public = match algorithm {
            Algorithm::Rsa => rsa::RsaPrivateKey::from_pkcs8_der(der.secret_pkcs8_der())
                .map_err(|e| err(&e))?
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| err(&e))?
                .as_bytes()
                .to_vec(),
            Algorithm::Ed25519 => {
                ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
                    .map_err(|e| err(&e))?
                    .public_key()
                    .as_ref()
                    .to_vec()
            }
        };
        keys.push(DkimKey {
            selector,
            algorithm,
            private_key_file: path.clone(),
            public_key: base64::engine::general_purpose::STANDARD.encode(public),
        });
    }
    Ok(keys)
}

/// Checks the records quickstart asked for.
pub async fn check_dns(config: &Config, postmaster: &str) -> Vec<Check> {
    let domain = &config.server.domain;
    let hostname = &config.server.hostname;
    let resolver = match resolver(config) {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::bad(
                Status::Fail,
                "dns",
                format!("cannot set up the resolver: {e}"),
                "fix dns.nameservers in the config (ip or ip:port), or /etc/resolv.conf",
            )];
        }
    };
    let keys = match dkim_keys(&config.dkim_dir()) {
        Ok(k) => k,
        Err(e) => {
            return vec![Check::bad(
                Status::Fail,
                "dkim keys",
                format!("cannot read a DKIM key: {e}"),
                "put back the DKIM key files quickstart made (from a backup), or make new ones and publish their records",
            )];
        }
    };
    let mut checks = Vec::new();
    if keys.is_empty() {
        checks.push(Check::bad(
            Status::Warn,
            "dkim keys",
            format!("no DKIM keys in {}: mail leaves unsigned", config.dkim_dir().display()),
            "put the DKIM keys in that folder (`<selector>.rsa.pem`, `<selector>.ed25519.pem`) and publish their TXT records; many receivers junk unsigned mail",
        ));
    }
    for record in crate::quickstart::expected_records(domain, hostname, postmaster, &keys) {
        let check = match (record.kind, record.name.as_str()) {
            ("A", _) => check_address(&resolver, hostname).await,
            // Checked with the A record: either will do.
            ("AAAA", _) => continue,
            ("MX", _) => check_mx(&resolver, domain, hostname).await,
            ("TXT", n) if n.starts_with("_dmarc.") => check_dmarc(&resolver, &record).await,
            ("TXT", n) if n.contains("._domainkey.") => {
                let key = keys.iter().find(|k| n == format!("{}.", k.name(domain)));
                check_dkim(&resolver, &record, key).await
            }
            ("TXT", _) => check_spf(&resolver, &record).await,
            ("CNAME", _) => check_autoconfig(&resolver, &record, hostname).await,
            ("SRV", _) => check_srv(&resolver, &record).await,
            _ => continue,
        };
        checks.push(check);
    }
    checks
}

async fn check_address(resolver: &TokioResolver, hostname: &str) -> Check {
    let name = format!("dns A/AAAA {hostname}");
    match resolver.lookup_ip(format!("{hostname}.")).await {
        Ok(ips) => {
            let ips: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
            if ips.is_empty() {
                missing_address(&name, hostname)
            } else {
                Check::ok(name, ips.join(", "))
            }
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => missing_address(&name, hostname),
        Err(e) => no_answer(&name, &e.to_string()),
    }
}

fn missing_address(name: &str, hostname: &str) -> Check {
    Check::bad(
        Status::Fail,
        name,
        "no address",
        format!(
            "publish an A record (and an AAAA record if the server has IPv6) at {hostname} with this server's public address"
        ),
    )
}

async fn check_mx(resolver: &TokioResolver, domain: &str, hostname: &str) -> Check {
    let name = format!("dns MX {domain}");
    let fix = format!("publish this MX record at {domain}: 10 {hostname}.");
    match lookup(resolver, &format!("{domain}."), RecordType::MX).await {
        Found::Some(v) => {
            let targets: Vec<String> = v
                .iter()
                .filter_map(|r| match r {
                    RData::MX(mx) => Some(format!(
                        "{} {}",
                        mx.preference,
                        bare(&mx.exchange.to_ascii()).to_ascii_lowercase()
                    )),
                    _ => None,
                })
                .collect();
            if targets
                .iter()
                .any(|t| t.split_once(' ').is_some_and(|(_, h)| h == hostname))
            {
                Check::ok(name, targets.join(", "))
            } else {
                Check::bad(
                    Status::Fail,
                    name,
                    format!("points elsewhere: {}", targets.join(", ")),
                    format!(
                        "mail for {domain} does not reach this server: {fix} (and remove the others unless they forward here)"
                    ),
                )
            }
        }
        Found::None => Check::bad(Status::Fail, name, "missing", fix),
        Found::Error(e) => no_answer(&name, &e),
    }
}

async fn check_spf(resolver: &TokioResolver, record: &crate::quickstart::DnsRecord) -> Check {
    let domain = bare(&record.name);
    let name = format!("dns SPF {domain}");
    let fix = format!("publish this TXT record at {domain}: {}", record.value);
    let found = match txt(resolver, &record.name).await {
        Found::Some(v) => v,
        Found::None => Vec::new(),
        Found::Error(e) => return no_answer(&name, &e),
    };
    let spf: Vec<&String> = found
        .iter()
        .filter(|t| t.to_ascii_lowercase().starts_with("v=spf1"))
        .collect();
    match spf.as_slice() {
        [] => Check::bad(Status::Fail, name, "missing", fix),
        [one] => {
            let terms: Vec<String> = one
                .split_whitespace()
                .map(|t| t.to_ascii_lowercase())
                .collect();
            if terms.iter().any(|t| t == "+all" || t == "all") {
                Check::bad(
                    Status::Fail,
                    name,
                    format!("\"{one}\" lets anyone send as {domain}"),
                    format!("replace it with: {}", record.value),
                )
            } else if !terms.iter().any(|t| t == "mx" || t == "+mx") {
                Check::bad(
                    Status::Warn,
                    name,
                    format!("\"{one}\" does not name the MX"),
                    format!(
                        "make sure it allows this server's address, e.g. replace it with: {}",
                        record.value
                    ),
                )
            } else if !terms.iter().any(|t| t == "-all" || t == "~all") {
                Check::bad(
                    Status::Warn,
                    name,
                    format!("\"{one}\" does not end in -all"),
                    format!(
                        "end it in -all so others cannot pass as {domain}: {}",
                        record.value
                    ),
                )
            } else {
                Check::ok(name, (*one).clone())
            }
        }
        many => Check::bad(
            Status::Fail,
            name,
            format!(
                "{} SPF records: receivers treat that as an error",
                many.len()
            ),
            format!(
                "keep one TXT record starting v=spf1 at {domain}, e.g.: {}",
                record.value
            ),
        ),
    }
}

async fn check_dmarc(resolver: &TokioResolver, record: &crate::quickstart::DnsRecord) -> Check {
    let at = bare(&record.name);
    let name = format!("dns DMARC {at}");
    let fix = format!("publish this TXT record at {at}: {}", record.value);
    let found = match txt(resolver, &record.name).await {
        Found::Some(v) => v,
        Found::None => Vec::new(),
        Found::Error(e) => return no_answer(&name, &e),
    };
    let dmarc: Vec<&String> = found
        .iter()
        .filter(|t| {
            t.to_ascii_uppercase()
                .replace(' ', "")
                .starts_with("V=DMARC1")
        })
        .collect();
    match dmarc.as_slice() {
        [] => Check::bad(Status::Fail, name, "missing", fix),
        [one] => match tag(&tags(one), "p") {
            Some("reject") | Some("quarantine") => Check::ok(name, (*one).clone()),
            Some("none") => Check::bad(
                Status::Warn,
                name,
                format!("\"{one}\" asks receivers to do nothing with forged mail"),
                format!("once your mail passes, make it p=reject: {}", record.value),
            ),
            _ => Check::bad(
                Status::Fail,
                name,
                format!("\"{one}\" has no valid p= policy"),
                format!("replace it with: {}", record.value),
            ),
        },
        many => Check::bad(
            Status::Fail,
            name,
            format!("{} DMARC records: receivers ignore them all", many.len()),
            format!("keep one: {}", record.value),
        ),
    }
}

async fn check_dkim(
    resolver: &TokioResolver,
    record: &crate::quickstart::DnsRecord,
    key: Option<&DkimKey>,
) -> Check {
    let at = bare(&record.name);
    let name = format!("dns DKIM {at}");
    let fix = format!("publish this TXT record at {at}: {}", record.value);
    let found = match txt(resolver, &record.name).await {
        Found::Some(v) => v,
        Found::None => Vec::new(),
        Found::Error(e) => return no_answer(&name, &e),
    };
    let want = tags(&record.value);
    let want_p = tag(&want, "p").unwrap_or("");
    let records: Vec<Vec<(String, String)>> = found
        .iter()
        .map(|t| tags(t))
        .filter(|t| tag(t, "p").is_some())
        .collect();
    if records.is_empty() {
        return Check::bad(Status::Fail, name, "missing", fix);
    }
    let file = key.map_or(String::new(), |k| k.private_key_file.display().to_string());
    if records.iter().any(|t| tag(t, "p") == Some(want_p)) {
        let kind = tag(&want, "k").unwrap_or("rsa");
        let ok_kind = records
            .iter()
            .any(|t| tag(t, "p") == Some(want_p) && tag(t, "k").unwrap_or("rsa") == kind);
        if ok_kind {
            Check::ok(name, format!("matches {file}"))
        } else {
            Check::bad(
                Status::Fail,
                name,
                format!("the key matches but k= is not {kind}"),
                format!("replace the TXT record at {at} with: {}", record.value),
            )
        }
    } else {
        Check::bad(
            Status::Fail,
            name,
            format!("publishes another key than {file}: receivers will fail every signature"),
            format!("replace the TXT record at {at} with: {}", record.value),
        )
    }
}

async fn check_autoconfig(
    resolver: &TokioResolver,
    record: &crate::quickstart::DnsRecord,
    hostname: &str,
) -> Check {
    let at = bare(&record.name);
    let name = format!("dns autoconfig {at}");
    let fix = format!(
        "publish this CNAME record at {at}: {}  (mail clients such as Thunderbird find their settings there)",
        record.value
    );
    match lookup(resolver, &record.name, RecordType::CNAME).await {
        Found::Some(v) => {
            let targets: Vec<String> = v
                .iter()
                .filter_map(|r| match r {
                    RData::CNAME(c) => Some(bare(&c.0.to_ascii()).to_ascii_lowercase()),
                    _ => None,
                })
                .collect();
            if targets.iter().any(|t| t == hostname) {
                Check::ok(name, format!("CNAME {hostname}"))
            } else {
                Check::bad(
                    Status::Warn,
                    name,
                    format!("CNAME {}", targets.join(", ")),
                    fix,
                )
            }
        }
        // An address of its own is fine if it is this server's.
        Found::None => match resolver.lookup_ip(record.name.as_str()).await {
            Ok(ips) if ips.iter().next().is_some() => Check::ok(
                name,
                ips.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            _ => Check::bad(Status::Warn, name, "missing", fix),
        },
        Found::Error(e) => no_answer(&name, &e),
    }
}

async fn check_srv(resolver: &TokioResolver, record: &crate::quickstart::DnsRecord) -> Check {
    let at = bare(&record.name);
    let name = format!("dns SRV {at}");
    let fix = format!(
        "publish this SRV record at {at}: {}  (optional: some mail clients find the server by it)",
        record.value
    );
    let mut want = record.value.split_whitespace().skip(2);
    let (want_port, want_target) = (
        want.next().unwrap_or(""),
        bare(want.next().unwrap_or("")).to_owned(),
    );
    match lookup(resolver, &record.name, RecordType::SRV).await {
        Found::Some(v) => {
            let found: Vec<(String, String)> = v
                .iter()
                .filter_map(|r| match r {
                    RData::SRV(s) => Some((
                        s.port.to_string(),
                        bare(&s.target.to_ascii()).to_ascii_lowercase(),
                    )),
                    _ => None,
                })
                .collect();
            if found
                .iter()
                .any(|(p, t)| p == want_port && *t == want_target)
            {
                Check::ok(name, format!("{want_target}:{want_port}"))
            } else {
                let shown: Vec<String> = found.iter().map(|(p, t)| format!("{t}:{p}")).collect();
                Check::bad(Status::Warn, name, shown.join(", "), fix)
            }
        }
        Found::None => Check::bad(Status::Warn, name, "missing", fix),
        Found::Error(e) => Check::bad(Status::Warn, name, format!("no answer: {e}"), fix),
    }
}

// ---------------------------------------------------------------------------------
// Certificate

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names of the subjectAltName extension.
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// One DER element: (tag, contents, what follows).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// An X.509 UTCTime (0x17) or GeneralizedTime (0x18), in unix seconds.
fn der_time(tag: u8, value: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (year, rest) = match tag {
        0x17 => {
            let yy = num(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        0x18 => (num(0..4)?, 4),
        _ => return None,
    };
    let field = |i: usize| num(rest + 2 * i..rest + 2 * i + 2);
    let (mo, d, h, mi, se) = (field(0)?, field(1)?, field(2)?, field(3)?, field(4)?);
    Some(crate::imap::search::days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Reads the names and validity of a DER certificate.
pub fn cert_info(cert: &[u8]) -> Option<CertInfo> {
    let (_, cert, _) = der(cert)?;
    let (_, tbs, _) = der(cert)?;
    let mut rest = tbs;
    let mut items = Vec::new();
    while !rest.is_empty() {
        let (tag, value, next) = der(rest)?;
        items.push((tag, value));
        rest = next;
    }
    // [0] version is optional; then serial, signature, issuer, validity.
    let skip = usize::from(items.first()?.0 == 0xa0);
    let validity = items.get(skip + 3)?.1;
    let (t1, v1, rest) = der(validity)?;
    let (t2, v2, _) = der(rest)?;
    let mut names = Vec::new();
    if let Some((_, ext)) = items.iter().find(|(t, _)| *t == 0xa3) {
        let (_, mut list, _) = der(ext)?;
        while !list.is_empty() {
            let (_, one, next) = der(list)?;
            list = next;
            let (_, oid, mut fields) = der(one)?;
            if oid != [0x55, 0x1d, 0x11] {
                continue;
            }
            // critical BOOLEAN, maybe; then the OCTET STRING.
            let mut octets = None;
            while !fields.is_empty() {
                let (t, v, next) = der(fields)?;
                if t == 0x04 {
                    octets = Some(v);
                }
                fields = next;
            }
            let (_, mut general, _) = der(octets?)?;
            while !general.is_empty() {
                let (t, v, next) = der(general)?;
                if t == 0x82 {
                    names.push(String::from_utf8_lossy(v).to_ascii_lowercase());
                }
                general = next;
            }
        }
    }
    Some(CertInfo {
        names,
        not_before: der_time(t1, v1)?,
        not_after: der_time(t2, v2)?,
    })
}

fn name_matches(pattern: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, parent)| !label.is_empty() && parent == rest),
        None => pattern == host,
    }
}

/// A certificate chain the HTTPS listener served, and whether the public roots trust
/// it for the host name.
#[derive(Debug, Clone)]
pub struct Served {
    pub chain: Vec<Vec<u8>>,
    pub trusted: bool,
}

/// The configured certificate file (the operator's, else the self-signed one or the
/// one ACME left in the data folder), first certificate only; None if there is none.
fn configured_cert(config: &Config) -> Option<(PathBuf, Vec<u8>)> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let acme = crate::acme::CertFiles::new(config).cert;
    let path = if !config.tls.cert_file.as_os_str().is_empty() {
        config.tls.cert_file.clone()
    } else if config.acme.enabled && acme.is_file() {
        acme
    } else {
        crate::tls::self_signed_paths(config).0
    };
    let first = CertificateDer::pem_file_iter(&path).ok()?.next()?.ok()?;
    Some((path, first.to_vec()))
}

/// Checks the certificate's names and expiry.
pub fn check_certificate(config: &Config, served: Option<Served>) -> Vec<Check> {
    let hostname = &config.server.hostname;
    let (source, der, trusted) = match served {
        Some(s) if !s.chain.is_empty() => (
            "served by the HTTPS listener".to_owned(),
            s.chain[0].clone(),
            Some(s.trusted),
        ),
        _ => match configured_cert(config) {
            Some((path, der)) => (path.display().to_string(), der, None),
            None => {
                return vec![Check::bad(
                    Status::Warn,
                    "certificate",
                    "none served or configured yet",
                    "start the daemon (it makes a self-signed certificate, or obtains one with ACME), or set tls.cert_file and tls.key_file",
                )];
            }
        },
    };
    let name = format!("certificate ({source})");
    let Some(info) = cert_info(&der) else {
        return vec![Check::bad(
            Status::Fail,
            name,
            "cannot read it",
            "replace the certificate with a valid PEM certificate for this host",
        )];
    };
    let now = i64::try_from(crate::store::unix_now()).unwrap_or(i64::MAX);
    let days_left = (info.not_after - now).div_euclid(86_400);
    let mut checks = Vec::new();
    if info.names.iter().any(|n| name_matches(n, hostname)) {
        checks.push(Check::ok(format!("{name} names"), info.names.join(", ")));
    } else {
        checks.push(Check::bad(
            Status::Fail,
            format!("{name} names"),
            format!("made for {}, not {hostname}", info.names.join(", ")),
            format!(
                "get a certificate for {hostname} (turn ACME on, or set tls.cert_file to one that names it); clients will refuse this one"
            ),
        ));
    }
    checks.push(if info.not_after <= now {
        Check::bad(
            Status::Fail,
            format!("{name} expiry"),
            format!("expired {} days ago", -days_left),
            "renew the certificate now: clients refuse it",
        )
    } else if info.not_before > now {
        Check::bad(
            Status::Fail,
            format!("{name} expiry"),
            "not valid yet",
            "check this machine's clock, or the certificate's dates",
        )
    } else if days_left < WARN_DAYS {
        Check::bad(
            Status::Warn,
            format!("{name} expiry"),
            format!("{days_left} days left"),
            "renew the certificate before it expires (ACME renews by itself; see the log if it does not)",
        )
    } else {
        Check::ok(format!("{name} expiry"), format!("{days_left} days left"))
    });
    match trusted {
        Some(false) => checks.push(Check::bad(
            Status::Warn,
            format!("{name} trust"),
            "not trusted by the public roots (self-signed?)",
            "mail clients and other servers will warn or refuse: turn ACME on, or set tls.cert_file to a certificate from a public CA",
        )),
        Some(true) => checks.push(Check::ok(format!("{name} trust"), "trusted by the public roots")),
        None => {}
    }
    checks
}

// ---------------------------------------------------------------------------------
// Listeners

/// A verifier that accepts any certificate and keeps what it was shown, checking it
/// against the public roots on the side.
#[derive(Debug)]
struct Recorder {
    roots: Arc<rustls::client::WebPkiServerVerifier>,
    seen: Mutex<Option<Served>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let trusted = self
            .roots
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .is_ok();
        let mut chain = vec![end_entity.to_vec()];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(Served { chain, trusted });
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client that takes any certificate (the doctor reports on it instead) and
/// keeps the last one seen.
fn recording_tls(alpn: &[&[u8]]) -> Result<(Arc<rustls::ClientConfig>, Arc<Recorder>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let recorder = Arc::new(Recorder {
        roots: verifier,
        seen: Mutex::new(None),
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), recorder))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn open(
    addr: SocketAddr,
    tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
) -> Result<Box<dyn Io>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    match tls {
        None => Ok(Box::new(tcp)),
        Some((config, host)) => {
            let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| e.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            Ok(Box::new(stream))
        }
    }
}

/// Connects and reads the greeting line, which must start with `want`.
async fn greeting(
    addr: SocketAddr,
    tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
    want: &str,
) -> Result<String, String> {
    let work = async {
        let stream = open(addr, tls).await?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .map_err(|e| format!("no greeting: {e}"))?;
        let line = line.trim_end().to_owned();
        if line.starts_with(want) {
            Ok(line)
        } else if line.is_empty() {
            Err("closed the connection without a greeting".to_owned())
        } else {
            Err(format!("greeted with {line:?}, not {want}"))
        }
    };
    tokio::time::timeout(LISTENER_TIMEOUT, work)
        .await
        .map_err(|_| "no answer in 5 seconds".to_owned())?
}

async fn healthz(
    addr: SocketAddr,
    tls: Option<(&Arc<rustls::ClientConfig>, &str)>,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut stream = open(addr, tls).await?;
        let host = tls.map_or("localhost", |(_, h)| h);
        stream
            .write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        let _ = stream.take(64 * 1024).read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        let status = answer.lines().next().unwrap_or("").to_owned();
        if status.split_whitespace().nth(1) == Some("200") {
            Ok(status)
        } else if status.is_empty() {
            Err("no HTTP answer".to_owned())
        } else {
            Err(format!("/healthz answered {status:?}"))
        }
    };
    tokio::time::timeout(LISTENER_TIMEOUT, work)
        .await
        .map_err(|_| "no answer in 5 seconds".to_owned())?
}

async fn websocket(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<String, String> {
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{addr}/");
    let connector = tls.map(|c| tokio_tungstenite::Connector::Rustls(c.clone()));
    let connecting = tokio_tungstenite::connect_async_tls_with_config(&url, None, false, connector);
    match tokio::time::timeout(LISTENER_TIMEOUT, connecting).await {
        Err(_) => Err("no answer in 5 seconds".into()),
        Ok(Err(e)) => Err(format!("WebSocket handshake failed: {e}")),
        Ok(Ok((mut ws, response))) => {
            let _ = ws.close(None).await;
            Ok(format!("WebSocket handshake ({})", response.status()))
        }
    }
}

/// Knocks on every listener. Returns the checks and the certificate the HTTPS listener
/// served.
pub async fn check_listeners(l: &Listeners) -> (Vec<Check>, Option<Served>) {
    let (tls, recorder) = match recording_tls(&[]) {
        Ok(t) => t,
        Err(e) => {
            return (
                vec![Check::bad(
                    Status::Fail,
                    "listeners",
                    format!("cannot set up TLS: {e}"),
                    "report this as a bug",
                )],
                None,
            );
        }
    };
    let (http_tls, http_recorder) = match recording_tls(&[b"http/1.1"]) {
        Ok(t) => t,
        Err(_) => (tls.clone(), recorder.clone()),
    };
    // SNI must be a name; the doctor is not checking names here.
    let sni = "localhost";
    let mut checks = Vec::new();
    let mut answered = 0;
    let mut push = |name: String, r: Result<String, String>, checks: &mut Vec<Check>| {
        match r {
        Ok(d) => {
            answered += 1;
            checks.push(Check::ok(name, d));
        }
        Err(e) => checks.push(Check::bad(
            Status::Fail,
            name,
            e,
            "make sure the daemon is running (`lnmp-bridge serve`) and that its log shows no error for this listener",
        )),
    }
    };
    for (kind, addr) in &l.smtp {
        let (label, implicit) = match kind {
            Listener::Mx => ("SMTP MX", false),
            Listener::Submission => ("SMTP submission", false),
            Listener::Submissions => ("SMTP submissions (TLS)", true),
        };
        let r = greeting(*addr, implicit.then_some((&tls, sni)), "220").await;
        push(format!("listener {label} {addr}"), r, &mut checks);
    }
    for (implicit, addr) in &l.imap {
        let label = if *implicit { "IMAP (TLS)" } else { "IMAP" };
        let r = greeting(*addr, implicit.then_some((&tls, sni)), "* OK").await;
        push(format!("listener {label} {addr}"), r, &mut checks);
    }
    let (label, https) = if l.http_tls {
        ("HTTPS", Some((&http_tls, sni)))
    } else {
        ("HTTP", None)
    };
    let r = healthz(l.http, https).await;
    push(
        format!("listener {label} {}/healthz", l.http),
        r,
        &mut checks,
    );
    if let Some(addr) = l.relay {
        let r = websocket(addr, l.relay_tls.then_some(&tls)).await;
        push(format!("listener relay {addr}"), r, &mut checks);
    }
    if answered == 0 {
        checks.push(Check::bad(
            Status::Fail,
            "daemon",
            "no listener answers: the daemon is not running",
            "start it: `lnmp-bridge serve` (or `systemctl start lnmp-bridge`), then run doctor again",
        ));
    }
    let served = http_recorder.seen.lock().ok().and_then(|s| s.clone());
    (checks, served)
}

// ---------------------------------------------------------------------------------
// Database and Lightning

/// Checks the database, the master key and the Lightning backend. Also returns the
/// postmaster address DMARC reports should go to (the first user's, as quickstart
/// published), or postmaster@domain.
pub async fn check_database(config: &Config) -> (Vec<Check>, String) {
    let mut postmaster = format!("postmaster@{}", config.server.domain);
    let url = config.database_url();
    let shown = crate::backup::redact_url(&url);
    if let Some(file) = crate::backup::sqlite_file(&url)
        && !file.is_file()
    {
        return (
            vec![Check::bad(
                Status::Fail,
                "database",
                format!("no database at {}", file.display()),
                "run `lnmp-bridge quickstart` to set the domain up, or restore a backup with `lnmp-bridge restore`",
            )],
            postmaster,
        );
    }
    let options = crate::store::StoreOptions {
        max_connections: 2,
        sqlite_group_commit_max: config.database.sqlite_group_commit_max,
    };
    let store = match crate::store::Store::open(&url, &options).await {
        Ok(s) => s,
        Err(e) => {
            return (
                vec![Check::bad(
                    Status::Fail,
                    "database",
                    format!("cannot open {shown}: {e}"),
                    "check database.url, and that the database server is running and lets this user in",
                )],
                postmaster,
            );
        }
    };
    let mut checks = Vec::new();
    let migrated = migration_state(&store).await;
    let ready = matches!(migrated, Ok((applied, known)) if applied >= known);
    checks.push(match migrated {
        Ok((applied, known)) if applied >= known => {
            Check::ok("database", format!("{shown}: {applied} migrations applied"))
        }
        Ok((applied, known)) => Check::bad(
            Status::Fail,
            "database",
            format!("{shown}: {applied} of {known} migrations applied"),
            "start the daemon once (`lnmp-bridge serve`): it brings the schema up to date",
        ),
        Err(e) => Check::bad(
            Status::Fail,
            "database",
            format!("{shown}: {e}"),
            "check that the database is reachable and that this user may read it",
        ),
    });
    if !ready {
        store.close().await;
        return (checks, postmaster);
    }
    let master = crate::custody::master_key::MasterKey::load(&config.master_key_file());
    let check = crate::store::settings::get(&store, "master_key_check").await;
    let master = match (master, check) {
        (Ok(key), Ok(Some(stored))) if key.verify_check(&stored).is_ok() => {
            checks.push(Check::ok("master key", "opens the database"));
            Some(key)
        }
        (Ok(_), Ok(Some(_))) => {
            checks.push(Check::bad(
                Status::Fail,
                "master key",
                format!("{} does not open this database", config.master_key_file().display()),
                "put the master key this database was made with in that file (or LNMP_MASTER_KEY); no user key opens without it",
            ));
            None
        }
        (Ok(key), Ok(None)) => {
            checks.push(Check::ok(
                "master key",
                "loaded (the database has no check value yet)",
            ));
            Some(key)
        }
        (Err(e), _) => {
            checks.push(Check::bad(
                Status::Fail,
                "master key",
                e.to_string(),
                "restore the master key file from where you keep it (it is never in backups)",
            ));
            None
        }
        (_, Err(e)) => {
            checks.push(Check::bad(
                Status::Fail,
                "master key",
                format!("cannot read its check value: {e}"),
                "check that the database is reachable",
            ));
            None
        }
    };
    if let Ok(Some(email)) =
        sqlx::query_scalar::<_, String>("SELECT username FROM users ORDER BY id LIMIT 1")
            .fetch_optional(store.pool())
            .await
    {
        postmaster = format!("{email}@{}", config.server.domain);
    }
    if let Some(master) = master {
        checks.push(check_lightning(config, &store, &master).await);
    }
    store.close().await;
    (checks, postmaster)
}

/// (applied, known) migrations.
async fn migration_state(store: &crate::store::Store) -> Result<(usize, usize), String> {
    let known = match store.backend() {
        crate::store::Backend::Sqlite => sqlx::migrate!("migrations/sqlite").iter().count(),
        crate::store::Backend::Postgres => sqlx::migrate!("migrations/postgres").iter().count(),
    };
    if !store.has_schema().await.map_err(|e| e.to_string())? {
        return Ok((0, known));
    }
    let applied: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(store.pool())
            .await
            .map_err(|e| e.to_string())?;
    Ok((usize::try_from(applied).unwrap_or(0), known))
}

async fn check_lightning(
    config: &Config,
    store: &crate::store::Store,
    master: &crate::custody::master_key::MasterKey,
) -> Check {
    let name = format!("lightning {}", backend_name(config.lightning.backend));
    let backend = match crate::lightning::open(config, store.clone(), master).await {
        Ok(b) => b,
        Err(e) => {
            return Check::bad(
                Status::Fail,
                name,
                format!("cannot set it up: {e:#}"),
                "fix the [lightning] settings",
            );
        }
    };
    let health = tokio::time::timeout(
        Duration::from_secs(config.lightning.timeout_seconds.clamp(1, 60)),
        backend.health(),
    )
    .await
    .unwrap_or_else(|_| {
        Err(crate::lightning::LightningError::Unreachable(
            "no answer in time".into(),
        ))
    });
    match (health, config.lightning.backend) {
        (Ok(d), LightningBackend::Dev) => Check::bad(
            Status::Warn,
            name,
            format!("{d}: no real money moves"),
            "to be paid for real, set lightning.backend to \"lnbits\" or \"lnd\" with its keys",
        ),
        (Ok(d), _) => Check::ok(name, d),
        (Err(e), LightningBackend::Lnbits) => Check::bad(
            Status::Fail,
            name,
            e.to_string(),
            "check lightning.lnbits_url and that lightning.lnbits_invoice_key is the wallet's invoice key",
        ),
        (Err(e), LightningBackend::Lnd) => Check::bad(
            Status::Fail,
            name,
            e.to_string(),
            "check lightning.lnd_url, that LND runs and is unlocked, and lightning.lnd_macaroon_file and lnd_cert_file",
        ),
        (Err(e), LightningBackend::Dev) => Check::bad(
            Status::Fail,
            name,
            e.to_string(),
            "the dev wallet's key does not open: check the master key",
        ),
    }
}

fn backend_name(b: LightningBackend) -> &'static str {
    match b {
        LightningBackend::Dev => "dev",
        LightningBackend::Lnbits => "lnbits",
        LightningBackend::Lnd => "lnd",
    }
}

pub async fn doctor_command(config: &Config) -> anyhow::Result<()> {
    let report = run(config, &Listeners::from_config(config)).await;
    println!("{report}");
    let failed = report.failures();
    if failed > 0 {
        anyhow::bail!("doctor: {failed} checks failed; fix them as said above");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_certificate() {
        let made = rcgen::generate_simple_self_signed(vec![
            "mail.example.com".to_owned(),
            "*.example.org".to_owned(),
        ])
        .unwrap();
        let info = cert_info(made.cert.der()).unwrap();
        assert_eq!(info.names, ["mail.example.com", "*.example.org"]);
        let now = i64::try_from(crate::store::unix_now()).unwrap();
        assert!(info.not_before <= now && info.not_after > now + 365 * 86_400);
        assert!(name_matches("*.example.org", "a.example.org"));
        assert!(!name_matches("*.example.org", "a.b.example.org"));
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x18, b"20000301000000Z"), Some(951_868_800));
    }
}
