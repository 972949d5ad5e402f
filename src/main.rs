//! The `lnmp-bridge` command line: the daemon and the tools to run a domain with it.
//! Every failure is one line on stderr and a non-zero exit.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use lnmp_bridge::client::keyfile;
use lnmp_bridge::config::{Config, LogFormat};
use lnmp_bridge::custody::{self, Custody, password};
use lnmp_bridge::lnmp::{Address, Identity, Seed};
use lnmp_bridge::store::contacts::Level;
use lnmp_bridge::store::pricing::{Overrides, PassKind};
use lnmp_bridge::{daemon, quickstart};
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "lnmp-bridge",
    version,
    about = "A self-hosted mail domain on LNMP: encrypted mail that strangers pay to send",
    long_about = "A self-hosted mail domain on LNMP, the Lightning Native Messaging Protocol.\n\n\
                  Commands read the config file given with --config, else ./lnmp-bridge.toml if it \
                  exists, else the embedded default (SQLite under ./data, self-signed TLS, \
                  unprivileged ports). Any config key can be set from the environment as \
                  LNMP__<SECTION>__<KEY>."
)]
struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "LNMP_CONFIG")]
    config: Option<PathBuf>,
    /// Log format: human or json (overrides log.format).
    #[arg(long, global = true, value_parser = ["human", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set up a new domain: config file, master key, database, DKIM keys and the first
    /// user; prints the DNS records to publish.
    Quickstart(QuickstartArgs),
    /// Run the daemon until SIGTERM or Ctrl-C.
    Serve,
    /// Check the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the domain's users and their custodial LNMP keys.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage a user's contacts: people who pay the friend or acquaintance price.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Show or set what strangers pay to reach a user.
    #[command(subcommand)]
    Pricing(PricingCommand),
    /// Be an LNMP user from the command line, with a key file of your own.
    #[command(subcommand)]
    Client(ClientCommand),
}

#[derive(Args)]
struct QuickstartArgs {
    /// The mail domain, e.g. example.com.
    #[arg(long)]
    domain: String,
    /// The first user's name (the part before @).
    #[arg(long)]
    admin: String,
    /// This machine's public host name [default: mail.<domain>].
    #[arg(long)]
    hostname: Option<String>,
    /// The folder to set up.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Use this PostgreSQL database instead of SQLite, e.g. postgres://lnmp@db/lnmp.
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the configuration, and say what it resolves to.
    Check,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user with a new LNMP identity; prints a generated password unless
    /// --password-stdin is given.
    Add {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users with their email and LNMP addresses.
    List,
    /// Set a user's password (generated and printed unless --password-stdin).
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user with their mail and key, for good.
    Remove {
        name: String,
        /// Confirm: the user's key and mail cannot be recovered afterwards.
        #[arg(long)]
        yes: bool,
    },
    /// Print the user's 24-word key, with which they can take their identity elsewhere.
    ExportKey { name: String },
    /// Replace the user's identity with the one in 24 words read from standard input.
    ImportKey { name: String },
}

#[derive(Subcommand)]
enum ContactsCommand {
    /// Add a contact (an email or LNMP address), or change its level.
    Add {
        user: String,
        address: String,
        #[arg(long, default_value = "friend", value_parser = ["friend", "acquaintance"])]
        level: String,
    },
    /// List a user's contacts.
    List { user: String },
    /// Remove a contact.
    Remove { user: String, address: String },
}

#[derive(Subcommand)]
enum PricingCommand {
    /// Show the prices in force for a user and where each comes from.
    Show { user: String },
    /// Set a user's own prices (satoshis) and free passes; unset ones follow the config.
    Set(PricingSetArgs),
}

#[derive(Args)]
struct PricingSetArgs {
    user: String,
    #[arg(long)]
    stranger: Option<u32>,
    #[arg(long)]
    acquaintance: Option<u32>,
    #[arg(long)]
    friend: Option<u32>,
    #[arg(long)]
    priority: Option<u32>,
    #[arg(long)]
    surge_multiplier: Option<u32>,
    /// Unread messages above which surge pricing applies; 0 turns it off.
    #[arg(long)]
    surge_threshold: Option<u32>,
    /// Forget the user's own prices and follow the config again.
    #[arg(long, conflicts_with_all = ["stranger", "acquaintance", "friend", "priority", "surge_multiplier", "surge_threshold"])]
    defaults: bool,
    /// Let mail that DKIM-authenticates as this domain through for free (repeatable).
    #[arg(long)]
    free_dkim_domain: Vec<String>,
    #[arg(long)]
    remove_free_dkim_domain: Vec<String>,
    /// Let mail with this List-Id through for free (repeatable).
    #[arg(long)]
    free_list_id: Vec<String>,
    #[arg(long)]
    remove_free_list_id: Vec<String>,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Create a new identity and write its 24-word mnemonic to a key file (mode 0600).
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long, default_value = "lnmp.key")]
        key_file: PathBuf,
    },
    /// Print the public key, and the LNMP address of a username at a relay host.
    Address {
        #[arg(long, default_value = "lnmp.key")]
        key_file: PathBuf,
        /// The username part of the address (a-z, 0-9, '.', '_', '-').
        #[arg(long)]
        username: Option<String>,
        /// The relay host the address points at, e.g. example.com.
        #[arg(long)]
        relay: Option<String>,
    },
}

