//! `POST /koogallery/saas`: the SaaS 2.0 activities (spec §3), signed as in §2.2.

use super::signed::{self, Family};
use crate::app::AppState;
use crate::domain::answer::Work;
use crate::protocol::crypto::FieldCipher;
use crate::protocol::reply::Credentials;
use crate::protocol::saas_v2::Request;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use secrecy::ExposeSecret;

const FAMILY: Family = Family {
    interface: "saas_v2",
    keys: |state| &state.keys.saas,
    parse: |state, body, key| {
        // D6: credentials in `queryInstance` are plain unless encryption is configured,
        // and then encrypted with the key that verified the request.
        let credentials = match state.saas_v2_key_size {
            Some(size) => Credentials::Encrypted(FieldCipher::new(key.expose_secret(), size)),
            None => Credentials::Plain,
        };
        Request::parse(body).map(|request| Work::SaasV2 {
            request,
            credentials,
        })
    },
};

pub async fn handle(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    signed::handle(&state, &FAMILY, query, headers, body).await
}
