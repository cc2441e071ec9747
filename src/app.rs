//! The composition root: from a compiled [`Config`] it builds the engine with its ports (the
//! resolver, outbound delivery, the state store, the event sinks) and what each door needs,
//! and it owns every reload rule. `main.rs` is only the command line.
//!
//! A reload (SIGHUP) compiles the whole file first; a file that does not compile, or that the
//! running door cannot use, changes nothing. Otherwise everything that can change at run time
//! changes at once: the policy, the resolver's settings, the relay targets (ordinary and
//! divert alike), and for the proxy its certificates and every `[proxy]` setting; settings
//! that need a restart (listeners, connection and memory caps fixed at start) are logged by
//! key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, FixedAtStart};
use crate::dns::{Dns, DnsSettings, LookupError};
use crate::engine::Engine;
use crate::engine::events::DoorKind;
use crate::engine::ports::Store;
use crate::engine::ports::{Events, Fanout, NoResolver, Ports, Resolver};
use crate::logging::LogEvents;
use crate::metrics::Metrics;
use crate::milter::MilterSettings;
use crate::proxy::{self, ProxyDoor, ProxySettings};
use crate::relay::{Delivery, RelayOutbound, SharedDelivery};
use crate::state::{MemoryStore, RedisStore};
use crate::tracking::Tracker;
use crate::web::MetricsSettings;
use crate::web::console::{Console, ConsoleSettings, InForce};
use crate::web::health::Health;

/// The resolver port, replaced when a reload changes `[dns]` (or first needs DNS).
#[derive(Debug)]
struct CurrentResolver(ArcSwap<Box<dyn Resolver>>);

#[async_trait]
impl Resolver for CurrentResolver {
    async fn a(&self, name: &str) -> Result<Vec<std::net::Ipv4Addr>, LookupError> {
        self.0.load_full().a(name).await
    }
    async fn aaaa(&self, name: &str) -> Result<Vec<std::net::Ipv6Addr>, LookupError> {
        self.0.load_full().aaaa(name).await
    }
    async fn mx(&self, name: &str) -> Result<Vec<String>, LookupError> {
        self.0.load_full().mx(name).await
    }
    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        self.0.load_full().txt(name).await
    }
    async fn ptr(&self, ip: std::net::IpAddr) -> Result<Vec<String>, LookupError> {
        self.0.load_full().ptr(ip).await
    }
    fn authenticator(&self) -> Option<mail_auth::MessageAuthenticator> {
        self.0.load_full().authenticator()
    }
}

/// The delivery with the event sinks told of every relay attempt.
fn observed(mut delivery: Delivery, events: &Arc<dyn Events>) -> Delivery {
    delivery.events = Some(events.clone());
    delivery
}

/// Logs what check-config would warn about.
fn warn_lints(config: &Config) {
    for lint in config.lints() {
        warn!(%lint, "the configuration probably does not do what was meant");
    }
}

fn resolver_for(settings: Option<&DnsSettings>) -> anyhow::Result<Box<dyn Resolver>> {
    Ok(match settings {
        Some(s) => Box::new(Dns::new(s)?),
        None => Box::new(NoResolver),
    })
}

/// Which door runs: what of it a reload changes besides the engine's policy.
#[derive(Clone)]
pub enum Door {
    Milter,
    Proxy(ProxyDoor),
}

/// A running Postern: the engine, the relay targets in force and the door.
pub struct App {
    pub engine: Arc<Engine>,
    pub delivery: SharedDelivery,
    /// The metrics, when `[metrics]` or `[console]` is set; the endpoint is started by
    /// [`App::serve_http`].
    pub metrics: Option<Arc<Metrics>>,
    metrics_settings: Option<MetricsSettings>,
    /// The console, when `[console]` is set.
    console: Option<(ConsoleSettings, Arc<Console>)>,
    /// What `/readyz` and the console's status page ask.
    health: Arc<Health>,
    /// The configuration in force, for the console.
    in_force: Arc<Mutex<InForce>>,
    /// The fleet's configuration and reports, with `[shared_state]`.
    fleet: Option<crate::state::fleet::Fleet>,
    /// This instance's name among the fleet's, its door, and when it started.
    instance: (String, DoorKind, i64),
    /// Message tracking, when `[tracking]` is set; its settings are read at start.
    pub tracker: Option<Arc<Tracker>>,
    /// What only a restart changes, as it was at start.
    fixed: FixedAtStart,
    /// The event sinks (the log, the metrics, tracking), told of relay attempts too.
    events: Arc<dyn Events>,
    /// `--dry-run` was given: every configuration loaded runs dry.
    forced_dry_run: bool,
    resolver: Arc<CurrentResolver>,
    dns: Mutex<Option<DnsSettings>>,
}

