//! The scenarios the families signed as in §2.2 share (SaaS 2.0, order notifications, License
//! code): forged, stale and replayed requests must get `000001` (D1, D2), malformed ones
//! `000002` (D5), and neither may stop the server answering; and the strict checks of which
//! form of the body the signature is verified over (D1a) and of forged requests for every
//! activity.

use super::{
    Flow, Session, body, forged_not_refused, now_ms, other_key, validated_before_authenticated,
};
use crate::protocol::canonical;
use crate::protocol::signature::{self, Variant, WINDOW_MS};
use crate::simulate::checks::{self, AUTH_FAILED, Expect, INVALID};
use crate::simulate::client::{self, Exchange, Request};

/// The `security` scenario. `forged(marker)` builds a body carrying `marker` (in a field an
/// instance would be named after, where there is one); `valid` is a body the server accepts
/// as `accepted`. When `valid` creates an instance, its id must not be one of the forged
/// markers: a refused request must change nothing.
pub async fn security(
    s: &mut Session<'_>,
    forged: &dyn Fn(&str) -> Vec<u8>,
    valid: Vec<u8>,
    accepted: Expect,
) -> Flow {
    let key = s.key().to_owned();
    let url = s.url().clone();
    let mut markers = Vec::new();
    let mut marker = |what: &str| {
        let m = format!(
            "forged-{what}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        markers.push(m.clone());
        m
    };
    let refused = || Expect::plain(AUTH_FAILED);

    let (signed_as, sent_as) = (marker("signed"), marker("sent"));
    let timestamp = now_ms().to_string();
    let nonce = client::nonce();
    let sig = signature::sign(&key, &nonce, &timestamp, &forged(&signed_as), Variant::A);
    let tampered = Request::post(
        &url,
        &format!("signature={sig}&timestamp={timestamp}&nonce={nonce}"),
        forged(&sent_as),
        timestamp,
    );
    s.step(
        "a body changed after signing gets 000001",
        tampered,
        refused(),
    )
    .await?;

    let wrong_key = Request::signed_post(&url, &other_key(), forged(&marker("key")), now_ms());
    s.step(
        "a request signed with another key gets 000001",
        wrong_key,
        refused(),
    )
    .await?;

    let timestamp = now_ms().to_string();
    let unsigned = Request::post(
        &url,
        &format!("timestamp={timestamp}&nonce={}", client::nonce()),
        forged(&marker("unsigned")),
        timestamp,
    );
    s.step(
        "a request without signature gets 000001",
        unsigned,
        refused(),
    )
    .await?;

    let stale = Request::signed_post(
        &url,
        &key,
        forged(&marker("old")),
        now_ms() - WINDOW_MS - 1000,
    );
    s.step("a timestamp 61 s old gets 000001", stale, refused())
        .await?;

    let ahead = Request::signed_post(
        &url,
        &key,
        forged(&marker("ahead")),
        now_ms() + WINDOW_MS + 1000,
    );
    s.step("a timestamp 61 s ahead gets 000001", ahead, refused())
        .await?;

    let original = s.signed(valid);
    let exchange = s.send(original.clone()).await;
    let mut answer = s.inspect(&exchange, &accepted).await;
    if let Some(id) = answer.instance_id.as_deref()
        && markers.iter().any(|m| m == id)
    {
        answer.problems.push(format!(
            "instance {id} was created by one of the refused requests above: a request that fails \
             authentication must change nothing"
        ));
    }
    s.record(
        "a correctly signed request is accepted, and the refused ones changed nothing",
        answer.problems,
        &[&exchange],
    )?;
    s.step(
        "the same request again with the same nonce (a replay) gets 000001",
        original,
        refused(),
    )
    .await?;
    Ok(())
}

/// Bodies every family must refuse with `000002`: malformed JSON and an unknown activity.
pub fn malformed(activity: &str, test_flag: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "malformed JSON gets 000002".into(),
            format!(r#"{{"activity":"{activity}","testFlag":"{test_flag}","#).into_bytes(),
        ),
        (
            "an unknown activity gets 000002".into(),
            body(&[("activity", "launchRocket"), ("testFlag", test_flag)]),
        ),
    ]
}

