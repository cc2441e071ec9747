//! Running it: the command line, the manual pages, metrics, the web console, message tracking, systemd notifications, a fleet's shared state.
//!
//! One test binary per area (each file a module), so that the suite links a few binaries
//! rather than one per file.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod console;
mod fleet;
mod manual;
mod metrics;
mod shared_state;
mod systemd;
mod tracking;
