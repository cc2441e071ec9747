//! One tracking record: a message (or a transaction, or a refused connection) and one of its
//! recipients, with that recipient's outcome.

use super::TrackingError;
use super::query::{Param, Query};
use std::fmt;

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What became of one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Accepted and handed back to the MTA (milter door).
    Accepted,
    /// Handed to a relay target, which accepted it (proxy door).
    Relayed,
    /// Delivered through a `divert` rule's relay target instead.
    Diverted,
    /// Accepted and thrown away by the policy.
    Discarded,
    /// Refused for good (5xx) after the recipient was accepted: by the policy at the message,
    /// or by the relay target at the end of the data.
    Rejected,
    /// Refused for now (4xx): the client keeps the message.
    Deferred,
    /// The connection was closed on the client (421).
    Dropped,
    /// The recipient itself was refused at RCPT.
    Refused,
    /// Accepted, but the client never sent the message (RSET, QUIT, a new MAIL).
    Abandoned,
    /// A connection refused or dropped before any message (`track_dropped_connections`).
    ConnectionRefused,
    /// Records of this client left out over `max_records_per_client`: the record says how
    /// many.
    LeftOut,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Relayed => "relayed",
            Self::Diverted => "diverted",
            Self::Discarded => "discarded",
            Self::Rejected => "rejected",
            Self::Deferred => "deferred",
            Self::Dropped => "dropped",
            Self::Refused => "refused",
            Self::Abandoned => "abandoned",
            Self::ConnectionRefused => "connection_refused",
            Self::LeftOut => "left_out",
        }
    }

    /// The outcome a reply gives a recipient that was accepted before: 2xx relayed, 421
    /// dropped, other 4xx deferred, 5xx rejected.
    pub fn of_reply(code: u16) -> Self {
        match code {
            200..=399 => Self::Relayed,
            421 => Self::Dropped,
            400..=499 => Self::Deferred,
            _ => Self::Rejected,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One record as stored and as `postern track` shows it. Optional fields are `None` (SQL NULL)
/// when the fact was not known.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// When the record was made, in milliseconds since the Unix epoch (UTC); shown as RFC 3339.
    #[serde(rename = "time", serialize_with = "rfc3339")]
    pub time_ms: i64,
    /// `milter` or `proxy`.
    pub door: String,
    /// The session number, as the log lines give it.
    pub session: i64,
    pub queue_id: Option<String>,
    pub client_addr: Option<String>,
    pub client_name: Option<String>,
    pub helo: Option<String>,
    /// The TLS version of the session, when it used TLS.
    pub tls: Option<String>,
    pub auth_user: Option<String>,
    pub sender: String,
    /// `None` for a refused connection's record.
    pub recipient: Option<String>,
    /// What became of this recipient (an [`Outcome`]'s name).
    pub outcome: String,
    /// The reply that decided the outcome, as the client heard it.
    pub reply: Option<String>,
    /// The relay target that took (or refused) the message or this recipient.
    pub relay_target: Option<String>,
    pub message_id: Option<String>,
    pub size: Option<i64>,
    /// The verdict in force: the message's, or for a refused recipient that refusal's.
    pub verdict: String,
    /// Why: the check that decided; for a refused recipient the check (`relay`,
    /// `encryption_rule`, `address_hiding`, ...) or who else refused it (`mta`,
    /// `relay_target`, `no_relay_target`).
    pub reason: Option<String>,
    /// Rules that acted on the message: `ruleset/rule:action`, comma separated.
    pub rules: Option<String>,
    /// A dry run: nothing was refused or changed; `would` says what would have been.
    pub dry_run: bool,
    /// In a dry run, the refusals the policy would have given: `stage: verdict`, `; ` between.
    pub would: Option<String>,
    /// From MAIL FROM to the end of the transaction (or the connection's length).
    pub duration_ms: i64,
    /// The envelope sender as relayed, when the address transformation rewrote it.
    pub relayed_sender: Option<String>,
    /// This recipient as relayed, when the address transformation rewrote it.
    pub relayed_recipient: Option<String>,
    /// The DKIM, ARC and DMARC results on arrival (`dkim=pass dmarc=pass arc=none`), when
    /// `[authentication]` verified the message.
    pub authentication: Option<String>,
    /// The organization of the sender (outbound mail), with `[[organization]]`s.
    pub sender_organization: Option<String>,
    /// The organization that owns this recipient, with `[[organization]]`s.
    pub organization: Option<String>,
}

/// The most bytes of a client-given field (HELO, addresses, Message-ID, client name, user,
/// reply text) a record keeps; a longer one is cut at a character boundary and ends in
/// [`CUT_MARK`], so one client cannot fill the store with long commands.
pub const MAX_FIELD_BYTES: usize = 256;

/// What ends a field cut to [`MAX_FIELD_BYTES`].
pub const CUT_MARK: &str = "[cut]";

/// `field` within [`MAX_FIELD_BYTES`] (mark included), cut at a character boundary.
fn bounded(field: &mut String) {
    if field.len() <= MAX_FIELD_BYTES {
        return;
    }
    let mut end = MAX_FIELD_BYTES - CUT_MARK.len();
    while !field.is_char_boundary(end) {
        end -= 1;
    }
    field.truncate(end);
    field.push_str(CUT_MARK);
}

impl Record {
    /// The record with every client-given field within [`MAX_FIELD_BYTES`].
    pub fn bounded(mut self) -> Self {
        for field in [
            &mut self.queue_id,
            &mut self.client_name,
            &mut self.helo,
            &mut self.auth_user,
            &mut self.recipient,
            &mut self.reply,
            &mut self.message_id,
            &mut self.relayed_sender,
            &mut self.relayed_recipient,
        ]
        .into_iter()
        .flatten()
        {
            bounded(field);
        }
        bounded(&mut self.sender);
        self
    }
}

/// A relayed record from 192.0.2.1 for unit tests: each changes what it looks at.
#[cfg(test)]
pub(crate) fn sample(recipient: &str) -> Record {
    Record {
        time_ms: 1_000,
        door: "proxy".into(),
        session: 1,
        queue_id: None,
        client_addr: Some("192.0.2.1".into()),
        client_name: None,
        helo: None,
        tls: None,
        auth_user: None,
        sender: "a@b.example".into(),
        recipient: Some(recipient.into()),
        outcome: "relayed".into(),
        reply: Some("250 2.0.0 Ok".into()),
        relay_target: Some("mta".into()),
        message_id: None,
        size: Some(10),
        verdict: "continue".into(),
        reason: None,
        rules: None,
        dry_run: false,
        would: None,
        duration_ms: 3,
        relayed_sender: None,
        relayed_recipient: None,
        authentication: None,
        sender_organization: None,
        organization: None,
    }
}

/// The stored columns, in the order of [`Record`]'s fields.
pub const COLUMNS: [&str; 27] = [
    "time_ms",
    "door",
    "session",
    "queue_id",
    "client_addr",
    "client_name",
    "helo",
    "tls",
    "auth_user",
    "sender",
    "recipient",
    "outcome",
    "reply",
    "relay_target",
    "message_id",
    "size",
    "verdict",
    "reason",
    "rules",
    "dry_run",
    "would",
    "duration_ms",
    "relayed_sender",
    "relayed_recipient",
    "authentication",
    "sender_organization",
    "organization",
];

fn rfc3339<S: Serializer>(time_ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*time_ms))
}

