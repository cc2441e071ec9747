//! The store a fleet of gateways shares: Redis (`[shared_state] redis_url`). Every counter is
//! changed by a script run on the server, atomically and by the server's clock, so that
//! instances with clocks apart still count the same window.
//!
//! Redis down or slow never holds mail up: every call has `timeout_ms`, and a call that fails
//! is answered from this instance's own state, which mirrors every change it makes (so that a
//! fallback still knows what this instance saw). After a failure Redis is left alone for
//! [`RETRY_AFTER`] while the connection manager reconnects in the background; each fallback
//! is reported as [`Event::StoreUnavailable`] (the log says so once a minute, the metrics count
//! each one), and the first answer after an outage as [`Event::StoreBack`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use super::{MemoryStore, SharedStateSettings};
use crate::engine::Event;
use crate::engine::ports::{ClientKey, Counter, Digest, Events, Store, StoreError};

/// How long Redis is left alone after a call failed: decisions are local meanwhile.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long one attempt to connect (and to log in) may take. Calls do not wait for it longer
/// than their own timeout: they fall back while the connection is made in the background.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sliding window of events per key, in a sorted set scored by the server's time in
/// microseconds. KEYS[1] the set; ARGV: window (µs), events to keep, a unique member name.
const HIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
local keep = tonumber(ARGV[2])
if n > keep then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - keep - 1)
  n = keep
end
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return n
";

/// A count in a window that starts at its first addition and expires with it. KEYS[1] the
/// count; ARGV: delta, window (ms). Never below 0; a delta of 0 only reads.
const ADD: &str = r"
local delta = tonumber(ARGV[1])
if delta == 0 then
  return tonumber(redis.call('GET', KEYS[1]) or '0')
end
local n = redis.call('INCRBY', KEYS[1], delta)
if n < 0 then
  redis.call('SET', KEYS[1], 0, 'KEEPTTL')
  n = 0
end
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return n
";

/// Learned reputation: a score and the server time it was last changed, decayed by the half
/// life when read. KEYS[1] the hash; ARGV: delta (0 reads), half life (s). Returns the score
/// as a string (Redis would cut a number to an integer).
const REPUTATION: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local half_life = math.max(tonumber(ARGV[2]), 1)
local v = redis.call('HMGET', KEYS[1], 's', 't')
local score = 0
if v[1] then
  score = tonumber(v[1]) * 0.5 ^ (math.max(now - tonumber(v[2]), 0) / half_life)
end
local delta = tonumber(ARGV[1])
if delta ~= 0 then
  score = score + delta
  redis.call('HSET', KEYS[1], 's', tostring(score), 't', tostring(now))
  -- Kept until it has decayed below 0.5 (at most 64 half lives).
  local lives = math.min(math.max(math.log(math.abs(score) / 0.5) / math.log(2), 1), 64)
  redis.call('EXPIRE', KEYS[1], math.ceil(lives * half_life))
end
return tostring(score)
";

/// What was handed on: KEYS[1] the key; ARGV: how long it is remembered (ms), 0 to ask
/// whether it is. Returns 1 when remembered.
const HANDED: &str = r"
local ttl = tonumber(ARGV[1])
if ttl == 0 then
  return redis.call('EXISTS', KEYS[1])
end
redis.call('SET', KEYS[1], '1', 'PX', ttl)
return 1
";

/// State in Redis, shared by every instance with the same URL and key prefix.
pub struct RedisStore {
    manager: ConnectionManager,
    /// The URL without its password, for messages.
    url: String,
    prefix: String,
    timeout: Duration,
    local: MemoryStore,
    /// Members of the sliding windows are unique per instance and event.
    instance: String,
    sequence: AtomicU64,
    scripts: [Script; 4],
    /// Set while Redis is left alone after a failure: until when, and since when it failed.
    outage: Mutex<Outage>,
    events: Arc<dyn Events>,
}

