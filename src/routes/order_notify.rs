//! `POST /koogallery/order-notify`: order notifications (spec §7), signed as in §2.2 with
//! the key bound to the general interface (通用接口).

use super::signed::{self, Family};
use crate::app::AppState;
use crate::domain::callback::Work;
use crate::protocol::order::NotifyRequest;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

const FAMILY: Family = Family {
    interface: "order_notify",
    keys: |state| &state.keys.order_notify,
    parse: |_, body, _| NotifyRequest::parse(body).map(Work::OrderNotify),
};

pub async fn handle(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    signed::handle(&state, &FAMILY, query, headers, body).await
}
