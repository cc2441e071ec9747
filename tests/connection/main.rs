//! The connection stage against real peers: DNSBL, SPF (and the RFC 7208 suite), reputation, dictionary attacks, DoS limits, connection profiles, relay restriction, encryption rules.
//!
//! One test binary per area (each file a module), so that the suite links a few binaries
//! rather than one per file.

#[path = "../support/mod.rs"]
mod support;

mod dictionary_attack;
mod dos;
mod encryption;
mod profiles;
mod rbl;
mod relay;
mod reputation;
mod spf;
mod spf_suite;