#[derive(Debug, Default)]
struct Outage {
    since: Option<Instant>,
    retry_at: Option<Instant>,
    fallbacks: u64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// `url` with every password in it replaced by `***`: the user information's, and the
/// `pass` (or `password`) query parameter of `redis+unix://` URLs. A URL that cannot be parsed
/// is shown only up to its scheme.
pub fn redacted(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://(not a valid URL, not shown)"),
            None => "(not a valid URL, not shown)".to_owned(),
        };
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let secret = k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password");
                (
                    k.into_owned(),
                    if secret {
                        "***".to_owned()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// Why the shared state's Redis cannot be used or did not answer; the URL always without
/// its password.
#[derive(Debug, thiserror::Error)]
pub enum SharedStateError {
    #[error(
        "[shared_state] redis_url {url:?} is not usable: {source} (write redis://host:port/db, rediss://host:port/db or redis+unix:///path/to/redis.sock)"
    )]
    Url {
        url: String,
        source: redis::RedisError,
    },
    #[error("[shared_state] cannot set up the Redis connection: {0}")]
    Setup(redis::RedisError),
    #[error("Redis at {url} did not answer PING: {source}")]
    NoAnswer {
        url: String,
        source: redis::RedisError,
    },
    #[error("Redis at {url} did not answer PING within {ms} ms")]
    Timeout { url: String, ms: u128 },
}

pub(super) fn client(settings: &SharedStateSettings) -> Result<redis::Client, SharedStateError> {
    let unusable = |source| SharedStateError::Url {
        url: redacted(&settings.redis_url),
        source,
    };
    let mut info = settings
        .redis_url
        .as_str()
        .into_connection_info()
        .map_err(unusable)?;
    if let Some(password) = &settings.password {
        let redis = info.redis_settings().clone().set_password(&password.0);
        info = info.set_redis_settings(redis);
    }
    redis::Client::open(info).map_err(unusable)
}

/// Checks that the URL can be parsed (without connecting): for check-config.
pub fn check_url(settings: &SharedStateSettings) -> Result<(), SharedStateError> {
    client(settings).map(|_| ())
}

/// Connects to Redis and asks PING, within `timeout`: for `check-config --connect`.
pub async fn ping(
    settings: &SharedStateSettings,
    timeout: Duration,
) -> Result<(), SharedStateError> {
    let client = client(settings)?;
    let url = redacted(&settings.redis_url);
    let answer = tokio::time::timeout(timeout, async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await;
    match answer {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(SharedStateError::NoAnswer { url, source }),
        Err(_) => Err(SharedStateError::Timeout {
            url,
            ms: timeout.as_millis(),
        }),
    }
}

impl RedisStore {
    /// A store over the Redis at `settings.redis_url`, with `local` as its fallback. It
    /// connects on first use and reconnects by itself; it must be built inside the runtime.
    pub fn new(
        settings: &SharedStateSettings,
        local: MemoryStore,
        events: Arc<dyn Events>,
    ) -> Result<Self, SharedStateError> {
        let client = client(settings)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(RETRY_AFTER);
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(SharedStateError::Setup)?;
        Ok(Self {
            manager,
            url: redacted(&settings.redis_url),
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            local,
            instance: format!("{}.{}", std::process::id(), unique_start()),
            sequence: AtomicU64::new(0),
            scripts: [
                Script::new(HIT),
                Script::new(ADD),
                Script::new(REPUTATION),
                Script::new(HANDED),
            ],
            outage: Mutex::default(),
            events,
        })
    }

    fn key(&self, kind: &str, client: ClientKey) -> String {
        format!("{}{kind}:{client}", self.prefix)
    }

    /// Runs `invocation` against Redis within the timeout, unless Redis is being left alone.
    /// `None` when the answer must come from the local state; `what` names the decision.
    async fn ask<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        {
            let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
            if outage.retry_at.is_some_and(|at| Instant::now() < at) {
                outage.fallbacks += 1;
                drop(outage);
                self.report(
                    what,
                    "left alone after a failure; reconnecting in the background",
                );
                return None;
            }
        }
        let mut conn = self.manager.clone();
        let answer = tokio::time::timeout(self.timeout, invocation.invoke_async::<T>(&mut conn))
            .await
            .map_err(|_| {
                format!(
                    "no answer from Redis at {} within {} ms",
                    self.url,
                    self.timeout.as_millis()
                )
            })
            .and_then(|r| r.map_err(|e: RedisError| format!("Redis at {}: {e}", self.url)));
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Ok(value) => {
                if let Some(since) = outage.since.take() {
                    let fallbacks = std::mem::take(&mut outage.fallbacks);
                    outage.retry_at = None;
                    drop(outage);
                    self.events.emit(&Event::StoreBack {
                        store: &self.url,
                        after: since.elapsed(),
                        fallbacks,
                    });
                }
                Some(value)
            }
            Err(error) => {
                let now = Instant::now();
                outage.since.get_or_insert(now);
                outage.retry_at = Some(now + RETRY_AFTER);
                outage.fallbacks += 1;
                drop(outage);
                self.report(what, &error);
                None
            }
        }
    }

    fn report(&self, what: &'static str, error: &str) {
        self.events.emit(&Event::StoreUnavailable {
            session: None,
            what,
            error,
        });
    }
}

