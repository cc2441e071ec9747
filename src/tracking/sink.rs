//! The tracking sink: turns each message, transaction and connection report into records
//! (the reports carry everything a record needs; the sink keeps no session state) and queues
//! them for the writer without ever waiting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};

use super::drops::Drops;
use super::limit::{self, ClientLimit};
use super::record::{Outcome, Record, now_ms};
use super::writer::{self, Writer};
use super::{StoreSettings, TrackingSettings};
use crate::engine::events::{
    CheckId, ConnectionReport, DoorKind, Event, MessageReport, Refusal, RefusedBy,
    RefusedRecipient, SessionFacts, TransactionReport, WouldRefusal,
};
use crate::engine::organizations::Owners;
use crate::engine::ports::Events;
use crate::engine::{SmtpReply, Verdict};

/// Message tracking as an event sink.
#[derive(Debug)]
pub struct Tracker {
    door: DoorKind,
    track_dropped_connections: bool,
    queue: mpsc::Sender<Record>,
    drops: Arc<Drops>,
    limit: ClientLimit,
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
        events: Option<Arc<dyn Events>>,
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
        let drops = Arc::new(Drops::new(events));
        let writer = Writer::spawn(backend, records, drops.clone(), settings.retention.clone());
        Ok(Self {
            door,
            track_dropped_connections: settings.track_dropped_connections,
            queue,
            drops,
            limit: ClientLimit::new(settings.max_records_per_client),
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
            sender_organization: None,
            organization: None,
        }
    }

    fn message(&self, session: u64, report: &MessageReport<'_>) {
        let mut would = Vec::new();
        if report.dry_run && *report.verdict != Verdict::Continue {
            would.push(format!("end_of_message: {}", report.verdict));
        }
        would.extend(of_transaction(report.would, report.facts.would));
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
        base.rules = joined(report.rules.iter().map(ToString::to_string).collect(), ", ");
        base.dry_run = report.dry_run;
        base.would = joined(would, "; ");
        base.duration_ms = report.elapsed.as_millis() as i64;
        base.relayed_sender = report.envelope.sender.as_ref().map(ToString::to_string);
        base.authentication = report.authentication.map(|a| a.words());
        base.sender_organization = report.owners.sender().map(str::to_owned);
        for recipient in report.recipients {
            let mut r = base.clone();
            r.recipient = Some(recipient.to_string());
            r.organization = report.owners.recipient(recipient).map(str::to_owned);
            r.would = would_for(&base.would, report.would, recipient);
            r.relayed_recipient = report
                .envelope
                .recipients
                .iter()
                .find(|(from, _)| from == recipient)
                .map(|(_, to)| to.to_string());
            let routed = report.routed.iter().find(|d| d.recipient == *recipient);
            let outcome = match (verdict, report.handed_on, routed) {
                // Delivered by Postern through its organization's (or an encryption rule's)
                // route, whatever became of the other recipients' versions.
                (_, _, Some(routed)) => {
                    r.relay_target = Some(routed.relay_target.clone());
                    r.reply = Some(routed.reply.to_string());
                    Outcome::of_reply(routed.reply.code())
                }
                (Verdict::Continue, Some(handed_on), None) => {
                    r.reply = Some(handed_on.reply.to_string());
                    r.relay_target = handed_on.relay_target.map(str::to_owned);
                    Outcome::of_reply(handed_on.reply.code())
                }
                (Verdict::Continue, None, None) => Outcome::Accepted,
                (Verdict::Discard, _, None) => match report.diverted {
                    Some((target, reply)) => {
                        r.relay_target = Some(target.to_owned());
                        r.reply = Some(reply.to_string());
                        Outcome::Diverted
                    }
                    None => Outcome::Discarded,
                },
                (refused, _, None) => {
                    let reply = refused.reply().expect("a refusal has a reply");
                    r.reply = Some(reply.to_string());
                    Outcome::of_reply(reply.code())
                }
            };
            r.outcome = outcome.name().to_owned();
            self.queue(r);
        }
        for r in self.refused(&base, report.refused, &report.owners) {
            self.queue(r);
        }
    }

