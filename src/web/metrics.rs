//! `GET /metrics`: the Prometheus text of the registry, behind Basic credentials compared in
//! constant time when `[metrics] basic_auth_file` is set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prometheus_client::encoding::prometheus_text;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::metrics::Metrics;

/// Settings of `[metrics]`; no endpoint without them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
    /// `user:password` a scraper must give (HTTP Basic), read from `basic_auth_file`.
    pub basic_auth: Option<BasicAuth>,
}

/// The credentials of the endpoint and where they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub file: PathBuf,
    /// The Basic token (base64 of `user:password`) a scraper must send.
    token: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// Whether an `Authorization` value carries these credentials: the scheme in any case
    /// (RFC 9110), the token compared through digests of equal length in constant time, so
    /// the time taken tells nothing of how much of it was right.
    fn admits(&self, given: Option<&str>) -> bool {
        let Some((scheme, token)) = given.and_then(|g| g.trim().split_once(' ')) else {
            return false;
        };
        let digest = |s: &str| Sha256::digest(s.as_bytes());
        let same: bool = digest(token.trim())
            .as_slice()
            .ct_eq(digest(&self.token).as_slice())
            .into();
        scheme.eq_ignore_ascii_case("basic") & same
    }

    /// Reads `user:password` (first line) from `file`.
    pub fn load(file: PathBuf) -> Result<Self, String> {
        let text = crate::secret_file::read_to_string(&file, "metrics credentials file")
            .map_err(|e| e.to_string())?;
        let line = text.lines().next().unwrap_or("").trim_end();
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Self {
                token: STANDARD.encode(line),
                file,
            }),
            _ => Err(format!(
                "{} must hold one line user:password",
                file.display()
            )),
        }
    }
}

/// `GET /metrics` (and HEAD) with `metrics`, behind `auth` when it is set.
pub fn routes(metrics: Arc<Metrics>, auth: Option<BasicAuth>) -> Router {
    let auth = Arc::new(auth);
    Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| async move { scrape(&metrics, auth.as_ref().as_ref(), &headers) }),
    )
}

/// The answer to one scrape.
fn scrape(metrics: &Metrics, auth: Option<&BasicAuth>, headers: &HeaderMap) -> Response {
    if let Some(auth) = auth {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !auth.admits(given) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"postern metrics\"")],
                "authentication required\n",
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_are_authenticated() {
        let m = Metrics::new(crate::engine::events::DoorKind::Milter);
        let none = HeaderMap::new();
        assert_eq!(scrape(&m, None, &none).status(), StatusCode::OK);
        let auth = BasicAuth {
            file: PathBuf::new(),
            token: STANDARD.encode("prom:s3cret"),
        };
        assert_eq!(
            scrape(&m, Some(&auth), &none).status(),
            StatusCode::UNAUTHORIZED
        );
        let mut good = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode("prom:s3cret"));
        good.insert(header::AUTHORIZATION, value.parse().unwrap());
        assert_eq!(scrape(&m, Some(&auth), &good).status(), StatusCode::OK);
        // The scheme in any case; a wrong or truncated token, another scheme: refused.
        let token = STANDARD.encode("prom:s3cret");
        for (value, admitted) in [
            (format!("BASIC {token}"), true),
            (format!("basic  {token} "), true),
            (format!("Basic {}", &token[..token.len() - 1]), false),
            (format!("Basic {}", STANDARD.encode("prom:s3crex")), false),
            (format!("Bearer {token}"), false),
            (token.clone(), false),
        ] {
            assert_eq!(auth.admits(Some(&value)), admitted, "{value}");
        }
    }
}
