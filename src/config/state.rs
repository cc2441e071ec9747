//! `[state]`: how much the in-process state store remembers.

use std::num::NonZeroUsize;

use serde::Deserialize;

use crate::state::StateSettings;

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
