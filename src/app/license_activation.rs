//! Activating license codes: koogate learns of a code by activating it through the open
//! API (spec §6.3), and remembers it for KooGallery's later License-code callbacks: an
//! application step over the marketplace client and the store, which know nothing of
//! each other.

use crate::domain::license_code::LicenseCode;
use crate::marketplace::{Client, MarketError};
use crate::store::{Store, StoreError};

/// Why an activation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error(transparent)]
    Market(#[from] MarketError),
    #[error("activated, but could not be remembered: {0}")]
    Store(#[from] StoreError),
}

/// What an activation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// The code is now known, as stored.
    New(LicenseCode),
    /// KooGallery activated it again; koogate already knew it and keeps its lifecycle.
    Known(LicenseCode),
}

/// Activates `license` with KooGallery and remembers it. The activation is noted before
/// the open API is called and completed once the code is stored, so that a crash (or a
/// failure) between the two leaves a trace: `license show` and the start of `serve` name
/// such codes, and activating again completes them. A code KooGallery refuses is never
/// stored.
pub async fn activate(
    client: &Client,
    store: &dyn Store,
    license: &str,
    real_effect_time: Option<&str>,
    now_ms: i64,
) -> Result<Activation, ActivateError> {
    store.begin_license_activation(license, now_ms).await?;
    let info = client.activate_license(license, real_effect_time).await?;
    let code = LicenseCode::from_activation(license.to_owned(), &info, now_ms);
    let activation = if store.insert_license_code(&code).await? {
        tracing::info!(license, order_id = ?code.order_id, "license code activated");
        Activation::New(code)
    } else {
        let known = store
            .license_code(license)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("license code {license} vanished")))?;
        Activation::Known(known)
    };
    store.complete_license_activation(license, now_ms).await?;
    Ok(activation)
}
