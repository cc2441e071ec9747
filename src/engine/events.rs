//! What the engine reports, as typed events: which check decided what, how long it took, what
//! became of each message, recipient and connection. Sinks (the log, the metrics, message
//! tracking) receive them through the [`Events`](super::ports::Events) port and never parse
//! text.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::address::EnvelopeAddress;
use super::authentication::AuthSummary;
use super::organizations::Owners;
use super::reply::SmtpReply;
use super::session::{ClientInfo, TlsInfo};
use super::verdict::{EnvelopeEdits, Verdict};

/// The checks of both stages, by the name logs and metrics give them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckId {
    DosProtection,
    IpAddressRejection,
    ConnectionProfile,
    Rbl,
    Reputation,
    Spf,
    RelayRestriction,
    EncryptionRule,
    MessageSize,
    HeaderLimit,
    Content,
    /// The author domain's DMARC policy, enforced (`[authentication] dmarc = "enforce"`).
    Dmarc,
    /// A sender from outside claiming a local domain (`spoof_detection`).
    Spoof,
    /// An envelope address the engine refuses whatever the policy (a control character).
    AddressSyntax,
    /// Every recipient after a suspected dictionary attack gets the same answer.
    AddressHiding,
    /// The engine could not judge (a timeout, a lookup or spool error): the scan failure
    /// action decided.
    ScanFailure,
}

impl CheckId {
    pub fn name(self) -> &'static str {
        match self {
            Self::DosProtection => "dos_protection",
            Self::IpAddressRejection => "ip_address_rejection",
            Self::ConnectionProfile => "connection_profile",
            Self::Rbl => "rbl",
            Self::Reputation => "reputation",
            Self::Spf => "spf",
            Self::RelayRestriction => "relay",
            Self::EncryptionRule => "encryption_rule",
            Self::MessageSize => "max_message_size",
            Self::HeaderLimit => "header_limit",
            Self::Content => "content",
            Self::Dmarc => "dmarc",
            Self::Spoof => "spoof",
            Self::AddressSyntax => "address_syntax",
            Self::AddressHiding => "address_hiding",
            Self::ScanFailure => "scan_failure",
        }
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which door a process serves: the label of its metrics and tracking records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DoorKind {
    /// Beside an MTA: the MTA carries the message on.
    Milter,
    /// In front of a mail server: Postern relays the message itself.
    Proxy,
}

impl DoorKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Milter => "milter",
            Self::Proxy => "proxy",
        }
    }
}

impl fmt::Display for DoorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where in the conversation something happened: a check's refusal, a held verdict, a dry
/// run's would-be refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SmtpStage {
    Connect,
    Helo,
    StartTls,
    Mail,
    Rcpt,
    Data,
    EndOfMessage,
    UnknownCommand,
}

impl SmtpStage {
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Helo => "helo",
            Self::StartTls => "starttls",
            Self::Mail => "mail",
            Self::Rcpt => "rcpt",
            Self::Data => "data",
            Self::EndOfMessage => "end_of_message",
            Self::UnknownCommand => "unknown_command",
        }
    }

    /// The stage a delayed-rejection setting names (`none`: where the verdict is reached,
    /// which is the connection).
    pub fn of(stage: crate::engine::policy::Stage) -> Self {
        use crate::engine::policy::Stage;
        match stage {
            Stage::None => Self::Connect,
            Stage::Helo => Self::Helo,
            Stage::StartTls => Self::StartTls,
            Stage::Mail => Self::Mail,
            Stage::Rcpt => Self::Rcpt,
            Stage::Data => Self::Data,
        }
    }

    /// Whether a refusal here concerns the connection rather than a transaction.
    pub fn is_connection(self) -> bool {
        matches!(
            self,
            Self::Connect | Self::Helo | Self::StartTls | Self::UnknownCommand
        )
    }
}

impl fmt::Display for SmtpStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the engine could not do in time or at all (the `step` of [`Event::ScanFailed`]):
/// the scan failure action decided instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanStep {
    /// The connection checks (DNS lookups, the store).
    Connect,
    /// SPF at MAIL FROM.
    Mail,
    /// The content stage.
    Content,
    /// Holding the message (the spool).
    Data,
    /// DKIM, ARC and DMARC verification of the arriving message.
    Authentication,
    /// The DKIM signature.
    Dkim,
    /// The ARC seal.
    Arc,
    /// Delivery through an encryption rule's route.
    SecureRoute,
    /// Delivery through a divert rule's targets.
    Divert,
    /// Delivery of an organization's version of the message through its route.
    OrganizationRoute,
}

