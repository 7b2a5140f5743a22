//! Keeping secrets and personal data encrypted at rest once a database created by an
//! older release (or sealed under an older data key) is opened: the start-up pass that
//! seals what is still readable, and the purge of buyer personal data after its
//! retention. SQL written once, expanded for each backend by `queries!`, with the one
//! dialect difference (PostgreSQL locks the rows it rewrites) passed in.

use super::rows::{APP_INFO, AtRest, BUYER_DATA, ORDER_BUYER_INFO, PERSONAL_DETAILS};
use super::seal::{Sealer, place};
use super::{StoreError, StoreResult};
use serde_json::{Map, Value};

/// What the start-up pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed {
    /// `false` when the database said this data key had sealed everything already.
    pub ran: bool,
    pub instances: u64,
    pub answers: u64,
    pub order_lines: u64,
    /// Audit copies of answers redacted (records of releases before redaction).
    pub audit_copies: u64,
}

/// Rows read and rewritten per transaction, so that the pass never holds the (SQLite)
/// writer long enough to delay a callback.
const BATCH: i64 = 200;

fn corrupt(what: String) -> StoreError {
    StoreError::Corrupt(what)
}

/// An instance's sealed columns rewritten under the current key: the app info sealed,
/// and the personal entries of the details (plain in older releases) moved into the
/// sealed buyer data. `None` when nothing changes.
#[expect(clippy::expect_used, reason = "JSON maps serialise")]
fn reseal_instance(
    sealer: &Sealer,
    id: &str,
    app_info: Option<&str>,
    details: &str,
    buyer_data: Option<&str>,
) -> StoreResult<Option<AtRest>> {
    let mut details: Map<String, Value> =
        serde_json::from_str(details).map_err(|_| corrupt(format!("instance {id}: details")))?;
    let mut personal: Map<String, Value> = match buyer_data {
        Some(sealed) => {
            let json = sealer
                .open_text(&place(BUYER_DATA, &[id]), sealed)
                .map_err(|e| corrupt(e.to_string()))?;
            serde_json::from_str(&json)
                .map_err(|_| corrupt(format!("instance {id}: buyer_data")))?
        }
        None => Map::new(),
    };
    let moved: Vec<(String, Value)> = PERSONAL_DETAILS
        .iter()
        .filter_map(|name| details.remove_entry(*name))
        .collect();
    let app_info_current = app_info.is_none_or(|v| sealer.is_current(v.as_bytes()));
    let buyer_current = buyer_data.is_none_or(|v| sealer.is_current(v.as_bytes()));
    if moved.is_empty() && app_info_current && buyer_current {
        return Ok(None);
    }
    personal.extend(moved);
    let app_info = match app_info {
        Some(stored) => {
            let aad = place(APP_INFO, &[id]);
            let plain = sealer
                .open_text(&aad, stored)
                .map_err(|e| corrupt(e.to_string()))?;
            Some(sealer.seal_text(&aad, &plain))
        }
        None => None,
    };
    let buyer_data = (!personal.is_empty()).then(|| {
        sealer.seal_text(
            &place(BUYER_DATA, &[id]),
            &serde_json::to_string(&personal).expect("a JSON map serialises"),
        )
    });
    Ok(Some(AtRest {
        details: serde_json::to_string(&details).expect("a JSON map serialises"),
        app_info,
        buyer_data,
    }))
}

