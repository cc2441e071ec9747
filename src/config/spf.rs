//! `[spf]`: whether the sender's domain authorises the client (RFC 7208), and what each
//! result does.

use std::num::NonZeroU64;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::checks::spf::{Spf, SpfAction, SpfHeader};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct SpfSection {
    enabled: bool,
    treat_softfail_as_fail: bool,
    fail_action: SpfAction,
    softfail_action: SpfAction,
    temperror_action: SpfAction,
    permerror_action: SpfAction,
    header: SpfHeader,
    timeout: NonZeroU64,
}

impl Default for SpfSection {
    fn default() -> Self {
        Self {
            enabled: false,
            treat_softfail_as_fail: false,
            fail_action: SpfAction::Reject,
            softfail_action: SpfAction::Accept,
            temperror_action: SpfAction::Tempfail,
            permerror_action: SpfAction::Accept,
            header: SpfHeader::ReceivedSpf,
            timeout: NonZeroU64::new(20).expect("nonzero"),
        }
    }
}

/// The SPF check; `None` when it is disabled.
pub(super) fn compile(s: SpfSection, help_url: &Option<String>) -> Option<Spf> {
    s.enabled.then(|| Spf {
        timeout: Duration::from_secs(s.timeout.get()),
        fail_action: s.fail_action,
        softfail_action: s.softfail_action,
        temperror_action: s.temperror_action,
        permerror_action: s.permerror_action,
        treat_softfail_as_fail: s.treat_softfail_as_fail,
        header: s.header,
        help_url: help_url.clone(),
    })
}
