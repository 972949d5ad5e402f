//! Helpers for tests and load scripts; not part of the daemon.

pub mod dns;