impl ScanStep {
    /// Every step.
    pub const ALL: [Self; 10] = [
        Self::Connect,
        Self::Mail,
        Self::Content,
        Self::Data,
        Self::Authentication,
        Self::Dkim,
        Self::Arc,
        Self::SecureRoute,
        Self::Divert,
        Self::OrganizationRoute,
    ];

    /// What could not be done, for the log.
    pub fn failure(self) -> &'static str {
        match self {
            Self::Connect => "the connection checks could not finish",
            Self::Mail => "SPF could not be checked",
            Self::Content => "the content stage could not finish",
            Self::Data => "the message could not be held",
            Self::Authentication => "the message could not be verified (DKIM, ARC, DMARC)",
            Self::Dkim => "cannot sign the message (DKIM)",
            Self::Arc => "cannot seal the message (ARC)",
            Self::SecureRoute => {
                "recipients an encryption rule routes through Postern were not delivered"
            }
            Self::Divert => "message could not be diverted",
            Self::OrganizationRoute => {
                "an organization's version of the message was not delivered through its route"
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Mail => "mail",
            Self::Content => "content",
            Self::Data => "data",
            Self::Authentication => "authentication",
            Self::Dkim => "dkim",
            Self::Arc => "arc",
            Self::SecureRoute => "secure_route",
            Self::Divert => "divert",
            Self::OrganizationRoute => "organization_route",
        }
    }
}

/// One stage's checks of a connection, for its closing log line: `connect:rbl=reject:2ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRecord {
    pub stage: SmtpStage,
    /// The check that objected and its verdict's name; `None` when all passed.
    pub found: Option<(CheckId, &'static str)>,
    pub elapsed: Duration,
}

impl fmt::Display for CheckRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.stage)?;
        match self.found {
            Some((check, verdict)) => write!(f, "{check}={verdict}")?,
            None => f.write_str("pass")?,
        }
        write!(f, ":{}ms", self.elapsed.as_millis())
    }
}

/// Why a message got its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No check objected.
    EndOfMessage,
    /// A check objected at the end of the message.
    Check(CheckId),
    /// A verdict reached earlier was held until DATA (delayed rejection).
    Held,
    /// The message was refused while it arrived (too big, spool failure).
    RefusedBeforeEnd,
    /// A `divert` rule delivered it elsewhere.
    Divert,
    /// A `divert` rule matched but no relay target took the message.
    DivertFailed,
    /// The message could not be signed (DKIM).
    SigningFailed,
    /// The message could not be sealed (ARC).
    SealingFailed,
    /// Every recipient was delivered by Postern through an encryption rule's route.
    SecureRoute,
    /// An encryption rule's route took none of its recipients.
    SecureRouteFailed,
    /// Every recipient's version was delivered by Postern through its organization's route.
    OrganizationRoutes,
    /// An organization's route did not take its version.
    OrganizationRouteFailed,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EndOfMessage => "end_of_message",
            Self::Check(check) => check.name(),
            Self::Held => "held",
            Self::RefusedBeforeEnd => "refused_before_end",
            Self::Divert => "divert",
            Self::DivertFailed => "divert_failed",
            Self::SigningFailed => "dkim_failed",
            Self::SealingFailed => "arc_failed",
            Self::SecureRoute => "secure_route",
            Self::SecureRouteFailed => "secure_route_failed",
            Self::OrganizationRoutes => "organization_routes",
            Self::OrganizationRouteFailed => "organization_route_failed",
        })
    }
}

/// What became of one attempt with one relay target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The target took the message.
    Delivered,
    /// It refused the sender or the message permanently (5xx).
    Refused,
    /// It refused for now (4xx), or cannot carry this transaction.
    Deferred,
    /// It could not be reached or broke before it had the message.
    Unavailable,
    /// It was sent the message and gave no answer.
    Uncertain,
}

impl AttemptOutcome {
    /// Every outcome.
    pub const ALL: [Self; 5] = [
        Self::Delivered,
        Self::Refused,
        Self::Deferred,
        Self::Unavailable,
        Self::Uncertain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Refused => "refused",
            Self::Deferred => "deferred",
            Self::Unavailable => "unavailable",
            Self::Uncertain => "uncertain",
        }
    }
}

/// Who refused a recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusedBy {
    /// Postern's own policy: the check that refused (relay restriction, an encryption rule,
    /// address hiding after a dictionary attack was suspected, ...), when one is known.
    Policy(Option<CheckId>),
    /// The MTA behind the milter door refused it itself.
    Mta,
    /// The proxy's relay target, by name, refused it (or the sender before it).
    RelayTarget(String),
    /// The proxy could not hand it to any relay target.
    NoRelayTarget,
}

