//! `quickstart`: from nothing to a configured domain — config file, master key,
//! database, DKIM keys and the first user — and the DNS records the domain needs.

use crate::config::Config;
use crate::custody::{self, password};
use crate::dkim::{self, DkimKey};
use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::path::PathBuf;

pub struct Options {
    /// The folder to set up; the config file is written here.
    pub dir: PathBuf,
    pub domain: String,
    pub admin: String,
    /// This machine's public name; `mail.<domain>` if not given.
    pub hostname: Option<String>,
    /// PostgreSQL instead of SQLite.
    pub database_url: Option<String>,
}

/// The config file quickstart writes, in `Options::dir`.
pub const CONFIG_FILE: &str = "lnmp-bridge.toml";

fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Sets the domain up and returns what to tell the operator.
pub async fn run(o: Options) -> anyhow::Result<String> {
    let domain = o.domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let hostname = o
        .hostname
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_else(|| format!("mail.{domain}"));
    crate::lnmp::address::validate_username(&o.admin)
        .with_context(|| format!("cannot use {:?} as the admin's user name", o.admin))?;
    let config_path = o.dir.join(CONFIG_FILE);
    if config_path.exists() {
        bail!(
            "{} exists already; quickstart sets up a new domain only",
            config_path.display()
        );
    }

    let mut text = format!(
        "# Written by `lnmp-bridge quickstart`. Every key with its default and meaning:\n\
         # config/lnmp-bridge.example.toml in the source.\n\n\
         [server]\ndomain = {}\nhostname = {}\ndata_dir = \"data\"\n\n\
         [http]\nlisten = \"0.0.0.0:443\"\n\n\
         [relay]\nlisten = \"0.0.0.0:7138\"\n\n\
         [smtp]\nmx_listen = \"0.0.0.0:25\"\nsubmission_listen = \"0.0.0.0:587\"\n\
         submissions_listen = \"0.0.0.0:465\"\n\n\
         [imap]\nlisten = \"0.0.0.0:143\"\ntls_listen = \"0.0.0.0:993\"\n",
        quoted(&domain),
        quoted(&hostname)
    );
    if let Some(url) = &o.database_url {
        write!(text, "\n[database]\nurl = {}\n", quoted(url))?;
    }
    // Validate before touching the disk, so a bad domain leaves nothing behind.
    let config = Config::from_toml(
        &text,
        &config_path.display().to_string(),
        &o.dir,
        std::env::vars(),
    )?;
    std::fs::create_dir_all(&o.dir)
        .with_context(|| format!("cannot create {}", o.dir.display()))?;
    if config.server.data_dir.join("master.key").exists() || config.master_key_file().exists() {
        bail!(
            "{} exists already; quickstart will not replace a master key",
            config.master_key_file().display()
        );
    }

    let custody = custody::open(&config).await?;
    if !custody.list_users().await?.is_empty() {
        bail!("the database already has users; quickstart sets up a new domain only");
    }
    let keys = dkim::generate(&config.server.data_dir.join("dkim"), "lnmp1")?;
    let pw = password::generate();
    let admin = custody.add_user(&o.admin, &pw).await?;
    custody.store().close().await;
    std::fs::write(&config_path, &text)
        .with_context(|| format!("cannot write {}", config_path.display()))?;

    let mut out = String::new();
    writeln!(out, "Set up {domain} in {}:", o.dir.display())?;
    writeln!(out, "  config      {}", config_path.display())?;
    writeln!(
        out,
        "  master key  {}  (back it up apart from the database: without it no user key opens)",
        config.master_key_file().display()
    )?;
    writeln!(
        out,
        "  database    {}",
        if o.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite in the data folder"
        }
    )?;
    writeln!(out)?;
    writeln!(out, "Admin user {}:", admin.username)?;
    writeln!(out, "  email address  {}", admin.email)?;
    writeln!(out, "  LNMP address   {}", admin.address)?;
    writeln!(
        out,
        "  password       {pw}   (shown once; change it with `lnmp-bridge user passwd {}`)",
        admin.username
    )?;
    writeln!(out)?;
    out.push_str(&dns_records(&domain, &hostname, &admin.email, &keys));
    writeln!(out)?;
    writeln!(
        out,
        "Then start the daemon: lnmp-bridge serve --config {}",
        config_path.display()
    )?;
    Ok(out)
}

/// A DNS record the domain needs: its absolute name (with the final dot), its type,
/// and its value (a TXT value unquoted; a placeholder in `<...>` for the addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    pub name: String,
    pub kind: &'static str,
    pub value: String,
}

/// The records quickstart asks for, which `doctor` checks.
pub fn expected_records(
    domain: &str,
    hostname: &str,
    postmaster: &str,
    keys: &[DkimKey],
) -> Vec<DnsRecord> {
    let row = |name: String, kind, value: String| DnsRecord { name, kind, value };
    let mut rows = vec![
        row(
            format!("{hostname}."),
            "A",
            "<this server's IPv4 address>".into(),
        ),
        row(
            format!("{hostname}."),
            "AAAA",
            "<this server's IPv6 address, if any>".into(),
        ),
        row(format!("{domain}."), "MX", format!("10 {hostname}.")),
        row(format!("{domain}."), "TXT", "v=spf1 mx -all".into()),
        row(
            format!("_dmarc.{domain}."),
            "TXT",
            format!("v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:{postmaster}"),
        ),
    ];
    for k in keys {
        rows.push(row(format!("{}.", k.name(domain)), "TXT", k.txt()));
    }
    rows.extend([
        row(
            format!("autoconfig.{domain}."),
            "CNAME",
            format!("{hostname}."),
        ),
        row(
            format!("_submissions._tcp.{domain}."),
            "SRV",
            format!("0 1 465 {hostname}."),
        ),
        row(
            format!("_submission._tcp.{domain}."),
            "SRV",
            format!("0 1 587 {hostname}."),
        ),
        row(
            format!("_imaps._tcp.{domain}."),
            "SRV",
            format!("0 1 993 {hostname}."),
        ),
        row(
            format!("_imap._tcp.{domain}."),
            "SRV",
            format!("0 1 143 {hostname}."),
        ),
    ]);
    rows
}

/// The records to publish, in zone-file syntax.
pub fn dns_records(domain: &str, hostname: &str, postmaster: &str, keys: &[DkimKey]) -> String {
    let rows = expected_records(domain, hostname, postmaster, keys);
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = format!("DNS records for {domain}:\n\n");
    for r in rows {
        let value = if r.kind == "TXT" {
            quote_txt(&r.value)
        } else {
            r.value
        };
        let (name, kind) = (r.name, r.kind);
        let _ = writeln!(out, "{name:<width$}  IN {kind:<5}  {value}");
    }
    let _ = write!(
        out,
        "\nLNMP address lookups go to https://{domain}/.well-known/lnmp.json. If {domain} is\n\
         served by another web server, forward that path to https://{hostname}/.well-known/lnmp.json.\n"
    );
    out
}

/// A TXT value as quoted strings of at most 255 octets each (RFC 1035 character-strings).
fn quote_txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_txt_values_are_split() {
        let v = "a".repeat(300);
        let q = quote_txt(&v);
        assert_eq!(q, format!("\"{}\" \"{}\"", "a".repeat(255), "a".repeat(45)));
    }
}
