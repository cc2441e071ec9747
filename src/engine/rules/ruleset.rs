//! Rulesets as the engine runs them, compiled from `[[ruleset]]`: when a ruleset applies to a
//! message, and what each of its extract rules finds in which part of the message and does
//! with it.

use crate::engine::address::EnvelopeAddress;
use std::ops::Range;

use regex::Regex;

use super::detectors::Detector;
use super::documents::{DocumentLimits, Unchangeable};
use super::protect::{Protector, Tokenizer};
use super::transforms::{Replacements, mask};
use crate::engine::address::DomainPattern;
use crate::engine::reply::SmtpReply;

/// Where in a message an extract rule looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The Subject header, RFC 2047 decoded.
    Subject,
    /// Any header field of this (lower-case) name, RFC 2047 decoded.
    Header(String),
    /// Decoded text/plain and text/html parts that are not attachments.
    Body,
    /// Decoded text-like attachments (text/*, CSV, JSON, XML).
    Attachment,
    /// Attachment file names, RFC 2231 or RFC 2047 decoded.
    Filename,
}

impl Target {
    pub fn name(&self) -> String {
        match self {
            Self::Subject => "subject".into(),
            Self::Header(h) => format!("header:{h}"),
            Self::Body => "body".into(),
            Self::Attachment => "attachment".into(),
            Self::Filename => "filename".into(),
        }
    }
}

/// What an extract rule looks for.
#[derive(Clone, Debug)]
pub enum Finder {
    /// A regular expression; with `group` > 0 only that capture group is the sensitive span.
    /// `within_lines`: it matches only within one line (worked out by [`Finder::regex`]).
    Regex {
        regex: Regex,
        group: usize,
        within_lines: bool,
    },
    /// A built-in, validating detector.
    Detector(Detector),
    /// Every item of the target (for message-level actions: strip every `.exe`, say).
    Everything,
}

impl Finder {
    /// A regex finder, with whether it matches only within one line.
    pub fn regex(regex: Regex, group: usize) -> Self {
        let within_lines = super::locality::within_lines(regex.as_str());
        Self::Regex {
            regex,
            group,
            within_lines,
        }
    }

    /// Whether everything it finds lies within one line (see `locality`), so that it finds
    /// the same in a long text as in the text's lines taken a stretch at a time.
    pub fn within_lines(&self) -> bool {
        match self {
            Self::Regex { within_lines, .. } => *within_lines,
            Self::Detector(_) => Detector::within_lines(),
            Self::Everything => false,
        }
    }
}

/// How a found span is rewritten.
#[derive(Clone, Debug)]
pub enum Transform {
    Mask {
        keep_last: usize,
        mask_char: char,
    },
    Redact {
        text: String,
    },
    /// A template with `$1`, `${name}` capture references (regex rules only).
    Replace {
        template: String,
    },
    Tokenize(Tokenizer),
    Protect(Protector),
    /// The inverse of `protect`, for `postern unprotect` (not a configurable action).
    Unprotect(Protector),
}

/// What a rule does with what it found.
#[derive(Clone, Debug)]
pub enum Action {
    Transform(Transform),
    /// Replace the attachment with a short notice part.
    StripAttachment,
    /// Refuse the whole message with this reply.
    Reject(SmtpReply),
    /// Deliver the message (as the other rules leave it) through these relay targets instead
    /// of letting it go on; the door discards its own copy only once one of them accepted.
    /// The relay targets are named here and delivered to through the engine's outbound port.
    Divert(Vec<String>),
}

impl Action {
    /// The action's name in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Transform(Transform::Mask { .. }) => "mask",
            Self::Transform(Transform::Redact { .. }) => "redact",
            Self::Transform(Transform::Replace { .. }) => "replace",
            Self::Transform(Transform::Tokenize(_)) => "tokenize",
            Self::Transform(Transform::Protect(_)) => "protect",
            Self::Transform(Transform::Unprotect(_)) => "unprotect",
            Self::StripAttachment => "strip_attachment",
            Self::Reject(_) => "reject",
            Self::Divert(_) => "divert",
        }
    }
}

