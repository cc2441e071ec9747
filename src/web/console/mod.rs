//! The web console: server-rendered pages for the people who run Postern. `/login`, then
//! `/messages` (the tracking search of `postern track`, and one session's records),
//! `/stats` (charts from tracking and the metrics registry), `/status` (what answers, the
//! configuration in force) and `/fleet` (the instances sharing `[shared_state]`, and
//! applying a configuration to all of them). Every page but `/login` and the style sheet
//! wants a session; every POST carries the session's CSRF token; failed logins are counted
//! per client through the Store, so a fleet shares the count.
//!
//! `users.rs` the users file; `sessions.rs` sessions, cookies and tokens; `pages.rs` the
//! pages; `charts.rs` the SVG charts and what they read from the registry; `fleet.rs` the
//! fleet's page and publishing from it.

mod charts;
mod fleet;
mod pages;
pub mod sessions;
pub mod users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::engine::ports::{ClientKey, Counter, Store};
use crate::metrics::Metrics;
use crate::tracking::StoreSettings;
use crate::web::health::Health;
use crate::web::{OverTls, Peer};
use sessions::{COOKIE, LOGIN_COOKIE, Session, Sessions, cookie, same_token, set_cookie, token};
use users::{Role, Users};

/// `[console]`: where it listens, who may log in, and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSettings {
    pub listen: SocketAddr,
    pub users_file: PathBuf,
    pub users: Users,
    /// `certificate_file` and `key_file`: HTTPS on `listen`.
    pub certificate_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// A session ends after this long without a request (`session_timeout_minutes`).
    pub session_timeout: Duration,
    /// Failed logins from one client (`max_failed_logins`) within `failed_login_window`
    /// before further logins are refused until the window ends.
    pub max_failed_logins: u32,
    pub failed_login_window: Duration,
}

impl ConsoleSettings {
    /// The acceptor for HTTPS, when a certificate is configured.
    pub fn tls(&self) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
        let settings = crate::proxy::tls::TlsSettings {
            certificate_file: self.certificate_file.clone(),
            key_file: self.key_file.clone(),
            ..Default::default()
        };
        settings
            .acceptor()
            .map_err(|e| e.replace("[proxy]", "[console]"))
    }
}

/// The configuration in force, for `/status`: which file, its digest, when it was loaded,
/// and what the last reload did.
#[derive(Clone, Debug, Serialize)]
pub struct InForce {
    pub file: String,
    /// The file's text with secrets masked.
    pub text: String,
    /// The text itself, for publishing it to the fleet.
    #[serde(skip)]
    pub raw: String,
    /// SHA-256 of the file's text, in hex.
    pub digest: String,
    pub loaded: String,
    /// When the last reload was tried and what came of it.
    pub last_reload: Option<String>,
}

impl InForce {
    pub fn new(file: String, text: &str) -> Self {
        Self {
            file,
            text: masked(text),
            raw: text.to_owned(),
            digest: crate::config::digest(text),
            loaded: crate::tracking::format_time(crate::tracking::now_ms()),
            last_reload: None,
        }
    }

    /// After a reload of the configuration `from` (a file, or the fleet's): its text when it
    /// was applied, or why not.
    pub fn reloaded(&mut self, from: &str, applied: Result<&str, &str>) {
        let now = crate::tracking::format_time(crate::tracking::now_ms());
        match applied {
            Ok(text) => {
                *self = Self::new(from.to_owned(), text);
                self.last_reload = Some(format!("{now}: applied"));
            }
            Err(why) => self.last_reload = Some(format!("{now}: refused: {why}")),
        }
    }
}

