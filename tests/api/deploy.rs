//! The deployment files of the repository: the example alert rules refer only to metrics
//! koogate exports, and the compose file is well formed.

use koogate::metrics::{Answered, Metrics, Refusal};
use koogate::store::{JobState, Operations};
use serde_norway::Value;

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// The text of a server that has seen one of everything, so that every family has a
/// sample.
fn everything_exported() -> String {
    let metrics = Metrics::new();
    metrics.answered(&Answered {
        family: "saas_v2",
        activity: Some("newInstance"),
        result_code: "000000",
        test: false,
        duration: std::time::Duration::from_millis(3),
    });
    metrics.refused("saas_v2", Refusal::BadSignature);
    metrics.delivery("instance.created", "delivered");
    metrics.open_api("query_order", "mkt.myhuaweicloud.com", "2xx");
    let operations = Operations {
        jobs: vec![("order.fetch".into(), JobState::Failed, 1)],
        oldest_due_age_ms: vec![("order.fetch".into(), 1_000)],
        backlog: 1,
        backlog_oldest_ms: Some(1_000),
        webhook_paused: true,
        last_test_success: vec![("saas_v2".into(), 1_000)],
        usage_unpushed: vec![("closed".into(), 1)],
        usage_first_end: vec![("closed".into(), 3_600_000, 1_000)],
    };
    metrics.render(&operations, 2_000)
}

#[test]
fn every_alert_rule_uses_metrics_koogate_exports() {
    let exported = everything_exported();
    let rules = yaml("deploy/alerts.yml");
    let rules = rules["groups"][0]["rules"]
        .as_sequence()
        .expect("a group of rules");
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for expected in [
        "KoogateNewInstanceFailing",
        "KoogateDialTestNotPassing",
        "KoogateJobsParked",
        "KoogateWebhookPaused",
        "KoogateUsageWindowNearDeadline",
        "KoogateUsageWindowsParked",
    ] {
        assert!(names.contains(&expected), "{expected} is among {names:?}");
    }
    for rule in rules {
        let expr = rule["expr"].as_str().expect("every rule has an expression");
        let metrics = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("koogate_"));
        for metric in metrics {
            // A counter's help line names it without `_total`.
            let family = metric.strip_suffix("_total").unwrap_or(metric);
            assert!(
                exported.contains(&format!("# TYPE {family} ")),
                "{} uses {metric}, which /metrics does not export",
                rule["alert"].as_str().unwrap_or_default()
            );
        }
    }
}

/// What `docker compose config` would check of the structure, and what koogate needs of
/// it: no compose engine is needed to run this.
#[test]
fn the_compose_file_runs_koogate_on_postgres_with_its_data_in_a_volume() {
    let compose = yaml("compose.yaml");
    let services = compose["services"].as_mapping().expect("services");
    for service in services.values() {
        assert!(
            service["image"].is_string() || service["build"].is_string(),
            "every service says what it runs"
        );
    }
    let koogate = &compose["services"]["koogate"];
    let postgres = &compose["services"]["postgres"];
    let url = koogate["environment"]["KOOGATE_DATABASE_URL"]
        .as_str()
        .expect("koogate is given a database");
    assert!(
        url.starts_with("postgres://") && url.contains("@postgres:5432/"),
        "{url}"
    );
    assert!(
        koogate["environment"]["KOOGATE_DATA_KEY"]
            .as_str()
            .is_some_and(|key| key.starts_with("${KOOGATE_DATA_KEY:?")),
        "PostgreSQL needs the data key, from the .env file"
    );
    assert_eq!(
        koogate["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy"),
        "koogate waits for PostgreSQL to answer"
    );
    assert!(postgres["healthcheck"]["test"].is_sequence());

    // PostgreSQL's data lives in a named volume declared at the top level.
    let mounts: Vec<&str> = postgres["volumes"]
        .as_sequence()
        .expect("postgres mounts a volume")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let data = mounts
        .iter()
        .find_map(|m| m.strip_suffix(":/var/lib/postgresql/data"))
        .expect("the data folder is a volume");
    assert!(
        compose["volumes"]
            .as_mapping()
            .expect("volumes")
            .contains_key(data),
        "{data} is declared"
    );

    // Both listeners are published on loopback only: the proxy reaches the public one,
    // and the management API and /metrics stay private.
    let ports: Vec<&str> = koogate["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(ports, ["127.0.0.1:8080:8080", "127.0.0.1:8081:8081"]);
    assert_eq!(
        koogate["environment"]["KOOGATE_ADMIN_LISTEN"].as_str(),
        Some("0.0.0.0:8081"),
        "reachable through the published port"
    );
}

#[test]
fn the_docker_run_example_mounts_the_images_volume() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dockerfile = std::fs::read_to_string(format!("{root}/Dockerfile")).unwrap();
    assert!(dockerfile.contains(r#"VOLUME ["/var/lib/koogate"]"#));
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let run = readme
        .lines()
        .find(|l| l.starts_with("docker run"))
        .expect("a docker run example");
    assert!(run.contains(":/var/lib/koogate"), "{run}");
}
