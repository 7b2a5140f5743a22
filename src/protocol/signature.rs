//! The request signature KooGallery puts on SaaS 2.0, License-code and order-notify
//! callbacks (spec §2.2, decisions D1/D2) and the `Body-Sign` header on every answer
//! (spec §2.4, D4). Keys are tried in order, so a key can be rotated without downtime.

use super::crypto::hmac_sha256;
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hmac::Mac;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// D2: how far a request's `timestamp` may be from server time, in milliseconds.
pub const WINDOW_MS: i64 = 60_000;

/// Longest `nonce` accepted. KooGallery's examples use 64 hex characters; the bound
/// keeps the shared nonce store from holding attacker-sized keys.
pub const MAX_NONCE_LEN: usize = 128;

/// The access keys bound to one seller-center interface type. The first is the
/// primary key: it signs answers to requests that could not be verified (D4).
#[derive(Clone, Default)]
pub struct KeyRing(Vec<SecretString>);

impl KeyRing {
    /// A ring from keys in order of preference; blank keys are dropped.
    pub fn new(keys: impl IntoIterator<Item = SecretString>) -> Self {
        Self(
            keys.into_iter()
                .filter(|k| !k.expose_secret().trim().is_empty())
                .collect(),
        )
    }

    /// Parses the comma-separated form used by `KOOGATE_ACCESS_KEY`.
    pub fn from_list(list: &str) -> Self {
        Self::new(
            list.split(',')
                .map(|k| SecretString::from(k.trim().to_owned())),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The key at `index`, as returned by a verification.
    pub fn get(&self, index: usize) -> Option<&SecretString> {
        self.0.get(index)
    }

    /// The key that signs answers to unverified requests.
    pub fn primary(&self) -> Option<&SecretString> {
        self.0.first()
    }

    pub fn iter(&self) -> impl Iterator<Item = &SecretString> {
        self.0.iter()
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing([redacted] x{})", self.0.len())
    }
}

/// How the request payload is hashed before the canonical string is signed (D1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// HMAC-SHA256 of the body keyed with the access key (the default).
    A,
    /// Plain SHA-256 of the body; accepted only when the operator enables it.
    B,
}

/// The three URL parameters KooGallery appends to the production address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignedParams {
    pub signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
}

impl SignedParams {
    /// Reads `signature`, `timestamp` and `nonce` from a raw query string
    /// (form-decoded; the first occurrence of a name wins).
    pub fn from_query(raw_query: &str) -> Self {
        let mut params = Self::default();
        for (name, value) in form_urlencoded::parse(raw_query.as_bytes()) {
            let slot = match name.as_ref() {
                "signature" => &mut params.signature,
                "timestamp" => &mut params.timestamp,
                "nonce" => &mut params.nonce,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.into_owned());
        }
        params
    }
}

/// Why a request's signature was not accepted. Each maps to `000001`; the message
/// names the problem without revealing anything about the keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no access key is configured for this interface")]
    NoKey,
    #[error("missing URL parameter {0}")]
    Missing(&'static str),
    #[error("timestamp is not a decimal Unix time")]
    MalformedTimestamp,
    #[error("timestamp is {0} s old (limit 60 s)")]
    Stale(i64),
    #[error("timestamp is {0} s ahead of server time (limit 60 s)")]
    Future(i64),
    #[error("nonce is longer than {MAX_NONCE_LEN} characters")]
    NonceTooLong,
    #[error("nonce contains a control character")]
    NonceControl,
    #[error("signature does not match")]
    BadSignature,
    #[error("nonce was already used")]
    ReplayedNonce,
}

/// Which bytes a signature matched (D1a).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The body exactly as received.
    Raw,
    /// The body's canonical form ([`super::canonical::canonical_form`]).
    Canonical,
}

/// What a verification accepts besides variant A over the raw body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accept {
    /// D1: variant B (plain SHA-256 payload hash) too.
    pub variant_b: bool,
    /// D1a: the body's canonical form, when the raw bytes do not match.
    pub canonical: bool,
}

/// A verified request: which key, variant and form matched, and when its nonce may be
/// forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub key_index: usize,
    pub variant: Variant,
    pub form: Form,
    pub nonce: String,
    /// D2: the nonce must be remembered until the timestamp (or now, if later) + 60 s.
    pub nonce_expires_ms: i64,
}

/// Parses a `timestamp` in milliseconds or seconds (D2: below 10^11 counts as seconds).
pub fn timestamp_millis(timestamp: &str) -> Option<i64> {
    if timestamp.is_empty()
        || timestamp.len() > 19
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let value: i64 = timestamp.parse().ok()?;
    Some(if value < 100_000_000_000 {
        value * 1000
    } else {
        value
    })
}

