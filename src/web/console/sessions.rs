//! Logged-in sessions of the console, in this process's memory: a random token in an
//! HttpOnly, SameSite=Strict cookie (Secure over TLS) names each, with the user, the CSRF
//! token every form of the session carries, and when it ends. Bounded: the oldest session
//! makes room for a new one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use super::users::Role;

/// The cookie that names a session.
pub const COOKIE: &str = "postern_session";
/// The cookie that carries the login form's CSRF token before there is a session.
pub const LOGIN_COOKIE: &str = "postern_login";
/// Sessions kept at once.
const MAX_SESSIONS: usize = 1024;

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub organization: Option<String>,
    /// The token every POST of this session must carry.
    pub csrf: String,
    expires: Instant,
}

/// The sessions, with how long one lasts without a request.
#[derive(Debug)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    idle: Duration,
}

/// 32 random bytes in hex.
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is `expected`, in constant time.
pub fn same_token(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Self {
            live: Mutex::new(HashMap::new()),
            idle,
        }
    }

    /// A new session for `user`; its token.
    pub fn open(&self, user: &str, role: Role, organization: Option<String>) -> String {
        let id = token();
        let session = Session {
            user: user.to_owned(),
            role,
            organization,
            csrf: token(),
            expires: Instant::now() + self.idle,
        };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        live.retain(|_, s| s.expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), session);
        id
    }

    /// The session `id` names, when it is live; its end moves on.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match live.get_mut(id) {
            Some(s) if s.expires > now => {
                s.expires = now + self.idle;
                Some(s.clone())
            }
            Some(_) => {
                live.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value for `name`: HttpOnly, SameSite=Strict, Path=/, Secure over TLS;
/// `max_age` 0 removes it.
pub fn set_cookie(name: &str, value: &str, tls: bool, max_age: Option<u64>) -> String {
    let mut out = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if tls {
        out.push_str("; Secure");
    }
    if let Some(age) = max_age {
        out.push_str(&format!("; Max-Age={age}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_expire_and_close() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let id = sessions.open("ann", Role::Viewer, None);
        assert_eq!(id.len(), 64);
        let s = sessions.get(&id).unwrap();
        assert_eq!(s.user, "ann");
        assert!(same_token(&s.csrf, &s.csrf.clone()));
        assert!(!same_token("x", &s.csrf));
        assert!(sessions.get("nope").is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(sessions.get(&id).is_none(), "idle too long");
        let id = sessions.open("ann", Role::Viewer, None);
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn cookies_are_read_and_written() {
        assert_eq!(cookie("a=1; postern_session=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie("postern_sessionx=1", COOKIE), None);
        let c = set_cookie(COOKIE, "v", true, None);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie(COOKIE, "v", false, Some(0)).contains("Secure"));
    }
}
