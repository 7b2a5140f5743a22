//! A buyer's personal datum (a decrypted phone number or e-mail address, a real name):
//! text like any other on the wire and in the store, but `Debug` never shows it, so no
//! log line or panic message carries it.

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Personal(String);

impl Personal {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl std::ops::Deref for Personal {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Personal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_text_and_serde_keeps_it() {
        let phone = Personal::new("13800000000");
        assert_eq!(format!("{phone:?}"), "[redacted]");
        assert_eq!(serde_json::to_string(&phone).unwrap(), r#""13800000000""#);
        assert_eq!(&*phone, "13800000000");
    }
}
