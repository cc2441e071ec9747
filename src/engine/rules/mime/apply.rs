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

/// Whether `rule` looks at `target` (of content type `ctype`, for attachments and their names).
fn looks_at(rule: &Rule, target: &Target, ctype: &str) -> bool {
    targets_match(rule, target)
        && (!matches!(target, Target::Attachment | Target::Filename) || rule.wants_type(ctype))
}

/// How much of a long text the rules run over at once when all of them match within one line
/// ([`Walker::apply`]): a stretch and the two buffers the transforms write it into stay in the
/// core's cache while every rule reads and rewrites it, where each changing rule used to read
/// and write the whole text, and the new text is written once.
const STRETCH: usize = 64 * 1024;

/// Some of a walk's rules (indexes into its rules, in order), run over one target's text.
struct Pass<'a> {
    rules: Range<usize>,
    target: &'a Target,
    ctype: &'a str,
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
        self.rules.iter().any(|(_, r)| looks_at(r, target, ctype))
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
        self.apply_in_stretches(target, ctype, text, skip, STRETCH)
    }

    /// [`Walker::apply`]: a text no longer than `stretch` goes to [`Walker::run_rules`] whole;
    /// over a longer one, each run of consecutive rules
    /// that all match within one line goes over the text cut just after a line feed about
    /// every `stretch` bytes, all of the run's rules over one stretch before the next; each
    /// finds in a stretch what it finds there in the whole text (see `locality`), so the new
    /// text and what is recorded are those of every rule over the whole text. The other rules
    /// go over the whole text.
    fn apply_in_stretches(
        &mut self,
        target: &Target,
        ctype: &str,
        text: &str,
        skip: &[Range<usize>],
        stretch: usize,
    ) -> Option<String> {
        if text.len() <= stretch {
            let (new, _) = self.run_rules(target, ctype, text, skip, false, &mut |_| {});
            return new;
        }
        if self.time_is_up() {
            return None;
        }
        let mut found = vec![0; self.rules.len()];
        let mut markup = Cow::Borrowed(skip);
        let mut new: Option<String> = None;
        // For each rule that acts on this target, whether it matches within one line.
        let local: Vec<Option<bool>> = self
            .rules
            .iter()
            .map(|(_, r)| {
                (looks_at(r, target, ctype) && !matches!(r.action, Action::StripAttachment))
                    .then(|| r.finder.within_lines())
            })
            .collect();
        let mut from = 0;
        // A run begins at the next rule that acts, and takes the rules after it that match
        // within lines as it does (or do not act).
        while let Some(first) = local[from..].iter().position(Option::is_some) {
            let first = from + first;
            let end = first
                + local[first..]
                    .iter()
                    .take_while(|l| l.is_none() || **l == local[first])
                    .count();
            let pass = Pass {
                rules: first..end,
                target,
                ctype,
            };
            let current = new.as_deref().unwrap_or(text);
            let changed = if local[first] == Some(true) {
                self.run_by_stretches(&pass, current, &mut markup, &mut found, stretch)
            } else {
                self.run_over(&pass, current, &mut markup, false, &mut found, &mut |_| {})
            };
            if self.expired {
                return None;
            }
            if changed.is_some() {
                new = changed;
            }
            from = end;
        }
        self.record(target, false, &found);
        new
    }

    /// [`Walker::run_over`] for `pass`, whose rules all match within one line, over `text` a
    /// stretch at a time ([`Walker::apply_in_stretches`]); the changed stretches are written
    /// once into the new text, and `markup` moves with them.
    fn run_by_stretches(
        &mut self,
        pass: &Pass<'_>,
        text: &str,
        markup: &mut Cow<'_, [Range<usize>]>,
        found: &mut [usize],
        stretch: usize,
    ) -> Option<String> {
        // The new text, begun at the first stretch that changed.
        let mut new: Option<String> = None;
        // The markup not yet passed; the part of it in the stretch, counted from there; where
        // all of it is in the new text.
        let mut rest: &[Range<usize>] = markup;
        let mut local = Vec::new();
        let mut moved: Vec<Range<usize>> = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let end = if text.len() - start > stretch {
                memchr::memchr(b'\n', &text.as_bytes()[start + stretch..])
                    .map_or(text.len(), |at| start + stretch + at + 1)
            } else {
                text.len()
            };
            local.clear();
            local.extend(
                rest[..rest.partition_point(|r| r.start < end)]
                    .iter()
                    .map(|r| r.start.max(start) - start..r.end.min(end) - start),
            );
            rest = &rest[rest.partition_point(|r| r.end <= end)..];
            let mut local_markup = Cow::Owned(std::mem::take(&mut local));
            let piece = &text[start..end];
            let changed = self.run_over(pass, piece, &mut local_markup, false, found, &mut |_| {});
            if self.expired {
                return None;
            }
            // Where the stretch begins in the new text.
            let at = new.as_ref().map_or(start, String::len);
            // Until the text changes, the markup stays where it is: it is followed from the
            // first stretch that changed on (a pass that changes nothing follows none of it).
            if new.is_none() && changed.is_some() {
                let before = markup.partition_point(|r| r.end <= start);
                moved.reserve(markup.len());
                moved.extend_from_slice(&markup[..before]);
                if let Some(r) = markup.get(before).filter(|r| r.start < start) {
                    moved.push(r.start..start);
                }
            }
            if new.is_some() || changed.is_some() {
                for r in local_markup.iter() {
                    match moved.last_mut() {
                        // A range the cut divided is one again.
                        Some(last) if last.end == at + r.start => last.end = at + r.end,
                        _ => moved.push(at + r.start..at + r.end),
                    }
                }
            }
            local = local_markup.into_owned();
            match (changed, &mut new) {
                (Some(changed), None) => {
                    let mut begun = String::with_capacity(text.len() + text.len() / 16);
                    begun.push_str(&text[..start]);
                    begun.push_str(&changed);
                    new = Some(begun);
                }
                (Some(changed), Some(new)) => new.push_str(&changed),
                (None, Some(new)) => new.push_str(piece),
                (None, None) => {}
            }
            start = end;
        }
        if new.is_some() {
            *markup = Cow::Owned(moved);
        }
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
        if self.time_is_up() {
            return (None, None);
        }
        let mut found = vec![0; self.rules.len()];
        let pass = Pass {
            rules: 0..self.rules.len(),
            target,
            ctype,
        };
        let new = self.run_over(
            &pass,
            text,
            &mut Cow::Borrowed(skip),
            read_only,
            &mut found,
            each,
        );
        let unchangeable = self.record(target, read_only, &found);
        (new, unchangeable)
    }

    /// Runs the rules of `pass` over `text`, each over the text the transforms before it
    /// left, adding to `found` what each found: the spans a transform replaced, 1 when a
    /// `reject`, `divert` or (with `read_only`) transform rule matched. The new text when a
    /// transform changed it; `markup` moves with the text. What the rules found is recorded by
    /// [`Walker::record`].
    fn run_over(
        &mut self,
        pass: &Pass<'_>,
        text: &str,
        markup: &mut Cow<'_, [Range<usize>]>,
        read_only: bool,
        found: &mut [usize],
        each: &mut dyn FnMut(&Replacements),
    ) -> Option<String> {
        let mut current: Cow<'_, str> = Cow::Borrowed(text);
        // Each transform writes the new text into `spare`, which then becomes `current`, the
        // text it replaced being the next spare: at most two buffers serve the whole chain of
        // rules, and the text is copied, never checked again for UTF-8 (every piece is a str).
        let mut spare = String::new();
        let mut changed = false;
        // Read only, the first transform that finds something is the one that counts.
        let mut unchangeable_found = false;
        for k in pass.rules.clone() {
            let rule = self.rules[k].1;
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.expired = true;
                break;
            }
            if !looks_at(rule, pass.target, pass.ctype) {
                continue;
            }
            // A reject, divert or unchangeable already found needs no second look.
            let settled = match &rule.action {
                Action::Reject(_) => found[k] > 0 || self.rewrite.reject.is_some(),
                Action::Divert(_) => found[k] > 0 || self.rewrite.divert.is_some(),
                Action::StripAttachment => true,
                Action::Transform(_) => read_only && unchangeable_found,
            };
            if settled {
                continue;
            }
            match &rule.action {
                Action::Transform(_) if !read_only => {
                    if let Some(replaced) = rule.replacements(&current, markup) {
                        found[k] += replaced.len();
                        // The markup moves with the text before it (no span touches it).
                        if !markup.is_empty() {
                            replaced.shift(markup.to_mut());
                        }
                        each(&replaced);
                        replaced.write_into(&current, &mut spare);
                        let new = Cow::Owned(std::mem::take(&mut spare));
                        if let Cow::Owned(old) = std::mem::replace(&mut current, new) {
                            spare = old;
                        }
                        changed = true;
                    }
                }
                _ => {
                    if rule.finds(&current) {
                        found[k] = 1;
                        unchangeable_found |= matches!(rule.action, Action::Transform(_));
                    }
                }
            }
        }
        changed.then(|| current.into_owned())
    }

    /// Records, rule by rule in order, what [`Walker::run_over`] found on `target`: a hit for
    /// each transform and divert, the first reject and divert. With `read_only`, the first
    /// transform that found something takes its rule's `unchangeable` action, returned.
    fn record(
        &mut self,
        target: &Target,
        read_only: bool,
        found: &[usize],
    ) -> Option<Unchangeable> {
        let mut unchangeable = None;
        for ((ruleset, rule), &count) in self.rules.iter().zip(found) {
            if count == 0 {
                continue;
            }
            match &rule.action {
                Action::Reject(reply) => {
                    if self.rewrite.reject.is_none() {
                        self.rewrite.reject =
                            Some((reply.clone(), ruleset.name.clone(), rule.name.clone()));
                    }
                }
                Action::Divert(via) => {
                    if self.rewrite.divert.is_none() {
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
                    if unchangeable.is_some() {
                        continue;
                    }
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
                Action::Transform(_) => {
                    let hit = self.hit(&ruleset.name, rule, target, count);
                    self.rewrite.hits.push(hit);
                }
            }
        }
        unchangeable
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::documents::{DocumentLimits, Reader};
    use crate::engine::rules::mime::{Rewrite, html_markup};
    use crate::engine::rules::ruleset::{Conditions, Finder, Ruleset, Transform};
    use proptest::prelude::*;
    use regex::Regex;

    /// Patterns that match within one line, with word boundaries, line anchors, a capture
    /// group, multi-byte characters and long runs; then three that do not.
    const PATTERNS: [(&str, usize); 13] = [
        ("[0-9]{3}", 0),
        (r"\bab\b", 0),
        ("(?m)^a", 0),
        ("(?mR)c$", 0),
        ("a+b", 0),
        ("[a-z]+\u{e9}", 0),
        (r"x[^\n ]*y", 0),
        (r"(?mR)^\d|\Bb", 0),
        ("(a)(b+)", 2),
        (r"(?mR)1\r?$", 0),
        ("y[^ ]+", 0),
        (r"\Ab|c\z", 0),
        ("(?s)a.c", 0),
    ];

    /// How many of [`PATTERNS`] match within one line.
    const LOCAL: usize = 10;

    fn action(i: usize) -> Action {
        let redact = |text: &str| {
            Action::Transform(Transform::Redact {
                text: text.to_owned(),
            })
        };
        match i {
            0 => redact("[r]"),
            // Nothing: the text around joins.
            1 => redact(""),
            // A line feed of its own, which the stretches must not be cut at.
            2 => redact("\n"),
            // What another rule finds.
            3 => redact("ab"),
            4 => Action::Transform(Transform::Mask {
                keep_last: 1,
                mask_char: '#',
            }),
            5 => Action::Transform(Transform::Replace {
                template: "<$0>".to_owned(),
            }),
            6 => Action::Reject(SmtpReply::new(550, None, "no").expect("a valid reply")),
            7 => Action::Divert(vec!["quarantine".to_owned()]),
            // With a rule for the subject only (below): one that does not act on the body.
            _ => redact("[s]"),
        }
    }

    fn ruleset(chosen: &[(usize, usize)]) -> Ruleset {
        let rules = chosen
            .iter()
            .enumerate()
            .map(|(i, &(i_pattern, act))| {
                let (pattern, group) = PATTERNS[i_pattern];
                let finder = Finder::regex(Regex::new(pattern).expect("a valid regex"), group);
                assert_eq!(finder.within_lines(), i_pattern < LOCAL, "{pattern}");
                Rule {
                    name: format!("r{i}"),
                    targets: vec![if act == 8 {
                        Target::Subject
                    } else {
                        Target::Body
                    }],
                    finder,
                    content_types: Vec::new(),
                    action: action(act),
                    unchangeable: Unchangeable::default(),
                }
            })
            .collect();
        Ruleset {
            name: "rs".to_owned(),
            conditions: Conditions::default(),
            rules,
        }
    }

    /// The new text and what was recorded, with the rules run over the whole text, or by
    /// stretches of `stretch` bytes.
    fn run(
        ruleset: &Ruleset,
        text: &str,
        skip: &[Range<usize>],
        stretch: Option<usize>,
    ) -> (Option<String>, Rewrite) {
        let limits = DocumentLimits::default();
        let mut walker = Walker {
            rules: ruleset.rules.iter().map(|r| (ruleset, r)).collect(),
            rewrite: Rewrite::default(),
            deadline: None,
            expired: false,
            place: None,
            documents: Reader::new(&limits),
        };
        let new = match stretch {
            Some(stretch) => {
                walker.apply_in_stretches(&Target::Body, "text/plain", text, skip, stretch)
            }
            None => {
                walker
                    .run_rules(&Target::Body, "text/plain", text, skip, false, &mut |_| {})
                    .0
            }
        };
        (new, walker.rewrite)
    }

    fn outcome(rewrite: &Rewrite) -> (Vec<Hit>, Option<String>, Option<String>) {
        (
            rewrite.hits.clone(),
            rewrite.reject.as_ref().map(|r| r.2.clone()),
            rewrite.divert.as_ref().map(|d| d.rule.clone()),
        )
    }

    /// Rules that feed each other (the second finds what the first wrote) across lines cut
    /// into stretches of a line or two, one between them matching across lines.
    #[test]
    fn stretches_give_the_rules_text_as_the_whole_does() {
        let ruleset = ruleset(&[(0, 3), (1, 0), (10, 3), (3, 2), (4, 4)]);
        let text = "123 x\r\nab\r\nc\r\n\r\n999 aaab c\r\nyes\r\nc d\r\n";
        let (whole, rewrite) = run(&ruleset, text, &[], None);
        assert_eq!(
            whole.as_deref(),
            Some("[r] x\r\n[r]\r\n\n\r\n\r\n[r] ###b \n\r\n#b d\r\n")
        );
        for stretch in [1, 2, 5, 100] {
            let (by_stretches, by_stretches_rewrite) = run(&ruleset, text, &[], Some(stretch));
            assert_eq!(by_stretches, whole, "stretch {stretch}");
            assert_eq!(outcome(&by_stretches_rewrite), outcome(&rewrite));
        }
        assert_eq!(
            rewrite.hits.iter().map(|h| h.count).collect::<Vec<_>>(),
            [2, 3, 1, 2, 2]
        );
    }

    /// Markup that a cut divides is one range again for the rules after the stretches: a
    /// rule matching across lines still finds what begins just after a tag.
    #[test]
    fn markup_divided_by_a_cut_is_whole_again() {
        let ruleset = ruleset(&[(0, 0), (10, 0)]);
        let text = "123 <a\r\nb>yes x\r\n<i>yes</i>\r\n";
        let skip = html_markup(text);
        assert_eq!(skip, [4..10, 17..20, 23..27]);
        let (whole, _) = run(&ruleset, text, &skip, None);
        assert_eq!(
            whole.as_deref(),
            Some("[r] <a\r\nb>[r] x\r\n<i>yes</i>\r\n")
        );
        for stretch in [1, 7, 9] {
            assert_eq!(
                run(&ruleset, text, &skip, Some(stretch)).0,
                whole,
                "stretch {stretch}"
            );
        }
    }

    proptest! {
        /// Any text, any chain of rules (local or not), markup kept out of reach, any stretch:
        /// the same new text, hits, reject and divert as over the whole text.
        #[test]
        fn stretches_are_the_whole_text(
            text in "[abcxy12 \n\r\u{e9}<>]{0,300}",
            chosen in proptest::collection::vec((0..PATTERNS.len(), 0..9usize), 1..6),
            stretch in 1..40usize,
            markup in any::<bool>(),
        ) {
            let ruleset = ruleset(&chosen);
            let skip = if markup { html_markup(&text) } else { Vec::new() };
            let (whole, rewrite) = run(&ruleset, &text, &skip, None);
            let (by_stretches, by_stretches_rewrite) = run(&ruleset, &text, &skip, Some(stretch));
            prop_assert_eq!(by_stretches, whole);
            prop_assert_eq!(outcome(&by_stretches_rewrite), outcome(&rewrite));
        }
    }
}
