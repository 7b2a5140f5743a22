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
        oldest_due: vec![("order.fetch".into(), 1_000)],
        backlog: 1,
        backlog_oldest_ms: Some(1_000),
        webhook_paused: true,
        last_test_success: vec![("saas_v2".into(), 1_000)],
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
