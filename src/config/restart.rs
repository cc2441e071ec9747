//! Which settings a reload cannot change. Listeners, the caps sized for them, the state store,
//! the metrics endpoint, the console (but its users), the log and message tracking are set up once; a reload that changes
//! one of them logs it, and it takes effect at the next restart. One list for both doors.

use super::Config;
use crate::engine::events::DoorKind;
use crate::logging::LogSettings;
use crate::milter::MilterSettings;
use crate::proxy::ProxySettings;
use crate::state::{SharedStateSettings, StateSettings};
use crate::tracking::TrackingSettings;
use crate::web::MetricsSettings;
use crate::web::console::ConsoleSettings;

/// The settings a process started with that only a restart changes.
#[derive(Clone, Debug)]
pub struct FixedAtStart {
    door: DoorKind,
    state: StateSettings,
    shared_state: Option<SharedStateSettings>,
    metrics: Option<MetricsSettings>,
    /// The console's settings but its users (which follow reloads).
    console: Option<ConsoleSettings>,
    log: LogSettings,
    tracking: Option<TrackingSettings>,
    milter: MilterSettings,
    proxy: ProxySettings,
}

impl FixedAtStart {
    /// What `config` fixes for a process serving `door`.
    pub fn of(config: &Config, door: DoorKind) -> Self {
        Self {
            door,
            state: config.state.clone(),
            shared_state: config.shared_state.clone(),
            metrics: config.metrics.clone(),
            console: console_fixed(config),
            log: config.log.clone(),
            tracking: config.tracking.clone(),
            milter: config.milter.clone(),
            proxy: config.proxy.clone(),
        }
    }

    /// The keys (`section` or `section.key`) whose value in `new` differs from the one in
    /// force since start.
    pub fn changed(&self, new: &Config) -> Vec<String> {
        let mut keys: Vec<String> = differing([
            ("state", self.state != new.state),
            ("shared_state", self.shared_state != new.shared_state),
            ("metrics", self.metrics != new.metrics),
            ("console", self.console != console_fixed(new)),
            ("log", self.log != new.log),
            ("tracking", self.tracking != new.tracking),
        ])
        .into_iter()
        .map(str::to_owned)
        .collect();
        let (section, door_keys) = match self.door {
            DoorKind::Milter => ("milter", milter_keys(&self.milter, &new.milter)),
            DoorKind::Proxy => ("proxy", proxy_keys(&self.proxy, &new.proxy)),
        };
        keys.extend(door_keys.into_iter().map(|key| format!("{section}.{key}")));
        keys
    }
}

/// What of `[console]` is set up once: all but its users file, which follows reloads.
fn console_fixed(config: &Config) -> Option<ConsoleSettings> {
    config.console.clone().map(|c| ConsoleSettings {
        users: Default::default(),
        users_file: Default::default(),
        ..c
    })
}

/// Every `[milter]` key: the listener and its limits are set up once.
fn milter_keys(running: &MilterSettings, new: &MilterSettings) -> Vec<&'static str> {
    differing([
        ("listen", running.listen != new.listen),
        ("socket_mode", running.socket_mode != new.socket_mode),
        (
            "max_inbound_connections",
            running.max_inbound_connections != new.max_inbound_connections,
        ),
        (
            "connection_timeout",
            running.connection_timeout != new.connection_timeout,
        ),
        (
            "shutdown_timeout",
            running.shutdown_timeout != new.shutdown_timeout,
        ),
    ])
}

/// The `[proxy]` keys of its listeners and of the caps sized when it starts; the others apply
/// to the next conversation.
fn proxy_keys(running: &ProxySettings, new: &ProxySettings) -> Vec<&'static str> {
    differing([
        ("listen", running.listen != new.listen),
        ("listen_tls", running.listen_tls != new.listen_tls),
        (
            "submission_listen",
            running.submission_listen != new.submission_listen,
        ),
        ("tls_support", running.tls.support != new.tls.support),
        (
            "max_inbound_connections",
            running.max_inbound_connections != new.max_inbound_connections,
        ),
        (
            "max_inbound_tls_connections",
            running.max_inbound_tls_connections != new.max_inbound_tls_connections,
        ),
        (
            "message_memory_budget",
            running.message_memory_budget != new.message_memory_budget,
        ),
    ])
}

fn differing<const N: usize>(keys: [(&'static str, bool); N]) -> Vec<&'static str> {
    keys.into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "test.toml").expect("the configuration compiles")
    }

    #[test]
    fn only_keys_set_up_at_start_are_named_each_with_its_section() {
        let start = config("[proxy]\nlisten = [\"127.0.0.1:2525\"]\n");
        let fixed = FixedAtStart::of(&start, DoorKind::Proxy);
        assert!(fixed.changed(&start).is_empty());
        let new = config(
            "[proxy]\nlisten = [\"127.0.0.1:2526\"]\nbanner = \"other\"\n[log]\nformat = \"json\"\n[milter]\nsocket_mode = \"0600\"\n",
        );
        // The banner applies at once; the milter section is not this door's.
        assert_eq!(fixed.changed(&new), ["log", "proxy.listen"]);
        let milter = FixedAtStart::of(&start, DoorKind::Milter);
        assert_eq!(milter.changed(&new), ["log", "milter.socket_mode"]);
    }
}