    /// One record per refused recipient, on the transaction's `base`.
    fn refused(
        &self,
        base: &Record,
        refused: &[RefusedRecipient],
        owners: &Owners<'_>,
    ) -> Vec<Record> {
        refused
            .iter()
            .map(|refusal| {
                let mut r = base.clone();
                r.recipient = Some(refusal.address.clone());
                r.organization = owners.recipient(&refusal.address).map(str::to_owned);
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

    fn transaction(&self, session: u64, report: &TransactionReport<'_>) {
        let would: Vec<String> = of_transaction(report.would, report.facts.would).collect();
        let mut base = self.record(session, &report.facts, report.sender);
        base.queue_id = some(report.queue_id);
        base.dry_run = report.dry_run;
        base.would = joined(would, "; ");
        base.duration_ms = report.elapsed.as_millis() as i64;
        base.verdict = Verdict::Continue.name().to_owned();
        base.sender_organization = report.owners.sender().map(str::to_owned);
        for recipient in report.accepted {
            let mut r = base.clone();
            r.recipient = Some(recipient.to_string());
            r.organization = report.owners.recipient(recipient).map(str::to_owned);
            r.would = would_for(&base.would, report.would, recipient);
            // A refusal at DATA (a verdict held until then) ended it; otherwise the client did.
            let outcome = match report.refused_at_data {
                Some(refusal) => {
                    refused_by(&mut r, refusal);
                    Outcome::of_reply(refusal.verdict.reply().map_or(554, SmtpReply::code))
                }
                None => Outcome::Abandoned,
            };
            r.outcome = outcome.name().to_owned();
            self.queue(r);
        }
        for r in self.refused(&base, report.refused, &report.owners) {
            self.queue(r);
        }
    }

    fn disconnected(&self, session: u64, report: &ConnectionReport<'_>) {
        if !self.track_dropped_connections || report.reported {
            return;
        }
        if report.refusal.is_none() && report.would.is_empty() {
            return;
        }
        let facts = SessionFacts {
            client: report.client,
            helo: report.helo,
            tls: report.tls,
            authenticated: report.authenticated,
            would: report.would,
        };
        let mut r = self.record(session, &facts, "");
        r.outcome = Outcome::ConnectionRefused.name().to_owned();
        r.duration_ms = report.elapsed.as_millis() as i64;
        r.dry_run = !report.would.is_empty();
        r.would = joined(report.would.iter().map(ToString::to_string).collect(), "; ");
        match report.refusal {
            Some(refusal) => refused_by(&mut r, refusal),
            None => r.verdict = Verdict::Continue.name().to_owned(),
        }
        self.queue(r);
    }
}

/// `r` was refused by `refusal`.
fn refused_by(r: &mut Record, refusal: &Refusal) {
    r.verdict = refusal.verdict.name().to_owned();
    r.reason = Some(refusal.check.name().to_owned());
    r.reply = refusal.verdict.reply().map(SmtpReply::to_string);
}

/// A transaction's would-be refusals that concern all its recipients, then the connection's.
fn of_transaction<'a>(
    transaction: &'a [WouldRefusal],
    connection: &'a [WouldRefusal],
) -> impl Iterator<Item = String> + 'a {
    transaction
        .iter()
        .filter(|w| w.recipient.is_none())
        .chain(connection)
        .map(ToString::to_string)
}

/// A recipient's would-be refusals: the transaction's, and those at its own RCPT.
fn would_for(
    transaction: &Option<String>,
    would: &[WouldRefusal],
    recipient: &str,
) -> Option<String> {
    let own = would
        .iter()
        .filter(|w| w.recipient.as_deref() == Some(recipient))
        .map(ToString::to_string);
    joined(transaction.iter().cloned().chain(own).collect(), "; ")
}

impl Events for Tracker {
    fn emit(&self, event: &Event<'_>) {
        match event {
            Event::Message { session, report } => self.message(*session, report),
            Event::TransactionEnded { session, report } => self.transaction(*session, report),
            Event::Disconnected { session, report } => self.disconnected(*session, report),
            _ => {}
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
