//! The LNMP v1 protocol core: identities, addresses, messages, sealing, blobs, relay
//! frames and the address lookup document.
//!
//! This module does no I/O and depends on nothing else in the crate, so that the daemon,
//! the native client, the benchmarks and the fuzzers all share exactly one definition of
//! the wire. docs/PROTOCOL.md is its specification; fixtures/vectors/ pins its bytes.
//!
//! Everything that parses outside input returns [`Error`] and never panics.

pub mod address;
pub mod blob;
pub mod content;
mod encoding;
pub mod error;
pub mod frame;
pub mod identity;
pub mod limits;
pub mod lookup;
pub mod message;
pub mod seal;

pub use address::Address;
pub use blob::{BlobId, FileAttachment, SealedBlob};
pub use content::MessageContent;
pub use error::Error;
pub use frame::{AuthProof, ClientFrame, Filter, RelayFrame};
pub use identity::{Identity, PublicKey, Seed};
pub use limits::Limits;
pub use lookup::LookupDocument;
pub use message::{Kind, Message, MessageId, PaymentProof, Priority};
pub use seal::{Algorithm, Draft, SealSecrets};

/// The protocol version this implementation speaks, carried as `"v"` in messages.
pub const VERSION: u8 = 1;

/// The conventional relay port ("LNMP" on a phone keypad).
pub const DEFAULT_RELAY_PORT: u16 = 7138;