/// One extract rule and its transform or action.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub targets: Vec<Target>,
    pub finder: Finder,
    /// For `attachment` and `filename`: the attachment's content type must match one of these
    /// (`text/csv`, `text/*`); empty means any.
    pub content_types: Vec<String>,
    pub action: Action,
    /// For a transform: what is done instead when what it found is in an attachment that
    /// cannot be rewritten (a PDF).
    pub unchangeable: Unchangeable,
}

/// When a ruleset applies. Empty lists and `None` mean "any".
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    pub connection_profiles: Vec<String>,
    pub authenticated: Option<bool>,
    pub sender_domains: Vec<DomainPattern>,
    /// At least one recipient's domain must match.
    pub recipient_domains: Vec<DomainPattern>,
    /// The copy must concern one of these organizations (its recipients', or on outbound
    /// mail its sender's); empty: any copy.
    pub organizations: Vec<String>,
}

/// What the engine knows about a message's transaction when choosing rulesets.
#[derive(Clone, Copy, Debug)]
pub struct MessageContext<'a> {
    pub profile: Option<&'a str>,
    pub authenticated: bool,
    pub sender: &'a EnvelopeAddress,
    pub recipients: &'a [EnvelopeAddress],
    /// The organizations the copy concerns.
    pub organizations: &'a [&'a str],
}

impl Conditions {
    pub fn hold(&self, ctx: &MessageContext<'_>) -> bool {
        let any = |patterns: &[DomainPattern], domain: &str| {
            patterns.is_empty() || patterns.iter().any(|p| p.matches(domain))
        };
        (self.connection_profiles.is_empty()
            || ctx
                .profile
                .is_some_and(|p| self.connection_profiles.iter().any(|n| n == p)))
            && self.authenticated.is_none_or(|a| a == ctx.authenticated)
            && any(&self.sender_domains, ctx.sender.domain())
            && (self.recipient_domains.is_empty()
                || ctx
                    .recipients
                    .iter()
                    .any(|r| any(&self.recipient_domains, r.domain())))
            && (self.organizations.is_empty()
                || ctx
                    .organizations
                    .iter()
                    .any(|o| self.organizations.iter().any(|n| n == o)))
    }
}

#[derive(Clone, Debug)]
pub struct Ruleset {
    pub name: String,
    pub conditions: Conditions,
    pub rules: Vec<Rule>,
}

/// The content stage of the policy.
#[derive(Clone, Debug, Default)]
pub struct ContentPolicy {
    pub rulesets: Vec<Ruleset>,
    /// Header recording which rulesets changed a message; `None` to leave no trace.
    pub ruleset_header: Option<String>,
    /// How documents and archives are read.
    pub documents: DocumentLimits,
}

impl Rule {
    /// Sensitive spans in `text`, in order and not overlapping, leaving out any that touch
    /// `skip` (HTML markup: ranges in order, not overlapping).
    pub fn spans(&self, text: &str, skip: &[Range<usize>]) -> Vec<Range<usize>> {
        self.found(text, skip)
            .into_iter()
            .map(|(span, _)| span)
            .collect()
    }

    /// [`Rule::spans`], each with where the match holding it starts (a capture group's span
    /// starts later than its match).
    fn found(&self, text: &str, skip: &[Range<usize>]) -> Vec<(Range<usize>, usize)> {
        let mut found: Vec<(Range<usize>, usize)> = match &self.finder {
            // The whole match needs no capture slots, which makes the search much cheaper.
            Finder::Regex {
                regex, group: 0, ..
            } => regex
                .find_iter(text)
                .filter(|m| !m.is_empty())
                .map(|m| (m.range(), m.start()))
                .collect(),
            Finder::Regex { regex, group, .. } => regex
                .captures_iter(text)
                .filter_map(|c| Some((c.get(*group)?, c.get(0)?.start())))
                .filter(|(m, _)| !m.is_empty())
                .map(|(m, start)| (m.range(), start))
                .collect(),
            Finder::Detector(d) => d
                .find(text)
                .into_iter()
                .map(|s| (s.clone(), s.start))
                .collect(),
            Finder::Everything => vec![(0..text.len(), 0)],
        };
        if !skip.is_empty() {
            // `skip` is in order and without overlaps (as html_markup gives it), so the first
            // range that ends after a span's start is the only one that can touch the span: one
            // binary search per span instead of a walk over all the markup (which made an HTML
            // part's cost grow with its tags times its matches).
            found.retain(|(s, _)| {
                let next = skip.partition_point(|k| k.end <= s.start);
                skip.get(next).is_none_or(|k| k.start >= s.end)
            });
        }
        found
    }

