//! One relay target: where it is, how the connection is secured and authenticated.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tracing::info;

use super::stream::{Stop, for_lettre};
use super::tls::{ClientTls, TlsFacts, before_tls};
use crate::engine::SmtpReply;

/// "Security" of a relay target.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain SMTP, never STARTTLS.
    #[default]
    None,
    /// STARTTLS when the target offers it; plain otherwise. The certificate is still
    /// validated when TLS is used.
    Auto,
    /// STARTTLS required: a target that does not offer it is skipped (mandatory TLS).
    Tls,
    /// Implicit TLS from the first byte (port 465).
    Ssl,
}

impl Security {
    /// The setting's name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Auto => "auto",
            Self::Tls => "tls",
            Self::Ssl => "ssl",
        }
    }
}

/// "Authentication" of a relay target. CRAM-MD5 is not offered: it needs the password
/// stored in clear on the target and is obsolete (RFC 8314 era); PLAIN and LOGIN go only over
/// TLS in practice.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RelayAuth {
    #[default]
    None,
    Plain,
    Login,
    /// The strongest mechanism the target offers among those Postern speaks: PLAIN (one
    /// round trip), else LOGIN.
    Auto,
}

/// A relay target, compiled from `[[relay_target]]`.
#[derive(Clone)]
pub struct RelayTarget {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// 1 is highest.
    pub priority: u32,
    pub security: Security,
    pub auth: RelayAuth,
    /// Username and password; the password came from a file or the environment and is never
    /// logged.
    pub credentials: Option<Credentials>,
    /// Certificate validation for this target (name, roots, minimum version); `None` when
    /// `security = "none"`.
    pub tls: Option<ClientTls>,
    /// Only for messages a `divert` rule sends here (a quarantine, an encryption gateway):
    /// never used to relay ordinary mail.
    pub divert_only: bool,
    /// Longest line sent, in octets with CRLF ("Line Limit", 1000); longer lines are
    /// broken. 0: no limit.
    pub line_limit: usize,
    /// AUTH may go over a connection without TLS (`auth_over_plaintext`); otherwise a target
    /// that did not negotiate TLS is never sent the password.
    pub auth_over_plaintext: bool,
    /// The local address to connect from (`[delivery] source_address`); `None`: the system's
    /// choice.
    pub source_address: Option<IpAddr>,
}

/// What a target offered in its EHLO reply, as far as Postern's choices depend on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// SIZE (RFC 1870): only then is `SIZE=` sent with MAIL.
    pub size: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    /// The XFORWARD attributes offered (Postfix's XFORWARD_README), upper case.
    pub xforward: Vec<String>,
    /// PIPELINING (RFC 2920): XFORWARD and MAIL go out in one write.
    pub pipelining: bool,
    /// The AUTH mechanisms offered, upper case.
    pub auth: Vec<String>,
}

impl Capabilities {
    /// From the lines of an EHLO reply (the first names the server).
    pub fn from_ehlo<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut caps = Self::default();
        for line in lines.into_iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("SIZE") => caps.size = true,
                Some("8BITMIME") => caps.eight_bit_mime = true,
                Some("SMTPUTF8") => caps.smtputf8 = true,
                Some("PIPELINING") => caps.pipelining = true,
                Some("XFORWARD") => caps.xforward = words.map(str::to_ascii_uppercase).collect(),
                Some("AUTH") => caps.auth = words.map(str::to_ascii_uppercase).collect(),
                Some(legacy) if legacy.starts_with("AUTH=") && caps.auth.is_empty() => {
                    caps.auth = std::iter::once(&legacy[5..])
                        .chain(words)
                        .map(str::to_ascii_uppercase)
                        .collect();
                }
                _ => {}
            }
        }
        caps
    }
}

/// An open connection to a target, what the target offered on it, and what TLS it
/// negotiated (`None`: plaintext).
pub struct Link {
    pub conn: AsyncSmtpConnection,
    pub caps: Capabilities,
    pub tls: Option<TlsFacts>,
    /// Ends its writing when a message cannot be read to its end.
    pub stop: Stop,
}

impl fmt::Debug for RelayTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayTarget")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("priority", &self.priority)
            .field("security", &self.security)
            .field("auth", &self.auth)
            .field("divert_only", &self.divert_only)
            .field("line_limit", &self.line_limit)
            .finish_non_exhaustive()
    }
}

/// Why one target could not take a transaction.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("refused: {0}")]
    Refused(SmtpReply),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("does not offer STARTTLS, and security = \"tls\" requires it")]
    NoStartTls,
    /// The target lacks something this transaction needs (SMTPUTF8, 8BITMIME, TLS for
    /// AUTH); the reply says what, for the client when no target has it.
    #[error("{}", incapable_text(.0))]
    Incapable(SmtpReply),
    /// The target refused Postern's own credentials (AUTH). Postern's fault, not the
    /// sender's: the client hears 4xx, never the target's 535, and the log has its answer.
    #[error("refused Postern's credentials ({0}); check this relay target's username and password")]
    Credentials(SmtpReply),
    #[error("{0}")]
    Smtp(String),
}

/// What a target lacks, as the reply says it (its enhanced status code and text).
fn incapable_text(reply: &SmtpReply) -> String {
    match reply.enhanced() {
        Some(e) => format!("{e} {}", reply.text()),
        None => reply.text().to_owned(),
    }
}

impl TargetError {
    pub(super) fn from_smtp(e: lettre::transport::smtp::Error) -> Self {
        match super::replies::reply_in(&e) {
            Some(reply) => Self::Refused(reply),
            None => Self::Smtp(crate::logging::error_chain(&e)),
        }
    }
}