/// `time_ms` as RFC 3339 in UTC, to the millisecond.
pub fn format_time(time_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| time_ms.to_string())
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The table's name, in SQLite and PostgreSQL alike.
pub const TABLE: &str = "postern_tracking";

/// The columns searches by address read: each address lowercased in Rust (Unicode-aware),
/// so that SQLite, whose `lower()` knows ASCII only, finds `Jürgen@Bücher.example` by
/// `jürgen@bücher.example` as PostgreSQL does. Written beside [`COLUMNS`], never read back.
pub const KEY_COLUMNS: [&str; 2] = ["sender_key", "recipient_key"];

/// The search key of an address: see [`KEY_COLUMNS`].
pub fn search_key(address: &str) -> String {
    address.to_lowercase()
}

/// The statement that creates the table when it is missing; `id` is the store's
/// auto-numbered key column type. Its indexes come after any [`ADDED_COLUMNS`] are added
/// ([`indexes`]).
pub fn create_table(id: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (
            id {id},
            time_ms BIGINT NOT NULL,
            door TEXT NOT NULL,
            session BIGINT NOT NULL,
            queue_id TEXT,
            client_addr TEXT,
            client_name TEXT,
            helo TEXT,
            tls TEXT,
            auth_user TEXT,
            sender TEXT NOT NULL,
            recipient TEXT,
            outcome TEXT NOT NULL,
            reply TEXT,
            relay_target TEXT,
            message_id TEXT,
            size BIGINT,
            verdict TEXT NOT NULL,
            reason TEXT,
            rules TEXT,
            dry_run BOOLEAN NOT NULL,
            would TEXT,
            duration_ms BIGINT NOT NULL,
            relayed_sender TEXT,
            relayed_recipient TEXT,
            authentication TEXT,
            sender_organization TEXT,
            organization TEXT,
            sender_key TEXT,
            recipient_key TEXT
        )"
    )
}

