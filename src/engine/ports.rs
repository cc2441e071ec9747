//! What the engine asks of the world. Each port is a trait declared here and implemented
//! outside the engine: the resolver by `dns/`, outbound delivery by `relay/`, the state store
//! by `state/`, the event sinks by `logging`, `metrics` and `tracking`. The
//! composition root (`app`) builds one of each and hands them to the [`Engine`](super::Engine);
//! the engine itself opens no socket and keeps no state a fleet would need to share.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::address::EnvelopeAddress;
use super::checks::outbound_tls::TlsRequirement;
use super::events::Event;
use super::reply::SmtpReply;

/// Why a DNS lookup gave no answer. A name that does not exist is not an error: it is an
/// empty answer.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("DNS lookup of {name} failed: {reason}")]
pub struct LookupError {
    pub name: String,
    pub reason: String,
    /// No answer within the timeout (as opposed to an error answer).
    pub timeout: bool,
}

/// DNS as the checks use it (RBL, reputation zones, SPF). Names are fully qualified.
#[async_trait]
pub trait Resolver: Send + Sync + fmt::Debug {
    /// IPv4 addresses of `name`; empty when the name does not exist.
    async fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, LookupError>;
    /// IPv6 addresses of `name`; empty when the name does not exist.
    async fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>, LookupError>;
    /// Mail exchangers of `name`, most preferred first.
    async fn mx(&self, name: &str) -> Result<Vec<String>, LookupError>;
    /// TXT strings of `name`, each record's strings joined.
    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError>;
    /// Host names of an address (reverse lookup).
    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, LookupError>;
    /// The same resolver as DKIM, ARC and DMARC verification (mail-auth) asks it; `None`
    /// when there is none (then nothing is verified).
    fn authenticator(&self) -> Option<mail_auth::MessageAuthenticator>;
}

/// A message handed to relay targets by the engine itself: where a `divert` rule sends it.
#[derive(Clone, Copy, Debug)]
pub struct OutboundMessage<'a> {
    pub sender: &'a EnvelopeAddress,
    pub recipients: &'a [EnvelopeAddress],
    /// The whole message, header and body, CRLF line ends.
    pub message: &'a [u8],
    /// What the connection that carries it must have negotiated (empty: as configured).
    pub tls: &'a [TlsRequirement],
}

/// Outbound delivery for what the engine delivers itself (divert rules, recipients an
/// encryption rule routes through Postern behind an MTA).
#[async_trait]
pub trait Outbound: Send + Sync + fmt::Debug {
    /// Delivers `message` through the relay targets named in `via`, in their priority order:
    /// the target that accepted it and its reply, or why none did.
    async fn deliver(
        &self,
        via: &[String],
        message: OutboundMessage<'_>,
    ) -> Result<Delivered, OutboundError>;
}

/// A message an [`Outbound`] delivery handed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The relay target that accepted it.
    pub relay_target: String,
    /// Its reply to the end of the message.
    pub reply: SmtpReply,
}

/// Why an [`Outbound`] delivery did not hand the message on.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    /// The route names no relay target of the configuration in force.
    #[error("{0}")]
    Route(String),
    /// A relay target refused it.
    #[error("relay target {relay_target} refused: {reply}")]
    Refused {
        relay_target: String,
        reply: SmtpReply,
    },
    /// No relay target could take it now; each one's reason.
    #[error("no relay target is available: {}", .0.join("; "))]
    Unavailable(Vec<String>),
    /// A relay target was sent the whole message and gave no answer: it may have taken it,
    /// so it was not sent anywhere else.
    #[error("relay target {relay_target} gave no answer to the end of the message: {why}")]
    Uncertain { relay_target: String, why: String },
}

/// Why the store could not answer. The caller decides as if it had no state for the key
/// (never refusing mail because of the store) and logs it.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("state store unavailable: {0}")]
pub struct StoreError(pub String);

/// The identity every fact about a client is kept under (connection counts, AUTH failures,
/// learned reputation, in memory and in a shared store alike): its IPv4 address (also when
/// IPv4-mapped), or the /64 of an IPv6 address, the block one host usually holds, so that a
/// client cannot escape what is known of it by changing the low bits of its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        Self(match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
            v4 => v4,
        })
    }

    /// The address the key stands for (an IPv6 key: its /64's first address).
    pub fn ip(self) -> IpAddr {
        self.0
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V6(_) => write!(f, "{}/64", self.0),
            IpAddr::V4(_) => write!(f, "{}", self.0),
        }
    }
}

