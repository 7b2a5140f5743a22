//! The domain layer: what each activity decides, as decisions over a store transaction —
//! no HTTP, no SQL, no timers, no job queue. Instances and their lifecycle, provisioning,
//! and the decision each callback leads to: its answer, the events it caused and the
//! follow-up work it leaves, as data that the application layer records and queues.

pub mod answer;
pub mod events;
pub mod instance;
pub mod license_code;
pub mod license_request;
pub mod order;
pub mod order_notify;
pub mod provision;
pub mod saas_v1;
pub mod saas_v2;
pub mod steps;
pub mod usage;
