//! Everything koogate stored about one order, gathered for a 服务监管 appeal: every
//! callback with its exact bytes, the state changes, what was delivered to the app and
//! when, the online-License applications with their uploads, and the activations of its
//! license codes. The CLI renders it (`koogate evidence`), the admin pages offer the same
//! file and build an order's timeline on it.

use crate::domain::instance::Instance;
use crate::domain::license_request::LicenseRequest;
use crate::store::{
    Attempt, CallbackRecord, CodeActivation, LicenseUpload, OrderLineRecord, Store, StoreResult,
    StoredEvent,
};

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
    /// The online-License applications of its instances, oldest first.
    pub license_requests: Vec<LicenseEvidence>,
}

/// One `getLicenseAsync` application and every attempt to upload its License.
#[derive(Debug, Clone)]
pub struct LicenseEvidence {
    pub request: LicenseRequest,
    /// The SHA-256 of the License as uploaded, once it is known.
    pub license_sha256: Option<String>,
    pub uploads: Vec<LicenseUpload>,
}

/// How many applications of one instance are gathered (each is one callback, so this is
/// far above what KooGallery sends).
const LICENSE_REQUESTS: u32 = 1_000;

/// One callback as received and answered, with the SHA-256 of the exact bytes.
#[derive(Debug, Clone)]
pub struct CallbackEvidence {
    /// The record's row id.
    pub id: i64,
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

/// Gathers the evidence of `order_id`; `None` when nothing at all is known of it.
pub async fn gather(store: &dyn Store, order_id: &str) -> StoreResult<Option<Evidence>> {
    let lines = store.order_lines(order_id).await?;
    let instances = store.instances_for_order(order_id).await?;
    let activations = store.code_activations(order_id).await?;
    let callbacks: Vec<CallbackEvidence> = store
        .callbacks_of_order(order_id)
        .await?
        .into_iter()
        .map(|stored| CallbackEvidence {
            id: stored.id,
            body_sha256: crate::protocol::crypto::sha256_hex(&stored.record.raw_body),
            answer_sha256: stored.record.response_sha256.clone(),
            record: stored.record,
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
                body_sha256: crate::protocol::crypto::sha256_hex(&body),
                body,
                event,
                attempts,
            });
        }
    }
    events.sort_by_key(|e| (e.event.created_ms, e.event.id));
    let mut license_requests = Vec::new();
    for instance in &instances {
        for request in store
            .license_requests(Some(&instance.id), LICENSE_REQUESTS)
            .await?
        {
            let uploads = store.license_uploads(&request.event_id).await?;
            license_requests.push(LicenseEvidence {
                license_sha256: request
                    .license
                    .as_ref()
                    .map(|l| crate::protocol::crypto::sha256_hex(l.content.bytes())),
                request,
                uploads,
            });
        }
    }
    license_requests.sort_by(|a, b| {
        (a.request.created_ms, &a.request.event_id)
            .cmp(&(b.request.created_ms, &b.request.event_id))
    });
    Ok(Some(Evidence {
        order_id: order_id.to_owned(),
        lines,
        instances,
        callbacks,
        events,
        activations,
        license_requests,
    }))
}