/// The config named on the command line, else ./lnmp-bridge.toml, else the embedded default.
fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let default = Path::new(quickstart::CONFIG_FILE);
    Ok(match path {
        Some(p) => Config::load(p)?,
        None if default.exists() => Config::load(default)?,
        None => Config::embedded()?,
    })
}

fn init_logging(config: &Config, format: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let json = match format {
        Some(f) => f == "json",
        None => config.log.format == LogFormat::Json,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A password from the first line of standard input, or a generated one to print.
fn read_or_generate_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((password::generate(), true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let p = line.trim_end_matches(['\r', '\n']).to_owned();
    Ok((p, false))
}

fn read_mnemonic() -> anyhow::Result<zeroize::Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        eprintln!("Type or paste the 24 words, then press Enter:");
    }
    let mut words = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut words)
        .context("cannot read the words from standard input")?;
    Ok(words)
}

/// Loads the config and starts logging with it.
fn setup(path: Option<&Path>, log_format: Option<&str>) -> anyhow::Result<Config> {
    let config = load_config(path)?;
    init_logging(&config, log_format);
    Ok(config)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config_path = cli.config.as_deref();
    let log_format = cli.log_format.as_deref();
    match cli.command {
        Command::Quickstart(a) => {
            let out = quickstart::run(quickstart::Options {
                dir: a.dir,
                domain: a.domain,
                admin: a.admin,
                hostname: a.hostname,
                database_url: a.database_url,
            })
            .await?;
            print!("{out}");
        }
        Command::Serve => daemon::serve(setup(config_path, log_format)?).await?,
        Command::Config(ConfigCommand::Check) => {
            let config = load_config(config_path)?;
            println!("config ok");
            println!("  domain      {}", config.server.domain);
            println!("  hostname    {}", config.server.hostname);
            println!("  data        {}", config.server.data_dir.display());
            println!("  database    {}", redact_url(&config.database_url()));
            println!("  master key  {}", config.master_key_file().display());
            println!(
                "  http        {} ({})",
                config.http.listen,
                if config.http.tls {
                    "https"
                } else {
                    "plain http"
                }
            );
            println!("  relay URL   {}", config.relay_url());
        }
        Command::User(cmd) => {
            let c = custody::open(&setup(config_path, log_format)?).await?;
            let result = user(&c, cmd).await;
            c.store().close().await;
            result?;
        }
        Command::Contacts(cmd) => {
            let c = custody::open(&setup(config_path, log_format)?).await?;
            let result = contacts(&c, cmd).await;
            c.store().close().await;
            result?;
        }
        Command::Pricing(cmd) => {
            let c = custody::open(&setup(config_path, log_format)?).await?;
            let result = pricing(&c, cmd).await;
            c.store().close().await;
            result?;
        }
        Command::Client(cmd) => client(cmd)?,
    }
    Ok(())
}

/// A database URL without its password, for printing.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn user(c: &Custody, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            password_stdin,
        } => {
            let (pw, generated) = read_or_generate_password(password_stdin)?;
            let u = c.add_user(&name, &pw).await?;
            println!("created {}", u.username);
            println!("  email address  {}", u.email);
            println!("  LNMP address   {}", u.address);
            if generated {
                println!("  password       {pw}   (shown once)");
            }
        }
        UserCommand::List => {
            for u in c.list_users().await? {
                println!("{:<20} {:<36} {}", u.username, u.email, u.address);
            }
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let (pw, generated) = read_or_generate_password(password_stdin)?;
            c.set_password(&name, &pw).await?;
            if generated {
                println!("new password for {name}: {pw}   (shown once)");
            } else {
                println!("password of {name} changed");
            }
        }
        UserCommand::Remove { name, yes } => {
            if !yes {
                bail!(
                    "this deletes {name}'s mail and LNMP key for good (export the key first with `user export-key {name}`); add --yes to go ahead"
                );
            }
            c.remove_user(&name).await?;
            println!("removed {name}");
        }
        UserCommand::ExportKey { name } => {
            let words = c.export_key(&name).await?;
            println!("{}", words.as_str());
        }
        UserCommand::ImportKey { name } => {
            let words = read_mnemonic()?;
            let u = c.import_key(&name, &words).await?;
            println!("{} now holds the imported key", u.username);
            println!("  LNMP address   {}", u.address);
        }
    }
    Ok(())
}