/// The statements that create the indexes when they are missing. Searches by address use
/// the search keys; rows written before they existed are found by `lower(...)`.
pub fn indexes() -> Vec<String> {
    [
        ("time", "time_ms"),
        ("sender", "lower(sender)"),
        ("recipient", "lower(recipient)"),
        ("sender_key", "sender_key"),
        ("recipient_key", "recipient_key"),
        ("client", "client_addr"),
        ("queue_id", "queue_id"),
        ("message_id", "message_id"),
    ]
    .into_iter()
    .map(|(name, expression)| {
        format!("CREATE INDEX IF NOT EXISTS {TABLE}_{name} ON {TABLE} ({expression})")
    })
    .collect()
}

/// Columns added after the table's first form, with their types: a store adds those its
/// table lacks when it opens it.
pub const ADDED_COLUMNS: [(&str, &str); 7] = [
    ("relayed_sender", "TEXT"),
    ("relayed_recipient", "TEXT"),
    ("sender_key", "TEXT"),
    ("recipient_key", "TEXT"),
    ("authentication", "TEXT"),
    ("sender_organization", "TEXT"),
    ("organization", "TEXT"),
];

/// `INSERT` of one record and its search keys, with `placeholder(n)` for the n-th value
/// (1-based): the [`COLUMNS`], then the [`KEY_COLUMNS`].
pub fn insert_statement(placeholder: fn(usize) -> String) -> String {
    let columns: Vec<&str> = COLUMNS.iter().chain(KEY_COLUMNS.iter()).copied().collect();
    let values: Vec<String> = (1..=columns.len()).map(placeholder).collect();
    format!(
        "INSERT INTO {TABLE} ({}) VALUES ({})",
        columns.join(", "),
        values.join(", ")
    )
}

/// How long records are kept: `days` (`[tracking] retention_days`; 0 keeps them for ever),
/// and for the records of an organization with its own `tracking_retention_days`, that.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub days: u32,
    pub organizations: Vec<(String, u32)>,
}

impl Retention {
    /// Whether anything is ever deleted.
    pub fn deletes(&self) -> bool {
        self.days > 0 || self.organizations.iter().any(|(_, d)| *d > 0)
    }

