//! `[content]` and `[[ruleset]]`: the content stage's configuration, compiled into
//! [`ContentPolicy`] (regexes built, keys read) once per load.

use std::num::{NonZeroU64, NonZeroUsize};
use std::ops::Range;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::Invalid;
use crate::engine::SmtpReply;
use crate::engine::address::DomainPattern;
use crate::engine::rules::detectors::Detector;
use crate::engine::rules::documents::{DocumentLimits, Unchangeable, UnreadAction};
use crate::engine::rules::protect::{Protector, Secret, Tokenizer};
use crate::engine::rules::ruleset::{
    Action, Conditions, ContentPolicy, Finder, Rule, Ruleset, Target, Transform,
};
use crate::relay::Delivery;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ContentSection {
    /// Header naming the rulesets that changed a message; "" for none. Unset:
    /// [`RULESET_HEADER`].
    ruleset_header: Option<Spanned<String>>,
    // Documents and archives (engine/rules/documents): defaults in DocumentLimits::default.
    max_nesting_depth: NonZeroUsize,
    max_archive_entries: NonZeroUsize,
    max_expanded_size: NonZeroU64,
    max_compression_ratio: NonZeroU64,
    archive_limit_action: UnreadAction,
    encrypted_action: UnreadAction,
    damaged_action: UnreadAction,
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("nonzero default")
}

impl Default for ContentSection {
    fn default() -> Self {
        let limits = DocumentLimits::default();
        Self {
            ruleset_header: None,
            max_nesting_depth: nonzero(limits.max_nesting_depth),
            max_archive_entries: nonzero(limits.max_archive_entries),
            max_expanded_size: NonZeroU64::new(limits.max_expanded_size).expect("nonzero default"),
            max_compression_ratio: NonZeroU64::new(limits.max_compression_ratio)
                .expect("nonzero default"),
            archive_limit_action: limits.limit_action,
            encrypted_action: limits.encrypted_action,
            damaged_action: limits.damaged_action,
        }
    }
}

/// The ruleset header's name when `ruleset_header` is not set.
const RULESET_HEADER: &str = "X-Postern-Rulesets";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RulesetSection {
    name: Spanned<String>,
    #[serde(default = "super::yes")]
    enabled: bool,
    #[serde(default)]
    connection_profiles: Vec<String>,
    #[serde(default)]
    authenticated: Option<bool>,
    #[serde(default)]
    sender_domains: Vec<String>,
    #[serde(default)]
    recipient_domains: Vec<String>,
    /// The organizations whose recipients' copies (and, outbound, whose senders' mail) the
    /// ruleset applies to; empty: every message.
    #[serde(default)]
    organizations: Vec<String>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSection {
    name: Spanned<String>,
    targets: Spanned<Vec<String>>,
    regex: Option<Spanned<String>>,
    #[serde(default)]
    group: usize,
    detector: Option<Detector>,
    #[serde(default)]
    content_types: Vec<String>,
    action: Spanned<String>,
    // The keys of one action or another (see `action_keys`): each keeps its span, so that
    // one set on a rule of another action is refused at its line.
    // mask
    keep_last: Option<Spanned<usize>>,
    mask_char: Option<Spanned<char>>,
    // redact
    text: Option<Spanned<String>>,
    // replace
    template: Option<Spanned<String>>,
    // tokenize, protect
    key_file: Option<Spanned<PathBuf>>,
    key_env: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    // tokenize
    length: Option<Spanned<usize>>,
    // protect
    tweak: Option<Spanned<String>>,
    suffix: Option<Spanned<String>>,
    // reject
    reply: Option<Spanned<String>>,
    // divert, and a transform's unchangeable = "divert"
    relay_targets: Option<Spanned<Vec<String>>>,
    // a transform: what instead, in an attachment that cannot be rewritten (a PDF)
    unchangeable: Option<Spanned<String>>,
}

impl RuleSection {
    /// The action keys set on this rule, each with where its value is.
    fn action_keys_set(&self) -> impl Iterator<Item = (&'static str, Range<usize>)> {
        [
            ("keep_last", self.keep_last.as_ref().map(Spanned::span)),
            ("mask_char", self.mask_char.as_ref().map(Spanned::span)),
            ("text", self.text.as_ref().map(Spanned::span)),
            ("template", self.template.as_ref().map(Spanned::span)),
            ("key_file", self.key_file.as_ref().map(Spanned::span)),
            ("key_env", self.key_env.as_ref().map(Spanned::span)),
            ("prefix", self.prefix.as_ref().map(Spanned::span)),
            ("length", self.length.as_ref().map(Spanned::span)),
            ("tweak", self.tweak.as_ref().map(Spanned::span)),
            ("suffix", self.suffix.as_ref().map(Spanned::span)),
            ("reply", self.reply.as_ref().map(Spanned::span)),
            (
                "relay_targets",
                self.relay_targets.as_ref().map(Spanned::span),
            ),
            (
                "unchangeable",
                self.unchangeable.as_ref().map(Spanned::span),
            ),
        ]
        .into_iter()
        .filter_map(|(name, span)| Some((name, span?)))
    }
}

/// The keys of its own that `action` reads; `None` when `action` names no action.
fn action_keys(action: &str) -> Option<&'static [&'static str]> {
    Some(match action {
        "mask" => &["keep_last", "mask_char", "unchangeable", "relay_targets"],
        "redact" => &["text", "unchangeable", "relay_targets"],
        "replace" => &["template", "unchangeable", "relay_targets"],
        "tokenize" => &[
            "key_file",
            "key_env",
            "prefix",
            "length",
            "unchangeable",
            "relay_targets",
        ],
        "protect" => &[
            "key_file",
            "key_env",
            "prefix",
            "tweak",
            "suffix",
            "unchangeable",
            "relay_targets",
        ],
        "strip_attachment" => &[],
        "reject" => &["reply"],
        "divert" => &["relay_targets"],
        _ => return None,
    })
}

