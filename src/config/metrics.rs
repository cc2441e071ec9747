//! `[metrics]`: where Prometheus scrapes, and the credentials it must give.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, relative};
use crate::web::{BasicAuth, MetricsSettings};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct MetricsSection {
    listen: Option<SocketAddr>,
    basic_auth_file: Option<Spanned<PathBuf>>,
}

/// The endpoint's settings; `None` (no endpoint) without `listen`.
pub(super) fn compile(
    m: MetricsSection,
    config_dir: Option<&Path>,
) -> Result<Option<MetricsSettings>, Invalid> {
    let basic_auth = match m.basic_auth_file {
        Some(file) => {
            let span = file.span();
            let path = relative(file.into_inner(), config_dir);
            Some(
                BasicAuth::load(path)
                    .map_err(|e| (span, "metrics.basic_auth_file".to_owned(), e))?,
            )
        }
        None => None,
    };
    Ok(m.listen
        .map(|listen| MetricsSettings { listen, basic_auth }))
}
