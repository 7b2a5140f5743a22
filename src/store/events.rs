//! Events, their delivery attempts, the webhook endpoint's pause, and the operational reads of the management API: SQL written once, expanded for each backend by
//! `queries!`, with the one dialect difference (which events the feed may show yet)
//! passed in.

use crate::domain::events::{self, EventType};
use serde_json::{Map, Value};

/// An event to write in the current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_id: String,
    pub kind: &'static str,
    pub subject: String,
    pub test: bool,
    /// The snapshot object, as JSON.
    pub snapshot: String,
    pub created_ms: i64,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: i64,
    pub event_id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub subject: String,
    pub sequence: i64,
    pub test: bool,
    pub snapshot: String,
    pub created_ms: i64,
    pub txid: i64,
}

impl StoredEvent {
    /// Where the feed goes on after this event.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            txid: self.txid,
            id: self.id,
        }
    }

    pub fn event_type(&self) -> Option<EventType> {
        EventType::parse(&self.kind)
    }

    /// The envelope of merchant-api.md §2.1 — the body of every delivery attempt and an
    /// item of the feed. Built from stored columns only, so every attempt sends the same
    /// bytes (the object keys come out sorted).
    pub fn envelope(&self) -> Value {
        let mut data = match serde_json::from_str::<Value>(&self.snapshot) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        data.insert("eventId".into(), self.event_id.clone().into());
        data.insert("subject".into(), self.subject.clone().into());
        data.insert("sequence".into(), self.sequence.into());
        data.insert("test".into(), self.test.into());
        serde_json::json!({
            "type": self.kind,
            "timestamp": events::rfc3339(self.created_ms),
            "data": data,
        })
    }

    /// [`Self::envelope`] as the exact bytes sent and signed.
    pub fn body(&self) -> Vec<u8> {
        self.envelope().to_string().into_bytes()
    }
}

/// A position in the feed: events are shown in (transaction, id) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub txid: i64,
    pub id: i64,
}

