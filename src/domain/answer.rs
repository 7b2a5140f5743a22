//! What every activity decides to answer, and the parsed callback it decides over: the
//! answer's code and exact body bytes, and the request with what its answer needs from
//! the key that verified it.

use crate::protocol::codes::ResultCode;
use crate::protocol::crypto::FieldCipher;
use crate::protocol::license_code as license_code_protocol;
use crate::protocol::order::NotifyRequest;
use crate::protocol::reply::{Credentials, Reply};
use crate::protocol::saas_v1 as v1;
use crate::protocol::saas_v2 as v2;
use crate::store::{StoreError, StoreResult, StoredAnswer};

/// An answer ready to be signed and sent: the code and the exact body bytes. `Debug`
/// shows the body as its audit copy does, credentials redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: ResultCode,
    pub body: Vec<u8>,
    pub instance_id: Option<String>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("code", &self.code)
            .field(
                "body",
                &String::from_utf8_lossy(&crate::protocol::reply::redact_credentials(&self.body)),
            )
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

impl Answer {
    /// Serialises a reply once; these bytes are what is signed, sent and stored.
    pub fn reply(reply: &Reply) -> Self {
        Self {
            code: reply.result_code,
            body: reply.to_bytes(),
            instance_id: reply.instance_id.clone(),
        }
    }

    /// An earlier answer, replayed byte for byte (D7).
    pub fn replay(stored: StoredAnswer) -> StoreResult<Self> {
        let code = ResultCode::parse(&stored.result_code).ok_or_else(|| {
            StoreError::Corrupt(format!("stored result code {:?}", stored.result_code))
        })?;
        Ok(Self {
            code,
            body: stored.body,
            instance_id: stored.instance_id,
        })
    }

    pub fn with_instance(mut self, id: String) -> Self {
        self.instance_id = Some(id);
        self
    }
}

/// A parsed callback of any family, with what its answer needs from the key that
/// verified it.
#[derive(Debug, Clone)]
pub enum Work {
    SaasV2 {
        request: v2::Request,
        /// How `queryInstance` returns credentials (D6).
        credentials: Credentials,
    },
    SaasV1 {
        request: v1::Request,
        /// Encrypts the app-info credentials (§2.5).
        cipher: FieldCipher,
    },
    LicenseCode(license_code_protocol::Request),
    OrderNotify(NotifyRequest),
}

impl Work {
    pub fn activity(&self) -> &'static str {
        match self {
            Self::SaasV2 { request, .. } => request.activity.name(),
            Self::SaasV1 { request, .. } => request.activity.name(),
            Self::LicenseCode(request) => request.activity.name(),
            Self::OrderNotify(_) => "orderNotify",
        }
    }

    pub fn test(&self) -> bool {
        match self {
            Self::SaasV2 { request, .. } => request.test,
            Self::SaasV1 { request, .. } => request.test,
            Self::LicenseCode(request) => request.test,
            Self::OrderNotify(r) => r.test,
        }
    }

    pub fn order_id(&self) -> Option<&str> {
        match self {
            Self::SaasV2 { request, .. } => request.activity.order_id(),
            Self::SaasV1 { request, .. } => request.activity.order_id(),
            Self::LicenseCode(request) => request.activity.order_id(),
            Self::OrderNotify(r) => Some(&r.order_id),
        }
    }

    pub fn instance_id(&self) -> Option<&str> {
        match self {
            Self::SaasV2 { request, .. } => request.activity.instance_id(),
            Self::SaasV1 { request, .. } => request.activity.instance_id(),
            // The audit record keeps a license code where an instance id would be.
            Self::LicenseCode(request) => Some(request.activity.license()),
            Self::OrderNotify(_) => None,
        }
    }
}
