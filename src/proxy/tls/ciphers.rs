//! `cipher_suites` as admins bring them: rustls (IANA) names, or OpenSSL names from a Postfix
//! or nginx configuration, in a list or in one `:`/`;`/`,`-separated string. A name is mapped
//! to a suite Postern's TLS library (rustls with ring) offers; every other name is refused
//! when the configuration is checked, by name, with the list of those that would do.

use rustls::CipherSuite;
use rustls::CipherSuite::*;

/// The suites rustls offers (ring provider, TLS 1.2 and 1.3): each with its OpenSSL name.
/// The TLS 1.3 OpenSSL names are the IANA ones; rustls spells those `TLS13_…`.
const SUPPORTED: &[(&str, CipherSuite)] = &[
    ("TLS_AES_256_GCM_SHA384", TLS13_AES_256_GCM_SHA384),
    ("TLS_AES_128_GCM_SHA256", TLS13_AES_128_GCM_SHA256),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The suites named by `entries` (each entry one name or several separated by `:`, `;`, `,`
/// or spaces), in the order given, without repeats. An empty result means rustls's defaults.
pub fn parse(entries: &[String]) -> Result<Vec<CipherSuite>, String> {
    let names = entries
        .iter()
        .flat_map(|e| e.split([':', ';', ',', ' ', '\t']))
        .filter(|n| !n.is_empty());
    let mut suites = Vec::new();
    let mut keywords = Vec::new();
    let mut unsupported = Vec::new();
    for name in names {
        match suite(name) {
            Some(s) if !suites.contains(&s) => suites.push(s),
            Some(_) => {}
            None if is_keyword(name) => keywords.push(name),
            None => unsupported.push(name),
        }
    }
    if !keywords.is_empty() {
        return Err(format!(
            "{} {} OpenSSL cipher-string keywords, not cipher suite names: Postern takes the suites themselves, by name; {}",
            quoted(&keywords),
            if keywords.len() == 1 { "is an" } else { "are" },
            choose()
        ));
    }
    if !unsupported.is_empty() {
        return Err(format!(
            "{} {} not supported: Postern's TLS library (rustls) offers only AEAD suites with forward secrecy; {}",
            quoted(&unsupported),
            if unsupported.len() == 1 { "is" } else { "are" },
            choose()
        ));
    }
    Ok(suites)
}

/// The suite an OpenSSL, IANA or rustls name stands for, case aside.
fn suite(name: &str) -> Option<CipherSuite> {
    SUPPORTED.iter().find_map(|&(openssl, suite)| {
        let rustls = suite.as_str().unwrap_or_default();
        let iana = rustls.replacen("TLS13_", "TLS_", 1);
        [openssl, rustls, &iana]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
            .then_some(suite)
    })
}

/// Whether `name` is part of an OpenSSL cipher string rather than a suite: an operator
/// (`!aNULL`, `+RSA`, `-DES`, `@STRENGTH`, `ECDHE+AESGCM`) or a keyword (`HIGH`, `DEFAULT`,
/// `TLSv1.2`). Every suite name has a `-` or `_` inside it.
fn is_keyword(name: &str) -> bool {
    name.starts_with(['!', '+', '-', '@'])
        || name.contains('+')
        || !name.trim_matches(['-', '_']).contains(['-', '_'])
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn choose() -> String {
    let names: Vec<&str> = SUPPORTED.iter().map(|(n, _)| *n).collect();
    format!(
        "choose from {} (or their rustls names, e.g. TLS13_AES_256_GCM_SHA384), or leave cipher_suites empty for the safe defaults",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn openssl_iana_and_rustls_names_map_to_the_same_suites() {
        let suites = parse(&list(&[
            "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305",
            "TLS_AES_128_GCM_SHA256",
            "TLS13_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "tls13_aes_128_gcm_sha256",
        ]))
        .unwrap();
        assert_eq!(
            suites,
            vec![
                TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                TLS13_AES_128_GCM_SHA256,
                TLS13_AES_256_GCM_SHA384,
                TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ]
        );
        let one = parse(&list(&[
            "ECDHE-RSA-AES256-GCM-SHA384; TLS_CHACHA20_POLY1305_SHA256,ECDHE-ECDSA-AES256-GCM-SHA384",
        ]))
        .unwrap();
        assert_eq!(one.len(), 3);
        assert_eq!(parse(&[]).unwrap(), vec![]);
    }

    #[test]
    fn every_supported_suite_is_offered_by_rustls() {
        let offered: Vec<CipherSuite> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        for (name, suite) in SUPPORTED {
            assert!(offered.contains(suite), "{name}");
        }
        assert_eq!(offered.len(), SUPPORTED.len());
    }

    #[test]
    fn unsupported_suites_are_named() {
        let e = parse(&list(&[
            "ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA:DHE-RSA-AES256-GCM-SHA384",
            "RC4-MD5",
        ]))
        .unwrap_err();
        assert!(
            e.starts_with(
                r#""AES128-SHA", "DHE-RSA-AES256-GCM-SHA384", "RC4-MD5" are not supported"#
            ),
            "{e}"
        );
        assert!(e.contains("choose from TLS_AES_256_GCM_SHA384,"), "{e}");
        assert!(e.contains("ECDHE-RSA-CHACHA20-POLY1305"), "{e}");
    }

    #[test]
    fn cipher_string_keywords_are_refused_as_such() {
        for s in [
            "HIGH:!aNULL",
            "DEFAULT",
            "ECDHE+AESGCM",
            "@STRENGTH",
            "TLSv1.2",
        ] {
            let e = parse(&list(&[s])).unwrap_err();
            assert!(e.contains("OpenSSL cipher-string keyword"), "{s}: {e}");
        }
    }
}