    /// True when the rule finds something in `text` (for actions): a whole-match regex stops
    /// at its first match.
    pub fn finds(&self, text: &str) -> bool {
        match &self.finder {
            Finder::Regex {
                regex, group: 0, ..
            } => regex.find_iter(text).any(|m| !m.is_empty()),
            _ => !self.found(text, &[]).is_empty(),
        }
    }

    /// The rule's transform worked out for `text` — each span found and its new text — without
    /// writing the text yet; `None` when nothing was found.
    pub fn replacements(&self, text: &str, skip: &[Range<usize>]) -> Option<Replacements> {
        let Action::Transform(transform) = &self.action else {
            return None;
        };
        let found = self.found(text, skip);
        if found.is_empty() {
            return None;
        }
        let mut match_starts = found.iter().map(|(_, start)| *start);
        let spans = found.iter().map(|(span, _)| span.clone()).collect();
        Some(Replacements::new(spans, |span, out| {
            let match_start = match_starts.next().unwrap_or(span.start);
            let value = &text[span.clone()];
            match transform {
                Transform::Mask {
                    keep_last,
                    mask_char,
                } => out.push_str(&mask(value, *keep_last, *mask_char)),
                Transform::Redact { text } => out.push_str(text),
                Transform::Replace { template } => match &self.finder {
                    // The captures of the match the span is in.
                    Finder::Regex { regex, .. } => match regex.captures_at(text, match_start) {
                        Some(caps) => caps.expand(template, out),
                        None => out.push_str(template),
                    },
                    _ => out.push_str(template),
                },
                Transform::Tokenize(t) => out.push_str(&t.token(value)),
                // Too short to encrypt: hide it entirely rather than let it through.
                Transform::Protect(p) => match p.protect(value) {
                    Some(protected) => out.push_str(&protected),
                    None => out.push_str(&mask(value, 0, '*')),
                },
                Transform::Unprotect(p) => out.push_str(&p.unprotect_text(value).0),
            }
        }))
    }

