//! `[tracking]`: where message tracking records go, how long they are kept, and the queue in
//! front of the writer.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, relative};
use crate::tracking::{PostgresSettings, StoreSettings, TrackingSettings};

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct TrackingSection {
    store: Option<Spanned<StoreKind>>,
    path: Option<Spanned<PathBuf>>,
    url: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    /// CA certificates (PEM) that PostgreSQL's certificate is checked against.
    ca_file: Option<Spanned<PathBuf>>,
    retention_days: u32,
    track_dropped_connections: bool,
    queue_size: Spanned<usize>,
    max_records_per_client: u64,
}

impl Default for TrackingSection {
    fn default() -> Self {
        Self {
            store: None,
            path: None,
            url: None,
            password_file: None,
            ca_file: None,
            retention_days: crate::tracking::DEFAULT_RETENTION_DAYS,
            track_dropped_connections: false,
            queue_size: Spanned::new(0..0, crate::tracking::DEFAULT_QUEUE_SIZE),
            max_records_per_client: crate::tracking::DEFAULT_MAX_RECORDS_PER_CLIENT,
        }
    }
}

/// The tracking settings; `None` (no tracking) without `store`.
pub(super) fn compile(
    t: TrackingSection,
    config_dir: Option<&Path>,
    organization_retention: Vec<(String, u32)>,
) -> Result<Option<TrackingSettings>, Invalid> {
    let Some(store) = t.store else {
        if let Some(key) = t
            .path
            .as_ref()
            .map(|p| (p.span(), "path"))
            .or(t.url.as_ref().map(|u| (u.span(), "url")))
        {
            return Err((
                key.0,
                format!("tracking.{}", key.1),
                "set tracking.store = \"sqlite\" or \"postgres\" too: without store, tracking is off".into(),
            ));
        }
        return Ok(None);
    };
    let span = store.span();
    let wrong = |span: std::ops::Range<usize>, key: &str, message: &str| -> Invalid {
        (span, format!("tracking.{key}"), message.to_owned())
    };
    let store = match store.into_inner() {
        StoreKind::Sqlite => {
            if let Some(url) = &t.url {
                return Err(wrong(
                    url.span(),
                    "url",
                    "url is for store = \"postgres\"; SQLite takes path",
                ));
            }
            let Some(path) = t.path else {
                return Err(wrong(
                    span,
                    "path",
                    "store = \"sqlite\" needs path, the database file (e.g. \"/var/lib/postern/tracking.sqlite\")",
                ));
            };
            StoreSettings::Sqlite {
                path: relative(path.into_inner(), config_dir),
            }
        }
        StoreKind::Postgres => {
            if let Some(path) = &t.path {
                return Err(wrong(
                    path.span(),
                    "path",
                    "path is for store = \"sqlite\"; PostgreSQL takes url",
                ));
            }
            let Some(url) = t.url else {
                return Err(wrong(
                    span,
                    "url",
                    "store = \"postgres\" needs url (e.g. \"postgresql://postern@db.example/postern\")",
                ));
            };
            let url_span = url.span();
            let password = match t.password_file {
                Some(file) => {
                    let file_span = file.span();
                    let path = relative(file.into_inner(), config_dir);
                    let text =
                        crate::secret_file::read_to_string(&path, "PostgreSQL password file")
                            .map_err(|e| wrong(file_span, "password_file", &e.to_string()))?;
                    Some(text.lines().next().unwrap_or("").to_owned())
                }
                None => None,
            };
            let ca = match t.ca_file {
                Some(file) => {
                    let span = file.span();
                    super::ca_certificates(&relative(file.into_inner(), config_dir))
                        .map_err(|e| wrong(span, "ca_file", &e))?
                }
                None => Vec::new(),
            };
            let settings = PostgresSettings::new(url.into_inner(), password, ca)
                .map_err(|e| wrong(url_span, "url", &e))?;
            StoreSettings::Postgres(settings)
        }
    };
    if *t.queue_size.get_ref() == 0 {
        return Err(wrong(
            t.queue_size.span(),
            "queue_size",
            "must be at least 1 (records waiting for the writer)",
        ));
    }
    Ok(Some(TrackingSettings {
        store,
        retention: crate::tracking::Retention {
            days: t.retention_days,
            organizations: organization_retention,
        },
        track_dropped_connections: t.track_dropped_connections,
        queue_size: t.queue_size.into_inner(),
        max_records_per_client: t.max_records_per_client,
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::tracking::StoreSettings;

    fn error(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn each_store_needs_its_own_key() {
        assert!(Config::parse("", "t.toml").unwrap().tracking.is_none());
        let e = error("[tracking]\nstore = \"sqlite\"\n");
        assert!(e.contains("t.toml:2: key `tracking.path`"), "{e}");
        let e = error("[tracking]\nstore = \"postgres\"\npath = \"x\"\n");
        assert!(e.contains("tracking.path") && e.contains("url"), "{e}");
        let e = error("[tracking]\nstore = \"postgres\"\nurl = \"not a url=\"\n");
        assert!(e.contains("tracking.url"), "{e}");
        let e = error("[tracking]\npath = \"x.sqlite\"\n");
        assert!(e.contains("tracking.store"), "{e}");
        let e = error("[tracking]\nstore = \"mysql\"\n");
        assert!(e.contains("tracking.store"), "{e}");
        let e = error("[tracking]\nstore = \"sqlite\"\npath = \"x\"\nqueue_size = 0\n");
        assert!(e.contains("tracking.queue_size"), "{e}");
    }

    #[test]
    fn a_postgres_password_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let text = format!(
            "[tracking]\nstore = \"postgres\"\nurl = \"postgresql://postern:other@db.example/mail\"\n\
             password_file = \"{}\"\nretention_days = 7\n",
            file.display()
        );
        let tracking = Config::parse(&text, "t.toml").unwrap().tracking.unwrap();
        assert_eq!(tracking.retention.days, 7);
        let StoreSettings::Postgres(pg) = &tracking.store else {
            panic!("{tracking:?}");
        };
        assert_eq!(pg.config().unwrap().get_password(), Some(&b"s3cret"[..]));
        let shown = format!("{} {tracking:?}", tracking.store);
        assert!(shown.contains("postern@db.example"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("other"),
            "{shown}"
        );
    }

    #[test]
    fn a_host_off_this_machine_is_never_spoken_to_in_plain_text() {
        use crate::tracking::postgres_tls::SslMode;
        let mode = |url: &str| {
            let text = format!("[tracking]\nstore = \"postgres\"\nurl = \"{url}\"\n");
            match Config::parse(&text, "t.toml")
                .unwrap()
                .tracking
                .unwrap()
                .store
            {
                StoreSettings::Postgres(pg) => pg.ssl_mode(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(mode("postgresql://u@db.example/p"), SslMode::Require);
        assert_eq!(
            mode("postgresql://u@db.example/p?sslmode=prefer"),
            SslMode::Require
        );
        assert_eq!(
            mode("postgresql://u@db.example/p?sslmode=disable"),
            SslMode::Disable
        );
        assert_eq!(mode("postgresql://u@127.0.0.1/p"), SslMode::Prefer);
        assert_eq!(
            mode("host=db.example user=u sslmode=verify-full"),
            SslMode::VerifyFull
        );
        let e =
            error("[tracking]\nstore = \"postgres\"\nurl = \"postgresql://h/p?sslmode=allow\"\n");
        assert!(
            e.contains("tracking.url") && e.contains("sslmode=allow"),
            "{e}"
        );
        let e = error(
            "[tracking]\nstore = \"postgres\"\nurl = \"postgresql://h/p\"\nca_file = \"/nonexistent/ca.pem\"\n",
        );
        assert!(e.contains("tracking.ca_file"), "{e}");
    }
}
