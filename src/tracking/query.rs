//! `postern track`: which records to show (a [`Filter`] made from the command line), the SQL
//! that finds them in either store, and the table or JSON they are shown as.

use super::TrackingError;
use std::net::IpAddr;

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

use super::record::{
    COLUMNS, FromRow, MinuteCount, Record, TABLE, format_time, now_ms, search_key,
};
use super::{StoreSettings, postgres, sqlite};

/// `--limit` when not given.
pub const DEFAULT_LIMIT: u32 = 100;

/// What to look for; every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// An address, or `@domain` for every address of the domain (case ignored).
    pub sender: Option<String>,
    pub recipient: Option<String>,
    pub client: Option<IpAddr>,
    pub queue_id: Option<String>,
    /// With or without its angle brackets.
    pub message_id: Option<String>,
    pub verdict: Option<String>,
    /// Records of this organization: its recipients' and its senders'.
    pub organization: Option<String>,
    /// From this time on (milliseconds since the epoch).
    pub since_ms: Option<i64>,
    /// Before this time.
    pub until_ms: Option<i64>,
    /// One connection's records: its door and session number.
    pub door: Option<String>,
    pub session: Option<i64>,
    pub limit: u32,
    /// Records skipped before the first shown (a page further on).
    pub offset: u32,
}

/// The verdicts records hold.
pub const VERDICTS: [&str; 5] = crate::engine::Verdict::NAMES;

impl Filter {
    /// Checks the values a user gave.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(v) = &self.verdict
            && !VERDICTS.contains(&v.as_str())
        {
            return Err(format!(
                "--verdict {v:?} is not a verdict: use one of {}",
                VERDICTS.join(", ")
            ));
        }
        if let (Some(since), Some(until)) = (self.since_ms, self.until_ms)
            && since >= until
        {
            return Err("--since must be before --until".into());
        }
        if self.limit == 0 {
            return Err("--limit must be at least 1".into());
        }
        Ok(())
    }
}

/// A value bound to a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Text(String),
    Int(i64),
}

/// A `SELECT` with its values, for a store whose n-th placeholder is `placeholder(n)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Query {
    /// The records `filter` selects, newest first, `filter.limit` of them from
    /// `filter.offset` on.
    pub fn new(filter: &Filter, placeholder: fn(usize) -> String) -> Self {
        let (mut sql, mut params) = Self::selecting(
            &format!("SELECT {} FROM {TABLE}", COLUMNS.join(", ")),
            filter,
            placeholder,
        );
        let limit = placeholder(params.len() + 1);
        params.push(Param::Int(i64::from(filter.limit)));
        sql.push_str(&format!(" ORDER BY time_ms DESC, id DESC LIMIT {limit}"));
        if filter.offset > 0 {
            let offset = placeholder(params.len() + 1);
            params.push(Param::Int(i64::from(filter.offset)));
            sql.push_str(&format!(" OFFSET {offset}"));
        }
        Self { sql, params }
    }

    /// How many records of each verdict each minute holds among those `filter` selects
    /// (its limit and offset aside): rows of [`MinuteCount`](super::record::MinuteCount).
    pub fn per_minute(filter: &Filter, placeholder: fn(usize) -> String) -> Self {
        let (mut sql, params) = Self::selecting(
            &format!("SELECT time_ms / 60000 AS minute, verdict, COUNT(*) FROM {TABLE}"),
            filter,
            placeholder,
        );
        sql.push_str(" GROUP BY minute, verdict");
        Self { sql, params }
    }

    /// `select` with the conditions of `filter` (all must hold) and their values.
    fn selecting(
        select: &str,
        filter: &Filter,
        placeholder: fn(usize) -> String,
    ) -> (String, Vec<Param>) {
        let mut conditions: Vec<String> = Vec::new();
        let mut params = Vec::new();
        let bind = |params: &mut Vec<Param>, value: Param| {
            params.push(value);
            placeholder(params.len())
        };
        for (column, address) in [("sender", &filter.sender), ("recipient", &filter.recipient)] {
            let Some(address) = address else { continue };
            let address = search_key(address.trim_matches(['<', '>']));
            // The search key; a row written before keys existed by its lowered address.
            let (operator, value) = if address.starts_with('@') {
                ("LIKE", format!("%{}", like_escaped(&address)))
            } else {
                ("=", address)
            };
            let escape = if operator == "LIKE" {
                " ESCAPE '\\'"
            } else {
                ""
            };
            let p = bind(&mut params, Param::Text(value));
            conditions.push(format!(
                "({column}_key {operator} {p}{escape} OR ({column}_key IS NULL AND lower({column}) {operator} {p}{escape}))"
            ));
        }
        if let Some(client) = filter.client {
            let p = bind(&mut params, Param::Text(client.to_string()));
            conditions.push(format!("client_addr = {p}"));
        }
        if let Some(id) = &filter.queue_id {
            let p = bind(&mut params, Param::Text(id.clone()));
            conditions.push(format!("queue_id = {p}"));
        }
        if let Some(id) = &filter.message_id {
            let bare = id.trim().trim_start_matches('<').trim_end_matches('>');
            let a = bind(&mut params, Param::Text(format!("<{bare}>")));
            let b = bind(&mut params, Param::Text(bare.to_owned()));
            conditions.push(format!("message_id IN ({a}, {b})"));
        }
        if let Some(verdict) = &filter.verdict {
            let p = bind(&mut params, Param::Text(verdict.clone()));
            conditions.push(format!("verdict = {p}"));
        }
        if let Some(organization) = &filter.organization {
            let p = bind(&mut params, Param::Text(organization.clone()));
            conditions.push(format!("(organization = {p} OR sender_organization = {p})"));
        }
        if let Some(since) = filter.since_ms {
            let p = bind(&mut params, Param::Int(since));
            conditions.push(format!("time_ms >= {p}"));
        }
        if let Some(until) = filter.until_ms {
            let p = bind(&mut params, Param::Int(until));
            conditions.push(format!("time_ms < {p}"));
        }
        if let Some(door) = &filter.door {
            let p = bind(&mut params, Param::Text(door.clone()));
            conditions.push(format!("door = {p}"));
        }
        if let Some(session) = filter.session {
            let p = bind(&mut params, Param::Int(session));
            conditions.push(format!("session = {p}"));
        }
        let mut sql = select.to_owned();
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        (sql, params)
    }
}

