//! The Grafana dashboard, the alert rules and the autoscaler ask only for metrics the
//! program exports.

use std::collections::BTreeSet;

use swarm_director::metrics::Metrics;

use super::*;

/// Metric names used by a PromQL expression: identifiers that are not functions,
/// keywords, label names, range durations or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth == 0 => cleaned.push(c),
            _ => {}
        }
    }
    // Drop `by (...)` / `without (...)` label lists.
    let mut without_groups = String::new();
    let mut rest = cleaned.as_str();
    while let Some(at) = rest.find(" by (").or_else(|| rest.find(" without (")) {
        without_groups.push_str(&rest[..at]);
        rest = &rest[at..];
        rest = &rest[rest.find(')').map_or(rest.len(), |i| i + 1)..];
    }
    without_groups.push_str(rest);
    let keywords = [
        "and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset", "le",
    ];
    let mut names = BTreeSet::new();
    let chars: Vec<char> = without_groups.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_alphabetic() || chars[i] == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if next != Some(&'(') && !keywords.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every metric name the program exports (histograms with their series suffixes).
pub fn exported() -> BTreeSet<String> {
    let m = Metrics::global();
    // Touch every labelled family once so it appears in the exposition.
    m.http_requests
        .with_label_values(&["GET", "/x", "200"])
        .inc();
    m.http_duration
        .with_label_values(&["GET", "/x"])
        .observe(0.1);
    m.agent_tasks
        .with_label_values(&["echo", "completed"])
        .inc();
    m.agent_duration.with_label_values(&["echo"]).observe(0.1);
    m.end_to_end.with_label_values(&["echo", "5"]).observe(0.1);
    m.dead_letters
        .with_label_values(&["echo", "permanent_error"])
        .inc();
    m.queue_size.with_label_values(&["p5"]).set(0);
    m.oldest_pending.with_label_values(&["5"]).set(0);
    m.cache.with_label_values(&["hit"]).inc();
    m.agent_backlog.with_label_values(&["echo"]).set(0);
    m.render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_dashboard_and_alerts_use_exported_metrics_only() {
    let exported = exported();
    for seed_name in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "agent_tasks_total",
        "agent_processing_duration_seconds_bucket",
        "active_database_connections",
        "task_queue_size",
    ] {
        assert!(
            exported.contains(seed_name),
            "the seed's {seed_name} is not exported"
        );
    }

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/swarm-fleet.json")).expect("dashboard is JSON");
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(
        exprs.len() >= 8,
        "the dashboard shows throughput, latency, backlog and more"
    );

    let alerts = yaml("deploy/prometheus/alerts.yml");
    let rules = alerts["groups"][0]["rules"].as_vec().expect("alert rules");
    assert!(rules.len() >= 3);
    for rule in rules {
        assert!(rule["alert"].as_str().is_some());
        exprs.push(rule["expr"].as_str().expect("alert expr").to_string());
    }
    let scrape = yaml("deploy/prometheus/prometheus.yml");
    assert!(
        scrape["scrape_configs"]
            .as_vec()
            .is_some_and(|v| !v.is_empty())
    );

    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name),
                "`{name}` in `{expr}` is not exported"
            );
        }
    }
}

#[test]
fn promql_names_are_found() {
    let names = metric_names(
        "histogram_quantile(0.95, sum by (le, agent_type) (rate(task_end_to_end_seconds_bucket{a=\"b\"}[5m]))) > 1 and up",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["task_end_to_end_seconds_bucket", "up"]
    );
}

// ---------------------------------------------------------------------------------------
// Kubernetes, Compose, the NATS cluster and the image. No Docker engine or Kubernetes API
// runs on the test machines, so these checks read the files: they parse, refer to each
// other consistently, and ask only for what the program has (commands, flags, environment
// variables, ports, probe paths, metrics, consumer names).
