//! Standard Webhooks 1.0 signing (merchant-api.md §2.2): the headers koogate sends with
//! every event delivery, so that the merchant's app can check them with any of the
//! Standard Webhooks libraries. Pure: the timestamp is a parameter.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a secret as the Standard Webhooks libraries write it.
pub const SECRET_PREFIX: &str = "whsec_";

/// Shortest and longest secret key, in bytes (merchant-api.md §2.2).
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// One signing key: the base64-decoded part of a `whsec_…` secret. Never printed.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// Why a configured secret is not usable; names the problem without echoing the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("must start with {SECRET_PREFIX}")]
    Prefix,
    #[error("the part after {SECRET_PREFIX} is not base64")]
    Base64,
    #[error("must hold 24 to 64 bytes of key, not {0}")]
    Length(usize),
}

impl WebhookSecret {
    /// Parses `whsec_` + base64 of 24–64 bytes.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::Prefix)?;
        let key = STANDARD.decode(encoded).map_err(|_| SecretError::Base64)?;
        if !SECRET_BYTES.contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Self(key))
    }

    /// A new random secret of 32 bytes, in its `whsec_` form.
    pub fn generate() -> String {
        let key: [u8; 32] = rand::random();
        format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
    }

    /// `v1,BASE64(HMAC-SHA256(key, id + "." + timestamp + "." + body))`.
    #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per secret, space-separated, so that
/// during a rotation a receiver that knows either secret accepts the delivery.
pub fn signature_header(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector of merchant-api.md §2.2, from the Standard Webhooks reference libraries.
    #[test]
    fn the_reference_vector() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn every_secret_signs_during_a_rotation() {
        let a = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = WebhookSecret::parse(&WebhookSecret::generate()).unwrap();
        let header = signature_header(&[a.clone(), b.clone()], "evt_1", 5, b"{}");
        assert_eq!(
            header,
            format!(
                "{} {}",
                a.sign("evt_1", 5, b"{}"),
                b.sign("evt_1", 5, b"{}")
            )
        );
    }

    #[test]
    fn bad_secrets_are_named_without_echoing_them() {
        let cases = [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", SecretError::Prefix),
            ("whsec_not base64!", SecretError::Base64),
            ("whsec_c2hvcnQ=", SecretError::Length(5)),
        ];
        for (text, expected) in cases {
            assert_eq!(WebhookSecret::parse(text).unwrap_err(), expected, "{text}");
        }
        let generated = WebhookSecret::generate();
        assert!(WebhookSecret::parse(&generated).is_ok(), "{generated}");
        assert!(!format!("{:?}", WebhookSecret::parse(&generated).unwrap()).contains("whsec"));
    }
}
