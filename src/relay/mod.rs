//! Delivery to relay targets (lettre): the proxy door hands every accepted message on here, in
//! priority order, before it says 250 to its client, so that a 250 always means
//! a target has the message. A target that cannot be
//! reached, refuses with 4xx or breaks mid-way is skipped for the next; when every target
//! fails the caller gets an error and answers 4xx, so the client keeps the message. The engine
//! delivers here too, for `divert` rules, through the targets a rule names.

//!
//! This file: the names the rest of the crate uses. `delivery.rs` the targets in priority
//! order and failover; `upstream.rs` one transaction with the target that took it (RCPT,
//! DATA); `envelope.rs` what goes with MAIL (parameters, XFORWARD); `outcome.rs` what became
//! of each attempt, for the event sinks; `errors.rs` how a delivery failed; `replies.rs`
//! replies read from targets and Postern's own, and the wire helpers; `target.rs` one target's
//! connection; `body.rs` the message on the wire; `pool.rs` idle connections; `stream.rs`,
//! `tls.rs` the stream under lettre; `outbound.rs` the engine's port.

mod body;
mod delivery;
mod envelope;
mod errors;
mod outbound;
mod outcome;
mod pool;
mod replies;
mod stream;
mod target;
pub mod tls;
mod upstream;

pub use body::Body;
pub use delivery::Delivery;
pub use envelope::{BodyType, Envelope, ForwardedClient, MailParameters};
pub use errors::{DataFailure, DeliveryError, RouteError};
pub use outbound::{RelayOutbound, SharedDelivery};
pub use pool::ConnectionCache;
pub use replies::is_tls_refusal;
pub use target::{Capabilities, RelayAuth, RelayTarget, Security, TargetError};
pub use upstream::{RcptAnswer, Upstream};
