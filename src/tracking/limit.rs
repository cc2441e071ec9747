//! At most `max_records_per_client` records a minute from one client (`[tracking]`), so that
//! one client — a thousand recipients with long commands, message after message — cannot fill
//! the store or push other clients' records out of the queue. What is over the limit is left
//! out, counted, and told in one record per client and minute that says how many.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::record::{Outcome, Record};
use crate::engine::ports::ClientKey;

/// The window the limit counts in.
const WINDOW: Duration = Duration::from_secs(60);
/// Ended windows are looked for at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Clients followed at once; beyond it a new client is not limited (the map stays bounded).
const MAX_CLIENTS: usize = 100_000;

/// The reason a summary record gives.
pub const REASON: &str = "max_records_per_client";

#[derive(Debug)]
struct Window {
    started: Instant,
    count: u64,
    left_out: u64,
    /// The first record left out: the summary is made from it (its client, door, time).
    first_left_out: Option<Record>,
}

/// The per-client limit.
#[derive(Debug)]
pub(super) struct ClientLimit {
    max: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    windows: HashMap<ClientKey, Window>,
    last_sweep: Instant,
}

impl ClientLimit {
    /// A limit of `max` records a minute per client; 0: none.
    pub(super) fn new(max: u64) -> Self {
        Self {
            max,
            state: Mutex::new(State {
                windows: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Whether `record` may be kept, at `now`. Records of no client (local submission) always
    /// may. Also gives the summaries of windows that have ended.
    pub(super) fn admit(&self, record: &Record, now: Instant) -> (bool, Vec<Record>) {
        if self.max == 0 {
            return (true, Vec::new());
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let summaries = if now.duration_since(state.last_sweep) >= SWEEP_EVERY {
            state.last_sweep = now;
            sweep(&mut state.windows, now)
        } else {
            Vec::new()
        };
        let Some(key) = client_key(record) else {
            return (true, summaries);
        };
        if !state.windows.contains_key(&key) && state.windows.len() >= MAX_CLIENTS {
            return (true, summaries);
        }
        let window = state.windows.entry(key).or_insert_with(|| Window {
            started: now,
            count: 0,
            left_out: 0,
            first_left_out: None,
        });
        window.count += 1;
        if window.count <= self.max {
            return (true, summaries);
        }
        window.left_out += 1;
        if window.first_left_out.is_none() {
            window.first_left_out = Some(record.clone());
        }
        (false, summaries)
    }

    /// The summaries of every window with records left out, ended or not (at shutdown).
    pub(super) fn flush(&self) -> Vec<Record> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let far = Instant::now() + WINDOW;
        sweep(&mut state.windows, far)
    }
}

/// Removes the windows that ended by `now`; the summaries of those that left records out.
fn sweep(windows: &mut HashMap<ClientKey, Window>, now: Instant) -> Vec<Record> {
    let mut summaries = Vec::new();
    windows.retain(|_, w| {
        if now.duration_since(w.started) < WINDOW {
            return true;
        }
        if let Some(first) = w.first_left_out.take() {
            summaries.push(summary(first, w.left_out));
        }
        false
    });
    summaries
}

fn client_key(record: &Record) -> Option<ClientKey> {
    let ip: IpAddr = record.client_addr.as_deref()?.parse().ok()?;
    Some(ClientKey::of(ip))
}

/// The record that tells how many of a client's records were left out, made from the first.
fn summary(first: Record, left_out: u64) -> Record {
    Record {
        recipient: None,
        relayed_recipient: None,
        authentication: None,
        outcome: Outcome::LeftOut.name().to_owned(),
        reply: Some(format!(
            "{left_out} more records of this client within a minute were left out ([tracking] {REASON})"
        )),
        relay_target: None,
        reason: Some(REASON.to_owned()),
        rules: None,
        would: None,
        ..first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(client: &str, recipient: &str) -> Record {
        Record {
            client_addr: Some(client.into()),
            ..crate::tracking::record::sample(recipient)
        }
    }

    #[test]
    fn a_client_over_its_limit_is_summed_up_once_its_minute_ends() {
        let limit = ClientLimit::new(3);
        let t0 = Instant::now() + Duration::from_secs(5);
        let admitted: Vec<bool> = (0..10)
            .map(|i| limit.admit(&record("192.0.2.1", &format!("r{i}@x")), t0).0)
            .collect();
        assert_eq!(admitted.iter().filter(|a| **a).count(), 3);
        // Another client, and the same client's other IPv6 address in its /64, count apart.
        assert!(limit.admit(&record("192.0.2.2", "a@x"), t0).0);
        for i in 0..4 {
            limit.admit(&record(&format!("2001:db8::{i}"), "a@x"), t0);
        }
        let (ok, summaries) = limit.admit(&record("192.0.2.1", "late@x"), t0 + WINDOW);
        assert!(ok, "a new minute");
        assert_eq!(summaries.len(), 2, "{summaries:#?}");
        let one = summaries
            .iter()
            .find(|r| r.client_addr.as_deref() == Some("192.0.2.1"))
            .unwrap();
        assert_eq!(one.outcome, "left_out");
        assert!(one.reply.as_deref().unwrap().starts_with("7 more records"));
        assert_eq!(one.recipient, None);
        let v6 = summaries
            .iter()
            .find(|r| r.client_addr.as_deref() != Some("192.0.2.1"))
            .unwrap();
        assert!(v6.reply.as_deref().unwrap().starts_with("1 more records"));
        // Local records (no client) are never limited; no limit at 0.
        let mut local = record("192.0.2.9", "a@x");
        local.client_addr = None;
        assert!((0..10).all(|_| limit.admit(&local, t0).0));
        let none = ClientLimit::new(0);
        assert!((0..10).all(|_| none.admit(&record("192.0.2.1", "a@x"), t0).0));
    }

    #[test]
    fn what_is_left_out_is_told_at_shutdown() {
        let limit = ClientLimit::new(1);
        let now = Instant::now();
        limit.admit(&record("192.0.2.1", "a@x"), now);
        limit.admit(&record("192.0.2.1", "b@x"), now);
        let summaries = limit.flush();
        assert_eq!(summaries.len(), 1);
        assert!(limit.flush().is_empty());
    }
}