/// `signature` = uppercase hex HMAC-SHA256(key, key + nonce + timestamp + lower-hex(payload hash)).
pub fn sign(key: &str, nonce: &str, timestamp: &str, body: &[u8], variant: Variant) -> String {
    hex::encode_upper(signature_bytes(key, nonce, timestamp, body, variant))
}

fn signature_bytes(
    key: &str,
    nonce: &str,
    timestamp: &str,
    body: &[u8],
    variant: Variant,
) -> [u8; 32] {
    let payload_hash = match variant {
        Variant::A => hmac(key.as_bytes(), body),
        Variant::B => Sha256::digest(body).into(),
    };
    let mut mac = hmac_sha256(key.as_bytes());
    mac.update(key.as_bytes());
    mac.update(nonce.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(hex::encode(payload_hash).as_bytes());
    mac.finalize().into_bytes().into()
}

/// Verifies a callback over the exact body bytes received (D1, D2), and nothing else.
pub fn verify(
    keys: &KeyRing,
    params: &SignedParams,
    body: &[u8],
    accept_variant_b: bool,
    now_ms: i64,
) -> Result<Verified, AuthError> {
    let accept = Accept {
        variant_b: accept_variant_b,
        canonical: false,
    };
    verify_with(keys, params, body, accept, now_ms)
}

/// Verifies a callback (D1, D1a, D2): over the exact body bytes received with every key,
/// then, when `accept.canonical` is set, over the body's canonical form. The nonce is not
/// checked here: its store is shared by replicas and lives in the database.
pub fn verify_with(
    keys: &KeyRing,
    params: &SignedParams,
    body: &[u8],
    accept: Accept,
    now_ms: i64,
) -> Result<Verified, AuthError> {
    if keys.is_empty() {
        return Err(AuthError::NoKey);
    }
    let signature = params
        .signature
        .as_deref()
        .ok_or(AuthError::Missing("signature"))?;
    let timestamp = params
        .timestamp
        .as_deref()
        .ok_or(AuthError::Missing("timestamp"))?;
    let nonce = params
        .nonce
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(AuthError::Missing("nonce"))?;
    if nonce.len() > MAX_NONCE_LEN {
        return Err(AuthError::NonceTooLong);
    }
    // PostgreSQL cannot store NUL in the shared nonce table, and no sender needs one.
    if nonce.chars().any(char::is_control) {
        return Err(AuthError::NonceControl);
    }
    let ts = timestamp_millis(timestamp).ok_or(AuthError::MalformedTimestamp)?;
    let age = now_ms - ts;
    // Whole seconds rounded up, so a refusal never reads "60 s" for 60.5 s.
    let secs = |ms: i64| (ms + 999) / 1000;
    if age > WINDOW_MS {
        return Err(AuthError::Stale(secs(age)));
    }
    if -age > WINDOW_MS {
        return Err(AuthError::Future(secs(-age)));
    }
    // D1: hex is compared case-insensitively; a malformed hex string simply never matches.
    let received =
        hex::decode(signature.to_ascii_lowercase()).map_err(|_| AuthError::BadSignature)?;
    let variants: &[Variant] = if accept.variant_b {
        &[Variant::A, Variant::B]
    } else {
        &[Variant::A]
    };
    let matching = |payload: &[u8]| {
        keys.iter().enumerate().find_map(|(key_index, key)| {
            variants.iter().find_map(|&variant| {
                let expected =
                    signature_bytes(key.expose_secret(), nonce, timestamp, payload, variant);
                bool::from(expected.as_slice().ct_eq(&received)).then_some((key_index, variant))
            })
        })
    };
    let verified = |(key_index, variant), form| Verified {
        key_index,
        variant,
        form,
        nonce: nonce.to_owned(),
        nonce_expires_ms: ts.max(now_ms) + WINDOW_MS,
    };
    if let Some(matched) = matching(body) {
        return Ok(verified(matched, Form::Raw));
    }
    if accept.canonical
        && let Some(canonical) = super::canonical::canonical_form(body)
        && canonical != body
        && let Some(matched) = matching(&canonical)
    {
        return Ok(verified(matched, Form::Canonical));
    }
    Err(AuthError::BadSignature)
}

/// The `Body-Sign` header value over the exact response bytes (D4, §2.4): keyed with
/// the access key alone, never key + timeStamp.
pub fn body_sign(key: &str, body: &[u8]) -> String {
    format!(
        "sign_type=\"HMAC-SHA256\", signature= \"{}\"",
        BASE64.encode(hmac(key.as_bytes(), body))
    )
}

/// Checks a received `Body-Sign` header against the exact bytes received, in constant
/// time. Accepts the documented form and the form without a space after `signature=`.
pub fn verify_body_sign(key: &str, body: &[u8], header: &str) -> bool {
    let Some(rest) = header.trim().strip_prefix("sign_type=\"HMAC-SHA256\",") else {
        return false;
    };
    let Some(quoted) = rest.trim_start().strip_prefix("signature=") else {
        return false;
    };
    let Some(b64) = quoted
        .trim_start()
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
    else {
        return false;
    };
    let Ok(received) = BASE64.decode(b64) else {
        return false;
    };
    bool::from(hmac(key.as_bytes(), body).as_slice().ct_eq(&received))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = hmac_sha256(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "test-access-key-0001";
    const BODY: &[u8] = br#"{"activity":"newInstance","businessId":"87b94795-0603-4e24-8ae5-69420d60e3c8","orderId":"CS2211181819B4LVS","orderLineId":"CS2211181819B4LVS-000001","testFlag":"1"}"#;
    const TS: &str = "1680508066618";
    const NONCE: &str = "50D83FDECAED6CCD8EF597F2A577950527928BA287D04E6036E92B2806FD17DA";
    const SIG_A: &str = "C506F4221EC15F98C40B8A5D5065D8B815A2C5596CF4421382088B5652565458";
    const SIG_B: &str = "4485628226C98D3B98671B10F0639E6EB4C0D17B2685B98FD8B57FA9BD75D8AF";
    const NOW: i64 = 1_680_508_066_618;

    fn ring(keys: &[&str]) -> KeyRing {
        KeyRing::new(keys.iter().map(|k| SecretString::from(k.to_string())))
    }

    fn params(signature: &str) -> SignedParams {
        SignedParams {
            signature: Some(signature.into()),
            timestamp: Some(TS.into()),
            nonce: Some(NONCE.into()),
        }
    }

    #[test]
    fn spec_vector_3_both_variants() {
        assert_eq!(sign(KEY, NONCE, TS, BODY, Variant::A), SIG_A);
        assert_eq!(sign(KEY, NONCE, TS, BODY, Variant::B), SIG_B);
    }

    #[test]
    fn spec_vector_2_body_sign() {
        let body = br#"{"resultCode":"000000","resultMsg":"success.","instanceId":"61e834ba-7b97-4418-b8f7-e5345137278c"}"#;
        let header = body_sign(KEY, body);
        assert_eq!(
            header,
            r#"sign_type="HMAC-SHA256", signature= "JSqNm7p+OAeCN9tQ6u7yzH1Q5AjgE54Ic87spu6ROSY=""#
        );
        assert!(verify_body_sign(KEY, body, &header));
        assert!(verify_body_sign(KEY, body, &header.replace("= \"", "=\"")));
        assert!(!verify_body_sign("other", body, &header));
        assert!(!verify_body_sign(KEY, b"{}", &header));
    }

    #[test]
    fn variant_a_verifies_in_either_hex_case() {
        let ok = verify(&ring(&[KEY]), &params(SIG_A), BODY, false, NOW).unwrap();
        assert_eq!((ok.key_index, ok.variant), (0, Variant::A));
        assert!(
            verify(
                &ring(&[KEY]),
                &params(&SIG_A.to_lowercase()),
                BODY,
                false,
                NOW
            )
            .is_ok()
        );
    }

    /// Vector 3b: the body as sent (spaces, keys out of order, a top-level null).
    const BODY_3B: &[u8] = br#"{"orderId": "CS2211181819B4LVS", "activity": "newInstance", "orderLineId": "CS2211181819B4LVS-000001", "businessId": "87b94795-0603-4e24-8ae5-69420d60e3c8", "testFlag": "1", "extra": null}"#;
    const SIG_3B_RAW: &str = "6067F7CAA33482FC64DE75ECED6CBEA85B42C7739C7DB0193E6B478B8D0B6DA4";

    #[test]
    fn spec_vector_3b_raw_and_canonical_forms() {
        assert_eq!(sign(KEY, NONCE, TS, BODY_3B, Variant::A), SIG_3B_RAW);
        let accept = Accept {
            variant_b: false,
            canonical: true,
        };
        let raw = verify_with(&ring(&[KEY]), &params(SIG_3B_RAW), BODY_3B, accept, NOW).unwrap();
        assert_eq!(raw.form, Form::Raw);
        let canonical = verify_with(&ring(&[KEY]), &params(SIG_A), BODY_3B, accept, NOW).unwrap();
        assert_eq!(
            (canonical.variant, canonical.form),
            (Variant::A, Form::Canonical)
        );
        assert_eq!(
            verify(&ring(&[KEY]), &params(SIG_A), BODY_3B, false, NOW),
            Err(AuthError::BadSignature),
            "the canonical form only when enabled"
        );
    }

    #[test]
    fn a_nonce_with_a_control_character_is_refused() {
        let mut with_nul = params(SIG_A);
        with_nul.nonce = Some("abc\0".into());
        assert_eq!(
            verify(&ring(&[KEY]), &with_nul, BODY, false, NOW),
            Err(AuthError::NonceControl)
        );
    }

    #[test]
    fn variant_b_only_when_enabled() {
        assert_eq!(
            verify(&ring(&[KEY]), &params(SIG_B), BODY, false, NOW),
            Err(AuthError::BadSignature)
        );
        let ok = verify(&ring(&[KEY]), &params(SIG_B), BODY, true, NOW).unwrap();
        assert_eq!(ok.variant, Variant::B);
    }

    #[test]
    fn rotated_keys_report_which_one_matched() {
        let ok = verify(&ring(&["new-key", KEY]), &params(SIG_A), BODY, false, NOW).unwrap();
        assert_eq!(ok.key_index, 1);
        assert_eq!(
            verify(&ring(&["new-key"]), &params(SIG_A), BODY, false, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn one_changed_body_byte_fails() {
        let mut body = BODY.to_vec();
        body[2] ^= 1;
        assert_eq!(
            verify(&ring(&[KEY]), &params(SIG_A), &body, true, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn window_is_sixty_seconds_each_way_in_ms_or_s() {
        let keys = ring(&[KEY]);
        assert!(verify(&keys, &params(SIG_A), BODY, false, NOW + 60_000).is_ok());
        assert!(verify(&keys, &params(SIG_A), BODY, false, NOW - 60_000).is_ok());
        assert_eq!(
            verify(&keys, &params(SIG_A), BODY, false, NOW + 61_000),
            Err(AuthError::Stale(61))
        );
        assert_eq!(
            verify(&keys, &params(SIG_A), BODY, false, NOW - 61_000),
            Err(AuthError::Future(61))
        );
        // D2: a 10-digit timestamp counts as seconds.
        let secs = "1680508066";
        let sig = sign(KEY, NONCE, secs, BODY, Variant::A);
        let p = SignedParams {
            signature: Some(sig),
            timestamp: Some(secs.into()),
            nonce: Some(NONCE.into()),
        };
        let ok = verify(&keys, &p, BODY, false, 1_680_508_066_000).unwrap();
        assert_eq!(ok.nonce_expires_ms, 1_680_508_126_000);
    }

    #[test]
    fn missing_and_malformed_parameters_name_the_problem() {
        let keys = ring(&[KEY]);
        let cases = [
            (
                SignedParams {
                    signature: None,
                    ..params(SIG_A)
                },
                AuthError::Missing("signature"),
            ),
            (
                SignedParams {
                    timestamp: None,
                    ..params(SIG_A)
                },
                AuthError::Missing("timestamp"),
            ),
            (
                SignedParams {
                    nonce: Some(String::new()),
                    ..params(SIG_A)
                },
                AuthError::Missing("nonce"),
            ),
            (
                SignedParams {
                    timestamp: Some("16805080666l8".into()),
                    ..params(SIG_A)
                },
                AuthError::MalformedTimestamp,
            ),
            (
                SignedParams {
                    nonce: Some("n".repeat(129)),
                    ..params(SIG_A)
                },
                AuthError::NonceTooLong,
            ),
            (params("zz"), AuthError::BadSignature),
        ];
        for (p, expected) in cases {
            assert_eq!(
                verify(&keys, &p, BODY, false, NOW),
                Err(expected.clone()),
                "{expected}"
            );
        }
        assert_eq!(
            verify(&KeyRing::default(), &params(SIG_A), BODY, false, NOW),
            Err(AuthError::NoKey)
        );
    }

    #[test]
    fn params_come_from_the_raw_query() {
        let p = SignedParams::from_query("signature=AB%43&timestamp=1&nonce=x+y&signature=other");
        assert_eq!(p.signature.as_deref(), Some("ABC"));
        assert_eq!(p.nonce.as_deref(), Some("x y"));
        assert_eq!(p.timestamp.as_deref(), Some("1"));
    }

    #[test]
    fn key_ring_drops_blank_keys_and_redacts_debug() {
        let ring = KeyRing::from_list("a, ,b,");
        assert_eq!(ring.len(), 2);
        assert_eq!(format!("{ring:?}"), "KeyRing([redacted] x2)");
    }
}