impl Cursor {
    /// The opaque text form of a cursor, as the feed gives it.
    pub fn encode(&self) -> String {
        format!("{}-{}", self.txid, self.id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (txid, id) = text.split_once('-')?;
        Some(Self {
            txid: txid.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

/// One delivery attempt of an event to the webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Attempt {
    pub event_id: String,
    pub attempted_ms: i64,
    /// `None` when no answer came back.
    pub status: Option<i64>,
    pub duration_ms: i64,
    /// The first 4 KiB of the answer.
    pub response: Option<String>,
    pub error: Option<String>,
}

/// The webhook endpoint paused by a `410 Gone`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Pause {
    pub paused_ms: i64,
    pub reason: String,
}

/// Which instances to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    /// A state as the API names it (`provisioning`, `active`, …).
    pub state: Option<String>,
    pub customer_id: Option<String>,
    pub order_id: Option<String>,
    pub test: Option<bool>,
    /// Only instances after this one in the listing: (created_ms, instance_id).
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// The states the API can filter on, as SQL over the stored columns.
pub const STATE_FILTERS: [(&str, &str); 5] = [
    (
        "provisioning",
        "state <> 'released' AND app_info IS NULL AND provisioning_error IS NULL",
    ),
    (
        "provisioning_failed",
        "state <> 'released' AND provisioning_error IS NOT NULL",
    ),
    (
        "active",
        "state = 'active' AND app_info IS NOT NULL AND provisioning_error IS NULL",
    ),
    (
        "frozen",
        "state = 'frozen' AND app_info IS NOT NULL AND provisioning_error IS NULL",
    ),
    ("released", "state = 'released'"),
];

const EVENT_COLUMNS: &str =
    "id, event_id, type, subject, sequence, test, snapshot, created_ms, txid";

/// The per-subject sequence is the next after the subject's last event; the unique key
/// on (subject, sequence) refuses a second writer that raced this one, and callers take
/// the subject's row lock first so that this does not happen in practice.
const INSERT_EVENT: &str = "INSERT INTO events (event_id, type, subject, sequence, test, snapshot, created_ms) \
     SELECT $1, $2, $3, COALESCE(MAX(sequence), 0) + 1, $4, $5, $6 FROM events WHERE subject = $7";

/// Expands the queries for one backend: `$db` is its sqlx database, `$visible` the SQL
/// condition under which the feed may show an event already.
/// An event's snapshot as stored: sealed, since an `order.received` snapshot carries
/// 查询订单's `buyerInfo`, and one format for every event keeps the rule simple.
pub(super) fn seal_snapshot(
    sealer: &crate::store::seal::Sealer,
    event_id: &str,
    snapshot: &str,
) -> String {
    sealer.seal_text(&crate::store::seal::place(SNAPSHOT, &[event_id]), snapshot)
}

/// A stored event with its snapshot opened (events of older releases are plain JSON).
fn open_snapshot(
    sealer: &crate::store::seal::Sealer,
    mut event: StoredEvent,
) -> crate::store::StoreResult<StoredEvent> {
    let aad = crate::store::seal::place(SNAPSHOT, &[&event.event_id]);
    event.snapshot = sealer
        .open_text(&aad, &event.snapshot)
        .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
    Ok(event)
}

/// The associated data of sealed snapshots (see [`crate::store::seal::place`]).
const SNAPSHOT: &str = "events.snapshot";

macro_rules! queries {
    ($db:ty, $visible:expr) => {
        use super::{Attempt, Cursor, InstanceFilter, NewEvent, Pause, StoredEvent};
        use crate::domain::instance::Instance;
        use crate::store::StoreResult;
        use crate::store::rows::{InstanceRow, instance_columns};
        use crate::store::seal::Sealer;
        use sqlx::Executor;

        type Db = $db;

        pub async fn insert_event<'c>(
            conn: impl Executor<'c, Database = Db>,
            e: &NewEvent,
            sealer: &Sealer,
        ) -> StoreResult<()> {
            sqlx::query(super::INSERT_EVENT)
                .bind(&e.event_id)
                .bind(e.kind)
                .bind(&e.subject)
                .bind(e.test)
                .bind(super::seal_snapshot(sealer, &e.event_id, &e.snapshot))
                .bind(e.created_ms)
                .bind(&e.subject)
                .execute(conn)
                .await?;
            Ok(())
        }

        pub async fn events_after<'c>(
            conn: impl Executor<'c, Database = Db>,
            after: Cursor,
            limit: u32,
            sealer: &Sealer,
        ) -> StoreResult<Vec<StoredEvent>> {
            let sql = format!(
                "SELECT {} FROM events WHERE (txid, id) > ($1, $2) AND {} ORDER BY txid, id LIMIT $3",
                super::EVENT_COLUMNS,
                $visible
            );
            let rows: Vec<StoredEvent> = sqlx::query_as(&sql)
                .bind(after.txid)
                .bind(after.id)
                .bind(i64::from(limit))
                .fetch_all(conn)
                .await?;
            rows.into_iter().map(|e| super::open_snapshot(sealer, e)).collect()
        }

        pub async fn event<'c>(
            conn: impl Executor<'c, Database = Db>,
            event_id: &str,
            sealer: &Sealer,
        ) -> StoreResult<Option<StoredEvent>> {
            let sql = format!("SELECT {} FROM events WHERE event_id = $1", super::EVENT_COLUMNS);
            let row: Option<StoredEvent> = sqlx::query_as(&sql)
                .bind(event_id)
                .fetch_optional(conn)
                .await?;
            row.map(|e| super::open_snapshot(sealer, e)).transpose()
        }

        pub async fn events_of<'c>(
            conn: impl Executor<'c, Database = Db>,
            subject: &str,
            sealer: &Sealer,
        ) -> StoreResult<Vec<StoredEvent>> {
            let sql = format!(
                "SELECT {} FROM events WHERE subject = $1 ORDER BY sequence",
                super::EVENT_COLUMNS
            );
            let rows: Vec<StoredEvent> = sqlx::query_as(&sql).bind(subject).fetch_all(conn).await?;
            rows.into_iter().map(|e| super::open_snapshot(sealer, e)).collect()
        }

