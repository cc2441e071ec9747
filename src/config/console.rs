//! `[console]`: the web console's listener, its users and its limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, relative};
use crate::web::console::ConsoleSettings;
use crate::web::console::users::Users;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ConsoleSection {
    listen: Option<Spanned<SocketAddr>>,
    users_file: Option<Spanned<PathBuf>>,
    certificate_file: Option<Spanned<PathBuf>>,
    key_file: Option<Spanned<PathBuf>>,
    session_timeout_minutes: Spanned<u64>,
    max_failed_logins: Spanned<u32>,
    failed_login_window_minutes: Spanned<u64>,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            listen: None,
            users_file: None,
            certificate_file: None,
            key_file: None,
            session_timeout_minutes: Spanned::new(0..0, 30),
            max_failed_logins: Spanned::new(0..0, 5),
            failed_login_window_minutes: Spanned::new(0..0, 15),
        }
    }
}

/// The console's settings; `None` (no console) without `listen`. `organizations` are the
/// configured organizations' names, which a user's scope must be one of.
pub(super) fn compile(
    c: ConsoleSection,
    config_dir: Option<&Path>,
    organizations: &[String],
) -> Result<Option<ConsoleSettings>, Invalid> {
    let Some(listen) = c.listen else {
        return Ok(None);
    };
    let Some(users_file) = c.users_file else {
        return Err((
            listen.span(),
            "console.users_file".into(),
            "the console needs users: set users_file to a file of name:HASH:role lines (HASH from `postern hash-password`)".into(),
        ));
    };
    let span = users_file.span();
    let users_file = relative(users_file.into_inner(), config_dir);
    let users = Users::load(&users_file, organizations)
        .map_err(|e| (span.clone(), "console.users_file".to_owned(), e))?;
    if users.is_empty() {
        return Err((
            span,
            "console.users_file".into(),
            format!(
                "{} names no user: add a name:HASH:role line (HASH from `postern hash-password`)",
                users_file.display()
            ),
        ));
    }
    let (certificate_file, key_file) = match (c.certificate_file, c.key_file) {
        (Some(cert), Some(key)) => (
            Some(relative(cert.into_inner(), config_dir)),
            Some(relative(key.into_inner(), config_dir)),
        ),
        (None, None) => (None, None),
        (Some(one), None) | (None, Some(one)) => {
            return Err((
                one.span(),
                "console".into(),
                "HTTPS needs both certificate_file and key_file".into(),
            ));
        }
    };
    for (value, key) in [
        (
            &c.session_timeout_minutes,
            "console.session_timeout_minutes",
        ),
        (
            &c.failed_login_window_minutes,
            "console.failed_login_window_minutes",
        ),
    ] {
        if *value.get_ref() == 0 {
            return Err((value.span(), key.into(), "must be at least 1 minute".into()));
        }
    }
    if *c.max_failed_logins.get_ref() == 0 {
        return Err((
            c.max_failed_logins.span(),
            "console.max_failed_logins".into(),
            "must be at least 1".into(),
        ));
    }
    let settings = ConsoleSettings {
        listen: *listen.get_ref(),
        users_file,
        users,
        certificate_file,
        key_file,
        session_timeout: Duration::from_secs(60 * c.session_timeout_minutes.into_inner()),
        max_failed_logins: c.max_failed_logins.into_inner(),
        failed_login_window: Duration::from_secs(60 * c.failed_login_window_minutes.into_inner()),
    };
    settings
        .tls()
        .map_err(|e| (listen.span(), "console.certificate_file".into(), e))?;
    Ok(Some(settings))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

    #[test]
    fn the_console_needs_users_and_warns_without_tls_off_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(
            &users,
            format!("root:{HASH}:admin\nann:{HASH}:viewer:acme\n"),
        )
        .unwrap();
        let file = dir.path().join("postern.toml");
        let file = file.to_str().unwrap();
        let e = Config::parse("[console]\nlisten = \"127.0.0.1:8025\"\n", file)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2: key `console.users_file`: the console needs users"),
            "{e}"
        );
        // A user of an organization that is not configured.
        let e = Config::parse(
            "[console]\nlisten = \"127.0.0.1:8025\"\nusers_file = \"users\"\n",
            file,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 2: organization \"acme\" is not an [[organization]]"),
            "{e}"
        );
        let acme = "[[organization]]\nname = \"acme\"\ndomains = [\"acme.test\"]\n";
        let config = Config::parse(
            &format!("{acme}[console]\nlisten = \"127.0.0.1:8025\"\nusers_file = \"users\"\n"),
            file,
        )
        .unwrap();
        let console = config.console.as_ref().unwrap();
        assert_eq!(console.users.len(), 2);
        assert_eq!(console.session_timeout.as_secs(), 30 * 60);
        assert!(config.lints().is_empty(), "{:?}", config.lints());
        let open = Config::parse(
            &format!("{acme}[console]\nlisten = \"0.0.0.0:8025\"\nusers_file = \"users\"\n"),
            file,
        )
        .unwrap();
        assert!(
            open.lints()
                .iter()
                .any(|l| l.contains("cross the network in clear")),
            "{:?}",
            open.lints()
        );
        let e = Config::parse(
            &format!(
                "{acme}[console]\nlisten = \"127.0.0.1:8025\"\nusers_file = \"users\"\ncertificate_file = \"c.pem\"\n"
            ),
            file,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("HTTPS needs both certificate_file and key_file"),
            "{e}"
        );
    }
}
