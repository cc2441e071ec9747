//! `protect`: reversible format-preserving encryption (NIST SP 800-38G FF1 over AES-256), and
//! `tokenize`: deterministic keyed tokens (HMAC-SHA256).
//!
//! `protect` keeps a value's length, its separators and the class of every character: digits
//! stay digits, upper-case letters stay upper-case, lower-case stay lower-case. Each class is
//! encrypted as one FF1 numeral string (radix 10 or 26) with the class in the tweak, so
//! `unprotect` needs nothing but the key, the tweak and the value. FF1 needs a domain of at
//! least a million values: a class with fewer than 6 digits or 5 letters in the value stays as
//! it is (a card number or an SSN always has enough digits; a two-letter IBAN country code
//! does not and stays readable).
//!
//! Protected values are written between a prefix and a suffix (`[p:` and `]` by default) so
//! that `postern unprotect` finds exactly the values that were protected: decrypting a value
//! that never was encrypted would silently corrupt it.

use std::sync::Arc;

use aes::Aes256;
use fpe::ff1::{FF1, FlexibleNumeralString};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A secret read from a file or the environment, never from the config itself (which is
/// often readable by many; see `secret_file`), never logged.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret's bytes (surrounding white space trimmed).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as a 256-bit key written in hex (64 hex digits), as `protect` needs it.
    pub fn aes256_key(&self) -> Result<[u8; 32], String> {
        let text = std::str::from_utf8(&self.0).map_err(|_| "the key is not text")?;
        let hex = text.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "a protect key must be 64 hex digits (256 bits), found {} characters; \
                 make one with: openssl rand -hex 32",
                hex.len()
            ));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(key)
    }
}

/// Character classes that FF1 encrypts separately, each within itself.
#[derive(Clone, Copy)]
enum Class {
    Digit,
    Upper,
    Lower,
}

impl Class {
    const ALL: [Self; 3] = [Self::Digit, Self::Upper, Self::Lower];

    fn of(c: char) -> Option<Self> {
        match c {
            '0'..='9' => Some(Self::Digit),
            'A'..='Z' => Some(Self::Upper),
            'a'..='z' => Some(Self::Lower),
            _ => None,
        }
    }

    fn base(self) -> u8 {
        match self {
            Self::Digit => b'0',
            Self::Upper => b'A',
            Self::Lower => b'a',
        }
    }

    fn radix(self) -> u32 {
        match self {
            Self::Digit => 10,
            Self::Upper | Self::Lower => 26,
        }
    }

    fn tag(self) -> u8 {
        match self {
            Self::Digit => b'd',
            Self::Upper => b'u',
            Self::Lower => b'l',
        }
    }
}

/// The FF1 cipher of one key and tweak, with the markers around protected values.
#[derive(Clone)]
pub struct Protector {
    digits: Arc<FF1<Aes256>>,
    letters: Arc<FF1<Aes256>>,
    tweak: Vec<u8>,
    pub prefix: String,
    pub suffix: String,
}

impl std::fmt::Debug for Protector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protector")
            .field("prefix", &self.prefix)
            .field("suffix", &self.suffix)
            .finish_non_exhaustive()
    }
}

impl Protector {
    pub fn new(key: &[u8; 32], tweak: &str, prefix: &str, suffix: &str) -> Self {
        Self {
            digits: Arc::new(FF1::new(key, 10).expect("10 is a valid radix")),
            letters: Arc::new(FF1::new(key, 26).expect("26 is a valid radix")),
            tweak: tweak.as_bytes().to_vec(),
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        }
    }

    /// The value encrypted, in the same format, without markers; `None` when no character
    /// class is long enough to encrypt (the caller must then hide the value another way).
    pub fn encrypt(&self, value: &str) -> Option<String> {
        self.cipher(value, true)
    }

    /// The inverse of [`Protector::encrypt`].
    pub fn decrypt(&self, value: &str) -> Option<String> {
        self.cipher(value, false)
    }

    /// The value encrypted and wrapped in the markers, as it goes into the message.
    pub fn protect(&self, value: &str) -> Option<String> {
        Some(format!(
            "{}{}{}",
            self.prefix,
            self.encrypt(value)?,
            self.suffix
        ))
    }

