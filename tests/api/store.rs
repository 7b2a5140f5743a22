//! The storage conformance suite: the same expectations of the `Store` seam, run
//! against SQLite and PostgreSQL.

use crate::helpers::{Backend, Database, open_store as open};
use crate::on_both_backends;
use koogate::domain::instance::{Family, Instance, State};
use koogate::domain::license_code::LicenseCode;
use koogate::domain::license_request::{License, LicenseRequest, RequestState};
use koogate::protocol::license_upload::Content;
use koogate::protocol::reply::AppInfo;
use koogate::store::{self, CallbackRecord, Claim, IdempotencyKey, OrderLineRecord, StoredAnswer};

on_both_backends!(
    migrating_twice_is_harmless,
    an_uncommitted_transaction_leaves_nothing,
    // Records (and the transaction's writes of them).
    instances_round_trip_every_field,
    instances_are_found_by_order_line_and_listed_newest_first,
    license_codes_and_their_activations_round_trip,
    order_lines_are_remembered_once_and_keep_what_the_order_query_answered,
    // Events.
    events_are_sequenced_per_subject_and_read_in_feed_order,
    the_webhook_pause_is_kept_and_resumed,
    delivery_attempts_are_kept_in_order,
    // Audit, with the transaction's nonces and idempotency keys.
    nonces_are_claimed_once_until_purged,
    idempotency_claims_replay_and_can_be_abandoned,
    a_callback_transaction_commits_all_or_nothing,
    concurrent_claims_of_one_key_see_one_winner,
    callbacks_round_trip,
    refused_records_are_buffered_written_in_batches_and_dropped_when_full,
    callbacks_are_found_by_order_refusal_and_result,
    // Ops.
    old_callback_records_are_purged_in_batches,
    operations_and_searches_read_what_is_stored,
    buyer_data_is_purged_after_release,
    // Usage.
    usage_is_counted_once_windowed_closed_and_settled,
    package_usage_is_replaced_and_read_in_order,
    // License requests.
    license_requests_round_trip_with_their_uploads,
    // The job queue.
    a_lane_runs_one_job_at_a_time_in_order,
);

/// `begin_callback`: what it holds back goes in together or not at all, and a twin that
/// committed first is reported at commit (PostgreSQL) or at once (SQLite), never merged.
async fn a_callback_transaction_commits_all_or_nothing(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let key = IdempotencyKey {
        scope: "saas.newInstance",
        key: "O-1/L-1".into(),
    };
    let answer = StoredAnswer {
        result_code: "000000".into(),
        instance_id: Some("i-1".into()),
        body: br#"{"resultCode":"000000"}"#.to_vec(),
    };
    let mut tx = store.begin_callback().await.unwrap();
    assert!(tx.claim_nonce("n-1", i64::MAX).await.unwrap());
    assert_eq!(tx.claim_idempotency(&key, 1).await.unwrap(), Claim::Claimed);
    assert!(tx.insert_instance(&full_instance("i-1")).await.unwrap());
    tx.complete_idempotency(&key, &answer).await.unwrap();
    for n in 0..2 {
        tx.record_event(&new_event(n, "instance:i-1", 10))
            .await
            .unwrap();
    }
    tx.record_callback(&record("r-1")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.instance("i-1").await.unwrap(),
        Some(full_instance("i-1"))
    );
    let sequences: Vec<i64> = store
        .events_of("instance:i-1")
        .await
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(sequences, [1, 2], "two events of one subject in one commit");

    // The same key again replays the stored answer.
    let mut tx = store.begin_callback().await.unwrap();
    assert_eq!(
        tx.claim_idempotency(&key, 2).await.unwrap(),
        Claim::Answered(answer.clone())
    );
    drop(tx);

    // A replayed nonce: refused at claim or at commit, and nothing of its transaction kept.
    let replayed = async {
        let mut tx = store.begin_callback().await?;
        if !tx.claim_nonce("n-1", i64::MAX).await? {
            return Ok(false);
        }
        tx.insert_instance(&full_instance("i-2")).await?;
        tx.record_callback(&record("r-2")).await?;
        tx.commit().await.map(|_| true)
    };
    match replayed.await {
        Ok(false) | Err(store::StoreError::ReplayedNonce) => {}
        other => panic!("a replayed nonce was not refused: {other:?}"),
    }
    assert_eq!(store.instance("i-2").await.unwrap(), None);

    // A twin that completed the key after it was read: nothing written, and the next
    // transaction sees the twin's answer.
    let other = IdempotencyKey {
        scope: "saas.newInstance",
        key: "O-3/L-1".into(),
    };
    let mut late = store.begin_callback().await.unwrap();
    late.claim_nonce("n-3", i64::MAX).await.unwrap();
    let first = late.claim_idempotency(&other, 3).await.unwrap();
    if first == Claim::Claimed && backend == Backend::Postgres {
        let mut twin = store.begin().await.unwrap();
        assert_eq!(
            twin.claim_idempotency(&other, 3).await.unwrap(),
            Claim::Claimed
        );
        twin.complete_idempotency(&other, &answer).await.unwrap();
        twin.commit().await.unwrap();
        late.insert_instance(&full_instance("i-3")).await.unwrap();
        late.complete_idempotency(&other, &answer).await.unwrap();
        assert!(matches!(
            late.commit().await,
            Err(store::StoreError::Conflict(_))
        ));
        assert_eq!(store.instance("i-3").await.unwrap(), None);
        let mut again = store.begin().await.unwrap();
        assert!(
            again.claim_nonce("n-3", i64::MAX).await.unwrap(),
            "the nonce was not kept"
        );
        assert_eq!(
            again.claim_idempotency(&other, 4).await.unwrap(),
            Claim::Answered(answer)
        );
    }
}

