//! Pay-per-use usage (merchant-api.md §6, spec §8.4): exact quantities, the windows usage
//! is counted in, when each window is pushed and by when it must be, the record KooGallery
//! gets for it, and taking in a batch of the app's records inside one transaction.

use super::instance::{Instance, State};
use crate::protocol::fields::{self, FieldError};
use crate::protocol::time;
use crate::store::{StoreResult, Tx, UsageWindow};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// A quantity in exact fixed point: units of 1/10000, KooGallery's `usage_value`
/// precision (Double(12,4)). Sums are integer additions, so many small quantities add up
/// exactly, with no floating-point drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity(pub i64);

/// Units per whole quantity.
const SCALE: i64 = 10_000;

/// The largest quantity one record may carry: 8 integer digits, as Double(12,4) allows.
pub const MAX_RECORD: Quantity = Quantity(99_999_999 * SCALE + 9_999);

impl Quantity {
    /// Parses a decimal string as the app sends it: digits, optionally a point and 1 to 4
    /// more digits, greater than zero. No sign, no exponent, no spaces: anything a float
    /// parser would accept but round is refused.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let quantity = Self::parse_amount(text)?;
        if quantity.0 == 0 {
            return Err("must be greater than 0");
        }
        Ok(quantity)
    }

    /// Parses an amount as [`Quantity::parse`] does, zero included: what a package has
    /// consumed may still be nothing.
    pub fn parse_amount(text: &str) -> Result<Self, &'static str> {
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
            return Err(
                "must be a decimal number such as \"1.5\" (digits, optionally a point and up to 4 decimals)",
            );
        }
        let fraction = fraction.unwrap_or("");
        if fraction.len() > 4 {
            return Err("has more than 4 decimals");
        }
        let whole = whole.trim_start_matches('0');
        if whole.len() > 8 {
            return Err("is larger than 99999999.9999");
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| "is not a number")?
        };
        let padded = format!("{fraction:0<4}");
        let fraction: i64 = padded.parse().map_err(|_| "is not a number")?;
        Ok(Self(whole * SCALE + fraction))
    }

    /// Written with exactly 4 decimals, as KooGallery's `usage_value` (`"0.1000"`).
    pub fn to_fixed(self) -> String {
        format!("{}.{:04}", self.0 / SCALE, self.0 % SCALE)
    }
}

/// How long a usage window is (`KOOGATE_USAGE_WINDOW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowSize {
    Hour,
    Day,
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// KooGallery refuses a record whose `begin_time` is more than 21 days old (`MKT.9004`).
pub const PUSH_LIMIT_MS: i64 = 21 * DAY_MS;

/// How far ahead of the server's clock an `occurredAt` may be (the app's clock may run a
/// little fast).
pub const FUTURE_TOLERANCE_MS: i64 = MINUTE_MS;

impl WindowSize {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    const fn length_ms(self) -> i64 {
        match self {
            Self::Hour => HOUR_MS,
            Self::Day => DAY_MS,
        }
    }

    /// The window (UTC hours, or UTC days) that holds the moment `ms`.
    pub fn containing(self, ms: i64) -> Window {
        let begin_ms = ms.div_euclid(self.length_ms()) * self.length_ms();
        Window {
            begin_ms,
            end_ms: begin_ms + self.length_ms(),
        }
    }
}

/// A span of time usage is summed over: `[begin_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub begin_ms: i64,
    pub end_ms: i64,
}

/// When a window that ended at `end_ms` is pushed: 5 minutes after it closed — :05 past the
/// next hour for an hourly window, 00:05 UTC for a daily one — so that usage the app sends
/// a little late still lands in it, well before KooGallery collects at :15 (hourly) or by
/// 00:15 (daily) (spec §8.4, newer rules).
pub fn due_ms(end_ms: i64) -> i64 {
    end_ms + PUSH_DELAY_MS
}

/// How long after a window ends it is pushed.
pub const PUSH_DELAY_MS: i64 = 5 * MINUTE_MS;

