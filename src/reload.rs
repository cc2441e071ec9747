//! Reloading the configuration on SIGHUP: a valid file replaces the whole compiled policy at
//! once; a bad one is logged with its error and the policy in force stays. A door can take
//! more from the new file (the proxy its certificates) through `also`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use crate::config::Config;
use crate::engine::Engine;

/// What a door takes from a reloaded configuration before its policy goes into force; an
/// error refuses the whole reload.
pub type Also = Box<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

/// Reloads `path` into `engine`. Returns whether the new policy is in force.
pub fn reload(engine: &Engine, path: Option<&std::path::Path>, also: &Also) -> bool {
    let Some(path) = path else {
        info!(
            "reload requested, but Postern runs on its embedded default config: nothing to reload (start it with --config FILE)"
        );
        return false;
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            error!(error = %e, "configuration not reloaded; the previous policy stays in force");
            return false;
        }
    };
    if let Err(e) = also(&config) {
        error!(error = %e, "configuration not reloaded; the previous policy stays in force");
        return false;
    }
    engine.replace_policy(config.policy);
    info!(config = %path.display(), "configuration reloaded");
    true
}

/// Spawns a task that reloads on every SIGHUP.
pub fn reload_on_sighup(
    engine: Arc<Engine>,
    path: Option<PathBuf>,
    also: Also,
) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload(&engine, path.as_deref(), &also);
        }
    });
    Ok(())
}
