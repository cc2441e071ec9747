//! `[state]`: how much the in-process state store remembers; `[shared_state]`: the Redis a
//! fleet of instances shares it through.

use std::num::NonZeroUsize;

use serde::Deserialize;
use toml::Spanned;

use super::Invalid;
use crate::state::{DEFAULT_KEY_PREFIX, SharedStateSettings, StateSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct StateSection {
    max_tracked_clients: NonZeroUsize,
}

impl Default for StateSection {
    fn default() -> Self {
        Self {
            max_tracked_clients: NonZeroUsize::new(crate::state::DEFAULT_CAPACITY)
                .expect("nonzero"),
        }
    }
}

pub(super) fn compile(s: StateSection) -> StateSettings {
    StateSettings {
        max_tracked_clients: s.max_tracked_clients.get(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct SharedStateSection {
    redis_url: Option<Spanned<String>>,
    key_prefix: String,
    timeout_ms: Option<Spanned<u64>>,
}

impl Default for SharedStateSection {
    fn default() -> Self {
        Self {
            redis_url: None,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout_ms: None,
        }
    }
}

/// The shared store's settings; `None` (state stays in this process) without `redis_url`.
pub(super) fn compile_shared(
    s: SharedStateSection,
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
    let span = url.span();
    let settings = SharedStateSettings {
        redis_url: url.into_inner(),
        key_prefix: s.key_prefix,
        timeout,
    };
    crate::state::check_url(&settings).map_err(|e| (span, "shared_state.redis_url".into(), e))?;
    Ok(Some(settings))
}