    /// The statements that delete what is past its retention at `now_ms`, for a store whose
    /// n-th placeholder is `placeholder(n)`: one per organization with its own retention,
    /// and one for every other record.
    pub fn purges(&self, now_ms: i64, placeholder: fn(usize) -> String) -> Vec<Query> {
        let before = |days: u32| Param::Int(now_ms - i64::from(days) * 86_400_000);
        let mut purges: Vec<Query> = self
            .organizations
            .iter()
            .filter(|(_, days)| *days > 0)
            .map(|(name, days)| Query {
                sql: format!(
                    "DELETE FROM {TABLE} WHERE organization = {} AND time_ms < {}",
                    placeholder(1),
                    placeholder(2)
                ),
                params: vec![Param::Text(name.clone()), before(*days)],
            })
            .collect();
        if self.days > 0 {
            let mut params = vec![before(self.days)];
            let mut sql = format!("DELETE FROM {TABLE} WHERE time_ms < {}", placeholder(1));
            if !self.organizations.is_empty() {
                let names: Vec<String> = self
                    .organizations
                    .iter()
                    .map(|(name, _)| {
                        params.push(Param::Text(name.clone()));
                        placeholder(params.len())
                    })
                    .collect();
                sql.push_str(&format!(
                    " AND (organization IS NULL OR organization NOT IN ({}))",
                    names.join(", ")
                ));
            }
            purges.push(Query { sql, params });
        }
        purges
    }
}

/// Reads a stored row, whatever the store: the columns in [`COLUMNS`] order.
pub trait Row {
    fn int(&self, i: usize) -> Result<Option<i64>, TrackingError>;
    fn text(&self, i: usize) -> Result<Option<String>, TrackingError>;
    fn boolean(&self, i: usize) -> Result<bool, TrackingError>;
}

/// Column `i` did not read: `e` says why.
pub(super) fn column_error(i: usize) -> impl FnOnce(&dyn std::fmt::Display) -> TrackingError {
    move |e| TrackingError::Column {
        column: COLUMNS[i],
        message: e.to_string(),
    }
}

/// What a query's rows are read as.
pub trait FromRow: Sized + Send + 'static {
    fn from_row(row: &impl Row) -> Result<Self, TrackingError>;
}

/// How many records of one verdict one minute holds (the console's chart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinuteCount {
    /// Minutes since the epoch.
    pub minute: i64,
    pub verdict: String,
    pub count: i64,
}

impl FromRow for MinuteCount {
    fn from_row(row: &impl Row) -> Result<Self, TrackingError> {
        Ok(Self {
            minute: row.int(0)?.unwrap_or_default(),
            verdict: row.text(1)?.unwrap_or_default(),
            count: row.int(2)?.unwrap_or_default(),
        })
    }
}

impl FromRow for Record {
    fn from_row(row: &impl Row) -> Result<Self, TrackingError> {
        let text = |i| row.text(i).map(Option::unwrap_or_default);
        let int = |i| row.int(i).map(Option::unwrap_or_default);
        Ok(Self {
            time_ms: int(0)?,
            door: text(1)?,
            session: int(2)?,
            queue_id: row.text(3)?,
            client_addr: row.text(4)?,
            client_name: row.text(5)?,
            helo: row.text(6)?,
            tls: row.text(7)?,
            auth_user: row.text(8)?,
            sender: text(9)?,
            recipient: row.text(10)?,
            outcome: text(11)?,
            reply: row.text(12)?,
            relay_target: row.text(13)?,
            message_id: row.text(14)?,
            size: row.int(15)?,
            verdict: text(16)?,
            reason: row.text(17)?,
            rules: row.text(18)?,
            dry_run: row.boolean(19)?,
            would: row.text(20)?,
            duration_ms: int(21)?,
            relayed_sender: row.text(22)?,
            relayed_recipient: row.text(23)?,
            authentication: row.text(24)?,
            sender_organization: row.text(25)?,
            organization: row.text(26)?,
        })
    }
}