/// An order line's `order_info` and sealed `buyer_info` under the current key, with a
/// plain `buyerInfo` (older releases) moved out of `order_info`; `None` when nothing
/// changes.
#[expect(clippy::expect_used, reason = "JSON maps serialise")]
fn reseal_order_line(
    sealer: &Sealer,
    (order_id, line_id): (&str, &str),
    order_info: Option<&str>,
    buyer_info: Option<&str>,
) -> StoreResult<Option<(Option<String>, Option<String>)>> {
    let aad = place(ORDER_BUYER_INFO, &[order_id, line_id]);
    let mut info: Option<Map<String, Value>> =
        order_info.and_then(|t| serde_json::from_str(t).ok());
    let plain_buyer = info.as_mut().and_then(|i| i.remove("buyerInfo"));
    let buyer_current = buyer_info.is_none_or(|v| sealer.is_current(v.as_bytes()));
    if plain_buyer.is_none() && buyer_current {
        return Ok(None);
    }
    let buyer = match (plain_buyer, buyer_info) {
        (Some(plain), _) => serde_json::to_string(&plain).expect("JSON serialises"),
        (None, Some(sealed)) => sealer
            .open_text(&aad, sealed)
            .map_err(|e| corrupt(e.to_string()))?,
        (None, None) => return Ok(None),
    };
    let order_info = match info {
        Some(info) => Some(serde_json::to_string(&info).expect("a JSON map serialises")),
        None => order_info.map(str::to_owned),
    };
    Ok(Some((order_info, Some(sealer.seal_text(&aad, &buyer)))))
}