impl RefusedBy {
    /// The relay target's name, when one refused.
    pub fn relay_target(&self) -> Option<&str> {
        match self {
            Self::RelayTarget(name) => Some(name),
            _ => None,
        }
    }
}

/// A recipient of a transaction that was refused, with the reply the client heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedRecipient {
    pub address: String,
    pub reply: SmtpReply,
    pub by: RefusedBy,
}

/// A content rule that acted on a message (a dry run: that would have).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActedRule {
    pub ruleset: String,
    pub rule: String,
    /// The rule's action (`mask`, `reject`, `divert`, ...).
    pub action: &'static str,
    pub dry_run: bool,
}

impl fmt::Display for ActedRule {
    /// `ruleset/rule:action`, the action as `would_action` in a dry run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let would = if self.dry_run { "would_" } else { "" };
        write!(f, "{}/{}:{would}{}", self.ruleset, self.rule, self.action)
    }
}

/// A dry run's refusal that was not answered: at which stage, what it would have been and,
/// at RCPT, the recipient it concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WouldRefusal {
    pub stage: SmtpStage,
    pub verdict: Verdict,
    pub recipient: Option<String>,
}

impl fmt::Display for WouldRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, self.verdict)
    }
}

/// A refusal the policy answered (not held, not a dry run's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub stage: SmtpStage,
    pub check: CheckId,
    pub verdict: Verdict,
}

/// Where a door that relays the message itself (the proxy) handed it on: the relay target
/// that answered (`None` when none could take it) and the reply the client heard.
#[derive(Clone, Copy, Debug)]
pub struct HandedOn<'a> {
    pub relay_target: Option<&'a str>,
    pub reply: &'a SmtpReply,
}

/// What the session knew about the client when a transaction ended.
#[derive(Clone, Copy, Debug)]
pub struct SessionFacts<'a> {
    pub client: &'a ClientInfo,
    pub helo: Option<&'a str>,
    pub tls: Option<&'a TlsInfo>,
    pub authenticated: Option<&'a str>,
    /// A dry run: what the policy would have refused at connect, HELO or an unknown command.
    pub would: &'a [WouldRefusal],
}

/// What a finished message looked like, for the per-message line.
#[derive(Clone, Debug)]
pub struct MessageReport<'a> {
    pub queue_id: &'a str,
    pub sender: &'a str,
    /// The recipients accepted for the message, as the client gave them.
    pub recipients: &'a [EnvelopeAddress],
    /// The envelope as relayed, where the address transformation rewrote it.
    pub envelope: &'a EnvelopeEdits,
    /// The recipients refused in this transaction, each with its reply.
    pub refused: &'a [RefusedRecipient],
    /// The message's `Message-ID` field, as it came (angle brackets included).
    pub message_id: Option<&'a str>,
    pub facts: SessionFacts<'a>,
    pub size: u64,
    pub spooled: bool,
    /// The SPF result's name, `-` when SPF did not run.
    pub spf: &'static str,
    /// The DKIM, ARC and DMARC results on arrival, when `[authentication]` verified them.
    pub authentication: Option<AuthSummary>,
    pub verdict: &'a Verdict,
    pub reason: Reason,
    pub elapsed: Duration,
    /// A dry run: `verdict` is what would have been answered; the message went on unchanged.
    pub dry_run: bool,
    /// The content rules that acted on it, in order.
    pub rules: &'a [ActedRule],
    /// The relay target a divert (or an encryption rule's route) took it to, and its reply.
    pub diverted: Option<(&'a str, &'a SmtpReply)>,
    /// A dry run: what the policy would have refused in this transaction before its end (at
    /// RCPT for one recipient).
    pub would: &'a [WouldRefusal],
    /// Where the proxy handed it on; `None` when the MTA carries it, or when it was not
    /// accepted.
    pub handed_on: Option<HandedOn<'a>>,
    /// The organizations of its sender and recipients.
    pub owners: Owners<'a>,
    /// Recipients Postern delivered itself (an organization's version, an encryption rule's
    /// route), each with the target that took it and its reply.
    pub routed: &'a [Routed],
}

/// A recipient Postern delivered itself, through a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    pub recipient: EnvelopeAddress,
    pub relay_target: String,
    pub reply: SmtpReply,
}

