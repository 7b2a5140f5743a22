//! `POST /koogallery/saas`: the SaaS 2.0 activities (spec §3), signed as in §2.2.

use super::signed::{self, Family};
use crate::app::AppState;
use crate::domain::callback::Work;
use crate::protocol::saas_v2::Request;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

const FAMILY: Family = Family {
    interface: "saas_v2",
    keys: |state| &state.keys.saas,
    parse: |body| Request::parse(body).map(Work::SaasV2),
};

pub async fn handle(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    signed::handle(&state, &FAMILY, query, headers, body).await
}
