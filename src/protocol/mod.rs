//! KooGallery wire formats, the layer everything else builds on: signatures, encryption,
//! times, result codes and the request/response shapes of each activity. Pure: no HTTP
//! framework, no database, and `now` is always a parameter, so the server and the
//! simulator share it byte for byte.

pub mod apig;
pub mod canonical;
pub mod codes;
pub mod crypto;
pub mod fields;
pub mod ids;
pub mod json;
pub mod license_code;
pub mod license_token;
pub mod license_upload;
pub mod order;
pub mod personal;
pub mod reply;
pub mod saas_v1;
pub mod saas_v2;
pub mod signature;
pub mod time;
pub mod usage;
pub mod v1;
pub mod webhook;