impl App {
    /// Builds the engine and its ports from `config` for `door` (the label of its metrics
    /// and tracking records); the door settings are handed back for the door to start with.
    pub fn new(
        config: Config,
        door: DoorKind,
    ) -> anyhow::Result<(Self, MilterSettings, ProxySettings)> {
        let fixed = FixedAtStart::of(&config, door);
        let instance = (
            instance_name(&config, door),
            door,
            crate::tracking::now_ms(),
        );
        warn_lints(&config);
        let resolver = Arc::new(CurrentResolver(ArcSwap::from_pointee(resolver_for(
            config.dns.as_ref(),
        )?)));
        let metrics = (config.metrics.is_some() || config.console.is_some())
            .then(|| Arc::new(Metrics::new(door)));
        let mut sinks: Vec<Arc<dyn Events>> = vec![Arc::new(LogEvents::default())];
        sinks.extend(metrics.clone().map(|m| m as Arc<dyn Events>));
        let tracker = match &config.tracking {
            Some(settings) => {
                info!(store = %settings.store, "message tracking on");
                // Told of its own dropped records through the other sinks.
                let others: Arc<dyn Events> = Arc::new(Fanout(sinks.clone()));
                Some(Arc::new(Tracker::start(settings, door, Some(others))?))
            }
            None => None,
        };
        sinks.extend(tracker.clone().map(|t| t as Arc<dyn Events>));
        let events: Arc<dyn Events> = Arc::new(Fanout(sinks));
        if let Some(metrics) = &metrics {
            metrics.expect(&config.policy, &target_names(&config.delivery));
        }
        let delivery: SharedDelivery =
            Arc::new(ArcSwap::from_pointee(observed(config.delivery, &events)));
        let local = MemoryStore::with_capacity(config.state.max_tracked_clients);
        let store: Arc<dyn Store> = match &config.shared_state {
            Some(shared) => {
                info!(
                    redis = %crate::state::redacted(&shared.redis_url),
                    key_prefix = %shared.key_prefix,
                    "connection rates, AUTH failures and learned reputation are shared through Redis"
                );
                Arc::new(RedisStore::new(shared, local, events.clone())?)
            }
            None => Arc::new(local),
        };
        let health = Arc::new(Health::new(
            delivery.clone(),
            config.shared_state.clone(),
            config.tracking.as_ref().map(|t| t.store.clone()),
        ));
        let in_force = Arc::new(Mutex::new(InForce::new(
            config.source.file.clone(),
            &config.source.text,
        )));
        let fleet = match &config.shared_state {
            Some(shared) => Some(crate::state::fleet::Fleet::new(shared)?),
            None => None,
        };
        let console = match (config.console, &metrics) {
            (Some(settings), Some(metrics)) => {
                let console = Arc::new(Console::new(
                    &settings,
                    store.clone(),
                    config.tracking.as_ref().map(|t| t.store.clone()),
                    metrics.clone(),
                    health.clone(),
                    in_force.clone(),
                    fleet.clone(),
                ));
                Some((settings, console))
            }
            _ => None,
        };
        let ports = Ports {
            resolver: resolver.clone(),
            outbound: Arc::new(RelayOutbound::new(delivery.clone())),
            store,
            events: events.clone(),
        };
        let app = Self {
            engine: Arc::new(Engine::new(config.policy, ports)),
            delivery,
            metrics,
            metrics_settings: config.metrics,
            console,
            health,
            in_force,
            fleet,
            instance,
            tracker,
            fixed,
            events,
            forced_dry_run: false,
            resolver,
            dns: Mutex::new(config.dns),
        };
        Ok((app, config.milter, config.proxy))
    }

    /// The proxy door over this engine, with `settings` in force.
    pub fn proxy(&self, settings: ProxySettings) -> anyhow::Result<ProxyDoor> {
        if !self.delivery.load().relays() {
            anyhow::bail!(
                "no [[relay_target]] relays ordinary mail (none is configured, or all are divert_only): the proxy has nowhere to hand messages on (see config/postern.toml)"
            );
        }
        ProxyDoor::new(self.engine.clone(), settings, self.delivery.clone())
    }

    /// Reloads `path`: either all of it takes effect, or nothing does. Returns whether the
    /// new configuration is in force.
    pub fn reload(&self, path: Option<&Path>, door: &Door) -> bool {
        let Some(path) = path else {
            info!(
                "reload requested, but Postern runs on its embedded default config: nothing to reload (start it with --config FILE)"
            );
            return false;
        };
        self.take(Config::load(path), door, &path.display().to_string())
            .is_ok()
    }

