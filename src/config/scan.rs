//! `[scan]`: the engine's time and size limits for a message, where large messages spool,
//! what to do when a scan fails, and the trace header.

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;
use toml::Spanned;

use super::{Invalid, valid_header_name};
use crate::engine::policy::TraceHeader;
use crate::engine::retain::Retain;
use crate::engine::{MessageLimits, ScanFailureAction};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ScanSection {
    scan_failure_action: ScanFailureAction,
    scan_timeout: NonZeroU64,
    message_memory_limit: NonZeroUsize,
    max_message_size: NonZeroU64,
    max_header_fields: NonZeroUsize,
    max_header_size: NonZeroU64,
    max_concurrent_scans: usize,
    spool_directory: Option<Spanned<PathBuf>>,
    trace_header: bool,
    /// Unset: [`TRACE_HEADER_NAME`].
    trace_header_name: Option<Spanned<String>>,
    dry_run: bool,
    retain_raw_messages: bool,
    retain_decoded_messages: bool,
    retain_directory: Option<Spanned<PathBuf>>,
    retain_max_size: u64,
    retain_days: u32,
}

/// The trace header's name when `trace_header_name` is not set.
const TRACE_HEADER_NAME: &str = "X-Postern-Verdict";

impl Default for ScanSection {
    fn default() -> Self {
        Self {
            scan_failure_action: ScanFailureAction::Delay,
            scan_timeout: NonZeroU64::new(30).expect("nonzero"),
            message_memory_limit: NonZeroUsize::new(1 << 20).expect("nonzero"),
            max_message_size: NonZeroU64::new(40_000_000).expect("nonzero"),
            max_header_fields: NonZeroUsize::new(1000).expect("nonzero"),
            max_header_size: NonZeroU64::new(1 << 20).expect("nonzero"),
            max_concurrent_scans: 0,
            spool_directory: None,
            trace_header: false,
            trace_header_name: None,
            dry_run: false,
            retain_raw_messages: false,
            retain_decoded_messages: false,
            retain_directory: None,
            retain_max_size: 10 << 20,
            retain_days: 7,
        }
    }
}

/// The policy's scan settings, as `[scan]` gives them.
pub(super) struct Scan {
    pub(super) scan_failure_action: ScanFailureAction,
    pub(super) scan_timeout: Duration,
    pub(super) scan_slots: Arc<Semaphore>,
    pub(super) message_limits: MessageLimits,
    pub(super) trace_header: Option<TraceHeader>,
    pub(super) dry_run: bool,
    pub(super) retain: Option<Retain>,
}

pub(super) fn compile(s: ScanSection) -> Result<Scan, Invalid> {
    let spool_directory = match s.spool_directory {
        Some(dir) => {
            let span = dir.span();
            let dir = dir.into_inner();
            if !dir.is_dir() {
                return Err((
                    span,
                    "scan.spool_directory".into(),
                    format!(
                        "{} is not an existing directory; create it or point the key at one",
                        dir.display()
                    ),
                ));
            }
            dir
        }
        None => std::env::temp_dir(),
    };

    let trace_header_name = match s.trace_header_name {
        Some(name) if !valid_header_name(name.get_ref()) => {
            return Err((
                name.span(),
                "scan.trace_header_name".into(),
                format!(
                    "{:?} is not a header field name (printable ASCII, no spaces or colons)",
                    name.get_ref()
                ),
            ));
        }
        Some(name) => name.into_inner(),
        None => TRACE_HEADER_NAME.to_owned(),
    };

    let retain = match (
        s.retain_raw_messages || s.retain_decoded_messages,
        s.retain_directory,
    ) {
        (false, _) => None,
        (true, None) => {
            return Err((
                0..0,
                "scan.retain_directory".into(),
                "retain_raw_messages or retain_decoded_messages is on: name the directory the copies go to".into(),
            ));
        }
        (true, Some(dir)) if !dir.get_ref().is_dir() => {
            return Err((
                dir.span(),
                "scan.retain_directory".into(),
                format!(
                    "{} is not an existing directory; create it (readable only by Postern's user: the copies are mail)",
                    dir.get_ref().display()
                ),
            ));
        }
        (true, Some(dir)) => Some(Retain::new(
            dir.into_inner(),
            s.retain_raw_messages,
            s.retain_decoded_messages,
            s.retain_max_size,
            s.retain_days,
        )),
    };
    Ok(Scan {
        scan_failure_action: s.scan_failure_action,
        scan_timeout: Duration::from_secs(s.scan_timeout.get()),
        scan_slots: Arc::new(Semaphore::new(match s.max_concurrent_scans {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        })),
        message_limits: MessageLimits {
            memory_limit: s.message_memory_limit.get(),
            max_message_size: s.max_message_size.get(),
            max_header_fields: s.max_header_fields.get(),
            max_header_size: s.max_header_size.get(),
            spool_directory,
        },
        trace_header: s.trace_header.then_some(TraceHeader {
            name: trace_header_name,
        }),
        dry_run: s.dry_run,
        retain,
    })
}