/// `text` (TOML) with the value of every key that may hold a secret replaced by `"***"`:
/// passwords, secrets and tokens given inline, and the password in a URL's user part.
pub fn masked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim().to_lowercase();
        let secret = !line.trim_start().starts_with('#')
            && line.contains('=')
            && !key.ends_with("_file")
            && ["password", "secret", "token", "passphrase"]
                .iter()
                .any(|s| key.contains(s));
        if secret {
            let (k, _) = line.split_once('=').unwrap_or((line, ""));
            out.push_str(&format!("{k}= \"***\""));
        } else if let Some(at) = line.find('@').filter(|_| line.contains("://")) {
            // scheme://user:password@host: the password hidden.
            let start = line.find("://").map(|i| i + 3).unwrap_or(0);
            match line[start..at].find(':') {
                Some(colon) if start < at => {
                    out.push_str(&line[..start + colon + 1]);
                    out.push_str("***");
                    out.push_str(&line[at..]);
                }
                _ => out.push_str(line),
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The charts' counts per organization scope, and when each was counted.
type ChartCache = std::collections::HashMap<Option<String>, (std::time::Instant, charts::Minutes)>;

/// What the console's pages read.
pub struct Console {
    users: ArcSwap<Users>,
    sessions: Sessions,
    store: Arc<dyn Store>,
    tracking: Option<StoreSettings>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    in_force: Arc<Mutex<InForce>>,
    /// The fleet, with `[shared_state]`; and the file a published configuration's relative
    /// paths are read against.
    fleet: Option<crate::state::fleet::Fleet>,
    config_file: String,
    max_failed_logins: u32,
    failed_login_window: Duration,
    templates: minijinja::Environment<'static>,
    /// The charts' counts per organization scope (`None`: the whole gateway), and when they
    /// were counted.
    charts: tokio::sync::Mutex<ChartCache>,
}

impl Console {
    pub fn new(
        settings: &ConsoleSettings,
        store: Arc<dyn Store>,
        tracking: Option<StoreSettings>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        in_force: Arc<Mutex<InForce>>,
        fleet: Option<crate::state::fleet::Fleet>,
    ) -> Self {
        let config_file = in_force
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .file
            .clone();
        Self {
            users: ArcSwap::from_pointee(settings.users.clone()),
            sessions: Sessions::new(settings.session_timeout),
            store,
            tracking,
            metrics,
            health,
            in_force,
            fleet,
            config_file,
            max_failed_logins: settings.max_failed_logins,
            failed_login_window: settings.failed_login_window,
            templates: templates(),
            charts: Default::default(),
        }
    }

    /// A reload's users file.
    pub fn replace_users(&self, users: Users) {
        self.users.store(Arc::new(users));
    }

    /// `template` rendered with `context`, as an HTML page with `status`.
    fn page(&self, status: StatusCode, template: &str, context: minijinja::Value) -> Response {
        match self
            .templates
            .get_template(template)
            .and_then(|t| t.render(context))
        {
            Ok(html) => (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
            Err(e) => {
                warn!(template, error = %e, "console page could not be rendered");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the page could not be rendered: {e}\n"),
                )
                    .into_response()
            }
        }
    }
}

/// The templates, built into the binary.
fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, text) in [
        ("layout.html", include_str!("templates/layout.html")),
        ("login.html", include_str!("templates/login.html")),
        ("messages.html", include_str!("templates/messages.html")),
        ("message.html", include_str!("templates/message.html")),
        ("stats.html", include_str!("templates/stats.html")),
        ("status.html", include_str!("templates/status.html")),
        ("refused.html", include_str!("templates/refused.html")),
        ("fleet.html", include_str!("templates/fleet.html")),
    ] {
        env.add_template(name, text)
            .expect("the console's templates are valid (tested)");
    }
    env
}

/// What a page shows of its session.
#[derive(Serialize)]
struct Viewer<'a> {
    user: &'a str,
    role: &'static str,
    organization: Option<&'a str>,
    csrf: &'a str,
    admin: bool,
}

impl Session {
    fn viewer(&self) -> Viewer<'_> {
        Viewer {
            user: &self.user,
            role: self.role.name(),
            organization: self.organization.as_deref(),
            csrf: &self.csrf,
            admin: self.role == Role::Admin,
        }
    }
}

/// A request with a live session; without one the client is sent to `/login`.
pub struct Signed(pub Session);

impl FromRequestParts<Arc<Console>> for Signed {
    type Rejection = Redirect;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        parts
            .headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|c| cookie(c, COOKIE))
            .and_then(|id| console.sessions.get(id))
            .map(Signed)
            .ok_or_else(|| Redirect::to("/login"))
    }
}

/// Refused: the form's CSRF token is not the session's.
fn csrf_refused(console: &Console) -> Response {
    console.page(
        StatusCode::FORBIDDEN,
        "refused.html",
        minijinja::context! {
            title => "Refused",
            reason => "The form's CSRF token is missing or not this session's: reload the page and send the form again.",
        },
    )
}

