//! The console's pages once logged in: the message search and one session's records, the
//! charts, the status. A user with an organization sees that organization's records only,
//! and neither the gateway-wide metrics nor the configuration.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{Console, Signed, charts};
use crate::tracking::query::{Filter, VERDICTS, find, parse_time_now, per_minute};
use crate::tracking::{Record, format_time, now_ms};

/// Records per page of the search.
const PAGE: u32 = 50;
/// How long the charts' counts are served before the store is asked again.
const CHARTS_FRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// The search form's fields, as `GET /messages?...` gives them.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Search {
    sender: String,
    recipient: String,
    client: String,
    message_id: String,
    verdict: String,
    since: String,
    until: String,
    page: u32,
}

/// Empty is not given.
fn given(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl Search {
    /// The tracking filter, or what is wrong with a field.
    fn filter(&self, organization: Option<&str>) -> Result<Filter, String> {
        let time = |s: &str, field: &str| {
            given(s)
                .map(|t| parse_time_now(&t).map_err(|e| format!("{field}: {e}")))
                .transpose()
        };
        let client = given(&self.client)
            .map(|c| {
                c.parse()
                    .map_err(|_| format!("client: {c:?} is not an IP address"))
            })
            .transpose()?;
        let filter = Filter {
            sender: given(&self.sender),
            recipient: given(&self.recipient),
            client,
            message_id: given(&self.message_id),
            verdict: given(&self.verdict).map(|v| v.to_lowercase()),
            organization: organization.map(str::to_owned),
            since_ms: time(&self.since, "since")?,
            until_ms: time(&self.until, "until")?,
            // One more than a page: whether there is a next page.
            limit: PAGE + 1,
            offset: self.page.saturating_mul(PAGE),
            ..Filter::default()
        };
        filter
            .validate()
            .map_err(|e| e.replace("--", "").replace("limit", "page"))?;
        Ok(filter)
    }

    /// The query string of page `page` of this search.
    fn page_query(&self, page: u32) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("sender", &self.sender),
            ("recipient", &self.recipient),
            ("client", &self.client),
            ("message_id", &self.message_id),
            ("verdict", &self.verdict),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !v.is_empty() {
                pairs.append_pair(k, v);
            }
        }
        pairs.append_pair("page", &page.to_string());
        pairs.finish()
    }
}

/// A record as the search's table shows it: the fields it shows only (rendering the whole
/// record costs the template more than the search costs the store).
#[derive(Serialize)]
struct Line<'a> {
    when: String,
    link: String,
    door: &'a str,
    outcome: &'a str,
    sender: &'a str,
    recipient: Option<&'a str>,
    verdict: &'a str,
    reason: Option<&'a str>,
    reply: Option<&'a str>,
}

fn lines(records: &[Record]) -> Vec<Line<'_>> {
    records
        .iter()
        .map(|r| Line {
            when: shown_time(r.time_ms),
            link: link(r),
            door: &r.door,
            outcome: &r.outcome,
            sender: &r.sender,
            recipient: r.recipient.as_deref(),
            verdict: &r.verdict,
            reason: r.reason.as_deref(),
            reply: r.reply.as_deref(),
        })
        .collect()
}

/// A record whole, as one message's page shows it.
#[derive(Serialize)]
struct Row<'a> {
    /// The time to show (the record's own `time` is RFC 3339).
    when: String,
    link: String,
    #[serde(flatten)]
    record: &'a Record,
}

fn rows(records: &[Record]) -> Vec<Row<'_>> {
    records
        .iter()
        .map(|r| Row {
            when: shown_time(r.time_ms),
            link: link(r),
            record: r,
        })
        .collect()
}

fn shown_time(time_ms: i64) -> String {
    format_time(time_ms).replace('T', " ")
}

/// The page of the record's session.
fn link(r: &Record) -> String {
    format!("/messages/{}/{}", r.door, r.session)
}

/// The message for a console without `[tracking]`.
const NO_TRACKING: &str = "Message tracking is not configured: set [tracking] store = \"sqlite\" with path (or \"postgres\" with url) in the configuration, and reload.";

/// `GET /messages`: the search form and a page of records, newest first.
pub async fn messages(
    State(console): State<Arc<Console>>,
    Signed(session): Signed,
    Query(search): Query<Search>,
) -> Response {
    let mut error = None;
    let mut records = Vec::new();
    match (
        &console.tracking,
        search.filter(session.organization.as_deref()),
    ) {
        (None, _) => error = Some(NO_TRACKING.to_owned()),
        (_, Err(e)) => error = Some(e),
        (Some(store), Ok(filter)) => match find(store, &filter).await {
            Ok(found) => records = found,
            Err(e) => error = Some(e.to_string()),
        },
    }
    let more = records.len() > PAGE as usize;
    records.truncate(PAGE as usize);
    let status = if error.is_some() && console.tracking.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    console.page(
        status,
        "messages.html",
        minijinja::context! {
            title => "Messages",
            session => session.viewer(),
            search => &search,
            verdicts => VERDICTS,
            rows => lines(&records),
            error => error,
            newer => (search.page > 0).then(|| search.page_query(search.page - 1)),
            older => more.then(|| search.page_query(search.page + 1)),
        },
    )
}

