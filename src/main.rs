//! The `postern` command line.

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use postern::config::{Config, DEFAULT_CONFIG_NAME, SYSTEM_CONFIG, config_path};
use postern::engine::rules::protect::Protector;
use postern::engine::rules::unprotect::unprotect_message;
use postern::milter::socket::ListenSocket;
use postern::tracking::query::{Filter, find, json, parse_time_now, table};

/// Postern: an SMTP policy engine. One policy (connection checks and content rules) for every
/// message, applied as a milter beside Postfix or Sendmail, or as an SMTP proxy in front of a
/// mail server.
///
/// Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to change their level.
#[derive(Parser)]
#[command(version, about, long_about, after_long_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  postern milter                                  embedded default policy, inet:127.0.0.1:7357
  postern milter -c /etc/postern/postern.toml -l unix:/var/spool/postfix/postern/postern.sock
  postern proxy -c /etc/postern/postern.toml       SMTP proxy, relays to [[relay_target]]s
  postern check-config -c /etc/postern/postern.toml
  postern track -c /etc/postern/postern.toml --recipient bob@example.org --since 1h
  postern unprotect --key-file /etc/postern/protect.key --message < received.eml

Postfix main.cf:
  smtpd_milters = inet:127.0.0.1:7357
  milter_default_action = tempfail

Every configuration key, with its default, is documented in config/postern.toml.";