fn new_event(n: usize, subject: &str, created_ms: i64) -> store::NewEvent {
    store::NewEvent {
        event_id: format!("evt_{subject}_{n}"),
        kind: "instance.created",
        subject: subject.into(),
        test: n.is_multiple_of(2),
        snapshot: format!(r#"{{"instance":{{"n":{n}}}}}"#),
        created_ms,
    }
}

async fn events_are_sequenced_per_subject_and_read_in_feed_order(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    for (n, subject) in ["instance:a", "instance:b", "instance:a", "instance:a"]
        .iter()
        .enumerate()
    {
        // Both kinds of transaction number the same way.
        let mut tx = if n % 2 == 0 {
            store.begin().await.unwrap()
        } else {
            store.begin_callback().await.unwrap()
        };
        tx.record_event(&new_event(n, subject, 1_000 + n as i64))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let sequences = |events: Vec<store::StoredEvent>| -> Vec<i64> {
        events.iter().map(|e| e.sequence).collect()
    };
    assert_eq!(
        sequences(store.events_of("instance:a").await.unwrap()),
        [1, 2, 3]
    );
    assert_eq!(sequences(store.events_of("instance:b").await.unwrap()), [1]);
    // A rolled-back event leaves no gap and no row.
    let mut tx = store.begin().await.unwrap();
    tx.record_event(&new_event(9, "instance:a", 5_000))
        .await
        .unwrap();
    drop(tx);

    // On PostgreSQL an event shows once every older transaction of the server has ended,
    // and other tests run on the same server meanwhile.
    let all = crate::helpers::eventually("four events in the feed", || async {
        let all = store
            .events_after(store::Cursor::default(), 100)
            .await
            .unwrap();
        (all.len() == 4).then_some(all)
    })
    .await;
    let ids: Vec<&str> = all.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "evt_instance:a_0",
            "evt_instance:b_1",
            "evt_instance:a_2",
            "evt_instance:a_3"
        ]
    );
    let page = store.events_after(all[1].cursor(), 100).await.unwrap();
    assert_eq!(page.len(), 2, "the feed goes on after a cursor");
    let one = store.event("evt_instance:a_2").await.unwrap().unwrap();
    assert_eq!((one.sequence, one.test, one.created_ms), (2, true, 1_002));
    assert_eq!(one.envelope()["data"]["instance"]["n"], 2);
    assert_eq!(store.events_of("instance:a").await.unwrap().len(), 3);

    assert_eq!(
        store.purge_events(1_002, 1).await.unwrap(),
        1,
        "one per batch"
    );
    assert_eq!(store.purge_events(1_002, 10).await.unwrap(), 1);
    let left = store
        .events_after(store::Cursor::default(), 100)
        .await
        .unwrap();
    assert_eq!(left.len(), 2);
}

