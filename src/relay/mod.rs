//! LNMP over relays: the relay server (embedded in the daemon, or standalone), the client
//! side (connections, the persistent outbox, subscriptions that survive reconnects), TLS
//! for clients, and the HTTPS address lookup.

pub mod client;
pub mod gate;
pub mod lookup;
pub mod outbox;
pub mod server;
pub mod subscriber;
pub mod tls;

pub use client::{ClientError, ClientOptions, Connection, PublishOutcome, SubEvent};
pub use server::{Relay, RelaySettings};