/// `s` with LIKE's wildcards and its escape character escaped.
fn like_escaped(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The records `filter` selects from the configured store, newest first.
pub async fn find(store: &StoreSettings, filter: &Filter) -> Result<Vec<Record>, TrackingError> {
    select(store, filter, Query::new).await
}

/// How many records of each verdict each minute holds among those `filter` selects.
pub async fn per_minute(
    store: &StoreSettings,
    filter: &Filter,
) -> Result<Vec<MinuteCount>, TrackingError> {
    select(store, filter, Query::per_minute).await
}

/// What makes a query of a filter for a store whose n-th placeholder is `placeholder(n)`.
type MakeQuery = fn(&Filter, fn(usize) -> String) -> Query;

/// The rows of the query `query` makes of `filter`, from the configured store.
async fn select<T: FromRow>(
    store: &StoreSettings,
    filter: &Filter,
    query: MakeQuery,
) -> Result<Vec<T>, TrackingError> {
    filter.validate().map_err(TrackingError::Filter)?;
    match store {
        StoreSettings::Sqlite { path } => {
            // On the blocking pool: a read must not hold the runtime that serves mail.
            let (path, query) = (path.clone(), query(filter, |n| format!("?{n}")));
            tokio::task::spawn_blocking(move || sqlite::find(&path, &query))
                .await
                .map_err(|e| TrackingError::Filter(format!("the search failed: {e}")))?
        }
        StoreSettings::Postgres(pg) => {
            let query = query(filter, |n| format!("${n}"));
            let (config, connector) = pg.client_settings()?;
            postgres::find(&config, connector, &query).await
        }
    }
}

/// A time as `--since` and `--until` take it: an age back from `now_ms` (`90s`, `30m`, `1h`,
/// `2d`, `1w`), a date (`2026-12-01`, midnight UTC), a date and time in UTC
/// (`2026-12-01T08:00:00`, or with a space) or RFC 3339 (`2026-12-01T08:00:00+01:00`).
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    let hint =
        "write an age (90s, 30m, 1h, 2d, 1w), a date (2026-12-01) or a time (2026-12-01T08:00:00Z)";
    if let Some(unit) = s.chars().last().filter(char::is_ascii_alphabetic)
        && let Ok(n) = s[..s.len() - 1].parse::<u32>()
    {
        let seconds: i64 = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(format!("{s:?}: unknown unit {unit:?}; {hint}")),
        };
        return Ok(now_ms - i64::from(n) * seconds * 1000);
    }
    let millis = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(millis(t));
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = Date::parse(s, &date_format) {
        return Ok(millis(
            PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc(),
        ));
    }
    let utc = s.replace(' ', "T");
    let datetime_format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let short_format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    if let Ok(t) = PrimitiveDateTime::parse(&utc, &datetime_format)
        .or_else(|_| PrimitiveDateTime::parse(&utc, &short_format))
    {
        return Ok(millis(t.assume_utc()));
    }
    Err(format!("{s:?} is not a time; {hint}"))
}