/// The console's routes, over `console`.
pub fn routes(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/messages") }))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/messages", get(pages::messages))
        .route("/messages/{door}/{session}", get(pages::message))
        .route("/stats", get(pages::stats))
        .route("/status", get(pages::status))
        .route("/fleet", get(fleet::show))
        .route("/fleet/apply", post(fleet::apply))
        .route("/static/console.css", get(style))
        .layer(axum::middleware::map_response(guarded))
        .with_state(console)
}

/// Every answer of the console: not cached, not framed, nothing loaded from elsewhere.
async fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("static/console.css"),
    )
        .into_response()
}

/// The login form, with a fresh CSRF token in a cookie and in the form.
async fn login_form(
    State(console): State<Arc<Console>>,
    Extension(OverTls(tls)): Extension<OverTls>,
) -> Response {
    login_page(&console, tls, StatusCode::OK, None)
}

fn login_page(console: &Console, tls: bool, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = token();
    let mut response = console.page(
        status,
        "login.html",
        minijinja::context! { title => "Log in", csrf => &csrf, error => error },
    );
    if let Ok(value) = HeaderValue::from_str(&set_cookie(LOGIN_COOKIE, &csrf, tls, Some(3600))) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// Checks a login: the form's token, the client's failed logins, the password.
async fn login(
    State(console): State<Arc<Console>>,
    Extension(Peer(peer)): Extension<Peer>,
    Extension(OverTls(tls)): Extension<OverTls>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| cookie(c, LOGIN_COOKIE));
    if !expected.is_some_and(|e| !form.csrf.is_empty() && same_token(&form.csrf, e)) {
        return csrf_refused(&console);
    }
    let client = ClientKey::of(peer.ip());
    let window = console.failed_login_window;
    let failures = console
        .store
        .add(Counter::ConsoleLoginFailures, client, 0, window)
        .await
        .unwrap_or(0);
    if failures >= u64::from(console.max_failed_logins) {
        warn!(%client, failures, "console login refused: too many failed logins from this client");
        let minutes = window.as_secs().div_ceil(60);
        let error = format!(
            "Too many failed logins from {client}: try again in {minutes} minutes (or ask an administrator)."
        );
        return login_page(&console, tls, StatusCode::TOO_MANY_REQUESTS, Some(&error));
    }
    let user = console.users.load().get(&form.username).cloned();
    let matches = crate::proxy::users::password_matches(
        user.as_ref().map(|u| u.hash.clone()),
        &form.password,
    )
    .await;
    let Some(user) = user.filter(|_| matches) else {
        let _ = console
            .store
            .add(Counter::ConsoleLoginFailures, client, 1, window)
            .await;
        warn!(%client, user = %form.username.escape_debug(), "console login failed: wrong user name or password");
        return login_page(
            &console,
            tls,
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
        );
    };
    let id = console
        .sessions
        .open(&form.username, user.role, user.organization.clone());
    info!(%client, user = %form.username, role = user.role.name(), "console login");
    let mut response = Redirect::to("/messages").into_response();
    let headers = response.headers_mut();
    for value in [
        set_cookie(COOKIE, &id, tls, None),
        set_cookie(LOGIN_COOKIE, "", tls, Some(0)),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(console): State<Arc<Console>>,
    Extension(OverTls(tls)): Extension<OverTls>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let id = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| cookie(c, COOKIE));
    let Some((id, session)) = id.and_then(|id| Some((id, console.sessions.get(id)?))) else {
        return Redirect::to("/login").into_response();
    };
    if !same_token(&form.csrf, &session.csrf) {
        return csrf_refused(&console);
    }
    console.sessions.close(id);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie(COOKIE, "", tls, Some(0))) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile() {
        let env = templates();
        assert!(env.get_template("messages.html").is_ok());
    }

    #[test]
    fn secrets_are_masked() {
        let text = "[shared_state]\nredis_url = \"redis://user:hunter2@127.0.0.1:6379/0\"\npassword_file = \"/etc/p\"\n[tracking]\nurl = \"postgres://pg:s3cret@127.0.0.1/db\"\n# password = \"comment\"\nsecret = \"k\"\n";
        let m = masked(text);
        assert!(!m.contains("hunter2") && !m.contains("s3cret"), "{m}");
        assert!(m.contains("redis://user:***@127.0.0.1:6379/0"), "{m}");
        assert!(m.contains("password_file = \"/etc/p\""), "{m}");
        assert!(m.contains("secret = \"***\""), "{m}");
    }
}
