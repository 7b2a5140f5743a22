//! What each fuzz target feeds its input to: every parser of outside input. Shared by the
//! cargo-fuzz targets (`fuzz_targets/`) and the corpus replay in the ordinary test suite,
//! so that CI runs the checked-in corpus without a nightly toolchain. A target fails by
//! panicking; each checks what must hold whatever the input.

use koogate::marketplace::{Answer, interpret};
use koogate::protocol::canonical::canonical_form;
use koogate::protocol::crypto::{FieldCipher, KeySize};
use koogate::protocol::order::{LicenseCodeInfo, NotifyRequest, QueryOrderResponse};
use koogate::protocol::signature::{self, Accept, KeyRing, SignedParams};
use koogate::protocol::v1::V1Request;
use koogate::protocol::{license_code, saas_v1, saas_v2};

/// The spec's test key.
pub const KEY: &str = "test-access-key-0001";

/// A target: panics when what must hold does not.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("signed_body", signed_body),
    ("saas_v1_query", saas_v1_query),
    ("saas_v1_post", saas_v1_post),
    ("signature_params", signature_params),
    ("encrypted_field", encrypted_field),
    ("marketplace_answer", marketplace_answer),
];

/// A SaaS 2.0, License-code or order-notification body, and its canonical form (D1a).
pub fn signed_body(data: &[u8]) {
    let _ = saas_v2::Request::parse(data);
    let _ = license_code::Request::parse(data);
    let _ = NotifyRequest::parse(data);
    if let Some(form) = canonical_form(data) {
        // The canonical form is a fixed point: canonicalising it again changes nothing.
        assert_eq!(canonical_form(&form).as_deref(), Some(form.as_slice()));
    }
}

fn cipher() -> FieldCipher {
    FieldCipher::new(KEY, KeySize::Aes256)
}

/// A SaaS 1.0 GET query string.
pub fn saas_v1_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let request = V1Request::from_query(query);
    let _ = request.sign(KEY);
    let _ = saas_v1::Request::parse(&request, &cipher());
}

/// A SaaS 1.0 POST body.
pub fn saas_v1_post(data: &[u8]) {
    if let Ok(request) = V1Request::from_json_body(data, Some("token")) {
        let _ = request.sign(KEY);
        let _ = saas_v1::Request::parse(&request, &cipher());
    }
}

/// The `signature`/`timestamp`/`nonce` parameters, verified over an empty body.
pub fn signature_params(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let params = SignedParams::from_query(query);
    let accept = Accept {
        variant_b: true,
        canonical: true,
    };
    let _ = signature::verify_with(&KeyRing::from_list(KEY), &params, data, accept, 0);
    let _ = signature::timestamp_millis(query);
}

/// An encrypted field (`iv + Base64`), decrypted with both key sizes.
pub fn encrypted_field(data: &[u8]) {
    let Ok(field) = std::str::from_utf8(data) else {
        return;
    };
    let _ = cipher().decrypt(field);
    let _ = FieldCipher::new(KEY, KeySize::Aes128).decrypt(field);
}

/// An answer of the open APIs: 查询订单, 激活授权码 and whatever the gateway sends.
pub fn marketplace_answer(data: &[u8]) {
    let _ = serde_json::from_slice::<QueryOrderResponse>(data);
    let _ = serde_json::from_slice::<LicenseCodeInfo>(data);
    for status in [200, 401, 500] {
        let answer = Answer {
            status,
            body: data.to_vec(),
            base: "https://mkt.example.com".parse().expect("a valid URL"),
        };
        let _ = interpret(&answer);
    }
}
