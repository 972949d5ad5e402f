//! Size and count limits applied to everything parsed from outside.
//!
//! The defaults are the ceilings of docs/PROTOCOL.md: a conforming sender never exceeds
//! them. A relay or daemon may lower any of them through its config.

use super::error::{Error, Result};

/// Limits checked while parsing messages, contents and frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one JSON message or frame as received.
    pub max_message_bytes: usize,
    /// Bytes of the decrypted, unpadded content JSON.
    pub max_content_bytes: usize,
    /// Entries in a message's `to`.
    pub max_recipients: usize,
    /// Entries in a message's `relays`.
    pub max_relays: usize,
    /// Bytes of one relay URL.
    pub max_relay_url: usize,
    /// Filters in one SUB or QUERY.
    pub max_filters: usize,
    /// Values in one list of a filter (`ids`, `from`, `to`, `kinds`).
    pub max_filter_values: usize,
    /// Bytes of a subscription id.
    pub max_sub_id: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 16 * 1024 * 1024,
            max_content_bytes: 12 * 1024 * 1024,
            max_recipients: 256,
            max_relays: 16,
            max_relay_url: 256,
            max_filters: 16,
            max_filter_values: 1024,
            max_sub_id: 64,
        }
    }
}

/// Fails with [`Error::TooLarge`] when `actual` exceeds `limit`.
pub(crate) fn within(field: &'static str, actual: usize, limit: usize) -> Result<()> {
    if actual > limit {
        Err(Error::TooLarge {
            field,
            actual,
            limit,
        })
    } else {
        Ok(())
    }
}
