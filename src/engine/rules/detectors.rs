//! Built-in detectors of sensitive data. Each finds candidates with a regular expression and
//! then validates them (checksums, numbering rules), so that numbers which merely look right
//! are not reported: a false positive is a broken message, a false negative a leak.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

const ALL: [Detector; 5] = [
    Detector::CardNumber,
    Detector::Iban,
    Detector::UsSsn,
    Detector::Email,
    Detector::Phone,
];

/// A detector usable by name in a ruleset (`detector = "card_number"`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Payment card numbers: 13 to 19 digits, one kind of separator at most, Luhn checksum.
    CardNumber,
    /// International bank account numbers: country, check digits, ISO 7064 mod 97-10.
    Iban,
    /// US social security numbers written AAA-GG-SSSS, with the SSA's numbering rules.
    UsSsn,
    /// E-mail addresses.
    Email,
    /// Telephone numbers: international (+CC, 8 to 15 digits) or North American.
    Phone,
}

static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("static regex"));
static IBAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b").expect("static regex"));
static SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d{3})-(\d{2})-(\d{4})\b").expect("static regex"));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
        .expect("static regex")
});
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d[\d .()-]{6,18}\d|\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b)")
        .expect("static regex")
});

impl Detector {
    /// Byte ranges of `text` holding what this detector finds, validated, in order.
    pub fn find(self, text: &str) -> Vec<Range<usize>> {
        let (regex, valid) = self.finder();
        regex
            .find_iter(text)
            .filter(|m| valid(m.as_str()))
            .map(|m| m.range())
            .collect()
    }

    /// Whether every detector finds only within one line (see `locality`); worked out once.
    pub fn within_lines() -> bool {
        static LOCAL: LazyLock<bool> = LazyLock::new(|| {
            ALL.iter()
                .all(|d| super::locality::within_lines(d.finder().0.as_str()))
        });
        *LOCAL
    }