        pub async fn attempts<'c>(
            conn: impl Executor<'c, Database = Db>,
            event_id: &str,
        ) -> StoreResult<Vec<Attempt>> {
            Ok(sqlx::query_as(
                "SELECT event_id, attempted_ms, status, duration_ms, response, error \
                 FROM event_attempts WHERE event_id = $1 ORDER BY id",
            )
            .bind(event_id)
            .fetch_all(conn)
            .await?)
        }

        pub async fn insert_attempt<'c>(
            conn: impl Executor<'c, Database = Db>,
            a: &Attempt,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO event_attempts (event_id, attempted_ms, status, duration_ms, response, error) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&a.event_id)
            .bind(a.attempted_ms)
            .bind(a.status)
            .bind(a.duration_ms)
            .bind(&a.response)
            .bind(&a.error)
            .execute(conn)
            .await?;
            Ok(())
        }

        pub async fn pause<'c>(
            conn: impl Executor<'c, Database = Db>,
        ) -> StoreResult<Option<Pause>> {
            Ok(
                sqlx::query_as("SELECT paused_ms, reason FROM webhook_pause WHERE id = 1")
                    .fetch_optional(conn)
                    .await?,
            )
        }

        pub async fn set_pause<'c>(
            conn: impl Executor<'c, Database = Db>,
            paused_ms: i64,
            reason: &str,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO webhook_pause (id, paused_ms, reason) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(paused_ms)
            .bind(reason)
            .execute(conn)
            .await?;
            Ok(())
        }

        pub async fn clear_pause<'c>(conn: impl Executor<'c, Database = Db>) -> StoreResult<bool> {
            let done = sqlx::query("DELETE FROM webhook_pause WHERE id = 1")
                .execute(conn)
                .await?;
            Ok(done.rows_affected() > 0)
        }

        /// Pending jobs of a kind due now rather than at their retry time.
        pub async fn due_now<'c>(
            conn: impl Executor<'c, Database = Db>,
            kind: &str,
            now_ms: i64,
        ) -> StoreResult<u64> {
            let done = sqlx::query(
                "UPDATE jobs SET run_at_ms = $1 WHERE state = 'pending' AND kind = $2 AND run_at_ms > $3",
            )
            .bind(now_ms)
            .bind(kind)
            .bind(now_ms)
            .execute(conn)
            .await?;
            Ok(done.rows_affected())
        }

        pub async fn purge_events<'c>(
            conn: impl Executor<'c, Database = Db>,
            before_ms: i64,
            batch: u32,
        ) -> StoreResult<u64> {
            // Ordered by the indexed time, so that the search is a range of its index: ordered
            // by id, a purge with nothing to delete read the whole table, every minute.
            let done = sqlx::query(
                "DELETE FROM events WHERE id IN \
                 (SELECT id FROM events WHERE created_ms < $1 ORDER BY created_ms, id LIMIT $2)",
            )
            .bind(before_ms)
            .bind(i64::from(batch))
            .execute(conn)
            .await?;
            Ok(done.rows_affected())
        }

        pub async fn list_instances<'c>(
            conn: impl Executor<'c, Database = Db>,
            filter: &InstanceFilter,
            sealer: &crate::store::seal::Sealer,
        ) -> StoreResult<Vec<Instance>> {
            let mut q = sqlx::QueryBuilder::<Db>::new(concat!(
                "SELECT ",
                instance_columns!(),
                " FROM instances WHERE 1 = 1"
            ));
            if let Some(state) = &filter.state {
                // Unknown names are refused by the API before they get here.
                if let Some((_, sql)) = super::STATE_FILTERS.iter().find(|(name, _)| name == state) {
                    q.push(" AND ").push(*sql);
                }
            }
            if let Some(customer) = &filter.customer_id {
                q.push(" AND customer_id = ").push_bind(customer.clone());
            }
            if let Some(order) = &filter.order_id {
                q.push(" AND order_id = ").push_bind(order.clone());
            }
            if let Some(test) = filter.test {
                q.push(" AND test = ").push_bind(test);
            }
            if let Some((created_ms, id)) = &filter.before {
                q.push(" AND (created_ms < ")
                    .push_bind(*created_ms)
                    .push(" OR (created_ms = ")
                    .push_bind(*created_ms)
                    .push(" AND instance_id < ")
                    .push_bind(id.clone())
                    .push("))");
            }
            q.push(" ORDER BY created_ms DESC, instance_id DESC LIMIT ")
                .push_bind(i64::from(filter.limit));
            let rows: Vec<InstanceRow> = q.build_query_as().fetch_all(conn).await?;
            rows.into_iter().map(|r| r.into_instance(sealer)).collect()
        }
    };
}

/// PostgreSQL: an event is shown once every transaction older than its own has ended, so
/// that one committing late with a smaller id is never passed over by a reader's cursor.
pub(super) mod pg {
    queries!(
        sqlx::Postgres,
        "txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
    );
}

/// SQLite: one writer at a time, so what is committed is already in order.
pub(super) mod lite {
    queries!(sqlx::Sqlite, "1 = 1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor { txid: 812, id: 40 };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in ["", "12", "a-b", "1-", "-1-2"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_envelope_carries_the_documented_fields() {
        let e = StoredEvent {
            id: 1,
            event_id: "evt_1".into(),
            kind: "instance.created".into(),
            subject: "instance:i1".into(),
            sequence: 1,
            test: true,
            snapshot: r#"{"instance":{"id":"i1"}}"#.into(),
            created_ms: 1_764_576_000_123,
            txid: 0,
        };
        assert_eq!(
            String::from_utf8(e.body()).unwrap(),
            r#"{"data":{"eventId":"evt_1","instance":{"id":"i1"},"sequence":1,"subject":"instance:i1","test":true},"timestamp":"2025-12-01T08:00:00.123Z","type":"instance.created"}"#
        );
    }
}
