//! The JSON answers of the SaaS families (spec §3, §4): one shape, fields present as
//! each activity's table requires, serialised once to the bytes that are signed and sent.

use super::crypto::FieldCipher;
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

    /// Adds the app info of a new instance, its credentials sealed as `credentials` says;
    /// `encryptType` comes with it when they are encrypted.
    pub fn with_app_info(mut self, info: &AppInfo, credentials: &Credentials) -> Self {
        self.app_info = Some(credentials.seal(info));
        self.encrypt_type = credentials.encrypt_type();
        self
    }

    /// Adds the `info` list of a `queryInstance` answer, each entry's credentials sealed;
    /// `encryptType` comes with it when any entry carries encrypted app info.
    pub fn with_info(mut self, info: Vec<InstanceInfo>, credentials: &Credentials) -> Self {
        let info: Vec<InstanceInfo> = info
            .into_iter()
            .map(|entry| InstanceInfo {
                app_info: entry.app_info.map(|a| credentials.seal(&a)),
                ..entry
            })
            .collect();
        if info.iter().any(|entry| entry.app_info.is_some()) {
            self.encrypt_type = credentials.encrypt_type();
        }
        self.info = Some(info);
        self
    }

    /// The exact bytes to sign, send and store.
    pub fn to_bytes(&self) -> Vec<u8> {
        json::to_ascii_vec(self)
    }
}

/// How a buyer reaches the provisioned application (spec §3.2 AppInfo). `Debug` never
/// shows the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl std::fmt::Debug for AppInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppInfo")
            .field("front_end_url", &self.front_end_url)
            .field("admin_url", &self.admin_url)
            .field("user_name", &self.user_name)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("memo", &self.memo)
            .finish()
    }
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

/// How `appInfo.userName` and `appInfo.password` go out: in plain text (SaaS 2.0 unless
/// configured otherwise, D6) or encrypted as spec §2.5 describes, under a fresh random IV
/// each time (SaaS 1.0 always), with `encryptType` announcing the key size.
#[derive(Debug, Clone)]
pub enum Credentials {
    Plain,
    Encrypted(FieldCipher),
}

impl Credentials {
    /// The app info as it goes on the wire.
    pub fn seal(&self, info: &AppInfo) -> AppInfo {
        match self {
            Self::Plain => info.clone(),
            Self::Encrypted(cipher) => AppInfo {
                user_name: info.user_name.as_deref().map(|v| cipher.encrypt(v)),
                password: info.password.as_deref().map(|v| cipher.encrypt(v)),
                ..info.clone()
            },
        }
    }

    /// The `encryptType` that goes with sealed app info.
    pub fn encrypt_type(&self) -> Option<&'static str> {
        match self {
            Self::Plain => None,
            Self::Encrypted(cipher) => Some(cipher.key_size().encrypt_type()),
        }
    }
}

/// One entry of a `queryInstance` answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    pub instance_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_info: Option<AppInfo>,
    /// Required for pay-per-use and pay-per-use package instances (spec §3.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_info: Option<Vec<UsageInfo>>,
}

/// A pay-per-use instance's usage so far, or one fee item of a package (spec §3.2
/// UsageInfo), its fields in the table's order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageInfo {
    /// For a package: the pay-per-use instance the consumption belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related_instance_id: Option<String>,
    /// Double(12,4) on the wire: the exact fixed-point text (`"12.5000"`) written as a JSON
    /// number, never through floating point.
    pub usage_value: Box<serde_json::value::RawValue>,
    /// `yyyyMMddHHmmssSSS`, UTC.
    pub statistical_time: String,
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

    fn app_info() -> AppInfo {
        AppInfo {
            front_end_url: "https://a/i-1".into(),
            admin_url: None,
            user_name: Some("admin".into()),
            password: Some("secret".into()),
            memo: Some("memo".into()),
        }
    }

    #[test]
    fn encrypted_credentials_come_with_their_encrypt_type() {
        use crate::protocol::crypto::KeySize;
        for size in [KeySize::Aes256, KeySize::Aes128] {
            let cipher = FieldCipher::new("test-access-key-0001", size);
            let credentials = Credentials::Encrypted(cipher.clone());

            let reply = Reply::success().with_app_info(&app_info(), &credentials);

            assert_eq!(reply.encrypt_type, Some(size.encrypt_type()));
            let sealed = reply.app_info.unwrap();
            assert_eq!(
                (sealed.front_end_url.as_str(), sealed.memo.as_deref()),
                ("https://a/i-1", Some("memo")),
                "only the credentials are encrypted"
            );
            assert_eq!(cipher.decrypt(&sealed.user_name.unwrap()).unwrap(), "admin");
            assert_eq!(cipher.decrypt(&sealed.password.unwrap()).unwrap(), "secret");
        }
    }

    #[test]
    fn plain_credentials_and_lists_without_app_info_carry_no_encrypt_type() {
        let plain = Reply::success().with_app_info(&app_info(), &Credentials::Plain);
        assert_eq!(plain.encrypt_type, None);
        assert_eq!(plain.app_info, Some(app_info()));

        let cipher = FieldCipher::new("k", crate::protocol::crypto::KeySize::Aes256);
        let pending = InstanceInfo {
            instance_id: "i".into(),
            app_info: None,
            usage_info: None,
        };
        let reply = Reply::success().with_info(vec![pending], &Credentials::Encrypted(cipher));
        assert_eq!(reply.encrypt_type, None);
    }

    #[test]
    fn long_messages_are_cut_at_the_limit() {
        let reply = Reply::new(ResultCode::InvalidParam, "错".repeat(300));
        assert_eq!(reply.result_msg.chars().count(), MAX_RESULT_MSG);
    }

    #[test]
    fn debug_never_shows_the_password() {
        let text = format!("{:?}", app_info());
        assert!(
            text.contains("[redacted]") && !text.contains(app_info().password.as_deref().unwrap()),
            "{text}"
        );
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
