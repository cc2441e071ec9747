//! `[state]`: how much the in-process state store remembers; `[shared_state]`: the Redis a
//! fleet of instances shares it through.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::Invalid;
use crate::state::{DEFAULT_KEY_PREFIX, Password, SharedStateSettings, StateSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct StateSection {
    max_tracked_clients: NonZeroUsize,
    via_memory_days: Spanned<u64>,
}

impl Default for StateSection {
    fn default() -> Self {
        Self {
            max_tracked_clients: NonZeroUsize::new(crate::state::DEFAULT_CAPACITY)
                .expect("nonzero"),
            via_memory_days: Spanned::new(0..0, crate::state::DEFAULT_VIA_MEMORY_DAYS),
        }
    }
}

pub(super) fn compile(s: StateSection) -> Result<StateSettings, Invalid> {
    let days = *s.via_memory_days.get_ref();
    if !(1..=30).contains(&days) {
        return Err((
            s.via_memory_days.span(),
            "state.via_memory_days".into(),
            format!(
                "{days} is out of range: give a whole number of days from 1 to 30, at least as long as the sending MTA keeps retrying (Postfix's maximal_queue_lifetime, 5 days by default)"
            ),
        ));
    }
    Ok(StateSettings {
        max_tracked_clients: s.max_tracked_clients.get(),
        via_memory: std::time::Duration::from_secs(days * 24 * 3600),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct SharedStateSection {
    redis_url: Option<Spanned<String>>,
    /// A file whose first line is the Redis password (instead of one in the URL).
    password_file: Option<Spanned<PathBuf>>,
    key_prefix: String,
    timeout_ms: Option<Spanned<u64>>,
    /// How this instance is named among the fleet's.
    instance_name: Option<Spanned<String>>,
}

impl Default for SharedStateSection {
    fn default() -> Self {
        Self {
            redis_url: None,
            password_file: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout_ms: None,
            instance_name: None,
        }
    }
}

/// The shared store's settings; `None` (state stays in this process) without `redis_url`.
pub(super) fn compile_shared(
    s: SharedStateSection,
    config_dir: Option<&Path>,
) -> Result<Option<SharedStateSettings>, Invalid> {
    let Some(url) = s.redis_url else {
        return Ok(None);
    };
    let timeout = match s.timeout_ms {
        Some(ms) if !(1..=10_000).contains(ms.get_ref()) => {
            return Err((
                ms.span(),
                "shared_state.timeout_ms".into(),
                format!(
                    "{} is out of range: give 1 to 10000 milliseconds (mail waits this long at most when Redis does not answer)",
                    ms.get_ref()
                ),
            ));
        }
        Some(ms) => std::time::Duration::from_millis(ms.into_inner()),
        None => crate::state::DEFAULT_TIMEOUT,
    };
    let password = match s.password_file {
        Some(file) => {
            let span = file.span();
            let path = super::relative(file.into_inner(), config_dir);
            let text =
                crate::secret_file::read_to_string(&path, "Redis password file").map_err(|e| {
                    (
                        span.clone(),
                        "shared_state.password_file".into(),
                        e.to_string(),
                    )
                })?;
            let line = text.lines().next().unwrap_or("").trim();
            if line.is_empty() {
                return Err((
                    span,
                    "shared_state.password_file".into(),
                    format!(
                        "{}: write the Redis password on its first line",
                        path.display()
                    ),
                ));
            }
            Some(Password(line.to_owned()))
        }
        None => None,
    };
    let instance_name = match s.instance_name {
        Some(name) if name.get_ref().trim().is_empty() || name.get_ref().len() > 200 => {
            return Err((
                name.span(),
                "shared_state.instance_name".into(),
                "give a name of 1 to 200 characters".into(),
            ));
        }
        Some(name) => Some(name.into_inner()),
        None => None,
    };
    let span = url.span();
    let settings = SharedStateSettings {
        redis_url: url.into_inner(),
        key_prefix: s.key_prefix,
        timeout,
        password,
        instance_name,
    };
    crate::state::check_url(&settings)
        .map_err(|e| (span, "shared_state.redis_url".into(), e.to_string()))?;
    Ok(Some(settings))
}
