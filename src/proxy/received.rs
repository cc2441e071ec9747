//! The `Received:` field the proxy adds for its hop (RFC 5321 §4.4), so that the MTA behind it
//! and the recipient see where the message came from, as Postfix writes it:
//!
//! ```text
//! Received: from client.example (unknown [192.0.2.1])
//!     (using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)
//!     by mx.example.org (Postern) with ESMTPS id 17;
//!     Wed, 2 Dec 2026 12:00:00 +0000
//! ```
//!
//! (continuation lines start with a tab).

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// What the field says about the hop.
pub(super) struct Hop<'a> {
    pub helo: Option<&'a str>,
    /// Verified host name of the client.
    pub name: Option<&'a str>,
    pub addr: IpAddr,
    /// TLS version and cipher.
    pub tls: Option<(&'a str, &'a str)>,
    pub esmtp: bool,
    pub authenticated: bool,
    pub hostname: &'a str,
    pub id: u64,
    /// The one recipient, when there is only one (`for <...>`).
    pub recipient: Option<&'a str>,
}

impl Hop<'_> {
    /// The whole field, folded, ending with CRLF.
    pub(super) fn field(&self, now: SystemTime) -> String {
        // RFC 3848 protocol names.
        let with = match (self.esmtp, self.tls.is_some(), self.authenticated) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let mut f = format!(
            "Received: from {} ({} [{}])\r\n",
            clean(self.helo.unwrap_or("unknown")),
            clean(self.name.unwrap_or("unknown")),
            self.addr
        );
        if let Some((version, cipher)) = self.tls {
            f.push_str(&format!(
                "\t(using {} with cipher {})\r\n",
                clean(version),
                clean(cipher)
            ));
        }
        f.push_str(&format!(
            "\tby {} (Postern) with {with} id {}",
            clean(self.hostname),
            self.id
        ));
        if let Some(r) = self.recipient {
            f.push_str(&format!("\r\n\tfor <{}>", clean(r)));
        }
        f.push_str(&format!(";\r\n\t{}\r\n", rfc5322_date(now)));
        f
    }
}

/// A client-given word made safe inside the field: printable ASCII without the comment and
/// clause delimiters, at most 255 characters; anything else becomes `?`.
fn clean(word: &str) -> String {
    word.chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '(' | ')' | ';' | '\\') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// `Wed, 2 Dec 2026 12:00:00 +0000` (RFC 5322 §3.3), in UTC.
pub(super) fn rfc5322_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Year, month (1-12) and day of the month of a day count since 1970-01-01 (Howard Hinnant's
/// civil-from-days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_rfc5322() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(rfc5322_date(at(0)), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(at(1_796_212_800)),
            "Wed, 2 Dec 2026 12:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(at(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
    }

    #[test]
    fn client_words_cannot_break_out_of_the_field() {
        let hop = Hop {
            helo: Some("x (evil); by forged.example"),
            name: None,
            addr: "192.0.2.1".parse().unwrap(),
            tls: Some(("TLSv1.3", "TLS13_AES_256_GCM_SHA384")),
            esmtp: true,
            authenticated: false,
            hostname: "mx.postern.test",
            id: 7,
            recipient: Some("a@b.test"),
        };
        let f = hop.field(UNIX_EPOCH);
        assert_eq!(
            f,
            "Received: from x??evil???by?forged.example (unknown [192.0.2.1])\r\n\
             \t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\
             \tby mx.postern.test (Postern) with ESMTPS id 7\r\n\
             \tfor <a@b.test>;\r\n\
             \tThu, 1 Jan 1970 00:00:00 +0000\r\n"
        );
    }
}