#[derive(Subcommand)]
enum Command {
    /// Run as a milter beside Postfix or Sendmail
    ///
    /// Point Postfix's smtpd_milters (or Sendmail's INPUT_MAIL_FILTER) at the socket. SIGHUP
    /// reloads the config; SIGTERM stops after messages in flight finish.
    Milter {
        /// Configuration file (TOML). Without it /etc/postern/postern.toml when it exists, else
        /// the embedded default policy (the documented config/postern.toml).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Socket to listen on, overriding [milter] listen: inet:HOST:PORT or unix:/path.
        #[arg(short, long, value_name = "SOCKET")]
        listen: Option<ListenSocket>,
        /// Run every check and rule and report what they would have done, but refuse and
        /// change nothing (as [scan] dry_run = true; kept across reloads).
        #[arg(long)]
        dry_run: bool,
    },
    /// Run as an SMTP proxy in front of a mail server
    ///
    /// Postern's own listeners (STARTTLS, implicit TLS, submission with AUTH), the same
    /// policy, and every accepted message handed to the [[relay_target]]s before the client
    /// hears 250. SIGHUP reloads the config (listeners need a restart); SIGTERM stops after
    /// conversations in progress finish.
    Proxy {
        /// Configuration file (TOML). Without it /etc/postern/postern.toml when it exists, else
        /// the embedded default: listen on 127.0.0.1:2525, relay to the MTA on 127.0.0.1:25.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Run every check and rule and report what they would have done, but refuse and
        /// change nothing (as [scan] dry_run = true; kept across reloads).
        #[arg(long)]
        dry_run: bool,
    },
    /// Show message tracking records
    ///
    /// What became of each message and recipient (accepted, refused with the reply, relayed
    /// to which target), newest first, from the store [tracking] names. Conditions given
    /// together must all hold; addresses ignore case and `@domain` matches a whole domain.
    Track {
        /// Configuration file (TOML) whose [tracking] section names the store; without it
        /// /etc/postern/postern.toml.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Envelope sender (MAIL FROM), or @domain.
        #[arg(long, value_name = "ADDRESS")]
        sender: Option<String>,
        /// Recipient (RCPT TO), accepted or refused, or @domain.
        #[arg(long, value_name = "ADDRESS")]
        recipient: Option<String>,
        /// Client IP address.
        #[arg(long, value_name = "IP")]
        client: Option<std::net::IpAddr>,
        /// The MTA's queue id (milter door).
        #[arg(long, value_name = "ID")]
        queue_id: Option<String>,
        /// The Message-ID header, with or without angle brackets.
        #[arg(long, value_name = "ID")]
        message_id: Option<String>,
        /// Verdict: continue, reject, tempfail, discard or drop.
        #[arg(long, value_name = "VERDICT")]
        verdict: Option<String>,
        /// Organization ([[organization]] name): records of its recipients and its senders.
        #[arg(long, value_name = "NAME")]
        organization: Option<String>,
        /// From this time: an age (90s, 30m, 1h, 2d, 1w), a date (2026-12-01, UTC) or RFC 3339.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Before this time, written as for --since.
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// At most this many records.
        #[arg(long, value_name = "N", default_value_t = postern::tracking::query::DEFAULT_LIMIT)]
        limit: u32,
        /// table (two lines per record, 100 columns) or json (one array of records).
        #[arg(long, value_enum, default_value_t = TrackFormat::Table, hide_possible_values = true)]
        format: TrackFormat,
        /// Table: the second line of each record whole (Message-ID, HELO, session), not cut
        /// at 100 columns.
        #[arg(long)]
        wide: bool,
    },
    /// Publish a configuration to the fleet
    ///
    /// Checks FILE as check-config does and publishes it through the Redis of its
    /// [shared_state]; every instance of the fleet takes it within 5 s (checking it itself,
    /// with its own paths, and applying it as SIGHUP does) and reports what it did: see
    /// `postern fleet` or the console's /fleet. A later SIGHUP puts an instance's own file in
    /// force until the next publication.
    Apply {
        /// The configuration (TOML) for every instance; its [shared_state] names the fleet.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Show the instances of the fleet and the configuration each runs
    ///
    /// From the Redis of [shared_state]: each instance's name, door, version, uptime, the
    /// digest of its configuration, and what it did with the published one.
    Fleet {
        /// Configuration file (TOML) whose [shared_state] names the fleet; without it
        /// /etc/postern/postern.toml.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print an argon2id hash of a password read from stdin
    ///
    /// For [proxy] auth_users_file (`user:HASH` lines) and [console] users_file
    /// (`user:HASH:role` lines).
    HashPassword,
    /// Validate a configuration file and summarise the policy
    ///
    /// Prints a summary of the compiled policy. Exits non-zero, naming file, line and key,
    /// when the file is not valid, or when the tracking database's directory cannot be
    /// written.
    CheckConfig {
        /// Configuration file (TOML); without it /etc/postern/postern.toml.
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The same, as the other commands take it.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Also connect to the services the file names ([shared_state] redis_url, a
        /// PostgreSQL [tracking] store, each [[relay_target]] with its TLS and AUTH) and fail,
        /// saying why, when one does not answer.
        #[arg(long)]
        connect: bool,
    },
    /// Write the manual pages into DIR: postern.8 and one page per command from this command
    /// line, postern.toml.5 from the documented configuration (man/ holds them, built so).
    #[command(hide = true)]
    Manual {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Restore values that a `protect` rule encrypted
    ///
    /// Reads stdin, writes stdout. Give the rule's key, tweak and markers; with --message,
    /// stdin is a whole message and every part is decoded, restored and re-encoded as the
    /// content stage wrote it.
    Unprotect {
        /// File holding the rule's key (64 hex digits).
        #[arg(long, value_name = "FILE", required_unless_present = "key_env")]
        key_file: Option<PathBuf>,
        /// Environment variable holding the key, instead of a file.
        #[arg(long, value_name = "VAR", conflicts_with = "key_file")]
        key_env: Option<String>,
        /// The rule's tweak.
        #[arg(long, default_value = "")]
        tweak: String,
        /// The rule's prefix marker.
        #[arg(long, default_value = "[p:")]
        prefix: String,
        /// The rule's suffix marker.
        #[arg(long, default_value = "]")]
        suffix: String,
        /// Stdin is a whole RFC 5322 message rather than plain text.
        #[arg(long)]
        message: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TrackFormat {
    Table,
    Json,
}

/// `postern check-config`: the summary of a valid file, or what is wrong with it (or, with
/// `connect`, with a service it names).
fn check_config(file: &std::path::Path, connect: bool) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let config = Config::load(file)?;
    // One runtime for everything --connect tries.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = format!("{}: OK\n{}\n", file.display(), config.policy);
    let _ = writeln!(out, "milter listen:           {}", config.milter.listen);
    let listen: Vec<String> = config.proxy.listen.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(out, "proxy listen:            {}", listen.join(", "));
    if let Some(m) = &config.metrics {
        let _ = writeln!(
            out,
            "metrics listen:          http://{}/metrics (and /healthz, /readyz){}",
            m.listen,
            if m.basic_auth.is_some() {
                ", Basic credentials"
            } else {
                ""
            }
        );
    }
    if let Some(c) = &config.console {
        let scheme = if c.certificate_file.is_some() {
            "https"
        } else {
            "http"
        };
        let _ = writeln!(
            out,
            "console:                 {scheme}://{}/login, {} users from {}",
            c.listen,
            c.users.len(),
            c.users_file.display()
        );
    }
    for t in &config.delivery.targets {
        let _ = writeln!(
            out,
            "relay target:            {} {}:{} priority {} security {}",
            t.name,
            t.host,
            t.port,
            t.priority,
            t.security.name()
        );
    }
    if connect && !config.delivery.targets.is_empty() {
        let mut failed = Vec::new();
        for (name, result) in runtime.block_on(config.delivery.try_each()) {
            match result {
                Ok(how) => {
                    let _ = writeln!(out, "relay target {name}:       {how}");
                }
                Err(why) => failed.push(format!("relay target {name}: {why}")),
            }
        }
        if !failed.is_empty() {
            anyhow::bail!("{}", failed.join("; "));
        }
    }
    if let Some(tracking) = &config.tracking {
        tracking
            .store
            .check_writable()
            .map_err(anyhow::Error::msg)?;
        let reach = match (&tracking.store, connect) {
            (postern::tracking::StoreSettings::Postgres(_), true) => {
                runtime.block_on(tracking.store.try_connect())?;
                " (reachable)"
            }
            (postern::tracking::StoreSettings::Postgres(_), false) => {
                " (not tried; --connect tries it)"
            }
            _ => "",
        };
        let _ = writeln!(out, "message tracking:        {}{reach}", tracking.store);
    }
    for lint in config.lints() {
        let _ = writeln!(out, "warning: {lint}");
    }
    match &config.shared_state {
        Some(shared) => {
            let url = postern::state::redacted(&shared.redis_url);
            let reach = if connect {
                // Connecting may take longer than one call is allowed to.
                let wait = shared.timeout.max(std::time::Duration::from_secs(2));
                runtime.block_on(postern::state::ping(shared, wait))?;
                "reachable"
            } else {
                "not tried; --connect tries it"
            };
            let _ = writeln!(
                out,
                "shared state:            {url} prefix {:?} timeout {} ms ({reach})",
                shared.key_prefix,
                shared.timeout.as_millis()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "shared state:            none (state stays in this process)"
            );
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Track {
            config,
            sender,
            recipient,
            client,
            queue_id,
            message_id,
            verdict,
            organization,
            since,
            until,
            limit,
            format,
            wide,
        } => {
            let filter = (|| -> Result<Filter, String> {
                let time = |t: Option<String>, flag: &str| {
                    t.map(|t| parse_time_now(&t).map_err(|e| format!("{flag} {e}")))
                        .transpose()
                };
                Ok(Filter {
                    sender,
                    recipient,
                    client,
                    queue_id,
                    message_id,
                    verdict: verdict.map(|v| v.to_lowercase()),
                    organization,
                    since_ms: time(since, "--since")?,
                    until_ms: time(until, "--until")?,
                    limit,
                    ..Filter::default()
                })
            })();
            let config = config_path(config);
            match filter.and_then(|f| track(config.as_deref(), &f, format, wide)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("postern: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig {
            file,
            config,
            connect,
        } => match check_config(
            &config_path(file.or(config)).unwrap_or_else(|| PathBuf::from(SYSTEM_CONFIG)),
            connect,
        ) {
            Ok(out) => {
                // A reader that stops early (`| head`) is no error of the file's.
                use std::io::Write as _;
                let _ = std::io::stdout().write_all(out.as_bytes());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("postern: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Unprotect {
            key_file,
            key_env,
            tweak,
            prefix,
            suffix,
            message,
        } => match unprotect(key_file, key_env, &tweak, &prefix, &suffix, message) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("postern: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Manual { dir } => match manual(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "postern: cannot write the manual pages into {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        },
        Command::Apply { file } => match apply(&file) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("postern: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Fleet { config } => {
            let file = config_path(config).unwrap_or_else(|| PathBuf::from(SYSTEM_CONFIG));
            match fleet(&file) {
                Ok(out) => {
                    use std::io::Write as _;
                    let _ = std::io::stdout().write_all(out.as_bytes());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("postern: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::HashPassword => {
            let mut password = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut password) {
                eprintln!("postern: cannot read the password from stdin: {e}");
                return ExitCode::FAILURE;
            }
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                eprintln!("postern: the password is empty");
                return ExitCode::FAILURE;
            }
            match postern::proxy::users::hash_password(password) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("postern: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Milter {
            config,
            listen,
            dry_run,
        } => {
            let config = config_path(config);
            match start(config.as_deref(), "milter", dry_run) {
                Some(loaded) => serve(run_milter(loaded, config, listen, dry_run)),
                None => ExitCode::FAILURE,
            }
        }
        Command::Proxy { config, dry_run } => {
            let config = config_path(config);
            match start(config.as_deref(), "proxy", dry_run) {
                Some(loaded) => serve(run_proxy(loaded, config, dry_run)),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// Prints the tracking records `filter` selects from the store `config` names.
fn track(
    config: Option<&Path>,
    filter: &Filter,
    format: TrackFormat,
    wide: bool,
) -> Result<(), String> {
    let (loaded, name) = match config {
        Some(path) => (
            Config::load(path).map_err(|e| e.to_string())?,
            path.display().to_string(),
        ),
        None => (Config::embedded_default(), DEFAULT_CONFIG_NAME.to_owned()),
    };
    let Some(tracking) = loaded.tracking else {
        return Err(format!(
            "message tracking is not configured in {name}: set [tracking] store = \"sqlite\" with path (or \"postgres\" with url) there, and give the file with --config (or install it as {SYSTEM_CONFIG})"
        ));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let records = runtime
        .block_on(find(&tracking.store, filter))
        .map_err(|e| e.to_string())?;
    let out = match format {
        TrackFormat::Table => table(&records, wide),
        TrackFormat::Json => json(&records),
    };
    use std::io::Write as _;
    // A reader that stops early (`| head`) is no error.
    let _ = std::io::stdout().write_all(out.as_bytes());
    Ok(())
}

/// The fleet of `config`'s `[shared_state]`, on a runtime of its own.
fn fleet_of(
    config: &Config,
    file: &Path,
) -> anyhow::Result<(postern::state::fleet::Fleet, tokio::runtime::Runtime)> {
    let Some(shared) = &config.shared_state else {
        anyhow::bail!(
            "{} has no [shared_state] redis_url: a fleet shares its configuration through that Redis (see config/postern.toml)",
            file.display()
        );
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let fleet = {
        let _inside = runtime.enter();
        postern::state::fleet::Fleet::new(shared)?
    };
    Ok((fleet, runtime))
}

/// `postern apply FILE`: checks FILE and publishes it to its fleet.
fn apply(file: &Path) -> anyhow::Result<String> {
    let config = Config::load(file)?;
    let (fleet, runtime) = fleet_of(&config, file)?;
    let digest = config.source.digest();
    let by = format!("postern apply on {}", config.policy.hostname);
    runtime
        .block_on(fleet.publish(&config.source.text, &digest, &by))
        .map_err(anyhow::Error::msg)?;
    Ok(format!(
        "{}: OK, published to the fleet as {digest}
every instance takes it within {} s; `postern fleet` shows what each did
",
        file.display(),
        postern::state::fleet::POLL.as_secs()
    ))
}

/// `postern fleet`: each instance's report, one line each.
fn fleet(file: &Path) -> anyhow::Result<String> {
    use postern::state::fleet::SILENT_AFTER_MS;
    use std::fmt::Write as _;
    let config = Config::load(file)?;
    let (fleet, runtime) = fleet_of(&config, file)?;
    let (published, peers) = runtime
        .block_on(async { Ok::<_, String>((fleet.published().await?, fleet.peers().await?)) })
        .map_err(anyhow::Error::msg)?;
    let now = postern::tracking::now_ms();
    let mut out = match &published {
        Some(p) => format!(
            "published: {} at {} by {}
",
            p.digest,
            postern::tracking::format_time(p.at_ms),
            p.by
        ),
        None => "published: nothing yet (postern apply FILE publishes)
"
        .to_owned(),
    };
    for p in &peers {
        let state = if now - p.seen_ms > SILENT_AFTER_MS {
            format!("silent since {}", postern::tracking::format_time(p.seen_ms))
        } else {
            format!("up {} s", (now - p.started_ms) / 1000)
        };
        let _ = writeln!(
            out,
            "{}  {} {}  {}  runs {}  {}",
            p.name,
            p.door,
            p.version,
            state,
            &p.digest,
            p.fleet
                .as_deref()
                .unwrap_or("has taken no fleet configuration")
        );
    }
    let _ = writeln!(out, "({} instances)", peers.len());
    Ok(out)
}

/// Runs a door on a single-threaded runtime.
fn serve(door: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postern: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(door) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn unprotect(
    key_file: Option<PathBuf>,
    key_env: Option<String>,
    tweak: &str,
    prefix: &str,
    suffix: &str,
    message: bool,
) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let key = postern::secret_file::load_secret(key_file.as_deref(), key_env.as_deref(), "key")?
        .aes256_key()
        .map_err(anyhow::Error::msg)?;
    if prefix.is_empty() || suffix.is_empty() {
        anyhow::bail!("--prefix and --suffix must not be empty: they mark the protected values");
    }
    let protector = Protector::new(&key, tweak, prefix, suffix);
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let (output, restored) = if message {
        unprotect_message(&input, &protector)?
    } else {
        let text = String::from_utf8(input).map_err(|_| {
            anyhow::anyhow!("stdin is not UTF-8 text; use --message for a whole message")
        })?;
        let (plain, restored, failed) = protector.unprotect_text(&text);
        if failed > 0 {
            eprintln!(
                "postern: {failed} marked values could not be decrypted (another key or tweak?)"
            );
        }
        (plain.into_bytes(), restored)
    };
    std::io::stdout().write_all(&output)?;
    eprintln!("postern: restored {restored} protected values");
    Ok(())
}

/// Loads the configuration (or the embedded default), sets up logging to stderr as `[log]`
/// says and logs the start; `None` (said on stderr) when the file cannot be used.
fn start(path: Option<&Path>, door: &str, dry_run: bool) -> Option<Config> {
    let mut config = match path {
        Some(p) => match Config::load(p) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("postern: {e}");
                return None;
            }
        },
        None => Config::embedded_default(),
    };
    postern::logging::init(&config.log);
    config.policy.dry_run |= dry_run;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        door,
        config = path.map_or_else(
            || format!("{DEFAULT_CONFIG_NAME} (no {SYSTEM_CONFIG})"),
            |p| p.display().to_string()
        ),
        dry_run = config.policy.dry_run,
        "postern starting"
    );
    Some(config)
}

/// Resolves on SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    })
}

async fn run_milter(
    config: Config,
    path: Option<PathBuf>,
    listen: Option<ListenSocket>,
    dry_run: bool,
) -> anyhow::Result<()> {
    postern::app::run_milter(config, path, listen, dry_run, shutdown_signal()?).await
}

async fn run_proxy(config: Config, path: Option<PathBuf>, dry_run: bool) -> anyhow::Result<()> {
    postern::app::run_proxy(config, path, dry_run, shutdown_signal()?).await
}

/// The date the manual pages carry (`.TH`); moved on when they change in substance.
const MANUAL_DATE: &str = "2026-12-06";

/// The manual pages: one per command (section 8, an administrator's command) and the
/// configuration file's (section 5), which is the documented example itself. Beside what the
/// command line says, each page has the sections a Unix administrator looks for: EXIT STATUS,
/// ENVIRONMENT, FILES, SIGNALS (the daemons), EXAMPLES in no-fill and SEE ALSO.
fn manual(dir: &Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    fn pages(cmd: clap::Command, parent: Option<&str>, dir: &Path) -> std::io::Result<()> {
        let name = match parent {
            Some(p) => format!("{p}-{}", cmd.get_name()),
            None => cmd.get_name().to_owned(),
        };
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            pages(sub, Some(&name), dir)?;
        }
        let subcommands = cmd.get_subcommands().any(|s| !s.is_hide_set());
        let synopsis_of = cmd.clone();
        let invocation = match parent {
            Some(_) => format!("postern {}", cmd.get_name()),
            None => "postern".to_owned(),
        };
        let man = clap_mangen::Man::new(cmd)
            .section("8")
            .manual("Postern")
            .date(MANUAL_DATE)
            .source(concat!("postern ", env!("CARGO_PKG_VERSION")));
        let mut page = Vec::new();
        man.render_title(&mut page)?;
        man.render_name_section(&mut page)?;
        page.extend_from_slice(synopsis(&synopsis_of, &invocation).as_bytes());
        man.render_description_section(&mut page)?;
        man.render_options_section(&mut page)?;
        if subcommands {
            man.render_subcommands_section(&mut page)?;
        }
        page.extend_from_slice(manual_sections(&name).as_bytes());
        std::fs::write(dir.join(format!("{name}.8")), page)
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    pages(cmd, None, dir)?;
    std::fs::write(dir.join("postern.toml.5"), config_page())
}

/// SYNOPSIS with each option's argument name (`[-c FILE]`), as Postfix's pages write it.
fn synopsis(cmd: &clap::Command, invocation: &str) -> String {
    let roff = |s: &str| s.replace('-', "\\-");
    let mut line = format!("\\fB{}\\fR", roff(invocation));
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        line.push_str(" \\fICOMMAND\\fR [\\fIOPTIONS\\fR]");
    }
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| id.to_uppercase());
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
        let text = if arg.is_positional() {
            format!("\\fI{}\\fR", roff(&value))
        } else {
            let flag = match (arg.get_short(), arg.get_long()) {
                (Some(c), _) => format!("\\fB\\-{c}\\fR"),
                (None, Some(l)) => format!("\\fB\\-\\-{}\\fR", roff(l)),
                (None, None) => continue,
            };
            if takes_value {
                format!("{flag} \\fI{}\\fR", roff(&value))
            } else {
                flag
            }
        };
        if arg.is_required_set() {
            line.push_str(&format!(" {text}"));
        } else {
            line.push_str(&format!(" [{text}]"));
        }
    }
    format!(".SH SYNOPSIS\n{line}\n")
}

/// The sections after OPTIONS of the page of `name` (`postern`, `postern-milter`, ...).
fn manual_sections(name: &str) -> String {
    let daemon = matches!(name, "postern" | "postern-milter" | "postern-proxy");
    let mut out = String::from(
        ".SH EXIT STATUS\n0 on success; 1 when the configuration cannot be used or the command \
         fails (the reason is on standard error); 2 for a command line that cannot be parsed.\n",
    );
    out.push_str(
        ".SH ENVIRONMENT\n.TP\n\\fBRUST_LOG\\fR\nThe log level and filter (e.g. \\fBdebug\\fR), \
         instead of \\fB[log] level\\fR.\n",
    );
    if daemon {
        out.push_str(
            ".TP\n\\fBNOTIFY_SOCKET\\fR\nSet by systemd for a \\fBType=notify\\fR unit: Postern \
             tells it when it listens and around each reload.\n",
        );
    }
    out.push_str(
        ".SH FILES\n.TP\n\\fI/etc/postern/postern.toml\\fR\nThe configuration read when \
         \\fB\\-\\-config\\fR is not given; without it the embedded default serves.\n",
    );
    if matches!(
        name,
        "postern" | "postern-track" | "postern-milter" | "postern-proxy"
    ) {
        out.push_str(
            ".TP\n\\fI/var/lib/postern/tracking.sqlite\\fR\nThe message tracking database, \
             with \\fB[tracking] store = \"sqlite\"\\fR and this path (the systemd units' \
             state directory).\n",
        );
    }
    if matches!(name, "postern" | "postern-milter") {
        out.push_str(
            ".TP\n\\fI/var/spool/postfix/postern/postern.sock\\fR\nThe milter socket of the \
             systemd unit, inside Postfix's chroot: Postfix names it \
             \\fBunix:postern/postern.sock\\fR.\n",
        );
    }
    if daemon {
        out.push_str(
            ".SH SIGNALS\n.TP\n\\fBSIGHUP\\fR\nReload the configuration file: a file that \
             does not compile is refused, with file, line and key logged, and the running \
             configuration stays.\n.TP\n\\fBSIGTERM\\fR, \\fBSIGINT\\fR\nStop accepting \
             connections, let messages and conversations in progress finish (up to \
             \\fBshutdown_timeout\\fR), and exit.\n",
        );
    }
    let examples: &[&str] = match name {
        "postern" => &[
            "postern milter",
            "postern milter \\-c /etc/postern/postern.toml \\-l unix:/var/spool/postfix/postern/postern.sock",
            "postern proxy \\-c /etc/postern/postern.toml",
            "postern check\\-config \\-c /etc/postern/postern.toml",
        ],
        "postern-milter" => &[
            "postern milter \\-l unix:/var/spool/postfix/postern/postern.sock",
            "postconf \\-e \\(aqsmtpd_milters = unix:postern/postern.sock\\(aq \\(aqmilter_default_action = tempfail\\(aq",
        ],
        "postern-proxy" => &["postern proxy \\-c /etc/postern/postern.toml \\-\\-dry\\-run"],
        "postern-track" => &[
            "postern track \\-\\-sender alice@example.org \\-\\-since 1h",
            "postern track \\-\\-recipient @example.net \\-\\-verdict reject \\-\\-format json",
        ],
        "postern-check-config" => {
            &["postern check\\-config \\-\\-connect \\-c /etc/postern/postern.toml"]
        }
        "postern-hash-password" => {
            &["postern hash\\-password < password.txt >> /etc/postern/users"]
        }
        "postern-unprotect" => &[
            "postern unprotect \\-\\-key\\-file /etc/postern/protect.key \\-\\-message < received.eml",
        ],
        _ => &[],
    };
    if !examples.is_empty() {
        out.push_str(".SH EXAMPLES\n.EX\n");
        for example in examples {
            out.push_str(example);
            out.push('\n');
        }
        out.push_str(".EE\n");
    }
    let mut see_also: Vec<&str> = vec!["postern.toml(5)"];
    if name != "postern" {
        see_also.insert(0, "postern(8)");
    }
    if daemon {
        see_also.extend([
            "postfix(1)",
            "smtpd(8)",
            "sendmail(8)",
            "systemd.service(5)",
        ]);
    }
    let refs: Vec<String> = see_also
        .iter()
        .map(|r| {
            let (page, section) = r.split_once('(').unwrap_or((r, ""));
            format!("\\fB{}\\fR({section}", page.replace('-', "\\-"))
        })
        .collect();
    out.push_str(&format!(".SH SEE ALSO\n{}\n", refs.join(", ")));
    out
}

/// postern.toml(5): the documented configuration, comments and defaults as they are.
fn config_page() -> String {
    let mut page = String::from(concat!(
        ".TH POSTERN.TOML 5 \"2026-12-06\" \"postern ",
        env!("CARGO_PKG_VERSION"),
        "\" \"Postern\"\n",
        ".SH NAME\npostern.toml \\- configuration of the Postern SMTP policy engine\n",
        ".SH DESCRIPTION\n",
        "One TOML file, given with \\fB--config\\fR; without it the embedded default below serves. ",
        "Unknown keys are refused; errors name the file, line and key; ",
        "\\fBpostern check-config\\fR validates a file; SIGHUP reloads it. ",
        "Every key follows with its default and what it does.\n",
        ".SH FILE\n.nf\n",
    ));
    for line in postern::config::DEFAULT_CONFIG.lines() {
        let line = line.replace('\\', "\\e");
        if line.starts_with(['.', '\'']) {
            page.push_str("\\&");
        }
        page.push_str(&line);
        page.push('\n');
    }
    page.push_str(".fi\n.SH SEE ALSO\n\\fBpostern\\fR(8)\n");
    page
}