async fn a_lane_runs_one_job_at_a_time_in_order(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let mut tx = store.begin().await.unwrap();
    for (event, subject) in [
        ("e1", "instance:a"),
        ("e2", "instance:a"),
        ("e3", "instance:b"),
    ] {
        let job = koogate::jobs::follow_up::delivery_job(event, subject, 0);
        assert!(tx.enqueue_job(&job).await.unwrap());
    }
    tx.commit().await.unwrap();
    let lease = |token: &str| store::Lease {
        token: token.into(),
        now_ms: 10,
        duration_ms: 1_000,
    };
    let first = store.claim_job(&lease("t1")).await.unwrap().unwrap();
    let second = store.claim_job(&lease("t2")).await.unwrap().unwrap();
    assert_eq!(first.dedup_key.as_deref(), Some("e1"));
    assert_eq!(
        second.dedup_key.as_deref(),
        Some("e3"),
        "the other lane goes on"
    );
    assert!(
        store.claim_job(&lease("t3")).await.unwrap().is_none(),
        "e2 waits for e1"
    );
    // Parked, e1 still holds its lane; put back and done, it lets e2 through.
    store
        .fail_job(&store::JobFailure {
            id: first.id,
            token: "t1",
            error: "down",
            retry_in_ms: None,
            uncounted: false,
            now_ms: 11,
        })
        .await
        .unwrap();
    assert!(store.claim_job(&lease("t4")).await.unwrap().is_none());
    assert_eq!(
        store
            .requeue_failed(Some(koogate::domain::events::DELIVER_KIND), 12)
            .await
            .unwrap(),
        1
    );
    let again = store
        .claim_job(&store::Lease {
            now_ms: 20,
            ..lease("t5")
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.dedup_key.as_deref(), Some("e1"));
    assert!(store.finish_job(again.id, "t5", 21).await.unwrap());
    let next = store
        .claim_job(&store::Lease {
            now_ms: 22,
            ..lease("t6")
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.dedup_key.as_deref(), Some("e2"));
    let by_key = store
        .job_by_key(koogate::domain::events::DELIVER_KIND, "e2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_key.id, next.id);
    // Finished jobs go after the retention; unfinished ones stay whatever their age.
    assert_eq!(store.purge_jobs(1_000, 100).await.unwrap(), 1);
    assert!(store.job(again.id).await.unwrap().is_none());
    assert!(store.job(next.id).await.unwrap().is_some());
}

async fn the_webhook_pause_is_kept_and_resumed(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    assert!(store.webhook_pause().await.unwrap().is_none());
    store.pause_webhook(5, "410 Gone").await.unwrap();
    store
        .pause_webhook(9, "a second pause keeps the first")
        .await
        .unwrap();
    let pause = store.webhook_pause().await.unwrap().unwrap();
    assert_eq!((pause.paused_ms, pause.reason.as_str()), (5, "410 Gone"));
    let mut tx = store.begin().await.unwrap();
    let mut job = koogate::jobs::follow_up::delivery_job("e1", "instance:a", 0);
    // Due in an hour by the database's clock, which decides.
    job.run_at_ms = chrono::Utc::now().timestamp_millis() + 3_600_000;
    tx.enqueue_job(&job).await.unwrap();
    tx.commit().await.unwrap();
    let lease = store::Lease {
        token: "t".into(),
        now_ms: 50,
        duration_ms: 1_000,
    };
    assert!(
        store.claim_job(&lease).await.unwrap().is_none(),
        "not due yet"
    );
    assert_eq!(
        store
            .resume_webhook(koogate::domain::events::DELIVER_KIND, 50)
            .await
            .unwrap(),
        1
    );
    assert!(store.webhook_pause().await.unwrap().is_none());
    let due = store.claim_job(&lease).await.unwrap();
    assert!(
        due.is_some(),
        "a waiting delivery is due at once after resume"
    );
}

fn full_instance(id: &str) -> Instance {
    let mut i = Instance::new(
        id.into(),
        Family::SaasV1,
        "ORDER-1".into(),
        true,
        1_700_000_000_123,
    );
    i.order_line_id = Some("ORDER-1-000001".into());
    i.product_id = Some("OFFI846204237451911168".into());
    i.sku_code = Some("0a4d1578".into());
    i.charging_mode = Some("PERIOD".into());
    i.period_type = Some("year".into());
    i.period_number = Some(2);
    i.linear_value = Some("50".into());
    i.customer_id = Some("459bbbec".into());
    i.customer_name = Some("测试用户1".into());
    i.details.insert("trialFlag".into(), "1".into());
    i.state = State::Frozen;
    i.app_info = Some(AppInfo {
        front_end_url: "https://a/1".into(),
        admin_url: Some("https://a/admin".into()),
        user_name: Some("admin".into()),
        password: Some("p4ss".into()),
        memo: Some("备注".into()),
    });
    i.expire_ms = Some(1_900_000_000_000);
    i.last_order_id = Some("RENEW-1".into());
    i.updated_ms = 1_700_000_000_999;
    i.released_ms = Some(1_800_000_000_000);
    i
}

async fn instances_round_trip_every_field(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let instance = full_instance("rt-1");

    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_instance(&instance).await.unwrap());
    assert!(
        !tx.insert_instance(&instance).await.unwrap(),
        "a taken id is refused, not overwritten"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        store.instance("rt-1").await.unwrap(),
        Some(instance.clone())
    );

    let mut changed = instance.clone();
    changed.state = State::Active;
    changed.details.insert("email".into(), "a@b.c".into());
    changed.sku_code = None;
    changed.released_ms = None;
    let mut tx = store.begin().await.unwrap();
    let locked = tx.instance_for_update("rt-1").await.unwrap().unwrap();
    assert_eq!(locked, instance);
    tx.update_instance(&changed).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.instance("rt-1").await.unwrap(), Some(changed));

    let mut tx = store.begin().await.unwrap();
    tx.insert_instance(&full_instance("rt-2")).await.unwrap();
    let found = tx
        .instances(&["rt-2".into(), "missing".into(), "rt-1".into()])
        .await
        .unwrap();
    let ids: Vec<_> = found.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        ["rt-2", "rt-1"],
        "in the order asked, missing ones left out"
    );
    tx.commit().await.unwrap();
    assert_eq!(store.instances_for_order("ORDER-1").await.unwrap().len(), 2);
}

async fn nonces_are_claimed_once_until_purged(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    // Expiry is judged on the database's clock, which is the real one here.
    let now = chrono::Utc::now().timestamp_millis();
    let mut tx = store.begin().await.unwrap();
    assert!(tx.claim_nonce("n-1", now - 1_000).await.unwrap());
    assert!(!tx.claim_nonce("n-1", now - 1_000).await.unwrap());
    assert!(tx.claim_nonce("n-2", now + 3_600_000).await.unwrap());
    tx.commit().await.unwrap();

    assert_eq!(store.purge_nonces().await.unwrap(), 1);
    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.claim_nonce("n-1", 9_000).await.unwrap(),
        "forgotten after its window"
    );
    assert!(
        !tx.claim_nonce("n-2", 9_000).await.unwrap(),
        "still inside its window"
    );
}

