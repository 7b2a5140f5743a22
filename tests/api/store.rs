//! The storage conformance suite: the same expectations of the `Store` seam, run
//! against SQLite and PostgreSQL.

use crate::helpers::{Backend, Database};
use crate::on_both_backends;
use koogate::domain::instance::{Family, Instance, State};
use koogate::protocol::reply::AppInfo;
use koogate::store::{
    self, CallbackRecord, Claim, IdempotencyKey, PoolOptions, Store, StoredAnswer,
};
use std::sync::Arc;
use std::time::Duration;

on_both_backends!(
    instances_round_trip_every_field,
    nonces_are_claimed_once_until_purged,
    idempotency_claims_replay_and_can_be_abandoned,
    an_uncommitted_transaction_leaves_nothing,
    concurrent_claims_of_one_key_see_one_winner,
    callbacks_round_trip,
    migrating_twice_is_harmless,
    old_callback_records_are_purged_in_batches,
    refused_records_are_buffered_written_in_batches_and_dropped_when_full,
    events_are_sequenced_per_subject_and_read_in_feed_order,
    a_lane_runs_one_job_at_a_time_in_order,
    the_webhook_pause_is_kept_and_resumed,
);

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
    let mut sequences = Vec::new();
    for (n, subject) in ["instance:a", "instance:b", "instance:a", "instance:a"]
        .iter()
        .enumerate()
    {
        let mut tx = store.begin().await.unwrap();
        sequences.push(
            tx.record_event(&new_event(n, subject, 1_000 + n as i64))
                .await
                .unwrap(),
        );
        tx.commit().await.unwrap();
    }
    assert_eq!(sequences, [1, 1, 2, 3]);
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
        let job = koogate::domain::events::delivery_job(event, subject, 0);
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
    let mut job = koogate::domain::events::delivery_job("e1", "instance:a", 0);
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

pub async fn open(db: &Database) -> Arc<dyn Store> {
    let options = PoolOptions {
        max_connections: 8,
        acquire_timeout: Duration::from_secs(5),
    };
    let store = store::connect(&db.url, &options, crate::helpers::test_sealer())
        .await
        .expect("store opens");
    store.migrate().await.expect("migrations apply");
    store
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
