//! Address transformation (`[[address_transformation]]`): ordered rules that rewrite envelope
//! addresses, and optionally the addresses in From/To/Cc, at the border: `@corp.internal` to
//! `@example.com` outbound, a legacy domain to a new one inbound. What a Postfix admin knows as
//! canonical and generic maps. The first rule that matches an address decides; the policy
//! always judges the address as the client gave it, the relay targets get the rewritten one.

use std::fmt;

use regex::Regex;
use serde::Deserialize;

use super::address::{Address, DomainPattern, EnvelopeAddress};

/// Which way a message goes, judged by who sent it: an authenticated client, a client of a
/// connection profile for internal hosts (`full`, `restricted-internal`) or an allowed relay
/// source sends outbound; every other client inbound.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
    #[default]
    Both,
}

impl Direction {
    fn covers(self, message: Direction) -> bool {
        self == Direction::Both || self == message
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Both => "both",
        }
    }
}

/// The places an address is rewritten in.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// The envelope sender (MAIL FROM).
    Sender,
    /// The envelope recipients (RCPT TO).
    Recipients,
    /// The addresses in the `From:` header field(s).
    From,
    /// The addresses in `To:`.
    To,
    /// The addresses in `Cc:`.
    Cc,
}

impl Place {
    pub fn name(self) -> &'static str {
        match self {
            Self::Sender => "sender",
            Self::Recipients => "recipients",
            Self::From => "from",
            Self::To => "to",
            Self::Cc => "cc",
        }
    }

    /// The header field this place is, if it is one.
    pub fn field(self) -> Option<&'static str> {
        match self {
            Self::From => Some("From"),
            Self::To => Some("To"),
            Self::Cc => Some("Cc"),
            Self::Sender | Self::Recipients => None,
        }
    }
}

/// What a rule matches.
#[derive(Clone, Debug)]
pub enum Match {
    /// One address, any case.
    Exact(String),
    /// Every address in a domain (`@example.org`), or in its sub-domains (`@*.example.org`).
    Domain(DomainPattern),
    /// A regular expression over the whole address; its captures are `$1`…`$9`.
    Regex(Regex),
}

impl Match {
    /// Reads `match`: an address, `@domain` or `@*.domain` (`*.domain` alone too).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let domain = t
            .strip_prefix('@')
            .or_else(|| t.starts_with("*.").then_some(t));
        if let Some(domain) = domain {
            if domain.is_empty() || domain.contains('@') {
                return Err(format!("{text:?}: a domain match is @domain or @*.domain"));
            }
            return Ok(Self::Domain(DomainPattern::new(domain)));
        }
        if !valid_address(t) {
            return Err(format!(
                "{text:?} is neither an address (local@domain) nor @domain nor @*.domain (use `regex` for a pattern)"
            ));
        }
        Ok(Self::Exact(t.to_ascii_lowercase()))
    }

    /// The captures of `address` when it matches (the whole address is capture 0).
    fn captures(&self, address: &str) -> Option<Vec<String>> {
        match self {
            Self::Exact(a) => a.eq_ignore_ascii_case(address).then(Vec::new),
            Self::Domain(d) => d.matches(Address::parse(address).domain).then(Vec::new),
            Self::Regex(re) => re.captures(address).map(|c| {
                c.iter()
                    .map(|m| m.map_or(String::new(), |m| m.as_str().to_owned()))
                    .collect()
            }),
        }
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(a) => f.write_str(a),
            Self::Domain(d) => write!(f, "@{d}"),
            Self::Regex(re) => write!(f, "regex {:?}", re.as_str()),
        }
    }
}

/// A piece of a replacement template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Local,
    Domain,
    Capture(usize),
}

/// A replacement: text with `${local}`, `${domain}` (of the matched address), `$1`…`$9` or
/// `${N}` (captures of a regex) and `$$` (a dollar). A replacement that starts with `@`
/// replaces the domain only (`@example.com` is `${local}@example.com`), as in Postfix's
/// canonical maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    text: String,
    pieces: Vec<Piece>,
}