async fn contacts(c: &Custody, cmd: ContactsCommand) -> anyhow::Result<()> {
    match cmd {
        ContactsCommand::Add {
            user,
            address,
            level,
        } => {
            let u = c.user(&user).await?;
            let level: Level = level.parse().map_err(anyhow::Error::msg)?;
            let a = c.add_contact(&u, &address, level).await?;
            println!("{a} is now {user}'s {level}");
        }
        ContactsCommand::List { user } => {
            let u = c.user(&user).await?;
            for contact in c.contacts(&u).await? {
                println!("{:<14} {}", contact.level, contact.address);
            }
        }
        ContactsCommand::Remove { user, address } => {
            let u = c.user(&user).await?;
            c.remove_contact(&u, &address).await?;
            println!("removed {address} from {user}'s contacts");
        }
    }
    Ok(())
}

async fn pricing(c: &Custody, cmd: PricingCommand) -> anyhow::Result<()> {
    match cmd {
        PricingCommand::Show { user } => {
            let u = c.user(&user).await?;
            let p = c.policy(&u).await?;
            let o = c.pricing_overrides(&u).await?;
            let from = |v: Option<i64>| if v.is_some() { "user" } else { "config" };
            println!("prices for {} (satoshis)", u.email);
            println!("  stranger      {:>8}  ({})", p.stranger, from(o.stranger));
            println!(
                "  acquaintance  {:>8}  ({})",
                p.acquaintance,
                from(o.acquaintance)
            );
            println!("  friend        {:>8}  ({})", p.friend, from(o.friend));
            println!("  priority      {:>8}  ({})", p.priority, from(o.priority));
            match p.surge {
                Some(s) => println!(
                    "  surge         x{} above {} unread",
                    s.multiplier, s.threshold
                ),
                None => println!("  surge         off"),
            }
            println!(
                "  free DKIM domains  {}",
                list_or_none(&p.free_dkim_domains)
            );
            println!("  free List-Ids      {}", list_or_none(&p.free_list_ids));
        }
        PricingCommand::Set(a) => {
            let u = c.user(&a.user).await?;
            let o = if a.defaults {
                Overrides::default()
            } else {
                let old = c.pricing_overrides(&u).await?;
                let pick = |new: Option<u32>, old: Option<i64>| new.map(i64::from).or(old);
                Overrides {
                    stranger: pick(a.stranger, old.stranger),
                    acquaintance: pick(a.acquaintance, old.acquaintance),
                    friend: pick(a.friend, old.friend),
                    priority: pick(a.priority, old.priority),
                    surge_multiplier: pick(a.surge_multiplier, old.surge_multiplier),
                    surge_threshold: pick(a.surge_threshold, old.surge_threshold),
                }
            };
            c.set_pricing(&u, o).await?;
            for (values, kind, present) in [
                (&a.free_dkim_domain, PassKind::DkimDomain, true),
                (&a.remove_free_dkim_domain, PassKind::DkimDomain, false),
                (&a.free_list_id, PassKind::ListId, true),
                (&a.remove_free_list_id, PassKind::ListId, false),
            ] {
                for v in values {
                    c.set_free_pass(&u, kind, v, present).await?;
                }
            }
            println!(
                "prices of {} updated; `lnmp-bridge pricing show {}` shows them",
                u.username, u.username
            );
        }
    }
    Ok(())
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn client(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Keygen { key_file } => {
            let seed = Seed::generate(&mut rand_core::OsRng);
            keyfile::create(&key_file, &seed)?;
            let id = Identity::from_seed(&seed);
            println!("public key: {}", id.public_key());
            println!(
                "key file:   {} (keep it secret; it is also your paper backup)",
                key_file.display()
            );
        }
        ClientCommand::Address {
            key_file,
            username,
            relay,
        } => {
            let id = Identity::from_seed(&keyfile::load(&key_file)?);
            println!("public key: {}", id.public_key());
            if let Some(username) = username {
                let address = Address::new(&id.public_key(), &username, relay.as_deref())
                    .with_context(|| format!("cannot make an address of {username:?}"))?;
                println!("address:    {address}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lnmp-bridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lnmp-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