/// The latest a window can be pushed and still be billed on KooGallery's cadence: 2 hours
/// after an hourly window, 01:00 UTC after a daily one (spec §8.4, newer rules).
pub fn deadline_ms(window: Window) -> i64 {
    if window.end_ms - window.begin_ms >= DAY_MS {
        window.end_ms + HOUR_MS
    } else {
        window.end_ms + 2 * HOUR_MS
    }
}

/// The deduplication key KooGallery keeps for a window's record: derived from the
/// instance and the (unclipped) window, so that a push retried after a lost answer is the
/// same record, not a second bill. 34 characters, within the 64 allowed.
#[expect(clippy::indexing_slicing, reason = "a SHA-256 digest has 32 bytes")]
pub fn metering_sn(instance_id: &str, window: Window) -> String {
    let digest = Sha256::digest(format!(
        "koogate-usage\n{instance_id}\n{}\n{}",
        window.begin_ms, window.end_ms
    ));
    format!("kg{}", hex::encode(&digest[..16]))
}

/// The window as pushed: clipped to the resource's life — not before it started, not
/// after its release, not after the push (spec §8.4) — and never empty.
pub fn clip(window: Window, started_ms: i64, released_ms: Option<i64>, now_ms: i64) -> Window {
    let end_ms = window
        .end_ms
        .min(released_ms.unwrap_or(i64::MAX))
        .min(now_ms);
    let begin_ms = window.begin_ms.max(started_ms);
    // Usage was counted in this window, so the resource lived in it; a start or release
    // time that says otherwise (clock skew between KooGallery and the app) is not allowed
    // to produce a record KooGallery refuses as an empty range: round to whole seconds and
    // keep at least one second.
    let begin_ms = begin_ms.div_euclid(1000) * 1000;
    let end_ms = (end_ms.div_euclid(1000) * 1000).max(begin_ms + 1000);
    Window { begin_ms, end_ms }
}

/// The open-API time format of usage records, `yyyyMMdd'T'HHmmss'Z'` (D10).
pub fn wire_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(crate::protocol::apig::format_sdk_date)
        .unwrap_or_default()
}

/// `queryInstance`'s `statisticalTime`, `yyyyMMddHHmmssSSS` UTC.
pub fn statistical_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(time::format_millis)
        .unwrap_or_default()
}

/// Whether an instance is billed by usage: KooGallery's `ON_DEMAND` charging mode.
pub fn is_pay_per_use(instance: &Instance) -> bool {
    instance.charging_mode.as_deref() == Some("ON_DEMAND")
}

/// Whether an instance is a pay-per-use package (用完即停套餐包): KooGallery's
/// `ON_DEMAND_PKG` charging mode, V1's `chargingMode=5` (spec §4.1, §8.2).
pub fn is_package(instance: &Instance) -> bool {
    instance.charging_mode.as_deref() == Some("ON_DEMAND_PKG")
}

/// The fee items one package instance may report: each is an entry of `queryInstance`'s
/// answer, which KooGallery may ask for 100 instances at once.
pub const MAX_PACKAGE_ITEMS: usize = 100;

/// One fee item of a package as the app reports it, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageItem {
    pub related_instance_id: String,
    pub usage_value: String,
    /// RFC 3339; `None`: counted when reported.
    pub statistical_time: Option<String>,
}

