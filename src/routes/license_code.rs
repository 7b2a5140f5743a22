//! `POST /koogallery/license-code`: License-code 2.0 renewals, freezes and releases
//! (spec §6.3), signed as in §2.2 with the License授权码交付接口 key.

use super::signed::Family;
use crate::domain::answer::Work;
use crate::protocol::license_code::Request;

pub const FAMILY: Family = Family {
    interface: "license_code",
    keys: |state| &state.keys.license_code,
    parse: |_, body, _| Request::parse(body).map(Work::LicenseCode),
};