/// A transaction that ended without reaching the end of its message (RSET, a new MAIL, a
/// refusal at DATA, the connection closed) after recipients were given: each refused one with
/// its reply, so that a refused address can be found later.
#[derive(Clone, Debug)]
pub struct TransactionReport<'a> {
    pub queue_id: &'a str,
    pub sender: &'a str,
    /// Recipients accepted, whose message never came (or was refused at DATA).
    pub accepted: &'a [EnvelopeAddress],
    pub refused: &'a [RefusedRecipient],
    pub facts: SessionFacts<'a>,
    pub elapsed: Duration,
    pub dry_run: bool,
    /// The refusal at DATA that ended it (a verdict held until then), if one did.
    pub refused_at_data: Option<&'a Refusal>,
    /// A dry run: what the policy would have refused in this transaction.
    pub would: &'a [WouldRefusal],
    /// The organizations of its sender and recipients.
    pub owners: Owners<'a>,
}

/// What a closed connection looked like, for the per-connection line.
#[derive(Clone, Debug)]
pub struct ConnectionReport<'a> {
    pub client: &'a ClientInfo,
    pub helo: Option<&'a str>,
    pub tls: Option<&'a TlsInfo>,
    pub authenticated: Option<&'a str>,
    pub messages: u32,
    pub checks: &'a [CheckRecord],
    pub invalid_commands: u32,
    pub failed_recipients: u32,
    pub unfinished_message: bool,
    /// From connect to close.
    pub elapsed: Duration,
    /// The last refusal answered in the connection.
    pub refusal: Option<&'a Refusal>,
    /// A dry run: what the policy would have refused and no message or transaction report
    /// told.
    pub would: &'a [WouldRefusal],
    /// A message or transaction of this connection was reported.
    pub reported: bool,
}

/// Something a session did or met that is not a check's verdict or a report: the log tells
/// it (at info, or warn where an operator may have to act).
#[derive(Clone, Debug)]
pub enum Note<'a> {
    /// STARTTLS completed.
    TlsStarted {
        version: &'a str,
        cipher: &'a str,
    },
    /// A connection profile or an encryption rule requires TLS the session does not have
    /// (`by` names which); the refusal follows.
    TlsRequired {
        by: &'static str,
        recipient: Option<&'a str>,
    },
    /// The client may not relay to this recipient; the refusal follows.
    RelayDenied {
        recipient: &'a str,
    },
    /// The client reached `max_failed_addresses`: every further recipient gets one answer.
    DictionaryAttackSuspected {
        client: Option<IpAddr>,
        failed_recipients: u32,
    },
    /// The client reached the invalid command limit and is dropped.
    TooManyInvalidCommands {
        count: u32,
        command: &'a str,
    },
    /// Part of the message could not be read back for `purpose` (the step is skipped).
    Unreadable {
        purpose: &'static str,
        error: &'a str,
    },
    /// The message has no header, so there is nothing to verify.
    NothingToVerify,
    /// DKIM, ARC and DMARC results on arrival.
    Verified {
        results: &'a str,
    },
    /// DMARC fails but is not enforced (`why`: report mode or an exemption).
    DmarcNotEnforced {
        domain: &'a str,
        policy: &'static str,
        why: &'static str,
    },
    /// DMARC fails with p=quarantine and `dmarc_quarantine_action = "accept"`.
    DmarcQuarantineAccepted {
        domain: &'a str,
    },
    /// An Authentication-Results field naming this host came with the message: removed.
    ForgedResultsRemoved {
        index: u32,
    },
    Sealed {
        domain: &'a str,
        selector: &'a str,
    },
    /// No ARC seal was added, and why (nothing to continue, a broken chain, ...).
    NotSealed {
        reason: &'a str,
    },
    Signed {
        domain: &'a str,
        selector: &'a str,
    },
    /// The author domain has a signer this client may not use.
    NotSigned {
        domain: &'a str,
        user: Option<&'a str>,
        profile: Option<&'a str>,
    },
    /// A header line longer than `limit` octets that cannot be folded (no white space, or
    /// not UTF-8 when `field` is `None`).
    UnfoldableLine {
        field: Option<&'a str>,
        limit: usize,
    },
    /// A copy of the message was kept for support (`[scan] retain_*`), or could not be.
    Retained {
        kind: &'static str,
        outcome: Result<&'a str, &'a str>,
    },
    /// The postmaster is accepted although a DNSBL or reputation refusal is held
    /// (`postmaster_exempt`).
    PostmasterExempt {
        recipient: &'a str,
    },
    /// Recipients whose route already took this message on an earlier attempt: not sent
    /// again.
    RouteAlreadyTaken {
        route: &'a str,
        recipients: usize,
    },
}

