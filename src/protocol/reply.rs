//! The JSON answers of the SaaS families (spec §3, §4): one shape, fields present as
//! each activity's table requires, serialised once to the bytes that are signed and sent.

use super::{codes::ResultCode, json};
use serde::{Deserialize, Serialize};

/// Longest `resultMsg` (String(255), spec §3.1).
pub const MAX_RESULT_MSG: usize = 255;

/// An answer to a production-interface callback.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    pub result_code: ResultCode,
    pub result_msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypt_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_info: Option<AppInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Vec<InstanceInfo>>,
}

impl Reply {
    /// `000000` with the documented message.
    pub fn success() -> Self {
        Self::new(ResultCode::Success, "success.")
    }

    /// Any code with a message, cut to the field's limit on a character boundary.
    pub fn new(code: ResultCode, msg: impl Into<String>) -> Self {
        let mut result_msg: String = msg.into();
        if let Some((cut, _)) = result_msg.char_indices().nth(MAX_RESULT_MSG) {
            result_msg.truncate(cut);
        }
        Self {
            result_code: code,
            result_msg,
            encrypt_type: None,
            instance_id: None,
            app_info: None,
            info: None,
        }
    }

    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// The exact bytes to sign, send and store.
    pub fn to_bytes(&self) -> Vec<u8> {
        json::to_ascii_vec(self)
    }
}

/// How a buyer reaches the provisioned application (spec §3.2 AppInfo).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppInfo {
    pub front_end_url: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub admin_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub memo: Option<String>,
}

/// Field limits of AppInfo (spec §3.2), checked when the provisioner's output is accepted.
impl AppInfo {
    pub fn check_limits(&self) -> Result<(), String> {
        let fields = [
            ("frontEndUrl", Some(&self.front_end_url), 512),
            ("adminUrl", self.admin_url.as_ref(), 512),
            ("userName", self.user_name.as_ref(), 128),
            ("password", self.password.as_ref(), 128),
            ("memo", self.memo.as_ref(), 1024),
        ];
        for (name, value, max) in fields {
            if value.is_some_and(|v| v.chars().count() > max) {
                return Err(format!("appInfo.{name} is longer than {max} characters"));
            }
        }
        Ok(())
    }
}

/// One entry of a `queryInstance` answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    pub instance_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_info: Option<AppInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_instance_answer_has_the_documented_shape() {
        let body = Reply::success()
            .with_instance_id("03pf80c2bae96vc49b80b917bea776d7")
            .to_bytes();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"resultCode":"000000","resultMsg":"success.","instanceId":"03pf80c2bae96vc49b80b917bea776d7"}"#
        );
    }

    #[test]
    fn long_messages_are_cut_at_the_limit() {
        let reply = Reply::new(ResultCode::InvalidParam, "错".repeat(300));
        assert_eq!(reply.result_msg.chars().count(), MAX_RESULT_MSG);
    }

    #[test]
    fn app_info_limits() {
        let mut info = AppInfo {
            front_end_url: "https://a".into(),
            admin_url: None,
            user_name: Some("u".repeat(128)),
            password: None,
            memo: None,
        };
        assert!(info.check_limits().is_ok());
        info.user_name = Some("u".repeat(129));
        assert_eq!(
            info.check_limits().unwrap_err(),
            "appInfo.userName is longer than 128 characters"
        );
    }
}
