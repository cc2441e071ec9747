//! Connection-stage checks. Each check is pure policy: it is given what the session knows and
//! answers with a verdict or nothing; the session decides when to run it and how to log it.

pub mod auth_results;
pub mod client_name;
pub mod dnsbl;
pub mod dos;
pub mod encryption;
pub mod exploit_detection;
pub mod ip_rejection;
pub mod outbound_tls;
pub mod profiles;
pub mod rbl;
pub mod relay;
pub mod reputation;
pub mod spf;
pub mod spoof;

pub use encryption::EncryptionRules;
pub use exploit_detection::ExploitDetection;
pub use ip_rejection::IpRejection;
pub use rbl::Rbl;
pub use relay::RelayRestriction;
