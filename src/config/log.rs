//! `[log]`: the format and level of log lines.

use serde::Deserialize;
use toml::Spanned;

use super::Invalid;
use crate::logging::{LogFormat, LogSettings, valid_level};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct LogSection {
    format: LogFormat,
    level: Option<Spanned<String>>,
}

pub(super) fn compile(l: LogSection) -> Result<LogSettings, Invalid> {
    let level = match l.level {
        Some(level) => {
            valid_level(level.get_ref()).map_err(|e| (level.span(), "log.level".to_owned(), e))?;
            level.into_inner()
        }
        None => LogSettings::default().level,
    };
    Ok(LogSettings {
        format: l.format,
        level,
    })
}