/// The `bad-input` scenario: each of `cases`, correctly signed, gets `000002`; then `after`
/// still gets its answer.
pub async fn bad_input(
    s: &mut Session<'_>,
    cases: Vec<(String, Vec<u8>)>,
    after: (&str, Vec<u8>, Expect),
) -> Flow {
    for (name, bad) in cases {
        let request = s.signed(bad);
        s.step(name, request, Expect::plain(INVALID)).await?;
    }
    let (name, good, expect) = after;
    let request = s.signed(good);
    s.step(name, request, expect).await?;
    Ok(())
}

/// The body of `fields` in a form KooGallery's own examples never take, where its raw bytes and
/// its canonical form (D1a) differ in every way D1a names: keys in descending order, a space
/// after each `:` and `,`, the first letter of `activity` as a `\u` escape, and a top-level
/// `null` (vector 3b's `extra`).
pub fn non_canonical(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut sorted: Vec<&(&str, &str)> = fields.iter().collect();
    sorted.sort_by(|a, b| b.0.cmp(a.0));
    let mut members: Vec<String> = sorted
        .into_iter()
        .map(|(name, value)| {
            let mut value = serde_json::Value::from(*value).to_string();
            if *name == "activity"
                && let Some(first) = value[1..].chars().next()
            {
                value = format!(
                    "\"\\u{:04x}{}",
                    u32::from(first),
                    &value[1 + first.len_utf8()..]
                );
            }
            format!("{}: {value}", serde_json::Value::from(*name))
        })
        .collect();
    members.push("\"extra\": null".into());
    format!("{{{}}}", members.join(", ")).into_bytes()
}

/// Which form of a body the server verifies the signature over (D1a): `fields[0]` is sent
/// signed over its raw bytes, `fields[1]` signed over its canonical form, both in the
/// [`non_canonical`] form, and each must be authenticated (answered as `accepted`, or at least
/// not `000001`). KooGallery's choice of form is not documented, so a server that verifies only
/// one of them gets a warning; one that verifies neither fails.
#[expect(clippy::expect_used, reason = "non_canonical builds a JSON object")]
pub async fn payload_form(
    s: &mut Session<'_>,
    fields: [Vec<(&str, String)>; 2],
    accepted: Expect,
) -> Flow {
    let (url, key) = (s.url().clone(), s.key().to_owned());
    let raw_body = non_canonical(&borrowed(&fields[0]));
    let form_body = non_canonical(&borrowed(&fields[1]));
    let form = canonical::canonical_form(&form_body).expect("non_canonical builds an object");
    let raw = s
        .send(Request::signed_post(&url, &key, raw_body, now_ms()))
        .await;
    let canonical = s
        .send(Request::signed_over(
            &url,
            &key,
            form_body,
            &form,
            now_ms(),
            Variant::A,
        ))
        .await;
    let (raw_answer, form_answer) = (s.answer(&raw, &accepted), s.answer(&canonical, &accepted));
    let refused = |a: &checks::Answer| a.code.as_deref() == Some("000001");
    // The refusal is what this check diagnoses; every other fault found in the answers stands.
    let mut problems: Vec<String> = Vec::new();
    for problem in raw_answer.problems.iter().chain(&form_answer.problems) {
        if !problem.starts_with("resultCode is 000001") && !problems.contains(problem) {
            problems.push(problem.clone());
        }
    }
    let mut warnings = Vec::new();
    let mut exchanges = vec![raw, canonical];
    match (refused(&raw_answer), refused(&form_answer)) {
        (true, true) => {
            // Refused in both forms: only a refusal of KooGallery's own form (compact, keys
            // sorted) rules out another cause, such as a key or a variant (D1).
            let own = s.signed(body(&borrowed(&fields[0])));
            let own = s.send(own).await;
            let own_answer = s.inspect(&own, &accepted).await;
            if refused(&own_answer) {
                problems.push(
                    "not a question of the body's form: the same request in KooGallery's own \
                     form (compact, keys sorted) was refused 000001 too"
                        .into(),
                );
                for problem in own_answer.problems {
                    if !problem.starts_with("resultCode is 000001") && !problems.contains(&problem)
                    {
                        problems.push(problem);
                    }
                }
            } else {
                problems.push(
                    "the server verifies the signature over its own re-serialisation of the JSON: \
                     a body with spaces, keys out of order, a \\u escape and a top-level null was \
                     refused 000001 both signed over its raw bytes and signed over its canonical \
                     form (D1a), while the same request in KooGallery's own form (compact, keys \
                     sorted) was accepted; verify over the raw bytes received (§2.2), then over \
                     the canonical form"
                        .into(),
                );
            }
            exchanges.push(own);
        }
        (false, true) => warnings.push(
            "the server verifies the signature over the raw bytes only: the same kind of body \
             signed over its canonical form (D1a: top-level keys sorted, nulls dropped, compact, as \
             Huawei's sample server verifies) was refused 000001. Should KooGallery sign the \
             canonical form of a body that is not already compact and sorted, this server would \
             refuse it"
                .into(),
        ),
        (true, false) => warnings.push(
            "the server verifies the signature over the body's canonical form only (D1a: its own \
             re-serialisation, as Huawei's sample server does): the same kind of body signed over \
             its raw bytes was refused 000001. Should KooGallery sign the raw bytes of a body that \
             is not already compact and sorted, this server would refuse it"
                .into(),
        ),
        (false, false) => {}
    }
    let name = "a body that is not canonical (spaces, keys out of order, a \\u escape, a \
                top-level null) is verified both signed over its raw bytes and over its \
                canonical form (D1a)";
    let shown: Vec<&Exchange> = exchanges.iter().collect();
    if problems.is_empty() {
        s.warn(name, warnings, &shown)
    } else {
        s.record(name, problems, &shown)
    }
}