    /// Puts `config` in force as a reload does, or nothing of it; `from` names where it came
    /// from (the file, or the fleet) in the log and on the console.
    fn take(
        &self,
        config: Result<Config, ConfigError>,
        door: &Door,
        from: &str,
    ) -> Result<(), String> {
        crate::notify::reloading();
        let taken = self.apply(config, door);
        match &taken {
            Ok(text) => {
                info!(config = %from, "configuration reloaded");
                self.in_force().reloaded(from, Ok(text));
            }
            Err(e) => {
                error!(config = %from, error = %e, "configuration not reloaded; the previous one stays in force");
                self.in_force().reloaded(from, Err(e));
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.reloaded(taken.is_ok());
        }
        crate::notify::ready();
        taken.map(|_| ())
    }

    /// With `[shared_state]`: every [`POLL`](crate::state::fleet::POLL), takes a configuration
    /// newly published to the fleet (checked here, with paths relative to `path`'s
    /// directory, and applied as a reload), and reports this instance's state. A reload of
    /// the local file (SIGHUP) puts that file in force until the next publication. Without
    /// Redis the instance keeps what it runs.
    pub fn follow_fleet(self: &Arc<Self>, path: Option<PathBuf>, door: Door) {
        let Some(fleet) = self.fleet.clone() else {
            return;
        };
        let app = self.clone();
        tokio::spawn(async move {
            let dir = path
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_path_buf);
            // The published digest last taken or refused, and what came of it.
            let mut seen: Option<String> = None;
            let mut outcome: Option<String> = None;
            let mut unreachable = crate::logging::Throttle::default();
            loop {
                let published = match fleet.published_digest().await {
                    Ok(Some(digest)) if seen.as_ref() != Some(&digest) => fleet
                        .published()
                        .await
                        .map(|p| p.filter(|p| p.digest == digest)),
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                };
                let reported = match published {
                    // Already what this instance runs (its own file is the published one).
                    Ok(Some(p)) if p.digest == app.in_force().digest => {
                        outcome = Some(format!("applied {}", p.digest));
                        seen = Some(p.digest);
                        Ok(())
                    }
                    Ok(Some(p)) => {
                        let short: String = p.digest.chars().take(12).collect();
                        let name = format!("fleet configuration {short}");
                        let taken = if crate::config::digest(&p.text) != p.digest {
                            let why = "its text does not have the digest it was published with: publish it again with `postern apply`";
                            warn!(config = %name, "fleet configuration refused: {why}");
                            Err(why.to_owned())
                        } else {
                            let config = Config::parse_in(&p.text, &name, dir.as_deref());
                            app.take(config, &door, &format!("{name} (by {})", p.by))
                        };
                        outcome = Some(match taken {
                            Ok(()) => format!("applied {}", p.digest),
                            Err(e) => format!("refused {}: {e}", p.digest),
                        });
                        seen = Some(p.digest);
                        Ok(())
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                let peer = app.peer(outcome.clone());
                let reported = match reported {
                    Ok(()) => fleet.report(&peer).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = reported
                    && let Some(n) = unreachable.due(std::time::Duration::from_secs(300), 1)
                {
                    warn!(error = %e, times = n, "fleet: cannot reach Redis; this instance keeps the configuration it runs");
                }
                tokio::time::sleep(crate::state::fleet::POLL).await;
            }
        });
    }

    /// This instance's report to the fleet.
    fn peer(&self, fleet: Option<String>) -> crate::state::fleet::Peer {
        let (name, door, started_ms) = &self.instance;
        crate::state::fleet::Peer {
            name: name.clone(),
            door: door.name().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_ms: *started_ms,
            seen_ms: crate::tracking::now_ms(),
            digest: self.in_force().digest.clone(),
            fleet,
        }
    }

    fn in_force(&self) -> std::sync::MutexGuard<'_, InForce> {
        self.in_force.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `config`; the text it was compiled from when it is in force.
    fn apply(&self, config: Result<Config, ConfigError>, door: &Door) -> Result<String, String> {
        let mut config = config.map_err(|e| e.to_string())?;
        warn_lints(&config);
        config.policy.dry_run |= self.forced_dry_run;
        // Everything that can fail is prepared before anything changes.
        if matches!(door, Door::Proxy(_)) && !config.delivery.relays() {
            return Err("no [[relay_target]] relays ordinary mail: the proxy would have nowhere to hand messages on".into());
        }
        let mut dns = self.dns.lock().unwrap_or_else(|e| e.into_inner());
        let resolver = if *dns != config.dns {
            Some(resolver_for(config.dns.as_ref()).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let acceptor = match door {
            Door::Proxy(proxy) => Some(proxy.prepare_reload(&config.proxy)?),
            Door::Milter => None,
        };
        // Now all at once.
        if let Some(resolver) = resolver {
            info!("[dns] settings changed: the resolver is replaced");
            self.resolver.0.store(Arc::new(resolver));
            dns.clone_from(&config.dns);
        }
        for key in self.fixed.changed(&config) {
            warn!(%key, "setting changed: it takes effect at the next restart");
        }
        if let Some(metrics) = &self.metrics {
            metrics.expect(&config.policy, &target_names(&config.delivery));
        }
        self.delivery
            .store(Arc::new(observed(config.delivery, &self.events)));
        if let Door::Proxy(proxy) = door {
            proxy.reload(config.proxy, acceptor.flatten());
        }
        if let (Some((_, console)), Some(settings)) = (&self.console, config.console) {
            console.replace_users(settings.users);
        }
        self.engine.replace_policy(config.policy);
        Ok(config.source.text)
    }

    /// Binds the HTTP listeners (`[metrics] listen`, `[console] listen`; one when both name
    /// the same address) and serves `/metrics`, `/healthz`, `/readyz` and the console on each
    /// in the background.
    pub async fn serve_http(&self) -> anyhow::Result<()> {
        let mut router = crate::web::health::routes(self.health.clone());
        let mut listeners: Vec<(
            std::net::SocketAddr,
            &str,
            Option<tokio_rustls::TlsAcceptor>,
        )> = Vec::new();
        if let (Some(metrics), Some(settings)) = (&self.metrics, &self.metrics_settings) {
            router = router.merge(crate::web::metrics_routes(
                metrics.clone(),
                settings.basic_auth.clone(),
            ));
            listeners.push((settings.listen, "metrics", None));
        }
        if let Some((settings, console)) = &self.console {
            router = router.merge(crate::web::console::routes(console.clone()));
            let tls = settings.tls().map_err(anyhow::Error::msg)?;
            match listeners
                .iter_mut()
                .find(|(addr, _, _)| *addr == settings.listen)
            {
                Some(shared) => shared.2 = tls,
                None => listeners.push((settings.listen, "the console", tls)),
            }
        }
        let router = router.fallback(crate::web::not_found);
        for (addr, what, tls) in listeners {
            let listener = crate::web::bind(addr, what).await?;
            tokio::spawn(crate::web::serve(
                crate::web::Listener { listener, tls },
                router.clone(),
            ));
        }
        Ok(())
    }

    /// At shutdown: lets the tracking writer store what is queued (for a few seconds at most).
    pub async fn finish_tracking(&self) {
        if let Some(tracker) = &self.tracker {
            tracker.finish(std::time::Duration::from_secs(5)).await;
        }
    }

    /// Spawns a task that reloads `path` on every SIGHUP.
    pub fn reload_on_sighup(
        self: &Arc<Self>,
        path: Option<PathBuf>,
        door: Door,
    ) -> std::io::Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        let app = self.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                app.reload(path.as_deref(), &door);
            }
        });
        Ok(())
    }
}

/// Runs the milter door until `shutdown`.
pub async fn run_milter(
    config: Config,
    path: Option<PathBuf>,
    listen: Option<crate::milter::socket::ListenSocket>,
    dry_run: bool,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (mut app, milter, _) = App::new(config, DoorKind::Milter)?;
    app.forced_dry_run = dry_run;
    app.serve_http().await?;
    let app = Arc::new(app);
    app.follow_fleet(path.clone(), Door::Milter);
    app.reload_on_sighup(path, Door::Milter)?;
    let listen = listen.unwrap_or_else(|| milter.listen.clone());
    let result = crate::milter::run(app.engine.clone(), &milter, &listen, shutdown).await;
    app.finish_tracking().await;
    result
}

/// Runs the proxy door until `shutdown`.
pub async fn run_proxy(
    config: Config,
    path: Option<PathBuf>,
    dry_run: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (mut app, _, settings) = App::new(config, DoorKind::Proxy)?;
    app.forced_dry_run = dry_run;
    app.serve_http().await?;
    let app = Arc::new(app);
    let door = app.proxy(settings)?;
    app.follow_fleet(path.clone(), Door::Proxy(door.clone()));
    app.reload_on_sighup(path, Door::Proxy(door.clone()))?;
    let result = proxy::run(door, shutdown).await;
    app.finish_tracking().await;
    result
}

/// This instance's name among the fleet's: `[shared_state] instance_name`, else the host
/// name, the door and its first listener.
fn instance_name(config: &Config, door: DoorKind) -> String {
    if let Some(name) = config
        .shared_state
        .as_ref()
        .and_then(|s| s.instance_name.clone())
    {
        return name;
    }
    let listen = match door {
        DoorKind::Milter => config.milter.listen.to_string(),
        DoorKind::Proxy => config
            .proxy
            .listen
            .iter()
            .chain(&config.proxy.listen_tls)
            .next()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    };
    format!("{} {} {listen}", config.policy.hostname, door.name())
}

/// The names of the relay targets, for the metrics' series.
fn target_names(delivery: &Delivery) -> Vec<String> {
    delivery.targets.iter().map(|t| t.name.clone()).collect()
}