/// A number that tells this start of the process from an earlier one with the same pid.
fn unique_start() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[async_trait]
impl Store for RedisStore {
    async fn hit(
        &self,
        counter: Counter,
        client: ClientKey,
        window: Duration,
        keep: u32,
    ) -> Result<u32, StoreError> {
        let local = self.local.hit(counter, client, window, keep).await?;
        let member = format!(
            "{}.{}",
            self.instance,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let mut invocation = self.scripts[0].prepare_invoke();
        invocation
            .key(self.key(counter_name(counter), client))
            .arg(window.as_micros().max(1) as u64)
            .arg(keep.max(1))
            .arg(member);
        Ok(self
            .ask(counter_what(counter), invocation)
            .await
            .unwrap_or(local))
    }

    async fn add(
        &self,
        counter: Counter,
        client: ClientKey,
        delta: i64,
        window: Duration,
    ) -> Result<u64, StoreError> {
        let local = self.local.add(counter, client, delta, window).await?;
        let mut invocation = self.scripts[1].prepare_invoke();
        invocation
            .key(self.key(counter_name(counter), client))
            .arg(delta)
            .arg(window.as_millis().max(1) as u64);
        Ok(self
            .ask(counter_what(counter), invocation)
            .await
            .unwrap_or(local))
    }

    async fn reputation(&self, client: ClientKey, half_life: Duration) -> Result<f64, StoreError> {
        let local = self.local.reputation(client, half_life).await?;
        Ok(self
            .reputation_script(client, 0.0, half_life, "learned reputation (read locally)")
            .await
            .unwrap_or(local))
    }

    async fn add_reputation(
        &self,
        client: ClientKey,
        delta: f64,
        half_life: Duration,
    ) -> Result<(), StoreError> {
        self.local.add_reputation(client, delta, half_life).await?;
        self.reputation_script(
            client,
            delta,
            half_life,
            "learned reputation (kept locally)",
        )
        .await;
        Ok(())
    }

    async fn remember_handed(&self, handed: &Digest, ttl: Duration) -> Result<(), StoreError> {
        self.local.remember_handed(handed, ttl).await?;
        let ttl = ttl.max(Duration::from_millis(1));
        self.handed_script(handed, ttl, "message handed on (remembered locally)")
            .await;
        Ok(())
    }

    async fn was_handed(&self, handed: &Digest) -> Result<bool, StoreError> {
        let local = self.local.was_handed(handed).await?;
        let shared = self
            .handed_script(handed, Duration::ZERO, "message handed on (asked locally)")
            .await;
        Ok(local || shared.unwrap_or(false))
    }
}

impl RedisStore {
    /// [`HANDED`] for `handed`: remembers it for `ttl`, or (zero) asks whether it is.
    async fn handed_script(
        &self,
        handed: &Digest,
        ttl: Duration,
        what: &'static str,
    ) -> Option<bool> {
        let hex: String = handed.iter().map(|b| format!("{b:02x}")).collect();
        let mut invocation = self.scripts[3].prepare_invoke();
        invocation
            .key(format!("{}handed:{hex}", self.prefix))
            .arg(ttl.as_millis() as u64);
        let answer: i64 = self.ask(what, invocation).await?;
        Some(answer == 1)
    }

    async fn reputation_script(
        &self,
        client: ClientKey,
        delta: f64,
        half_life: Duration,
        what: &'static str,
    ) -> Option<f64> {
        let mut invocation = self.scripts[2].prepare_invoke();
        invocation
            .key(self.key("reputation", client))
            .arg(delta.to_string())
            .arg(half_life.as_secs_f64().to_string());
        let score: String = self.ask(what, invocation).await?;
        score.parse().ok()
    }
}

/// What a fallback of `counter` means, for the log.
fn counter_what(counter: Counter) -> &'static str {
    match counter {
        Counter::Connections => "connection rate (counted by this instance alone)",
        Counter::AuthFailures => "AUTH failures (counted by this instance alone)",
        Counter::ConsoleLoginFailures => "console login failures (counted by this instance alone)",
    }
}

fn counter_name(counter: Counter) -> &'static str {
    match counter {
        Counter::Connections => "connections",
        Counter::AuthFailures => "auth-failures",
        Counter::ConsoleLoginFailures => "console-login-failures",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_messages() {
        assert_eq!(
            redacted("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("redis+unix:///run/redis.sock"),
            "redis+unix:///run/redis.sock"
        );
        assert_eq!(
            redacted("redis+unix:///run/redis.sock?db=2&pass=SECRET&user=fleet"),
            "redis+unix:///run/redis.sock?db=2&pass=***&user=fleet"
        );
        assert_eq!(
            redacted("redis://u:p%40ss@h:1/0?PASSWORD=x"),
            "redis://u:***@h:1/0?PASSWORD=***"
        );
        let bad = redacted("redis://u:SECRET@[::1");
        assert!(!bad.contains("SECRET"), "{bad}");
        // A password from password_file is not in any message either.
        let settings = SharedStateSettings {
            redis_url: "redis+unix:///run/redis.sock".into(),
            password: Some(super::super::Password("SECRET".into())),
            ..SharedStateSettings::default()
        };
        assert!(!format!("{settings:?}").contains("SECRET"));
        assert!(client(&settings).is_ok());
    }

    #[test]
    fn a_bad_url_says_how_to_write_one() {
        let settings = SharedStateSettings {
            redis_url: "http://127.0.0.1/".into(),
            ..SharedStateSettings::default()
        };
        let e = check_url(&settings).unwrap_err().to_string();
        assert!(e.contains("redis+unix:///"), "{e}");
    }
}
