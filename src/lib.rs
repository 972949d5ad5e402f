//! lnmp-bridge: a self-hosted mail domain on LNMP, the Lightning Native Messaging
//! Protocol. One daemon that speaks SMTP and IMAP to the email world and LNMP to relays.
//!
//! See docs/ARCHITECTURE.md for how the modules fit together.

pub mod client;
pub mod lnmp;
