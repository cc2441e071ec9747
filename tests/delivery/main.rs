//! What leaves: delivery guarantees under injected relay target faults, address transformation and DKIM signing, DKIM/ARC/DMARC verification and sealing.
//!
//! One test binary per area (each file a module), so that the suite links a few binaries
//! rather than one per file.

#[path = "../support/mod.rs"]
mod support;

mod authentication;
mod guarantees;
mod organizations;
mod outbound;