/// [`parse_time`] against the clock.
pub fn parse_time_now(s: &str) -> Result<i64, String> {
    parse_time(s, now_ms())
}

/// The terminal width the table fits.
const WIDTH: usize = 100;

/// The records as a table of two lines per record, each at most 100 columns: time, door,
/// outcome, sender and recipient; then the reply, relay target, verdict and the rest (whole
/// when `wide`). Every field is shown [`printable`].
pub fn table(records: &[Record], wide: bool) -> String {
    let mut out = format!(
        "{:<19} {:<6} {:<10} {:<30} RECIPIENT\n",
        "TIME (UTC)", "DOOR", "OUTCOME", "SENDER"
    );
    for r in records {
        let time = format_time(r.time_ms);
        let time = time.get(..19).unwrap_or(&time).replace('T', " ");
        let line = format!(
            "{time:<19} {:<6} {:<10} {:<30} {}",
            cut(&r.door, 6),
            cut(&r.outcome, 10),
            cut(if r.sender.is_empty() { "<>" } else { &r.sender }, 30),
            cut(r.recipient.as_deref().unwrap_or("-"), 30),
        );
        out.push_str(line.trim_end());
        out.push('\n');
        let width = if wide { usize::MAX } else { WIDTH };
        out.push_str(&cut(&format!("    {}", details(r)), width));
        out.push('\n');
    }
    out.push_str(&format!("({} records)\n", records.len()));
    out
}

/// The second line of a record in the table.
fn details(r: &Record) -> String {
    let mut parts = Vec::new();
    if let Some(reply) = &r.reply {
        parts.push(format!("reply {reply:?}"));
    }
    if let Some(target) = &r.relay_target {
        parts.push(format!("target {target}"));
    }
    let mut verdict = format!("verdict {}", r.verdict);
    if let Some(reason) = &r.reason {
        verdict.push_str(&format!(" ({reason})"));
    }
    parts.push(verdict);
    match (&r.organization, &r.sender_organization) {
        (Some(to), Some(from)) if to != from => parts.push(format!("org {to} (from {from})")),
        (Some(org), _) | (None, Some(org)) => parts.push(format!("org {org}")),
        (None, None) => {}
    }
    if r.dry_run {
        parts.push(format!(
            "DRY RUN would: {}",
            r.would.as_deref().unwrap_or("pass")
        ));
    }
    if let Some(rules) = &r.rules {
        parts.push(format!("rules {rules}"));
    }
    if let Some(id) = &r.queue_id {
        parts.push(format!("queue {id}"));
    }
    let client = match (&r.client_addr, &r.client_name) {
        (Some(a), Some(n)) => format!("client {n}[{a}]"),
        (Some(a), None) => format!("client [{a}]"),
        (None, _) => "client local".to_owned(),
    };
    parts.push(client);
    if let Some(user) = &r.auth_user {
        parts.push(format!("auth {user}"));
    }
    if let Some(size) = r.size {
        parts.push(format!("{size} B"));
    }
    parts.push(format!("{} ms", r.duration_ms));
    if let Some(id) = &r.message_id {
        parts.push(format!("id {id}"));
    }
    if let Some(helo) = &r.helo {
        parts.push(format!("helo {helo}"));
    }
    if let Some(tls) = &r.tls {
        parts.push(tls.clone());
    }
    parts.push(format!("session {}", r.session));
    parts.join(", ")
}

