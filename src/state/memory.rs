//! The in-process store: bounded maps behind a mutex. Each map forgets what has run out
//! first, then its weakest half, so that a flood of new client addresses cannot grow it
//! without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::engine::ports::{ClientKey, Counter, Digest, Store, StoreError};

/// Entries each map keeps at most (by default; see [`MemoryStore::with_capacity`]).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// State kept in this process.
#[derive(Debug)]
pub struct MemoryStore {
    capacity: usize,
    hits: Mutex<HashMap<(Counter, ClientKey), VecDeque<Instant>>>,
    windows: Mutex<HashMap<(Counter, ClientKey), (u64, Instant)>>,
    scores: Mutex<HashMap<ClientKey, (f64, Instant)>>,
    /// What was handed on, and until when it is remembered.
    handed: Mutex<HashMap<Digest, Instant>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

fn decayed(score: f64, since: Instant, half_life: Duration, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(since).as_secs_f64();
    score * 0.5f64.powf(elapsed / half_life.as_secs_f64().max(1.0))
}

/// Makes room in `map` for one more key: first drops what `expired` says has run out, then,
/// if still full, the half that `weight` ranks lowest.
fn make_room<K: Copy + Eq + std::hash::Hash, V, W: PartialOrd>(
    map: &mut HashMap<K, V>,
    capacity: usize,
    expired: impl Fn(&V) -> bool,
    weight: impl Fn(&V) -> W,
) {
    map.retain(|_, v| !expired(v));
    if map.len() >= capacity {
        let mut ranked: Vec<(K, W)> = map.iter().map(|(k, v)| (*k, weight(v))).collect();
        ranked.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
        for (k, _) in ranked.into_iter().take(capacity / 2) {
            map.remove(&k);
        }
    }
}

impl MemoryStore {
    /// A store whose maps each keep at most `capacity` clients.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(2),
            hits: Mutex::default(),
            windows: Mutex::default(),
            scores: Mutex::default(),
            handed: Mutex::default(),
        }
    }

    fn remember_at(&self, handed: &Digest, ttl: Duration, now: Instant) {
        let mut map = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity && !map.contains_key(handed) {
            // Forget what has run out, then what runs out soonest.
            make_room(
                &mut map,
                self.capacity,
                |until| *until <= now,
                |until| *until,
            );
        }
        map.insert(*handed, now + ttl);
    }

    fn was_handed_at(&self, handed: &Digest, now: Instant) -> bool {
        let map = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        map.get(handed).is_some_and(|until| *until > now)
    }

    fn hit_at(
        &self,
        counter: Counter,
        client: ClientKey,
        window: Duration,
        keep: u32,
        now: Instant,
    ) -> u32 {
        let mut hits = self.hits.lock().unwrap_or_else(|e| e.into_inner());
        let key = (counter, client);
        if hits.len() >= self.capacity && !hits.contains_key(&key) {
            make_room(
                &mut hits,
                self.capacity,
                |h| h.back().is_none_or(|t| now.duration_since(*t) >= window),
                |h| h.back().copied(),
            );
        }
        let recent = hits.entry(key).or_default();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            recent.pop_front();
        }
        recent.push_back(now);
        while recent.len() > keep.max(1) as usize {
            recent.pop_front();
        }
        recent.len() as u32
    }

    fn add_at(
        &self,
        counter: Counter,
        client: ClientKey,
        delta: i64,
        window: Duration,
        now: Instant,
    ) -> u64 {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let key = (counter, client);
        if windows.len() >= self.capacity && !windows.contains_key(&key) {
            make_room(
                &mut windows,
                self.capacity,
                |(_, since)| now.duration_since(*since) >= window,
                |(_, since)| *since,
            );
        }
        let entry = windows.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) >= window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add_signed(delta);
        entry.0
    }

    fn score_at(&self, client: ClientKey, half_life: Duration, now: Instant) -> f64 {
        let scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        scores
            .get(&client)
            .map_or(0.0, |(s, t)| decayed(*s, *t, half_life, now))
    }

    fn record_at(&self, client: ClientKey, delta: f64, half_life: Duration, now: Instant) {
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        if scores.len() >= self.capacity && !scores.contains_key(&client) {
            // Forget what has (nearly) decayed away, then the weakest half.
            make_room(
                &mut scores,
                self.capacity,
                |(s, t)| decayed(*s, *t, half_life, now).abs() < 0.5,
                |(s, t)| decayed(*s, *t, half_life, now).abs(),
            );
        }
        let entry = scores.entry(client).or_insert((0.0, now));
        *entry = (decayed(entry.0, entry.1, half_life, now) + delta, now);
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn hit(
        &self,
        counter: Counter,
        client: ClientKey,
        window: Duration,
        keep: u32,
    ) -> Result<u32, StoreError> {
        Ok(self.hit_at(counter, client, window, keep, Instant::now()))
    }

    async fn add(
        &self,
        counter: Counter,
        client: ClientKey,
        delta: i64,
        window: Duration,
    ) -> Result<u64, StoreError> {
        Ok(self.add_at(counter, client, delta, window, Instant::now()))
    }

    async fn reputation(&self, client: ClientKey, half_life: Duration) -> Result<f64, StoreError> {
        Ok(self.score_at(client, half_life, Instant::now()))
    }

    async fn add_reputation(
        &self,
        client: ClientKey,
        delta: f64,
        half_life: Duration,
    ) -> Result<(), StoreError> {
        self.record_at(client, delta, half_life, Instant::now());
        Ok(())
    }

    async fn remember_handed(&self, handed: &Digest, ttl: Duration) -> Result<(), StoreError> {
        self.remember_at(handed, ttl, Instant::now());
        Ok(())
    }

    async fn was_handed(&self, handed: &Digest) -> Result<bool, StoreError> {
        Ok(self.was_handed_at(handed, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const MINUTE: Duration = Duration::from_secs(60);

    fn ip(s: &str) -> ClientKey {
        ClientKey::of(s.parse().unwrap())
    }

    #[test]
    fn handed_messages_are_remembered_for_their_time_and_within_capacity() {
        let store = MemoryStore::with_capacity(4);
        let t0 = Instant::now();
        let digest = |n: u8| [n; 32];
        store.remember_at(&digest(1), HOUR, t0);
        assert!(store.was_handed_at(&digest(1), t0 + MINUTE));
        assert!(!store.was_handed_at(&digest(1), t0 + HOUR));
        assert!(!store.was_handed_at(&digest(2), t0));
        // Full: what runs out soonest goes first, the newest stays.
        for n in 2..=6 {
            store.remember_at(&digest(n), HOUR * u32::from(n), t0);
        }
        assert!(store.handed.lock().unwrap().len() <= 4);
        assert!(store.was_handed_at(&digest(6), t0));
        assert!(!store.was_handed_at(&digest(1), t0));
    }

    #[test]
    fn reputation_adds_up_and_decays_by_half_life() {
        let store = MemoryStore::default();
        let t0 = Instant::now();
        store.record_at(ip("192.0.2.1"), -20.0, HOUR, t0);
        store.record_at(ip("192.0.2.1"), -20.0, HOUR, t0);
        assert_eq!(store.score_at(ip("192.0.2.1"), HOUR, t0), -40.0);
        let later = store.score_at(ip("192.0.2.1"), HOUR, t0 + HOUR);
        assert!((later + 20.0).abs() < 0.01, "{later}");
        assert_eq!(store.score_at(ip("192.0.2.2"), HOUR, t0), 0.0);
    }

    #[test]
    fn hits_count_within_the_window_only() {
        let store = MemoryStore::default();
        let t0 = Instant::now();
        let c = ip("192.0.2.1");
        assert_eq!(store.hit_at(Counter::Connections, c, MINUTE, 10, t0), 1);
        assert_eq!(store.hit_at(Counter::Connections, c, MINUTE, 10, t0), 2);
        assert_eq!(
            store.hit_at(Counter::Connections, c, MINUTE, 10, t0 + MINUTE),
            1,
            "the earlier two fell out of the window"
        );
        assert_eq!(
            store.hit_at(Counter::AuthFailures, c, MINUTE, 10, t0),
            1,
            "counters are apart"
        );
    }

    #[test]
    fn a_window_counter_starts_again_when_its_window_ends() {
        let store = MemoryStore::default();
        let t0 = Instant::now();
        let c = ip("192.0.2.1");
        assert_eq!(store.add_at(Counter::AuthFailures, c, 1, MINUTE, t0), 1);
        assert_eq!(store.add_at(Counter::AuthFailures, c, 1, MINUTE, t0), 2);
        assert_eq!(store.add_at(Counter::AuthFailures, c, -1, MINUTE, t0), 1);
        assert_eq!(
            store.add_at(Counter::AuthFailures, c, -5, MINUTE, t0),
            0,
            "never below 0"
        );
        assert_eq!(store.add_at(Counter::AuthFailures, c, 1, MINUTE, t0), 1);
        assert_eq!(
            store.add_at(Counter::AuthFailures, c, 0, MINUTE, t0 + MINUTE),
            0
        );
    }

    #[test]
    fn maps_stay_within_their_capacity() {
        let store = MemoryStore::with_capacity(10);
        let t0 = Instant::now();
        for i in 0..100u8 {
            let c = ip(&format!("192.0.2.{i}"));
            store.hit_at(Counter::Connections, c, MINUTE, 10, t0);
            store.add_at(Counter::AuthFailures, c, 1, MINUTE, t0);
            store.record_at(c, -10.0, HOUR, t0);
        }
        assert!(store.hits.lock().unwrap().len() <= 10);
        assert!(store.windows.lock().unwrap().len() <= 10);
        assert!(store.scores.lock().unwrap().len() <= 10);
    }
}