/// `GET /messages/{door}/{session}`: every record of one connection: each recipient's
/// outcome, the reply, the target, the rules that acted.
pub async fn message(
    State(console): State<Arc<Console>>,
    Signed(session): Signed,
    Path((door, number)): Path<(String, i64)>,
) -> Response {
    let Some(store) = &console.tracking else {
        return console.page(
            StatusCode::NOT_FOUND,
            "refused.html",
            minijinja::context! { title => "Not found", session => session.viewer(), reason => NO_TRACKING },
        );
    };
    let filter = Filter {
        door: Some(door.clone()),
        session: Some(number),
        organization: session.organization.clone(),
        limit: 1000,
        ..Filter::default()
    };
    let (records, error) = match find(store, &filter).await {
        Ok(found) => (found, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let status = if records.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    console.page(
        status,
        "message.html",
        minijinja::context! {
            title => format!("Session {number} ({door})"),
            session => session.viewer(),
            door => door,
            number => number,
            rows => rows(&records),
            error => error,
        },
    )
}

impl Console {
    /// The last hour's records per minute and verdict, of `organization` or of all: counted
    /// by the store, and kept [`CHARTS_FRESH`] per scope, so that many viewers (or one
    /// reloading) ask the store once.
    async fn minutes(&self, organization: Option<&str>) -> Result<charts::Minutes, String> {
        let Some(store) = &self.tracking else {
            return Err(NO_TRACKING.to_owned());
        };
        let mut cache = self.charts.lock().await;
        let key = organization.map(str::to_owned);
        if let Some((at, minutes)) = cache.get(&key)
            && at.elapsed() < CHARTS_FRESH
        {
            return Ok(minutes.clone());
        }
        let now = now_ms();
        let filter = Filter {
            organization: key.clone(),
            since_ms: Some(now - 3_600_000),
            limit: 1,
            ..Filter::default()
        };
        let counts = per_minute(store, &filter)
            .await
            .map_err(|e| e.to_string())?;
        let minutes = charts::by_minute(&counts, now);
        cache.insert(key, (std::time::Instant::now(), minutes.clone()));
        Ok(minutes)
    }
}

/// `GET /stats`: messages by verdict per minute over the last hour (tracking), and for users
/// of the whole gateway, session and scan times, check results and relay attempts (the
/// metrics registry).
pub async fn stats(State(console): State<Arc<Console>>, Signed(session): Signed) -> Response {
    let (minutes, error) = match console.minutes(session.organization.as_deref()).await {
        Ok(minutes) => (Some(minutes), None),
        Err(e) => (None, Some(e)),
    };
    let registry = session
        .organization
        .is_none()
        .then(|| charts::Registry::parse(&console.metrics.render()));
    console.page(
        StatusCode::OK,
        "stats.html",
        minijinja::context! {
            title => "Stats",
            session => session.viewer(),
            error => error,
            verdicts => minutes.as_ref().map(charts::verdict_columns),
            recipients => minutes.as_ref().map(|m| m.total),
            times => registry.as_ref().map(charts::times),
            checks => registry.as_ref().map(|r| charts::bars(&r.counts("postern_check_results_total", &["check", "result"]), "results")),
            relays => registry.as_ref().map(|r| charts::bars(&r.counts("postern_relay_attempts_total", &["target", "outcome"]), "attempts")),
        },
    )
}

/// `GET /status`: the door, each relay target, Redis and the tracking store, the DNSBL
/// zones, and for users of the whole gateway the configuration in force.
pub async fn status(State(console): State<Arc<Console>>, Signed(session): Signed) -> Response {
    let report = console.health.report().await;
    let registry = charts::Registry::parse(&console.metrics.render());
    let zones: Vec<(String, bool)> = registry
        .samples("postern_rbl_zone_usable")
        .map(|(labels, v)| (labels.get("zone").cloned().unwrap_or_default(), v > 0.0))
        .collect();
    let parts: Vec<(String, String, bool)> = report
        .targets
        .iter()
        .map(|(p, _)| (format!("relay target {}", p.name), p))
        .chain(report.redis.iter().map(|p| (p.name.clone(), p)))
        .chain(report.tracking.iter().map(|p| (p.name.clone(), p)))
        .map(|(name, p)| match &p.state {
            Ok(how) => (name, how.clone(), true),
            Err(why) => (name, why.clone(), false),
        })
        .collect();
    let in_force = console
        .in_force
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    console.page(
        StatusCode::OK,
        "status.html",
        minijinja::context! {
            title => "Status",
            session => session.viewer(),
            ready => report.ready(),
            serving => report.serving,
            checked => format_time(report.at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)).replace('T', " "),
            parts => parts,
            zones => zones,
            in_force => session.organization.is_none().then_some(in_force),
            version => env!("CARGO_PKG_VERSION"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_becomes_a_filter_or_says_what_is_wrong() {
        let search = Search {
            sender: " @Example.org ".into(),
            verdict: "Reject".into(),
            page: 2,
            ..Search::default()
        };
        let f = search.filter(Some("acme")).unwrap();
        assert_eq!(f.sender.as_deref(), Some("@Example.org"));
        assert_eq!(f.verdict.as_deref(), Some("reject"));
        assert_eq!(f.organization.as_deref(), Some("acme"));
        assert_eq!((f.limit, f.offset), (PAGE + 1, 2 * PAGE));
        let bad = Search {
            client: "not-an-ip".into(),
            ..Search::default()
        };
        assert!(bad.filter(None).unwrap_err().contains("not an IP address"));
        let bad = Search {
            since: "yesterday".into(),
            ..Search::default()
        };
        assert!(bad.filter(None).unwrap_err().starts_with("since:"));
        assert_eq!(
            search.page_query(3),
            "sender=+%40Example.org+&verdict=Reject&page=3"
        );
    }
}
