//! Inbound SMTP AUTH (seed 004): PLAIN and LOGIN against a users file of argon2 password
//! hashes. The file holds `user:$argon2id$...` lines (`#` starts a comment); make a hash with
//! `postern hash-password`. Passwords are checked on the blocking pool (argon2 is slow on
//! purpose) and never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::sync::Semaphore;

use crate::engine::checks::dos::client_key;

/// At most this many client addresses are remembered; beyond it, expired ones go first, then
/// any.
const MAX_CLIENTS: usize = 65_536;

/// Authentication failures per client across its connections, so that a guesser gains nothing
/// by reconnecting: after `max` failures within `window` (counted from the first), AUTH from
/// that client is refused until the window ends. IPv6 clients count per /64, the block one
/// host usually holds.
#[derive(Debug)]
pub struct ClientFailures {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl ClientFailures {
    /// `max` 0 turns the limit off.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether this client has used up its failures for now.
    pub fn exhausted(&self, ip: IpAddr) -> bool {
        let Ok(seen) = self.seen.lock() else {
            return false;
        };
        self.max > 0
            && seen
                .get(&client_key(ip))
                .is_some_and(|(n, since)| *n >= self.max && since.elapsed() < self.window)
    }

    /// Takes one attempt before the password is checked, counted as a failure until
    /// [`ClientFailures::succeeded`] gives it back: parallel connections of one client get no
    /// more guesses than one. False when the client has none left.
    pub fn reserve(&self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        let entry = self.entry(&mut seen, ip);
        if entry.0 >= self.max {
            return false;
        }
        entry.0 += 1;
        true
    }

    /// The reserved attempt succeeded: it is not a failure.
    pub fn succeeded(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        if let Ok(mut seen) = self.seen.lock()
            && let Some(entry) = seen.get_mut(&client_key(ip))
        {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    /// The client's count, started again when its window is over; room is made for it.
    fn entry<'a>(
        &self,
        seen: &'a mut HashMap<IpAddr, (u32, Instant)>,
        ip: IpAddr,
    ) -> &'a mut (u32, Instant) {
        if seen.len() >= MAX_CLIENTS {
            seen.retain(|_, (_, since)| since.elapsed() < self.window);
            if seen.len() >= MAX_CLIENTS
                && let Some(any) = seen.keys().next().copied()
            {
                seen.remove(&any);
            }
        }
        let entry = seen.entry(client_key(ip)).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry
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
    /// Reads a users file; at most `concurrent_checks` passwords are checked at once. Errors
    /// name the file and line.
    pub fn load(path: &Path, concurrent_checks: usize) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the users file: {e}", path.display()))?;
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
            checks: Arc::new(Semaphore::new(concurrent_checks.max(1))),
        })
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
        // An unknown user costs as much as a known one, so that timing does not tell them apart.
        const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$Ia0vL4Hw1BqBwH5KJeyWBJZ6eS4QeU7jyNzCdyCvXgk";
        let hash = self
            .hashes
            .get(user)
            .cloned()
            .unwrap_or_else(|| DUMMY.to_owned());
        let known = self.hashes.contains_key(user);
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

    #[test]
    fn failures_count_per_client_and_per_ipv6_block() {
        let f = ClientFailures::new(2, Duration::from_secs(600));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        f.reserve(a);
        assert!(!f.exhausted(a));
        f.reserve(a);
        assert!(f.exhausted(a));
        assert!(!f.exhausted("192.0.2.2".parse().unwrap()));
        f.reserve("2001:db8:1:2::1".parse().unwrap());
        f.reserve("2001:db8:1:2::ffff".parse().unwrap());
        assert!(f.exhausted("2001:db8:1:2:aaaa::9".parse().unwrap()));
        assert!(!f.exhausted("2001:db8:1:3::1".parse().unwrap()));
        let off = ClientFailures::new(0, Duration::from_secs(600));
        off.reserve(a);
        assert!(!off.exhausted(a));
        let short = ClientFailures::new(1, Duration::ZERO);
        short.reserve(a);
        assert!(!short.exhausted(a), "the window is over");
    }

    #[test]
    fn attempts_are_reserved_before_the_check() {
        let f = ClientFailures::new(2, Duration::from_secs(600));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        // Two parallel attempts take both; a third gets none until one succeeds.
        assert!(f.reserve(a));
        assert!(f.reserve(a));
        assert!(!f.reserve(a));
        assert!(f.exhausted(a));
        f.succeeded(a);
        assert!(f.reserve(a));
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
        let users = Users::load(&path, 2).unwrap();
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
        let err = Users::load(&path, 2).unwrap_err();
        assert!(
            err.contains(":1:") && err.contains("hash-password"),
            "{err}"
        );
    }
}
