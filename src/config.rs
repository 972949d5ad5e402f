//! The daemon's configuration: one TOML file, overridable key by key from the
//! environment, validated with errors that name the key at fault.
//!
//! With no file at all, `Config::default()` is the embedded default: SQLite under
//! ./data, a self-signed certificate, unprivileged ports on loopback.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Prefix of environment variables that override config keys:
/// `LNMP__<SECTION>__<KEY>`, e.g. `LNMP__HTTP__LISTEN=0.0.0.0:443`.
pub const ENV_PREFIX: &str = "LNMP__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// An http:// or https:// URL with a host, no trailing slash needed.
fn http_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid(key, "must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid(key, "must name a host"));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub database: Database,
    pub secrets: Secrets,
    pub tls: Tls,
    pub acme: Acme,
    pub http: Http,
    pub relay: Relay,
    pub relay_client: RelayClient,
    pub pricing: Pricing,
    pub smtp: Smtp,
    pub imap: Imap,
    pub outbound: Outbound,
    pub lightning: Lightning,
    pub paywall: Paywall,
    pub dns: Dns,
    pub log: Log,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// The mail domain: users are `name@domain`, and LNMP addresses end in `@domain`.
    pub domain: String,
    /// This machine's public host name: the MX target and the TLS certificate's name.
    pub hostname: String,
    /// Where the database, keys and certificates live. Relative to the config file.
    pub data_dir: PathBuf,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            domain: "lnmp.localhost".into(),
            hostname: "lnmp.localhost".into(),
            data_dir: "data".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `sqlite://path` or `postgres://user@host/db`; empty means SQLite in data_dir.
    pub url: String,
    pub max_connections: u32,
    /// Writes waiting for the SQLite writer that are committed together in one transaction.
    pub sqlite_group_commit_max: usize,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: String::new(),
            max_connections: 8,
            sqlite_group_commit_max: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Secrets {
    /// The master key file (64 hex digits, mode 0600); empty means data_dir/master.key.
    /// The environment variable LNMP_MASTER_KEY, if set, is used instead of any file.
    pub master_key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain; empty (with key_file empty) means a self-signed certificate
    /// for `server.hostname`, made on first start and kept in data_dir/tls/.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Let's Encrypt's production directory, the default ACME server.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How the ACME server is shown that this machine answers for a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AcmeChallenge {
    /// A file fetched over plain HTTP on port 80 (`acme.http_listen`, or a proxy).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A special certificate on the HTTPS front, which must then be port 443.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// Certificates obtained and renewed by ACME (src/acme), used when `tls.cert_file` is
/// empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Acme {
    pub enabled: bool,
    /// The ACME server's directory URL.
    pub directory_url: String,
    /// The account's contact, `mailto:admin@example.com`; empty for none.
    pub contact: String,
    /// The names the certificate is for; empty means `server.hostname` alone.
    pub hostnames: Vec<String>,
    pub challenge: AcmeChallenge,
    /// A plain-HTTP listener answering HTTP-01 challenges (port 80 in production);
    /// empty for none, when a proxy forwards /.well-known/acme-challenge/ to a plain
    /// HTTP front (`http.tls = false`).
    pub http_listen: String,
    /// Trust only this PEM certificate for the ACME server (a test server such as
    /// pebble); empty means the public roots.
    pub ca_file: PathBuf,
    /// Renew when the certificate expires within this many days.
    pub renew_before_days: u64,
    /// How often the certificate's expiry is looked at.
    pub check_interval_seconds: u64,
    /// After a failure, the first retry waits this long; each next one twice as long...
    pub retry_base_seconds: u64,
    /// ...up to this.
    pub retry_max_seconds: u64,
}

impl Default for Acme {
    fn default() -> Self {
        Acme {
            enabled: false,
            directory_url: LETS_ENCRYPT_DIRECTORY.into(),
            contact: String::new(),
            hostnames: Vec::new(),
            challenge: AcmeChallenge::Http01,
            http_listen: String::new(),
            ca_file: PathBuf::new(),
            renew_before_days: 30,
            check_interval_seconds: 6 * 3600,
            retry_base_seconds: 60,
            retry_max_seconds: 6 * 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    pub listen: String,
    /// HTTPS with the daemon's certificate; false for plain HTTP behind a reverse proxy.
    pub tls: bool,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: "127.0.0.1:8443".into(),
            tls: true,
        }
    }
}

/// Which messages the relay stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RelayAccept {
    /// Only messages from or to the domain's users: the domain's own relay.
    #[default]
    Local,
    /// Any valid message: a public relay.
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// Run the embedded relay.
    pub enabled: bool,
    pub listen: String,
    /// wss:// with the daemon's certificate; false for ws:// behind a TLS-terminating proxy.
    pub tls: bool,
    /// The relay URL the address lookup advertises and AUTH answers must name; empty
    /// means wss://<hostname>:<listen port> (ws:// when tls is false).
    pub public_url: String,
    pub accept: RelayAccept,
    /// Days a message is kept when it does not expire sooner.
    pub retention_days: u32,
    /// Largest frame accepted, in bytes (the protocol's ceiling is 16 MiB).
    pub max_message_bytes: usize,
    pub max_subscriptions: usize,
    pub max_connections: usize,
    /// Stored messages sent for one filter at most, whatever its limit.
    pub max_stored_per_query: u32,
    /// Publishes per second per connection, after a burst of `publish_burst`.
    pub publish_rate: u32,
    pub publish_burst: u32,
    /// Frames of any kind per second per connection, after a burst of `frame_burst`.
    pub frame_rate: u32,
    pub frame_burst: u32,
    /// How far an AUTH answer's time may be from the relay's clock.
    pub auth_skew_seconds: u64,
    /// How far in the future a message's timestamp may be.
    pub future_skew_seconds: u64,
    /// Seconds between pings; a client silent for three intervals is dropped.
    pub ping_interval_seconds: u64,
    /// Other relays where the domain's users also receive mail; the daemon subscribes
    /// there for each user and keeps what arrives.
    pub read_relays: Vec<String>,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            enabled: true,
            listen: "127.0.0.1:7138".into(),
            tls: true,
            public_url: String::new(),
            accept: RelayAccept::Local,
            retention_days: 30,
            max_message_bytes: 4 * 1024 * 1024,
            max_subscriptions: 32,
            max_connections: 10_000,
            max_stored_per_query: 5000,
            publish_rate: 20,
            publish_burst: 100,
            frame_rate: 100,
            frame_burst: 400,
            auth_skew_seconds: 600,
            future_skew_seconds: 600,
            ping_interval_seconds: 30,
            read_relays: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayClient {
    /// How long a PUBLISH waits for the relay's OK.
    pub publish_timeout_seconds: u64,
    /// The first retry waits this long; each next one twice as long, with jitter...
    pub retry_base_seconds: u64,
    /// ...up to this.
    pub retry_max_seconds: u64,
    /// A queued message without its own expiry is given up after this many hours.
    pub outbox_lifetime_hours: u64,
    /// Trust only this PEM certificate (plus the daemon's own) for wss:// and lookups,
    /// instead of the public roots; empty means the public roots.
    pub ca_file: PathBuf,
    /// Replaces `https://<host>` in address lookups (a host reached another way, or
    /// tests); empty means each address's own host.
    pub lookup_base: String,
    /// How long a node's claim on a queued message lasts; when a node dies, another
    /// takes its claims over after this. 0 derives it from the publish and Lightning
    /// timeouts (an attempt, payment included, always ends within it).
    pub claim_seconds: u64,
}

impl Default for RelayClient {
    fn default() -> Self {
        RelayClient {
            publish_timeout_seconds: 10,
            retry_base_seconds: 2,
            retry_max_seconds: 600,
            outbox_lifetime_hours: 7 * 24,
            ca_file: PathBuf::new(),
            lookup_base: String::new(),
            claim_seconds: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pricing {
    /// Satoshis a stranger pays to reach a user, unless the user sets their own.
    pub stranger: u64,
    pub acquaintance: u64,
    pub friend: u64,
    pub priority: u64,
    /// Prices are multiplied by this while more than `surge_threshold` messages are unread.
    pub surge_multiplier: u32,
    /// 0 turns surge pricing off.
    pub surge_threshold: u32,
    /// Mail that DKIM-authenticates as one of these domains is free (receipts, banks).
    pub free_dkim_domains: Vec<String>,
    /// Mail with one of these List-Id values is free (newsletters the user chose).
    pub free_list_ids: Vec<String>,
}

impl Default for Pricing {
    fn default() -> Self {
        Pricing {
            stranger: 100,
            acquaintance: 10,
            friend: 0,
            priority: 1000,
            surge_multiplier: 2,
            surge_threshold: 100,
            free_dkim_domains: Vec::new(),
            free_list_ids: Vec::new(),
        }
    }
}

/// What the MX does with mail that fails an authentication check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Deliver, and record the verdict in Authentication-Results.
    #[default]
    Tag,
    /// File in the Junk folder.
    Junk,
    /// Refuse at end of DATA with 550 5.7.x.
    Reject,
}

/// What the MX does with mail whose DMARC check fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DmarcFailure {
    /// Do what the sender's domain asks: p=reject refuses, p=quarantine files in Junk,
    /// p=none delivers.
    #[default]
    Follow,
    Tag,
    Junk,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Smtp {
    /// The MX listener (port 25 in production): mail from the email world, STARTTLS.
    /// Empty turns it off.
    pub mx_listen: String,
    /// Submission with STARTTLS and AUTH (port 587). Empty turns it off.
    pub submission_listen: String,
    /// Submission with implicit TLS (port 465). Empty turns it off.
    pub submissions_listen: String,
    /// Allow AUTH without TLS from loopback clients (local tools, tests). Never with a
    /// TCP proxy in front of the listener: every client would then look local.
    pub allow_plaintext_auth_on_loopback: bool,
    /// Largest message accepted, in bytes (advertised in SIZE).
    pub max_message_bytes: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Longest command line, CRLF included.
    pub max_command_line: usize,
    /// Longest line inside a message, CRLF included (RFC 5321 asks for 1000 at least).
    pub max_data_line: usize,
    /// Messages being received at once, across all sessions: each may hold up to
    /// `max_message_bytes` in memory, so this bounds the memory incoming mail takes.
    pub max_concurrent_messages: usize,
    /// Messages per session before the server closes it.
    pub max_messages_per_session: usize,
    /// Commands of any kind per session before the server closes it.
    pub max_commands: usize,
    /// Commands that do not move a transaction on (NOOP, RSET, VRFY, HELP, unknown)
    /// per session.
    pub max_junk_commands: usize,
    /// Errors per session before the server answers 421 and closes it.
    pub max_errors: usize,
    /// Connections at once, in all, and from one client network (IPv4 address, IPv6 /64).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Seconds to wait for a command line.
    pub command_timeout_seconds: u64,
    /// Seconds to wait for each read while a message is coming in.
    pub data_timeout_seconds: u64,
    /// A session may last at most this long.
    pub session_timeout_seconds: u64,
    /// Bare CR or LF in a message: false refuses it (SMTP smuggling cannot pass);
    /// true turns each into CRLF, as Postfix's smtpd_forbid_bare_newline=normalize.
    pub normalize_bare_newlines: bool,
    /// Failed AUTH attempts allowed per client network (an IPv4 address or an IPv6
    /// /64) and per user from one such network, per `auth_window_seconds`.
    pub auth_failures_per_ip: u32,
    pub auth_failures_per_user: u32,
    pub auth_window_seconds: u64,
    /// Check SPF, DKIM and DMARC on the MX.
    pub verify: bool,
    /// Seconds the checks of one message may take; past that the message is deferred
    /// (451), since a sender could otherwise stall its way past DMARC.
    pub verify_timeout_seconds: u64,
    /// MIME parts a message may have.
    pub max_mime_parts: usize,
    pub spf_failure: OnFailure,
    pub dkim_failure: OnFailure,
    pub dmarc_failure: DmarcFailure,
    /// Raw mail up to this size travels inside the sealed message; larger, as a blob.
    pub max_inline_raw_bytes: usize,
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            mx_listen: "127.0.0.1:2525".into(),
            submission_listen: "127.0.0.1:2587".into(),
            submissions_listen: "127.0.0.1:2465".into(),
            allow_plaintext_auth_on_loopback: false,
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 2048,
            max_data_line: 8192,
            max_concurrent_messages: 64,
            max_messages_per_session: 1000,
            max_commands: 10_000,
            max_junk_commands: 100,
            max_errors: 20,
            max_connections: 1000,
            max_connections_per_ip: 50,
            command_timeout_seconds: 300,
            data_timeout_seconds: 180,
            session_timeout_seconds: 3600,
            normalize_bare_newlines: false,
            auth_failures_per_ip: 10,
            auth_failures_per_user: 5,
            auth_window_seconds: 900,
            verify: true,
            verify_timeout_seconds: 60,
            max_mime_parts: 1000,
            spf_failure: OnFailure::Tag,
            dkim_failure: OnFailure::Tag,
            dmarc_failure: DmarcFailure::Follow,
            max_inline_raw_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Imap {
    /// IMAP with STARTTLS (port 143 in production). Empty turns it off.
    pub listen: String,
    /// IMAP over implicit TLS (port 993). Empty turns it off.
    pub tls_listen: String,
    /// Allow LOGIN and AUTHENTICATE without TLS from loopback clients (local tools,
    /// tests). Never with a TCP proxy in front: every client would look local.
    pub allow_plaintext_auth_on_loopback: bool,
    /// Largest literal a client may send (APPEND's message, mostly), in bytes.
    pub max_literal_bytes: u32,
    /// Longest command line outside literals, in bytes.
    pub max_command_line: u32,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Idle time before a connection that is not in IDLE is closed (RFC 3501 asks
    /// for at least 30 minutes).
    pub command_timeout_seconds: u64,
    /// Idle time allowed before login; short, so idle strangers do not hold slots.
    pub login_timeout_seconds: u64,
    /// Longest IDLE before the server ends it (clients renew well before 30 minutes).
    pub idle_timeout_seconds: u64,
    /// How often an idling session looks at its mailbox even when no change was
    /// announced: a safety net under the change notifications.
    pub idle_poll_seconds: u64,
    /// Commands answered BAD before the connection is closed.
    pub max_bad_commands: u32,
    /// Failed logins allowed per client network and per (user, network) in the window.
    pub auth_failures_per_ip: u32,
    pub auth_failures_per_user: u32,
    pub auth_window_seconds: u64,
    /// Mailboxes a user may have, and the deepest hierarchy and longest name allowed.
    pub max_mailboxes: u32,
    pub max_mailbox_name_bytes: usize,
    /// Rendered messages each session keeps at hand (FETCH in chunks reads the same
    /// message again and again).
    pub message_cache: usize,
}

impl Default for Imap {
    fn default() -> Self {
        Imap {
            listen: "127.0.0.1:2143".into(),
            tls_listen: "127.0.0.1:2993".into(),
            allow_plaintext_auth_on_loopback: false,
            max_literal_bytes: 50 * 1024 * 1024,
            max_command_line: 64 * 1024,
            max_connections: 5000,
            max_connections_per_ip: 100,
            command_timeout_seconds: 1800,
            login_timeout_seconds: 60,
            idle_timeout_seconds: 1800,
            idle_poll_seconds: 30,
            max_bad_commands: 50,
            auth_failures_per_ip: 10,
            auth_failures_per_user: 5,
            auth_window_seconds: 900,
            max_mailboxes: 1000,
            max_mailbox_name_bytes: 512,
            message_cache: 8,
        }
    }
}

/// How the smarthost connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmarthostTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a smarthost on loopback.
    None,
}

/// How much TLS mail to a recipient's MX insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MxTls {
    /// STARTTLS when offered, certificate not checked (RFC 7435, Postfix's `may`).
    #[default]
    Opportunistic,
    /// STARTTLS with a valid certificate for the MX host name, or no delivery.
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outbound {
    /// Send everything through this host ("host:port") instead of the recipients' MX.
    pub smarthost: String,
    pub smarthost_tls: SmarthostTls,
    /// AUTH at the smarthost (PLAIN or LOGIN, over TLS); empty for none.
    pub smarthost_username: String,
    pub smarthost_password: String,
    /// PEM certificates trusted besides the public roots (a smarthost's own CA).
    pub tls_ca_file: PathBuf,
    /// The port of recipients' MX hosts; 25 except in tests.
    pub mx_port: u16,
    pub mx_tls: MxTls,
    /// How long a message is retried before it is returned to its sender.
    pub lifetime_hours: u64,
    /// The first retry's delay; each later one doubles, up to `retry_max_seconds`.
    pub retry_base_seconds: u64,
    pub retry_max_seconds: u64,
    /// Deliveries in progress at once.
    pub max_parallel: usize,
    /// Seconds allowed for connecting and for each SMTP command.
    pub timeout_seconds: u64,
    /// How often the queue is looked at for work another node (or the CLI) left.
    pub poll_seconds: u64,
    /// Mail that has passed more hops than this (Received fields) is not forwarded,
    /// and the MX refuses it as a loop.
    pub max_hops: usize,
    /// The local part of reply addresses (`reply+<token>@domain`); no user may have it.
    pub reply_local_part: String,
    /// Where the DKIM keys are (`<selector>.rsa.pem`, `<selector>.ed25519.pem`);
    /// empty means `dkim/` in the data folder. Mail leaves unsigned without keys.
    pub dkim_dir: PathBuf,
    /// Seconds the receiving server has to answer the end of a message (RFC 5321
    /// 4.5.3.2.6 asks for 10 minutes).
    pub final_reply_timeout_seconds: u64,
    /// How long a node's claim on a queued recipient lasts; when a node dies, another
    /// takes its claims over after this. 0 derives it from the timeouts (an attempt
    /// always ends within it); a value set must be longer than an attempt can take.
    pub claim_seconds: u64,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            smarthost: String::new(),
            smarthost_tls: SmarthostTls::Starttls,
            smarthost_username: String::new(),
            smarthost_password: String::new(),
            tls_ca_file: PathBuf::new(),
            mx_port: 25,
            mx_tls: MxTls::Opportunistic,
            lifetime_hours: 120,
            retry_base_seconds: 300,
            retry_max_seconds: 3600,
            max_parallel: 8,
            timeout_seconds: 300,
            poll_seconds: 15,
            max_hops: 25,
            reply_local_part: "reply".into(),
            dkim_dir: PathBuf::new(),
            final_reply_timeout_seconds: 600,
            claim_seconds: 0,
        }
    }
}

/// Which Lightning backend issues and pays invoices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LightningBackend {
    /// The embedded wallet: real BOLT11 invoices on regtest, paid with `lnmp-bridge dev
    /// pay`. No money moves.
    #[default]
    Dev,
    /// An LNbits server (REST, invoice and admin keys).
    Lnbits,
    /// An LND node (REST, macaroon and TLS certificate).
    Lnd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lightning {
    pub backend: LightningBackend,
    /// LNbits: the server's base URL and the wallet's keys. The invoice key makes and
    /// reads invoices; the admin key pays (withdrawals, relay invoices).
    pub lnbits_url: String,
    pub lnbits_invoice_key: String,
    pub lnbits_admin_key: String,
    /// LND: the REST base URL (https://host:8080), the macaroon file (admin, or one
    /// with invoice and offchain rights) and LND's TLS certificate.
    pub lnd_url: String,
    pub lnd_macaroon_file: PathBuf,
    pub lnd_cert_file: PathBuf,
    /// PEM certificates trusted besides the public roots (an LNbits behind a private CA).
    pub ca_file: PathBuf,
    /// How long an invoice can be paid.
    pub invoice_expiry_seconds: u64,
    /// How often open invoices are checked when the backend cannot tell us itself.
    pub poll_seconds: u64,
    /// Seconds allowed for each request to the backend.
    pub timeout_seconds: u64,
    /// The most in routing fees paid on top of an invoice we pay.
    pub max_fee_sats: u64,
}

impl Default for Lightning {
    fn default() -> Self {
        Lightning {
            backend: LightningBackend::Dev,
            lnbits_url: String::new(),
            lnbits_invoice_key: String::new(),
            lnbits_admin_key: String::new(),
            lnd_url: String::new(),
            lnd_macaroon_file: PathBuf::new(),
            lnd_cert_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            invoice_expiry_seconds: 3600,
            poll_seconds: 2,
            timeout_seconds: 30,
            max_fee_sats: 10,
        }
    }
}

/// What the MX answers a stranger whose mail is held until paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PaywallMode {
    /// 450 with the pay link: the sender's server retries, and is answered 250 once paid.
    #[default]
    Retry,
    /// 550 with the pay link; paying still delivers the held copy.
    Reject,
    /// 250, and a payment request by email.
    Accept,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paywall {
    pub mode: PaywallMode,
    /// Unpaid held mail is deleted after this many days.
    pub hold_days: u64,
    /// At most one payment request by email per sender in this many hours.
    pub request_window_hours: u64,
    /// The operator's share of what senders pay, in percent; the rest is the user's.
    pub relay_fee_percent: u8,
    /// What the relay client pays for a user without asking, per message, unless the
    /// user sets their own cap.
    pub autopay_cap_sats: u64,
    /// The base of pay links (https://mail.example.com); empty means
    /// https://<server.hostname>:<the HTTP port>.
    pub public_url: String,
    /// A sender who paid becomes one of the user's acquaintances (who pay less).
    pub payer_becomes_acquaintance: bool,
    /// Invoices anyone may ask for through Lightning Addresses, per minute, across all
    /// users (each is a call to the backend and a row kept for a month).
    pub address_invoices_per_minute: u32,
}

impl Default for Paywall {
    fn default() -> Self {
        Paywall {
            mode: PaywallMode::Retry,
            hold_days: 7,
            request_window_hours: 24,
            relay_fee_percent: 0,
            autopay_cap_sats: 1000,
            public_url: String::new(),
            payer_becomes_acquaintance: true,
            address_invoices_per_minute: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Name servers (ip or ip:port) for SPF, DKIM, DMARC and MX lookups; empty means
    /// the system's (/etc/resolv.conf).
    pub nameservers: Vec<String>,
    /// Seconds before a lookup is given up.
    pub timeout_seconds: u64,
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            nameservers: Vec::new(),
            timeout_seconds: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    /// A tracing filter: a level (`info`) or directives (`lnmp_bridge=debug,sqlx=warn`).
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// How long shutdown waits for in-flight work before closing connections.
    pub shutdown_grace_seconds: u64,
    /// The longest an HTTP request may take, headers to response.
    pub http_request_timeout_seconds: u64,
    /// Open HTTP connections at once; more wait in the kernel's accept queue.
    pub http_max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            shutdown_grace_seconds: 30,
            http_request_timeout_seconds: 30,
            http_max_connections: 1024,
        }
    }
}

impl Config {
    /// Reads `path`, applies environment overrides, resolves relative paths against the
    /// file's folder, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, &path.display().to_string(), base, std::env::vars())
    }

    /// The embedded default with environment overrides applied, paths relative to the
    /// current folder.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::from_toml("", "embedded default", Path::new("."), std::env::vars())
    }

    /// Parses TOML text, overlays `LNMP__SECTION__KEY` variables from `env`, resolves
    /// paths against `base`, and validates. `origin` names the text in errors.
    pub fn from_toml(
        text: &str,
        origin: &str,
        base: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_err = |origin: String, e: toml::de::Error| ConfigError::Parse {
            origin,
            message: e.message().to_owned() + &span_hint(text, e.span()),
        };
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| parse_err(origin.to_owned(), e))?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                return Err(ConfigError::Parse {
                    origin: name.clone(),
                    message: "expected LNMP__<SECTION>__<KEY>".into(),
                });
            };
            let section = section.to_ascii_lowercase();
            let key = key.to_ascii_lowercase();
            // A value that parses as TOML (numbers, booleans, arrays) is taken as such;
            // anything else is a string.
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => {
                    t.insert(key, parsed);
                }
                _ => {
                    return Err(ConfigError::Parse {
                        origin: name,
                        message: format!("`{section}` is not a section"),
                    });
                }
            }
        }
        let mut config: Config =
            toml::Table::try_into(table).map_err(|e: toml::de::Error| ConfigError::Parse {
                origin: format!("{origin} (after environment overrides)"),
                message: e.message().to_owned(),
            })?;
        config.resolve_paths(base);
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.server.data_dir);
        resolve(&mut self.secrets.master_key_file);
        resolve(&mut self.tls.cert_file);
        resolve(&mut self.tls.key_file);
        resolve(&mut self.acme.ca_file);
        resolve(&mut self.relay_client.ca_file);
        resolve(&mut self.outbound.tls_ca_file);
        resolve(&mut self.outbound.dkim_dir);
    }

    /// Checks every rule a TOML type cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, name) in [
            ("server.domain", &self.server.domain),
            ("server.hostname", &self.server.hostname),
        ] {
            validate_domain(name).map_err(|p| invalid(key, p))?;
        }
        if self.server.data_dir.as_os_str().is_empty() {
            return Err(invalid("server.data_dir", "must not be empty"));
        }
        let url = &self.database.url;
        if !(url.is_empty()
            || url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database.url",
                "must start with sqlite: or postgres://",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.database.sqlite_group_commit_max == 0 {
            return Err(invalid(
                "database.sqlite_group_commit_max",
                "must be at least 1",
            ));
        }
        if self.tls.cert_file.as_os_str().is_empty() != self.tls.key_file.as_os_str().is_empty() {
            return Err(invalid(
                "tls.cert_file",
                "cert_file and key_file go together: set both or neither",
            ));
        }
        self.http.listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "http.listen",
                format!("{:?} is not an address:port", self.http.listen),
            )
        })?;
        if !self.relay.public_url.is_empty() {
            crate::lnmp::message::validate_relay_url(&self.relay.public_url)
                .map_err(|e| invalid("relay.public_url", e.to_string()))?;
        }
        self.relay.listen.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "relay.listen",
                format!("{:?} is not an address:port", self.relay.listen),
            )
        })?;
        for r in &self.relay.read_relays {
            crate::lnmp::message::validate_relay_url(r)
                .map_err(|e| invalid("relay.read_relays", e.to_string()))?;
        }
        for (key, v) in [
            ("relay.retention_days", self.relay.retention_days as u64),
            (
                "relay.max_message_bytes",
                self.relay.max_message_bytes as u64,
            ),
            (
                "relay.max_subscriptions",
                self.relay.max_subscriptions as u64,
            ),
            ("relay.max_connections", self.relay.max_connections as u64),
            ("relay.publish_burst", self.relay.publish_burst as u64),
            ("relay.frame_burst", self.relay.frame_burst as u64),
            (
                "relay.ping_interval_seconds",
                self.relay.ping_interval_seconds,
            ),
            (
                "relay_client.publish_timeout_seconds",
                self.relay_client.publish_timeout_seconds,
            ),
            (
                "relay_client.retry_base_seconds",
                self.relay_client.retry_base_seconds,
            ),
            (
                "relay_client.outbox_lifetime_hours",
                self.relay_client.outbox_lifetime_hours,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.relay.max_message_bytes > crate::lnmp::Limits::default().max_message_bytes {
            return Err(invalid(
                "relay.max_message_bytes",
                "must not exceed the protocol's 16 MiB",
            ));
        }
        if self.relay_client.retry_max_seconds < self.relay_client.retry_base_seconds {
            return Err(invalid(
                "relay_client.retry_max_seconds",
                "must not be below retry_base_seconds",
            ));
        }
        if self.pricing.surge_multiplier == 0 {
            return Err(invalid("pricing.surge_multiplier", "must be at least 1"));
        }
        for d in &self.pricing.free_dkim_domains {
            validate_domain(d).map_err(|p| invalid("pricing.free_dkim_domains", p))?;
        }
        for (key, listen) in [
            ("smtp.mx_listen", &self.smtp.mx_listen),
            ("smtp.submission_listen", &self.smtp.submission_listen),
            ("smtp.submissions_listen", &self.smtp.submissions_listen),
            ("imap.listen", &self.imap.listen),
            ("imap.tls_listen", &self.imap.tls_listen),
        ] {
            if !listen.is_empty() && listen.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    key,
                    format!("{listen:?} is not an address:port (or empty to turn it off)"),
                ));
            }
        }
        for (key, v) in [
            ("smtp.max_message_bytes", self.smtp.max_message_bytes as u64),
            ("smtp.max_recipients", self.smtp.max_recipients as u64),
            (
                "smtp.max_messages_per_session",
                self.smtp.max_messages_per_session as u64,
            ),
            ("smtp.max_errors", self.smtp.max_errors as u64),
            (
                "smtp.max_concurrent_messages",
                self.smtp.max_concurrent_messages as u64,
            ),
            ("smtp.max_commands", self.smtp.max_commands as u64),
            ("smtp.max_connections", self.smtp.max_connections as u64),
            (
                "smtp.max_connections_per_ip",
                self.smtp.max_connections_per_ip as u64,
            ),
            (
                "smtp.command_timeout_seconds",
                self.smtp.command_timeout_seconds,
            ),
            ("smtp.data_timeout_seconds", self.smtp.data_timeout_seconds),
            (
                "smtp.session_timeout_seconds",
                self.smtp.session_timeout_seconds,
            ),
            ("smtp.auth_window_seconds", self.smtp.auth_window_seconds),
            (
                "smtp.verify_timeout_seconds",
                self.smtp.verify_timeout_seconds,
            ),
            ("smtp.max_mime_parts", self.smtp.max_mime_parts as u64),
            (
                "imap.max_literal_bytes",
                u64::from(self.imap.max_literal_bytes),
            ),
            ("imap.max_connections", self.imap.max_connections as u64),
            (
                "imap.max_connections_per_ip",
                self.imap.max_connections_per_ip as u64,
            ),
            ("imap.idle_timeout_seconds", self.imap.idle_timeout_seconds),
            (
                "imap.login_timeout_seconds",
                self.imap.login_timeout_seconds,
            ),
            ("imap.idle_poll_seconds", self.imap.idle_poll_seconds),
            (
                "imap.max_bad_commands",
                u64::from(self.imap.max_bad_commands),
            ),
            ("imap.auth_window_seconds", self.imap.auth_window_seconds),
            ("imap.max_mailboxes", u64::from(self.imap.max_mailboxes)),
            ("dns.timeout_seconds", self.dns.timeout_seconds),
            ("outbound.lifetime_hours", self.outbound.lifetime_hours),
            (
                "outbound.retry_base_seconds",
                self.outbound.retry_base_seconds,
            ),
            (
                "outbound.retry_max_seconds",
                self.outbound.retry_max_seconds,
            ),
            ("outbound.max_parallel", self.outbound.max_parallel as u64),
            ("outbound.timeout_seconds", self.outbound.timeout_seconds),
            ("outbound.poll_seconds", self.outbound.poll_seconds),
            ("outbound.max_hops", self.outbound.max_hops as u64),
            ("outbound.mx_port", u64::from(self.outbound.mx_port)),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        // RFC 3501 sets no limit, but clients send long UID sets on one line; Dovecot
        // takes 64 KiB.
        if self.imap.max_command_line < 8192 {
            return Err(invalid("imap.max_command_line", "must be at least 8192"));
        }
        if self.imap.command_timeout_seconds < 1800 {
            return Err(invalid(
                "imap.command_timeout_seconds",
                "must be at least 1800 (RFC 3501 5.4: 30 minutes)",
            ));
        }
        if self.imap.max_mailbox_name_bytes < 64 {
            return Err(invalid(
                "imap.max_mailbox_name_bytes",
                "must be at least 64",
            ));
        }
        // RFC 5321 4.5.3.1: a server must take command lines of 512 and text lines of
        // 1000 octets.
        if self.smtp.max_command_line < 512 {
            return Err(invalid(
                "smtp.max_command_line",
                "must be at least 512 (RFC 5321)",
            ));
        }
        if self.smtp.max_data_line < 1000 {
            return Err(invalid(
                "smtp.max_data_line",
                "must be at least 1000 (RFC 5321)",
            ));
        }
        for ns in &self.dns.nameservers {
            if crate::smtp::verify::parse_nameserver(ns).is_none() {
                return Err(invalid(
                    "dns.nameservers",
                    format!("{ns:?} is not an IP address or ip:port"),
                ));
            }
        }
        self.validate_outbound()?;
        self.validate_payments()?;
        self.validate_claims()?;
        self.validate_acme()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        if self.limits.http_request_timeout_seconds == 0 {
            return Err(invalid(
                "limits.http_request_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.limits.http_max_connections == 0 {
            return Err(invalid("limits.http_max_connections", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_acme(&self) -> Result<(), ConfigError> {
        let a = &self.acme;
        http_url("acme.directory_url", &a.directory_url)?;
        if !a.contact.is_empty() {
            let address = a.contact.strip_prefix("mailto:").unwrap_or("");
            if !address.contains('@') {
                return Err(invalid(
                    "acme.contact",
                    "must be mailto:<address>, e.g. mailto:admin@example.com",
                ));
            }
        }
        for name in &a.hostnames {
            validate_domain(name).map_err(|p| invalid("acme.hostnames", p))?;
        }
        if !a.http_listen.is_empty() {
            a.http_listen.parse::<SocketAddr>().map_err(|_| {
                invalid(
                    "acme.http_listen",
                    format!("{:?} is not an address:port", a.http_listen),
                )
            })?;
        }
        for (key, v) in [
            ("acme.renew_before_days", a.renew_before_days),
            ("acme.check_interval_seconds", a.check_interval_seconds),
            ("acme.retry_base_seconds", a.retry_base_seconds),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if a.retry_max_seconds < a.retry_base_seconds {
            return Err(invalid(
                "acme.retry_max_seconds",
                "must be at least retry_base_seconds",
            ));
        }
        if a.enabled {
            if !self.tls.cert_file.as_os_str().is_empty() {
                return Err(invalid(
                    "acme.enabled",
                    "ACME and tls.cert_file exclude each other: empty tls.cert_file and tls.key_file",
                ));
            }
            if a.challenge == AcmeChallenge::TlsAlpn01 && !self.http.tls {
                return Err(invalid(
                    "acme.challenge",
                    "\"tls-alpn-01\" is answered by the HTTPS front: http.tls must be true",
                ));
            }
            if a.challenge == AcmeChallenge::Http01 && a.http_listen.is_empty() && self.http.tls {
                return Err(invalid(
                    "acme.http_listen",
                    "must be set (e.g. \"0.0.0.0:80\") for HTTP-01 challenges, unless http.tls = false and a proxy passes port 80 to the HTTP front",
                ));
            }
        }
        Ok(())
    }

    /// The names the ACME certificate is for.
    pub fn acme_hostnames(&self) -> Vec<String> {
        if self.acme.hostnames.is_empty() {
            vec![self.server.hostname.clone()]
        } else {
            self.acme.hostnames.clone()
        }
    }

    fn validate_payments(&self) -> Result<(), ConfigError> {
        let l = &self.lightning;
        match l.backend {
            LightningBackend::Dev => {}
            LightningBackend::Lnbits => {
                for (key, v) in [
                    ("lightning.lnbits_url", &l.lnbits_url),
                    ("lightning.lnbits_invoice_key", &l.lnbits_invoice_key),
                ] {
                    if v.is_empty() {
                        return Err(invalid(key, "must be set for the lnbits backend"));
                    }
                }
                http_url("lightning.lnbits_url", &l.lnbits_url)?;
            }
            LightningBackend::Lnd => {
                if l.lnd_url.is_empty() || l.lnd_macaroon_file.as_os_str().is_empty() {
                    return Err(invalid(
                        "lightning.lnd_url",
                        "lnd_url and lnd_macaroon_file must be set for the lnd backend",
                    ));
                }
                http_url("lightning.lnd_url", &l.lnd_url)?;
            }
        }
        for (key, v) in [
            ("lightning.invoice_expiry_seconds", l.invoice_expiry_seconds),
            ("lightning.poll_seconds", l.poll_seconds),
            ("lightning.timeout_seconds", l.timeout_seconds),
            ("paywall.hold_days", self.paywall.hold_days),
            (
                "paywall.request_window_hours",
                self.paywall.request_window_hours,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.paywall.relay_fee_percent > 100 {
            return Err(invalid("paywall.relay_fee_percent", "must be 0-100"));
        }
        if !self.paywall.public_url.is_empty() {
            http_url("paywall.public_url", &self.paywall.public_url)?;
        }
        Ok(())
    }

    /// The longest one outbound delivery attempt may take, all hosts included.
    pub fn outbound_attempt_seconds(&self) -> u64 {
        let o = &self.outbound;
        o.timeout_seconds
            .saturating_mul(6)
            .max(o.final_reply_timeout_seconds)
    }

    /// The longest one relay outbox attempt may take: publishing to every relay at
    /// once, and paying a recipient's invoice (a backend call or two) in between.
    pub fn outbox_attempt_seconds(&self) -> u64 {
        self.relay_client
            .publish_timeout_seconds
            .saturating_mul(2)
            .saturating_add(self.lightning.timeout_seconds.saturating_mul(4))
            .saturating_add(10)
    }

    fn validate_claims(&self) -> Result<(), ConfigError> {
        let o = self.outbound.claim_seconds;
        if o != 0 && o <= self.outbound_attempt_seconds() {
            return Err(invalid(
                "outbound.claim_seconds",
                format!(
                    "must be longer than a delivery attempt can take ({} s, from timeout_seconds and final_reply_timeout_seconds), or 0",
                    self.outbound_attempt_seconds()
                ),
            ));
        }
        let r = self.relay_client.claim_seconds;
        if r != 0 && r <= self.outbox_attempt_seconds() {
            return Err(invalid(
                "relay_client.claim_seconds",
                format!(
                    "must be longer than a publish attempt can take ({} s, from publish_timeout_seconds and lightning.timeout_seconds), or 0",
                    self.outbox_attempt_seconds()
                ),
            ));
        }
        if self.outbound.final_reply_timeout_seconds == 0 {
            return Err(invalid(
                "outbound.final_reply_timeout_seconds",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_outbound(&self) -> Result<(), ConfigError> {
        let o = &self.outbound;
        if !o.smarthost.is_empty() {
            let Some((host, port)) = o.smarthost.rsplit_once(':') else {
                return Err(invalid("outbound.smarthost", "must be host:port"));
            };
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(invalid("outbound.smarthost", "the port must be 1-65535"));
            }
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.parse::<std::net::IpAddr>().is_err() {
                validate_domain(host).map_err(|p| invalid("outbound.smarthost", p))?;
            }
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if o.smarthost_tls == SmarthostTls::None && !loopback {
                return Err(invalid(
                    "outbound.smarthost_tls",
                    "\"none\" is only for a smarthost on loopback: mail and passwords would cross the network in plaintext",
                ));
            }
        }
        if o.smarthost_username.is_empty() != o.smarthost_password.is_empty() {
            return Err(invalid(
                "outbound.smarthost_password",
                "set both smarthost_username and smarthost_password, or neither",
            ));
        }
        if o.retry_max_seconds < o.retry_base_seconds {
            return Err(invalid(
                "outbound.retry_max_seconds",
                "must be at least retry_base_seconds",
            ));
        }
        let lp = &o.reply_local_part;
        if lp.is_empty()
            || !lp
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(invalid(
                "outbound.reply_local_part",
                "must be lowercase letters, digits, '-' or '.'",
            ));
        }
        Ok(())
    }

    /// The folder of the domain's DKIM keys.
    pub fn dkim_dir(&self) -> PathBuf {
        if self.outbound.dkim_dir.as_os_str().is_empty() {
            self.server.data_dir.join("dkim")
        } else {
            self.outbound.dkim_dir.clone()
        }
    }

    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.server.data_dir.join("lnmp-bridge.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }

    pub fn master_key_file(&self) -> PathBuf {
        if self.secrets.master_key_file.as_os_str().is_empty() {
            self.server.data_dir.join("master.key")
        } else {
            self.secrets.master_key_file.clone()
        }
    }

    pub fn relay_url(&self) -> String {
        if self.relay.public_url.is_empty() {
            let scheme = if self.relay.tls { "wss" } else { "ws" };
            format!(
                "{scheme}://{}:{}",
                self.server.hostname,
                self.relay_listen().port()
            )
        } else {
            self.relay.public_url.clone()
        }
    }

    pub fn relay_listen(&self) -> SocketAddr {
        // Checked by validate().
        self.relay.listen.parse().expect("validated relay.listen")
    }

    /// The SMTP listeners that are turned on, with their kind.
    /// The configured IMAP listeners: (implicit TLS?, address).
    pub fn imap_listeners(&self) -> Vec<(bool, SocketAddr)> {
        [(false, &self.imap.listen), (true, &self.imap.tls_listen)]
            .into_iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(tls, l)| (tls, l.parse().expect("validated imap listener")))
            .collect()
    }

    pub fn smtp_listeners(&self) -> Vec<(crate::smtp::Listener, SocketAddr)> {
        use crate::smtp::Listener;
        [
            (Listener::Mx, &self.smtp.mx_listen),
            (Listener::Submission, &self.smtp.submission_listen),
            (Listener::Submissions, &self.smtp.submissions_listen),
        ]
        .into_iter()
        .filter(|(_, l)| !l.is_empty())
        // Checked by validate().
        .map(|(k, l)| (k, l.parse().expect("validated smtp listener")))
        .collect()
    }

    pub fn http_listen(&self) -> SocketAddr {
        // Checked by validate().
        self.http.listen.parse().expect("validated http.listen")
    }
}

/// A host name of LDH labels, at least two, as mail and TLS need.
fn validate_domain(name: &str) -> Result<(), String> {
    let labels: Vec<&str> = name.split('.').collect();
    let ok = name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a lowercase fully qualified domain name"
        ))
    }
}

/// " (line N)" for a TOML error span, so the message points into the file.
fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) if s.start <= text.len() => {
            format!(" (line {})", text[..s.start].matches('\n').count() + 1)
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml(text, "test.toml", Path::new("/etc/lnmp"), env)
    }

    #[test]
    fn empty_is_the_embedded_default() {
        let c = parse("", &[]).unwrap();
        let mut d = Config::default();
        d.server.data_dir = "/etc/lnmp/data".into();
        assert_eq!(c, d);
    }

    #[test]
    fn the_example_file_documents_the_defaults() {
        let text = include_str!("../config/lnmp-bridge.example.toml");
        let parsed: toml::Table = toml::from_str(text).unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        // Every key of the config appears in the example with its default value.
        for (section, keys) in &defaults {
            let keys = keys.as_table().unwrap();
            let example = parsed
                .get(section)
                .and_then(|s| s.as_table())
                .unwrap_or_else(|| panic!("[{section}] missing from the example"));
            for (key, value) in keys {
                assert_eq!(
                    example.get(key),
                    Some(value),
                    "{section}.{key} in the example"
                );
            }
            assert_eq!(
                example.len(),
                keys.len(),
                "[{section}] has keys the config lacks"
            );
        }
        assert_eq!(parsed.len(), defaults.len());
    }

    #[test]
    fn environment_overrides_keys() {
        let c = parse(
            "[http]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("LNMP__HTTP__LISTEN", "0.0.0.0:443"),
                ("LNMP__PRICING__STRANGER", "250"),
                ("LNMP__HTTP__TLS", "false"),
                ("LNMP__DATABASE__URL", "postgres://u@h/db"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.http.listen, "0.0.0.0:443");
        assert_eq!(c.pricing.stranger, 250);
        assert!(!c.http.tls);
        assert_eq!(c.database.url, "postgres://u@h/db");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[http]\nlisten = \"nope\"\n", "http.listen"),
            ("[server]\ndomain = \"Example\"\n", "server.domain"),
            ("[database]\nurl = \"mysql://x\"\n", "database.url"),
            ("[tls]\ncert_file = \"c.pem\"\n", "tls.cert_file"),
            (
                "[pricing]\nsurge_multiplier = 0\n",
                "pricing.surge_multiplier",
            ),
            ("[log]\nlevel = \"=[\"\n", "log.level"),
            ("[relay]\npublic_url = \"https://x\"\n", "relay.public_url"),
            ("[acme]\ncontact = \"admin\"\n", "acme.contact"),
            (
                "[acme]\ndirectory_url = \"ftp://x\"\n",
                "acme.directory_url",
            ),
            ("[acme]\nhostnames = [\"Mail\"]\n", "acme.hostnames"),
            ("[acme]\nhttp_listen = \"80\"\n", "acme.http_listen"),
            ("[acme]\nrenew_before_days = 0\n", "acme.renew_before_days"),
            (
                "[acme]\nretry_base_seconds = 10\nretry_max_seconds = 5\n",
                "acme.retry_max_seconds",
            ),
            ("[acme]\nenabled = true\n", "acme.http_listen"),
            ("[acme]\nchallenge = \"dns-01\"\n", "unknown variant"),
            (
                "[acme]\nenabled = true\nchallenge = \"tls-alpn-01\"\n[http]\ntls = false\n",
                "acme.challenge",
            ),
            (
                "[acme]\nenabled = true\nhttp_listen = \"0.0.0.0:80\"\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\n",
                "acme.enabled",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text, &[]).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
        let err = parse("[http]\nlisten = 5\n", &[]).unwrap_err().to_string();
        assert!(err.contains("invalid type"), "{err}");
        let err = parse("[http]\nlistn = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `listn`"), "{err}");
        let err = parse("[http\n", &[]).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        let err = parse("", &[("LNMP__HTTP", "x")]).unwrap_err().to_string();
        assert!(err.contains("LNMP__HTTP"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = parse("[secrets]\nmaster_key_file = \"k/master.key\"\n", &[]).unwrap();
        assert_eq!(c.master_key_file(), PathBuf::from("/etc/lnmp/k/master.key"));
        assert_eq!(
            c.database_url(),
            "sqlite:///etc/lnmp/data/lnmp-bridge.db?mode=rwc"
        );
    }
}