async fn idempotency_claims_replay_and_can_be_abandoned(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let key = IdempotencyKey {
        scope: "test.scope",
        key: "order\nline".into(),
    };
    let answer = StoredAnswer {
        result_code: "000000".into(),
        instance_id: Some("i-1".into()),
        body: b"{\"x\":1}".to_vec(),
    };

    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.claim_idempotency(&key, 1).await.unwrap(), Claim::Claimed);
    tx.complete_idempotency(&key, &answer).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.claim_idempotency(&key, 2).await.unwrap(),
        Claim::Answered(answer)
    );
    drop(tx);

    let other = IdempotencyKey {
        scope: "test.scope",
        key: "other".into(),
    };
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.claim_idempotency(&other, 1).await.unwrap(),
        Claim::Claimed
    );
    tx.abandon_idempotency(&other).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.claim_idempotency(&other, 1).await.unwrap(),
        Claim::Claimed,
        "an abandoned key is free again"
    );
}

async fn an_uncommitted_transaction_leaves_nothing(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let mut tx = store.begin().await.unwrap();
    tx.claim_nonce("n-rollback", 1).await.unwrap();
    tx.insert_instance(&full_instance("rb-1")).await.unwrap();
    tx.record_callback(&record("rb")).await.unwrap();
    drop(tx);

    assert_eq!(store.instance("rb-1").await.unwrap(), None);
    assert!(store.recent_callbacks(10).await.unwrap().is_empty());
    let mut tx = store.begin().await.unwrap();
    assert!(tx.claim_nonce("n-rollback", 1).await.unwrap());
}

async fn concurrent_claims_of_one_key_see_one_winner(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let key = IdempotencyKey {
        scope: "race",
        key: "k".into(),
    };
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                let mut tx = store.begin().await.unwrap();
                let claim = tx.claim_idempotency(&key, 1).await.unwrap();
                if claim == Claim::Claimed {
                    let body = format!("winner {i}").into_bytes();
                    let answer = StoredAnswer {
                        result_code: "000000".into(),
                        instance_id: None,
                        body,
                    };
                    tx.complete_idempotency(&key, &answer).await.unwrap();
                }
                tx.commit().await.unwrap();
                claim
            })
        })
        .collect();
    let mut claims = Vec::new();
    for task in tasks {
        claims.push(task.await.unwrap());
    }
    let winners = claims.iter().filter(|c| **c == Claim::Claimed).count();
    assert_eq!(winners, 1, "{claims:?}");
    let answers: std::collections::HashSet<_> = claims
        .iter()
        .filter_map(|c| match c {
            Claim::Answered(a) => Some(a.body.clone()),
            Claim::Claimed => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "every loser sees the winner's answer");
}

fn record(request_id: &str) -> CallbackRecord {
    CallbackRecord {
        request_id: request_id.into(),
        received_ms: 42,
        interface: "saas_v2".into(),
        activity: Some("newInstance".into()),
        method: "POST".into(),
        raw_query: "signature=AB&timestamp=1&nonce=n".into(),
        raw_body: vec![0, 159, 146, 150, b'{'],
        verdict: "ok:A".into(),
        result_code: Some("000000".into()),
        http_status: 200,
        response_body: b"{}".to_vec(),
        response_sha256: "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a".into(),
        duration_us: 1234,
        test: true,
        order_id: Some("O".into()),
        instance_id: Some("I".into()),
    }
}

async fn callbacks_round_trip(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    store.record_callback(&record("first")).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.record_callback(&record("second")).await.unwrap();
    tx.commit().await.unwrap();

    let records = store.recent_callbacks(10).await.unwrap();
    assert_eq!(
        records,
        vec![record("second"), record("first")],
        "newest first, bytes intact"
    );
    assert_eq!(store.recent_callbacks(1).await.unwrap().len(), 1);
}

