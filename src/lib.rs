//! lnmp-bridge: a self-hosted mail domain on LNMP, the Lightning Native Messaging
//! Protocol. One daemon that speaks SMTP and IMAP to the email world and LNMP to relays.
//!
//! See docs/ARCHITECTURE.md for how the modules fit together.

pub mod acme;
pub mod backup;
pub mod blob;
pub mod client;
pub mod config;
pub mod convert;
pub mod custody;
pub mod daemon;
pub mod delivery;
pub mod dkim;
pub mod doctor;
pub mod http;
pub mod imap;
pub mod lightning;
pub mod lnmp;
pub mod mailfiles;
pub mod metrics;
pub mod net;
pub mod outbound;
pub mod paywall;
pub mod quickstart;
pub mod ratelimit;
pub mod relay;
pub mod sasl;
pub mod smtp;
pub mod store;
#[doc(hidden)]
pub mod testing;
pub mod tls;