/// One thing that happened in a session.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    Connected {
        session: u64,
        client: &'a ClientInfo,
        /// The connection profile chosen for the client, if any.
        profile: Option<&'a str>,
    },
    /// A check ran: its result in its own words (`detail`) and the verdict it asks for.
    Checked {
        session: u64,
        check: CheckId,
        client: Option<IpAddr>,
        verdict: Option<&'a Verdict>,
        detail: String,
        elapsed: Duration,
        /// A dry run: the verdict is what the check would have asked for.
        dry_run: bool,
    },
    /// Something worth an operator's attention about a DNS zone a check uses: a self-test's
    /// outcome (`usable` says whether the zone is in use now; `None` when the test could not
    /// run), or an answer that was left out (`usable` `None`).
    Zone {
        session: u64,
        check: CheckId,
        zone: &'a str,
        usable: Option<bool>,
        note: &'a str,
    },
    /// A dry run: the policy would have answered `verdict` at `stage`; the conversation went
    /// on as if it had passed.
    WouldRefuse {
        session: u64,
        stage: SmtpStage,
        verdict: &'a Verdict,
        /// At RCPT: the recipient it concerns.
        recipient: Option<&'a str>,
    },
    /// The state store could not answer: `what` says which state and what was done instead
    /// (gone on without it, or, for a shared store, answered from this instance's own state).
    /// `session` is the session that asked, when the engine reports it.
    StoreUnavailable {
        session: Option<u64>,
        what: &'static str,
        error: &'a str,
    },
    /// A shared store answers again after an outage of `after`, during which `fallbacks`
    /// decisions were made without it.
    StoreBack {
        store: &'a str,
        after: Duration,
        fallbacks: u64,
    },
    /// A check's refusal: answered at once, held until a later stage (`held_until`), or, when
    /// `late`, one held earlier and answered now.
    Refused {
        session: u64,
        check: CheckId,
        verdict: &'a Verdict,
        stage: SmtpStage,
        held_until: Option<SmtpStage>,
        late: bool,
        /// A dry run: nothing was refused; a [`Event::WouldRefuse`] follows for the stage.
        dry_run: bool,
    },
    /// The engine could not judge; `action` is the scan failure action taken.
    ScanFailed {
        session: u64,
        step: ScanStep,
        error: &'a str,
        action: &'static str,
    },
    RuleActed {
        session: u64,
        queue_id: &'a str,
        ruleset: &'a str,
        rule: &'a str,
        target: &'a str,
        /// The rule's action (`mask`, `reject`, `divert`, ...).
        action: &'static str,
        count: usize,
        /// A dry run: the action would have been taken.
        dry_run: bool,
    },
    /// An attachment (or an entry of an archive) was not read to the end: a `[content]`
    /// limit, encryption or damage; `action` is what was done about it.
    AttachmentUnread {
        session: u64,
        queue_id: &'a str,
        attachment: &'a str,
        /// The limit's key, `encrypted` or `damaged`.
        reason: &'static str,
        /// What exactly (for the log).
        detail: &'a str,
        action: &'static str,
    },
    /// The content stage ran over a message (whatever it found), taking `elapsed`.
    Scanned {
        session: u64,
        elapsed: Duration,
    },
    Diverted {
        session: u64,
        queue_id: &'a str,
        ruleset: &'a str,
        rule: &'a str,
        relay_target: &'a str,
        reply: &'a SmtpReply,
    },
    Message {
        session: u64,
        report: MessageReport<'a>,
    },
    /// A transaction ended before its message; see [`TransactionReport`].
    TransactionEnded {
        session: u64,
        report: TransactionReport<'a>,
    },
    Disconnected {
        session: u64,
        report: ConnectionReport<'a>,
    },
    Noted {
        session: u64,
        note: Note<'a>,
    },
    /// One attempt to hand a message to a relay target (the proxy's, a divert's, a route's).
    RelayAttempt {
        relay_target: &'a str,
        outcome: AttemptOutcome,
    },
    /// Message tracking could not keep `count` records: `reason` is `queue_full` (the writer
    /// falls behind), `store_unavailable`, `writer_stopped` (at shutdown) or
    /// `max_records_per_client`; `detail` says more. Mail is not affected.
    TrackingDropped {
        reason: &'static str,
        count: u64,
        detail: &'a str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_records_read_as_before() {
        let passed = CheckRecord {
            stage: SmtpStage::Connect,
            found: None,
            elapsed: Duration::from_millis(3),
        };
        assert_eq!(passed.to_string(), "connect:pass:3ms");
        let refused = CheckRecord {
            stage: SmtpStage::Connect,
            found: Some((CheckId::Rbl, "reject")),
            elapsed: Duration::from_millis(2),
        };
        assert_eq!(refused.to_string(), "connect:rbl=reject:2ms");
    }
}