async fn migrating_twice_is_harmless(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    store
        .migrate()
        .await
        .expect("a second run finds nothing to do");
    store.ping().await.unwrap();
    assert_eq!(
        store.backend(),
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
}

async fn old_callback_records_are_purged_in_batches(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    for (id, received_ms) in [
        ("old-1", 100),
        ("old-2", 200),
        ("old-3", 300),
        ("new", 1_000),
    ] {
        let mut r = record(id);
        r.received_ms = received_ms;
        store.record_callback(&r).await.unwrap();
    }

    assert_eq!(
        store.purge_callbacks(500, 2).await.unwrap(),
        2,
        "one batch at a time"
    );
    assert_eq!(store.purge_callbacks(500, 2).await.unwrap(), 1);
    assert_eq!(store.purge_callbacks(500, 2).await.unwrap(), 0);
    let left: Vec<String> = store
        .recent_callbacks(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    assert_eq!(left, ["new"]);
}

async fn refused_records_are_buffered_written_in_batches_and_dropped_when_full(backend: Backend) {
    use koogate::store::refused;
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let (log, writer) = refused::channel(store.clone(), 3);

    // Nothing drains the buffer yet: three fit, two are dropped and counted.
    for n in 0..5 {
        log.record(record(&format!("refused-{n}")));
    }
    assert_eq!(log.dropped(), 2);
    assert!(
        store.recent_callbacks(10).await.unwrap().is_empty(),
        "not written on the hot path"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let writing = tokio::spawn(writer.run(stop_rx));
    log.flushed().await;
    assert_eq!(store.recent_callbacks(10).await.unwrap().len(), 3);

    // What is buffered when the server stops is still written.
    log.record(record("at-stop"));
    drop(stop_tx);
    writing.await.unwrap();
    assert_eq!(store.recent_callbacks(10).await.unwrap().len(), 4);
}

// Records: instances, order lines, license codes and their activations.

fn code(license: &str, activated_ms: i64) -> LicenseCode {
    LicenseCode {
        license: license.into(),
        order_id: Some("ORDER-C".into()),
        order_line_id: Some("ORDER-C-1".into()),
        product_id: Some("P".into()),
        state: State::Active,
        expire_ms: Some(9_000),
        last_order_id: None,
        released_by_test: false,
        activated_ms,
        updated_ms: activated_ms,
        released_ms: None,
    }
}

async fn license_codes_and_their_activations_round_trip(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let first = code("LIC-1", 10);
    assert!(store.insert_license_code(&first).await.unwrap());
    assert!(
        !store.insert_license_code(&code("LIC-1", 99)).await.unwrap(),
        "a known code is kept"
    );
    store.insert_license_code(&code("LIC-2", 20)).await.unwrap();
    assert_eq!(
        store.license_code("LIC-1").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.license_code("missing").await.unwrap(), None);

    let mut changed = first.clone();
    changed.state = State::Released;
    changed.released_by_test = true;
    changed.last_order_id = Some("UNSUB-1".into());
    changed.updated_ms = 30;
    changed.released_ms = Some(30);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.license_code_for_update("LIC-1").await.unwrap(),
        Some(first)
    );
    tx.update_license_code(&changed).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.license_code("LIC-1").await.unwrap(),
        Some(changed.clone())
    );

    store.begin_license_activation("LIC-1", 100).await.unwrap();
    store.begin_license_activation("LIC-3", 50).await.unwrap();
    assert_eq!(
        store.unfinished_license_activations().await.unwrap(),
        [("LIC-3".to_string(), 50), ("LIC-1".to_string(), 100)],
        "oldest first"
    );
    store
        .complete_license_activation("LIC-1", 120)
        .await
        .unwrap();
    assert_eq!(
        store.unfinished_license_activations().await.unwrap(),
        [("LIC-3".to_string(), 50)]
    );
    store.begin_license_activation("LIC-1", 200).await.unwrap();
    assert_eq!(
        store.unfinished_license_activations().await.unwrap(),
        [("LIC-3".to_string(), 50), ("LIC-1".to_string(), 200)],
        "beginning again starts afresh"
    );

    let activations = store.code_activations("ORDER-C").await.unwrap();
    let seen: Vec<_> = activations
        .iter()
        .map(|a| (a.code.license.as_str(), a.started_ms, a.completed_ms))
        .collect();
    assert_eq!(seen, [("LIC-1", Some(200), None), ("LIC-2", None, None)]);
    assert_eq!(activations[0].code, changed);
}

fn order_line(line: &str, order_info: Option<&str>) -> OrderLineRecord {
    OrderLineRecord {
        order_id: "ORDER-L".into(),
        order_line_id: line.into(),
        test: false,
        source: "newInstance".into(),
        created_ms: 5,
        order_info: order_info.map(str::to_owned),
        fetched_ms: order_info.map(|_| 6),
    }
}

async fn order_lines_are_remembered_once_and_keep_what_the_order_query_answered(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let info = r#"{"buyerInfo":{"email":"a@b.c"},"orderId":"ORDER-L"}"#;
    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.record_order_line(&order_line("L-2", None))
            .await
            .unwrap()
    );
    assert!(
        !tx.record_order_line(&order_line("L-2", Some(info)))
            .await
            .unwrap(),
        "a known line is not changed"
    );
    tx.store_order_info(&order_line("L-1", Some(info)))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store.order_lines("ORDER-L").await.unwrap(),
        [order_line("L-1", Some(info)), order_line("L-2", None)],
        "by line id, the buyer's data opened again"
    );

    let mut tx = store.begin().await.unwrap();
    let mut fetched = order_line("L-2", Some(r#"{"orderId":"ORDER-L"}"#));
    fetched.source = "ignored: the line is known".into();
    tx.store_order_info(&fetched).await.unwrap();
    tx.commit().await.unwrap();
    let lines = store.order_lines("ORDER-L").await.unwrap();
    assert_eq!(
        lines[1],
        OrderLineRecord {
            source: "newInstance".into(),
            ..fetched
        },
        "the answer replaces what was stored, the rest of the line is kept"
    );
    assert!(store.order_lines("other").await.unwrap().is_empty());
}

async fn instances_are_found_by_order_line_and_listed_newest_first(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let mut v2 = full_instance("v2-1");
    v2.family = Family::SaasV2;
    let mut later = full_instance("v1-later");
    later.created_ms += 10;
    later.test = false;
    let mut tx = store.begin().await.unwrap();
    for instance in [&v2, &later, &full_instance("v1-1")] {
        tx.insert_instance(instance).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.instance_for_order_line("ORDER-1", "ORDER-1-000001")
            .await
            .unwrap(),
        Some(v2.clone()),
        "the SaaS 2.0 instance of the line only"
    );
    assert_eq!(
        tx.instance_for_order_line("ORDER-1", "other")
            .await
            .unwrap(),
        None
    );
    drop(tx);

    let filter = |test, limit| store::InstanceFilter {
        state: None,
        customer_id: None,
        order_id: Some("ORDER-1".into()),
        test,
        before: None,
        limit,
    };
    let ids = |found: Vec<Instance>| found.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_instances(&filter(None, 10)).await.unwrap()),
        ["v1-later", "v2-1", "v1-1"],
        "newest first, then by id"
    );
    assert_eq!(
        ids(store
            .list_instances(&filter(Some(false), 10))
            .await
            .unwrap()),
        ["v1-later"]
    );
    assert_eq!(
        store.list_instances(&filter(None, 1)).await.unwrap().len(),
        1
    );
}