    /// Restores every marked value in `text`. Marked values that cannot be decrypted (edited
    /// by hand, another key) are left as they are and counted in the second result.
    pub fn unprotect_text(&self, text: &str) -> (String, usize, usize) {
        let (mut out, mut restored, mut failed) = (String::with_capacity(text.len()), 0, 0);
        let mut rest = text;
        while let Some(start) = rest.find(&self.prefix) {
            let after = &rest[start + self.prefix.len()..];
            let Some(end) = after.find(&self.suffix) else {
                break;
            };
            let inner = &after[..end];
            out.push_str(&rest[..start]);
            // A marked value never spans lines: a prefix far from its suffix is ordinary text.
            match (!inner.contains(['\r', '\n']))
                .then(|| self.decrypt(inner))
                .flatten()
            {
                Some(plain) => {
                    out.push_str(&plain);
                    restored += 1;
                    rest = &after[end + self.suffix.len()..];
                }
                None => {
                    out.push_str(&self.prefix);
                    failed += usize::from(!inner.contains(['\r', '\n']));
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        (out, restored, failed)
    }

    fn cipher(&self, value: &str, encrypt: bool) -> Option<String> {
        let mut chars: Vec<char> = value.chars().collect();
        let mut changed = false;
        for class in Class::ALL {
            let positions: Vec<usize> = chars
                .iter()
                .enumerate()
                .filter(|(_, c)| matches!(Class::of(**c), Some(k) if k.tag() == class.tag()))
                .map(|(i, _)| i)
                .collect();
            if positions.is_empty() {
                continue;
            }
            let numerals: Vec<u16> = positions
                .iter()
                .map(|&i| u16::from(chars[i] as u8 - class.base()))
                .collect();
            let ff1 = match class {
                Class::Digit => &*self.digits,
                Class::Upper | Class::Lower => &*self.letters,
            };
            let mut tweak = self.tweak.clone();
            tweak.push(class.tag());
            let ns = FlexibleNumeralString::from(numerals);
            let result = if encrypt {
                ff1.encrypt(&tweak, &ns)
            } else {
                ff1.decrypt(&tweak, &ns)
            };
            // Too short for FF1's minimum domain: this class stays as it is.
            let Ok(result) = result else { continue };
            let numerals: Vec<u16> = result.into();
            debug_assert!(numerals.iter().all(|&n| u32::from(n) < class.radix()));
            for (&i, n) in positions.iter().zip(numerals) {
                chars[i] = char::from(class.base() + n as u8);
            }
            changed = true;
        }
        changed.then(|| chars.into_iter().collect())
    }
}

/// `tokenize`: the same value always gets the same token, and the token reveals nothing of
/// the value without the key.
#[derive(Clone)]
pub struct Tokenizer {
    key: Secret,
    pub prefix: String,
    /// Hex digits of the HMAC kept in the token (4 to 64).
    pub length: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("prefix", &self.prefix)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    pub fn new(key: Secret, prefix: &str, length: usize) -> Self {
        Self {
            key,
            prefix: prefix.to_owned(),
            length: length.clamp(4, 64),
        }
    }

    pub fn token(&self, value: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key.0).expect("HMAC takes any key");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{}", self.prefix, &hex[..self.length])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn protector() -> Protector {
        Protector::new(&[7u8; 32], "postern", "[p:", "]")
    }

    #[test]
    fn protect_keeps_format_and_reverses() {
        let p = protector();
        let value = "4111 1111 1111 1111";
        let enc = p.encrypt(value).expect("16 digits are enough");
        assert_ne!(enc, value);
        assert_eq!(enc.len(), value.len());
        assert_eq!(
            enc.chars().map(|c| c.is_ascii_digit()).collect::<Vec<_>>(),
            value
                .chars()
                .map(|c| c.is_ascii_digit())
                .collect::<Vec<_>>()
        );
        assert_eq!(p.decrypt(&enc).as_deref(), Some(value));
        assert_eq!(p.encrypt(value), Some(enc), "deterministic");
    }

    #[test]
    fn short_classes_stay_and_too_short_values_are_refused() {
        let p = protector();
        let enc = p.encrypt("DE89 3704 0044 0532 0130 00").expect("20 digits");
        assert!(
            enc.starts_with("DE"),
            "two letters are below FF1's minimum: {enc}"
        );
        assert_eq!(p.encrypt("12-34"), None);
    }

    #[test]
    fn unprotect_text_finds_only_marked_values() {
        let p = protector();
        let text = format!(
            "card {} and ssn {}; order 123456 stays; [p:broken",
            p.protect("4111 1111 1111 1111").unwrap(),
            p.protect("123-45-6789").unwrap()
        );
        let (plain, restored, failed) = p.unprotect_text(&text);
        assert_eq!(
            plain,
            "card 4111 1111 1111 1111 and ssn 123-45-6789; order 123456 stays; [p:broken"
        );
        assert_eq!((restored, failed), (2, 0));
    }

    #[test]
    fn a_key_must_be_256_bits_of_hex() {
        assert!(Secret::new(b"abc".to_vec()).aes256_key().is_err());
        let hex = "00".repeat(32);
        assert_eq!(Secret::new(hex.into_bytes()).aes256_key(), Ok([0u8; 32]));
    }

    #[test]
    fn tokens_are_deterministic_and_keyed() {
        let a = Tokenizer::new(Secret::new(b"k1".to_vec()), "tok_", 16);
        let b = Tokenizer::new(Secret::new(b"k2".to_vec()), "tok_", 16);
        assert_eq!(a.token("123-45-6789"), a.token("123-45-6789"));
        assert_ne!(a.token("123-45-6789"), a.token("123-45-6780"));
        assert_ne!(a.token("123-45-6789"), b.token("123-45-6789"));
        assert_eq!(a.token("x").len(), 4 + 16);
    }

    proptest! {
        #[test]
        fn protect_then_unprotect_is_the_identity(value in "[0-9A-Za-z -]{0,40}") {
            let p = protector();
            match p.protect(&value) {
                Some(marked) => {
                    let (plain, restored, _) = p.unprotect_text(&marked);
                    prop_assert_eq!(plain, value);
                    prop_assert_eq!(restored, 1);
                }
                None => prop_assert!(p.encrypt(&value).is_none()),
            }
        }
    }
}
