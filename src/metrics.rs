//! Prometheus metrics: an event sink that counts what the engine reports, an observer of relay
//! attempts, and `GET /metrics` on `[metrics] listen` in the Prometheus text format. Labels
//! are few and bounded (door, check, verdict, ruleset and rule names from the configuration,
//! relay target names); never an address, a client IP or anything a client chose.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::engine::events::{CheckId, Event};
use crate::engine::policy::Policy;
use crate::engine::ports::Events;
use crate::engine::verdict::Verdict;
use crate::relay::{Outcome, RelayObserver};
use crate::tracking::DropObserver;

/// Settings of `[metrics]`; no endpoint without them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
    /// `user:password` a scraper must give (HTTP Basic), read from `basic_auth_file`.
    pub basic_auth: Option<BasicAuth>,
}

/// The credentials of the endpoint and where they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub file: PathBuf,
    /// The Basic token (base64 of `user:password`) a scraper must send.
    token: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// Whether an `Authorization` value carries these credentials: the scheme in any case
    /// (RFC 9110), the token compared through digests of equal length in constant time, so
    /// the time taken tells nothing of how much of it was right.
    fn admits(&self, given: Option<&str>) -> bool {
        let Some((scheme, token)) = given.and_then(|g| g.trim().split_once(' ')) else {
            return false;
        };
        let digest = |s: &str| Sha256::digest(s.as_bytes());
        let same: bool = digest(token.trim())
            .as_slice()
            .ct_eq(digest(&self.token).as_slice())
            .into();
        scheme.eq_ignore_ascii_case("basic") & same
    }

    /// Reads `user:password` (first line) from `file`.
    pub fn load(file: PathBuf) -> Result<Self, String> {
        let text = crate::secret_file::read_to_string(&file, "metrics credentials file")?;
        let line = text.lines().next().unwrap_or("").trim_end();
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Self {
                token: STANDARD.encode(line),
                file,
            }),
            _ => Err(format!(
                "{} must hold one line user:password",
                file.display()
            )),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Door {
    door: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DoorVerdict {
    door: &'static str,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckResult {
    check: &'static str,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Check {
    check: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleAction {
    ruleset: String,
    rule: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetOutcome {
    target: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Zone {
    zone: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadResult {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds from 1 ms to about 65 s.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(duration_buckets)
}

/// The metrics of one process (one door).
#[derive(Debug)]
pub struct Metrics {
    door: &'static str,
    registry: Registry,
    connections: Family<Door, Counter>,
    active_connections: Family<Door, Gauge>,
    messages: Family<DoorVerdict, Counter>,
    dry_run_verdicts: Family<DoorVerdict, Counter>,
    check_results: Family<CheckResult, Counter>,
    check_duration: Histograms<Check>,
    session_duration: Histograms<Door>,
    scan_duration: Histogram,
    rule_actions: Family<RuleAction, Counter>,
    scan_failures: Family<Reason, Counter>,
    relay_attempts: Family<TargetOutcome, Counter>,
    zone_usable: Family<Zone, Gauge>,
    store_unavailable: Counter,
    tracking_dropped: Family<Reason, Counter>,
    reloads: Family<ReloadResult, Counter>,
}

impl Metrics {
    /// The metrics of a process serving `door` (`milter` or `proxy`).
    pub fn new(door: &'static str) -> Self {
        let mut m = Self {
            door,
            connections: Family::default(),
            active_connections: Family::default(),
            messages: Family::default(),
            dry_run_verdicts: Family::default(),
            check_results: Family::default(),
            check_duration: histograms(),
            session_duration: histograms(),
            scan_duration: duration_buckets(),
            rule_actions: Family::default(),
            scan_failures: Family::default(),
            relay_attempts: Family::default(),
            zone_usable: Family::default(),
            store_unavailable: Counter::default(),
            tracking_dropped: Family::default(),
            reloads: Family::default(),
            registry: Registry::default(),
        };
        m.registry.register(
            "postern_connections",
            "Connections accepted",
            m.connections.clone(),
        );
        m.registry.register(
            "postern_active_connections",
            "Connections open now",
            m.active_connections.clone(),
        );
        m.registry.register(
            "postern_messages",
            "Messages judged, by verdict",
            m.messages.clone(),
        );
        m.registry.register(
            "postern_dry_run_verdicts",
            "In a dry run: the verdicts messages would have had (each went on: postern_messages_total counts it as continue)",
            m.dry_run_verdicts.clone(),
        );
        m.registry.register(
            "postern_check_results",
            "Check results: pass or the verdict a check asked for",
            m.check_results.clone(),
        );
        m.registry.register(
            "postern_check_duration_seconds",
            "Time DNS-based checks (rbl, reputation, spf) took",
            m.check_duration.clone(),
        );
        m.registry.register(
            "postern_session_duration_seconds",
            "Time from connect to close",
            m.session_duration.clone(),
        );
        m.registry.register(
            "postern_scan_duration_seconds",
            "Time the content stage took per message",
            m.scan_duration.clone(),
        );
        m.registry.register(
            "postern_rule_actions",
            "Content rules that acted, by ruleset, rule and action",
            m.rule_actions.clone(),
        );
        m.registry.register(
            "postern_scan_failures",
            "Times the engine could not judge, by the stage it happened at",
            m.scan_failures.clone(),
        );
        m.registry.register(
            "postern_relay_attempts",
            "Attempts with a relay target, by outcome",
            m.relay_attempts.clone(),
        );
        m.registry.register(
            "postern_rbl_zone_usable",
            "Whether a DNSBL zone passed its last self-test (1) or was taken out of use (0)",
            m.zone_usable.clone(),
        );
        m.registry.register(
            "postern_state_store_unavailable",
            "Times the state store could not answer and a decision was made without it (for a shared store: from this instance's own state)",
            m.store_unavailable.clone(),
        );
        m.registry.register(
            "postern_tracking_dropped",
            "Message tracking records dropped, by reason (queue_full, store_unavailable, writer_stopped, max_records_per_client)",
            m.tracking_dropped.clone(),
        );
        m.registry.register(
            "postern_config_reloads",
            "Configuration reloads, by result",
            m.reloads.clone(),
        );
        let info: Family<Version, Gauge> = Family::default();
        info.get_or_create(&Version {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        m.registry
            .register("postern_build_info", "Postern's version", info);
        m
    }

    /// Puts at zero every series the configuration in force can make — each verdict, reload
    /// result, tracking drop reason and scan failure stage, the results of each configured
    /// check, the action of each content rule, the outcomes with each relay target — so that
    /// an `increase()` alert fires on the first event rather than on the series' first
    /// appearance. Called at start and after each applied reload.
    pub fn expect(&self, policy: &Policy, relay_targets: &[String]) {
        let door = self.door();
        let _ = self.connections.get_or_create(&door);
        let _ = self.active_connections.get_or_create(&door);
        let _ = self.session_duration.get_or_create(&door);
        for verdict in Verdict::NAMES {
            let series = DoorVerdict {
                door: self.door,
                verdict: verdict.to_owned(),
            };
            let _ = self.messages.get_or_create(&series);
            if policy.dry_run {
                let _ = self.dry_run_verdicts.get_or_create(&series);
            }
        }
        for result in ["applied", "refused"] {
            let _ = self.reloads.get_or_create(&ReloadResult { result });
        }
        for reason in crate::tracking::DROP_REASONS {
            let _ = self.tracking_dropped.get_or_create(&Reason { reason });
        }
        for reason in crate::engine::events::SCAN_FAILURE_STAGES {
            let _ = self.scan_failures.get_or_create(&Reason { reason });
        }
        for check in configured_checks(policy) {
            let each_run = reports_each_run(check);
            for result in ["pass", "reject", "tempfail", "drop"] {
                if result != "pass" || each_run {
                    let result = if result == "pass" {
                        result.to_owned()
                    } else {
                        would(result, policy.dry_run)
                    };
                    let _ = self.check_results.get_or_create(&CheckResult {
                        check: check.name(),
                        result,
                    });
                }
            }
            if each_run {
                let _ = self.check_duration.get_or_create(&Check {
                    check: check.name(),
                });
            }
        }
        for ruleset in &policy.content.rulesets {
            for rule in &ruleset.rules {
                let _ = self.rule_actions.get_or_create(&RuleAction {
                    ruleset: ruleset.name.clone(),
                    rule: rule.name.clone(),
                    action: would(rule.action.name(), policy.dry_run),
                });
            }
        }
        for target in relay_targets {
            for outcome in Outcome::ALL {
                let _ = self.relay_attempts.get_or_create(&TargetOutcome {
                    target: target.clone(),
                    outcome: outcome.name(),
                });
            }
        }
    }

    /// A configuration reload was tried.
    pub fn reloaded(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&ReloadResult { result }).inc();
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    fn door(&self) -> Door {
        Door { door: self.door }
    }
}

impl Events for Metrics {
    fn emit(&self, event: &Event<'_>) {
        match event {
            Event::Connected { .. } => {
                self.connections.get_or_create(&self.door()).inc();
                self.active_connections.get_or_create(&self.door()).inc();
            }
            Event::Disconnected { report, .. } => {
                self.active_connections.get_or_create(&self.door()).dec();
                self.session_duration
                    .get_or_create(&self.door())
                    .observe(report.elapsed.as_secs_f64());
            }
            Event::Checked {
                check,
                verdict,
                elapsed,
                dry_run,
                ..
            } => {
                let result = verdict.map_or("pass".to_owned(), |v| would(v.name(), *dry_run));
                self.check_results
                    .get_or_create(&CheckResult {
                        check: check.name(),
                        result,
                    })
                    .inc();
                self.check_duration
                    .get_or_create(&Check {
                        check: check.name(),
                    })
                    .observe(elapsed.as_secs_f64());
            }
            // A check that reports each run (above) is not counted again for its refusal; a
            // held refusal answered later was counted when it was reached.
            Event::Refused {
                check,
                verdict,
                late: false,
                dry_run,
                ..
            } if !reports_each_run(*check) => {
                self.check_results
                    .get_or_create(&CheckResult {
                        check: check.name(),
                        result: would(verdict.name(), *dry_run),
                    })
                    .inc();
            }
            Event::Refused { .. } => {}
            Event::ScanFailed { stage, .. } => {
                self.scan_failures
                    .get_or_create(&Reason { reason: stage })
                    .inc();
            }
            Event::RuleActed {
                ruleset,
                rule,
                action,
                dry_run,
                ..
            } => {
                self.rule_actions
                    .get_or_create(&RuleAction {
                        ruleset: (*ruleset).to_owned(),
                        rule: (*rule).to_owned(),
                        action: would(action, *dry_run),
                    })
                    .inc();
            }
            Event::Scanned { elapsed, .. } => self.scan_duration.observe(elapsed.as_secs_f64()),
            Event::Message { report, .. } => {
                // In a dry run every message went on: `continue` stays what it means, and
                // what would have been is counted beside it.
                let went = if report.dry_run {
                    self.dry_run_verdicts
                        .get_or_create(&DoorVerdict {
                            door: self.door,
                            verdict: report.verdict.name().to_owned(),
                        })
                        .inc();
                    Verdict::Continue.name()
                } else {
                    report.verdict.name()
                };
                self.messages
                    .get_or_create(&DoorVerdict {
                        door: self.door,
                        verdict: went.to_owned(),
                    })
                    .inc();
            }
            Event::Zone {
                check: CheckId::Rbl,
                zone,
                usable: Some(usable),
                ..
            } => {
                self.zone_usable
                    .get_or_create(&Zone {
                        zone: (*zone).to_owned(),
                    })
                    .set(i64::from(*usable));
            }
            Event::Zone { .. }
            | Event::Diverted { .. }
            | Event::WouldRefuse { .. }
            | Event::StoreBack { .. }
            | Event::TransactionEnded { .. }
            | Event::HandedOn { .. } => {}
            Event::StoreUnavailable { .. } => {
                self.store_unavailable.inc();
            }
        }
    }
}

/// A label value, `would_` before it in a dry run (`would_reject`, `would_mask`).
fn would(name: &str, dry_run: bool) -> String {
    if dry_run {
        format!("would_{name}")
    } else {
        name.to_owned()
    }
}

/// The checks `policy` runs.
fn configured_checks(policy: &Policy) -> Vec<CheckId> {
    let mut checks = vec![
        CheckId::MessageSize,
        CheckId::HeaderLimit,
        CheckId::AddressSyntax,
    ];
    let optional = [
        (policy.client_limits.is_some(), CheckId::DosProtection),
        (
            !policy.ip_address_rejection.is_empty(),
            CheckId::IpAddressRejection,
        ),
        (!policy.profiles.0.is_empty(), CheckId::ConnectionProfile),
        (policy.rbl.is_some(), CheckId::Rbl),
        (policy.reputation.is_some(), CheckId::Reputation),
        (policy.spf.is_some(), CheckId::Spf),
        (policy.restrict_relaying, CheckId::RelayRestriction),
        (
            !policy.encryption_rules.0.is_empty(),
            CheckId::EncryptionRule,
        ),
        (!policy.content.rulesets.is_empty(), CheckId::Content),
    ];
    checks.extend(optional.into_iter().filter(|(on, _)| *on).map(|(_, c)| c));
    checks.push(CheckId::ScanFailure);
    checks
}

/// Checks that report every run with [`Event::Checked`].
fn reports_each_run(check: CheckId) -> bool {
    matches!(check, CheckId::Rbl | CheckId::Reputation | CheckId::Spf)
}

impl RelayObserver for Metrics {
    fn attempt(&self, target: &str, outcome: Outcome) {
        self.relay_attempts
            .get_or_create(&TargetOutcome {
                target: target.to_owned(),
                outcome: outcome.name(),
            })
            .inc();
    }
}

impl DropObserver for Metrics {
    fn dropped(&self, reason: &'static str, count: u64) {
        self.tracking_dropped
            .get_or_create(&Reason { reason })
            .inc_by(count);
    }
}

/// The longest request head read from a scraper.
const MAX_REQUEST: usize = 8192;
/// How long a scraper has to send its request head (a scraper sends it at once; an idle
/// connection must not hold a slot for long).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a scraper has for the whole exchange, reading the response included.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Scrapers served at once (Prometheus scrapes a target over one connection at a time): while
/// that many are connected, a further connection is answered 503 at once and closed, so that
/// idle or slow connections can neither pile up tasks and buffers nor make a scraper wait.
const MAX_SCRAPERS: usize = 16;

/// The answer to a connection beyond [`MAX_SCRAPERS`].
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 38\r\nRetry-After: 2\r\nConnection: close\r\n\r\nevery metrics slot is busy, try again\n";

/// Binds `[metrics] listen`.
pub async fn bind(settings: &MetricsSettings) -> anyhow::Result<TcpListener> {
    TcpListener::bind(settings.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {}: {e}", settings.listen))
}

/// Serves `GET /metrics` on `listener` for as long as the process runs.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, auth: Option<BasicAuth>) {
    if let Ok(addr) = listener.local_addr() {
        info!(listen = %addr, "metrics listening");
    }
    let auth = Arc::new(auth);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    let mut busy = crate::logging::Throttle::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(n) = busy.due(Duration::from_secs(60), 1) {
                warn!(
                    limit = MAX_SCRAPERS,
                    times = n,
                    "metrics: every scraper slot is taken; further connections are answered 503 (check what holds them)"
                );
            }
            refuse_busy(&stream);
            continue;
        };
        let (metrics, auth) = (metrics.clone(), auth.clone());
        tokio::spawn(async move {
            let exchange = answer(stream, &metrics, auth.as_ref().as_ref());
            match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => info!(client = %peer, error = %e, "metrics request failed"),
                Err(_) => info!(client = %peer, "metrics request took too long, closed"),
            }
            drop(slot);
        });
    }
}

/// Answers [`BUSY`] without waiting: what the client sent already is read (closing on unread
/// data would reset the connection before the answer is read), and what the socket does not
/// take at once is not sent. Costs no task and no buffer beyond this call.
fn refuse_busy(stream: &TcpStream) {
    let mut scratch = [0u8; 1024];
    for _ in 0..(MAX_REQUEST / scratch.len()) {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = stream.try_write(BUSY);
}

/// One HTTP request, answered and closed.
async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    auth: Option<&BasicAuth>,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                (String::new(), 0),
            )
            .await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return respond(&mut stream, "408 Request Timeout", "", (String::new(), 0)).await,
    };
    let (status, extra, body) = route(&head, metrics, auth);
    // HEAD: the same head, no body.
    let body = if head.starts_with("HEAD ") {
        (String::new(), body.len())
    } else {
        let len = body.len();
        (body, len)
    };
    respond(&mut stream, status, extra, body).await
}

/// The status line, extra header lines and body for a request head.
fn route(
    head: &str,
    metrics: &Metrics,
    auth: Option<&BasicAuth>,
) -> (&'static str, &'static str, String) {
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or("");
    let mut parts = request.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if let Some(auth) = auth {
        let given = lines.find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim())
        });
        if !auth.admits(given) {
            return (
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"postern metrics\"\r\n",
                "authentication required\n".to_owned(),
            );
        }
    }
    match (method, path.split('?').next().unwrap_or("")) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", "", metrics.render()),
        ("GET" | "HEAD", _) => ("404 Not Found", "", "try /metrics\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "only GET /metrics is served\n".to_owned(),
        ),
    }
}