// Events: delivery attempts (the feed and the pause are above).

async fn delivery_attempts_are_kept_in_order(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let attempt = |attempted_ms, status: Option<i64>| store::Attempt {
        event_id: "evt-1".into(),
        attempted_ms,
        status,
        duration_ms: 7,
        response: status.map(|s| format!("answer {s}")),
        error: status.is_none().then(|| "timed out".into()),
    };
    store.record_attempt(&attempt(1, None)).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.record_attempt(&attempt(2, Some(200))).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.record_attempt(&attempt(3, Some(500))).await.unwrap();
    drop(tx);
    assert_eq!(
        store.event_attempts("evt-1").await.unwrap(),
        [attempt(1, None), attempt(2, Some(200))],
        "oldest first; a rolled-back one is not kept"
    );
    assert!(store.event_attempts("evt-2").await.unwrap().is_empty());
}

// Audit: the callback records and their reads.

async fn callbacks_are_found_by_order_refusal_and_result(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let mut tx = store.begin().await.unwrap();
    let mut instance = full_instance("I-OF-ORDER");
    instance.order_id = "O-2".into();
    tx.insert_instance(&instance).await.unwrap();
    tx.commit().await.unwrap();

    let at = |request_id: &str, received_ms, result_code: &str| {
        let mut r = record(request_id);
        r.received_ms = received_ms;
        r.test = false;
        r.result_code = Some(result_code.into());
        r
    };
    let mut refused = at("refused", 30, "000001");
    refused.verdict = "signature does not match".into();
    (refused.order_id, refused.instance_id) = (None, None);
    let mut by_instance = at("by-instance", 25, "000000");
    (by_instance.order_id, by_instance.instance_id) = (None, Some("I-OF-ORDER".into()));
    by_instance.activity = Some("queryStatus".into());
    let batch = [
        at("failed", 10, "000005"),
        at("failed-again", 20, "000005"),
        by_instance.clone(),
        refused.clone(),
    ];
    store.record_callbacks(&batch).await.unwrap();
    store.record_callbacks(&[]).await.unwrap();

    let of_order = store.callbacks_of_order("O-2").await.unwrap();
    assert_eq!(
        of_order.iter().map(|c| &c.record).collect::<Vec<_>>(),
        [&by_instance],
        "found through its instance"
    );
    assert_eq!(
        store.callback(of_order[0].id).await.unwrap(),
        Some(of_order[0].clone())
    );
    assert_eq!(store.callback(-1).await.unwrap(), None);

    let found = store.refused_callbacks(0, 10).await.unwrap();
    assert_eq!(
        found.iter().map(|c| &c.record).collect::<Vec<_>>(),
        [&refused]
    );
    assert!(store.refused_callbacks(31, 10).await.unwrap().is_empty());

    let counts: Vec<_> = store
        .callback_counts(15)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.result_code, c.count))
        .collect();
    assert_eq!(
        counts,
        [
            (Some("000000".to_string()), 1),
            (Some("000001".to_string()), 1),
            (Some("000005".to_string()), 1),
        ]
    );

    let failing = store.failing_orders(0).await.unwrap();
    assert_eq!(
        failing,
        [store::FailingOrder {
            order_id: "O".into(),
            first_failed_ms: 10,
            last_failed_ms: 20,
            failures: 2,
        }]
    );
    assert!(store.failing_orders(11).await.unwrap().is_empty());
    store
        .record_callback(&at("succeeded", 40, "000000"))
        .await
        .unwrap();
    assert!(
        store.failing_orders(0).await.unwrap().is_empty(),
        "a later success ends the failure"
    );
}

// Ops: the metrics' reads, the searches and the purges.