/// Each of `cases` (an activity and a body naming something that exists where it can), signed
/// with another key, must get `000001`: the signature is checked before the activity is.
pub async fn forged_each(s: &mut Session<'_>, cases: Vec<(&str, Vec<u8>)>) -> Flow {
    for (activity, body) in cases {
        let request = Request::signed_post(s.url(), &other_key(), body, now_ms());
        let exchange = s.send(request).await;
        let mut answer = s.answer(&exchange, &Expect::plain(AUTH_FAILED));
        forged_not_refused(activity, &mut answer);
        s.record(
            format!("a forged {activity} (signed with another key) gets 000001"),
            answer.problems,
            &[&exchange],
        )?;
    }
    Ok(())
}

/// Forged requests that are also invalid (malformed JSON; `invalid`, a body missing a mandatory
/// field) must get `000001`, not `000002`: a server that validates before it authenticates
/// tells an unauthenticated caller which fields it wants.
pub async fn forged_invalid(s: &mut Session<'_>, activity: &str, invalid: Vec<u8>) -> Flow {
    let flag = s.test_flag();
    let cases = [
        (
            "a forged request with malformed JSON gets 000001, not 000002".to_owned(),
            format!(r#"{{"activity":"{activity}","testFlag":"{flag}","#).into_bytes(),
        ),
        (
            format!("a forged {activity} missing a mandatory field gets 000001, not 000002"),
            invalid,
        ),
    ];
    for (name, body) in cases {
        let request = Request::signed_post(s.url(), &other_key(), body, now_ms());
        let exchange = s.send(request).await;
        let mut answer = s.answer(&exchange, &Expect::plain(AUTH_FAILED));
        validated_before_authenticated(&mut answer);
        s.record(name, answer.problems, &[&exchange])?;
    }
    Ok(())
}

fn borrowed<'a>(fields: &'a [(&str, String)]) -> Vec<(&'a str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}