/// Checks a package instance's fee items (spec §3.2 UsageInfo: `relatedInstanceId`
/// String(64), `usageValue` Double(12,4), `statisticalTime`) into what is stored, or says
/// which field of which item is wrong: (item index, field, message).
pub fn check_package(
    instance_id: &str,
    items: &[PackageItem],
    now_ms: i64,
) -> Result<Vec<crate::store::PackageUsage>, Vec<(usize, &'static str, String)>> {
    let mut errors = Vec::new();
    let mut entries = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let mut refuse = |field, message: String| errors.push((index, field, message));
        let related = &item.related_instance_id;
        if related.is_empty() || related.len() > 64 {
            refuse("relatedInstanceId", "must be 1 to 64 bytes".into());
        } else if items
            .iter()
            .take(index)
            .any(|other| &other.related_instance_id == related)
        {
            refuse(
                "relatedInstanceId",
                "is listed twice: one entry per fee item".into(),
            );
        }
        let value = Quantity::parse_amount(&item.usage_value)
            .map_err(str::to_owned)
            .and_then(|q| {
                (q <= MAX_RECORD)
                    .then_some(q)
                    .ok_or_else(|| "is larger than 99999999.9999".to_owned())
            });
        let value = match value {
            Ok(value) => Some(value),
            Err(message) => {
                refuse("usageValue", message);
                None
            }
        };
        let at = match &item.statistical_time {
            None => Some(now_ms),
            Some(text) => match DateTime::parse_from_rfc3339(text) {
                Ok(t) if t.timestamp_millis() > now_ms + FUTURE_TOLERANCE_MS => {
                    refuse("statisticalTime", "is in the future".into());
                    None
                }
                Ok(t) => Some(t.timestamp_millis()),
                Err(e) => {
                    refuse(
                        "statisticalTime",
                        format!("is not an RFC 3339 time such as 2026-12-01T08:00:00Z: {e}"),
                    );
                    None
                }
            },
        };
        if let (Some(value), Some(at)) = (value, at) {
            entries.push(crate::store::PackageUsage {
                instance_id: instance_id.to_owned(),
                related_instance_id: related.clone(),
                usage_value: value.0,
                statistical_ms: at,
                updated_ms: now_ms,
            });
        }
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

/// One record as the app sent it, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub id: String,
    pub instance_id: String,
    pub quantity: String,
    pub occurred_at: String,
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Counted in the window beginning at `window_begin_ms`; `carried_from` is the window
    /// it belongs to when that one had been pushed already.
    Accepted {
        window_begin_ms: i64,
        carried_from: Option<i64>,
    },
    /// The same id with the same quantity was taken before: counted once.
    Duplicate,
    /// The same id came before with another quantity, which is kept.
    Conflict { kept: Quantity },
    /// Refused, nothing stored: which field, and why.
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// The longest record id kept.
pub const MAX_ID: usize = 128;

/// A record whose id was new: its place in the batch, the record, its quantity in units.
type Claimed<'a> = (usize, &'a Incoming, i64);

/// A record that passed the checks that need no database.
struct Checked {
    quantity: Quantity,
    occurred_ms: i64,
}

fn check(record: &Incoming, now_ms: i64) -> Result<Checked, Outcome> {
    let invalid = |field, message: String| Outcome::Invalid { field, message };
    if record.id.is_empty() || record.id.len() > MAX_ID {
        return Err(invalid("id", format!("must be 1 to {MAX_ID} bytes")));
    }
    if record.instance_id.is_empty() || record.instance_id.len() > 64 {
        return Err(invalid("instanceId", "must be 1 to 64 bytes".into()));
    }
    // Ids are never control characters, and PostgreSQL cannot store a NUL.
    for (field, text) in [("id", &record.id), ("instanceId", &record.instance_id)] {
        if let Err(FieldError::Invalid { reason, .. }) = fields::refuse_control(field, text) {
            return Err(invalid(field, reason));
        }
    }
    let quantity =
        Quantity::parse(&record.quantity).map_err(|m| invalid("quantity", m.to_owned()))?;
    if quantity > MAX_RECORD {
        return Err(invalid("quantity", "is larger than 99999999.9999".into()));
    }
    let occurred_ms = DateTime::parse_from_rfc3339(&record.occurred_at)
        .map_err(|e| {
            invalid(
                "occurredAt",
                format!("is not an RFC 3339 time such as 2026-12-01T08:12:00Z: {e}"),
            )
        })?
        .timestamp_millis();
    if occurred_ms > now_ms + FUTURE_TOLERANCE_MS {
        return Err(invalid("occurredAt", "is in the future".into()));
    }
    if occurred_ms < now_ms - PUSH_LIMIT_MS {
        return Err(invalid(
            "occurredAt",
            "is more than 21 days old: KooGallery no longer accepts usage for it".into(),
        ));
    }
    Ok(Checked {
        quantity,
        occurred_ms,
    })
}

