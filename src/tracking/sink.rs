//! The tracking sink: gathers each session's events (rules that acted, a diversion, dry-run
//! refusals, the last refusal) into records when a message or transaction ends, and queues
//! them for the writer without ever waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};

use super::drops::{DropObserver, Drops};
use super::limit::{self, ClientLimit};
use super::record::{Outcome, Record, now_ms};
use super::writer::{self, Writer};
use super::{StoreSettings, TrackingSettings};
use crate::engine::events::{
    CheckId, ConnectionReport, DoorKind, Event, MessageReport, RefusedBy, RefusedRecipient,
    SessionFacts, SmtpStage, TransactionReport,
};
use crate::engine::ports::Events;
use crate::engine::{SmtpReply, Verdict};

/// A refusal the policy answered in this session, as the records give it.
#[derive(Clone, Debug)]
struct Refusal {
    stage: SmtpStage,
    check: &'static str,
    verdict: &'static str,
    reply: Option<SmtpReply>,
}

/// What a session's events said so far that its next records need.
#[derive(Debug, Default)]
struct Track {
    /// Rules that acted on the message in progress: `ruleset/rule:action`.
    rules: Vec<String>,
    /// The divert target and its reply for the message in progress.
    diverted: Option<(String, String)>,
    /// Dry run: what the policy would have refused in this transaction, and at connect/HELO.
    would: Vec<String>,
    would_connection: Vec<String>,
    /// Dry run: the recipients the policy would have refused at RCPT, and how.
    would_rcpt: Vec<(String, String)>,
    /// The last refusal answered (not held).
    refusal: Option<Refusal>,
    /// A message's records waiting for the door to say where it went (proxy).
    pending: Vec<Record>,
    /// Something was recorded for this session.
    tracked: bool,
}

/// Message tracking as an event sink.
#[derive(Debug)]
pub struct Tracker {
    door: DoorKind,
    track_dropped_connections: bool,
    queue: mpsc::Sender<Record>,
    drops: Arc<Drops>,
    limit: ClientLimit,
    sessions: Mutex<HashMap<u64, Track>>,
    writer: Mutex<Option<Writer>>,
}

