//! Inbound SMTP AUTH: PLAIN and LOGIN against a users file of argon2 password
//! hashes. The file holds `user:$argon2id$...` lines (`#` starts a comment); make a hash with
//! `postern hash-password`. Passwords are checked on the blocking pool (argon2 is slow on
//! purpose) and never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::Semaphore;

use tracing::warn;

use crate::engine::ports::{ClientKey, Counter, Store};

/// Authentication failures per client across its connections, so that a guesser gains nothing
/// by reconnecting: after `max` failures within `window` (counted from the first), AUTH from
/// that client is refused until the window ends. IPv6 clients count per /64, the block one
/// host usually holds. Counted in the engine's store, which a fleet can share; a store that
/// cannot answer limits nothing (the per-connection limit still holds).
pub struct ClientFailures<'a> {
    pub store: &'a dyn Store,
    /// 0 turns the limit off.
    pub max: u32,
    pub window: Duration,
}

impl ClientFailures<'_> {
    /// Takes one attempt before the password is checked, counted as a failure until
    /// [`ClientFailures::succeeded`] gives it back: parallel connections of one client get no
    /// more guesses than one. False when the client has none left.
    pub async fn reserve(&self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let key = ClientKey::of(ip);
        match self
            .store
            .add(Counter::AuthFailures, key, 1, self.window)
            .await
        {
            Ok(n) if n > u64::from(self.max) => {
                self.give_back(key).await;
                false
            }
            Ok(_) => true,
            Err(e) => {
                warn!(client = %ip, error = %e, "AUTH failures not counted");
                true
            }
        }
    }

    /// The reserved attempt succeeded: it is not a failure.
    pub async fn succeeded(&self, ip: IpAddr) {
        if self.max > 0 {
            self.give_back(ClientKey::of(ip)).await;
        }
    }

    async fn give_back(&self, key: ClientKey) {
        if let Err(e) = self
            .store
            .add(Counter::AuthFailures, key, -1, self.window)
            .await
        {
            warn!(client = %key, error = %e, "AUTH attempt not given back");
        }
    }
}

/// The users who may authenticate, with their password hashes (PHC strings).
#[derive(Clone, Debug)]
pub struct Users {
    hashes: Arc<HashMap<String, String>>,
    /// Password checks running at once (`max_concurrent_password_checks`): argon2 costs
    /// about 20 MB and tens of milliseconds each, so a flood of AUTH must not take every
    /// blocking thread.
    checks: Arc<Semaphore>,
}

impl PartialEq for Users {
    fn eq(&self, other: &Self) -> bool {
        self.hashes == other.hashes
    }
}

impl Eq for Users {}

/// Why a password could not be checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Verification {
    Valid,
    Invalid,
    /// Every password check slot stayed busy for the whole wait.
    Busy,
}

impl Users {
    /// Reads a users file; passwords are checked within `checks` (one slot per check at once,
    /// shared by every users file). Errors name the file and line.
    pub fn load(path: &Path, checks: Arc<Semaphore>) -> Result<Self, String> {
        let text = crate::secret_file::read_to_string(path, "AUTH users file")
            .map_err(|e| e.to_string())?;
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let where_ = format!("{}:{}", path.display(), n + 1);
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!(
                    "{where_}: expected user:$argon2id$... (make the hash with `postern hash-password`)"
                ));
            };
            PasswordHash::new(hash).map_err(|e| {
                format!("{where_}: the password hash of {user:?} is not a PHC string ({e}); make one with `postern hash-password`")
            })?;
            hashes.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Self {
            hashes: Arc::new(hashes),
            checks,
        })
    }

    /// The user names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hashes.keys().map(String::as_str)
    }

    /// These users and `other`'s, checked within the same slots as these.
    pub fn merged(&self, other: &Users) -> Users {
        let mut hashes = (*self.hashes).clone();
        hashes.extend(other.hashes.iter().map(|(u, h)| (u.clone(), h.clone())));
        Users {
            hashes: Arc::new(hashes),
            checks: self.checks.clone(),
        }
    }

    /// A user name of `other` that is one of these users too, if any.
    pub fn shared_name<'a>(&self, other: &'a Users) -> Option<&'a str> {
        other
            .hashes
            .keys()
            .find(|name| self.hashes.contains_key(*name))
            .map(String::as_str)
    }

    /// Whether `user` exists and `password` is theirs; waits at most `wait` for a check slot.
    /// Runs on the blocking pool.
    pub async fn verify(&self, user: &str, password: &str, wait: Duration) -> Verification {
        let Ok(Ok(_permit)) = tokio::time::timeout(wait, self.checks.acquire()).await else {
            return Verification::Busy;
        };
        if self.check(user, password).await {
            Verification::Valid
        } else {
            Verification::Invalid
        }
    }

    async fn check(&self, user: &str, password: &str) -> bool {
        password_matches(self.hashes.get(user).cloned(), password).await
    }
}

