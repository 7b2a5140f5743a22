//! Provisioning: turning a new order into something a buyer can open. A seam, so a
//! merchant's own system can provision asynchronously (answering `000004`) instead of
//! the built-in provisioner, which renders app info from templates.

use super::events::{Event, EventType, ProvisioningError};
use crate::protocol::codes::ResultCode;
use crate::protocol::crypto;
use crate::protocol::fields::FieldError;
use crate::protocol::ids::{Id, OrderId, OrderLineId};
use crate::protocol::reply::{AppInfo, Reply};
use crate::store::{IdempotencyKey, StoreError, StoreResult, StoredAnswer, Tx};
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;

/// What a new instance needs provisioned.
#[derive(Debug, Clone, Copy)]
pub struct ProvisionRequest<'a> {
    pub instance_id: &'a str,
    pub order_id: &'a str,
    pub order_line_id: Option<&'a str>,
    pub test: bool,
}

/// The provisioner's answer. It must come quickly: it runs inside the callback's
/// transaction, so anything slow belongs in background work that answers `Pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    /// Ready now: answered `000000` with this app info.
    Ready(AppInfo),
    /// Being provisioned elsewhere: answered `000004`; KooGallery polls `queryInstance`.
    Pending,
}

pub trait Provisioner: Send + Sync + 'static {
    fn provision(&self, request: &ProvisionRequest<'_>) -> Provisioned;

    /// The merchant's app provides app info (`KOOGATE_PROVISIONING=app`): new instances
    /// are announced with `instance.provision_requested`, and an order line whose
    /// provisioning failed is asked again for the same instance.
    fn asks_app(&self) -> bool {
        false
    }
}

/// `KOOGATE_PROVISIONING=app`: the merchant's application provides app info, through its
/// answer to `instance.provision_requested` or `PUT /api/v1/instances/{id}/provisioning`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppProvisioner;

impl Provisioner for AppProvisioner {
    fn provision(&self, _: &ProvisionRequest<'_>) -> Provisioned {
        Provisioned::Pending
    }

    fn asks_app(&self) -> bool {
        true
    }
}

/// What the merchant's app reported about an instance it was asked to provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Succeeded(AppInfo),
    Failed(ProvisioningError),
}

/// A field the app sent that KooGallery's limits refuse, for a 422 or a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The app's answer body to `instance.provision_requested` (merchant-api.md §2.3).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProvisionAnswer {
    app_info: Option<AppInfo>,
    failed: Option<FailedAnswer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedAnswer {
    pub result_code: String,
    #[serde(default)]
    pub message: String,
}