impl Replacement {
    /// Reads a replacement; `captures` is how many groups the match has (0 unless a regex).
    pub fn parse(text: &str, captures: usize) -> Result<Self, String> {
        let template = match text.trim().strip_prefix('@') {
            Some(domain) => format!("${{local}}@{domain}"),
            None => text.trim().to_owned(),
        };
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = template.as_str();
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            let (piece, used) = if let Some(r) = rest.strip_prefix('$') {
                literal.push('$');
                rest = r;
                continue;
            } else if let Some(r) = rest.strip_prefix('{') {
                let end = r
                    .find('}')
                    .ok_or_else(|| format!("{text:?}: `${{` without its closing `}}`"))?;
                let name = &r[..end];
                let piece = match name {
                    "local" => Piece::Local,
                    "domain" => Piece::Domain,
                    n => match n.parse::<usize>() {
                        Ok(i) => Piece::Capture(i),
                        Err(_) => {
                            return Err(format!(
                                "{text:?}: unknown ${{{n}}} (use ${{local}}, ${{domain}}, $1…$9 or $$)"
                            ));
                        }
                    },
                };
                (piece, end + 2)
            } else if let Some(d) = rest.chars().next().filter(char::is_ascii_digit) {
                (Piece::Capture(d as usize - '0' as usize), 1)
            } else {
                return Err(format!(
                    "{text:?}: a `$` must start ${{local}}, ${{domain}}, $1…$9 or $$"
                ));
            };
            if let Piece::Capture(i) = piece
                && (i == 0 || i > captures)
            {
                return Err(format!(
                    "{text:?}: ${i} names no capture group (the match has {captures})"
                ));
            }
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
            rest = &rest[used..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        let replacement = Self {
            text: text.trim().to_owned(),
            pieces,
        };
        // What it makes of a plain address must be an address too.
        let sample = replacement.expand(
            &Address::parse("user@example.org"),
            &vec!["x".to_owned(); captures + 1],
        );
        if !valid_address(&sample) {
            return Err(format!(
                "{text:?} does not make an address (it gives {sample:?} for user@example.org)"
            ));
        }
        Ok(replacement)
    }

    fn expand(&self, address: &Address, captures: &[String]) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Local => out.push_str(address.local),
                Piece::Domain => out.push_str(address.domain),
                Piece::Capture(i) => out.push_str(captures.get(*i).map_or("", String::as_str)),
            }
        }
        out
    }
}

impl fmt::Display for Replacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct AddressRule {
    pub name: String,
    pub direction: Direction,
    pub applies_to: Vec<Place>,
    pub matcher: Match,
    pub replacement: Replacement,
    /// `organizations`: the domains of those organizations; the rule rewrites only addresses
    /// in them. Empty: any address.
    pub domains: Vec<DomainPattern>,
}

/// The rules, in configuration order.
#[derive(Clone, Debug, Default)]
pub struct AddressTransformations(pub Vec<AddressRule>);

