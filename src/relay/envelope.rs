//! What goes with MAIL FROM: the parameters a target offers, the client for XFORWARD, and
//! what the connection must have negotiated.

use super::Capabilities;
use crate::engine::address::EnvelopeAddress;
use crate::engine::checks::outbound_tls::TlsRequirement;

/// The MAIL FROM parameters Postern passes on, read once from the client's command (or from
/// the message Postern sends itself) and written for each target as its EHLO allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParameters {
    /// `SIZE=n`, passed where the target offers SIZE.
    pub size: Option<u64>,
    /// `BODY=7BIT` or `BODY=8BITMIME`, passed where the target offers 8BITMIME.
    pub body: Option<BodyType>,
    /// `SMTPUTF8`, passed where the target offers it.
    pub smtputf8: bool,
}

/// The `BODY=` of MAIL FROM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
}

impl MailParameters {
    /// The parameters a target with `caps` is given, each with its leading space.
    pub(super) fn for_target(&self, caps: &Capabilities) -> String {
        let mut out = String::new();
        if let Some(size) = self.size.filter(|_| caps.size) {
            out.push_str(&format!(" SIZE={size}"));
        }
        match self.body.filter(|_| caps.eight_bit_mime) {
            Some(BodyType::SevenBit) => out.push_str(" BODY=7BIT"),
            Some(BodyType::EightBitMime) => out.push_str(" BODY=8BITMIME"),
            None => {}
        }
        if self.smtputf8 && caps.smtputf8 {
            out.push_str(" SMTPUTF8");
        }
        out
    }
}

/// The sender and MAIL parameters of one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    pub sender: EnvelopeAddress,
    pub params: MailParameters,
    /// The client the message came from, passed with XFORWARD to targets that offer it, so
    /// that their own checks and logs see the client rather than Postern.
    pub client: Option<ForwardedClient>,
    /// What the connection that carries this transaction must have negotiated: TLS with a
    /// validated certificate, and each requirement's version, cipher strength and names
    /// (encryption rules and outbound TLS policies of its recipients). Empty: as configured.
    pub tls: Vec<TlsRequirement>,
}

/// What XFORWARD tells a target about the client (Postfix's XFORWARD_README).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedClient {
    /// Verified host name, if any.
    pub name: Option<String>,
    pub addr: std::net::IpAddr,
    pub port: u16,
    /// `SMTP` or `ESMTP`.
    pub proto: &'static str,
    pub helo: Option<String>,
    /// Postern's id for the session (the `id` of its Received field, its logs and tracking),
    /// so that the target's log names it (Postfix: `orig_queue_id`).
    pub ident: Option<String>,
}

impl ForwardedClient {
    /// XFORWARD commands carrying the attributes the target offers, each line at most 512
    /// octets (RFC 5321's command limit); values xtext-encoded.
    pub(super) fn commands(&self, offered: &[String]) -> Vec<String> {
        const UNAVAILABLE: &str = "[UNAVAILABLE]";
        let addr = match self.addr {
            std::net::IpAddr::V4(a) => a.to_string(),
            std::net::IpAddr::V6(a) => format!("IPv6:{a}"),
        };
        let attributes = [
            (
                "NAME",
                self.name.clone().unwrap_or_else(|| UNAVAILABLE.into()),
            ),
            ("ADDR", addr),
            ("PORT", self.port.to_string()),
            ("PROTO", self.proto.to_owned()),
            (
                "HELO",
                self.helo.clone().unwrap_or_else(|| UNAVAILABLE.into()),
            ),
            ("SOURCE", "REMOTE".to_owned()),
            (
                "IDENT",
                self.ident.clone().unwrap_or_else(|| UNAVAILABLE.into()),
            ),
        ];
        let mut commands = Vec::new();
        let mut line = String::new();
        for (key, value) in attributes {
            if !offered.iter().any(|o| o == key) {
                continue;
            }
            let mut value = xtext(&value);
            value.truncate(255);
            let attribute = format!(" {key}={value}");
            if !line.is_empty() && line.len() + attribute.len() + 2 > 512 {
                commands.push(format!("{line}\r\n"));
                line.clear();
            }
            if line.is_empty() {
                line.push_str("XFORWARD");
            }
            line.push_str(&attribute);
        }
        if !line.is_empty() {
            commands.push(format!("{line}\r\n"));
        }
        commands
    }
}

/// RFC 3461 xtext: `+`, `=`, controls, space and non-ASCII as `+HH`.
pub(super) fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

impl Envelope {
    /// The envelope for a whole message sent on by Postern itself: `BODY=8BITMIME` when the
    /// message has 8-bit bytes, `SMTPUTF8` when an address is not ASCII, and its `SIZE`.
    pub fn for_message(
        sender: &EnvelopeAddress,
        recipients: &[EnvelopeAddress],
        message: &[u8],
    ) -> Self {
        let params = MailParameters {
            size: Some(message.len() as u64),
            body: (!message.is_ascii()).then_some(BodyType::EightBitMime),
            smtputf8: !sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii()),
        };
        Self {
            sender: sender.clone(),
            params,
            client: None,
            tls: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_go_only_where_offered() {
        let params = MailParameters {
            size: Some(120),
            body: Some(BodyType::EightBitMime),
            smtputf8: true,
        };
        let all = Capabilities::from_ehlo(["mx", "SIZE 1000", "8BITMIME", "SMTPUTF8"]);
        assert_eq!(params.for_target(&all), " SIZE=120 BODY=8BITMIME SMTPUTF8");
        let none = Capabilities::from_ehlo(["mx"]);
        assert_eq!(params.for_target(&none), "");
        let seven = MailParameters {
            body: Some(BodyType::SevenBit),
            ..MailParameters::default()
        };
        assert_eq!(seven.for_target(&all), " BODY=7BIT");
        let sender = "s@x.test".parse().unwrap();
        let recipients = ["r@y.test".parse().unwrap()];
        let message = Envelope::for_message(&sender, &recipients, "é\r\n".as_bytes());
        assert_eq!(
            message.params,
            MailParameters {
                size: Some(4),
                body: Some(BodyType::EightBitMime),
                smtputf8: false,
            }
        );
    }
}