impl RelayTarget {
    /// A connection from `source` to the first of the target's addresses in its family that
    /// answers.
    async fn connect_from(&self, source: IpAddr) -> std::io::Result<TcpStream> {
        let mut last = None;
        for address in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
            if address.is_ipv4() != source.is_ipv4() {
                continue;
            }
            let socket = if source.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(source, 0)).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot use source_address {source}: {e}"))
            })?;
            match socket.connect(address).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                format!(
                    "{} has no {} address to reach from source_address {source}",
                    self.host,
                    if source.is_ipv4() { "IPv4" } else { "IPv6" }
                ),
            )
        }))
    }

    /// Connects, greets, secures and authenticates as configured.
    pub(super) async fn connect(
        &self,
        helo: &ClientId,
        timeout: std::time::Duration,
    ) -> Result<Link, TargetError> {
        // Our own socket, so that it has TCP_NODELAY: with Nagle's algorithm a small write
        // (a command, or a message's last piece) that follows another unanswered one would
        // wait for the target's delayed ACK (40 ms).
        let tcp = match self.source_address {
            None => TcpStream::connect((self.host.as_str(), self.port)).await,
            Some(source) => self.connect_from(source).await,
        }
        .map_err(|e| TargetError::Smtp(format!("cannot connect: {e}")))?;
        tcp.set_nodelay(true)
            .map_err(|e| TargetError::Smtp(format!("cannot set TCP_NODELAY: {e}")))?;
        let peer = tcp.peer_addr();
        let stop = Stop::default();
        let secured = |facts: &TlsFacts| {
            info!(relay_target = %self.name, tls = %facts, "TLS established with the relay target");
        };
        let (mut conn, tls) = match (self.security, &self.tls) {
            (Security::Ssl, Some(tls)) => {
                let (stream, facts) = tls.handshake(tcp).await.map_err(TargetError::Smtp)?;
                secured(&facts);
                let stream = for_lettre(Vec::new(), stream, peer, stop.clone());
                let conn = AsyncSmtpConnection::connect_with_transport(stream, helo)
                    .await
                    .map_err(TargetError::from_smtp)?;
                (conn, Some(facts))
            }
            (Security::Tls | Security::Auto, Some(tls)) => {
                let (tcp, plain) = before_tls(tcp, &helo.to_string(), true, timeout)
                    .await
                    .map_err(TargetError::Smtp)?;
                match plain {
                    None => {
                        let (stream, facts) =
                            tls.handshake(tcp).await.map_err(TargetError::Smtp)?;
                        secured(&facts);
                        // The greeting came before TLS; the library waits for one.
                        let greeting = format!("220 {} ESMTP\r\n", self.host).into_bytes();
                        let stream = for_lettre(greeting, stream, peer, stop.clone());
                        let conn = AsyncSmtpConnection::connect_with_transport(stream, helo)
                            .await
                            .map_err(TargetError::from_smtp)?;
                        (conn, Some(facts))
                    }
                    Some(_) if self.security == Security::Tls => {
                        return Err(TargetError::NoStartTls);
                    }
                    Some(greeting) => {
                        let stream = for_lettre(greeting, tcp, peer, stop.clone());
                        let conn = AsyncSmtpConnection::connect_with_transport(stream, helo)
                            .await
                            .map_err(TargetError::from_smtp)?;
                        (conn, None)
                    }
                }
            }
            _ => {
                let stream = for_lettre(Vec::new(), tcp, peer, stop.clone());
                let conn = AsyncSmtpConnection::connect_with_transport(stream, helo)
                    .await
                    .map_err(TargetError::from_smtp)?;
                (conn, None)
            }
        };
        // lettre keeps only the extensions it uses itself; ask again for the rest (SIZE,
        // XFORWARD). After STARTTLS, so that it is what the secured session offers.
        let caps = match conn.command(format!("EHLO {helo}\r\n")).await {
            Ok(reply) => Capabilities::from_ehlo(reply.message()),
            Err(e) => {
                conn.abort().await;
                return Err(TargetError::from_smtp(e));
            }
        };
        if let Some(credentials) = &self.credentials {
            if tls.is_none() && !self.auth_over_plaintext {
                conn.abort().await;
                return Err(TargetError::Incapable(super::replies::own_reply(
                    451,
                    "4.7.0",
                    "relay target did not negotiate TLS, and its password is never sent in plaintext (set security = \"tls\", or auth_over_plaintext = true)",
                )));
            }
            let offered = |m: &str| caps.auth.iter().any(|o| o == m);
            let mechanism = match self.auth {
                RelayAuth::Login => Mechanism::Login,
                RelayAuth::Plain | RelayAuth::None => Mechanism::Plain,
                RelayAuth::Auto if offered("PLAIN") => Mechanism::Plain,
                RelayAuth::Auto if offered("LOGIN") => Mechanism::Login,
                RelayAuth::Auto => {
                    conn.abort().await;
                    return Err(TargetError::Incapable(super::replies::own_reply(
                        451,
                        "4.7.0",
                        "relay target offers no AUTH mechanism Postern speaks (PLAIN, LOGIN); set auth to one it offers",
                    )));
                }
            };
            if let Err(e) = conn.auth(&[mechanism], credentials).await {
                conn.abort().await;
                return Err(match TargetError::from_smtp(e) {
                    TargetError::Refused(reply) => TargetError::Credentials(reply),
                    other => other,
                });
            }
        }
        Ok(Link {
            conn,
            caps,
            tls,
            stop,
        })
    }
}
