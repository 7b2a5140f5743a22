//! Online License applications (在线开通License, `getLicenseAsync`: koogallery.md §6.2,
//! merchant-api.md §5). One application per KooGallery `eventId`, idempotent on
//! (`eventId`, `deviceFingerprint`). Its License is issued by koogate itself (`signed`
//! mode: an Ed25519 token) or provided by the merchant's app (`app` mode), and is then
//! delivered by the durable `license.upload` job through 字符串/文件流上传 (§8.3). Nothing
//! polls the merchant for a License: the upload is the delivery (D13).

use super::answer::Answer;
use super::events::{Decision, Event, EventType, FollowUp, InstanceView, rfc3339};
use super::instance::{Family, Instance};
use super::provision::FieldProblem;
use crate::protocol::codes::ResultCode;
use crate::protocol::license_token::{Claims, LicenseKey};
use crate::protocol::license_upload::{self, Content};
use crate::protocol::reply::Reply;
use crate::protocol::saas_v2::LicenseApplication;
use crate::store::{StoreResult, Tx};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Who makes Licenses (`KOOGATE_LICENSE_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// koogate signs a token itself (merchant-api.md §5).
    Signed,
    /// The merchant's app answers `license.requested` or calls the API.
    App,
}

/// What the License decisions need, from `[license]`.
#[derive(Debug, Clone)]
pub struct Licensing {
    pub mode: Mode,
    /// The signing key (`signed` mode); `None` when none could be had, so that
    /// applications are answered `000005` and the log says why.
    pub key: Option<LicenseKey>,
    /// `000903` for an application without a device fingerprint.
    pub require_fingerprint: bool,
    /// The largest License the app may provide, in bytes.
    pub max_bytes: usize,
}

/// Where an application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    /// `app` mode: waiting for the app's License.
    AwaitingLicense,
    /// The License is known; the upload job delivers it.
    Uploading,
    /// KooGallery answered `CBC.0000`.
    Delivered,
    /// The upload was parked; `error` says why, `koogate jobs retry` tries again.
    Failed,
}

impl RequestState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingLicense => "awaiting_license",
            Self::Uploading => "uploading",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::AwaitingLicense,
            Self::Uploading,
            Self::Delivered,
            Self::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// A License and who made it (`signed` or `app`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    pub content: Content,
    pub source: String,
}

/// One `getLicenseAsync` application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseRequest {
    pub event_id: String,
    pub instance_id: String,
    pub device_fingerprint: Option<String>,
    pub effective_ms: i64,
    pub expire_ms: Option<i64>,
    pub test: bool,
    pub state: RequestState,
    pub license: Option<License>,
    /// Why the upload was parked.
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub delivered_ms: Option<i64>,
}

/// The answer an application gets for where it stands (D13): `000000` once KooGallery
/// has the License, `000004` until then. Both are the same bytes every time.
pub fn answer_for(state: RequestState) -> Answer {
    match state {
        RequestState::Delivered => Answer::reply(&Reply::success()),
        _ => Answer::reply(&Reply::new(
            ResultCode::Processing,
            "the License is being delivered.",
        )),
    }
}

/// `getLicenseAsync`, in the callback's transaction: a repeat is answered from the
/// stored application; a new one is checked (§5 codes), stored with its License in
/// `signed` mode, and its upload left as follow-up work.
pub async fn apply_for(
    tx: &mut dyn Tx,
    licensing: &Licensing,
    application: LicenseApplication,
    test: bool,
    now_ms: i64,
) -> StoreResult<Decision<Answer>> {
    let refuse = |code: ResultCode, message: String| {
        Ok(Decision::quiet(Answer::reply(&Reply::new(code, message))))
    };
    let instance = match tx.instance_for_update(&application.instance_id).await? {
        Some(i) if i.family == Family::SaasV2 && i.visible_to(test) => i,
        _ => {
            return refuse(
                ResultCode::NotFound,
                format!("instance {} does not exist", application.instance_id),
            );
        }
    };
    if let Some(earlier) = tx.license_request_for_update(&application.event_id).await? {
        if earlier.instance_id != instance.id
            || earlier.device_fingerprint != application.device_fingerprint
        {
            return refuse(
                ResultCode::InvalidParam,
                format!(
                    "eventId {} was applied for with another instanceId or deviceFingerprint",
                    application.event_id
                ),
            );
        }
        return Ok(Decision::quiet(answer_for(earlier.state)));
    }
    let periodic = instance.charging_mode.as_deref() == Some("PERIOD");
    if periodic && application.expire_time.is_none() {
        return refuse(
            ResultCode::PeriodNeedsExpiry,
            "a period License requires expireTime".into(),
        );
    }
    if licensing.require_fingerprint && application.device_fingerprint.is_none() {
        return refuse(
            ResultCode::FingerprintRequired,
            "deviceFingerprint is required".into(),
        );
    }
    let effective_ms = application.effective_time.timestamp_millis();
    if let Some(expire_ms) = instance.expire_ms
        && effective_ms > expire_ms
    {
        return refuse(
            ResultCode::OutsideValidity,
            format!(
                "effectiveTime is after the instance expires ({})",
                rfc3339(expire_ms)
            ),
        );
    }
    let mut request = LicenseRequest {
        event_id: application.event_id.into(),
        instance_id: instance.id.clone(),
        device_fingerprint: application.device_fingerprint,
        effective_ms,
        expire_ms: application.expire_time.map(|t| t.timestamp_millis()),
        test,
        state: RequestState::AwaitingLicense,
        license: None,
        error: None,
        created_ms: now_ms,
        updated_ms: now_ms,
        delivered_ms: None,
    };
    if licensing.mode == Mode::Signed {
        let Some(key) = &licensing.key else {
            tracing::error!(
                "a License was applied for, but no signing key is configured: set KOOGATE_LICENSE_SIGNING_KEY_FILE"
            );
            return refuse(
                ResultCode::Internal,
                "internal error: no License signing key".into(),
            );
        };
        let token = key.issue(&claims(&request, &instance, now_ms));
        request.license = Some(License {
            content: Content::from_string(token, &file_name(&request.event_id)),
            source: "signed".into(),
        });
        request.state = RequestState::Uploading;
    }
    if !tx.insert_license_request(&request).await? {
        // The instance row lock serialises applications, so the id cannot be taken by now.
        return refuse(
            ResultCode::Internal,
            "internal error: the application could not be stored".into(),
        );
    }
    let event = event(EventType::LicenseRequested, &request, Some(&instance));
    let decision = Decision::with(answer_for(request.state), vec![event]);
    if request.state == RequestState::Uploading {
        return Ok(decision.and_then(upload(&request, &instance.order_id)));
    }
    Ok(decision)
}

fn claims(request: &LicenseRequest, instance: &Instance, now_ms: i64) -> Claims {
    let seconds = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    Claims {
        v: crate::protocol::license_token::VERSION,
        instance_id: instance.id.clone(),
        order_id: Some(instance.order_id.clone()),
        product_id: instance.product_id.clone(),
        sku_code: instance.sku_code.clone(),
        device_fingerprint: request.device_fingerprint.clone(),
        effective_time: seconds(request.effective_ms),
        expire_time: request.expire_ms.map(seconds),
        issued_at: seconds(now_ms),
        event_id: request.event_id.clone(),
    }
}

/// The name a License string too long for `CHARACTERS` is uploaded under.
fn file_name(event_id: &str) -> String {
    format!("{event_id}.lic")
}

/// The upload of an application's License, once it is known.
fn upload(request: &LicenseRequest, order_id: &str) -> FollowUp {
    FollowUp::UploadLicense {
        event_id: request.event_id.clone(),
        order_id: order_id.to_owned(),
    }
}

/// An event about an application; `license.requested` carries the instance too, so that
/// an app in `app` mode has what it needs to make the License.
#[expect(
    clippy::indexing_slicing,
    reason = "the snapshot is built as a JSON object just above"
)]
pub fn event(kind: EventType, request: &LicenseRequest, instance: Option<&Instance>) -> Event {
    let mut snapshot = serde_json::json!({
        "licenseRequest": serde_json::to_value(LicenseRequestView::new(request, false))
            .unwrap_or_default(),
    });
    if let Some(instance) = instance {
        snapshot["instance"] =
            serde_json::to_value(InstanceView::from(instance)).unwrap_or_default();
    }
    Event {
        kind,
        subject: format!("license-request:{}", request.event_id),
        test: request.test,
        snapshot,
    }
}

/// A License the app provides: `{"license":"…"}` or `{"file":{"name","contentBase64"}}`
/// (merchant-api.md §2.3, §5).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LicenseInput {
    /// A License string; up to 1024 characters it is uploaded as CHARACTERS, longer as FILE.
    pub license: Option<String>,
    pub file: Option<FileInput>,
}

/// A License file.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileInput {
    pub name: String,
    pub content_base64: String,
}

impl LicenseInput {
    /// The License this input gives, checked: not empty, Base64 where it must be, within
    /// `max_bytes`, and a file name that fits the upload.
    pub fn license(
        self,
        event_id: &str,
        max_bytes: usize,
    ) -> Result<Option<License>, Vec<FieldProblem>> {
        let problem = |field: &str, message: String| {
            Err(vec![FieldProblem {
                field: field.into(),
                message,
            }])
        };
        let too_big = format!("is larger than {max_bytes} bytes");
        let content = match (self.license, self.file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return problem("license", "give license or file, not both".into());
            }
            (Some(text), None) if text.is_empty() => return problem("license", "is empty".into()),
            (Some(text), None) if text.len() > max_bytes => return problem("license", too_big),
            (Some(text), None) => Content::from_string(text, &file_name(event_id)),
            (None, Some(file)) => {
                if let Err(message) = license_upload::check_file_name(&file.name) {
                    return problem("file.name", message);
                }
                let Ok(bytes) = STANDARD.decode(file.content_base64.trim()) else {
                    return problem("file.contentBase64", "is not Base64".into());
                };
                if bytes.is_empty() {
                    return problem("file.contentBase64", "is empty".into());
                }
                if bytes.len() > max_bytes {
                    return problem("file.contentBase64", too_big);
                }
                Content::File {
                    name: file.name,
                    bytes,
                }
            }
        };
        Ok(Some(License {
            content,
            source: "app".into(),
        }))
    }

    /// Reads the app's answer to `license.requested`: `Ok(None)` for an empty body or
    /// `{}` ("later, through the API").
    pub fn from_answer(
        body: &[u8],
        event_id: &str,
        max_bytes: usize,
    ) -> Result<Option<License>, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let input: Self =
            serde_json::from_slice(body).map_err(|e| format!("not the documented JSON: {e}"))?;
        input.license(event_id, max_bytes).map_err(|problems| {
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// What providing a License did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provided {
    /// Stored; its upload is the decision's follow-up.
    Queued,
    /// The same License was already provided.
    Unchanged,
    Unknown,
    /// The application already has another License (the signed one, or an earlier
    /// answer of the app): Licenses are never replaced once issued.
    Conflict,
}

/// Stores the app's License for an application waiting for one; its upload follows.
pub async fn provide(
    tx: &mut dyn Tx,
    event_id: &str,
    license: License,
    now_ms: i64,
) -> StoreResult<Decision<Provided>> {
    let Some(mut request) = tx.license_request_for_update(event_id).await? else {
        return Ok(Decision::quiet(Provided::Unknown));
    };
    match &request.license {
        Some(earlier) if earlier.content == license.content => {
            return Ok(Decision::quiet(Provided::Unchanged));
        }
        Some(_) => return Ok(Decision::quiet(Provided::Conflict)),
        None => {}
    }
    request.license = Some(license);
    request.state = RequestState::Uploading;
    request.updated_ms = now_ms;
    tx.update_license_request(&request).await?;
    // The instance is kept while its applications are, so its order is known.
    let order_id = tx
        .instances(std::slice::from_ref(&request.instance_id))
        .await?
        .first()
        .map(|i| i.order_id.clone())
        .unwrap_or_default();
    Ok(Decision::quiet(Provided::Queued).and_then(upload(&request, &order_id)))
}

/// Marks an application delivered (`CBC.0000`); the events to record.
pub async fn delivered(tx: &mut dyn Tx, event_id: &str, now_ms: i64) -> StoreResult<Vec<Event>> {
    let Some(mut request) = tx.license_request_for_update(event_id).await? else {
        return Ok(Vec::new());
    };
    if request.state == RequestState::Delivered {
        return Ok(Vec::new());
    }
    request.state = RequestState::Delivered;
    request.error = None;
    request.delivered_ms = Some(now_ms);
    request.updated_ms = now_ms;
    tx.update_license_request(&request).await?;
    Ok(vec![event(EventType::LicenseDelivered, &request, None)])
}

/// Marks an application's upload parked, with why; the events to record.
pub async fn delivery_failed(
    tx: &mut dyn Tx,
    event_id: &str,
    reason: &str,
    now_ms: i64,
) -> StoreResult<Vec<Event>> {
    let Some(mut request) = tx.license_request_for_update(event_id).await? else {
        return Ok(Vec::new());
    };
    if request.state == RequestState::Delivered
        || (request.state == RequestState::Failed && request.error.as_deref() == Some(reason))
    {
        return Ok(Vec::new());
    }
    request.state = RequestState::Failed;
    request.error = Some(reason.to_owned());
    request.updated_ms = now_ms;
    tx.update_license_request(&request).await?;
    Ok(vec![event(
        EventType::LicenseDeliveryFailed,
        &request,
        None,
    )])
}

/// An application as the API, the events and the CLI show it: the License's metadata,
/// and its content only when asked for.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LicenseRequestView {
    pub event_id: String,
    pub instance_id: String,
    pub device_fingerprint: Option<String>,
    pub effective_time: String,
    pub expire_time: Option<String>,
    pub test: bool,
    /// `awaiting_license`, `uploading`, `delivered` or `failed`.
    pub state: &'static str,
    pub license: Option<LicenseView>,
    /// Why the upload was parked.
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub delivered_at: Option<String>,
}

/// A License's metadata, and its content when asked for.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LicenseView {
    /// `CHARACTERS` or `FILE`, as uploaded.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub file_name: Option<String>,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    pub size: usize,
    /// `signed` (koogate) or `app`.
    pub source: String,
    /// The License string (CHARACTERS), with `?content=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub characters: Option<String>,
    /// The file (FILE), with `?content=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

impl LicenseRequestView {
    pub fn new(r: &LicenseRequest, with_content: bool) -> Self {
        Self {
            event_id: r.event_id.clone(),
            instance_id: r.instance_id.clone(),
            device_fingerprint: r.device_fingerprint.clone(),
            effective_time: rfc3339(r.effective_ms),
            expire_time: r.expire_ms.map(rfc3339),
            test: r.test,
            state: r.state.as_str(),
            license: r.license.as_ref().map(|l| LicenseView {
                kind: l.content.kind(),
                file_name: match &l.content {
                    Content::File { name, .. } => Some(name.clone()),
                    Content::Characters(_) => None,
                },
                sha256: l.content.sha256(),
                size: l.content.bytes().len(),
                source: l.source.clone(),
                characters: match &l.content {
                    Content::Characters(text) if with_content => Some(text.clone()),
                    _ => None,
                },
                content_base64: match &l.content {
                    Content::File { bytes, .. } if with_content => Some(STANDARD.encode(bytes)),
                    _ => None,
                },
            }),
            error: r.error.clone(),
            created_at: rfc3339(r.created_ms),
            updated_at: rfc3339(r.updated_ms),
            delivered_at: r.delivered_ms.map(rfc3339),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Result<Option<License>, String> {
        LicenseInput::from_answer(body.as_bytes(), "ev-1", 16)
    }

    #[test]
    fn the_apps_answer_gives_a_string_or_a_file() {
        assert_eq!(read(""), Ok(None));
        assert_eq!(read("{}"), Ok(None));
        let Ok(Some(l)) = read(r#"{"license":"LIC"}"#) else {
            panic!()
        };
        assert_eq!(l.content, Content::Characters("LIC".into()));
        assert_eq!(l.source, "app");
        let Ok(Some(l)) = read(r#"{"file":{"name":"a.lic","contentBase64":"AAEC"}}"#) else {
            panic!()
        };
        assert_eq!(
            l.content,
            Content::File {
                name: "a.lic".into(),
                bytes: vec![0, 1, 2]
            }
        );
    }

    #[test]
    fn unusable_licenses_name_the_field() {
        let cases = [
            (r#"{"license":""}"#, "license: is empty"),
            (
                r#"{"license":"12345678901234567"}"#,
                "license: is larger than 16 bytes",
            ),
            (
                r#"{"file":{"name":"a","contentBase64":"!!"}}"#,
                "file.contentBase64: is not Base64",
            ),
            (
                r#"{"file":{"name":"a","contentBase64":""}}"#,
                "file.contentBase64: is empty",
            ),
            (
                r#"{"file":{"name":"a/b","contentBase64":"AA=="}}"#,
                "file.name: may not",
            ),
            (
                r#"{"file":{"name":"a","contentBase64":"AAAAAAAAAAAAAAAAAAAAAAAA"}}"#,
                "file.contentBase64: is larger than 16 bytes",
            ),
            (
                r#"{"license":"a","file":{"name":"a","contentBase64":"AA=="}}"#,
                "license: give",
            ),
            (r#"{"licence":"a"}"#, "not the documented JSON"),
        ];
        for (body, expected) in cases {
            let problem = read(body).unwrap_err();
            assert!(problem.starts_with(expected), "{body}: {problem}");
        }
    }

    #[test]
    fn states_round_trip_and_answer_as_d13_says() {
        for state in [
            RequestState::AwaitingLicense,
            RequestState::Uploading,
            RequestState::Delivered,
            RequestState::Failed,
        ] {
            assert_eq!(RequestState::parse(state.as_str()), Some(state));
        }
        assert_eq!(
            answer_for(RequestState::Delivered).code,
            ResultCode::Success
        );
        assert_eq!(
            answer_for(RequestState::Failed).code,
            ResultCode::Processing
        );
        assert_eq!(
            answer_for(RequestState::Uploading).body,
            answer_for(RequestState::AwaitingLicense).body
        );
    }
}
