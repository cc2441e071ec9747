//! Postern: an SMTP policy engine with two doors, a milter beside an MTA and an SMTP proxy in
//! front of one. [`engine`] decides and imports nothing else of the crate; what it needs of
//! the world it declares as ports ([`engine::ports`]) that [`dns`], [`relay`], [`state`],
//! [`logging`], [`metrics`] and [`tracking`] implement; [`app`] builds it all from a
//! [`config::Config`] and owns reloads; [`milter`] and [`proxy`] are the doors; [`web`] serves
//! `/metrics`, the health endpoints and the console. `README.md`
//! and `docs/` have the whole picture (`docs/architecture.md` the layout) and
//! `config/postern.toml` every setting.

pub mod app;
pub mod config;
pub mod dns;
pub mod engine;
pub mod logging;
pub mod metrics;
pub mod milter;
pub mod notify;
pub mod proxy;
pub mod relay;
pub mod secret_file;
pub mod state;
pub mod tracking;
pub mod web;
