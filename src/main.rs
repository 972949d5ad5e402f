//! The `lnmp-bridge` command line: the daemon and the tools to run a domain with it.
//! Every failure is one line on stderr and a non-zero exit.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use lnmp_bridge::client::keyfile;
use lnmp_bridge::config::{Config, LogFormat};
use lnmp_bridge::custody::{self, Custody, password};
use lnmp_bridge::lnmp::{
    Address, Draft, Filter, Identity, Kind, Limits, Message, MessageContent, Priority, Seed,
};
use lnmp_bridge::relay::lookup::{Recipient, Resolver};
use lnmp_bridge::relay::outbox::{Outbox, RetryTiming};
use lnmp_bridge::relay::tls::{Trust, client_config};
use lnmp_bridge::relay::{ClientOptions, Connection, subscriber};
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
    /// Run only an LNMP relay, taking any valid message (a public relay), on the
    /// config's data folder and relay settings.
    Relay(RelayArgs),
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
    /// Look at the queue of mail leaving for the email world.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// A user's balance: what paid mail earned them and what they pay to send.
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// The embedded dev wallet (Lightning backend "dev"; no real money).
    #[command(subcommand)]
    Dev(DevCommand),
    /// Bring existing mail (an mbox file or a Maildir folder) into a user's mailboxes.
    Import {
        #[arg(long)]
        user: String,
        /// An mbox file, or a Maildir folder (its subfolders become mailboxes).
        path: PathBuf,
    },
    /// Write a user's mail out as an mbox file.
    Export {
        #[arg(long)]
        user: String,
        #[arg(long)]
        mbox: PathBuf,
    },
    /// Take a consistent snapshot of the data while the daemon runs.
    Backup { dir: PathBuf },
    /// Put a snapshot taken by `backup` back into the data folder.
    Restore {
        dir: PathBuf,
        /// Replace a database that is already there (kept beside it, renamed).
        #[arg(long)]
        force: bool,
    },
    /// Check DNS records, certificate, listeners, database and Lightning backend, and
    /// say what to fix.
    Doctor,
}