pub(super) fn compile(
    content: ContentSection,
    rulesets: Vec<RulesetSection>,
    profile_names: &[String],
    organization_names: &[String],
    delivery: &Delivery,
    config_dir: Option<&Path>,
) -> Result<ContentPolicy, Invalid> {
    let header = match content.ruleset_header {
        Some(h) if !h.get_ref().is_empty() && !super::valid_header_name(h.get_ref()) => {
            return Err((
                h.span(),
                "content.ruleset_header".into(),
                format!(
                    "{:?} is not a header field name (printable ASCII, no spaces or colons)",
                    h.get_ref()
                ),
            ));
        }
        Some(h) => h.into_inner(),
        None => RULESET_HEADER.to_owned(),
    };
    let mut compiled = Vec::new();
    for (i, rs) in rulesets.into_iter().enumerate() {
        let key = format!("ruleset[{i}]");
        if compiled
            .iter()
            .any(|c: &Ruleset| c.name == *rs.name.get_ref())
        {
            return Err((
                rs.name.span(),
                format!("{key}.name"),
                format!(
                    "ruleset {:?} is defined twice; names must be unique",
                    rs.name.get_ref()
                ),
            ));
        }
        if let Some(p) = rs
            .connection_profiles
            .iter()
            .find(|p| !profile_names.contains(p))
        {
            return Err((
                rs.name.span(),
                format!("{key}.connection_profiles"),
                format!("no [[connection_profile]] is named {p:?}"),
            ));
        }
        if let Some(m) = super::organizations::unknown(&rs.organizations, organization_names) {
            return Err((rs.name.span(), format!("{key}.organizations"), m));
        }
        let mut rules = Vec::new();
        for (j, rule) in rs.rules.into_iter().enumerate() {
            let key = format!("{key}.rule[{j}]");
            rules.push(compile_rule(rule, &key, delivery, config_dir)?);
        }
        if !rs.enabled {
            continue;
        }
        compiled.push(Ruleset {
            name: rs.name.into_inner(),
            conditions: Conditions {
                connection_profiles: rs.connection_profiles,
                authenticated: rs.authenticated,
                sender_domains: patterns(rs.sender_domains),
                recipient_domains: patterns(rs.recipient_domains),
                organizations: rs.organizations,
            },
            rules,
        });
    }
    Ok(ContentPolicy {
        rulesets: compiled,
        ruleset_header: (!header.is_empty()).then_some(header),
        documents: DocumentLimits {
            max_nesting_depth: content.max_nesting_depth.get(),
            max_archive_entries: content.max_archive_entries.get(),
            max_expanded_size: content.max_expanded_size.get(),
            max_compression_ratio: content.max_compression_ratio.get(),
            limit_action: content.archive_limit_action,
            encrypted_action: content.encrypted_action,
            damaged_action: content.damaged_action,
        },
    })
}

fn patterns(list: Vec<String>) -> Vec<DomainPattern> {
    list.into_iter().map(|d| DomainPattern::new(&d)).collect()
}

