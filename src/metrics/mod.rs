//! Prometheus metrics: an event sink that counts what the engine reports (relay attempts and
//! dropped tracking records among it), and `GET /metrics` on `[metrics] listen` in the Prometheus text
//! format. Labels are few and bounded (door, check, verdict, ruleset and rule names from the
//! configuration, relay target names); never an address, a client IP or anything a client
//! chose.
//!
//! `labels.rs` the label sets; this file the registry and what is in it; `events.rs` events
//! become counts; the endpoint is served by `crate::web`.

mod events;
mod labels;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use events::{configured_checks, reports_each_run, would};
use labels::*;

use crate::engine::events::AttemptOutcome;
use crate::engine::events::DoorKind;
use crate::engine::policy::Policy;
use crate::engine::verdict::Verdict;

/// The metrics of one process (one door).
#[derive(Debug)]
pub struct Metrics {
    door: DoorKind,
    registry: Registry,
    connections: Family<Door, Counter>,
    active_connections: Family<Door, Gauge>,
    messages: Family<DoorVerdict, Counter>,
    organization_messages: Family<OrganizationVerdict, Counter>,
    dry_run_verdicts: Family<DoorVerdict, Counter>,
    check_results: Family<CheckResult, Counter>,
    auth_results: Family<AuthResult, Counter>,
    check_duration: Histograms<Check>,
    session_duration: Histograms<Door>,
    scan_duration: Histogram,
    rule_actions: Family<RuleAction, Counter>,
    attachments_unread: Family<UnreadLabels, Counter>,
    scan_failures: Family<Reason, Counter>,
    relay_attempts: Family<TargetOutcome, Counter>,
    zone_usable: Family<Zone, Gauge>,
    store_unavailable: Counter,
    tracking_dropped: Family<Reason, Counter>,
    reloads: Family<ReloadResult, Counter>,
}

impl Metrics {
    /// The metrics of a process serving `door` (`milter` or `proxy`).
    pub fn new(door: DoorKind) -> Self {
        let mut m = Self {
            door,
            connections: Family::default(),
            active_connections: Family::default(),
            messages: Family::default(),
            organization_messages: Family::default(),
            dry_run_verdicts: Family::default(),
            check_results: Family::default(),
            auth_results: Family::default(),
            check_duration: histograms(),
            session_duration: histograms(),
            scan_duration: duration_buckets(),
            rule_actions: Family::default(),
            attachments_unread: Family::default(),
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
            "postern_organization_messages",
            "Messages judged, by organization (each organization of its sender and recipients once) and verdict",
            m.organization_messages.clone(),
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
            "postern_auth_results",
            "Messages verified on arrival ([authentication]), by method (dkim, arc, dmarc) and result",
            m.auth_results.clone(),
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
            "postern_attachments_unread",
            "Attachments not read to the end, by reason (a [content] limit, encrypted, damaged) and the action taken",
            m.attachments_unread.clone(),
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
                door: self.door.name(),
                verdict: verdict.to_owned(),
            };
            let _ = self.messages.get_or_create(&series);
            if policy.dry_run {
                let _ = self.dry_run_verdicts.get_or_create(&series);
            }
            for o in &policy.organizations.list {
                let _ = self
                    .organization_messages
                    .get_or_create(&OrganizationVerdict {
                        organization: o.name.clone(),
                        verdict: verdict.to_owned(),
                    });
            }
        }
        for result in ["applied", "refused"] {
            let _ = self.reloads.get_or_create(&ReloadResult { result });
        }
        for reason in crate::tracking::DROP_REASONS {
            let _ = self.tracking_dropped.get_or_create(&Reason { reason });
        }
        for step in crate::engine::events::ScanStep::ALL {
            let _ = self.scan_failures.get_or_create(&Reason {
                reason: step.name(),
            });
        }
        for (method, _) in policy.authentication.methods() {
            for result in crate::engine::authentication::RESULT_NAMES {
                let _ = self
                    .auth_results
                    .get_or_create(&AuthResult { method, result });
            }
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
            for outcome in AttemptOutcome::ALL {
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
        Door {
            door: self.door.name(),
        }
    }
}