impl Report {
    /// Reads the app's answer: `Ok(None)` for an empty body or `{}` ("I will report
    /// later"), an error naming the problem for anything unusable.
    pub fn from_answer(body: &[u8]) -> Result<Option<Self>, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let answer: ProvisionAnswer =
            serde_json::from_slice(body).map_err(|e| format!("not the documented JSON: {e}"))?;
        let report = match (answer.app_info, answer.failed) {
            (None, None) => return Ok(None),
            (Some(info), None) => Self::Succeeded(info),
            (None, Some(failed)) => Self::failed(failed).map_err(|p| p.to_string())?,
            (Some(_), Some(_)) => return Err("both appInfo and failed".into()),
        };
        report.check().map_err(|problems| join(&problems))?;
        Ok(Some(report))
    }

    /// A failure report, with its code checked against `000100`–`000107`.
    pub fn failed(failed: FailedAnswer) -> Result<Self, FieldProblem> {
        if ResultCode::unavailable(&failed.result_code).is_none() {
            return Err(FieldProblem {
                field: "resultCode".into(),
                message: format!("{:?} is not one of 000100 to 000107", failed.result_code),
            });
        }
        Ok(Self::Failed(ProvisioningError {
            result_code: failed.result_code,
            message: failed.message,
        }))
    }

    /// KooGallery's limits, checked when the app writes, so that the app learns of a bad
    /// value, not the buyer (merchant-api.md §3).
    pub fn check(&self) -> Result<(), Vec<FieldProblem>> {
        let mut problems = Vec::new();
        match self {
            Self::Succeeded(info) => {
                let chars = [
                    ("appInfo.frontEndUrl", Some(&info.front_end_url), 512),
                    ("appInfo.adminUrl", info.admin_url.as_ref(), 512),
                    ("appInfo.memo", info.memo.as_ref(), 1024),
                ];
                for (field, value, max) in chars {
                    if value.is_some_and(|v| v.chars().count() > max) {
                        problems.push(FieldProblem {
                            field: field.into(),
                            message: format!("is longer than {max} characters"),
                        });
                    }
                }
                if info.front_end_url.trim().is_empty() {
                    problems.push(FieldProblem {
                        field: "appInfo.frontEndUrl".into(),
                        message: "is required".into(),
                    });
                }
                // Encrypted (SaaS 1.0 always, SaaS 2.0 with D6) they must fit 128 characters.
                let max = crypto::MAX_PLAINTEXT_FOR_128;
                for (field, value) in [
                    ("appInfo.userName", &info.user_name),
                    ("appInfo.password", &info.password),
                ] {
                    if value.as_ref().is_some_and(|v| v.len() > max) {
                        problems.push(FieldProblem {
                            field: field.into(),
                            message: format!("is longer than {max} bytes"),
                        });
                    }
                }
            }
            Self::Failed(e) => {
                if e.message.chars().count() > 255 {
                    problems.push(FieldProblem {
                        field: "message".into(),
                        message: "is longer than 255 characters".into(),
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn join(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a report did to its instance.
#[derive(Debug)]
pub enum Applied {
    /// The instance changed; these events report it.
    Changed(Vec<Event>),
    /// The instance was already so: nothing to do.
    Unchanged,
    /// The report cannot apply: the instance is unknown, released, or already provided.
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Released,
    AlreadyProvided,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unknown => "no such instance",
            Self::Released => "the instance is released",
            Self::AlreadyProvided => "the instance was already provided; it cannot fail now",
        })
    }
}

/// The idempotency key of a SaaS 2.0 `newInstance` (D7). The newline cannot occur
/// inside either id (they refuse control characters), so two order lines never share a
/// key; the form is the one keys were always stored in.
pub fn new_instance_key(order_id: &OrderId, order_line_id: &OrderLineId) -> IdempotencyKey {
    IdempotencyKey {
        scope: "saas_v2.newInstance",
        key: format!("{order_id}\n{order_line_id}"),
    }
}

/// The key of an instance read back from the store. Its ids were parsed at the edge
/// before they were stored, so one that no longer parses is a corrupt record.
fn stored_new_instance_key(order_id: &str, order_line_id: &str) -> StoreResult<IdempotencyKey> {
    let corrupt = |e: FieldError| StoreError::Corrupt(format!("instance: {e}"));
    Ok(new_instance_key(
        &OrderId::parse(order_id).map_err(corrupt)?,
        &OrderLineId::parse(order_line_id).map_err(corrupt)?,
    ))
}

/// The answer a SaaS 2.0 `newInstance` gets once the instance is provided (and every
/// repeat after, byte for byte).
pub fn provided_answer(instance_id: &str) -> Reply {
    Reply::success().with_instance_id(instance_id)
}

/// Applies the app's report to an instance, under its row lock. Success stores app info
/// and turns the order line's stored SaaS 2.0 answer into `000000`; failure keeps the
/// reason and gives the stored answer up, so that KooGallery's retry asks again (§3).
pub async fn apply_report(
    tx: &mut dyn Tx,
    instance_id: &str,
    report: &Report,
    now_ms: i64,
) -> StoreResult<Applied> {
    let Some(mut instance) = tx.instance_for_update(instance_id).await? else {
        return Ok(Applied::Refused(Refusal::Unknown));
    };
    if instance.state == super::instance::State::Released {
        return Ok(Applied::Refused(Refusal::Released));
    }
    let key = match (instance.family, &instance.order_line_id) {
        (super::instance::Family::SaasV2, Some(line)) => {
            Some(stored_new_instance_key(&instance.order_id, line)?)
        }
        _ => None,
    };
    let event = match report {
        Report::Succeeded(info) => {
            if instance.app_info.as_ref() == Some(info) && instance.provisioning_error.is_none() {
                return Ok(Applied::Unchanged);
            }
            instance.app_info = Some(info.clone());
            instance.provisioning_error = None;
            if let Some(key) = &key {
                let reply = provided_answer(&instance.id);
                let stored = StoredAnswer {
                    result_code: reply.result_code.as_str().to_owned(),
                    instance_id: Some(instance.id.clone()),
                    body: reply.to_bytes(),
                };
                // The key was given up if provisioning had failed: claiming it again makes
                // sure there is a row to hold the answer, whichever way it went.
                tx.claim_idempotency(key, now_ms).await?;
                tx.complete_idempotency(key, &stored).await?;
            }
            EventType::InstanceProvisioned
        }
        Report::Failed(error) => {
            if instance.app_info.is_some() {
                return Ok(Applied::Refused(Refusal::AlreadyProvided));
            }
            if instance.provisioning_error.as_ref() == Some(error) {
                return Ok(Applied::Unchanged);
            }
            instance.provisioning_error = Some(error.clone());
            if let Some(key) = &key {
                tx.abandon_idempotency(key).await?;
            }
            EventType::InstanceProvisioningFailed
        }
    };
    instance.updated_ms = now_ms;
    tx.update_instance(&instance).await?;
    Ok(Applied::Changed(vec![Event::instance(event, &instance)]))
}

/// The built-in provisioner: app info from templates in which `{instanceId}` is replaced.
#[derive(Debug, Clone)]
pub struct TemplateProvisioner {
    pub front_end_url: String,
    pub admin_url: Option<String>,
    pub user_name: Option<String>,
    /// Generate a random 16-character password per instance (only with a user name).
    pub generate_password: bool,
    pub memo: Option<String>,
}

/// `appInfo.userName` and `password` are String(128) on the wire (spec §3.2, §4.1).
const MAX_CREDENTIAL_CHARS: usize = 128;

/// Placeholder replaced by the instance id in every template.
pub const INSTANCE_ID_PLACEHOLDER: &str = "{instanceId}";

impl TemplateProvisioner {
    fn render(template: &str, instance_id: &str) -> String {
        template.replace(INSTANCE_ID_PLACEHOLDER, instance_id)
    }

    /// Checks that the longest possible instance id (64 characters) still gives app
    /// info within the spec's limits, so a bad template fails at start, not per order.
    pub fn check(&self) -> Result<(), String> {
        for (name, url) in [
            ("frontend_url", Some(&self.front_end_url)),
            ("admin_url", self.admin_url.as_ref()),
        ] {
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(format!(
                    "{name} must be an absolute http(s) URL, got {url:?}"
                ));
            }
        }
        let widest = self.app_info(&"x".repeat(64));
        widest.check_limits()?;
        // SaaS 1.0 always sends the credentials encrypted (and SaaS 2.0 may, D6): the
        // encrypted form must fit the same 128 characters.
        for (name, value) in [
            ("user_name", &widest.user_name),
            ("password", &widest.password),
        ] {
            if let Some(value) = value
                && crypto::encrypted_len(value.len()) > MAX_CREDENTIAL_CHARS
            {
                return Err(format!(
                    "app.{name} renders to up to {} bytes; encrypted it would exceed \
                     {MAX_CREDENTIAL_CHARS} characters (keep it within {} bytes)",
                    value.len(),
                    crypto::MAX_PLAINTEXT_FOR_128
                ));
            }
        }
        Ok(())
    }

    fn app_info(&self, instance_id: &str) -> AppInfo {
        let user_name = self
            .user_name
            .as_deref()
            .map(|t| Self::render(t, instance_id));
        let password = (self.generate_password && user_name.is_some())
            .then(|| Alphanumeric.sample_string(&mut rand::rng(), 16));
        AppInfo {
            front_end_url: Self::render(&self.front_end_url, instance_id),
            admin_url: self
                .admin_url
                .as_deref()
                .map(|t| Self::render(t, instance_id)),
            user_name,
            password,
            memo: self.memo.clone(),
        }
    }
}

impl Provisioner for TemplateProvisioner {
    fn provision(&self, request: &ProvisionRequest<'_>) -> Provisioned {
        Provisioned::Ready(self.app_info(request.instance_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provisioner() -> TemplateProvisioner {
        TemplateProvisioner {
            front_end_url: "https://app.example.com/{instanceId}".into(),
            admin_url: Some("https://admin.example.com/?i={instanceId}".into()),
            user_name: Some("admin-{instanceId}".into()),
            generate_password: true,
            memo: None,
        }
    }

    #[test]
    fn templates_render_the_instance_id() {
        let Provisioned::Ready(info) = provisioner().provision(&ProvisionRequest {
            instance_id: "abc",
            order_id: "o",
            order_line_id: None,
            test: false,
        }) else {
            panic!("built-in provisioner is synchronous")
        };
        assert_eq!(info.front_end_url, "https://app.example.com/abc");
        assert_eq!(
            info.admin_url.as_deref(),
            Some("https://admin.example.com/?i=abc")
        );
        assert_eq!(info.user_name.as_deref(), Some("admin-abc"));
        assert_eq!(info.password.as_ref().map(String::len), Some(16));
    }

    #[test]
    fn user_names_must_fit_once_encrypted() {
        let mut p = provisioner();
        p.user_name = Some(format!("{}{{instanceId}}", "u".repeat(15)));
        assert!(p.check().is_ok(), "15 + 64 = 79 bytes fit");
        p.user_name = Some(format!("{}{{instanceId}}", "u".repeat(16)));
        let problem = p.check().unwrap_err();
        assert!(
            problem.contains("app.user_name renders to up to 80 bytes"),
            "{problem}"
        );
    }

    #[test]
    fn templates_that_could_exceed_the_limits_are_refused() {
        let mut p = provisioner();
        assert!(p.check().is_ok());
        p.front_end_url = format!("https://{}/{{instanceId}}", "a".repeat(450));
        assert_eq!(
            p.check().unwrap_err(),
            "appInfo.frontEndUrl is longer than 512 characters"
        );
        p.front_end_url = "ftp://x".into();
        assert!(p.check().unwrap_err().contains("absolute http(s) URL"));
    }
}
