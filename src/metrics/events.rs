//! What the engine reports, relay attempts and tracking drops, counted.

use super::Metrics;
use super::labels::*;
use crate::engine::authentication::DmarcMode;
use crate::engine::events::{CheckId, Event};
use crate::engine::policy::Policy;
use crate::engine::ports::Events;
use crate::engine::verdict::Verdict;

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
            Event::ScanFailed { step, .. } => {
                self.scan_failures
                    .get_or_create(&Reason {
                        reason: step.name(),
                    })
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
            Event::AttachmentUnread { reason, action, .. } => {
                self.attachments_unread
                    .get_or_create(&UnreadLabels { reason, action })
                    .inc();
            }
            Event::Scanned { elapsed, .. } => self.scan_duration.observe(elapsed.as_secs_f64()),
            Event::Message { report, .. } => {
                // In a dry run every message went on: `continue` stays what it means, and
                // what would have been is counted beside it.
                let went = if report.dry_run {
                    self.dry_run_verdicts
                        .get_or_create(&DoorVerdict {
                            door: self.door.name(),
                            verdict: report.verdict.name().to_owned(),
                        })
                        .inc();
                    Verdict::Continue.name()
                } else {
                    report.verdict.name()
                };
                self.messages
                    .get_or_create(&DoorVerdict {
                        door: self.door.name(),
                        verdict: went.to_owned(),
                    })
                    .inc();
                for organization in report.owners.involved(report.recipients) {
                    self.organization_messages
                        .get_or_create(&OrganizationVerdict {
                            organization: organization.to_owned(),
                            verdict: went.to_owned(),
                        })
                        .inc();
                }
                for (method, result) in report.authentication.iter().flat_map(|a| a.methods()) {
                    self.auth_results
                        .get_or_create(&AuthResult { method, result })
                        .inc();
                }
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
            | Event::Noted { .. } => {}
            Event::RelayAttempt {
                relay_target,
                outcome,
            } => {
                self.relay_attempts
                    .get_or_create(&TargetOutcome {
                        target: (*relay_target).to_owned(),
                        outcome: outcome.name(),
                    })
                    .inc();
            }
            Event::TrackingDropped { reason, count, .. } => {
                self.tracking_dropped
                    .get_or_create(&Reason { reason })
                    .inc_by(*count);
            }
            Event::StoreUnavailable { .. } => {
                self.store_unavailable.inc();
            }
        }
    }
}

/// A label value, `would_` before it in a dry run (`would_reject`, `would_mask`).
pub(super) fn would(name: &str, dry_run: bool) -> String {
    if dry_run {
        format!("would_{name}")
    } else {
        name.to_owned()
    }
}

/// The checks `policy` runs.
pub(super) fn configured_checks(policy: &Policy) -> Vec<CheckId> {
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
        (
            policy.authentication.dmarc == DmarcMode::Enforce,
            CheckId::Dmarc,
        ),
        (policy.spoofing_checked(), CheckId::Spoof),
    ];
    checks.extend(optional.into_iter().filter(|(on, _)| *on).map(|(_, c)| c));
    checks.push(CheckId::ScanFailure);
    checks
}

/// Checks that report every run with [`Event::Checked`].
pub(super) fn reports_each_run(check: CheckId) -> bool {
    matches!(check, CheckId::Rbl | CheckId::Reputation | CheckId::Spf)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::events::{CheckRecord, ConnectionReport, MessageReport, Reason as Why};
    use crate::engine::session::ClientInfo;
    use crate::engine::verdict::Verdict;

    #[test]
    fn events_become_counts_with_bounded_labels() {
        let m = Metrics::new(crate::engine::events::DoorKind::Proxy);
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
        let organizations = crate::engine::organizations::Organizations {
            list: vec![crate::engine::organizations::Organization {
                name: "acme".into(),
                domains: vec![crate::engine::address::DomainPattern::new("acme.test")],
                own_route: Vec::new(),
                has_rulesets: false,
                max_message_size: None,
                spf_fail_action: None,
                spf_softfail_action: None,
                dmarc: None,
                rbl_hit_action: None,
            }],
            ..Default::default()
        };
        let recipients = [
            "x@acme.test".parse().unwrap(),
            "y@acme.test".parse().unwrap(),
        ];
        m.emit(&Event::Message {
            session: 1,
            report: MessageReport {
                queue_id: "",
                sender: "a@b.example",
                recipients: &recipients,
                envelope: &Default::default(),
                refused: &[],
                message_id: None,
                facts: crate::engine::events::SessionFacts {
                    client: &client,
                    helo: None,
                    tls: None,
                    authenticated: None,
                    would: &[],
                },
                size: 10,
                spooled: false,
                spf: "-",
                authentication: Some(crate::engine::authentication::AuthSummary {
                    dkim: "pass",
                    dmarc: Some("fail"),
                    arc: None,
                }),
                verdict: &verdict,
                reason: Why::EndOfMessage,
                elapsed: Duration::from_millis(5),
                dry_run: false,
                rules: &[],
                diverted: None,
                would: &[],
                handed_on: None,
                owners: crate::engine::organizations::Owners::none(&organizations),
                routed: &[],
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
                refusal: None,
                would: &[],
                reported: true,
            },
        });
        m.emit(&Event::RelayAttempt {
            relay_target: "mta",
            outcome: crate::engine::events::AttemptOutcome::Delivered,
        });
        m.reloaded(false);
        let text = m.render();
        for line in [
            "postern_connections_total{door=\"proxy\"} 1",
            "postern_active_connections{door=\"proxy\"} 0",
            "postern_messages_total{door=\"proxy\",verdict=\"continue\"} 1",
            "postern_organization_messages_total{organization=\"acme\",verdict=\"continue\"} 1",
            "postern_check_results_total{check=\"rbl\",result=\"pass\"} 1",
            "postern_check_duration_seconds_count{check=\"rbl\"} 1",
            "postern_auth_results_total{method=\"dkim\",result=\"pass\"} 1",
            "postern_auth_results_total{method=\"dmarc\",result=\"fail\"} 1",
            "postern_session_duration_seconds_count{door=\"proxy\"} 1",
            "postern_relay_attempts_total{target=\"mta\",outcome=\"delivered\"} 1",
            "postern_config_reloads_total{result=\"refused\"} 1",
            "postern_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("192.0.2.1"), "no client address as a label");
        assert!(
            !text.contains("method=\"arc\""),
            "a method not evaluated is not counted"
        );
    }
}