/// What a counter in the store counts, per [`ClientKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counter {
    /// New connections (DoS protection's rate limit).
    Connections,
    /// Failed AUTH attempts.
    AuthFailures,
    /// Failed logins to the web console.
    ConsoleLoginFailures,
}

/// State that outlives one connection and that a fleet of gateways would share: rate
/// counters, failure windows and learned reputation. Async, so that a networked store can
/// serve it; an implementation answers within its own timeout or fails.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Records one event of `counter` for `client` now and returns how many fell within the
    /// last `window`, this one included. Only the last `keep` events need be remembered.
    async fn hit(
        &self,
        counter: Counter,
        client: ClientKey,
        window: Duration,
        keep: u32,
    ) -> Result<u32, StoreError>;

    /// Adds `delta` (at least 0 after the change) to `counter` of `client` in a window that
    /// starts at its first addition and ends `window` later, when the count starts again from
    /// zero. Returns the count after the change; a `delta` of 0 reads it.
    async fn add(
        &self,
        counter: Counter,
        client: ClientKey,
        delta: i64,
        window: Duration,
    ) -> Result<u64, StoreError>;

    /// The client's learned reputation now, decayed towards 0 by `half_life`.
    async fn reputation(&self, client: ClientKey, half_life: Duration) -> Result<f64, StoreError>;

    /// Adds `delta` to the client's learned reputation.
    async fn add_reputation(
        &self,
        client: ClientKey,
        delta: f64,
        half_life: Duration,
    ) -> Result<(), StoreError>;

    /// Remembers for `ttl` that the message and recipients `handed` names (a digest) were
    /// handed on, so that a retry of the same message does not hand them on again.
    async fn remember_handed(&self, handed: &Digest, ttl: Duration) -> Result<(), StoreError>;

    /// Whether [`Store::remember_handed`] remembers `handed`.
    async fn was_handed(&self, handed: &Digest) -> Result<bool, StoreError>;
}

/// A SHA-256 digest that names something the store remembers.
pub type Digest = [u8; 32];

/// Where the engine reports what happened: checks, messages, connections. Logging is one
/// sink; metrics and message tracking are more. A sink must not block.
pub trait Events: Send + Sync + fmt::Debug {
    fn emit(&self, event: &Event<'_>);
}

/// Several sinks as one, each given every event in order.
#[derive(Debug, Default, Clone)]
pub struct Fanout(pub Vec<Arc<dyn Events>>);

impl Events for Fanout {
    fn emit(&self, event: &Event<'_>) {
        for sink in &self.0 {
            sink.emit(event);
        }
    }
}

/// The ports of one engine.
#[derive(Clone, Debug)]
pub struct Ports {
    pub resolver: Arc<dyn Resolver>,
    pub outbound: Arc<dyn Outbound>,
    pub store: Arc<dyn Store>,
    pub events: Arc<dyn Events>,
}

/// A resolver for a policy that asks DNS nothing: every lookup fails, saying so.
#[derive(Debug, Default)]
pub struct NoResolver;

#[async_trait]
impl Resolver for NoResolver {
    async fn a(&self, name: &str) -> Result<Vec<Ipv4Addr>, LookupError> {
        Err(no_resolver(name))
    }
    async fn aaaa(&self, name: &str) -> Result<Vec<Ipv6Addr>, LookupError> {
        Err(no_resolver(name))
    }
    async fn mx(&self, name: &str) -> Result<Vec<String>, LookupError> {
        Err(no_resolver(name))
    }
    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        Err(no_resolver(name))
    }
    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, LookupError> {
        Err(no_resolver(&ip.to_string()))
    }
    fn authenticator(&self) -> Option<mail_auth::MessageAuthenticator> {
        None
    }
}

fn no_resolver(name: &str) -> LookupError {
    LookupError {
        name: name.to_owned(),
        reason: "no DNS resolver is set up (no check that needs DNS is enabled)".to_owned(),
        timeout: false,
    }
}
