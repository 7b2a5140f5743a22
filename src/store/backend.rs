//! The trait implementations both backends share, written once: each method calls the
//! query module of the backend's dialect.

/// Implements the subtraits of [`crate::store::Store`] for `$store` and the shared
/// methods of [`crate::store::Tx`] for `$tx`, with the queries of the dialect modules
/// named `$q` (`pg` or `lite`).
///
/// - `$store` has fields `pool` and `sealer`, and a method `write_tx` that begins a
///   transaction for a batch of writes outside a callback.
/// - `writer` names the store's field holding the writers' turn, when writes must take
///   it first (SQLite); empty when the database orders writers itself (PostgreSQL).
/// - `claims` names the pool the worker's claims run on (PostgreSQL's has planner
///   settings of its own, [`crate::store::PG_CLAIM_SETTINGS`]).
/// - `$tx` holds its transaction in field `$conn`, its sealer in field `$sealer`, and
///   whether it enqueued a job in field `$enqueued`; `own` holds the methods of `Tx` the
///   backend writes itself.
macro_rules! shared_impls {
    (
        store: $store:ty,
        writer: [$($writer:ident)?],
        claims: $claims:ident,
        tx: $tx:ty { conn: $conn:tt, sealer: $sealer:tt, enqueued: $enqueued:tt },
        dialect: $q:ident,
        own: { $($own:tt)* }
    ) => {
        // In a block of its own, so that these names stay out of the backend's module.
        const _: () = {
            use $crate::domain::instance::Instance;
            use $crate::domain::license_code::LicenseCode;
            use $crate::domain::license_request::LicenseRequest;
            use $crate::store as s;

            #[async_trait::async_trait]
            impl s::Records for $store {
                async fn instance(&self, id: &str) -> s::StoreResult<Option<Instance>> {
                    s::records::$q::instance(&self.pool, id, false, &self.sealer).await
                }

                async fn instances_for_order(
                    &self,
                    order_id: &str,
                ) -> s::StoreResult<Vec<Instance>> {
                    s::records::$q::instances_for_order(&self.pool, order_id, &self.sealer).await
                }

                async fn list_instances(
                    &self,
                    filter: &s::InstanceFilter,
                ) -> s::StoreResult<Vec<Instance>> {
                    s::events::$q::list_instances(&self.pool, filter, &self.sealer).await
                }

                async fn order_lines(
                    &self,
                    order_id: &str,
                ) -> s::StoreResult<Vec<s::OrderLineRecord>> {
                    s::records::$q::order_lines(&self.pool, order_id, &self.sealer).await
                }

                async fn insert_license_code(&self, code: &LicenseCode) -> s::StoreResult<bool> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::records::$q::insert_license_code(&self.pool, code).await
                }

                async fn license_code(
                    &self,
                    license: &str,
                ) -> s::StoreResult<Option<LicenseCode>> {
                    s::records::$q::license_code(&self.pool, license, false).await
                }

                async fn begin_license_activation(
                    &self,
                    license: &str,
                    now_ms: i64,
                ) -> s::StoreResult<()> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::records::$q::begin_license_activation(&self.pool, license, now_ms).await
                }

                async fn complete_license_activation(
                    &self,
                    license: &str,
                    now_ms: i64,
                ) -> s::StoreResult<()> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::records::$q::complete_license_activation(&self.pool, license, now_ms).await
                }

                async fn unfinished_license_activations(
                    &self,
                ) -> s::StoreResult<Vec<(String, i64)>> {
                    s::records::$q::unfinished_license_activations(&self.pool).await
                }

                async fn code_activations(
                    &self,
                    order_id: &str,
                ) -> s::StoreResult<Vec<s::CodeActivation>> {
                    s::ops::$q::code_activations(&self.pool, order_id).await
                }
            }

            #[async_trait::async_trait]
            impl s::Events for $store {
                async fn events_after(
                    &self,
                    after: s::Cursor,
                    limit: u32,
                ) -> s::StoreResult<Vec<s::StoredEvent>> {
                    s::events::$q::events_after(&self.pool, after, limit, &self.sealer).await
                }

                async fn event(&self, event_id: &str) -> s::StoreResult<Option<s::StoredEvent>> {
                    s::events::$q::event(&self.pool, event_id, &self.sealer).await
                }

                async fn events_of(&self, subject: &str) -> s::StoreResult<Vec<s::StoredEvent>> {
                    s::events::$q::events_of(&self.pool, subject, &self.sealer).await
                }

                async fn event_attempts(&self, event_id: &str) -> s::StoreResult<Vec<s::Attempt>> {
                    s::events::$q::attempts(&self.pool, event_id).await
                }

                async fn record_attempt(&self, attempt: &s::Attempt) -> s::StoreResult<()> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::events::$q::insert_attempt(&self.pool, attempt).await
                }

                async fn webhook_pause(&self) -> s::StoreResult<Option<s::Pause>> {
                    s::events::$q::pause(&self.pool).await
                }

                async fn pause_webhook(&self, paused_ms: i64, reason: &str) -> s::StoreResult<()> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::events::$q::set_pause(&self.pool, paused_ms, reason).await
                }

                async fn resume_webhook(&self, kind: &str, now_ms: i64) -> s::StoreResult<u64> {
                    $(let _turn = self.$writer.lock().await;)?
                    let mut tx = self.write_tx().await?;
                    s::events::$q::clear_pause(&mut *tx).await?;
                    // Waiting ones first: the parked ones come back due on the database's
                    // clock, which may be ahead of `now_ms`, and would be counted twice.
                    let waiting = s::events::$q::due_now(&mut *tx, kind, now_ms).await?;
                    let parked = s::queue::$q::requeue_failed(&mut *tx, Some(kind), now_ms).await?;
                    tx.commit().await?;
                    Ok(parked + waiting)
                }
            }

            // Writes take the writers' turn first, where there is one.
            #[async_trait::async_trait]
            impl s::Queue for $store {
                async fn claim_jobs(
                    &self,
                    lease: &s::Lease,
                    limit: u32,
                ) -> s::StoreResult<Vec<s::Job>> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::queue::$q::claim(&self.$claims, lease, limit).await
                }

                async fn finish_job(&self, id: i64, token: &str, now_ms: i64) -> s::StoreResult<bool> {
                    $(let _turn = self.$writer.lock().await;)?
                    let mut conn = self.pool.acquire().await?;
                    s::queue::$q::finish(&mut conn, id, token, now_ms).await
                }

                async fn fail_job(&self, failure: &s::JobFailure<'_>) -> s::StoreResult<bool> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::queue::$q::fail(&self.pool, failure).await
                }

                async fn jobs_about(&self, subject: &str) -> s::StoreResult<Vec<s::Job>> {
                    s::queue::$q::about(&self.pool, subject).await
                }

                async fn job(&self, id: i64) -> s::StoreResult<Option<s::Job>> {
                    s::queue::$q::get(&self.pool, id).await
                }

                async fn failed_jobs(&self, limit: u32) -> s::StoreResult<Vec<s::Job>> {
                    s::queue::$q::failed(&self.pool, limit).await
                }

                async fn requeue_job(&self, id: i64, now_ms: i64) -> s::StoreResult<bool> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::queue::$q::requeue(&self.pool, id, now_ms).await
                }

                async fn requeue_failed(
                    &self,
                    kind: Option<&str>,
                    now_ms: i64,
                ) -> s::StoreResult<u64> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::queue::$q::requeue_failed(&self.pool, kind, now_ms).await
                }

                async fn job_by_key(&self, kind: &str, key: &str) -> s::StoreResult<Option<s::Job>> {
                    s::queue::$q::by_key(&self.pool, kind, key).await
                }

                async fn purge_jobs(&self, before_ms: i64, batch: u32) -> s::StoreResult<u64> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::queue::$q::purge(&self.pool, before_ms, batch).await
                }

                async fn release_waiting(&self, now_ms: i64) -> s::StoreResult<u64> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::queue::$q::release_waiting(&self.pool, now_ms).await
                }
            }

            #[async_trait::async_trait]
            impl s::Audit for $store {
                async fn record_callback(&self, record: &s::CallbackRecord) -> s::StoreResult<()> {
                    $(let _turn = self.$writer.lock().await;)?
                    let mut conn = self.pool.acquire().await?;
                    s::audit::$q::insert_callback(&mut *conn, record).await
                }

                async fn record_callbacks(
                    &self,
                    records: &[s::CallbackRecord],
                ) -> s::StoreResult<()> {
                    // One turn of the writer and one commit for the whole batch.
                    $(let _turn = self.$writer.lock().await;)?
                    let mut tx = self.write_tx().await?;
                    for record in records {
                        s::audit::$q::insert_callback(&mut *tx, record).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn recent_callbacks(
                    &self,
                    limit: u32,
                ) -> s::StoreResult<Vec<s::CallbackRecord>> {
                    s::audit::$q::recent_callbacks(&self.pool, limit).await
                }

                async fn callback(&self, id: i64) -> s::StoreResult<Option<s::StoredCallback>> {
                    s::ops::$q::callback(&self.pool, id).await
                }

                async fn callbacks_of_order(
                    &self,
                    order_id: &str,
                ) -> s::StoreResult<Vec<s::StoredCallback>> {
                    s::ops::$q::callbacks_of_order(&self.pool, order_id).await
                }

                async fn refused_callbacks(
                    &self,
                    since_ms: i64,
                    limit: u32,
                ) -> s::StoreResult<Vec<s::StoredCallback>> {
                    s::ops::$q::refused_callbacks(&self.pool, since_ms, limit).await
                }

                async fn callback_counts(
                    &self,
                    since_ms: i64,
                ) -> s::StoreResult<Vec<s::CallbackCount>> {
                    s::ops::$q::callback_counts(&self.pool, since_ms).await
                }

                async fn failing_orders(
                    &self,
                    since_ms: i64,
                ) -> s::StoreResult<Vec<s::FailingOrder>> {
                    s::ops::$q::failing_orders(&self.pool, since_ms).await
                }
            }

            #[async_trait::async_trait]
            impl s::Ops for $store {
                async fn operations(&self) -> s::StoreResult<s::Operations> {
                    s::ops::$q::operations(&self.pool).await
                }

                async fn search_instances(
                    &self,
                    search: &s::Search,
                ) -> s::StoreResult<Vec<Instance>> {
                    s::ops::$q::search_instances(&self.pool, search, &self.sealer).await
                }

                async fn search_orders(
                    &self,
                    search: &s::Search,
                ) -> s::StoreResult<Vec<s::OrderSummary>> {
                    s::ops::$q::search_orders(&self.pool, search).await
                }

                async fn purge_nonces(&self) -> s::StoreResult<u64> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::audit::$q::purge_nonces(&self.pool).await
                }

                async fn purge_callbacks(&self, before_ms: i64, batch: u32) -> s::StoreResult<u64> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::audit::$q::purge_callbacks(&self.pool, before_ms, batch).await
                }

                async fn purge_events(&self, before_ms: i64, batch: u32) -> s::StoreResult<u64> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::events::$q::purge_events(&self.pool, before_ms, batch).await
                }

                async fn purge_buyer_data(
                    &self,
                    released_before_ms: i64,
                    batch: u32,
                ) -> s::StoreResult<u64> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::at_rest::$q::purge_buyer_data(&self.pool, released_before_ms, batch).await
                }
            }

            #[async_trait::async_trait]
            impl s::Usage for $store {
                async fn usage_windows(
                    &self,
                    instance_id: &str,
                    limit: u32,
                ) -> s::StoreResult<Vec<s::UsageWindow>> {
                    s::usage::$q::windows(&self.pool, instance_id, limit).await
                }

                async fn closed_usage_windows(
                    &self,
                    limit: u32,
                ) -> s::StoreResult<Vec<s::UsageWindow>> {
                    s::usage::$q::closed(&self.pool, limit).await
                }

                async fn usage_carried(
                    &self,
                    instance_id: &str,
                ) -> s::StoreResult<Vec<s::Carried>> {
                    s::usage::$q::carried(&self.pool, instance_id).await
                }
            }

            #[async_trait::async_trait]
            impl s::LicenseRequests for $store {
                async fn license_request(
                    &self,
                    event_id: &str,
                ) -> s::StoreResult<Option<LicenseRequest>> {
                    s::license_requests::$q::get(&self.pool, event_id, false).await
                }

                async fn license_requests(
                    &self,
                    instance_id: Option<&str>,
                    limit: u32,
                ) -> s::StoreResult<Vec<LicenseRequest>> {
                    s::license_requests::$q::list(&self.pool, instance_id, limit).await
                }

                async fn license_uploads(
                    &self,
                    event_id: &str,
                ) -> s::StoreResult<Vec<s::LicenseUpload>> {
                    s::license_requests::$q::uploads(&self.pool, event_id).await
                }

                async fn record_license_upload(
                    &self,
                    upload: &s::LicenseUpload,
                ) -> s::StoreResult<()> {
                    $(let _turn = self.$writer.lock().await;)?
                    s::license_requests::$q::insert_upload(&self.pool, upload).await
                }
            }

            #[async_trait::async_trait]
            impl s::Tx for $tx {
                async fn claim_nonce(
                    &mut self,
                    nonce: &str,
                    expires_ms: i64,
                ) -> s::StoreResult<bool> {
                    s::audit::$q::claim_nonce(&mut *self.$conn, nonce, expires_ms).await
                }

                async fn claim_idempotency(
                    &mut self,
                    key: &s::IdempotencyKey,
                    now_ms: i64,
                ) -> s::StoreResult<s::Claim> {
                    s::audit::$q::claim_idempotency(
                        &mut self.$conn,
                        key,
                        now_ms,
                        &self.$sealer,
                    )
                    .await
                }

                async fn complete_idempotency(
                    &mut self,
                    key: &s::IdempotencyKey,
                    answer: &s::StoredAnswer,
                ) -> s::StoreResult<()> {
                    s::audit::$q::complete_idempotency(&mut *self.$conn, key, answer, &self.$sealer)
                        .await
                }

                async fn abandon_idempotency(
                    &mut self,
                    key: &s::IdempotencyKey,
                ) -> s::StoreResult<()> {
                    s::audit::$q::abandon_idempotency(&mut *self.$conn, key).await
                }

                async fn insert_instance(&mut self, instance: &Instance) -> s::StoreResult<bool> {
                    s::records::$q::insert_instance(&mut *self.$conn, instance, &self.$sealer).await
                }

                async fn instance_for_update(
                    &mut self,
                    id: &str,
                ) -> s::StoreResult<Option<Instance>> {
                    s::records::$q::instance(&mut *self.$conn, id, true, &self.$sealer).await
                }

                async fn instance_for_order_line(
                    &mut self,
                    order_id: &str,
                    order_line_id: &str,
                ) -> s::StoreResult<Option<Instance>> {
                    s::records::$q::instance_for_order_line(
                        &mut *self.$conn,
                        order_id,
                        order_line_id,
                        &self.$sealer,
                    )
                    .await
                }

                async fn instances(&mut self, ids: &[String]) -> s::StoreResult<Vec<Instance>> {
                    s::records::$q::instances(&mut *self.$conn, ids, &self.$sealer).await
                }

                async fn update_instance(&mut self, instance: &Instance) -> s::StoreResult<()> {
                    s::records::$q::update_instance(&mut *self.$conn, instance, &self.$sealer).await
                }

                async fn license_code_for_update(
                    &mut self,
                    license: &str,
                ) -> s::StoreResult<Option<LicenseCode>> {
                    s::records::$q::license_code(&mut *self.$conn, license, true).await
                }

                async fn update_license_code(&mut self, code: &LicenseCode) -> s::StoreResult<()> {
                    s::records::$q::update_license_code(&mut *self.$conn, code).await
                }

                async fn record_callback(
                    &mut self,
                    record: &s::CallbackRecord,
                ) -> s::StoreResult<()> {
                    s::audit::$q::insert_callback(&mut *self.$conn, record).await
                }

                async fn record_order_line(
                    &mut self,
                    line: &s::OrderLineRecord,
                ) -> s::StoreResult<bool> {
                    s::records::$q::record_order_line(&mut *self.$conn, line, &self.$sealer).await
                }

                async fn store_order_info(
                    &mut self,
                    line: &s::OrderLineRecord,
                ) -> s::StoreResult<()> {
                    s::records::$q::store_order_info(&mut *self.$conn, line, &self.$sealer).await
                }

                async fn record_event(&mut self, event: &s::NewEvent) -> s::StoreResult<()> {
                    s::events::$q::insert_event(&mut *self.$conn, event, &self.$sealer).await
                }

                async fn record_attempt(&mut self, attempt: &s::Attempt) -> s::StoreResult<()> {
                    s::events::$q::insert_attempt(&mut *self.$conn, attempt).await
                }

                async fn enqueue_job(&mut self, job: &s::NewJob) -> s::StoreResult<bool> {
                    let enqueued = s::queue::$q::enqueue(&mut *self.$conn, job).await?;
                    self.$enqueued |= enqueued;
                    Ok(enqueued)
                }

                async fn finish_job(
                    &mut self,
                    id: i64,
                    token: &str,
                    now_ms: i64,
                ) -> s::StoreResult<bool> {
                    s::queue::$q::finish(&mut *self.$conn, id, token, now_ms).await
                }

                async fn claim_usage_record(
                    &mut self,
                    record: &s::NewUsageRecord<'_>,
                ) -> s::StoreResult<Option<i64>> {
                    s::usage::$q::claim_record(&mut self.$conn, record).await
                }

                async fn add_usage(&mut self, window: &s::UsageWindow) -> s::StoreResult<bool> {
                    s::usage::$q::add(&mut *self.$conn, window).await
                }

                async fn carry_usage_record(
                    &mut self,
                    instance_id: &str,
                    record_id: &str,
                    window_begin_ms: i64,
                ) -> s::StoreResult<()> {
                    s::usage::$q::carry(
                        &mut *self.$conn,
                        instance_id,
                        record_id,
                        window_begin_ms,
                    )
                    .await
                }

                async fn ended_usage_windows(
                    &mut self,
                    ended_by_ms: i64,
                ) -> s::StoreResult<Vec<s::UsageWindow>> {
                    s::usage::$q::ended(&mut *self.$conn, ended_by_ms).await
                }

                async fn close_usage_window(
                    &mut self,
                    window: &s::UsageWindow,
                ) -> s::StoreResult<bool> {
                    s::usage::$q::close(&mut *self.$conn, window).await
                }

                async fn settle_usage_window(
                    &mut self,
                    window: &s::UsageWindow,
                ) -> s::StoreResult<bool> {
                    s::usage::$q::settle(&mut *self.$conn, window).await
                }

                async fn unpark_usage(
                    &mut self,
                    instance_id: Option<&str>,
                    now_ms: i64,
                ) -> s::StoreResult<u64> {
                    s::usage::$q::unpark(&mut *self.$conn, instance_id, now_ms).await
                }

                async fn usage_totals(
                    &mut self,
                    ids: &[String],
                ) -> s::StoreResult<Vec<s::UsageTotal>> {
                    s::usage::$q::totals(&mut *self.$conn, ids).await
                }

                async fn replace_package_usage(
                    &mut self,
                    instance_id: &str,
                    entries: &[s::PackageUsage],
                ) -> s::StoreResult<()> {
                    s::usage::$q::replace_package(&mut self.$conn, instance_id, entries).await
                }

                async fn package_usage(
                    &mut self,
                    ids: &[String],
                ) -> s::StoreResult<Vec<s::PackageUsage>> {
                    s::usage::$q::package(&mut *self.$conn, ids).await
                }

                async fn license_request_for_update(
                    &mut self,
                    event_id: &str,
                ) -> s::StoreResult<Option<LicenseRequest>> {
                    s::license_requests::$q::get(&mut *self.$conn, event_id, true).await
                }

                async fn insert_license_request(
                    &mut self,
                    request: &LicenseRequest,
                ) -> s::StoreResult<bool> {
                    s::license_requests::$q::insert(&mut *self.$conn, request).await
                }

                async fn update_license_request(
                    &mut self,
                    request: &LicenseRequest,
                ) -> s::StoreResult<()> {
                    s::license_requests::$q::update(&mut *self.$conn, request).await
                }

                $($own)*
            }
        };
    };
}
pub(super) use shared_impls;
