//! The rules over one target's decoded text: which rules want a target, the transforms in
//! order, and the reject, divert and strip decisions, each recorded with its hit.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Instant;

use super::{Diversion, Hit, Walker};
use crate::engine::reply::SmtpReply;
use crate::engine::rules::documents::Unchangeable;
use crate::engine::rules::ruleset::{Action, Finder, Rule, Target};
use crate::engine::rules::transforms::Replacements;

/// The refusal of a message whose attachment holds what a transforming rule would change, but
/// which cannot be changed in place (a PDF).
fn unchangeable_reply() -> SmtpReply {
    SmtpReply::new(
        550,
        Some("5.7.1"),
        "Message content refused by policy: an attachment holds data that cannot be protected \
         in place",
    )
    .expect("a valid reply")
}

fn targets_match(rule: &Rule, target: &Target) -> bool {
    rule.targets.iter().any(|t| match (t, target) {
        (Target::Header(a), Target::Header(b)) => a.eq_ignore_ascii_case(b),
        (a, b) => a == b,
    })
}

impl Walker<'_> {
    /// The hit of `rule` on `target`, named with the attachment (and archive entry) the walk
    /// is in, when it is in one.
    pub(super) fn hit(&self, ruleset: &str, rule: &Rule, target: &Target, count: usize) -> Hit {
        let mut hit = Hit::of(ruleset, rule, target, count);
        if let Some(place) = &self.place {
            hit.target = format!("{}:{place}", hit.target);
        }
        hit
    }

    pub(super) fn wants(&self, target: &Target, ctype: &str) -> bool {
        self.rules.iter().any(|(_, r)| {
            targets_match(r, target)
                && (!matches!(target, Target::Attachment | Target::Filename) || r.wants_type(ctype))
        })
    }

    /// Runs the transform rules for `target` over `text`; the new text when any changed it.
    /// A matching `reject` rule is recorded.
    pub(super) fn apply(
        &mut self,
        target: &Target,
        ctype: &str,
        text: &str,
        skip: &[Range<usize>],
    ) -> Option<String> {
        let (new, _) = self.run_rules(target, ctype, text, skip, false, &mut |_| {});
        new
    }

    /// [`Walker::apply`], showing each transform's replacements to `each` (in the text as the
    /// transforms before it left it). With `read_only` nothing is changed: a transform that finds something takes
    /// its rule's `unchangeable` action instead (the first such rule counts).
    pub(super) fn run_rules(
        &mut self,
        target: &Target,
        ctype: &str,
        text: &str,
        skip: &[Range<usize>],
        read_only: bool,
        each: &mut dyn FnMut(&Replacements),
    ) -> (Option<String>, Option<Unchangeable>) {
        let mut current: Cow<'_, str> = Cow::Borrowed(text);
        // Each transform writes the new text into `spare`, which then becomes `current`, the
        // text it replaced being the next spare: at most two buffers serve the whole chain of
        // rules, and the text is copied, never checked again for UTF-8 (every piece is a str).
        let mut spare = String::new();
        let mut changed = false;
        let mut unchangeable = None;
        let mut markup: Cow<'_, [Range<usize>]> = Cow::Borrowed(skip);
        if self.time_is_up() {
            return (None, None);
        }
        for (ruleset, rule) in &self.rules {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.expired = true;
                break;
            }
            if !targets_match(rule, target)
                || matches!(target, Target::Attachment | Target::Filename)
                    && !rule.wants_type(ctype)
            {
                continue;
            }
            match &rule.action {
                Action::Reject(reply) => {
                    if self.rewrite.reject.is_none() && rule.finds(&current) {
                        self.rewrite.reject =
                            Some((reply.clone(), ruleset.name.clone(), rule.name.clone()));
                    }
                }
                Action::Divert(via) => {
                    if self.rewrite.divert.is_none() && rule.finds(&current) {
                        let hit = self.hit(&ruleset.name, rule, target, 1);
                        self.rewrite.hits.push(hit);
                        self.rewrite.divert = Some(Diversion {
                            via: via.clone(),
                            ruleset: ruleset.name.clone(),
                            rule: rule.name.clone(),
                        });
                    }
                }
                Action::StripAttachment => {}
                Action::Transform(_) if read_only => {
                    if unchangeable.is_none() && rule.finds(&current) {
                        let mut hit = self.hit(&ruleset.name, rule, target, 1);
                        hit.action = rule.unchangeable.name();
                        self.rewrite.hits.push(hit);
                        match &rule.unchangeable {
                            Unchangeable::Reject => {
                                if self.rewrite.reject.is_none() {
                                    self.rewrite.reject = Some((
                                        unchangeable_reply(),
                                        ruleset.name.clone(),
                                        rule.name.clone(),
                                    ));
                                }
                            }
                            Unchangeable::Divert(via) => {
                                if self.rewrite.divert.is_none() {
                                    self.rewrite.divert = Some(Diversion {
                                        via: via.clone(),
                                        ruleset: ruleset.name.clone(),
                                        rule: rule.name.clone(),
                                    });
                                }
                            }
                            Unchangeable::StripAttachment => {}
                        }
                        unchangeable = Some(rule.unchangeable.clone());
                    }
                }
                Action::Transform(_) => {
                    if let Some(found) = rule.replacements(&current, &markup) {
                        let hit = self.hit(&ruleset.name, rule, target, found.len());
                        self.rewrite.hits.push(hit);
                        // The markup moves with the text before it (no span touches it).
                        if let Cow::Owned(markup) = &mut markup {
                            found.shift(markup);
                        } else if !markup.is_empty() {
                            let mut moved = markup.to_vec();
                            found.shift(&mut moved);
                            markup = Cow::Owned(moved);
                        }
                        each(&found);
                        found.write_into(&current, &mut spare);
                        let new = Cow::Owned(std::mem::take(&mut spare));
                        if let Cow::Owned(old) = std::mem::replace(&mut current, new) {
                            spare = old;
                        }
                        changed = true;
                    }
                }
            }
        }
        (changed.then(|| current.into_owned()), unchangeable)
    }

    /// True when a `strip_attachment` rule for `target` matches `text`.
    pub(super) fn strips(&mut self, target: &Target, ctype: &str, text: Option<&str>) -> bool {
        for (ruleset, rule) in &self.rules {
            if matches!(rule.action, Action::StripAttachment)
                && targets_match(rule, target)
                && rule.wants_type(ctype)
                && (matches!(rule.finder, Finder::Everything)
                    || text.is_some_and(|t| rule.finds(t)))
            {
                let hit = self.hit(&ruleset.name, rule, target, 1);
                self.rewrite.hits.push(hit);
                return true;
            }
        }
        false
    }
}
