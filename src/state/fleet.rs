//! One configuration for a fleet, through the Redis of `[shared_state]`: `postern apply`
//! (or an admin in the console) publishes a checked configuration; every instance polls for
//! it, checks it itself, applies it as a reload does and reports, with its name, version,
//! uptime and the digest of what it runs, whether it took it or why not. An instance that
//! cannot reach Redis keeps what it runs.
//!
//! Keys (after `key_prefix`): `fleet:config`, a hash of the published configuration (`text`,
//! `digest`, `at`, `by`); `fleet:peers`, a hash of each instance's report (JSON) by name.

use std::time::Duration;

use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use super::SharedStateSettings;
use super::redis::{client, redacted};

/// How often an instance looks for a new configuration and reports.
pub const POLL: Duration = Duration::from_secs(5);
/// A report older than this: the instance is silent (stopped, or cut off from Redis).
pub const SILENT_AFTER_MS: i64 = 30_000;
/// A report older than this is removed from the list.
const FORGET_AFTER_MS: i64 = 7 * 86_400_000;
/// How long one Redis call of the fleet may take (they are off the mail's path).
const TIMEOUT: Duration = Duration::from_secs(3);

/// What an instance reports of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    /// `milter` or `proxy`.
    pub door: String,
    pub version: String,
    /// When it started and when it last reported (milliseconds since the epoch).
    pub started_ms: i64,
    pub seen_ms: i64,
    /// The digest of the configuration it runs.
    pub digest: String,
    /// What it did with the published configuration: `applied DIGEST`, `refused DIGEST: why`,
    /// or nothing yet.
    pub fleet: Option<String>,
}

/// The configuration published to the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub text: String,
    pub digest: String,
    pub at_ms: i64,
    /// Who published it (`postern apply` on which host, or a console user).
    pub by: String,
}

/// The fleet's keys in its Redis.
#[derive(Clone)]
pub struct Fleet {
    manager: ConnectionManager,
    url: String,
    config_key: String,
    peers_key: String,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("url", &self.url).finish()
    }
}

impl Fleet {
    /// The fleet of `settings`' Redis; connects on first use and reconnects by itself. It
    /// must be built inside the runtime.
    pub fn new(settings: &SharedStateSettings) -> Result<Self, super::SharedStateError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_lazy_with_config(client(settings)?, config)
            .map_err(super::SharedStateError::Setup)?;
        Ok(Self {
            manager,
            url: redacted(&settings.redis_url),
            config_key: format!("{}fleet:config", settings.key_prefix),
            peers_key: format!("{}fleet:peers", settings.key_prefix),
        })
    }

    /// What a failed call says.
    fn failed(&self, doing: &str, e: impl std::fmt::Display) -> String {
        format!("Redis at {} could not {doing}: {e}", self.url)
    }

    async fn within<T>(
        &self,
        doing: &str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(TIMEOUT, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(doing, e)),
            Err(_) => Err(self.failed(doing, format!("no answer within {} s", TIMEOUT.as_secs()))),
        }
    }

    /// Publishes `text` (already checked) with its `digest`, by `by`.
    pub async fn publish(&self, text: &str, digest: &str, by: &str) -> Result<(), String> {
        let mut conn = self.manager.clone();
        let at = crate::tracking::now_ms().to_string();
        let fields = [("text", text), ("digest", digest), ("at", &at), ("by", by)];
        self.within(
            "store the configuration",
            conn.hset_multiple::<_, _, _, ()>(&self.config_key, &fields),
        )
        .await
    }

    /// The digest of the published configuration, if any.
    pub async fn published_digest(&self) -> Result<Option<String>, String> {
        let mut conn = self.manager.clone();
        self.within(
            "give the published configuration",
            conn.hget(&self.config_key, "digest"),
        )
        .await
    }

    /// The published configuration, if any.
    pub async fn published(&self) -> Result<Option<Published>, String> {
        let mut conn = self.manager.clone();
        let fields: std::collections::HashMap<String, String> = self
            .within(
                "give the published configuration",
                conn.hgetall(&self.config_key),
            )
            .await?;
        let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
        if !fields.contains_key("text") {
            return Ok(None);
        }
        Ok(Some(Published {
            text: field("text"),
            digest: field("digest"),
            at_ms: field("at").parse().unwrap_or(0),
            by: field("by"),
        }))
    }

    /// Stores this instance's report.
    pub async fn report(&self, peer: &Peer) -> Result<(), String> {
        let mut conn = self.manager.clone();
        let json = serde_json::to_string(peer).map_err(|e| e.to_string())?;
        self.within(
            "store this instance's state",
            conn.hset::<_, _, _, ()>(&self.peers_key, &peer.name, json),
        )
        .await
    }

    /// Every instance's last report, by name; reports older than a week are removed.
    pub async fn peers(&self) -> Result<Vec<Peer>, String> {
        let mut conn = self.manager.clone();
        let all: std::collections::HashMap<String, String> = self
            .within("list the fleet", conn.hgetall(&self.peers_key))
            .await?;
        let now = crate::tracking::now_ms();
        let mut peers = Vec::new();
        let mut forgotten = Vec::new();
        for (name, json) in all {
            match serde_json::from_str::<Peer>(&json) {
                Ok(peer) if now - peer.seen_ms < FORGET_AFTER_MS => peers.push(peer),
                _ => forgotten.push(name),
            }
        }
        if !forgotten.is_empty() {
            let _ = self
                .within(
                    "forget old reports",
                    conn.hdel::<_, _, ()>(&self.peers_key, forgotten),
                )
                .await;
        }
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(peers)
    }
}
