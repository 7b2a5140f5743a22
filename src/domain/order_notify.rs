//! `orderNotify` (spec §7): remember the order line once and fetch its details in the
//! background; the answer never waits for the open API.

use super::answer::Answer;
use super::events::{Decision, FollowUp};
use super::order::{self, Fetch};
use crate::protocol::codes::ResultCode;
use crate::protocol::order::NotifyRequest;
use crate::protocol::reply::Reply;
use crate::store::{StoreResult, Tx};

/// Runs one verified, parsed order notification inside the callback's transaction.
pub async fn act(
    tx: &mut dyn Tx,
    request: NotifyRequest,
    now_ms: i64,
) -> StoreResult<Decision<Answer>> {
    let fetch = Fetch {
        order_id: request.order_id.into(),
        order_line_id: request.order_line_id.into(),
        instance_id: None,
        source: "orderNotify".into(),
        test: request.test,
    };
    if !order::remember(tx, &fetch, now_ms).await? {
        tracing::info!("order line already known: answered again, nothing fetched again");
    }
    // §7 documents exactly this body. `order.received` follows once the line is fetched.
    let answer = Answer::reply(&Reply::new(ResultCode::Success, "success"));
    Ok(Decision::quiet(answer).and_then(FollowUp::FetchOrder(fetch)))
}
