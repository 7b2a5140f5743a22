//! Everything koogate stored about one order, gathered for a 服务监管 appeal: every
//! callback with its exact bytes, the state changes, what was delivered to the app and
//! when, and the activations of its license codes. The CLI renders it (`koogate
//! evidence`); the operator pages can render the same.

use crate::domain::instance::Instance;
use crate::store::{
    Attempt, CallbackRecord, CodeActivation, OrderLineRecord, Store, StoreResult, StoredEvent,
};
use sha2::{Digest, Sha256};

/// What is known of one order.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub order_id: String,
    pub lines: Vec<OrderLineRecord>,
    pub instances: Vec<Instance>,
    /// Oldest first.
    pub callbacks: Vec<CallbackEvidence>,
    /// The state changes of its instances, lines and codes, oldest first.
    pub events: Vec<EventEvidence>,
    pub activations: Vec<CodeActivation>,
}

/// One callback as received and answered, with the SHA-256 of the exact bytes.
#[derive(Debug, Clone)]
pub struct CallbackEvidence {
    pub record: CallbackRecord,
    pub body_sha256: String,
    pub answer_sha256: String,
}

/// One state change and every attempt to deliver it.
#[derive(Debug, Clone)]
pub struct EventEvidence {
    pub event: StoredEvent,
    /// The exact body every attempt sent, and its SHA-256.
    pub body: Vec<u8>,
    pub body_sha256: String,
    pub attempts: Vec<Attempt>,
}

/// The SHA-256 of `bytes`, as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Gathers the evidence of `order_id`; `None` when nothing at all is known of it.
pub async fn gather(store: &dyn Store, order_id: &str) -> StoreResult<Option<Evidence>> {
    let lines = store.order_lines(order_id).await?;
    let instances = store.instances_for_order(order_id).await?;
    let activations = store.code_activations(order_id).await?;
    let callbacks: Vec<CallbackEvidence> = store
        .callbacks_of_order(order_id)
        .await?
        .into_iter()
        .map(|record| CallbackEvidence {
            body_sha256: sha256_hex(&record.raw_body),
            answer_sha256: record.response_sha256.clone(),
            record,
        })
        .collect();
    if lines.is_empty() && instances.is_empty() && activations.is_empty() && callbacks.is_empty() {
        return Ok(None);
    }
    let subjects = instances
        .iter()
        .map(|i| format!("instance:{}", i.id))
        .chain(
            lines
                .iter()
                .map(|l| format!("order:{}/{}", l.order_id, l.order_line_id)),
        )
        .chain(
            activations
                .iter()
                .map(|a| format!("license-code:{}", a.code.license)),
        );
    let mut events = Vec::new();
    for subject in subjects {
        for event in store.events_of(&subject).await? {
            let attempts = store.event_attempts(&event.event_id).await?;
            let body = event.body();
            events.push(EventEvidence {
                body_sha256: sha256_hex(&body),
                body,
                event,
                attempts,
            });
        }
    }
    events.sort_by_key(|e| (e.event.created_ms, e.event.id));
    Ok(Some(Evidence {
        order_id: order_id.to_owned(),
        lines,
        instances,
        callbacks,
        events,
        activations,
    }))
}