fn target(name: &str) -> Option<Target> {
    Some(match name {
        "subject" => Target::Subject,
        "body" => Target::Body,
        "attachment" => Target::Attachment,
        "filename" => Target::Filename,
        _ => match name.strip_prefix("header:")?.to_ascii_lowercase() {
            // One target for one field: rules on the subject run once, in order.
            h if h == "subject" => Target::Subject,
            h => Target::Header(h),
        },
    })
}

fn compile_rule(
    r: RuleSection,
    key: &str,
    delivery: &Delivery,
    config_dir: Option<&Path>,
) -> Result<Rule, Invalid> {
    // An error names the line of its key where the key is written (a secret given by
    // key_env counts for key_file), else the action's line.
    let set: Vec<(&str, Range<usize>)> = r
        .action_keys_set()
        .chain([("targets", r.targets.span())])
        .collect();
    let err = |field: &str, message: String| {
        let at = set
            .iter()
            .find(|(name, _)| *name == field)
            .or_else(|| {
                (field == "key_file")
                    .then(|| set.iter().find(|(name, _)| *name == "key_env"))
                    .flatten()
            })
            .map_or_else(|| r.action.span(), |(_, span)| span.clone());
        (at, format!("{key}.{field}"), message)
    };

    let action_name = r.action.get_ref().as_str();
    // A key the action does not read (left from another action, or meant for one) would
    // otherwise be ignored without a word. The first such key in the file is named.
    if let Some(own) = action_keys(action_name)
        && let Some((name, span)) = r
            .action_keys_set()
            .filter(|(name, _)| !own.contains(name))
            .min_by_key(|(_, span)| span.start)
    {
        let takes = match own {
            [] => "no keys of its own".to_owned(),
            [one] => (*one).to_owned(),
            [some @ .., last] => format!("{} and {last}", some.join(", ")),
        };
        return Err((
            span,
            format!("{key}.{name}"),
            format!(
                "{name} does not belong to action {action_name:?}, which takes {takes}; remove it \
                 or change the action"
            ),
        ));
    }

    let mut targets = Vec::new();
    for t in r.targets.get_ref() {
        match target(t) {
            Some(t) => targets.push(t),
            None => {
                return Err((
                    r.targets.span(),
                    format!("{key}.targets"),
                    format!(
                        "{t:?} is not a target; use subject, body, attachment, filename or header:NAME"
                    ),
                ));
            }
        }
    }
    if targets.is_empty() {
        return Err((
            r.targets.span(),
            format!("{key}.targets"),
            "name at least one target".into(),
        ));
    }

    let finder = match (r.regex, r.detector) {
        (Some(_), Some(_)) => {
            return Err(err(
                "regex",
                "give either regex or detector, not both".into(),
            ));
        }
        (Some(re), None) => {
            let span = re.span();
            let regex = Regex::new(re.get_ref())
                .map_err(|e| (span.clone(), format!("{key}.regex"), e.to_string()))?;
            if r.group >= regex.captures_len() {
                return Err((
                    span,
                    format!("{key}.group"),
                    format!(
                        "the regex has {} capture groups; group {} does not exist",
                        regex.captures_len() - 1,
                        r.group
                    ),
                ));
            }
            Finder::regex(regex, r.group)
        }
        (None, Some(d)) => Finder::Detector(d),
        (None, None) => Finder::Everything,
    };

    let secret = || -> Result<Secret, Invalid> {
        let file = r.key_file.as_ref().map(|f| match config_dir {
            Some(dir) if f.get_ref().is_relative() => dir.join(f.get_ref()),
            _ => f.get_ref().clone(),
        });
        let env = r.key_env.as_ref().map(|e| e.get_ref().as_str());
        crate::secret_file::load_secret(file.as_deref(), env, "key")
            .map_err(|m| err("key_file", m.to_string()))
    };
    let action = match action_name {
        "mask" => Action::Transform(Transform::Mask {
            keep_last: r.keep_last.as_ref().map_or(4, |k| *k.get_ref()),
            mask_char: r.mask_char.as_ref().map_or('*', |c| *c.get_ref()),
        }),
        "redact" => Action::Transform(Transform::Redact {
            text: r
                .text
                .as_ref()
                .map_or_else(|| "[redacted]".into(), |t| t.get_ref().clone()),
        }),
        "replace" => {
            let Some(template) = r.template.as_ref().map(|t| t.get_ref().clone()) else {
                return Err(err("template", "action replace needs a template".into()));
            };
            if !matches!(finder, Finder::Regex { .. }) {
                return Err(err(
                    "template",
                    "action replace refers to capture groups: use it with a regex".into(),
                ));
            }
            Action::Transform(Transform::Replace { template })
        }
        "tokenize" => Action::Transform(Transform::Tokenize(Tokenizer::new(
            secret()?,
            r.prefix.as_ref().map_or("tok_", |p| p.get_ref().as_str()),
            r.length.as_ref().map_or(16, |l| *l.get_ref()),
        ))),
        "protect" => {
            let key = secret()?
                .aes256_key()
                .map_err(|m| err("key_file", m.to_string()))?;
            let prefix = r.prefix.as_ref().map_or("[p:", |p| p.get_ref().as_str());
            let suffix = r.suffix.as_ref().map_or("]", |s| s.get_ref().as_str());
            if prefix.is_empty() || suffix.is_empty() {
                return Err(err(
                    "prefix",
                    "protect needs a non-empty prefix and suffix: `postern unprotect` finds \
                     protected values by them"
                        .into(),
                ));
            }
            Action::Transform(Transform::Protect(Protector::new(
                &key,
                r.tweak.as_ref().map_or("", |t| t.get_ref().as_str()),
                prefix,
                suffix,
            )))
        }
        "strip_attachment" => {
            if targets
                .iter()
                .any(|t| !matches!(t, Target::Attachment | Target::Filename))
            {
                return Err(err(
                    "targets",
                    "strip_attachment acts on attachments: use the targets attachment or filename"
                        .into(),
                ));
            }
            Action::StripAttachment
        }
        "reject" => {
            let text = r
                .reply
                .as_ref()
                .map_or("550 5.7.1 Message content refused by policy", |s| {
                    s.get_ref().as_str()
                });
            let reply: SmtpReply = text.parse().map_err(|e| err("reply", format!("{e}")))?;
            if reply.is_transient() || reply.code() < 500 {
                return Err(err(
                    "reply",
                    format!("{text:?}: a reject reply is a 5xx reply"),
                ));
            }
            Action::Reject(reply)
        }
        "divert" => {
            let Some(names) = &r.relay_targets else {
                return Err(err(
                    "relay_targets",
                    "action divert needs relay_targets: the [[relay_target]] names to deliver \
                     through"
                        .into(),
                ));
            };
            delivery
                .through(names.get_ref())
                .map_err(|m| (names.span(), format!("{key}.relay_targets"), m.to_string()))?;
            Action::Divert(names.get_ref().clone())
        }
        other => {
            return Err(err(
                "action",
                format!(
                    "{other:?} is not an action; use mask, redact, replace, tokenize, protect, \
                     strip_attachment, reject or divert"
                ),
            ));
        }
    };
    if matches!(action, Action::Transform(_)) && matches!(finder, Finder::Everything) {
        return Err(err(
            "regex",
            format!("action {action_name} transforms what a regex or detector finds: give one"),
        ));
    }
    let unchangeable = match (
        &action,
        r.unchangeable.as_ref().map(|u| u.get_ref().as_str()),
    ) {
        (Action::Transform(_), Some("divert")) => {
            let Some(names) = &r.relay_targets else {
                return Err(err(
                    "unchangeable",
                    "unchangeable = \"divert\" needs relay_targets: the [[relay_target]] names \
                     to deliver through"
                        .into(),
                ));
            };
            delivery
                .through(names.get_ref())
                .map_err(|m| (names.span(), format!("{key}.relay_targets"), m.to_string()))?;
            Unchangeable::Divert(names.get_ref().clone())
        }
        (Action::Transform(_), _) if r.relay_targets.is_some() => {
            return Err(err(
                "relay_targets",
                "relay_targets on a transforming rule is read only with unchangeable = \"divert\""
                    .into(),
            ));
        }
        (_, None | Some("reject")) => Unchangeable::Reject,
        (_, Some("strip_attachment")) => Unchangeable::StripAttachment,
        (_, Some(other)) => {
            return Err(err(
                "unchangeable",
                format!(
                    "{other:?} is not an unchangeable action; use reject, strip_attachment or divert"
                ),
            ));
        }
    };
    Ok(Rule {
        name: r.name.into_inner(),
        targets,
        finder,
        unchangeable,
        content_types: r
            .content_types
            .into_iter()
            .map(|t| t.to_ascii_lowercase())
            .collect(),
        action,
    })
}