impl AddressTransformations {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some rule changes envelope addresses (the milter door then needs the MTA to
    /// grant CHGFROM, ADDRCPT and DELRCPT).
    pub fn changes_envelope(&self) -> bool {
        self.0.iter().any(|r| {
            r.applies_to
                .iter()
                .any(|p| matches!(p, Place::Sender | Place::Recipients))
        })
    }

    /// `address` rewritten for `place` in a message going `direction`, when a rule rewrites
    /// it. The null sender is never rewritten; a result that is not an address is not used.
    pub fn rewrite(&self, direction: Direction, place: Place, address: &str) -> Option<String> {
        let bare = address.trim().trim_start_matches('<').trim_end_matches('>');
        if bare.is_empty() {
            return None;
        }
        let rule = self
            .0
            .iter()
            .filter(|r| r.direction.covers(direction) && r.applies_to.contains(&place))
            .filter(|r| r.domains.is_empty() || r.domains.iter().any(|d| d.matches_address(bare)))
            .find_map(|r| r.matcher.captures(bare).map(|c| (r, c)))?;
        let (rule, mut captures) = rule;
        if captures.is_empty() {
            captures.push(bare.to_owned());
        }
        let new = rule.replacement.expand(&Address::parse(bare), &captures);
        (valid_address(&new) && new != bare).then_some(new)
    }

    /// An envelope address rewritten for `place`, as [`rewrite`](Self::rewrite) does.
    pub fn rewrite_address(
        &self,
        direction: Direction,
        place: Place,
        address: &EnvelopeAddress,
    ) -> Option<EnvelopeAddress> {
        let new = self.rewrite(direction, place, address)?;
        // A rewritten address is a valid one (see valid_address): no control character.
        EnvelopeAddress::parse(&new).ok()
    }

    /// The header fields (by name) whose addresses some rule rewrites in `direction`.
    pub fn header_places(&self, direction: Direction) -> Vec<Place> {
        let mut places: Vec<Place> = self
            .0
            .iter()
            .filter(|r| r.direction.covers(direction))
            .flat_map(|r| r.applies_to.iter().copied())
            .filter(|p| p.field().is_some())
            .collect();
        places.sort();
        places.dedup();
        places
    }

    /// A header field's value with the addresses rules rewrite replaced, when any is; display
    /// names, comments and quoted strings are left as they are.
    pub fn rewrite_field(&self, direction: Direction, place: Place, value: &str) -> Option<String> {
        let mut out = String::with_capacity(value.len());
        let mut changed = false;
        let mut last = 0;
        for (start, end) in addr_specs(value) {
            let spec = &value[start..end];
            if let Some(new) = self.rewrite(direction, place, spec) {
                out.push_str(&value[last..start]);
                out.push_str(&new);
                last = end;
                changed = true;
            }
        }
        out.push_str(&value[last..]);
        changed.then_some(out)
    }
}

/// `local@domain` with a non-empty local part and a domain of letters, digits, `-` and `.`
/// (or an address literal in brackets); no spaces, brackets or controls.
pub fn valid_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:@".contains(&b) || b >= 0x80);
    let domain_ok = if domain.starts_with('[') && domain.ends_with(']') {
        domain.len() > 2
    } else {
        !domain.is_empty()
            && domain.len() <= 255
            && !domain.starts_with('.')
            && !domain.contains("..")
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b >= 0x80)
    };
    local_ok && domain_ok
}

/// The first addr-spec in a header field's value (outside quotes and comments).
pub fn first_address(value: &str) -> Option<&str> {
    addr_specs(value)
        .first()
        .map(|&(start, end)| &value[start..end])
}

