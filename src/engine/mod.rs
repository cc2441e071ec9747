//! The policy engine: one [`Session`] per SMTP conversation, one call per stage, each answered
//! with a [`Verdict`] (and, at end of message, [`Edits`]). It knows nothing of milter packets or
//! sockets; the doors in `milter/` and `proxy/` translate.

pub mod checks;
pub mod message;
pub mod policy;
pub mod reply;
pub mod rules;
pub mod session;
pub mod verdict;

use std::sync::Arc;

use arc_swap::ArcSwap;

use checks::dos::ClientTracker;
use checks::reputation::{MemoryStore, ReputationStore};

pub use message::{BufferError, MessageBuffer, MessageLimits};
pub use policy::{Policy, ScanFailureAction, Stage};
pub use reply::SmtpReply;
pub use session::{ClientInfo, Session, TlsInfo};
pub use verdict::{Edits, HeaderEdit, MessageOutcome, ScanSlot, Verdict};

/// The engine shared by all connections of a process: holds the current policy and swaps it
/// whole on reload. Sessions keep the policy they started with.
#[derive(Debug)]
pub struct Engine {
    policy: ArcSwap<Policy>,
    shared: SharedState,
}

/// What sessions share beyond the policy, across reloads: connections per client (DoS
/// protection) and local reputations.
#[derive(Clone, Debug)]
pub struct SharedState {
    pub clients: Arc<ClientTracker>,
    pub reputation: Arc<dyn ReputationStore>,
}

impl Default for SharedState {
    fn default() -> Self {
        Self {
            clients: Arc::default(),
            reputation: Arc::new(MemoryStore::default()),
        }
    }
}

impl Engine {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            shared: SharedState::default(),
        }
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
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
