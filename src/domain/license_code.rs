//! License codes (spec §6.3): koogate knows a code once it has activated it through the
//! open API; KooGallery's callbacks then renew, freeze, unfreeze and release it.

use super::answer::Answer;
use super::events::{Decision, Event, EventType};
use super::instance::State;
use crate::protocol::codes::ResultCode;
use crate::protocol::license_code::{Activity, Request};
use crate::protocol::order::LicenseCodeInfo;
use crate::protocol::reply::Reply;
use crate::protocol::saas_v2::StatusChange;
use crate::protocol::time;
use crate::store::{StoreResult, Tx};

/// A license code and where it is in its life (active ⇄ frozen → released).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseCode {
    pub license: String,
    pub order_id: Option<String>,
    pub order_line_id: Option<String>,
    pub product_id: Option<String>,
    pub state: State,
    pub expire_ms: Option<i64>,
    /// The latest renewal or unsubscribe order applied to the code.
    pub last_order_id: Option<String>,
    /// Released by a `testFlag=1` callback: dial tests replay the saved debugging cases,
    /// release included, twice a day (spec §9), so such a release hides the code from
    /// real callbacks only.
    pub released_by_test: bool,
    pub activated_ms: i64,
    pub updated_ms: i64,
    pub released_ms: Option<i64>,
}

impl LicenseCode {
    /// A newly activated code.
    pub fn activated(license: String, now_ms: i64) -> Self {
        Self {
            license,
            order_id: None,
            order_line_id: None,
            product_id: None,
            state: State::Active,
            expire_ms: None,
            last_order_id: None,
            released_by_test: false,
            activated_ms: now_ms,
            updated_ms: now_ms,
            released_ms: None,
        }
    }

    /// A code KooGallery has just activated, with the order, product and expiry its
    /// activation answer gave.
    pub fn from_activation(license: String, info: &LicenseCodeInfo, now_ms: i64) -> Self {
        Self {
            order_id: info.order_id.clone(),
            product_id: info.product_id.clone(),
            // An estimate only (spec §6.3); renewals bring the authoritative expiry.
            expire_ms: info
                .expire_time
                .as_deref()
                .and_then(time::parse_compact)
                .map(|t| t.timestamp_millis()),
            ..Self::activated(license, now_ms)
        }
    }

    /// Whether a callback sees the code as existing.
    pub fn visible_to(&self, test_callback: bool) -> bool {
        self.state != State::Released || (self.released_by_test && test_callback)
    }

    /// Applies one callback; `false` when the code is gone for it (answered `000003`).
    fn apply(&mut self, test: bool, activity: &Activity, now_ms: i64) -> bool {
        if let Activity::ReleaseLicenseCode { order_id, .. } = activity {
            if self.state != State::Released {
                self.state = State::Released;
                self.released_by_test = test;
                self.released_ms = Some(now_ms);
                self.last_order_id = order_id
                    .as_ref()
                    .map(ToString::to_string)
                    .or(self.last_order_id.take());
            } else if !test {
                // A real release is final, whatever test release came before it.
                self.released_by_test = false;
            }
            self.updated_ms = now_ms;
            return true;
        }
        if !self.visible_to(test) {
            return false;
        }
        if self.state == State::Released {
            // A test callback touching a test-released code brings it back (see `released_by_test`).
            self.state = State::Active;
            self.released_ms = None;
            self.released_by_test = false;
        }
        match activity {
            Activity::RefreshLicenseCode {
                order_id,
                product_id,
                expire_time,
                ..
            } => {
                self.expire_ms = Some(expire_time.timestamp_millis());
                self.last_order_id = Some(order_id.to_string());
                if product_id.is_some() {
                    self.product_id.clone_from(product_id);
                }
            }
            Activity::UpdateLicenseCodeStatus { status, .. } => {
                self.state = match status {
                    StatusChange::Freeze => State::Frozen,
                    StatusChange::Unfreeze => State::Active,
                };
            }
            Activity::ReleaseLicenseCode { .. } => unreachable!("handled above"),
        }
        self.updated_ms = now_ms;
        true
    }
}

/// Runs one verified, parsed License-code callback.
pub async fn act(tx: &mut dyn Tx, request: Request, now_ms: i64) -> StoreResult<Decision<Answer>> {
    let license = request.activity.license();
    let not_found = || {
        Answer::reply(&Reply::new(
            ResultCode::NotFound,
            format!("license code {license} does not exist"),
        ))
    };
    let Some(mut code) = tx.license_code_for_update(license).await? else {
        return Ok(Decision::quiet(not_found()));
    };
    let before = code.clone();
    if !code.apply(request.test, &request.activity, now_ms) {
        return Ok(Decision::quiet(not_found()));
    }
    let answer = Answer::reply(&Reply::success());
    if code == before {
        return Ok(Decision::quiet(answer));
    }
    tx.update_license_code(&code).await?;
    let kind = match &request.activity {
        Activity::RefreshLicenseCode { .. } => EventType::LicenseCodeRenewed,
        Activity::UpdateLicenseCodeStatus {
            status: StatusChange::Freeze,
            ..
        } => EventType::LicenseCodeFrozen,
        Activity::UpdateLicenseCodeStatus {
            status: StatusChange::Unfreeze,
            ..
        } => EventType::LicenseCodeUnfrozen,
        Activity::ReleaseLicenseCode { .. } => EventType::LicenseCodeReleased,
    };
    Ok(Decision::with(
        answer,
        vec![Event::license_code(kind, &code, request.test)],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: StatusChange) -> Activity {
        Activity::UpdateLicenseCodeStatus {
            license: "L".try_into().unwrap(),
            status,
        }
    }

    fn release() -> Activity {
        Activity::ReleaseLicenseCode {
            license: "L".try_into().unwrap(),
            order_id: Some("UNSUB".try_into().unwrap()),
            order_line_id: None,
        }
    }

    #[test]
    fn freeze_unfreeze_and_release_again() {
        let mut code = LicenseCode::activated("L".into(), 0);
        assert!(code.apply(false, &status(StatusChange::Freeze), 1));
        assert_eq!(code.state, State::Frozen);
        assert!(code.apply(false, &status(StatusChange::Unfreeze), 2));
        assert_eq!(code.state, State::Active);
        assert!(code.apply(false, &release(), 3));
        assert!(
            code.apply(false, &release(), 4),
            "a repeat release succeeds"
        );
        assert_eq!(
            (code.state, code.released_ms, code.last_order_id.as_deref()),
            (State::Released, Some(3), Some("UNSUB"))
        );
        assert!(
            !code.apply(false, &status(StatusChange::Unfreeze), 5),
            "gone for real callbacks"
        );
        assert!(
            !code.apply(true, &status(StatusChange::Unfreeze), 5),
            "a real release is final for tests too"
        );
    }

    #[test]
    fn a_real_release_after_a_test_release_is_final() {
        let mut code = LicenseCode::activated("L".into(), 0);
        assert!(code.apply(true, &release(), 1));
        assert!(code.apply(false, &release(), 2));
        assert!(!code.visible_to(true));
        assert!(!code.apply(true, &status(StatusChange::Unfreeze), 3));
    }

    #[test]
    fn a_test_release_is_seen_by_real_callbacks_only() {
        let mut code = LicenseCode::activated("L".into(), 0);
        assert!(code.apply(true, &release(), 1));
        assert!(!code.visible_to(false));
        assert!(code.visible_to(true));
        assert!(code.apply(true, &status(StatusChange::Freeze), 2));
        assert_eq!((code.state, code.released_ms), (State::Frozen, None));
    }
}