impl Tracker {
    /// Opens the store and starts its writer (on the current tokio runtime) for a process
    /// serving `door`. A SQLite file that cannot be opened is an error now; a PostgreSQL
    /// server that is down is not: the writer connects when it can and drops records until
    /// then.
    pub fn start(
        settings: &TrackingSettings,
        door: DoorKind,
        observer: Option<Arc<dyn DropObserver>>,
    ) -> anyhow::Result<Self> {
        let backend = match &settings.store {
            StoreSettings::Sqlite { path } => {
                writer::Backend::Sqlite(super::sqlite::Store::open(path)?)
            }
            StoreSettings::Postgres(pg) => {
                let config = pg
                    .config()
                    .map_err(|e| anyhow::anyhow!("[tracking] url {e}"))?;
                let tls = pg
                    .connector()
                    .map_err(|e| anyhow::anyhow!("[tracking] ca_file {e}"))?;
                writer::Backend::Postgres(Box::new(super::postgres::Store::new(config, tls)))
            }
        };
        let (queue, records) = mpsc::channel(settings.queue_size);
        let drops = Arc::new(Drops::new(observer));
        let writer = Writer::spawn(backend, records, drops.clone(), settings.retention_days);
        Ok(Self {
            door,
            track_dropped_connections: settings.track_dropped_connections,
            queue,
            drops,
            limit: ClientLimit::new(settings.max_records_per_client),
            sessions: Mutex::new(HashMap::new()),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Lets the writer store what is queued, for at most `within`, and stops it (at
    /// shutdown). Records that come later are dropped.
    pub async fn finish(&self, within: Duration) {
        for summary in self.limit.flush() {
            self.send(summary);
        }
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            writer.finish(within).await;
        }
    }

    /// Queues `record` unless its client is over `max_records_per_client`.
    fn queue(&self, record: Record) {
        let (admitted, summaries) = self.limit.admit(&record, std::time::Instant::now());
        for summary in summaries {
            self.send(summary);
        }
        if admitted {
            self.send(record);
        } else {
            self.drops.dropped(
                limit::REASON,
                1,
                "a client caused more records in a minute than [tracking] max_records_per_client; one record per client and minute says how many were left out",
            );
        }
    }

    fn send(&self, record: Record) {
        match self.queue.try_send(record.bounded()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.drops.dropped(
                "queue_full",
                1,
                "the queue is full: the store does not keep up (see [tracking] queue_size)",
            ),
            Err(TrySendError::Closed(_)) => {
                self.drops
                    .dropped("writer_stopped", 1, "the tracking writer has stopped")
            }
        }
    }

    fn record(&self, session: u64, facts: &SessionFacts<'_>, sender: &str) -> Record {
        Record {
            time_ms: now_ms(),
            door: self.door.name().to_owned(),
            session: session as i64,
            queue_id: None,
            client_addr: facts.client.addr.map(|a| a.to_string()),
            client_name: facts.client.name.clone(),
            helo: facts.helo.map(str::to_owned),
            tls: facts.tls.map(|t| t.version.clone()),
            auth_user: facts.authenticated.map(str::to_owned),
            sender: sender.to_owned(),
            recipient: None,
            outcome: String::new(),
            reply: None,
            relay_target: None,
            message_id: None,
            size: None,
            verdict: String::new(),
            reason: None,
            rules: None,
            dry_run: false,
            would: None,
            duration_ms: 0,
            relayed_sender: None,
            relayed_recipient: None,
            authentication: None,
        }
    }

    fn message(&self, session: u64, report: &MessageReport<'_>, track: &mut Track) {
        let mut would = std::mem::take(&mut track.would);
        if report.dry_run && *report.verdict != Verdict::Continue {
            would.push(format!("end_of_message: {}", report.verdict));
        }
        would.extend(track.would_connection.iter().cloned());
        // In a dry run the message went on whatever the policy would have said.
        let verdict = if report.dry_run {
            &Verdict::Continue
        } else {
            report.verdict
        };
        let mut base = self.record(session, &report.facts, report.sender);
        base.queue_id = some(report.queue_id);
        base.message_id = report.message_id.map(str::to_owned);
        base.size = Some(report.size as i64);
        base.verdict = verdict.name().to_owned();
        base.reason = Some(report.reason.to_string());
        base.rules = joined(std::mem::take(&mut track.rules), ", ");
        base.dry_run = report.dry_run;
        base.would = joined(would, "; ");
        base.duration_ms = report.elapsed.as_millis() as i64;
        base.relayed_sender = report.envelope.sender.clone();
        base.authentication = report.authentication.map(|a| a.words());
        let would_rcpt = std::mem::take(&mut track.would_rcpt);
        let diverted = track.diverted.take();
        // The proxy relays an accepted message itself and says where it went afterwards.
        let wait_for_door = self.door == DoorKind::Proxy && *verdict == Verdict::Continue;
        let mut records = Vec::new();
        for recipient in report.recipients {
            let mut r = base.clone();
            r.recipient = Some(recipient.clone());
            r.would = would_for(&base.would, &would_rcpt, recipient);
            r.relayed_recipient = report
                .envelope
                .recipients
                .iter()
                .find(|(from, _)| from == recipient)
                .map(|(_, to)| to.clone());
            let outcome = match verdict {
                Verdict::Continue => Outcome::Accepted,
                Verdict::Discard => match &diverted {
                    Some((target, reply)) => {
                        r.relay_target = Some(target.clone());
                        r.reply = Some(reply.clone());
                        Outcome::Diverted
                    }
                    None => Outcome::Discarded,
                },
                refused => {
                    let reply = refused.reply().expect("a refusal has a reply");
                    r.reply = Some(reply.to_string());
                    Outcome::of_reply(reply.code())
                }
            };
            r.outcome = outcome.name().to_owned();
            records.push(r);
        }
        let refused = self.refused(&base, report.refused);
        if wait_for_door {
            track.pending = records;
        } else {
            records.into_iter().for_each(|r| self.queue(r));
        }
        refused.into_iter().for_each(|r| self.queue(r));
        track.refusal = None;
        track.tracked = true;
    }

    /// One record per refused recipient, on the transaction's `base`.
    fn refused(&self, base: &Record, refused: &[RefusedRecipient]) -> Vec<Record> {
        refused
            .iter()
            .map(|refusal| {
                let mut r = base.clone();
                r.recipient = Some(refusal.address.clone());
                r.outcome = Outcome::Refused.name().to_owned();
                r.reply = Some(refusal.reply.to_string());
                r.relay_target = refusal.by.relay_target().map(str::to_owned);
                r.verdict = Verdict::refuse(refusal.reply.clone()).name().to_owned();
                r.reason = Some(
                    match refusal.by {
                        RefusedBy::Policy(check) => check.map_or("policy", CheckId::name),
                        RefusedBy::Mta => "mta",
                        RefusedBy::RelayTarget(_) => "relay_target",
                        RefusedBy::NoRelayTarget => "no_relay_target",
                    }
                    .to_owned(),
                );
                r
            })
            .collect()
    }

    fn transaction(&self, session: u64, report: &TransactionReport<'_>, track: &mut Track) {
        let mut would = std::mem::take(&mut track.would);
        would.extend(track.would_connection.iter().cloned());
        let mut base = self.record(session, &report.facts, report.sender);
        base.queue_id = some(report.queue_id);
        base.dry_run = report.dry_run;
        base.would = joined(would, "; ");
        base.duration_ms = report.elapsed.as_millis() as i64;
        base.verdict = Verdict::Continue.name().to_owned();
        let would_rcpt = std::mem::take(&mut track.would_rcpt);
        track.rules.clear();
        track.diverted = None;
        // A refusal at DATA (a verdict held until then) ended it; otherwise the client did.
        let refusal = track.refusal.take().filter(|r| r.stage == SmtpStage::Data);
        for recipient in report.accepted {
            let mut r = base.clone();
            r.recipient = Some(recipient.clone());
            r.would = would_for(&base.would, &would_rcpt, recipient);
            let outcome = match &refusal {
                Some(refusal) => {
                    r.verdict = refusal.verdict.to_owned();
                    r.reason = Some(refusal.check.to_owned());
                    r.reply = refusal.reply.as_ref().map(SmtpReply::to_string);
                    Outcome::of_reply(refusal.reply.as_ref().map_or(554, SmtpReply::code))
                }
                None => Outcome::Abandoned,
            };
            r.outcome = outcome.name().to_owned();
            self.queue(r);
        }
        for r in self.refused(&base, report.refused) {
            self.queue(r);
        }
        track.tracked = true;
    }

    /// The door said where the pending message went.
    fn handed_on(&self, relay_target: Option<&str>, reply: &SmtpReply, track: &mut Track) {
        for mut r in std::mem::take(&mut track.pending) {
            r.outcome = Outcome::of_reply(reply.code()).name().to_owned();
            r.reply = Some(reply.to_string());
            r.relay_target = relay_target.map(str::to_owned);
            self.queue(r);
        }
    }

    fn disconnected(&self, session: u64, report: &ConnectionReport<'_>, track: Track) {
        track.pending.into_iter().for_each(|r| self.queue(r));
        if !self.track_dropped_connections || track.tracked {
            return;
        }
        let facts = SessionFacts {
            client: report.client,
            helo: report.helo,
            tls: report.tls,
            authenticated: report.authenticated,
        };
        let refusal = track.refusal;
        if refusal.is_none() && track.would_connection.is_empty() && track.would.is_empty() {
            return;
        }
        let mut r = self.record(session, &facts, "");
        r.outcome = Outcome::ConnectionRefused.name().to_owned();
        r.duration_ms = report.elapsed.as_millis() as i64;
        let mut would = track.would_connection;
        would.extend(track.would);
        r.dry_run = !would.is_empty();
        r.would = joined(would, "; ");
        match refusal {
            Some(refusal) => {
                r.verdict = refusal.verdict.to_owned();
                r.reason = Some(refusal.check.to_owned());
                r.reply = refusal.reply.as_ref().map(SmtpReply::to_string);
            }
            None => r.verdict = Verdict::Continue.name().to_owned(),
        }
        self.queue(r);
    }
}

/// A recipient's would-be refusals: the transaction's, and those at its own RCPT.
fn would_for(
    transaction: &Option<String>,
    at_rcpt: &[(String, String)],
    recipient: &str,
) -> Option<String> {
    let own = at_rcpt
        .iter()
        .filter(|(r, _)| r == recipient)
        .map(|(_, would)| would.clone());
    joined(transaction.iter().cloned().chain(own).collect(), "; ")
}

impl Events for Tracker {
    fn emit(&self, event: &Event<'_>) {
        // The events a record needs nothing from take no lock.
        if matches!(
            event,
            Event::Checked { .. }
                | Event::Zone { .. }
                | Event::StoreUnavailable { .. }
                | Event::StoreBack { .. }
                | Event::ScanFailed { .. }
                | Event::Scanned { .. }
                | Event::AttachmentUnread { .. }
                | Event::Refused {
                    held_until: Some(_),
                    ..
                }
        ) {
            return;
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Connected { session, .. } => {
                sessions.insert(*session, Track::default());
            }
            Event::RuleActed {
                session,
                ruleset,
                rule,
                action,
                dry_run,
                ..
            } => {
                let action = if *dry_run {
                    format!("would_{action}")
                } else {
                    (*action).to_owned()
                };
                let track = sessions.entry(*session).or_default();
                track.rules.push(format!("{ruleset}/{rule}:{action}"));
            }
            Event::Diverted {
                session,
                relay_target,
                reply,
                ..
            } => {
                sessions.entry(*session).or_default().diverted =
                    Some(((*relay_target).to_owned(), reply.to_string()));
            }
            Event::WouldRefuse {
                session,
                stage,
                verdict,
                recipient,
            } => {
                let track = sessions.entry(*session).or_default();
                let would = format!("{stage}: {verdict}");
                if let Some(recipient) = recipient {
                    // Told on that recipient's record only.
                    track.would_rcpt.push(((*recipient).to_owned(), would));
                    return;
                }
                match *stage {
                    // Reported with the message itself.
                    SmtpStage::EndOfMessage => {}
                    s if s.is_connection() => track.would_connection.push(would),
                    _ => track.would.push(would),
                }
            }
            Event::Refused {
                session,
                check,
                verdict,
                stage,
                held_until: None,
                dry_run: false,
                ..
            } => {
                sessions.entry(*session).or_default().refusal = Some(Refusal {
                    stage: *stage,
                    check: check.name(),
                    verdict: verdict.name(),
                    reply: verdict.reply().cloned(),
                });
            }
            Event::Message { session, report } => {
                let track = sessions.entry(*session).or_default();
                std::mem::take(&mut track.pending)
                    .into_iter()
                    .for_each(|r| self.queue(r));
                self.message(*session, report, track);
            }
            Event::TransactionEnded { session, report } => {
                let track = sessions.entry(*session).or_default();
                std::mem::take(&mut track.pending)
                    .into_iter()
                    .for_each(|r| self.queue(r));
                self.transaction(*session, report, track);
            }
            Event::HandedOn {
                session,
                relay_target,
                reply,
            } => {
                let track = sessions.entry(*session).or_default();
                self.handed_on(*relay_target, reply, track);
            }
            Event::Disconnected { session, report } => {
                let track = sessions.remove(session).unwrap_or_default();
                self.disconnected(*session, report, track);
            }
            Event::Refused { .. }
            | Event::Checked { .. }
            | Event::Zone { .. }
            | Event::StoreUnavailable { .. }
            | Event::StoreBack { .. }
            | Event::ScanFailed { .. }
            | Event::AttachmentUnread { .. }
            | Event::Scanned { .. } => {}
        }
    }
}

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn joined(items: Vec<String>, separator: &str) -> Option<String> {
    (!items.is_empty()).then(|| items.join(separator))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::{ClientInfo, Stage};
    use crate::tracking::query::{Filter, find};

    fn client(addr: &str) -> ClientInfo {
        ClientInfo {
            addr: Some(addr.parse().unwrap()),
            name: None,
        }
    }

    /// The outcomes no end-to-end test reaches, through the real engine into a real SQLite
    /// file: a refusal held until DATA, a transaction the client gave up, a connection refused
    /// before any message.
    #[tokio::test]
    async fn held_abandoned_and_refused_connections_are_tracked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tracking.sqlite");
        let text = format!(
            "[connection]\nip_address_rejection = [\"192.0.2.0/24\"]\n\
             delayed_rejection_state = \"data\"\n\
             [tracking]\nstore = \"sqlite\"\npath = \"{}\"\ntrack_dropped_connections = true\n",
            path.display()
        );
        let config = Config::parse(&text, "test.toml").unwrap();
        let (app, _, _) = crate::app::App::new(config, DoorKind::Milter).unwrap();

        let mut s = app.engine.session(Stage::Helo);
        s.connect(client("192.0.2.10")).await;
        s.helo("held.example").await;
        s.mail("held@sender.example").await;
        s.rcpt("one@d.example").await;
        s.rcpt("two@d.example").await;
        assert!(matches!(s.data().await, Verdict::Reject(_)));
        s.reset();
        s.close();

        let mut s = app.engine.session(Stage::Helo);
        s.connect(client("198.51.100.1")).await;
        s.mail("gave-up@sender.example").await;
        s.rcpt("three@d.example").await;
        s.close();

        // A connection that did nothing leaves no record.
        let mut s = app.engine.session(Stage::Helo);
        s.connect(client("198.51.100.2")).await;
        s.close();
        app.finish_tracking().await;

        // Without delayed rejection, the client is refused at connect.
        let text = text.replace("delayed_rejection_state = \"data\"\n", "");
        let config = Config::parse(&text, "test.toml").unwrap();
        let (app, _, _) = crate::app::App::new(config, DoorKind::Proxy).unwrap();
        let mut s = app.engine.session(Stage::None);
        assert!(matches!(
            s.connect(client("192.0.2.11")).await,
            Verdict::Reject(_)
        ));
        s.close();
        app.finish_tracking().await;
        let store = StoreSettings::Sqlite { path };
        let all = Filter {
            limit: 10,
            ..Filter::default()
        };
        let records = find(&store, &all).await.unwrap();
        assert_eq!(records.len(), 4, "{records:#?}");
        let of = |recipient: Option<&str>| {
            records
                .iter()
                .find(|r| r.recipient.as_deref() == recipient)
                .unwrap_or_else(|| panic!("{recipient:?}: {records:#?}"))
        };
        for held in [of(Some("one@d.example")), of(Some("two@d.example"))] {
            assert_eq!(held.outcome, "rejected", "{held:#?}");
            assert_eq!(held.verdict, "reject");
            assert_eq!(held.reason.as_deref(), Some("ip_address_rejection"));
            assert!(
                held.reply.as_deref().unwrap().starts_with("554"),
                "{held:#?}"
            );
            // Held until DATA, the refusal let HELO through.
            assert_eq!(held.helo.as_deref(), Some("held.example"));
            assert_eq!(held.door, "milter");
        }
        let gave_up = of(Some("three@d.example"));
        assert_eq!(gave_up.outcome, "abandoned", "{gave_up:#?}");
        assert_eq!(gave_up.sender, "gave-up@sender.example");
        let refused = of(None);
        assert_eq!(refused.outcome, "connection_refused", "{refused:#?}");
        assert_eq!(refused.client_addr.as_deref(), Some("192.0.2.11"));
        assert_eq!(refused.reason.as_deref(), Some("ip_address_rejection"));
    }
}
