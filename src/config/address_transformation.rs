//! `[[address_transformation]]`: ordered rules that rewrite envelope and header addresses at
//! the border (src/engine/address_transformation.rs).

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::Invalid;
use crate::engine::address_transformation::{
    AddressRule, AddressTransformations, Direction, Match, Place, Replacement,
};
use crate::engine::organizations::Organizations;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddressTransformationSection {
    name: Option<String>,
    #[serde(default)]
    direction: Direction,
    #[serde(default = "envelope")]
    applies_to: Spanned<Vec<Place>>,
    /// An address, `@domain` or `@*.domain`.
    #[serde(rename = "match")]
    matches: Option<Spanned<String>>,
    /// A regular expression over the whole address, instead of `match`.
    regex: Option<Spanned<String>>,
    replace: Spanned<String>,
    /// Only addresses in these organizations' domains.
    #[serde(default)]
    organizations: Vec<String>,
}

fn envelope() -> Spanned<Vec<Place>> {
    Spanned::new(0..0, vec![Place::Sender, Place::Recipients])
}

pub(super) fn compile(
    sections: Vec<AddressTransformationSection>,
    organizations: &Organizations,
) -> Result<AddressTransformations, Invalid> {
    let known: Vec<String> = organizations.list.iter().map(|o| o.name.clone()).collect();
    let mut rules = Vec::with_capacity(sections.len());
    for (i, s) in sections.into_iter().enumerate() {
        let key = |k: &str| format!("address_transformation[{i}].{k}");
        let (matcher, captures) = match (s.matches, s.regex) {
            (Some(m), None) => {
                let span = m.span();
                let matcher = Match::parse(m.get_ref()).map_err(|e| (span, key("match"), e))?;
                (matcher, 0)
            }
            (None, Some(re)) => {
                let span = re.span();
                let regex = Regex::new(re.get_ref())
                    .map_err(|e| (span, key("regex"), format!("not a regular expression: {e}")))?;
                let captures = regex.captures_len() - 1;
                (Match::Regex(regex), captures)
            }
            _ => {
                return Err((
                    s.replace.span(),
                    format!("address_transformation[{i}]"),
                    "give exactly one of `match` (an address, @domain or @*.domain) and `regex`"
                        .to_owned(),
                ));
            }
        };
        let replacement = Replacement::parse(s.replace.get_ref(), captures)
            .map_err(|e| (s.replace.span(), key("replace"), e))?;
        if s.applies_to.get_ref().is_empty() {
            return Err((
                s.applies_to.span(),
                key("applies_to"),
                "name at least one of sender, recipients, from, to, cc".to_owned(),
            ));
        }
        if let Some(m) = super::organizations::unknown(&s.organizations, &known) {
            return Err((s.replace.span(), key("organizations"), m));
        }
        rules.push(AddressRule {
            domains: organizations.domains_of(&s.organizations),
            name: s.name.unwrap_or_else(|| format!("rule {}", i + 1)),
            direction: s.direction,
            applies_to: s.applies_to.into_inner(),
            matcher,
            replacement,
        });
    }
    Ok(AddressTransformations(rules))
}
