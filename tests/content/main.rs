//! The content stage: the MIME corpus, documents and archives made by real tools, rules behind Postfix, divert, and the fuzz corpus replayed.
//!
//! One test binary per area (each file a module), so that the suite links a few binaries
//! rather than one per file.

#[path = "../support/mod.rs"]
mod support;

mod behind_postfix;
mod divert;
mod documents;
mod fuzz_corpus;
mod mime_corpus;