/// Reads up to the blank line that ends the request head; `None` when it is longer than
/// [`MAX_REQUEST`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes the response: `body` is what is sent and the length the head announces (a HEAD
/// request's body is not sent).
async fn respond(
    stream: &mut TcpStream,
    status: &str,
    extra: &str,
    (body, length): (String, usize),
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {length}\r\n{extra}Connection: close\r\n\r\n",
        prometheus_text::CONTENT_TYPE,
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::{CheckRecord, ConnectionReport, MessageReport, Reason as Why};
    use crate::engine::session::ClientInfo;
    use crate::engine::verdict::Verdict;

    #[test]
    fn events_become_counts_with_bounded_labels() {
        let m = Metrics::new("proxy");
        let client = ClientInfo {
            addr: Some("192.0.2.1".parse().unwrap()),
            name: None,
        };
        m.emit(&Event::Connected {
            session: 1,
            client: &client,
            profile: None,
        });
        m.emit(&Event::Checked {
            session: 1,
            check: CheckId::Rbl,
            client: client.addr,
            verdict: None,
            detail: "not listed".into(),
            elapsed: Duration::from_millis(3),
            dry_run: false,
        });
        let verdict = Verdict::Continue;
        m.emit(&Event::Message {
            session: 1,
            report: MessageReport {
                queue_id: "",
                sender: "a@b.example",
                recipients: &[],
                envelope: &Default::default(),
                refused: &[],
                message_id: None,
                facts: crate::engine::events::SessionFacts {
                    client: &client,
                    helo: None,
                    tls: None,
                    authenticated: None,
                },
                size: 10,
                spooled: false,
                spf: "-",
                verdict: &verdict,
                reason: Why::EndOfMessage,
                elapsed: Duration::from_millis(5),
                dry_run: false,
            },
        });
        let checks: Vec<CheckRecord> = Vec::new();
        m.emit(&Event::Disconnected {
            session: 1,
            report: ConnectionReport {
                client: &client,
                helo: None,
                tls: None,
                authenticated: None,
                messages: 1,
                checks: &checks,
                invalid_commands: 0,
                failed_recipients: 0,
                unfinished_message: false,
                elapsed: Duration::from_millis(20),
            },
        });
        m.attempt("mta", Outcome::Delivered);
        m.reloaded(false);
        let text = m.render();
        for line in [
            "postern_connections_total{door=\"proxy\"} 1",
            "postern_active_connections{door=\"proxy\"} 0",
            "postern_messages_total{door=\"proxy\",verdict=\"continue\"} 1",
            "postern_check_results_total{check=\"rbl\",result=\"pass\"} 1",
            "postern_check_duration_seconds_count{check=\"rbl\"} 1",
            "postern_session_duration_seconds_count{door=\"proxy\"} 1",
            "postern_relay_attempts_total{target=\"mta\",outcome=\"delivered\"} 1",
            "postern_config_reloads_total{result=\"refused\"} 1",
            "postern_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("192.0.2.1"), "no client address as a label");
    }

    #[test]
    fn requests_are_routed_and_authenticated() {
        let m = Metrics::new("milter");
        let (status, _, body) = route("GET /metrics HTTP/1.1\r\nHost: x", &m, None);
        assert_eq!(status, "200 OK");
        assert!(body.contains("postern_build_info"));
        assert_eq!(route("GET / HTTP/1.1", &m, None).0, "404 Not Found");
        assert_eq!(
            route("POST /metrics HTTP/1.1", &m, None).0,
            "405 Method Not Allowed"
        );
        let auth = BasicAuth {
            file: PathBuf::new(),
            token: STANDARD.encode("prom:s3cret"),
        };
        assert_eq!(
            route("GET /metrics HTTP/1.1", &m, Some(&auth)).0,
            "401 Unauthorized"
        );
        let good = format!(
            "GET /metrics HTTP/1.1\r\nauthorization: Basic {}",
            STANDARD.encode("prom:s3cret")
        );
        assert_eq!(route(&good, &m, Some(&auth)).0, "200 OK");
        let busy = String::from_utf8_lossy(BUSY);
        let (head, body) = busy.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        // The scheme in any case; a wrong or truncated token, another scheme: refused.
        let token = STANDARD.encode("prom:s3cret");
        for (value, admitted) in [
            (format!("BASIC {token}"), true),
            (format!("basic  {token} "), true),
            (format!("Basic {}", &token[..token.len() - 1]), false),
            (format!("Basic {}", STANDARD.encode("prom:s3crex")), false),
            (format!("Bearer {token}"), false),
            (token.clone(), false),
        ] {
            assert_eq!(auth.admits(Some(&value)), admitted, "{value}");
        }
    }
}
