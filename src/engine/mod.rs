//! The policy engine: one [`Session`] per SMTP conversation, one call per stage, each answered
//! with a [`Verdict`] (and, at end of message, [`Edits`]). It knows nothing of milter packets,
//! sockets, DNS servers or relay targets: the doors in `milter/` and `proxy/` translate, and
//! what it needs of the world it asks through its [`ports`].

pub mod address;
pub mod address_transformation;
pub mod arc;
pub mod attention;
pub mod authentication;
pub mod checks;
pub mod dkim;
pub mod events;
pub mod lines;
pub mod message;
pub mod organizations;
pub mod policy;
pub mod ports;
pub mod reply;
pub mod retain;
pub mod rules;
pub mod session;
pub mod verdict;

use std::sync::Arc;

use arc_swap::ArcSwap;

use checks::dos::ClientTracker;
use ports::Ports;

pub use events::{CheckId, Event};
pub use message::{BufferError, MessageBuffer, MessageLimits};
pub use policy::{Policy, ScanFailureAction, Stage};
pub use reply::SmtpReply;
pub use session::{ClientInfo, Session, TlsInfo};
pub use verdict::{Edits, EnvelopeEdits, HeaderEdit, MessageOutcome, ScanSlot, Verdict};

/// The engine shared by all connections of a process: holds the current policy and swaps it
/// whole on reload. Sessions keep the policy they started with.
#[derive(Debug)]
pub struct Engine {
    policy: ArcSwap<Policy>,
    shared: SharedState,
}

/// What sessions share beyond the policy, across reloads: the ports, and the connections
/// each client has open now (counted in this process only: a count in a shared store would
/// outlive a process that crashed).
#[derive(Clone, Debug)]
pub struct SharedState {
    pub ports: Ports,
    pub clients: Arc<ClientTracker>,
}

impl Engine {
    pub fn new(policy: Policy, ports: Ports) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            shared: SharedState {
                ports,
                clients: Arc::default(),
            },
        }
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// The ports the engine was built with.
    pub fn ports(&self) -> &Ports {
        &self.shared.ports
    }

    /// Replaces the policy atomically; sessions already running keep theirs.
    pub fn replace_policy(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// A new session under the current policy, for a door that can first show the client a
    /// reply of its own at `first_reply_stage`.
    pub fn session(&self, first_reply_stage: Stage) -> Session {
        Session::new(self.policy(), first_reply_stage, self.shared.clone())
    }
}
