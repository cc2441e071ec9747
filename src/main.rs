//! The `postern` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

use postern::config::{Config, DEFAULT_CONFIG_NAME};
use postern::engine::Engine;
use postern::milter::socket::ListenSocket;

/// Postern: an SMTP policy engine. One policy (connection checks and content rules) for every
/// message, applied as a milter beside Postfix or Sendmail.
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
  postern check-config /etc/postern/postern.toml

Postfix main.cf:
  smtpd_milters = inet:127.0.0.1:7357
  milter_default_action = tempfail

Every configuration key, with its default, is documented in config/postern.toml.";

#[derive(Subcommand)]
enum Command {
    /// Run as a milter. Point Postfix's smtpd_milters (or Sendmail's INPUT_MAIL_FILTER) at
    /// the socket. SIGHUP reloads the config; SIGTERM stops after messages in flight finish.
    Milter {
        /// Configuration file (TOML). Without it the embedded default policy serves; it is
        /// the documented config/postern.toml.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Socket to listen on, overriding [milter] listen: inet:HOST:PORT or unix:/path.
        #[arg(short, long, value_name = "SOCKET")]
        listen: Option<ListenSocket>,
    },
    /// Validate a configuration file and print a summary of the compiled policy. Exits
    /// non-zero, naming file, line and key, when the file is not valid.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                println!("{}: OK", file.display());
                println!("{}", config.policy);
                println!("milter listen:           {}", config.milter.listen);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("postern: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Milter { config, listen } => {
            postern::logging::init();
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
            match runtime.block_on(run_milter(config, listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("postern: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run_milter(path: Option<PathBuf>, listen: Option<ListenSocket>) -> anyhow::Result<()> {
    let config = match &path {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default(),
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = path
            .as_ref()
            .map_or(DEFAULT_CONFIG_NAME.to_owned(), |p| p.display().to_string()),
        "postern starting"
    );
    let engine = Arc::new(Engine::new(config.policy));
    postern::reload::reload_on_sighup(engine.clone(), path, config.milter.clone())?;
    let listen = listen.unwrap_or_else(|| config.milter.listen.clone());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    };
    postern::milter::run(engine, &config.milter, &listen, shutdown).await
}
