//! Reloading the configuration on SIGHUP: a valid file replaces the whole compiled policy at
//! once; a bad one is logged with its error and the policy in force stays.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::{Config, MilterSettings};
use crate::engine::Engine;

/// Reloads `path` into `engine`. Returns whether the new policy is in force.
pub fn reload(engine: &Engine, path: Option<&std::path::Path>, running: &MilterSettings) -> bool {
    let Some(path) = path else {
        info!(
            "reload requested, but Postern runs on its embedded default config: nothing to reload (start it with --config FILE)"
        );
        return false;
    };
    match Config::load(path) {
        Ok(config) => {
            if &config.milter != running {
                warn!("[milter] settings changed: they take effect at the next restart");
            }
            engine.replace_policy(config.policy);
            info!(config = %path.display(), "configuration reloaded");
            true
        }
        Err(e) => {
            error!(error = %e, "configuration not reloaded; the previous policy stays in force");
            false
        }
    }
}

/// Spawns a task that reloads on every SIGHUP.
pub fn reload_on_sighup(
    engine: Arc<Engine>,
    path: Option<PathBuf>,
    running: MilterSettings,
) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload(&engine, path.as_deref(), &running);
        }
    });
    Ok(())
}
