//! The content stage: rulesets whose extract rules find sensitive data in a message's subject,
//! headers, body, attachments and attachment names, and whose transforms protect it before the
//! message travels on.

pub mod detectors;
pub mod documents;
pub mod locality;
pub mod mime;
pub mod protect;
pub mod ruleset;
pub mod transforms;
pub mod unprotect;

pub use mime::{ContentError, Diversion, Hit, Rewrite, rewrite, rewrite_within};
pub use ruleset::{ContentPolicy, MessageContext, Ruleset};
