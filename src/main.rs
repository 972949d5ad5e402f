//! The `lnmp-bridge` command line: one binary for the daemon and its tools.

use anyhow::Context;
use clap::{Parser, Subcommand};
use lnmp_bridge::client::keyfile;
use lnmp_bridge::lnmp::{Address, Identity, Seed};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "lnmp-bridge",
    version,
    about = "Email gateway for LNMP, the Lightning Native Messaging Protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Be an LNMP user from the command line, with a key file of your own.
    #[command(subcommand)]
    Client(ClientCommand),
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Client(ClientCommand::Keygen { key_file }) => {
            let seed = Seed::generate(&mut rand_core::OsRng);
            keyfile::create(&key_file, &seed)?;
            let id = Identity::from_seed(&seed);
            println!("public key: {}", id.public_key());
            println!(
                "key file:   {} (keep it secret; it is also your paper backup)",
                key_file.display()
            );
        }
        Command::Client(ClientCommand::Address {
            key_file,
            username,
            relay,
        }) => {
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
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lnmp-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