    /// Whether this rule looks at an attachment of this content type.
    pub fn wants_type(&self, content_type: &str) -> bool {
        self.content_types.is_empty()
            || self
                .content_types
                .iter()
                .any(|t| match t.strip_suffix("/*") {
                    Some(major) => content_type
                        .split_once('/')
                        .is_some_and(|(m, _)| m.eq_ignore_ascii_case(major)),
                    None => t.eq_ignore_ascii_case(content_type),
                })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Rule {
        /// The rule's transform applied to `text`: the new text and how many spans changed.
        fn transform(&self, text: &str, skip: &[Range<usize>]) -> Option<(String, usize)> {
            let found = self.replacements(text, skip)?;
            let mut out = String::new();
            found.write_into(text, &mut out);
            Some((out, found.len()))
        }
    }

    fn rule(finder: Finder, transform: Transform) -> Rule {
        Rule {
            name: "r".into(),
            targets: vec![Target::Body],
            finder,
            content_types: vec![],
            action: Action::Transform(transform),
            unchangeable: Unchangeable::default(),
        }
    }

    #[test]
    fn capture_group_marks_the_span_and_replace_expands() {
        let r = rule(
            Finder::regex(Regex::new(r"account (\d{6,})").unwrap(), 1),
            Transform::Redact { text: "#".into() },
        );
        assert_eq!(
            r.transform("account 1234567 ok", &[]),
            Some(("account # ok".into(), 1))
        );
        let r = rule(
            Finder::regex(Regex::new(r"(?<k>key)=(\w+)").unwrap(), 0),
            Transform::Replace {
                template: "${k}=hidden".into(),
            },
        );
        assert_eq!(
            r.transform("a key=abc b", &[]),
            Some(("a key=hidden b".into(), 1))
        );
    }

    /// A template expands the captures of the match its span is in, also when the span is a
    /// capture group that starts after its match does.
    #[test]
    fn replace_expands_the_captures_of_its_own_match() {
        let r = rule(
            Finder::regex(Regex::new(r"(?<k>account) (\d+)").unwrap(), 2),
            Transform::Replace {
                template: "[${k} $2]".into(),
            },
        );
        assert_eq!(
            r.transform("account 12 and account 34.", &[]),
            Some(("account [account 12] and account [account 34].".into(), 2))
        );
    }

    /// A rule finds something only where it has a non-empty match (or, with a group, where
    /// that group is non-empty).
    #[test]
    fn finds_only_non_empty_matches() {
        let redact = || Transform::Redact { text: "#".into() };
        let r = rule(Finder::regex(Regex::new("x*").unwrap(), 0), redact());
        assert!(!r.finds("abc"));
        assert!(r.finds("axb"));
        let r = rule(Finder::regex(Regex::new("a(x*)").unwrap(), 1), redact());
        assert!(!r.finds("abc"));
        assert!(r.finds("axb"));
        let r = rule(Finder::Detector(Detector::UsSsn), redact());
        assert!(!r.finds("000-12-3456"), "not a valid SSN");
        assert!(r.finds("ssn 123-45-6789"));
    }

    #[test]
    fn markup_spans_are_skipped() {
        let r = rule(
            Finder::Detector(Detector::UsSsn),
            Transform::Redact { text: "X".into() },
        );
        let html = r#"<a href="123-45-6789">123-45-6789</a>"#;
        let skip = vec![0..22, 33..37];
        assert_eq!(
            r.transform(html, &skip),
            Some((r#"<a href="123-45-6789">X</a>"#.into(), 1))
        );
    }

    #[test]
    fn a_span_is_skipped_exactly_when_some_markup_range_touches_it() {
        let r = rule(
            Finder::Detector(Detector::UsSsn),
            Transform::Redact { text: "X".into() },
        );
        let text = "123-45-6789 x 123-45-6789 y 123-45-6789 z 123-45-6789";
        let all = r.spans(text, &[]);
        assert_eq!(all.len(), 4);
        let skips: [&[Range<usize>]; 5] = [
            &[0..1, 12..13],
            &[11..14, 25..26],
            &[12..13, 26..28, 40..41],
            &[5..6, 20..30, 52..53],
            &[0..2, 3..4, 13..14, 27..28, 41..42, 53..60],
        ];
        for skip in skips {
            let naive: Vec<_> = all
                .iter()
                .filter(|s| !skip.iter().any(|k| k.start < s.end && s.start < k.end))
                .cloned()
                .collect();
            assert_eq!(r.spans(text, skip), naive, "skip {skip:?}");
        }
    }

    #[test]
    fn conditions_and_domain_patterns() {
        let c = Conditions {
            sender_domains: vec![DomainPattern::new("*.corp.example")],
            recipient_domains: vec![DomainPattern::new("partner.example")],
            authenticated: Some(false),
            ..Default::default()
        };
        let recipients =
            ["<a@other.example>", "b@partner.example"].map(|r| EnvelopeAddress::parse(r).unwrap());
        let ctx = MessageContext {
            profile: None,
            authenticated: false,
            sender: &"<x@mail.corp.example>".parse().unwrap(),
            recipients: &recipients,
            organizations: &["acme"],
        };
        assert!(c.hold(&ctx));
        assert!(!c.hold(&MessageContext {
            sender: &"x@corp.example".parse().unwrap(),
            ..ctx
        }));
        assert!(!c.hold(&MessageContext {
            authenticated: true,
            ..ctx
        }));
        assert!(!c.hold(&MessageContext {
            recipients: &recipients[..1],
            ..ctx
        }));
        let for_globex = Conditions {
            organizations: vec!["globex".into()],
            ..c.clone()
        };
        assert!(!for_globex.hold(&ctx), "a copy for acme only");
        assert!(for_globex.hold(&MessageContext {
            organizations: &["acme", "globex"],
            ..ctx
        }));
        assert!(!for_globex.hold(&MessageContext {
            organizations: &[],
            ..ctx
        }));
    }
}
