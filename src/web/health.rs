//! `/healthz` (the process answers) and `/readyz` (it can do its work: its listeners are
//! bound, a relay target answers, Redis and the tracking database answer). What each part
//! said is kept for a few seconds, so that a prober polling often (or the console's status
//! page under load) does not open a connection to every target per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::relay::SharedDelivery;
use crate::state::SharedStateSettings;
use crate::tracking::StoreSettings;

/// How long a report is served before the parts are asked again.
const FRESH: Duration = Duration::from_secs(5);
/// How long Redis and the tracking database have to answer.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one part said: how it is, or why it is not usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    pub state: Result<String, String>,
}

/// The state of every part, at `at`.
#[derive(Clone, Debug)]
pub struct Report {
    pub at: std::time::SystemTime,
    /// The door's listeners are bound and it serves.
    pub serving: bool,
    /// Each relay target, and whether it carries ordinary mail (not `divert_only`).
    pub targets: Vec<(Probe, bool)>,
    pub redis: Option<Probe>,
    pub tracking: Option<Probe>,
}

impl Report {
    /// Ready: serving, a target that relays ordinary mail answers (when there are targets),
    /// and every store answers.
    pub fn ready(&self) -> bool {
        let relays: Vec<_> = self
            .targets
            .iter()
            .filter(|(_, ordinary)| *ordinary)
            .collect();
        self.serving
            && (relays.is_empty() || relays.iter().any(|(p, _)| p.state.is_ok()))
            && self
                .redis
                .iter()
                .chain(&self.tracking)
                .all(|p| p.state.is_ok())
    }

    /// One line per part.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}\nlisteners: {}\n",
            if self.ready() { "ready" } else { "not ready" },
            if self.serving {
                "bound"
            } else {
                "not yet bound"
            }
        );
        let parts = self.targets.iter().map(|(p, _)| ("relay target ", p));
        let stores = self
            .redis
            .iter()
            .map(|p| ("", p))
            .chain(self.tracking.iter().map(|p| ("", p)));
        for (kind, probe) in parts.chain(stores) {
            let state = match &probe.state {
                Ok(how) => how.clone(),
                Err(why) => format!("FAILED: {why}"),
            };
            out.push_str(&format!("{kind}{}: {state}\n", probe.name));
        }
        out
    }
}

/// The parts a report asks, and the last report.
#[derive(Debug)]
pub struct Health {
    delivery: SharedDelivery,
    shared_state: Option<SharedStateSettings>,
    tracking: Option<StoreSettings>,
    last: tokio::sync::Mutex<Option<(Instant, Arc<Report>)>>,
}

impl Health {
    pub fn new(
        delivery: SharedDelivery,
        shared_state: Option<SharedStateSettings>,
        tracking: Option<StoreSettings>,
    ) -> Self {
        Self {
            delivery,
            shared_state,
            tracking,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The state of every part, asked at most every [`FRESH`]; requests meanwhile wait for
    /// the one asking.
    pub async fn report(&self) -> Arc<Report> {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref()
            && at.elapsed() < FRESH
        {
            return report.clone();
        }
        let report = Arc::new(self.ask().await);
        *last = Some((Instant::now(), report.clone()));
        report
    }

    async fn ask(&self) -> Report {
        let delivery = self.delivery.load_full();
        let ordinary: Vec<bool> = delivery.targets.iter().map(|t| !t.divert_only).collect();
        let targets = delivery
            .try_each()
            .await
            .into_iter()
            .zip(ordinary)
            .map(|((name, state), ordinary)| (Probe { name, state }, ordinary))
            .collect();
        let redis = match &self.shared_state {
            Some(settings) => Some(Probe {
                name: format!("redis {}", crate::state::redacted(&settings.redis_url)),
                state: crate::state::ping(settings, STORE_TIMEOUT)
                    .await
                    .map(|()| "answers PING".to_owned())
                    .map_err(|e| e.to_string()),
            }),
            None => None,
        };
        let tracking = match &self.tracking {
            Some(store) => Some(Probe {
                name: format!("tracking {store}"),
                state: match store {
                    // A file: its directory must take the database and its journal files.
                    StoreSettings::Sqlite { .. } => {
                        store.check_writable().map(|()| "writable".to_owned())
                    }
                    StoreSettings::Postgres(_) => {
                        match tokio::time::timeout(STORE_TIMEOUT, store.try_connect()).await {
                            Ok(Ok(())) => Ok("reachable".to_owned()),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => {
                                Err(format!("no answer within {} s", STORE_TIMEOUT.as_secs()))
                            }
                        }
                    }
                },
            }),
            None => None,
        };
        Report {
            at: std::time::SystemTime::now(),
            serving: crate::notify::serving(),
            targets,
            redis,
            tracking,
        }
    }
}

/// `/healthz` and `/readyz`.
pub fn routes(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "alive\n" }))
        .route(
            "/readyz",
            get(move || async move {
                let report = health.report().await;
                let status = if report.ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (status, report.text()).into_response()
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(ok: bool) -> Probe {
        Probe {
            name: "x".into(),
            state: if ok {
                Ok("fine".into())
            } else {
                Err("refused".into())
            },
        }
    }

    #[test]
    fn ready_needs_listeners_one_relaying_target_and_every_store() {
        let report = |serving, targets: Vec<(Probe, bool)>, redis: Option<Probe>| Report {
            at: std::time::SystemTime::now(),
            serving,
            targets,
            redis,
            tracking: None,
        };
        assert!(report(true, vec![], None).ready());
        assert!(!report(false, vec![], None).ready());
        assert!(report(true, vec![(probe(false), true), (probe(true), true)], None).ready());
        // A divert-only target that answers does not carry ordinary mail.
        assert!(!report(true, vec![(probe(false), true), (probe(true), false)], None).ready());
        assert!(!report(true, vec![], Some(probe(false))).ready());
        let text = report(true, vec![(probe(false), true)], None).text();
        assert!(text.starts_with("not ready\n"), "{text}");
        assert!(text.contains("relay target x: FAILED: refused"), "{text}");
    }
}