/// Whether `password` matches `hash` (a PHC string), checked on the blocking pool. Without a
/// hash (an unknown user) a dummy hash is checked all the same and the answer is no, so that
/// the time taken does not tell known users from unknown ones.
pub async fn password_matches(hash: Option<String>, password: &str) -> bool {
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$Ia0vL4Hw1BqBwH5KJeyWBJZ6eS4QeU7jyNzCdyCvXgk";
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| DUMMY.to_owned());
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    ok && known
}

/// An argon2id hash of `password` with a random salt, for the users file.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn getrandom(buf: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| format!("cannot read /dev/urandom for a salt: {e}"))
}

/// Decodes an AUTH PLAIN response (RFC 4616): authorization identity (ignored unless it equals
/// the user), user, password.
pub fn decode_plain(response: &str) -> Option<(String, String)> {
    let raw = STANDARD.decode(response.trim()).ok()?;
    let mut parts = raw.split(|&b| b == 0);
    let authzid = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
    if parts.next().is_some() || (!authzid.is_empty() && authzid != user.as_bytes()) {
        return None;
    }
    Some((user, password))
}

/// Decodes one base64 line of AUTH LOGIN.
pub fn decode_line(response: &str) -> Option<String> {
    String::from_utf8(STANDARD.decode(response.trim()).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_count_per_client_and_per_ipv6_block() {
        let store = crate::state::MemoryStore::default();
        let f = ClientFailures {
            store: &store,
            max: 2,
            window: Duration::from_secs(600),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(f.reserve(ip("192.0.2.1")).await);
        assert!(f.reserve(ip("192.0.2.1")).await);
        assert!(!f.reserve(ip("192.0.2.1")).await, "two failures used up");
        assert!(f.reserve(ip("192.0.2.2")).await, "another client");
        f.succeeded(ip("192.0.2.2")).await;
        assert!(f.reserve(ip("2001:db8:1:2::1")).await);
        assert!(f.reserve(ip("2001:db8:1:2::ffff")).await);
        assert!(!f.reserve(ip("2001:db8:1:2:aaaa::9")).await, "the same /64");
        assert!(f.reserve(ip("2001:db8:1:3::1")).await, "another /64");
        let off = ClientFailures { max: 0, ..f };
        for _ in 0..5 {
            assert!(off.reserve(ip("192.0.2.1")).await);
        }
        let short = ClientFailures {
            store: &store,
            max: 1,
            window: Duration::ZERO,
        };
        assert!(short.reserve(ip("192.0.2.9")).await);
        assert!(short.reserve(ip("192.0.2.9")).await, "the window is over");
    }

    #[tokio::test]
    async fn attempts_are_reserved_before_the_check() {
        let store = crate::state::MemoryStore::default();
        let f = ClientFailures {
            store: &store,
            max: 2,
            window: Duration::from_secs(600),
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        // Two parallel attempts take both; a third gets none until one succeeds.
        assert!(f.reserve(a).await);
        assert!(f.reserve(a).await);
        assert!(!f.reserve(a).await);
        f.succeeded(a).await;
        assert!(f.reserve(a).await);
    }

    #[test]
    fn plain_responses() {
        let r = STANDARD.encode(b"\0alice\0secret");
        assert_eq!(decode_plain(&r), Some(("alice".into(), "secret".into())));
        let r = STANDARD.encode(b"alice\0alice\0secret");
        assert_eq!(decode_plain(&r), Some(("alice".into(), "secret".into())));
        // Acting for someone else is not allowed.
        assert_eq!(decode_plain(&STANDARD.encode(b"bob\0alice\0secret")), None);
        assert_eq!(decode_plain("not base64!"), None);
    }

    #[tokio::test]
    async fn hashes_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let hash = hash_password("secret").unwrap();
        std::fs::write(&path, format!("# users\nalice:{hash}\n")).unwrap();
        let users = Users::load(&path, Arc::new(Semaphore::new(2))).unwrap();
        let wait = Duration::from_secs(5);
        assert_eq!(
            users.verify("alice", "secret", wait).await,
            Verification::Valid
        );
        assert_eq!(
            users.verify("alice", "wrong", wait).await,
            Verification::Invalid
        );
        assert_eq!(
            users.verify("bob", "secret", wait).await,
            Verification::Invalid
        );
        // Every slot busy for the whole wait.
        let _held = users.checks.clone().acquire_many_owned(2).await.unwrap();
        assert_eq!(
            users
                .verify("alice", "secret", Duration::from_millis(50))
                .await,
            Verification::Busy
        );

        std::fs::write(&path, "alice:plaintext\n").unwrap();
        let err = Users::load(&path, Arc::new(Semaphore::new(2))).unwrap_err();
        assert!(
            err.contains(":1:") && err.contains("hash-password"),
            "{err}"
        );
    }
}