/// At most `width` characters of `s` made [`printable`], `~` marking a cut.
fn cut(s: &str, width: usize) -> String {
    let s = printable(s);
    if s.chars().count() <= width {
        return s;
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('~');
    out
}

/// `s` with every character a terminal would act on escaped (`\u{1b}`, `\r`, ...): control
/// characters, and the bidirectional overrides that reorder what is shown. Records hold what
/// clients sent (HELO, Message-ID, addresses): printed raw, an escape sequence in them would
/// reach the administrator's terminal.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The records as one JSON array.
pub fn json(records: &[Record]) -> String {
    let mut out = serde_json::to_string_pretty(records).unwrap_or_else(|_| "[]".to_owned());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::super::record::{CUT_MARK, MAX_FIELD_BYTES};
    use super::*;

    const NOW: i64 = 1_796_000_000_000;

    #[test]
    fn ages_dates_and_times() {
        assert_eq!(parse_time("1h", NOW), Ok(NOW - 3_600_000));
        assert_eq!(parse_time("30m", NOW), Ok(NOW - 1_800_000));
        assert_eq!(parse_time("90s", NOW), Ok(NOW - 90_000));
        assert_eq!(parse_time("2d", NOW), Ok(NOW - 2 * 86_400_000));
        assert_eq!(parse_time("1w", NOW), Ok(NOW - 7 * 86_400_000));
        // 2026-12-01T00:00:00Z
        assert_eq!(parse_time("2026-12-01", NOW), Ok(1_796_083_200_000));
        assert_eq!(
            parse_time("2026-12-01T08:30:00Z", NOW),
            Ok(1_796_083_200_000 + 8 * 3_600_000 + 30 * 60_000)
        );
        assert_eq!(
            parse_time("2026-12-01T08:30:00.250+01:00", NOW),
            Ok(1_796_083_200_000 + 7 * 3_600_000 + 30 * 60_000 + 250)
        );
        assert_eq!(
            parse_time("2026-12-01 08:30", NOW),
            Ok(1_796_083_200_000 + 8 * 3_600_000 + 30 * 60_000)
        );
        for bad in ["yesterday", "1y", "2026-13-01", "", "h"] {
            let e = parse_time(bad, NOW).unwrap_err();
            assert!(e.contains("1h") || e.contains("unit"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_organization_is_found_by_its_recipients_and_its_senders() {
        let filter = Filter {
            organization: Some("acme".into()),
            limit: 5,
            ..Filter::default()
        };
        let q = Query::new(&filter, |n| format!("?{n}"));
        assert!(
            q.sql
                .contains(" WHERE (organization = ?1 OR sender_organization = ?1) ORDER BY"),
            "{}",
            q.sql
        );
        assert_eq!(q.params, [Param::Text("acme".into()), Param::Int(5)]);
    }

    #[test]
    fn queries_bind_every_value_and_ignore_case() {
        let filter = Filter {
            sender: Some("<Alice@Example.ORG>".into()),
            recipient: Some("@Example.net".into()),
            client: Some("192.0.2.7".parse().unwrap()),
            message_id: Some("abc@x".into()),
            verdict: Some("reject".into()),
            since_ms: Some(5),
            until_ms: Some(9),
            limit: 20,
            ..Filter::default()
        };
        let q = Query::new(&filter, |n| format!("${n}"));
        assert_eq!(
            q.sql,
            format!(
                "SELECT {} FROM postern_tracking WHERE \
                 (sender_key = $1 OR (sender_key IS NULL AND lower(sender) = $1)) \
                 AND (recipient_key LIKE $2 ESCAPE '\\' OR (recipient_key IS NULL AND lower(recipient) LIKE $2 ESCAPE '\\')) \
                 AND client_addr = $3 AND message_id IN ($4, $5) AND verdict = $6 AND time_ms >= $7 \
                 AND time_ms < $8 ORDER BY time_ms DESC, id DESC LIMIT $9",
                COLUMNS.join(", ")
            )
        );
        assert_eq!(
            q.params,
            vec![
                Param::Text("alice@example.org".into()),
                Param::Text("%@example.net".into()),
                Param::Text("192.0.2.7".into()),
                Param::Text("<abc@x>".into()),
                Param::Text("abc@x".into()),
                Param::Text("reject".into()),
                Param::Int(5),
                Param::Int(9),
                Param::Int(20),
            ]
        );
        // Nothing given: the newest records.
        let q = Query::new(
            &Filter {
                limit: 3,
                ..Filter::default()
            },
            |n| format!("?{n}"),
        );
        assert!(
            q.sql
                .ends_with("FROM postern_tracking ORDER BY time_ms DESC, id DESC LIMIT ?1")
        );
        // A domain's wildcards are literal.
        let q = Query::new(
            &Filter {
                sender: Some("@a_b%.example".into()),
                limit: 1,
                ..Filter::default()
            },
            |n| format!("?{n}"),
        );
        assert_eq!(q.params[0], Param::Text("%@a\\_b\\%.example".into()));
    }

    #[test]
    fn filters_are_checked() {
        let ok = Filter {
            limit: 1,
            ..Filter::default()
        };
        assert!(ok.validate().is_ok());
        let bad = Filter {
            verdict: Some("rejected".into()),
            ..ok.clone()
        };
        assert!(bad.validate().unwrap_err().contains("continue, reject"));
        let bad = Filter {
            since_ms: Some(10),
            until_ms: Some(5),
            ..ok.clone()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn client_text_is_escaped_in_the_table() {
        let record = Record {
            helo: Some("\u{1b}]0;PWNED\u{7}\u{1b}[2J".into()),
            message_id: Some("<a\u{1b}[31m@x>".into()),
            sender: "a\u{202e}gpj.exe@x".into(),
            recipient: Some("b\r\n@y".into()),
            ..sample()
        };
        let text = table(&[record], true);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(!text.contains('\u{202e}'), "{text:?}");
        assert!(text.contains("a\\u{202e}gpj.exe@x"), "{text}");
        assert!(text.contains("b\\r\\n@y"), "{text}");
        assert_eq!(
            text.lines().count(),
            4,
            "one header, two lines a record, a count"
        );
    }

    #[test]
    fn client_given_fields_are_stored_bounded() {
        let long = "é".repeat(300);
        let r = Record {
            helo: Some(long.clone()),
            sender: long.clone(),
            message_id: Some(format!("<{long}>")),
            client_addr: Some("192.0.2.1".into()),
            ..sample()
        }
        .bounded();
        for field in [
            r.helo.as_deref().unwrap(),
            &r.sender,
            r.message_id.as_deref().unwrap(),
        ] {
            assert!(field.len() <= MAX_FIELD_BYTES, "{}", field.len());
            assert!(field.ends_with(CUT_MARK), "{field}");
        }
        assert_eq!(r.client_addr.as_deref(), Some("192.0.2.1"));
        let short = sample().bounded();
        assert_eq!(short, sample(), "short fields are kept as they are");
    }

    fn sample() -> Record {
        Record {
            client_addr: None,
            ..super::super::record::sample("b@y")
        }
    }

    #[test]
    fn the_table_fits_100_columns() {
        let record = Record {
            time_ms: NOW,
            door: "proxy".into(),
            session: 12,
            queue_id: Some("4XyZ".into()),
            client_addr: Some("2001:db8::1234:5678:9abc".into()),
            client_name: Some("a-very-long-host-name.mail.example.org".into()),
            helo: Some("helo.example.org".into()),
            tls: Some("TLSv1.3".into()),
            auth_user: None,
            sender: "someone-with-a-long-name@sender-domain.example.org".into(),
            recipient: Some("someone-else-with-a-long-name@recipient.example.net".into()),
            outcome: "relayed".into(),
            reply: Some("250 2.0.0 Ok: queued as 4XyZ".into()),
            relay_target: Some("mta".into()),
            message_id: Some("<20261201.1234@sender-domain.example.org>".into()),
            size: Some(10240),
            verdict: "continue".into(),
            reason: Some("end_of_message".into()),
            rules: Some("pci/card:mask".into()),
            dry_run: false,
            would: None,
            duration_ms: 17,
            relayed_sender: None,
            relayed_recipient: None,
            authentication: None,
            sender_organization: None,
            organization: Some("acme".into()),
        };
        let text = table(&[record.clone(), record], false);
        for line in text.lines() {
            assert!(line.chars().count() <= 100, "{line:?}");
        }
        assert!(text.contains("relayed"));
        assert!(text.contains("target mta"));
        assert!(text.contains("org acme"));
        assert!(text.ends_with("(2 records)\n"));
    }
}
