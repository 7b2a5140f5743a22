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
);

async fn open(db: &Database) -> Arc<dyn Store> {
    let options = PoolOptions {
        max_connections: 8,
        acquire_timeout: Duration::from_secs(5),
    };
    let store = store::connect(&db.url, &options)
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
    let mut tx = store.begin().await.unwrap();
    assert!(tx.claim_nonce("n-1", 1_000).await.unwrap());
    assert!(!tx.claim_nonce("n-1", 1_000).await.unwrap());
    assert!(tx.claim_nonce("n-2", 5_000).await.unwrap());
    tx.commit().await.unwrap();

    assert_eq!(store.purge_nonces(2_000).await.unwrap(), 1);
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