    /// The detector's candidates and their validation.
    fn finder(self) -> (&'static Regex, fn(&str) -> bool) {
        match self {
            Self::CardNumber => (&CARD, valid_card),
            Self::Iban => (&IBAN, valid_iban),
            Self::UsSsn => (&SSN, valid_ssn),
            Self::Email => (&EMAIL, |_| true),
            Self::Phone => (&PHONE, valid_phone),
        }
    }
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// The Luhn (mod 10) checksum of a digit sequence holds.
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn valid_card(candidate: &str) -> bool {
    let separators: Vec<u8> = candidate.bytes().filter(|b| !b.is_ascii_digit()).collect();
    // One kind of separator, used consistently: "4111 1111 1111 1111", not "4111-1111 11".
    if separators.windows(2).any(|w| w[0] != w[1]) {
        return false;
    }
    let d = digits(candidate);
    (13..=19).contains(&d.len()) && d.iter().any(|&x| x != d[0]) && luhn(&d)
}

/// ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1.
pub fn iban_checksum_holds(iban: &str) -> bool {
    let compact: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    // ISO 7064 MOD 97-10 gives check digits 02 to 98: 00, 01 and 99 pass the remainder test
    // (as 97, 98 and 02 would) but no IBAN carries them.
    if !matches!(
        compact.get(2..4).and_then(|d| d.parse::<u8>().ok()),
        Some(2..=98)
    ) {
        return false;
    }
    let rearranged = compact[4..].chars().chain(compact[..4].chars());
    let mut remainder: u32 = 0;
    for c in rearranged {
        let value = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

fn valid_iban(candidate: &str) -> bool {
    iban_checksum_holds(candidate)
}

/// SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000.
fn valid_ssn(candidate: &str) -> bool {
    let Some(c) = SSN.captures(candidate) else {
        return false;
    };
    let area: u32 = c[1].parse().unwrap_or(0);
    area != 0 && area != 666 && area < 900 && &c[2] != "00" && &c[3] != "0000"
}

fn valid_phone(candidate: &str) -> bool {
    let n = digits(candidate).len();
    if candidate.starts_with('+') {
        (8..=15).contains(&n)
    } else {
        n == 10
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn found(d: Detector, text: &str) -> Vec<&str> {
        d.find(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn card_numbers_with_and_without_separators() {
        let text = "cards 4111 1111 1111 1111, 5500-0000-0000-0004 and 378282246310005; \
                    not 4111 1111 1111 1112 nor 4111-1111 1111 1111 nor 0000000000000000";
        assert_eq!(
            found(Detector::CardNumber, text),
            [
                "4111 1111 1111 1111",
                "5500-0000-0000-0004",
                "378282246310005"
            ]
        );
    }

    #[test]
    fn ibans_by_mod_97() {
        let text = "pay DE89 3704 0044 0532 0130 00 or GB82WEST12345698765432, \
                    not DE89 3704 0044 0532 0130 01";
        assert_eq!(
            found(Detector::Iban, text),
            ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"]
        );
    }

    #[test]
    fn ssns_by_numbering_rules() {
        let text = "123-45-6789 ok; 000-12-3456 666-12-3456 912-34-5678 123-00-4567 123-45-0000 no";
        assert_eq!(found(Detector::UsSsn, text), ["123-45-6789"]);
    }

    #[test]
    fn emails_and_phones() {
        assert_eq!(
            found(
                Detector::Email,
                "write to jane.doe+x@mail.example.org today"
            ),
            ["jane.doe+x@mail.example.org"]
        );
        assert_eq!(
            found(
                Detector::Phone,
                "call +49 30 1234567 or (555) 123-4567, not 12-34"
            ),
            ["+49 30 1234567", "(555) 123-4567"]
        );
    }

    /// The Luhn check digit of `body`, computed as ISO/IEC 7812-1 describes it (double every
    /// second digit from the right, starting with the rightmost of the body): written apart
    /// from `luhn`, so that the two check each other.
    fn luhn_check_digit(body: &[u8]) -> u8 {
        let sum: u32 = body
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &d)| {
                let d = u32::from(d);
                if i % 2 == 0 {
                    (2 * d) / 10 + (2 * d) % 10
                } else {
                    d
                }
            })
            .sum();
        ((10 - sum % 10) % 10) as u8
    }

    /// A digit string with its Luhn check digit, and the same string with a wrong one.
    fn with_check_digit(body: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let check = luhn_check_digit(body);
        let mut good = body.to_vec();
        good.push(check);
        let mut bad = body.to_vec();
        bad.push((check + 1) % 10);
        (good, bad)
    }

    /// The check digits of a German IBAN with this BBAN, as ISO 13616 computes them: the BBAN,
    /// then "DE00", letters as numbers (A = 10), mod 97, subtracted from 98.
    fn iban_check_digits(bban: &str) -> u32 {
        let numeric: String = format!("{bban}DE00")
            .chars()
            .map(|c| c.to_digit(36).expect("alphanumeric").to_string())
            .collect();
        let remainder = numeric
            .bytes()
            .fold(0u32, |r, d| (r * 10 + u32::from(d - b'0')) % 97);
        98 - remainder
    }

    /// Published examples: the Luhn example of ISO/IEC 7812-1 (7992739871, check digit 3) and
    /// the IBAN examples of ISO 13616 / the European Committee for Banking Standards.
    #[test]
    fn independent_checks_agree_with_published_examples() {
        assert_eq!(luhn_check_digit(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1]), 3);
        assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
        assert_eq!(iban_check_digits("370400440532013000"), 89);
        for iban in ["DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32"] {
            assert!(iban_checksum_holds(iban), "{iban}");
        }
        assert!(!iban_checksum_holds("GB83 WEST 1234 5698 7654 32"));
        // 98 and 01 leave the same remainder; only 98 is a check digit pair.
        assert_eq!(iban_check_digits("479777710109755102"), 98);
        assert!(iban_checksum_holds("DE98479777710109755102"));
        assert!(!iban_checksum_holds("DE01479777710109755102"));
    }

    proptest! {
        #[test]
        fn card_detector_never_matches_a_failing_checksum(
            body in proptest::collection::vec(0u8..10, 12..19)
        ) {
            let (good, bad) = with_check_digit(&body);
            let as_text = |v: &[u8]| v.iter().map(|d| char::from(b'0' + d)).collect::<String>();
            let bad_found = Detector::CardNumber.find(&format!("x {} y", as_text(&bad)));
            prop_assert!(bad_found.is_empty());
            if good.iter().any(|&d| d != good[0]) {
                let good_found = Detector::CardNumber.find(&format!("x {} y", as_text(&good)));
                prop_assert_eq!(good_found.len(), 1);
            }
        }

        #[test]
        fn iban_detector_never_matches_a_failing_checksum(
            bban in "[0-9]{18}", check in 0u32..100
        ) {
            let iban = format!("DE{check:02}{bban}");
            let holds = check == iban_check_digits(&bban);
            let found = Detector::Iban.find(&format!("IBAN {iban} ok"));
            prop_assert_eq!(found.len(), usize::from(holds));
        }
    }
}
