//! `POST /koogallery/order-notify`: order notifications (spec §7), signed as in §2.2 with
//! the key bound to the general interface (通用接口).

use super::signed::Family;
use crate::domain::answer::Work;
use crate::protocol::order::NotifyRequest;

pub const FAMILY: Family = Family {
    interface: "order_notify",
    keys: |state| &state.keys.order_notify,
    parse: |_, body, _| NotifyRequest::parse(body).map(Work::OrderNotify),
};
