//! `postern unprotect`: restores the values `protect` encrypted, in plain text or in a whole
//! message (subject, bodies, attachments and names, each decoded and re-encoded as the content
//! stage does).

use regex::Regex;

use super::mime::{ContentError, rewrite};
use super::protect::Protector;
use super::ruleset::{Action, Conditions, Finder, Rule, Ruleset, Target, Transform};
use crate::engine::verdict::Edits;

/// The message with every protected value restored, and how many were.
pub fn unprotect_message(
    raw: &[u8],
    protector: &Protector,
) -> Result<(Vec<u8>, usize), ContentError> {
    let marked = format!(
        "{}[^\r\n]*?{}",
        regex::escape(&protector.prefix),
        regex::escape(&protector.suffix)
    );
    let ruleset = Ruleset {
        name: "unprotect".into(),
        conditions: Conditions::default(),
        rules: vec![Rule {
            name: "unprotect".into(),
            targets: vec![
                Target::Subject,
                Target::Body,
                Target::Attachment,
                Target::Filename,
            ],
            finder: Finder::regex(
                Regex::new(&marked).expect("escaped markers make a valid regex"),
                0,
            ),
            content_types: Vec::new(),
            action: Action::Transform(Transform::Unprotect(protector.clone())),
            unchangeable: Default::default(),
        }],
    };
    let result = rewrite(raw, &[&ruleset])?;
    let count = result.hits.iter().map(|h| h.count).sum();
    let edits = Edits {
        headers: result.headers,
        body: result.body,
    };
    Ok((edits.apply_to(raw), count))
}
