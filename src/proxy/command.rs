//! SMTP command lines (RFC 5321 §4.1), parsed strictly enough to know what the client asked
//! for and leniently enough for real clients (`MAIL FROM: <a@b>` with a space is common).

/// One command from the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        sender: String,
        params: Vec<String>,
    },
    Rcpt {
        recipient: String,
        params: Vec<String>,
    },
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    /// AUTH mechanism [initial-response]
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// A known verb with arguments that do not parse: the reply says what is wrong.
    Invalid(&'static str),
    /// A verb this server does not know.
    Unknown(String),
}

impl Command {
    /// Parses one command line (without its line end).
    pub fn parse(line: &[u8]) -> Self {
        let Ok(line) = std::str::from_utf8(line) else {
            return Self::Invalid("5.5.2 Syntax error: command is not valid UTF-8");
        };
        let (verb, rest) = match line.find(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => (line, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" if rest.is_empty() || rest.contains(char::is_whitespace) => {
                Self::Invalid("5.5.4 Syntax: EHLO hostname")
            }
            "EHLO" => Self::Ehlo(rest.to_owned()),
            "HELO" => Self::Helo(rest.to_owned()),
            "MAIL" => match path_argument(rest, "FROM:") {
                Some((sender, params)) => Self::Mail { sender, params },
                None => Self::Invalid("5.5.4 Syntax: MAIL FROM:<address>"),
            },
            "RCPT" => match path_argument(rest, "TO:") {
                Some((recipient, _)) if recipient.is_empty() => {
                    Self::Invalid("5.1.3 Syntax: RCPT TO:<address> (the address is empty)")
                }
                Some((recipient, params)) => Self::Rcpt { recipient, params },
                None => Self::Invalid("5.5.4 Syntax: RCPT TO:<address>"),
            },
            "DATA" if rest.is_empty() => Self::Data,
            "BDAT" => Self::Bdat,
            "RSET" if rest.is_empty() => Self::Rset,
            "NOOP" => Self::Noop,
            "QUIT" if rest.is_empty() => Self::Quit,
            "VRFY" => Self::Vrfy,
            "EXPN" => Self::Expn,
            "HELP" => Self::Help,
            "STARTTLS" if rest.is_empty() => Self::StartTls,
            "AUTH" => {
                let mut words = rest.split_ascii_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some(mechanism), initial, None) => Self::Auth {
                        mechanism: mechanism.to_ascii_uppercase(),
                        initial: initial.map(str::to_owned),
                    },
                    _ => Self::Invalid("5.5.4 Syntax: AUTH mechanism [initial-response]"),
                }
            }
            "DATA" | "RSET" | "QUIT" | "STARTTLS" => {
                Self::Invalid("5.5.4 Syntax error: this command takes no arguments")
            }
            _ => Self::Unknown(verb.to_owned()),
        }
    }
}

/// `FROM:<path> params` or `TO:<path> params`: the address inside the brackets and the
/// parameters. The address must be printable, without spaces or brackets inside.
fn path_argument(rest: &str, keyword: &str) -> Option<(String, Vec<String>)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = rest[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    let address = &rest[..end];
    if address
        .chars()
        .any(|c| c.is_control() || c == '<' || c == ' ')
    {
        return None;
    }
    let params = rest[end + 1..]
        .split_ascii_whitespace()
        .map(str::to_owned)
        .collect();
    Some((address.to_owned(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_and_rcpt_paths() {
        assert_eq!(
            Command::parse(b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME"),
            Command::Mail {
                sender: "a@b.example".into(),
                params: vec!["SIZE=10".into(), "BODY=8BITMIME".into()]
            }
        );
        assert_eq!(
            Command::parse(b"mail from: <>"),
            Command::Mail {
                sender: String::new(),
                params: vec![]
            }
        );
        assert_eq!(
            Command::parse(b"RCPT TO:<c@d.example>"),
            Command::Rcpt {
                recipient: "c@d.example".into(),
                params: vec![]
            }
        );
        assert!(matches!(
            Command::parse(b"RCPT TO:c@d.example"),
            Command::Invalid(_)
        ));
        assert!(matches!(Command::parse(b"RCPT TO:<>"), Command::Invalid(_)));
        assert!(matches!(
            Command::parse(b"MAIL FROM:<a b@c>"),
            Command::Invalid(_)
        ));
        assert!(matches!(
            Command::parse(b"MAIL TO:<a@b>"),
            Command::Invalid(_)
        ));
    }

    #[test]
    fn verbs() {
        assert_eq!(
            Command::parse(b"ehlo client.example"),
            Command::Ehlo("client.example".into())
        );
        assert!(matches!(Command::parse(b"EHLO"), Command::Invalid(_)));
        assert_eq!(Command::parse(b"DATA"), Command::Data);
        assert!(matches!(Command::parse(b"DATA now"), Command::Invalid(_)));
        assert_eq!(Command::parse(b"StartTLS"), Command::StartTls);
        assert_eq!(
            Command::parse(b"AUTH plain AGEAYg=="),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGEAYg==".into())
            }
        );
        assert_eq!(Command::parse(b"XYZZY 1"), Command::Unknown("XYZZY".into()));
        assert!(matches!(Command::parse(b"\xff\xfe"), Command::Invalid(_)));
    }
}