macro_rules! queries {
    ($db:ty, $lock:expr) => {
        use super::{BATCH, Sealed, reseal_instance, reseal_order_line};
        use crate::store::seal::{Sealer, place};
        use crate::store::{StoreError, StoreResult};
        use sqlx::{Executor, Pool};

        type Db = $db;

        /// A writer's turn (SQLite), taken around each write transaction.
        type Turn<'a> = Option<&'a tokio::sync::Mutex<()>>;

        /// The pass of [`crate::store::Store::seal_at_rest`].
        pub async fn seal_all(
            pool: &Pool<Db>,
            turn: Turn<'_>,
            sealer: &Sealer,
            now_ms: i64,
        ) -> StoreResult<Sealed> {
            let done: Option<(String,)> =
                sqlx::query_as("SELECT key_id FROM at_rest WHERE id = 1")
                    .fetch_optional(pool)
                    .await?;
            let mut sealed = Sealed::default();
            if done.is_some_and(|(id,)| id == sealer.current_id()) {
                return Ok(sealed);
            }
            sealed.ran = true;
            sealed.instances = instances(pool, turn, sealer).await?;
            sealed.answers = answers(pool, turn, sealer).await?;
            sealed.order_lines = order_lines(pool, turn, sealer).await?;
            sealed.audit_copies = audit_copies(pool, turn).await?;
            let _turn = match turn {
                Some(t) => Some(t.lock().await),
                None => None,
            };
            sqlx::query(
                "INSERT INTO at_rest (id, key_id, sealed_ms) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET key_id = excluded.key_id, sealed_ms = excluded.sealed_ms",
            )
            .bind(sealer.current_id())
            .bind(now_ms)
            .execute(pool)
            .await?;
            Ok(sealed)
        }

        async fn instances(pool: &Pool<Db>, turn: Turn<'_>, sealer: &Sealer) -> StoreResult<u64> {
            let (mut after, mut rewritten) = (String::new(), 0);
            loop {
                let _turn = match turn {
                    Some(t) => Some(t.lock().await),
                    None => None,
                };
                let mut tx = pool.begin().await?;
                let sql = format!(
                    "SELECT instance_id, app_info, details, buyer_data FROM instances \
                     WHERE instance_id > $1 ORDER BY instance_id LIMIT $2{}",
                    $lock
                );
                let rows: Vec<(String, Option<String>, String, Option<String>)> =
                    sqlx::query_as(&sql)
                        .bind(&after)
                        .bind(BATCH)
                        .fetch_all(&mut *tx)
                        .await?;
                for (id, app_info, details, buyer_data) in &rows {
                    if let Some(at_rest) = reseal_instance(
                        sealer,
                        id,
                        app_info.as_deref(),
                        details,
                        buyer_data.as_deref(),
                    )? {
                        sqlx::query(
                            "UPDATE instances SET app_info = $1, details = $2, buyer_data = $3 \
                             WHERE instance_id = $4",
                        )
                        .bind(at_rest.app_info)
                        .bind(at_rest.details)
                        .bind(at_rest.buyer_data)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                        rewritten += 1;
                    }
                }
                tx.commit().await?;
                match rows.last() {
                    Some(last) if rows.len() as i64 == BATCH => after.clone_from(&last.0),
                    _ => return Ok(rewritten),
                }
            }
        }

        async fn answers(pool: &Pool<Db>, turn: Turn<'_>, sealer: &Sealer) -> StoreResult<u64> {
            let (mut after, mut rewritten) = ((String::new(), String::new()), 0);
            loop {
                let _turn = match turn {
                    Some(t) => Some(t.lock().await),
                    None => None,
                };
                let mut tx = pool.begin().await?;
                let sql = format!(
                    "SELECT scope, key, body FROM idempotency WHERE scope > $1 OR (scope = $1 AND key > $2) \
                     ORDER BY scope, key LIMIT $3{}",
                    $lock
                );
                let rows: Vec<(String, String, Option<Vec<u8>>)> = sqlx::query_as(&sql)
                    .bind(&after.0)
                    .bind(&after.1)
                    .bind(BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
                for (scope, key, body) in &rows {
                    let Some(body) = body else { continue };
                    if sealer.is_current(body) {
                        continue;
                    }
                    let aad = place(crate::store::rows::IDEMPOTENCY_BODY, &[scope, key]);
                    let plain = sealer
                        .open(&aad, body)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    sqlx::query("UPDATE idempotency SET body = $1 WHERE scope = $2 AND key = $3")
                        .bind(sealer.seal(&aad, &plain).into_bytes())
                        .bind(scope)
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                    rewritten += 1;
                }
                tx.commit().await?;
                match rows.last() {
                    Some(last) if rows.len() as i64 == BATCH => {
                        after = (last.0.clone(), last.1.clone())
                    }
                    _ => return Ok(rewritten),
                }
            }
        }

        async fn order_lines(pool: &Pool<Db>, turn: Turn<'_>, sealer: &Sealer) -> StoreResult<u64> {
            let (mut after, mut rewritten) = ((String::new(), String::new()), 0);
            loop {
                let _turn = match turn {
                    Some(t) => Some(t.lock().await),
                    None => None,
                };
                let mut tx = pool.begin().await?;
                let sql = format!(
                    "SELECT order_id, order_line_id, order_info, buyer_info FROM order_lines \
                     WHERE order_id > $1 OR (order_id = $1 AND order_line_id > $2) \
                     ORDER BY order_id, order_line_id LIMIT $3{}",
                    $lock
                );
                let rows: Vec<(String, String, Option<String>, Option<String>)> =
                    sqlx::query_as(&sql)
                        .bind(&after.0)
                        .bind(&after.1)
                        .bind(BATCH)
                        .fetch_all(&mut *tx)
                        .await?;
                for (order_id, line_id, info, buyer) in &rows {
                    if let Some((info, buyer)) = reseal_order_line(
                        sealer,
                        (order_id, line_id),
                        info.as_deref(),
                        buyer.as_deref(),
                    )? {
                        sqlx::query(
                            "UPDATE order_lines SET order_info = $1, buyer_info = $2 \
                             WHERE order_id = $3 AND order_line_id = $4",
                        )
                        .bind(info)
                        .bind(buyer)
                        .bind(order_id)
                        .bind(line_id)
                        .execute(&mut *tx)
                        .await?;
                        rewritten += 1;
                    }
                }
                tx.commit().await?;
                match rows.last() {
                    Some(last) if rows.len() as i64 == BATCH => {
                        after = (last.0.clone(), last.1.clone())
                    }
                    _ => return Ok(rewritten),
                }
            }
        }

        /// Records of older releases kept the exact answer: its hash is noted and the
        /// copy redacted. Not tied to the key, so only rows without a hash are read.
        async fn audit_copies(pool: &Pool<Db>, turn: Turn<'_>) -> StoreResult<u64> {
            let mut rewritten = 0;
            loop {
                let _turn = match turn {
                    Some(t) => Some(t.lock().await),
                    None => None,
                };
                let mut tx = pool.begin().await?;
                let sql = format!(
                    "SELECT id, response_body FROM callbacks WHERE response_sha256 IS NULL \
                     ORDER BY id LIMIT $1{}",
                    $lock
                );
                let rows: Vec<(i64, Vec<u8>)> =
                    sqlx::query_as(&sql).bind(BATCH).fetch_all(&mut *tx).await?;
                for (id, body) in &rows {
                    sqlx::query(
                        "UPDATE callbacks SET response_body = $1, response_sha256 = $2 WHERE id = $3",
                    )
                    .bind(crate::protocol::reply::redact_credentials(body).as_ref())
                    .bind(crate::protocol::crypto::sha256_hex(body))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                rewritten += rows.len() as u64;
                if (rows.len() as i64) < BATCH {
                    return Ok(rewritten);
                }
            }
        }

        /// See [`crate::store::Ops::purge_buyer_data`].
        pub async fn purge_buyer_data<'c>(
            conn: impl Executor<'c, Database = Db> + Copy,
            released_before_ms: i64,
            batch: u32,
        ) -> StoreResult<u64> {
            // The order lines first: they are found through the instances still holding
            // buyer data, which the second statement clears.
            sqlx::query(
                "UPDATE order_lines SET buyer_info = NULL WHERE buyer_info IS NOT NULL AND EXISTS \
                 (SELECT 1 FROM instances i WHERE i.order_id = order_lines.order_id \
                 AND i.order_line_id = order_lines.order_line_id AND i.released_ms < $1)",
            )
            .bind(released_before_ms)
            .execute(conn)
            .await?;
            // Ordered by the indexed time, so that the search is a range of its index: ordered
            // by id, a purge with nothing to delete read the whole table, every minute.
            let done = sqlx::query(
                "UPDATE instances SET buyer_data = NULL WHERE instance_id IN \
                 (SELECT instance_id FROM instances WHERE buyer_data IS NOT NULL AND released_ms < $1 \
                 ORDER BY released_ms, instance_id LIMIT $2)",
            )
            .bind(released_before_ms)
            .bind(i64::from(batch))
            .execute(conn)
            .await?;
            Ok(done.rows_affected())
        }
    };
}

/// PostgreSQL: the rows being rewritten are locked, so that a callback changing one
/// meanwhile is not overwritten with what the pass read.
pub(super) mod pg {
    queries!(sqlx::Postgres, " FOR UPDATE");
}

/// SQLite: every write transaction holds the one writer lock (and this process's turn).
pub(super) mod lite {
    queries!(sqlx::Sqlite, "");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::seal::DataKey;

    fn sealer() -> Sealer {
        Sealer::new(DataKey::from_bytes(&[3; 32]), Vec::new())
    }

    #[test]
    fn plain_personal_details_move_into_sealed_buyer_data() {
        let s = sealer();
        let AtRest {
            app_info,
            details,
            buyer_data: buyer,
        } = reseal_instance(
            &s,
            "i-1",
            Some(r#"{"password":"pw-1"}"#),
            r#"{"email":"a@b.c","trialFlag":"1"}"#,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(details, r#"{"trialFlag":"1"}"#);
        let app_info = app_info.unwrap();
        assert!(!app_info.contains("pw-1"));
        assert_eq!(
            s.open_text(&place(APP_INFO, &["i-1"]), &app_info).unwrap(),
            r#"{"password":"pw-1"}"#
        );
        let buyer = s
            .open_text(&place(BUYER_DATA, &["i-1"]), &buyer.unwrap())
            .unwrap();
        assert_eq!(buyer, r#"{"email":"a@b.c"}"#);
        // Sealed under the current key: a second pass has nothing to do.
        assert!(
            reseal_instance(&s, "i-1", Some(&app_info), &details, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn plain_buyer_info_of_an_order_line_is_sealed_apart() {
        let s = sealer();
        let (info, buyer) = reseal_order_line(
            &s,
            ("o", "l"),
            Some(r#"{"buyerInfo":{"mobilePhone":"138"},"orderId":"o"}"#),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(info.as_deref(), Some(r#"{"orderId":"o"}"#));
        let aad = place(ORDER_BUYER_INFO, &["o", "l"]);
        assert_eq!(
            s.open_text(&aad, &buyer.unwrap()).unwrap(),
            r#"{"mobilePhone":"138"}"#
        );
    }
}
