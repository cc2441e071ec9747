//! The OpenSPF RFC 7208 test suite (tests/data/spf, with its licence), every case run through
//! Postern's SPF identity evaluation with each scenario's zonedata served through viaspf's
//! lookup seam. viaspf is the patched copy in vendor/viaspf (see its PATCHES.md); every case
//! must pass.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use postern::engine::checks::spf::{check_identity, result_name};
use serde_yaml::Value;
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};
use viaspf::{Config, SpfResult};

const SUITE: &str = include_str!("../data/spf/rfc7208-tests.yml");

/// One scenario's zone data: lowercase name → records.
struct Zone(HashMap<String, Vec<Value>>);

impl Zone {
    fn records(&self, name: &str) -> Option<&Vec<Value>> {
        self.0.get(&name.trim_end_matches('.').to_ascii_lowercase())
    }

    /// Records of one type at a name, following CNAMEs; TIMEOUT entries time out.
    fn find(&self, name: &str, kind: &str) -> LookupResult<Vec<Value>> {
        let mut name = name.to_owned();
        for _ in 0..8 {
            let Some(records) = self.records(&name) else {
                return Err(LookupError::NoRecords);
            };
            if let Some(target) = records.iter().find_map(|r| r.get("CNAME")) {
                name = target.as_str().unwrap_or_default().to_owned();
                continue;
            }
            let of = |k: &str| -> Vec<Value> {
                records.iter().filter_map(|r| r.get(k).cloned()).collect()
            };
            let mut found = of(kind);
            // "TXT: NONE" marks a name without TXT records; otherwise drivers serve SPF-type
            // records as TXT when a name has no TXT records.
            let none = found.iter().any(|v| v.as_str() == Some("NONE"));
            found.retain(|v| v.as_str() != Some("NONE"));
            if kind == "TXT" && found.is_empty() && !none {
                found = of("SPF");
            }
            // TIMEOUT: lookups of the types the name does not have time out.
            if found.is_empty() && records.iter().any(|r| r.as_str() == Some("TIMEOUT")) {
                return Err(LookupError::Timeout);
            }
            return Ok(found);
        }
        Err(LookupError::Dns(None))
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        _ => vec![],
    }
}

fn non_empty<T>(v: Vec<T>) -> LookupResult<Vec<T>> {
    if v.is_empty() {
        Err(LookupError::NoRecords)
    } else {
        Ok(v)
    }
}

impl Zone {
    /// The addresses of one record type (A or AAAA) the scenario gives `name`.
    fn addresses<T: std::str::FromStr>(&self, name: &Name, kind: &str) -> LookupResult<Vec<T>> {
        let found = self.find(name.as_str(), kind)?;
        non_empty(
            found
                .iter()
                .flat_map(strings)
                .filter_map(|s| s.parse().ok())
                .collect(),
        )
    }
}

#[async_trait]
impl Lookup for Zone {
    async fn lookup_a<'l, 'a>(&'l self, name: &'a Name) -> LookupResult<Vec<Ipv4Addr>> {
        self.addresses(name, "A")
    }

    async fn lookup_aaaa<'l, 'a>(&'l self, name: &'a Name) -> LookupResult<Vec<Ipv6Addr>> {
        self.addresses(name, "AAAA")
    }

    async fn lookup_mx<'l, 'a>(&'l self, name: &'a Name) -> LookupResult<Vec<Name>> {
        let mut found: Vec<(u64, String)> = self
            .find(name.as_str(), "MX")?
            .iter()
            .filter_map(|mx| Some((mx.get(0)?.as_u64()?, mx.get(1)?.as_str()?.to_owned())))
            .collect();
        found.sort();
        non_empty(
            found
                .iter()
                .filter_map(|(_, n)| Name::new(n).ok())
                .collect(),
        )
    }

    async fn lookup_txt<'l, 'a>(&'l self, name: &'a Name) -> LookupResult<Vec<String>> {
        // Each record is one string or a list of strings joined without separator.
        non_empty(
            self.find(name.as_str(), "TXT")?
                .iter()
                .map(|r| strings(r).concat())
                .collect(),
        )
    }

    async fn lookup_ptr<'l>(&'l self, ip: IpAddr) -> LookupResult<Vec<Name>> {
        let name = format!(
            "{}.{}",
            postern::dns::reversed(ip),
            if ip.is_ipv4() {
                "in-addr.arpa"
            } else {
                "ip6.arpa"
            }
        );
        let found = self.find(&name, "PTR")?;
        non_empty(
            found
                .iter()
                .flat_map(strings)
                .filter_map(|n| Name::new(&n).ok())
                .collect(),
        )
    }
}

#[tokio::test]
async fn rfc7208_suite() {
    let config = Config::builder().build();
    let (mut passed, mut failures) = (0, Vec::new());
    for doc in serde_yaml::Deserializer::from_str(SUITE) {
        let scenario = Value::deserialize(doc).expect("suite YAML parses");
        let section = scenario["description"].as_str().unwrap_or("").to_owned();
        let mut zone = HashMap::new();
        if let Some(data) = scenario["zonedata"].as_mapping() {
            for (name, records) in data {
                let name = name
                    .as_str()
                    .unwrap()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                zone.insert(name, records.as_sequence().cloned().unwrap_or_default());
            }
        }
        let zone = Zone(zone);
        for (name, test) in scenario["tests"].as_mapping().expect("tests") {
            let name = name.as_str().unwrap();
            let ip: IpAddr = test["host"].as_str().unwrap().parse().unwrap();
            let helo = test["helo"].as_str().unwrap_or("");
            let mail_from = test["mailfrom"].as_str().unwrap_or("");
            let expected = strings(&test["result"]);
            let outcome = check_identity(&zone, &config, ip, helo, mail_from).await;
            let got = result_name(&outcome.result);
            let mut ok = expected.iter().any(|e| e == got);
            // "DEFAULT" stands for the implementation's default explanation. Explanations
            // spell DNS names, which are case-insensitive (the suite writes IPv6 nibbles in
            // upper case, RFC 7208 §7.4 in lower case).
            if let (true, SpfResult::Fail(exp), Some(want)) = (
                ok,
                &outcome.result,
                test["explanation"].as_str().filter(|w| *w != "DEFAULT"),
            ) {
                ok = exp.as_ref().eq_ignore_ascii_case(want);
                if !ok {
                    failures.push(format!(
                        "{section}/{name}: explanation {:?}, expected {want:?}",
                        exp.as_ref()
                    ));
                    continue;
                }
            }
            if ok {
                passed += 1;
            } else {
                failures.push(format!(
                    "{section}/{name}: got {got}, expected {expected:?}"
                ));
            }
        }
    }
    println!(
        "RFC 7208 suite: {} cases, {passed} passed",
        passed + failures.len()
    );
    assert_eq!(passed + failures.len(), 203, "every case of the suite ran");
    assert!(failures.is_empty(), "failing cases:\n{failures:#?}");
}

use serde::Deserialize as _;