/// The byte ranges of the addr-specs in a header field's value: `local@domain` runs outside
/// quoted strings and comments. One pass.
fn addr_specs(value: &str) -> Vec<(usize, usize)> {
    let bytes = value.as_bytes();
    let mut specs = Vec::new();
    let (mut i, mut depth, mut quoted) = (0, 0usize, false);
    let mut token_start: Option<usize> = None;
    let is_atom = |b: u8| !b" \t\r\n<>(),;:\"".contains(&b);
    while i <= bytes.len() {
        let b = bytes.get(i).copied();
        let in_token = !quoted && depth == 0 && b.is_some_and(is_atom);
        if in_token {
            token_start.get_or_insert(i);
        } else if let Some(start) = token_start.take()
            && value[start..i].contains('@')
            && valid_address(&value[start..i])
        {
            specs.push((start, i));
        }
        match b {
            Some(b'\\') if quoted || depth > 0 => i += 1,
            Some(b'"') if depth == 0 => quoted = !quoted,
            Some(b'(') if !quoted => depth += 1,
            Some(b')') if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(direction: Direction, places: &[Place], m: &str, r: &str) -> AddressRule {
        let matcher = match m.strip_prefix("regex:") {
            Some(re) => Match::Regex(Regex::new(re).unwrap()),
            None => Match::parse(m).unwrap(),
        };
        let captures = match &matcher {
            Match::Regex(re) => re.captures_len() - 1,
            _ => 0,
        };
        AddressRule {
            name: m.into(),
            direction,
            applies_to: places.to_vec(),
            matcher,
            replacement: Replacement::parse(r, captures).unwrap(),
            domains: Vec::new(),
        }
    }

    #[test]
    fn a_rule_of_organizations_rewrites_only_their_addresses() {
        let mut masquerade = rule(
            Direction::Outbound,
            &[Place::Sender],
            "regex:^(.*)@host[0-9]+\\.(.*)$",
            "$1@$2",
        );
        masquerade.domains = vec![DomainPattern::new("*.acme.test")];
        let t = AddressTransformations(vec![masquerade]);
        let out = |a: &str| t.rewrite(Direction::Outbound, Place::Sender, a);
        assert_eq!(out("ann@host1.acme.test").as_deref(), Some("ann@acme.test"));
        assert_eq!(out("bob@host1.globex.test"), None, "not acme's");
    }

    #[test]
    fn domains_map_keeping_the_local_part() {
        let t = AddressTransformations(vec![rule(
            Direction::Outbound,
            &[Place::Sender, Place::From],
            "@corp.internal",
            "@example.com",
        )]);
        assert_eq!(
            t.rewrite(Direction::Outbound, Place::Sender, "<Ann@Corp.Internal>"),
            Some("Ann@example.com".into())
        );
        assert_eq!(
            t.rewrite(Direction::Inbound, Place::Sender, "ann@corp.internal"),
            None
        );
        assert_eq!(
            t.rewrite(Direction::Outbound, Place::Recipients, "ann@corp.internal"),
            None
        );
        assert_eq!(t.rewrite(Direction::Outbound, Place::Sender, "<>"), None);
        assert_eq!(
            t.rewrite(Direction::Outbound, Place::Sender, "ann@mx.corp.internal"),
            None
        );
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let t = AddressTransformations(vec![
            rule(
                Direction::Both,
                &[Place::Recipients],
                "boss@old.example",
                "ceo@new.example",
            ),
            rule(
                Direction::Both,
                &[Place::Recipients],
                "@*.old.example",
                "${local}@new.example",
            ),
            rule(
                Direction::Both,
                &[Place::Recipients],
                "@old.example",
                "info@new.example",
            ),
        ]);
        let r = |a| t.rewrite(Direction::Inbound, Place::Recipients, a);
        assert_eq!(r("BOSS@old.example"), Some("ceo@new.example".into()));
        assert_eq!(r("x@sales.old.example"), Some("x@new.example".into()));
        assert_eq!(r("anyone@old.example"), Some("info@new.example".into()));
        assert_eq!(r("anyone@other.example"), None);
    }

    #[test]
    fn regex_captures_and_names_expand() {
        let t = AddressTransformations(vec![rule(
            Direction::Both,
            &[Place::Sender],
            r"regex:^([a-z]+)\.([a-z]+)@legacy\.example$",
            "$2-$1+${domain}$$@new.example",
        )]);
        assert_eq!(
            t.rewrite(Direction::Inbound, Place::Sender, "ann.lee@legacy.example"),
            Some("lee-ann+legacy.example$@new.example".into())
        );
    }

    #[test]
    fn replacements_that_make_no_address_are_refused() {
        assert!(Replacement::parse("nobody", 0).is_err());
        assert!(Replacement::parse("a b@example.com", 0).is_err());
        assert!(Replacement::parse("$1@example.com", 0).is_err());
        assert!(Replacement::parse("${user}@example.com", 0).is_err());
        assert!(Replacement::parse("${local}@", 0).is_err());
        assert!(Replacement::parse("${local}@example.com", 0).is_ok());
        assert!(Replacement::parse("$1@example.com", 1).is_ok());
        assert!(Match::parse("not an address").is_err());
        assert!(Match::parse("@").is_err());
    }

    #[test]
    fn header_fields_keep_names_comments_and_quotes() {
        let t = AddressTransformations(vec![rule(
            Direction::Outbound,
            &[Place::From, Place::Cc],
            "@corp.internal",
            "@example.com",
        )]);
        let value = r#""ann@corp.internal" <ann@corp.internal> (ann@corp.internal), bob@corp.internal, c@other.example"#;
        assert_eq!(
            t.rewrite_field(Direction::Outbound, Place::From, value)
                .unwrap(),
            r#""ann@corp.internal" <ann@example.com> (ann@corp.internal), bob@example.com, c@other.example"#
        );
        assert_eq!(
            t.rewrite_field(Direction::Outbound, Place::From, "c@other.example"),
            None
        );
        assert_eq!(
            t.header_places(Direction::Outbound),
            vec![Place::From, Place::Cc]
        );
        assert!(t.header_places(Direction::Inbound).is_empty());
    }
}
