//! Provisioning: turning a new order into something a buyer can open. A seam, so a
//! merchant's own system can provision asynchronously (answering `000004`) instead of
//! the built-in provisioner, which renders app info from templates.

use crate::protocol::crypto;
use crate::protocol::reply::AppInfo;
use rand::distr::{Alphanumeric, SampleString};

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