async fn operations_and_searches_read_what_is_stored(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let mut tx = store.begin().await.unwrap();
    let mut other = full_instance("other-1");
    other.order_id = "ORDER-2".into();
    other.created_ms += 1;
    other.customer_name = Some("Someone Else".into());
    tx.insert_instance(&full_instance("rt-1")).await.unwrap();
    tx.insert_instance(&other).await.unwrap();
    tx.commit().await.unwrap();
    store.pause_webhook(5, "410 Gone").await.unwrap();
    let mut ok = record("dial");
    ok.received_ms = 77;
    store.record_callback(&ok).await.unwrap();

    // Due a minute ago, and in an hour, by the real clock: the database's, which decides
    // whether a job is due, and which the age of the oldest due job is read on.
    let real_now = chrono::Utc::now().timestamp_millis();
    let mut tx = store.begin().await.unwrap();
    for (key, run_at_ms) in [("due", real_now - 60_000), ("later", real_now + 3_600_000)] {
        tx.enqueue_job(&store::NewJob {
            kind: "order.fetch".into(),
            payload: "{}".into(),
            dedup_key: Some(key.into()),
            subject: None,
            lane: None,
            run_at_ms,
            created_ms: 0,
        })
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let ops = store.operations().await.unwrap();
    let read_ms = chrono::Utc::now().timestamp_millis() - real_now;
    let [(kind, age_ms)] = ops.oldest_due_age_ms.as_slice() else {
        panic!("one kind has a due job: {:?}", ops.oldest_due_age_ms);
    };
    assert_eq!(kind, "order.fetch");
    // SQLite's clock reads to the millisecond, and `unixepoch('subsec')` may round it.
    assert!(
        (59_999..=60_000 + read_ms + 1).contains(age_ms),
        "due for {age_ms} ms, read within {read_ms} ms of a minute"
    );
    assert!(ops.webhook_paused);
    assert_eq!(ops.last_test_success, [("saas_v2".to_string(), 77)]);
    assert_eq!(ops.backlog, 0);

    let search = |text: &str| store::Search {
        text: Some(text.into()),
        limit: 10,
        ..store::Search::default()
    };
    let ids: Vec<_> = store
        .search_instances(&search("someone"))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["other-1"], "by customer name, in any case");
    assert_eq!(
        store
            .search_instances(&search("ORDER-"))
            .await
            .unwrap()
            .len(),
        2
    );
    let orders: Vec<_> = store
        .search_orders(&search("order-"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.order_id, o.instances))
        .collect();
    assert_eq!(
        orders,
        [("ORDER-2".to_string(), 1), ("ORDER-1".to_string(), 1)],
        "newest first"
    );
}

