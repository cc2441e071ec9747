//! What the content and documents benchmarks share.

use std::time::Duration;

use postern::config::Config;
use postern::engine::rules::Ruleset;

/// Twenty patterns of the kind a DLP policy holds; POSIX ERE and Rust regex read them alike.
pub const PATTERNS: [&str; 20] = [
    "[0-9]{4} [0-9]{4} [0-9]{4} [0-9]{4}",
    "[0-9]{3}-[0-9]{2}-[0-9]{4}",
    "DE[0-9]{2} [0-9]{4} [0-9]{4} [0-9]{4} [0-9]{4} [0-9]{2}",
    "[A-Za-z0-9._%+-]+@example\\.org",
    "\\+49 [0-9]{2} [0-9]{7}",
    "passport [A-Z][0-9]{8}",
    "account [0-9]{10}",
    "policy number [0-9]{6}",
    "employee id E[0-9]{5}",
    "PIN [0-9]{4}",
    "confidential",
    "secret project [A-Z][a-z]+",
    "password: [^ ]+",
    "api[_-]key=[A-Za-z0-9]{20}",
    "BIC [A-Z]{6}[A-Z0-9]{2}",
    "date of birth [0-9]{2}/[0-9]{2}/[0-9]{4}",
    "tax id [0-9]{2}/[0-9]{3}/[0-9]{5}",
    "license plate [A-Z]{1,3}-[A-Z]{1,2} [0-9]{1,4}",
    "medical record MR[0-9]{7}",
    "salary [0-9]{2,3}\\.[0-9]{3} EUR",
];

/// One ruleset of 20 rules, one per pattern, redacting what they find in `target`.
pub fn rulesets(target: &str) -> Vec<Ruleset> {
    let mut toml = String::from("[[ruleset]]\nname = \"bench\"\n");
    for (i, p) in PATTERNS.iter().enumerate() {
        toml.push_str(&format!(
            "[[ruleset.rule]]\nname = \"p{i}\"\ntargets = [\"{target}\"]\nregex = '{p}'\naction = \"redact\"\n"
        ));
    }
    Config::parse(&toml, "bench.toml")
        .expect("bench config")
        .policy
        .content
        .rulesets
}

/// The median of some timed runs.
pub fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}