fn check_instance(instance: Option<&Instance>, occurred_ms: i64) -> Result<(), Outcome> {
    let invalid = |message: &str| Outcome::Invalid {
        field: "instanceId",
        message: message.to_owned(),
    };
    let Some(instance) = instance else {
        return Err(invalid("unknown instance"));
    };
    if instance.state == State::Released {
        return Err(invalid("the instance is released"));
    }
    if !is_pay_per_use(instance) {
        return Err(invalid(match &instance.charging_mode {
            None => {
                "not a pay-per-use instance: its charging mode is not known yet (查询订单 has not answered)"
            }
            Some(_) => "not a pay-per-use (ON_DEMAND) instance",
        }));
    }
    if occurred_ms < instance.created_ms.div_euclid(HOUR_MS) * HOUR_MS {
        return Err(Outcome::Invalid {
            field: "occurredAt",
            message: "is before the instance was created".into(),
        });
    }
    Ok(())
}

/// Takes in a batch of records in `tx`: each valid record's id is claimed (the dedupe key)
/// and its quantity added to its window in this one transaction, so a record is counted
/// exactly when its id is stored. A record whose window was pushed already goes into the
/// window open now, linked to the one it came from (pushed values never change).
/// Returns one outcome per record, in order.
#[expect(
    clippy::indexing_slicing,
    reason = "outcomes has one slot per record and index comes from enumerating the records; a group is never empty"
)]
pub async fn ingest(
    tx: &mut dyn Tx,
    records: &[Incoming],
    size: WindowSize,
    now_ms: i64,
) -> StoreResult<Vec<Outcome>> {
    // An id with a control character is refused below; it is not even looked up.
    let mut ids: Vec<String> = records
        .iter()
        .map(|r| r.instance_id.clone())
        .filter(|id| fields::refuse_control("instanceId", id).is_ok())
        .collect();
    ids.sort();
    ids.dedup();
    let instances = tx.instances(&ids).await?;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; records.len()];
    let mut valid = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        let checked = check(record, now_ms).and_then(|c| {
            let instance = instances.iter().find(|i| i.id == record.instance_id);
            check_instance(instance, c.occurred_ms).map(|()| c)
        });
        match checked {
            Ok(checked) => valid.push((index, record, checked)),
            Err(outcome) => outcomes[index] = Some(outcome),
        }
    }
    // Rows are locked in one order — instance, window, id — whatever order the app sent,
    // so that two batches written at once (two replicas) wait for each other rather than
    // deadlock.
    valid.sort_by(|a, b| {
        let key = |(_, r, c): &(usize, &Incoming, Checked)| {
            (
                r.instance_id.clone(),
                size.containing(c.occurred_ms).begin_ms,
                r.id.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    // Claim every id first, then add to each window once: the window's row is locked
    // only at the end of the transaction, so batches for one instance at two replicas
    // overlap instead of queueing behind each other record by record.
    let mut windows: Vec<(i64, Vec<Claimed>)> = Vec::new();
    let mut last_instance = "";
    for (index, record, checked) in valid {
        let origin = size.containing(checked.occurred_ms);
        let stored = crate::store::NewUsageRecord {
            instance_id: &record.instance_id,
            record_id: &record.id,
            quantity: checked.quantity.0,
            occurred_ms: checked.occurred_ms,
            origin_begin_ms: origin.begin_ms,
            received_ms: now_ms,
        };
        if let Some(kept) = tx.claim_usage_record(&stored).await? {
            outcomes[index] = Some(if kept == checked.quantity.0 {
                Outcome::Duplicate
            } else {
                Outcome::Conflict {
                    kept: Quantity(kept),
                }
            });
            continue;
        }
        // Sorted by instance and window, so a new group starts where either changes.
        match windows.last_mut() {
            Some((begin, group))
                if *begin == origin.begin_ms && last_instance == record.instance_id =>
            {
                group.push((index, record, checked.quantity.0));
            }
            _ => windows.push((origin.begin_ms, vec![(index, record, checked.quantity.0)])),
        }
        last_instance = &record.instance_id;
    }
    for (begin_ms, group) in windows {
        let instance_id = &group[0].1.instance_id;
        let origin = size.containing(begin_ms);
        let sum = |records: &[Claimed]| {
            let mut w = UsageWindow::open(instance_id, origin, now_ms);
            w.total = records.iter().map(|r| r.2).sum();
            w.records = i64::try_from(records.len()).unwrap_or(i64::MAX);
            w
        };
        if tx.add_usage(&sum(&group)).await? {
            for (index, ..) in group {
                outcomes[index] = Some(Outcome::Accepted {
                    window_begin_ms: begin_ms,
                    carried_from: None,
                });
            }
            continue;
        }
        // Its window is closed: carry the usage into the window open now. That one is
        // still open, since windows close only once they have ended.
        let current = size.containing(now_ms.max(origin.begin_ms));
        let mut carried = sum(&group);
        carried.begin_ms = current.begin_ms;
        carried.end_ms = current.end_ms;
        if !tx.add_usage(&carried).await? {
            return Err(crate::store::StoreError::Corrupt(format!(
                "usage window {} of {instance_id} is closed before it ended",
                current.begin_ms
            )));
        }
        for (index, record, _) in group {
            tx.carry_usage_record(instance_id, &record.id, current.begin_ms)
                .await?;
            outcomes[index] = Some(Outcome::Accepted {
                window_begin_ms: current.begin_ms,
                carried_from: Some(begin_ms),
            });
        }
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// A window as the API, the CLI and events show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowView {
    pub begin: String,
    pub end: String,
    /// The sum, with exactly 4 decimals.
    pub value: String,
    pub records: i64,
    /// `open` (taking usage), `closed` (its record fixed, being pushed), `pushed`
    /// (accepted by KooGallery) or `parked` (refused: see `reason`; revenue at risk).
    pub state: String,
    /// When the push is due, and the latest it is billed on KooGallery's cadence.
    pub due_at: String,
    pub deadline: String,
    pub metering_sn: Option<String>,
    /// `begin_time`/`end_time` as pushed: the window clipped to the instance's life.
    pub pushed_begin: Option<String>,
    pub pushed_end: Option<String>,
    pub pushed_at: Option<String>,
    /// KooGallery's record-level code (`001`–`013`) or the call's error code.
    pub code: Option<String>,
    pub reason: Option<String>,
    /// Late usage counted here, by the (already pushed) window it belongs to.
    pub carried_in: Vec<CarriedView>,
}

/// Late usage carried into a window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CarriedView {
    /// The begin of the window the usage belongs to.
    pub from: String,
    pub value: String,
    pub records: i64,
}

impl WindowView {
    pub fn new(w: &UsageWindow, carried: &[crate::store::Carried]) -> Self {
        use super::events::rfc3339;
        Self {
            begin: rfc3339(w.begin_ms),
            end: rfc3339(w.end_ms),
            value: Quantity(w.total).to_fixed(),
            records: w.records,
            state: w.state.clone(),
            due_at: rfc3339(due_ms(w.end_ms)),
            deadline: rfc3339(deadline_ms(w.window())),
            metering_sn: w.metering_sn.clone(),
            pushed_begin: w.push_begin_ms.map(rfc3339),
            pushed_end: w.push_end_ms.map(rfc3339),
            pushed_at: w.pushed_ms.map(rfc3339),
            code: w.code.clone(),
            reason: w.reason.clone(),
            carried_in: carried
                .iter()
                .filter(|c| c.window_begin_ms == w.begin_ms)
                .map(|c| CarriedView {
                    from: rfc3339(c.origin_begin_ms),
                    value: Quantity(c.total).to_fixed(),
                    records: c.records,
                })
                .collect(),
        }
    }
}

/// `usage.pushed` or `usage.push_failed` about a window of an instance.
pub fn event(
    kind: super::events::EventType,
    instance: &Instance,
    window: &UsageWindow,
) -> super::events::Event {
    let view = super::events::InstanceView::from(instance);
    super::events::Event {
        kind,
        subject: format!("instance:{}", instance.id),
        test: instance.test,
        snapshot: serde_json::json!({
            "instance": serde_json::to_value(view).unwrap_or_default(),
            "usageWindow": serde_json::to_value(WindowView::new(window, &[])).unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn quantities_parse_exactly_and_refuse_anything_else() {
        for (text, units) in [
            ("1", 10_000),
            ("1.5", 15_000),
            ("0.0001", 1),
            ("0.1", 1_000),
            ("007.25", 72_500),
            ("99999999.9999", 999_999_999_999),
        ] {
            assert_eq!(Quantity::parse(text), Ok(Quantity(units)), "{text}");
        }
        let refused = [
            ("0", "zero"),
            ("0.0000", "zero with decimals"),
            ("-1", "negative"),
            ("+1", "signed"),
            ("1.23456", "5 decimals"),
            ("1e3", "exponent"),
            ("1E-2", "exponent"),
            ("", "empty"),
            (".5", "no integer part"),
            ("1.", "no decimals after the point"),
            (" 1", "space"),
            ("1,5", "comma"),
            ("NaN", "not a number"),
            ("inf", "not a number"),
            ("100000000", "over 8 integer digits"),
            ("0x10", "hex"),
        ];
        for (text, why) in refused {
            assert!(Quantity::parse(text).is_err(), "{why}: {text:?} accepted");
        }
    }

    #[test]
    fn a_package_may_have_consumed_nothing_yet_a_record_must_carry_usage() {
        assert_eq!(Quantity::parse_amount("0"), Ok(Quantity(0)));
        assert_eq!(Quantity::parse_amount("0.0000"), Ok(Quantity(0)));
        assert!(Quantity::parse("0").is_err());
        assert!(Quantity::parse_amount("-0").is_err());
    }

    #[test]
    fn package_fee_items_are_checked_together_and_each_field_named() {
        let now = ms("2026-12-01T08:30:00Z");
        let item = |related: &str, value: &str, at: Option<&str>| PackageItem {
            related_instance_id: related.into(),
            usage_value: value.into(),
            statistical_time: at.map(str::to_owned),
        };
        let kept = check_package(
            "pkg",
            &[
                item("a", "12.5", Some("2026-12-01T16:00:00+08:00")),
                item("b", "0", None),
            ],
            now,
        )
        .unwrap();
        assert_eq!(
            (kept[0].usage_value, kept[0].statistical_ms),
            (125_000, ms("2026-12-01T08:00:00Z"))
        );
        assert_eq!((kept[1].usage_value, kept[1].statistical_ms), (0, now));

        let refused = check_package(
            "pkg",
            &[
                item("a", "1", Some("2026-12-01T08:40:00Z")),
                item("a", "1.00001", None),
            ],
            now,
        )
        .unwrap_err();
        let fields: Vec<(usize, &str)> = refused.iter().map(|(i, f, _)| (*i, *f)).collect();
        assert_eq!(
            fields,
            [
                (0, "statisticalTime"),
                (1, "relatedInstanceId"),
                (1, "usageValue")
            ]
        );
    }

    #[test]
    fn quantities_are_written_with_exactly_four_decimals() {
        assert_eq!(Quantity(1_000).to_fixed(), "0.1000");
        assert_eq!(Quantity(1).to_fixed(), "0.0001");
        assert_eq!(Quantity(123_456_789).to_fixed(), "12345.6789");
        assert_eq!(Quantity(10_000).to_fixed(), "1.0000");
    }

    #[test]
    fn ten_thousand_tenths_of_a_thousandth_add_up_exactly() {
        // 0.1 + 0.2 in floating point is not 0.3; in units of 1/10000 it is.
        let sum: i64 = (0..30_000)
            .map(|i| {
                Quantity::parse(if i % 3 == 0 { "0.1" } else { "0.0001" })
                    .unwrap()
                    .0
            })
            .sum();
        assert_eq!(Quantity(sum).to_fixed(), "1002.0000");
    }

    #[test]
    fn windows_are_utc_hours_or_days() {
        let hour = WindowSize::Hour.containing(ms("2026-12-01T08:59:59.999Z"));
        assert_eq!(
            (hour.begin_ms, hour.end_ms),
            (ms("2026-12-01T08:00:00Z"), ms("2026-12-01T09:00:00Z"))
        );
        let next = WindowSize::Hour.containing(ms("2026-12-01T09:00:00Z"));
        assert_eq!(next.begin_ms, ms("2026-12-01T09:00:00Z"));
        let day = WindowSize::Day.containing(ms("2026-12-31T23:59:59Z"));
        assert_eq!(
            (day.begin_ms, day.end_ms),
            (ms("2026-12-31T00:00:00Z"), ms("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn pushes_are_due_five_minutes_after_a_window_and_late_after_the_cadence() {
        let hour = WindowSize::Hour.containing(ms("2026-12-01T23:30:00Z"));
        assert_eq!(due_ms(hour.end_ms), ms("2026-12-02T00:05:00Z"));
        assert_eq!(deadline_ms(hour), ms("2026-12-02T02:00:00Z"));
        let day = WindowSize::Day.containing(ms("2026-12-31T12:00:00Z"));
        assert_eq!(due_ms(day.end_ms), ms("2027-01-01T00:05:00Z"));
        assert_eq!(deadline_ms(day), ms("2027-01-01T01:00:00Z"));
    }

    #[test]
    fn metering_sns_are_stable_per_instance_and_window() {
        let w = WindowSize::Hour.containing(ms("2026-12-01T08:10:00Z"));
        let sn = metering_sn("i-1", w);
        assert_eq!(sn, metering_sn("i-1", w), "the same record on every retry");
        assert_eq!(sn.len(), 34);
        assert_ne!(sn, metering_sn("i-2", w));
        assert_ne!(
            sn,
            metering_sn(
                "i-1",
                WindowSize::Hour.containing(ms("2026-12-01T09:10:00Z"))
            )
        );
    }

    #[test]
    fn pushed_windows_are_clipped_to_the_resources_life() {
        let w = WindowSize::Hour.containing(ms("2026-12-01T08:10:00Z"));
        let now = ms("2026-12-01T09:05:00Z");
        let whole = clip(w, ms("2026-11-30T00:00:00Z"), None, now);
        assert_eq!(whole, w);
        let started = clip(w, ms("2026-12-01T08:20:30.500Z"), None, now);
        assert_eq!(started.begin_ms, ms("2026-12-01T08:20:30Z"));
        let released = clip(w, 0, Some(ms("2026-12-01T08:45:00Z")), now);
        assert_eq!(released.end_ms, ms("2026-12-01T08:45:00Z"));
        let early_push = clip(w, 0, None, ms("2026-12-01T08:50:00Z"));
        assert_eq!(early_push.end_ms, ms("2026-12-01T08:50:00Z"));
        let skewed = clip(w, ms("2026-12-01T10:00:00Z"), None, now);
        assert!(skewed.begin_ms < skewed.end_ms, "{skewed:?}");
    }

    #[test]
    fn record_times_are_written_as_the_open_apis_want() {
        assert_eq!(wire_time(ms("2022-08-09T08:00:00Z")), "20220809T080000Z");
        assert_eq!(
            statistical_time(ms("2026-12-01T08:00:00.123Z")),
            "20261201080000123"
        );
    }

    #[test]
    fn records_are_checked_field_by_field() {
        let now = ms("2026-12-01T08:30:00Z");
        let record = |quantity: &str, at: &str| Incoming {
            id: "r1".into(),
            instance_id: "i1".into(),
            quantity: quantity.into(),
            occurred_at: at.into(),
        };
        assert!(check(&record("1.5", "2026-12-01T08:12:00Z"), now).is_ok());
        assert!(check(&record("1.5", "2026-12-01T16:12:00+08:00"), now).is_ok());
        let field = |r: &Incoming| match check(r, now) {
            Err(Outcome::Invalid { field, .. }) => field,
            other => panic!("{r:?} gave {:?}", other.map(|c| c.quantity)),
        };
        assert_eq!(field(&record("-1", "2026-12-01T08:12:00Z")), "quantity");
        assert_eq!(field(&record("1", "yesterday")), "occurredAt");
        assert_eq!(field(&record("1", "2026-12-01T08:32:00Z")), "occurredAt");
        assert_eq!(field(&record("1", "2026-11-09T08:00:00Z")), "occurredAt");
        let mut long = record("1", "2026-12-01T08:12:00Z");
        long.id = "x".repeat(MAX_ID + 1);
        assert_eq!(field(&long), "id");
    }
}
