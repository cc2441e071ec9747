//! The engine's [`Outbound`] port over the relay targets: where a `divert` rule's message
//! goes. The targets are those of the configuration in force (swapped whole on reload, as the
//! proxy's are), so ordinary and diverted mail never part ways after a reload.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use async_trait::async_trait;

use super::{Body, Delivery, DeliveryError, Envelope};
use crate::engine::ports::{Delivered, Outbound, OutboundError, OutboundMessage};

/// The relay targets and outbound settings in force, swapped whole on reload; a transaction
/// keeps the ones it started with.
pub type SharedDelivery = Arc<ArcSwap<Delivery>>;

/// A named subset of targets, with the delivery it was taken from.
type Route = (Arc<Delivery>, Arc<Delivery>);

/// Delivery for the engine, through named targets of the shared delivery.
pub struct RelayOutbound {
    delivery: SharedDelivery,
    /// The named subsets in use, each with the delivery it was taken from, so that its
    /// cached connections are kept from one message to the next until a reload.
    routes: Mutex<HashMap<Vec<String>, Route>>,
}

impl fmt::Debug for RelayOutbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayOutbound").finish_non_exhaustive()
    }
}

impl RelayOutbound {
    pub fn new(delivery: SharedDelivery) -> Self {
        Self {
            delivery,
            routes: Mutex::default(),
        }
    }

    /// The delivery through the targets named in `via`, of the configuration in force.
    fn route(&self, via: &[String]) -> Result<Arc<Delivery>, OutboundError> {
        let current = self.delivery.load_full();
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((from, route)) = routes.get(via)
            && Arc::ptr_eq(from, &current)
        {
            return Ok(route.clone());
        }
        let route = Arc::new(
            current
                .through(via)
                .map_err(|e| OutboundError::Route(e.to_string()))?,
        );
        routes.retain(|_, (from, _)| Arc::ptr_eq(from, &current));
        routes.insert(via.to_vec(), (current, route.clone()));
        Ok(route)
    }
}

#[async_trait]
impl Outbound for RelayOutbound {
    async fn deliver(
        &self,
        via: &[String],
        message: OutboundMessage<'_>,
    ) -> Result<Delivered, OutboundError> {
        let route = self.route(via)?;
        let envelope = Envelope {
            tls: message.tls.to_vec(),
            ..Envelope::for_message(message.sender, message.recipients, message.message)
        };
        route
            .send(
                &envelope,
                message.recipients,
                b"",
                &Body::Memory(message.message),
                0,
            )
            .await
            .map(|(relay_target, reply)| Delivered {
                relay_target,
                reply,
            })
            .map_err(OutboundError::from)
    }
}

impl From<DeliveryError> for OutboundError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::Refused { target, reply } => Self::Refused {
                relay_target: target,
                reply,
            },
            DeliveryError::Unavailable(reasons) => Self::Unavailable(reasons),
            DeliveryError::Uncertain { target, why } => Self::Uncertain {
                relay_target: target,
                why,
            },
        }
    }
}
