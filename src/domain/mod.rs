//! What each activity does, free of HTTP and SQL: instances and their lifecycle,
//! provisioning, and the decision each callback leads to.

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
