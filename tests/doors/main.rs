//! Both doors as clients and MTAs meet them: behind a real Postfix and Sendmail (milter), in front of a server (proxy), the same conversations through both (parity), hostile input, and settings no other area exercises.
//!
//! One test binary per area (each file a module), so that the suite links a few binaries
//! rather than one per file.

#[path = "../support/mod.rs"]
mod support;

mod hostile;
mod milter_stages;
mod parity;
mod postfix;
mod proxy;
mod proxy_profiles;
mod proxy_tls;
mod sendmail;
mod settings;