async fn buyer_data_is_purged_after_release(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let mut released = full_instance("released");
    released.details.insert("email".into(), "a@b.c".into());
    released.released_ms = Some(1_000);
    let mut kept = released.clone();
    kept.id = "kept".into();
    kept.order_line_id = Some("kept-line".into());
    kept.released_ms = None;
    let info = r#"{"buyerInfo":{"email":"a@b.c"},"orderId":"ORDER-1"}"#;
    let mut tx = store.begin().await.unwrap();
    tx.insert_instance(&released).await.unwrap();
    tx.insert_instance(&kept).await.unwrap();
    for line in ["ORDER-1-000001", "kept-line"] {
        tx.store_order_info(&OrderLineRecord {
            order_id: "ORDER-1".into(),
            order_line_id: line.into(),
            test: true,
            source: "newInstance".into(),
            created_ms: 1,
            order_info: Some(info.into()),
            fetched_ms: Some(2),
        })
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    assert_eq!(store.purge_buyer_data(1_001, 10).await.unwrap(), 1);
    assert_eq!(store.purge_buyer_data(1_001, 10).await.unwrap(), 0);
    let purged = store.instance("released").await.unwrap().unwrap();
    assert_eq!(purged.details.get("email"), None);
    assert_eq!(
        store
            .instance("kept")
            .await
            .unwrap()
            .unwrap()
            .details
            .get("email")
            .and_then(|email| email.as_str()),
        Some("a@b.c")
    );
    let lines = store.order_lines("ORDER-1").await.unwrap();
    let infos: Vec<_> = lines.iter().map(|l| l.order_info.as_deref()).collect();
    assert_eq!(
        infos,
        [Some(r#"{"orderId":"ORDER-1"}"#), Some(info)],
        "only the released instance's line loses its buyer data"
    );
}

// Usage: records, windows and their push.

fn window(instance_id: &str, begin_ms: i64, total: i64) -> store::UsageWindow {
    let mut w = store::UsageWindow::open(
        instance_id,
        koogate::domain::usage::Window {
            begin_ms,
            end_ms: begin_ms + 100,
        },
        begin_ms + 1,
    );
    w.total = total;
    w.records = 1;
    w
}

async fn usage_is_counted_once_windowed_closed_and_settled(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let usage = |record_id, quantity| store::NewUsageRecord {
        instance_id: "U-1",
        record_id,
        quantity,
        occurred_ms: 10,
        origin_begin_ms: 0,
        received_ms: 150,
    };
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.claim_usage_record(&usage("r-1", 5)).await.unwrap(), None);
    assert_eq!(
        tx.claim_usage_record(&usage("r-1", 9)).await.unwrap(),
        Some(5),
        "a second claim sees the quantity stored first"
    );
    assert!(tx.add_usage(&window("U-1", 0, 5)).await.unwrap());
    assert!(tx.add_usage(&window("U-1", 0, 2)).await.unwrap());
    tx.claim_usage_record(&usage("r-late", 3)).await.unwrap();
    tx.carry_usage_record("U-1", "r-late", 100).await.unwrap();
    assert!(tx.add_usage(&window("U-1", 100, 3)).await.unwrap());
    let ended = tx.ended_usage_windows(100).await.unwrap();
    assert_eq!(ended.len(), 1);
    let mut closed = ended[0].clone();
    assert_eq!((closed.total, closed.records), (7, 2));
    closed.state = store::window_state::CLOSED.into();
    closed.metering_sn = Some("sn-1".into());
    assert!(tx.close_usage_window(&closed).await.unwrap());
    assert!(
        !tx.close_usage_window(&closed).await.unwrap(),
        "closed once"
    );
    assert!(
        !tx.add_usage(&window("U-1", 0, 1)).await.unwrap(),
        "a closed window takes no more"
    );
    tx.commit().await.unwrap();

    assert_eq!(
        store.usage_carried("U-1").await.unwrap(),
        [store::Carried {
            window_begin_ms: 100,
            origin_begin_ms: 0,
            total: 3,
            records: 1,
        }]
    );
    assert_eq!(
        store.closed_usage_windows(10).await.unwrap(),
        [closed.clone()]
    );
    let windows = store.usage_windows("U-1", 10).await.unwrap();
    assert_eq!(
        windows.iter().map(|w| w.begin_ms).collect::<Vec<_>>(),
        [100, 0],
        "newest first"
    );

    let mut tx = store.begin().await.unwrap();
    let mut parked = closed.clone();
    parked.state = store::window_state::PARKED.into();
    parked.reason = Some("refused".into());
    assert!(tx.settle_usage_window(&parked).await.unwrap());
    assert!(
        !tx.settle_usage_window(&parked).await.unwrap(),
        "settled once"
    );
    assert_eq!(tx.unpark_usage(Some("other"), 200).await.unwrap(), 0);
    assert_eq!(tx.unpark_usage(None, 200).await.unwrap(), 1);
    let mut pushed = closed.clone();
    pushed.state = store::window_state::PUSHED.into();
    pushed.pushed_ms = Some(210);
    assert!(tx.settle_usage_window(&pushed).await.unwrap());
    let totals = tx
        .usage_totals(&["U-1".into(), "none".into()])
        .await
        .unwrap();
    assert_eq!(
        totals
            .iter()
            .map(|t| (t.instance_id.as_str(), t.total))
            .collect::<Vec<_>>(),
        [("U-1", 10)]
    );
    tx.commit().await.unwrap();
    assert!(store.closed_usage_windows(10).await.unwrap().is_empty());
}

async fn package_usage_is_replaced_and_read_in_order(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let entry = |instance_id: &str, related: &str, usage_value| store::PackageUsage {
        instance_id: instance_id.into(),
        related_instance_id: related.into(),
        usage_value,
        statistical_ms: 5,
        updated_ms: 6,
    };
    let mut tx = store.begin().await.unwrap();
    tx.replace_package_usage("P-1", &[entry("P-1", "z", 1), entry("P-1", "a", 2)])
        .await
        .unwrap();
    tx.replace_package_usage("P-2", &[entry("P-2", "m", 3)])
        .await
        .unwrap();
    tx.replace_package_usage("P-1", &[entry("P-1", "b", 4), entry("P-1", "a", 5)])
        .await
        .unwrap();
    assert_eq!(
        tx.package_usage(&["P-1".into(), "P-2".into(), "P-3".into()])
            .await
            .unwrap(),
        [
            entry("P-1", "b", 4),
            entry("P-1", "a", 5),
            entry("P-2", "m", 3)
        ]
    );
    assert!(tx.package_usage(&[]).await.unwrap().is_empty());
}

// License requests: Online License applications and their uploads.

fn application(event_id: &str, instance_id: &str, created_ms: i64) -> LicenseRequest {
    LicenseRequest {
        event_id: event_id.into(),
        instance_id: instance_id.into(),
        device_fingerprint: Some("fp".into()),
        effective_ms: 1,
        expire_ms: Some(2),
        test: true,
        state: RequestState::AwaitingLicense,
        license: None,
        error: None,
        created_ms,
        updated_ms: created_ms,
        delivered_ms: None,
    }
}

async fn license_requests_round_trip_with_their_uploads(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let first = application("E-1", "I-1", 10);
    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_license_request(&first).await.unwrap());
    assert!(
        !tx.insert_license_request(&first).await.unwrap(),
        "eventId taken"
    );
    tx.insert_license_request(&application("E-2", "I-2", 20))
        .await
        .unwrap();
    tx.insert_license_request(&application("E-3", "I-1", 30))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut delivered = first.clone();
    delivered.state = RequestState::Delivered;
    delivered.license = Some(License {
        content: Content::File {
            name: "license.lic".into(),
            bytes: vec![0, 1, 2, 255],
        },
        source: "app".into(),
    });
    delivered.updated_ms = 40;
    delivered.delivered_ms = Some(40);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.license_request_for_update("E-1").await.unwrap(),
        Some(first)
    );
    tx.update_license_request(&delivered).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.license_request("E-1").await.unwrap(), Some(delivered));
    assert_eq!(store.license_request("missing").await.unwrap(), None);

    let ids =
        |found: Vec<LicenseRequest>| found.into_iter().map(|r| r.event_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.license_requests(None, 10).await.unwrap()),
        ["E-3", "E-2", "E-1"]
    );
    assert_eq!(
        ids(store.license_requests(Some("I-1"), 10).await.unwrap()),
        ["E-3", "E-1"]
    );
    assert_eq!(ids(store.license_requests(None, 1).await.unwrap()), ["E-3"]);

    let upload = |attempted_ms, status: Option<i64>| store::LicenseUpload {
        event_id: "E-1".into(),
        attempted_ms,
        status,
        code: status.map(|_| "CBC.0000".into()),
        message: None,
        error: status.is_none().then(|| "timed out".into()),
        duration_ms: 3,
    };
    store.record_license_upload(&upload(1, None)).await.unwrap();
    store
        .record_license_upload(&upload(2, Some(200)))
        .await
        .unwrap();
    assert_eq!(
        store.license_uploads("E-1").await.unwrap(),
        [upload(1, None), upload(2, Some(200))]
    );
    assert!(store.license_uploads("E-2").await.unwrap().is_empty());
}
