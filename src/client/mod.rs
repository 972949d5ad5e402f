//! The native LNMP client: what a person without email uses to be an LNMP user from the
//! command line. Today it owns the key file; sending and reading through relays build on it.

pub mod keyfile;
