//! The License koogate issues itself in `signed` mode (merchant-api.md §5): a compact
//! token `BASE64URL(payload JSON) "." BASE64URL(Ed25519 signature of the first part)`,
//! so that the merchant's client software can check a License offline with any Ed25519
//! library and the public key alone. The key is kept as PKCS#8 PEM, as
//! `openssl genpkey -algorithm ed25519` writes it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The payload version this module writes and reads.
pub const VERSION: u32 = 1;

/// What a License says, in the payload's field order. Times are RFC 3339, UTC; facts
/// koogate does not know are `null`, never invented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Claims {
    pub v: u32,
    pub instance_id: String,
    pub order_id: Option<String>,
    pub product_id: Option<String>,
    pub sku_code: Option<String>,
    pub device_fingerprint: Option<String>,
    pub effective_time: String,
    pub expire_time: Option<String>,
    pub issued_at: String,
    pub event_id: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a License token: expected two Base64url parts joined by a dot")]
    Shape,
    #[error("the {0} is not Base64url")]
    Encoding(&'static str),
    #[error("the signature does not match: the License was changed or signed with another key")]
    Signature,
    #[error("the payload is not the documented JSON: {0}")]
    Payload(String),
    #[error("payload version {0} is not {VERSION}")]
    Version(u32),
}

/// The private key that signs Licenses. `Debug` never shows it.
#[derive(Clone)]
pub struct LicenseKey(SigningKey);

impl std::fmt::Debug for LicenseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LicenseKey([redacted], public {})", self.public_hex())
    }
}

impl LicenseKey {
    /// A new random key.
    pub fn generate() -> Self {
        let seed: [u8; 32] = rand::random();
        Self(SigningKey::from_bytes(&seed))
    }

    /// Reads a PKCS#8 PEM Ed25519 private key; the error says what is wrong with it.
    pub fn from_pem(text: &str) -> Result<Self, String> {
        SigningKey::from_pkcs8_pem(text)
            .map(Self)
            .map_err(|e| format!("not an Ed25519 private key in PKCS#8 PEM: {e}"))
    }

    /// The key as PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`), the seed alone, as
    /// OpenSSL writes it: OpenSSL 3 does not read the v2 form with the public key inside.
    #[expect(clippy::expect_used, reason = "an Ed25519 key always encodes")]
    pub fn to_pem(&self) -> String {
        KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .expect("an Ed25519 key always encodes")
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().as_bytes())
    }

    /// Signs `claims` into a token. The payload is serialised once: these are the bytes
    /// signed and sent.
    #[expect(clippy::expect_used, reason = "claims are plain data with string keys")]
    pub fn issue(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialise");
        let first = URL_SAFE_NO_PAD.encode(payload);
        let signature = self.0.sign(first.as_bytes());
        format!("{first}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// The public key that checks Licenses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The 32 raw bytes, as most Ed25519 libraries take them.
    pub fn raw(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), as OpenSSL and Java read it.
    #[expect(clippy::expect_used, reason = "an Ed25519 key always encodes")]
    pub fn to_pem(&self) -> String {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .expect("an Ed25519 public key always encodes")
    }

    pub fn from_pem(text: &str) -> Result<Self, String> {
        VerifyingKey::from_public_key_pem(text)
            .map(Self)
            .map_err(|e| format!("not an Ed25519 public key in PEM: {e}"))
    }

    /// Checks a token's signature, then reads its claims. Surrounding whitespace (a
    /// newline at the end of a file) is ignored; nothing else is.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let (first, second) = token.trim().split_once('.').ok_or(TokenError::Shape)?;
        if first.is_empty() || second.contains('.') {
            return Err(TokenError::Shape);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(second)
            .map_err(|_| TokenError::Encoding("signature"))?;
        let signature =
            Signature::from_slice(&signature).map_err(|_| TokenError::Encoding("signature"))?;
        self.0
            .verify(first.as_bytes(), &signature)
            .map_err(|_| TokenError::Signature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(first)
            .map_err(|_| TokenError::Encoding("payload"))?;
        let claims: Claims =
            serde_json::from_slice(&payload).map_err(|e| TokenError::Payload(e.to_string()))?;
        if claims.v != VERSION {
            return Err(TokenError::Version(claims.v));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1, test 1: the secret key as PKCS#8 PEM (as `openssl pkey` prints it).
    const RFC8032_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
        -----END PRIVATE KEY-----\n";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

    fn claims() -> Claims {
        Claims {
            v: 1,
            instance_id: "i-1".into(),
            order_id: Some("CS1".into()),
            product_id: None,
            sku_code: None,
            device_fingerprint: Some("00:11:22|DISK1|BOARD|CPU".into()),
            effective_time: "2026-12-01T08:00:00Z".into(),
            expire_time: None,
            issued_at: "2026-12-01T08:00:01Z".into(),
            event_id: "ev-1".into(),
        }
    }

    #[test]
    fn the_rfc_8032_key_reads_from_pem_and_round_trips() {
        let key = LicenseKey::from_pem(RFC8032_PEM).unwrap();
        assert_eq!(hex::encode(key.public().raw()), RFC8032_PUBLIC);
        assert_eq!(key.to_pem(), RFC8032_PEM);
        let public = PublicKey::from_pem(&key.public().to_pem()).unwrap();
        assert_eq!(public, key.public());
        assert!(!format!("{key:?}").contains("MC4CAQ"));
    }

    #[test]
    fn a_token_verifies_and_gives_back_its_claims_in_order() {
        let key = LicenseKey::from_pem(RFC8032_PEM).unwrap();
        let token = key.issue(&claims());
        assert_eq!(key.public().verify(&format!("{token}\n")), Ok(claims()));
        let (first, _) = token.split_once('.').unwrap();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(first).unwrap()).unwrap();
        assert!(
            payload.starts_with(r#"{"v":1,"instanceId":"i-1","orderId":"CS1","productId":null"#),
            "{payload}"
        );
        assert!(payload.ends_with(r#""eventId":"ev-1"}"#), "{payload}");
        // Ed25519 is deterministic: the same claims give the same token.
        assert_eq!(key.issue(&claims()), token);
    }

    #[test]
    fn any_changed_byte_or_another_key_is_refused() {
        let key = LicenseKey::generate();
        let token = key.issue(&claims());
        for at in [0, token.len() / 2, token.len() - 1] {
            let mut bytes = token.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(key.public().verify(&changed).is_err(), "byte {at}");
        }
        let other = LicenseKey::generate();
        assert_eq!(other.public().verify(&token), Err(TokenError::Signature));
        for bad in ["", "abc", "a.b.c", ".x"] {
            assert!(key.public().verify(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_that_are_not_ed25519_pkcs8_are_refused_with_a_reason() {
        let problem =
            LicenseKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err();
        assert!(
            problem.starts_with("not an Ed25519 private key"),
            "{problem}"
        );
        assert!(LicenseKey::from_pem("hello").is_err());
    }
}
