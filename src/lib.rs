//! Postern: an SMTP policy engine with two doors, a milter beside an MTA and an SMTP proxy in
//! front of one. See `README.md` for the picture and `config/postern.toml` for every
//! setting.

pub mod app;
pub mod config;
pub mod dns;
pub mod engine;
pub mod logging;
pub mod milter;
pub mod proxy;
pub mod relay;
pub mod state;
