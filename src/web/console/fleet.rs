//! `/fleet`: every instance sharing `[shared_state]`, the configuration each runs and what
//! it did with the published one; an admin publishes a configuration from here (the one
//! this instance runs, or one pasted), checked first as `postern apply` checks it.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::users::Role;
use super::{Console, Signed, csrf_refused, sessions::same_token};
use crate::config::Config;
use crate::state::fleet::{Peer, SILENT_AFTER_MS};
use crate::tracking::{format_time, now_ms};

/// An instance as the page shows it.
#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    peer: &'a Peer,
    seen: String,
    uptime: String,
    silent: bool,
    /// Runs the published configuration.
    current: bool,
}

fn uptime(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// The page, with `notice` (what a publication did) or `error`.
async fn page(
    console: &Console,
    session: &super::sessions::Session,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
) -> Response {
    let context = |published, peers: Vec<Row<'_>>, unreachable: Option<String>| {
        minijinja::context! {
            title => "Fleet",
            session => session.viewer(),
            configured => console.fleet.is_some(),
            published => published,
            peers => peers,
            unreachable => unreachable,
            notice => notice,
            error => error,
        }
    };
    let Some(fleet) = &console.fleet else {
        return console.page(status, "fleet.html", context(None, Vec::new(), None));
    };
    let (published, peers) = match (fleet.published().await, fleet.peers().await) {
        (Ok(p), Ok(peers)) => (p, Ok(peers)),
        (Err(e), _) | (_, Err(e)) => (None, Err(e)),
    };
    let now = now_ms();
    let digest = published.as_ref().map(|p| p.digest.clone());
    let published = published.map(|p| {
        minijinja::context! { digest => p.digest, at => format_time(p.at_ms).replace('T', " "), by => p.by }
    });
    match &peers {
        Ok(peers) => {
            let rows = peers
                .iter()
                .map(|p| Row {
                    peer: p,
                    seen: format_time(p.seen_ms).replace('T', " "),
                    uptime: uptime(p.seen_ms - p.started_ms),
                    silent: now - p.seen_ms > SILENT_AFTER_MS,
                    current: digest.as_ref() == Some(&p.digest),
                })
                .collect();
            console.page(status, "fleet.html", context(published, rows, None))
        }
        Err(e) => console.page(
            status,
            "fleet.html",
            context(published, Vec::new(), Some(e.clone())),
        ),
    }
}

/// The page with `error`, answered `status`.
async fn failed(
    console: &Console,
    session: &super::sessions::Session,
    status: StatusCode,
    error: String,
) -> Response {
    page(console, session, status, None, Some(error)).await
}

/// The fleet is the whole gateway's: not for users of one organization.
fn whole_gateway_only(console: &Console, session: &super::sessions::Session) -> Option<Response> {
    session.organization.is_some().then(|| {
        console.page(
            StatusCode::FORBIDDEN,
            "refused.html",
            minijinja::context! {
                title => "Fleet",
                session => session.viewer(),
                reason => "The fleet is for users of the whole gateway.",
            },
        )
    })
}

/// `GET /fleet`.
pub async fn show(State(console): State<Arc<Console>>, Signed(session): Signed) -> Response {
    if let Some(refused) = whole_gateway_only(&console, &session) {
        return refused;
    }
    page(&console, &session, StatusCode::OK, None, None).await
}

#[derive(Deserialize)]
pub struct ApplyForm {
    #[serde(default)]
    csrf: String,
    /// `running` (this instance's configuration) or `text`.
    #[serde(default)]
    source: String,
    #[serde(default)]
    text: String,
}

/// `POST /fleet/apply`: an admin publishes a configuration, once it compiles here.
pub async fn apply(
    State(console): State<Arc<Console>>,
    Signed(session): Signed,
    Form(form): Form<ApplyForm>,
) -> Response {
    if !same_token(&form.csrf, &session.csrf) {
        return csrf_refused(&console);
    }
    if let Some(refused) = whole_gateway_only(&console, &session) {
        return refused;
    }
    if session.role != Role::Admin {
        let error = "Only an admin may publish a configuration.".to_owned();
        return failed(&console, &session, StatusCode::FORBIDDEN, error).await;
    }
    let Some(fleet) = &console.fleet else {
        let error = "No [shared_state]: there is no fleet to publish to.".to_owned();
        return failed(&console, &session, StatusCode::BAD_REQUEST, error).await;
    };
    let text = if form.source == "running" {
        console
            .in_force
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .raw
            .clone()
    } else {
        form.text.replace("\r\n", "\n")
    };
    // Checked as `postern apply` checks it, with this instance's paths.
    let dir = std::path::Path::new(&console.config_file).parent();
    let config = match Config::parse_in(&text, "the configuration to publish", dir) {
        Ok(config) => config,
        Err(e) => {
            let error = format!("Not published: {e}");
            return failed(&console, &session, StatusCode::BAD_REQUEST, error).await;
        }
    };
    let digest = config.source.digest();
    let by = format!("console user {}", session.user);
    match fleet.publish(&text, &digest, &by).await {
        Ok(()) => {
            info!(user = %session.user, %digest, "configuration published to the fleet from the console");
            let notice = format!(
                "Published {digest}: every instance takes it within {} s.",
                crate::state::fleet::POLL.as_secs()
            );
            page(&console, &session, StatusCode::OK, Some(notice), None).await
        }
        Err(e) => {
            let error = format!("Not published: {e}");
            failed(&console, &session, StatusCode::SERVICE_UNAVAILABLE, error).await
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uptimes_read_well() {
        assert_eq!(super::uptime(5_000), "5 s");
        assert_eq!(super::uptime(600_000), "10 min");
        assert_eq!(super::uptime(3 * 3_600_000), "3 h");
        assert_eq!(super::uptime(3 * 86_400_000), "3 days");
    }
}