#[derive(Subcommand)]
enum WalletCommand {
    /// Show the user's balance.
    Balance { user: String },
    /// Show the user's ledger entries, newest first.
    History {
        user: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Make an invoice that credits the user's balance when paid; prints it.
    Deposit { user: String, sats: u64 },
    /// Pay a BOLT11 invoice (with an amount) from the user's balance.
    Withdraw { user: String, bolt11: String },
    /// List the mail held for the user until paid, and what became of it.
    Held { user: String },
}

#[derive(Subcommand)]
enum DevCommand {
    /// Pay an invoice the dev wallet issued, as a payer's wallet would: the daemon
    /// delivers what it paid for.
    Pay { bolt11: String },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List recipients not yet delivered (queued or failed); --all includes sent ones.
    List {
        #[arg(long)]
        all: bool,
    },
    /// Make every queued recipient due now; the daemon tries them within
    /// outbound.poll_seconds.
    Flush,
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

#[derive(Args)]
struct RelayArgs {
    /// Listen here instead of relay.listen.
    #[arg(long)]
    listen: Option<String>,
    /// The URL clients reach this relay at (what AUTH answers must name).
    #[arg(long)]
    public_url: Option<String>,
    /// Plain ws:// (behind a TLS-terminating proxy, or on loopback).
    #[arg(long)]
    no_tls: bool,
    /// Keep relay.accept from the config instead of taking every valid message.
    #[arg(long)]
    local_only: bool,
}

/// How the native client reaches relays and lookups.
#[derive(Args)]
struct NetArgs {
    /// Trust this PEM certificate (e.g. a self-signed relay's) besides the public roots.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Accept any TLS certificate. For testing only: anyone in between can read along.
    #[arg(long)]
    insecure: bool,
    /// Look addresses up here instead of https://<host of the address>.
    #[arg(long)]
    lookup_url: Option<String>,
}

#[derive(Args)]
struct Compose {
    /// Recipients: LNMP addresses (name#checksum@host) or public keys (hex), repeatable.
    #[arg(long, required = true)]
    to: Vec<String>,
    /// Relays to publish to besides the recipients' own (needed for bare keys).
    #[arg(long)]
    relay: Vec<String>,
    #[arg(long)]
    subject: Option<String>,
    /// The text; read from standard input when absent.
    #[arg(long)]
    body: Option<String>,
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
    /// Send an LNMP message as the user: sealed, signed with their key, and queued until
    /// a relay takes it (the daemon keeps retrying what is not taken at once).
    Send {
        name: String,
        #[command(flatten)]
        compose: Compose,
    },
    /// Send everything that reaches the user's INBOX to an email address too; replies
    /// from that address come back as the user's LNMP mail.
    Forward {
        name: String,
        /// The address to forward to.
        #[arg(required_unless_present = "off", conflicts_with = "off")]
        address: Option<String>,
        /// Stop forwarding.
        #[arg(long)]
        off: bool,
    },
    /// Show the LNMP messages in the user's inbox, opened with their key.
    Inbox {
        name: String,
        /// Only messages sent at or after this Unix time.
        #[arg(long, default_value_t = 0)]
        since: i64,
    },
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
    /// Sats the relay client pays per message for the user without asking.
    #[arg(long)]
    autopay_cap: Option<u32>,
    /// Forget the user's own prices and follow the config again.
    #[arg(long, conflicts_with_all = ["stranger", "acquaintance", "friend", "priority", "surge_multiplier", "surge_threshold", "autopay_cap"])]
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
    /// Seal, sign and publish a message to the recipients' relays; succeeds when at
    /// least one relay accepts it.
    Send {
        #[arg(long, default_value = "lnmp.key")]
        key_file: PathBuf,
        #[command(flatten)]
        compose: Compose,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Print the messages addressed to you that a relay holds.
    Inbox {
        #[arg(long, default_value = "lnmp.key")]
        key_file: PathBuf,
        /// The relay to read (ws:// or wss://), repeatable.
        #[arg(long, required = true)]
        relay: Vec<String>,
        /// Only messages sent at or after this Unix time.
        #[arg(long)]
        since: Option<u64>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Print messages addressed to you as they arrive, until Ctrl-C; reconnects by itself.
    Watch {
        #[arg(long, default_value = "lnmp.key")]
        key_file: PathBuf,
        #[arg(long, required = true)]
        relay: String,
        #[command(flatten)]
        net: NetArgs,
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
        Command::Relay(a) => {
            let mut config = setup(config_path, log_format)?;
            if let Some(l) = a.listen {
                config.relay.listen = l;
            }
            if let Some(u) = a.public_url {
                config.relay.public_url = u;
            }
            if a.no_tls {
                config.relay.tls = false;
            }
            config.validate()?;
            daemon::relay_only(config, !a.local_only).await?;
        }
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
            let config = setup(config_path, log_format)?;
            let c = custody::open(&config).await?;
            let result = user(&c, &config, cmd).await;
            c.store().close().await;
            result?;
        }
        Command::Contacts(cmd) => {
            let c = custody::open(&setup(config_path, log_format)?).await?;
            let result = contacts(&c, cmd).await;
            c.store().close().await;
            result?;
        }
        Command::Queue(cmd) => {
            let c = custody::open(&setup(config_path, log_format)?).await?;
            let result = queue(&c, cmd).await;
            c.store().close().await;
            result?;
        }
        Command::Pricing(cmd) => {
            let config = setup(config_path, log_format)?;
            let c = custody::open(&config).await?;
            let result = pricing(&c, cmd, config.paywall.autopay_cap_sats).await;
            c.store().close().await;
            result?;
        }
        Command::Client(cmd) => {
            init_logging(&Config::default(), log_format);
            client(cmd).await?
        }
        Command::Wallet(cmd) => {
            let config = setup(config_path, log_format)?;
            let c = custody::open(&config).await?;
            let result = wallet(&c, &config, cmd).await;
            c.store().close().await;
            result?;
        }
        Command::Import { user, path } => {
            let config = setup(config_path, log_format)?;
            lnmp_bridge::mailfiles::import_command(&config, &user, &path).await?;
        }
        Command::Export { user, mbox } => {
            let config = setup(config_path, log_format)?;
            lnmp_bridge::mailfiles::export_command(&config, &user, &mbox).await?;
        }
        Command::Backup { dir } => {
            let config = setup(config_path, log_format)?;
            lnmp_bridge::backup::backup_command(&config, &dir).await?;
        }
        Command::Restore { dir, force } => {
            let config = setup(config_path, log_format)?;
            lnmp_bridge::backup::restore_command(&config, &dir, force).await?;
        }
        Command::Doctor => {
            let config = setup(config_path, log_format)?;
            lnmp_bridge::doctor::doctor_command(&config).await?;
        }
        Command::Dev(DevCommand::Pay { bolt11 }) => {
            let config = setup(config_path, log_format)?;
            let c = custody::open(&config).await?;
            let result = async {
                let wallet = lnmp_bridge::lightning::dev::DevWallet::open(
                    c.store().clone(),
                    c.master_key(),
                )
                .await?;
                use lnmp_bridge::lightning::dev::Presented;
                match wallet.present(&bolt11).await? {
                    Presented::Settled {
                        preimage,
                        amount_msat,
                        ..
                    } => println!(
                        "paid {} msat; preimage {}",
                        amount_msat,
                        hex::encode(preimage)
                    ),
                    Presented::Accepted { amount_msat, .. } => println!(
                        "locked {amount_msat} msat for a hold invoice; the daemon settles or cancels it"
                    ),
                }
                anyhow::Ok(())
            }
            .await;
            c.store().close().await;
            result?;
        }
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

async fn user(c: &Custody, config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
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
                let forward = lnmp_bridge::store::users::get(c.store(), &u.username)
                    .await?
                    .and_then(|r| r.forward_to)
                    .map(|f| format!("  forwards to {f}"))
                    .unwrap_or_default();
                println!("{:<20} {:<36} {}{forward}", u.username, u.email, u.address);
            }
        }
        UserCommand::Forward { name, address, off } => {
            let address = if off { None } else { address };
            c.set_forward(&name, address.as_deref()).await?;
            match address {
                Some(a) => println!(
                    "{name}'s INBOX is forwarded to {}",
                    a.trim().to_ascii_lowercase()
                ),
                None => println!("{name}'s INBOX is not forwarded"),
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
        UserCommand::Send { name, compose } => {
            let identity = c.identity(&name).await?;
            let opts = daemon::client_options(config)?;
            let resolver = Resolver::new(opts.tls.clone(), None)?;
            let (message, relays) =
                seal(&identity, &compose, &resolver, vec![config.relay_url()]).await?;
            let outbox = Outbox::new(
                c.store().clone(),
                opts,
                RetryTiming::from_config(&config.relay_client),
            );
            outbox.enqueue(&message, relays).await?;
            outbox.work_once().await?;
            let id = message.id.to_hex();
            match lnmp_bridge::store::outbox::state(c.store(), &id)
                .await?
                .map(|s| (s.state, s.accepted_by, s.last_error))
            {
                Some((state, by, _)) if state == "sent" => {
                    println!("sent {id} (accepted by {})", by.unwrap_or_default())
                }
                Some((state, _, err)) if state == "failed" => {
                    bail!("{id} was refused: {}", err.unwrap_or_default())
                }
                Some((_, _, err)) => println!(
                    "queued {id}; the daemon keeps trying ({})",
                    err.unwrap_or_default()
                ),
                None => println!("queued {id}"),
            }
        }
        UserCommand::Inbox { name, since } => {
            let u = c.user(&name).await?;
            let identity = c.identity(&name).await?;
            for json in lnmp_bridge::store::inbox::list(c.store(), u.id, since).await? {
                let m = Message::from_json(json.as_bytes(), &Limits::default())?;
                print_message(&m, &identity);
            }
        }
    }
    Ok(())
}

async fn wallet(c: &Custody, config: &Config, cmd: WalletCommand) -> anyhow::Result<()> {
    use lnmp_bridge::paywall::{Paywall, PaywallSettings};
    use lnmp_bridge::store::ledger::{self, Account};
    let backend = lnmp_bridge::lightning::open(config, c.store().clone(), c.master_key()).await?;
    let paywall = Paywall::new(c.clone(), backend, PaywallSettings::from_config(config));
    let sats = |msat: i64| {
        if msat % 1000 == 0 {
            format!("{} sats", msat / 1000)
        } else {
            format!("{:.3} sats", msat as f64 / 1000.0)
        }
    };
    match cmd {
        WalletCommand::Balance { user } => {
            let u = c.user(&user).await?;
            // Payments the daemon has not noticed yet are settled first.
            paywall.settle_paid().await?;
            println!("{}: {}", u.email, sats(paywall.balance(&u).await?));
        }
        WalletCommand::History { user, limit } => {
            let u = c.user(&user).await?;
            let entries = ledger::history(c.store(), Account::User(u.id), limit).await?;
            for e in &entries {
                println!(
                    "{} {:<13} {:>16} {}",
                    format_time(e.created_at),
                    e.kind,
                    sats(e.amount_msat),
                    e.memo
                );
            }
            if entries.is_empty() {
                println!("no entries");
            }
        }
        WalletCommand::Deposit { user, sats: amount } => {
            let u = c.user(&user).await?;
            let invoice = paywall
                .deposit_invoice(
                    &u,
                    amount.saturating_mul(1000),
                    lnmp_bridge::lightning::Description::Memo(format!("Deposit to {}", u.email)),
                )
                .await?;
            println!("{}", invoice.bolt11);
            eprintln!(
                "pay this invoice of {amount} sats; the daemon credits {} when it is paid",
                u.email
            );
        }
        WalletCommand::Withdraw { user, bolt11 } => {
            let u = c.user(&user).await?;
            let paid = paywall
                .pay_from_balance(&u, &bolt11, ledger::Kind::Withdrawal, "withdrawal".into())
                .await?;
            println!(
                "paid {} (fee {}); preimage {}",
                sats(paid.amount_msat as i64),
                sats(paid.fee_msat as i64),
                hex::encode(paid.preimage)
            );
        }
        WalletCommand::Held { user } => {
            let u = c.user(&user).await?;
            let held = paywall.held(&u).await?;
            for h in &held {
                println!(
                    "{} {:<8} {:>10} from {} {}",
                    format_time(h.created_at),
                    h.state.as_str(),
                    sats(h.amount_msat),
                    h.sender,
                    paywall.pay_url(&h.token)
                );
            }
            if held.is_empty() {
                println!("nothing held");
            }
        }
    }
    Ok(())
}

/// A Unix time as an RFC 3339 UTC timestamp.
fn format_time(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0).map_or_else(
        || ts.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

async fn queue(c: &Custody, cmd: QueueCommand) -> anyhow::Result<()> {
    use lnmp_bridge::store::outbound;
    match cmd {
        QueueCommand::List { all } => {
            let now = lnmp_bridge::store::now();
            let rows = outbound::list(c.store(), all).await?;
            for r in &rows {
                let detail = match (r.state.as_str(), &r.last_error) {
                    ("queued", Some(e)) => {
                        format!("next in {}s; last: {e}", (r.next_attempt_at - now).max(0))
                    }
                    ("queued", None) => "due now".to_owned(),
                    (_, Some(e)) => e.clone(),
                    (_, None) => String::new(),
                };
                let from = if r.mail_from.is_empty() {
                    "<>"
                } else {
                    &r.mail_from
                };
                println!(
                    "{} {} attempts={} {} from {from} {detail}",
                    r.id, r.state, r.attempts, r.recipient
                );
            }
            if rows.is_empty() {
                println!("the queue is empty");
            }
        }
        QueueCommand::Flush => {
            let n = outbound::flush(c.store(), lnmp_bridge::store::now()).await?;
            println!("{n} recipients due now");
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

async fn pricing(c: &Custody, cmd: PricingCommand, autopay_default: u64) -> anyhow::Result<()> {
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
            match o.autopay_cap {
                Some(cap) => println!("  auto-pay cap  {cap:>8}  (user)"),
                None => println!("  auto-pay cap  {autopay_default:>8}  (config)"),
            }
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
                    autopay_cap: pick(a.autopay_cap, old.autopay_cap),
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

/// Seals a composed message from `identity` to its recipients; returns it and the relays
/// to publish to. `reply_relays` are where the sender reads, for the recipients' replies.
async fn seal(
    identity: &Identity,
    compose: &Compose,
    resolver: &Resolver,
    reply_relays: Vec<String>,
) -> anyhow::Result<(Message, Vec<String>)> {
    let to: Vec<Recipient> = compose
        .to
        .iter()
        .map(|t| t.parse())
        .collect::<Result<_, String>>()
        .map_err(anyhow::Error::msg)?;
    let (keys, relays) = resolver.route(&to, &compose.relay).await?;
    if relays.is_empty() {
        bail!("no relay to send to: give --relay for recipients named by key");
    }
    let body = match &compose.body {
        Some(b) => b.clone(),
        None => {
            let mut b = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut b)
                .context("cannot read the body from standard input")?;
            b
        }
    };
    let draft = Draft {
        to: keys,
        kind: Kind::Text,
        timestamp: lnmp_bridge::store::unix_now(),
        content: MessageContent {
            subject: compose.subject.clone(),
            body,
            ..MessageContent::default()
        },
        relays: reply_relays,
        expiry: None,
        priority: Priority::Normal,
    };
    Ok((
        Message::seal(identity, &draft, &mut rand_core::OsRng)?,
        relays,
    ))
}

/// Prints a message as its recipient (or sender) reads it.
fn print_message(m: &Message, reader: &Identity) {
    match m.open(reader, &Limits::default()) {
        Ok(content) => {
            println!("id:      {}", m.id);
            println!("from:    {}", m.from);
            println!("date:    {}", m.timestamp);
            if let Some(s) = &content.subject {
                println!("subject: {s}");
            }
            if let Some(e) = &content.email {
                println!(
                    "via:     email from {}",
                    e.mail_from.as_deref().unwrap_or("<>")
                );
            }
            for a in &content.attachments {
                println!(
                    "attach:  {} ({}, {} bytes, {})",
                    a.filename, a.mime_type, a.size, a.cid
                );
            }
            println!();
            println!("{}", content.body);
            println!("---");
        }
        Err(e) => println!("id:      {}\n(cannot open: {e})\n---", m.id),
    }
}

fn client_net(net: &NetArgs) -> anyhow::Result<(ClientOptions, Resolver)> {
    let tls = if net.insecure {
        client_config(Trust::Insecure)?
    } else {
        let files: Vec<&Path> = net.ca_file.iter().map(|p| p.as_path()).collect();
        client_config(Trust::Roots {
            public: true,
            files: &files,
        })?
    };
    let opts = ClientOptions {
        tls: tls.clone(),
        connect_timeout: std::time::Duration::from_secs(15),
        limits: Limits::default(),
    };
    Ok((opts, Resolver::new(tls, net.lookup_url.clone())?))
}

async fn client(cmd: ClientCommand) -> anyhow::Result<()> {
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
        ClientCommand::Send {
            key_file,
            compose,
            net,
        } => {
            let id = Identity::from_seed(&keyfile::load(&key_file)?);
            let (opts, resolver) = client_net(&net)?;
            let (message, relays) = seal(&id, &compose, &resolver, compose.relay.clone()).await?;
            let mut delivered = false;
            for url in &relays {
                let outcome = match Connection::connect(url, None, &opts).await {
                    Ok(conn) => conn
                        .publish(&message, std::time::Duration::from_secs(15))
                        .await
                        .map_err(anyhow::Error::from),
                    Err(e) => Err(e.into()),
                };
                match outcome {
                    Ok(o) if o.delivered() => {
                        delivered = true;
                        println!("{url}: accepted");
                    }
                    Ok(o) => println!("{url}: not accepted: {o:?}"),
                    Err(e) => println!("{url}: {e:#}"),
                }
            }
            if !delivered {
                bail!("no relay accepted {}", message.id);
            }
            println!("sent {}", message.id);
        }
        ClientCommand::Inbox {
            key_file,
            relay,
            since,
            net,
        } => {
            let id = Identity::from_seed(&keyfile::load(&key_file)?);
            let (opts, _) = client_net(&net)?;
            let filter = Filter {
                to: Some(vec![id.public_key()]),
                since,
                ..Filter::default()
            };
            let mut seen = std::collections::HashSet::new();
            for url in &relay {
                let conn = Connection::connect(url, Some(&id), &opts).await?;
                for m in conn
                    .query(vec![filter.clone()], std::time::Duration::from_secs(60))
                    .await?
                {
                    if seen.insert(m.id) && m.verify().is_ok() {
                        print_message(&m, &id);
                    }
                }
            }
        }
        ClientCommand::Watch {
            key_file,
            relay,
            net,
        } => {
            let id = std::sync::Arc::new(Identity::from_seed(&keyfile::load(&key_file)?));
            let (opts, _) = client_net(&net)?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            let reader = id.clone();
            let handler: subscriber::Handler = std::sync::Arc::new(move |m: Message| {
                let reader = reader.clone();
                Box::pin(async move {
                    if m.verify().is_ok() {
                        print_message(&m, &reader);
                    }
                    Ok(())
                })
            });
            let follow = subscriber::follow(relay, id, opts, 0, handler, shutdown.clone());
            tokio::select! {
                _ = follow => {}
                _ = daemon::wait_for_signal() => shutdown.cancel(),
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Printing into a closed pipe (`lnmp-bridge user list | head`) ends the process
    // quietly, as for any Unix tool, instead of panicking.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Each password check (Argon2id) takes 19 MiB. glibc raises its mmap threshold
    // after the first such block is freed and then keeps later ones in its arenas, so
    // every login would leave memory behind; a fixed threshold hands each block back.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a malloc tuning call before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
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
