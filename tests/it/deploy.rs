//! The deployment files parse and refer only to metrics the program exports.

use std::{collections::BTreeSet, path::Path};

use swarm_director::metrics::Metrics;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> yaml_rust2::Yaml {
    yaml_rust2::YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
        .remove(0)
}

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
fn exported() -> BTreeSet<String> {
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

use std::{collections::BTreeMap, process::Command};

use swarm_director::{broker::lane_name, config::Settings};
use yaml_rust2::Yaml;

fn documents(path: &str) -> Vec<Yaml> {
    yaml_rust2::YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

fn text(yaml: &Yaml) -> String {
    match yaml {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_vec()
        .map_or_else(Vec::new, |v| v.iter().map(text).collect())
}

fn mapping(yaml: &Yaml) -> BTreeMap<String, Yaml> {
    yaml.as_hash()
        .map(|h| h.iter().map(|(k, v)| (text(k), v.clone())).collect())
        .unwrap_or_default()
}

/// Environment variables the program reads: the settings table's and those read outside it.
fn program_env() -> BTreeSet<String> {
    use swarm_director::config::table::{PROCESS_VARIABLES, SETTINGS};
    SETTINGS
        .iter()
        .map(|setting| setting.env.to_string())
        .chain(PROCESS_VARIABLES.iter().map(|(name, ..)| name.to_string()))
        .collect()
}

/// `swarmd <args> --help` succeeds only when every subcommand and flag in `args` exists.
fn assert_swarmd_accepts(args: &[String], context: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_swarmd"))
        .args(args)
        .arg("--help")
        .output()
        .expect("swarmd runs");
    assert!(
        output.status.success(),
        "{context}: swarmd {args:?} is refused: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn port_of(addr: &str) -> i64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// The NetworkPolicy named `name`.
fn named_policy<'a>(by_kind: &BTreeMap<String, Vec<&'a Yaml>>, name: &str) -> &'a Yaml {
    by_kind["NetworkPolicy"]
        .iter()
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no NetworkPolicy {name}"))
}

const K8S_FILES: [&str; 10] = [
    "namespace.yaml",
    "network-policies.yaml",
    "config.yaml",
    "resources.yaml",
    "migrate-job.yaml",
    "workers.yaml",
    "api.yaml",
    "disruption.yaml",
    "autoscaling.yaml",
    "keda.yaml",
];

#[test]
fn the_kubernetes_manifests_hang_together_and_ask_only_for_what_swarmd_has() {
    let kustomization = yaml("deploy/k8s/kustomization.yaml");
    let listed = strings(&kustomization["resources"]);
    for file in K8S_FILES {
        assert!(
            listed.contains(&file.to_string()),
            "{file} not in kustomization"
        );
    }
    let mut docs = Vec::new();
    for file in &listed {
        for doc in documents(&format!("deploy/k8s/{file}")) {
            docs.push((file.clone(), doc));
        }
    }
    let known_kinds = [
        ("v1", "Namespace"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Service"),
        ("v1", "ResourceQuota"),
        ("v1", "LimitRange"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "Job"),
        ("policy/v1", "PodDisruptionBudget"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
    ];
    let mut by_kind: BTreeMap<String, Vec<&Yaml>> = BTreeMap::new();
    for (file, doc) in &docs {
        let pair = (
            doc["apiVersion"].as_str().unwrap_or_default(),
            doc["kind"].as_str().unwrap_or_default(),
        );
        assert!(known_kinds.contains(&pair), "{file}: unknown {pair:?}");
        assert!(
            doc["metadata"]["name"].as_str().is_some(),
            "{file}: unnamed"
        );
        if pair.1 != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"].as_str(), Some("swarmdirector"));
        }
        by_kind.entry(pair.1.to_string()).or_default().push(doc);
    }
    let named = |kind: &str, name: &str| {
        by_kind
            .get(kind)
            .into_iter()
            .flatten()
            .find(|d| d["metadata"]["name"].as_str() == Some(name))
            .copied()
    };

    // Every pod runs confined: non-root, the runtime's seccomp profile, no privilege
    // escalation, no capabilities, a read-only root.
    let pods: Vec<&Yaml> = by_kind
        .get("Deployment")
        .into_iter()
        .chain(by_kind.get("Job"))
        .flatten()
        .map(|d| &d["spec"]["template"]["spec"])
        .collect();
    for pod in &pods {
        let context = &pod["securityContext"];
        assert_eq!(context["runAsNonRoot"].as_bool(), Some(true));
        assert_eq!(
            context["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault")
        );
        for container in pod["containers"].as_vec().unwrap() {
            let context = &container["securityContext"];
            assert_eq!(context["allowPrivilegeEscalation"].as_bool(), Some(false));
            assert_eq!(context["readOnlyRootFilesystem"].as_bool(), Some(true));
            assert_eq!(strings(&context["capabilities"]["drop"]), ["ALL"]);
        }
    }
    // PostgreSQL's certificate is verified against a CA every pod mounts where the URLs say.
    let secret = named("Secret", "swarm-secrets").expect("swarm-secrets");
    for key in ["SWARM_DATABASE_URL", "SWARM_REPLICA_URLS"] {
        let url = text(&secret["stringData"][key]);
        assert!(
            url.contains("sslmode=verify-full&sslrootcert=/etc/swarm/postgres-ca/ca.crt"),
            "{key}: {url}"
        );
    }
    for pod in &pods {
        let volumes = pod["volumes"].as_vec().expect("volumes");
        assert!(volumes.iter().any(|v| {
            v["name"].as_str() == Some("postgres-ca")
                && v["secret"]["secretName"].as_str() == Some("swarm-postgres-ca")
        }));
        for container in pod["containers"].as_vec().unwrap() {
            let mounts = container["volumeMounts"].as_vec().expect("mounts");
            assert!(mounts.iter().any(|m| {
                m["name"].as_str() == Some("postgres-ca")
                    && m["mountPath"].as_str() == Some("/etc/swarm/postgres-ca")
            }));
        }
    }
    // Every fleet pod connects to NATS as its role, the password from swarm-nats-users, and
    // the NATS chart carries the same users as deploy/nats/roles.conf.
    for (kind, name, user) in [
        ("Deployment", "swarm-api", "api"),
        ("Job", "swarm-migrate", "admin"),
    ]
    .into_iter()
    .chain(
        by_kind["Deployment"]
            .iter()
            .filter_map(|d| d["metadata"]["name"].as_str())
            .filter(|n| n.starts_with("swarm-worker"))
            .map(|n| ("Deployment", n, "worker")),
    ) {
        let doc = named(kind, name).unwrap_or_else(|| panic!("{kind} {name}"));
        let env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_vec()
            .expect("env");
        let var = |wanted: &str| env.iter().find(|v| v["name"].as_str() == Some(wanted));
        assert_eq!(
            var("SWARM_NATS_USER").map(|v| text(&v["value"])),
            Some(user.to_string()),
            "{name}"
        );
        let password =
            &var("SWARM_NATS_PASSWORD").expect("a NATS password")["valueFrom"]["secretKeyRef"];
        assert_eq!(text(&password["name"]), "swarm-nats-users");
        assert_eq!(text(&password["key"]), user);
        named("Secret", "swarm-nats-users")
            .map(|s| mapping(&s["stringData"]).contains_key(user))
            .filter(|has| *has)
            .unwrap_or_else(|| panic!("swarm-nats-users has no {user}"));
    }
    let chart = yaml("deploy/k8s/nats-values.yaml");
    assert_eq!(
        text(&chart["configMap"]["merge"]["data"]["roles.conf"]),
        read("deploy/nats/roles.conf"),
        "the chart's users drifted from deploy/nats/roles.conf"
    );
    assert_eq!(text(&chart["config"]["merge"]["00$include"]), "roles.conf");
    for role in ["PUBLISHER", "WORKER", "API", "ADMIN"] {
        let var = &chart["container"]["env"][format!("SWARM_NATS_{role}_PASSWORD").as_str()];
        assert_eq!(
            text(&var["valueFrom"]["secretKeyRef"]["name"]),
            "swarm-nats-users"
        );
    }
    // Closed by default: a policy denies all traffic not allowed by another.
    let deny = named_policy(&by_kind, "swarm-default-deny");
    assert_eq!(mapping(&deny["spec"]["podSelector"]).len(), 0);
    assert_eq!(strings(&deny["spec"]["policyTypes"]), ["Ingress", "Egress"]);

    // Every variable handed to the containers is one swarmd reads.
    let env_names = program_env();
    let config = named("ConfigMap", "swarm-config").expect("swarm-config");
    let secret = named("Secret", "swarm-secrets").expect("swarm-secrets");
    for source in [&config["data"], &secret["stringData"]] {
        for key in mapping(source).keys() {
            assert!(env_names.contains(key), "{key} is not read by swarmd");
        }
    }
    let grace: f64 = text(&config["data"]["SWARM_SHUTDOWN_GRACE_SECS"])
        .parse()
        .unwrap();
    let defaults = Settings::default();

    let mut pod_templates: Vec<(&str, &Yaml)> = Vec::new();
    for deployment in &by_kind["Deployment"] {
        let name = deployment["metadata"]["name"].as_str().unwrap();
        let template = &deployment["spec"]["template"];
        let labels = mapping(&template["metadata"]["labels"]);
        for (key, value) in mapping(&deployment["spec"]["selector"]["matchLabels"]) {
            assert_eq!(labels.get(&key), Some(&value), "{name}: selector {key}");
        }
        pod_templates.push((name, template));
        let spec = &template["spec"];
        assert!(spec["securityContext"]["runAsNonRoot"].as_bool() == Some(true));
        let container = &spec["containers"][0];
        let image = container["image"].as_str().unwrap();
        assert!(
            image.starts_with("ghcr.io/swarmdirector/swarmd:"),
            "{image}"
        );
        let args = strings(&container["args"]);
        assert_swarmd_accepts(&args, name);
        let env_from: Vec<String> = container["envFrom"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|e| {
                text(
                    &e["configMapRef"]["name"]
                        .clone()
                        .or(e["secretRef"]["name"].clone()),
                )
            })
            .collect();
        assert_eq!(env_from, ["swarm-config", "swarm-secrets"], "{name}");
        for var in container["env"].as_vec().into_iter().flatten() {
            assert!(
                env_names.contains(&text(&var["name"])),
                "{name}: {:?}",
                var["name"]
            );
        }
        let ports: BTreeMap<String, i64> = container["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|p| (text(&p["name"]), p["containerPort"].as_i64().unwrap()))
            .collect();
        let expected_port = match args[0].as_str() {
            "worker" => port_of(&defaults.worker.metrics_addr),
            "api" => port_of(&defaults.api.addr),
            other => panic!("{name} runs {other}"),
        };
        assert_eq!(
            ports.values().copied().collect::<Vec<_>>(),
            [expected_port],
            "{name}"
        );
        for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/health")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{name} {probe}");
            assert!(
                ports.contains_key(&text(&get["port"])),
                "{name} {probe} port"
            );
        }
        let annotations = mapping(&template["metadata"]["annotations"]);
        assert_eq!(
            text(&annotations["prometheus.io/port"]),
            expected_port.to_string()
        );
        if args[0] == "worker" {
            let termination = spec["terminationGracePeriodSeconds"].as_i64().unwrap();
            assert!(
                termination as f64 > grace,
                "{name}: pods are killed before the worker's grace period ends"
            );
        }
    }
    let selects = |selector: &Yaml| {
        let wanted = mapping(selector);
        pod_templates
            .iter()
            .filter(|(_, t)| {
                let labels = mapping(&t["metadata"]["labels"]);
                wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .count()
    };
    for service in &by_kind["Service"] {
        assert!(
            selects(&service["spec"]["selector"]) > 0,
            "{service:?} selects no pod"
        );
    }
    for budget in &by_kind["PodDisruptionBudget"] {
        assert_eq!(selects(&budget["spec"]["selector"]["matchLabels"]), 1);
    }
    let migrate = named("Job", "swarm-migrate").expect("migration job");
    let job_args = strings(&migrate["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert_swarmd_accepts(&job_args, "swarm-migrate");

    // The seed's autoscaler: CPU 70 %, memory 80 %, a custom metric, its behaviour.
    let exported = exported();
    let adapter = read("deploy/k8s/prometheus-adapter.yaml");
    for hpa in &by_kind["HorizontalPodAutoscaler"] {
        let spec = &hpa["spec"];
        let target = spec["scaleTargetRef"]["name"].as_str().unwrap();
        assert!(named("Deployment", target).is_some(), "HPA of {target}");
        let metrics = spec["metrics"].as_vec().unwrap();
        let utilization = |resource: &str| {
            metrics
                .iter()
                .find(|m| m["resource"]["name"].as_str() == Some(resource))
                .and_then(|m| m["resource"]["target"]["averageUtilization"].as_i64())
        };
        assert_eq!(
            (utilization("cpu"), utilization("memory")),
            (Some(70), Some(80))
        );
        let custom = metrics
            .iter()
            .find_map(|m| m["pods"]["metric"]["name"].as_str())
            .expect("a custom metric");
        assert!(
            exported.contains(custom) || adapter.contains(&format!("as: \"{custom}\"")),
            "{custom} is neither exported nor derived by prometheus-adapter"
        );
        let behavior = &spec["behavior"];
        assert_eq!(
            behavior["scaleUp"]["stabilizationWindowSeconds"].as_i64(),
            Some(60)
        );
        assert_eq!(
            behavior["scaleDown"]["stabilizationWindowSeconds"].as_i64(),
            Some(300)
        );
    }
    let hpa_targets: BTreeSet<&str> = by_kind["HorizontalPodAutoscaler"]
        .iter()
        .map(|h| h["spec"]["scaleTargetRef"]["name"].as_str().unwrap())
        .collect();

    // KEDA watches the lanes' durable consumers by their real names.
    for scaled in &by_kind["ScaledObject"] {
        let target = scaled["spec"]["scaleTargetRef"]["name"].as_str().unwrap();
        let deployment = named("Deployment", target).expect("ScaledObject target");
        assert!(
            !hpa_targets.contains(target),
            "{target} has two autoscalers"
        );
        let args = strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]);
        assert_eq!(args[1], "--agents");
        let agent = &args[2];
        let consumers: BTreeSet<String> = scaled["spec"]["triggers"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|t| {
                assert_eq!(t["type"].as_str(), Some("nats-jetstream"));
                assert_eq!(text(&t["metadata"]["stream"]), defaults.nats.stream);
                text(&t["metadata"]["consumer"])
            })
            .collect();
        let lanes: BTreeSet<String> = (0..=9)
            .map(|p| lane_name(&defaults.nats.consumer_group, p, agent))
            .collect();
        assert_eq!(consumers, lanes, "{target}");
    }

    // The seed's quota and limits, and containers that fit them.
    let quota = &by_kind["ResourceQuota"][0]["spec"]["hard"];
    assert_eq!(text(&quota["requests.cpu"]), "20");
    assert_eq!(text(&quota["limits.memory"]), "80Gi");
    let limits = &by_kind["LimitRange"][0]["spec"]["limits"];
    assert_eq!(text(&limits[1]["max"]["cpu"]), "4");
    assert_eq!(text(&limits[1]["min"]["memory"]), "128Mi");

    // Where the tools are installed: kustomize renders every document, and the Kubernetes
    // schemas accept the core manifests (`make validate-deploy` installs the validator).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Ok(rendered) = Command::new("kubectl")
        .args(["kustomize", "deploy/k8s"])
        .current_dir(root)
        .output()
    {
        assert!(rendered.status.success(), "kubectl kustomize failed");
        let kinds = String::from_utf8_lossy(&rendered.stdout)
            .lines()
            .filter(|l| l.starts_with("kind:"))
            .count();
        assert_eq!(kinds, docs.len(), "kustomize renders every document");
    }
    let validator = std::env::var_os("HOME")
        .map(|home| {
            Path::new(&home).join(".cache/swarmdirector/deploy-venv/bin/kubernetes-validate")
        })
        .filter(|path| path.exists());
    if let Some(validator) = validator {
        let core: Vec<String> = listed
            .iter()
            .filter(|f| *f != "keda.yaml")
            .map(|f| format!("deploy/k8s/{f}"))
            .collect();
        let checked = Command::new(validator)
            .args(["--strict", "--quiet", "-k", "1.30.0"])
            .args(&core)
            .current_dir(root)
            .output()
            .expect("kubernetes-validate runs");
        assert!(
            checked.status.success(),
            "{}",
            String::from_utf8_lossy(&checked.stdout)
        );
    }
}

/// Resolves `<<: *anchor` merge keys, which YAML 1.2 parsers leave as plain keys.
fn merged(yaml: &Yaml) -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    let map = mapping(yaml);
    if let Some(base) = map.get("<<") {
        out.extend(merged(base));
    }
    for (k, v) in map {
        if k != "<<" {
            out.insert(k, v);
        }
    }
    out
}

#[test]
fn the_compose_file_runs_the_whole_stack_with_what_swarmd_has() {
    let compose = yaml("docker-compose.yml");
    let services: BTreeMap<String, BTreeMap<String, Yaml>> = mapping(&compose["services"])
        .into_iter()
        .map(|(name, service)| (name, merged(&service)))
        .collect();
    for required in [
        "nats-1",
        "nats-2",
        "nats-3",
        "redis",
        "postgres",
        "postgres-replica",
        "migrate",
        "api-1",
        "api-2",
        "nginx",
        "prometheus",
        "grafana",
        "jaeger",
    ] {
        assert!(services.contains_key(required), "no {required} service");
    }
    let env_names = program_env();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut workers = 0;
    for (name, service) in &services {
        for volume in service.get("volumes").map(strings).unwrap_or_default() {
            if let Some(local) = volume.strip_prefix("./") {
                let local = local.split(':').next().unwrap();
                assert!(root.join(local).exists(), "{name} mounts missing {local}");
            }
        }
        let uses_swarmd = service.get("image").map(text).as_deref() == Some("swarmd:local");
        if !uses_swarmd {
            continue;
        }
        for key in merged(&service["environment"]).keys() {
            assert!(
                env_names.contains(key),
                "{name}: {key} is not read by swarmd"
            );
        }
        let command = service.get("command").map(strings).unwrap_or_default();
        if !command.is_empty() {
            assert_swarmd_accepts(&command, name);
        }
        if command.first().map(String::as_str) == Some("worker") {
            let replicas = service
                .get("deploy")
                .and_then(|d| d["replicas"].as_i64())
                .unwrap_or(1);
            workers += replicas;
            let grace = text(&service["stop_grace_period"]);
            assert!(grace.trim_end_matches('s').parse::<f64>().unwrap() > 25.0);
        }
    }
    assert_eq!(workers, 3, "three workers");
    let env = merged(&services["api-1"]["environment"]);
    assert_eq!(text(&env["SWARM_NATS_REPLICAS"]), "3");
    // Every swarmd service connects to all three nodes as its own NATS role.
    let roles = read("deploy/nats/roles.conf");
    for (service, user) in [
        ("api-1", "api"),
        ("worker", "worker"),
        ("migrate", "admin"),
        ("publish", "publisher"),
    ] {
        let env = merged(&services[service]["environment"]);
        let url = text(&env["SWARM_NATS_URL"]);
        assert!(
            url.starts_with(&format!("nats://{user}:${{"))
                && url.ends_with("@nats-1:4222,nats://nats-2:4222,nats://nats-3:4222"),
            "{service}: {url}"
        );
        assert!(roles.contains(&format!("{{ user: {user}, ")), "{user}");
    }
    for node in ["nats-1", "nats-2", "nats-3"] {
        let volumes = strings(&services[node]["volumes"]);
        assert!(
            volumes
                .iter()
                .any(|v| v.starts_with("./deploy/nats/roles.conf:"))
        );
    }
    assert!(read("deploy/nats/cluster.conf").contains("include ./roles.conf"));
    // Redis: the fleet is the ACL user `swarm`, Redis loads the users `make secrets` writes.
    assert!(text(&env["SWARM_REDIS_URL"]).starts_with("redis://swarm:${"));
    let redis = &services["redis"];
    assert!(strings(&redis["command"]).contains(&"--aclfile".to_string()));
    assert!(strings(&redis["secrets"]).contains(&"redis_users".to_string()));
    assert!(read("scripts/make-secrets.sh").contains("deploy/redis/users.acl.template"));
    assert!(read("deploy/nats/single.conf").contains("include ./roles.conf"));

    // The NATS nodes are the ones the cluster configuration routes to.
    let cluster = read("deploy/nats/cluster.conf");
    for node in ["nats-1", "nats-2", "nats-3"] {
        let command = strings(&services[node]["command"]);
        assert_eq!(command[..2], ["-c", "/etc/nats/cluster.conf"]);
        assert_eq!(command[2..], ["-n", node]);
        assert!(cluster.contains(&format!("nats-route://{node}:6222")));
    }
    assert!(cluster.contains("sync_interval: always"));
    // nginx balances over the API services on the API's port.
    let nginx = read("deploy/nginx/nginx.conf");
    let api_port = port_of(&Settings::default().api.addr);
    for api in ["api-1", "api-2"] {
        assert!(nginx.contains(&format!("server {api}:{api_port}")), "{api}");
    }
    // Prometheus scrapes services that exist; Grafana gets its dashboard and datasource.
    let scrape = yaml("deploy/prometheus/prometheus.yml");
    for job in scrape["scrape_configs"].as_vec().unwrap() {
        for dns in job["dns_sd_configs"].as_vec().into_iter().flatten() {
            for name in strings(&dns["names"]) {
                assert!(services.contains_key(&name), "scrapes unknown {name}");
            }
        }
    }
    let datasource = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(
        datasource["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    // No credential is baked in, and only nginx listens beyond the host.
    let text_of_compose = read("docker-compose.yml");
    for baked in [
        "change-me",
        "postgres:postgres@",
        "replicate",
        "admin/admin",
    ] {
        assert!(
            !text_of_compose.contains(baked),
            "compose bakes in {baked:?}"
        );
    }
    for (name, service) in &services {
        for port in service.get("ports").map(strings).unwrap_or_default() {
            assert!(
                name == "nginx" || port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond loopback"
            );
        }
    }
    let api_job = scrape["scrape_configs"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|job| job["job_name"].as_str() == Some("swarm-api"))
        .expect("the API is scraped");
    assert_eq!(
        api_job["authorization"]["credentials_file"].as_str(),
        Some("/run/secrets/api_read_token"),
        "the API's /metrics needs a read token"
    );
    assert!(strings(&services["prometheus"]["secrets"]).contains(&"api_read_token".to_string()));
    // Traces go to the trace viewer's OTLP/HTTP port.
    assert!(text(&env["OTEL_EXPORTER_OTLP_ENDPOINT"]).starts_with("http://jaeger:4318"));

    // The Compose implementation's own check, where one is installed (the plugin, or the
    // standalone docker-compose); commands run from the repository root.
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut check = if plugin {
        let mut c = Command::new("docker");
        c.args(["compose", "config", "-q"]);
        c
    } else {
        let mut c = Command::new("docker-compose");
        c.args(["config", "-q"]);
        c
    };
    // What `make secrets` writes into `.env`: the file requires each of them.
    for name in [
        "SWARM_API_TOKEN",
        "SWARM_API_READ_TOKEN",
        "POSTGRES_PASSWORD",
        "REPLICATION_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "SWARM_NATS_PUBLISHER_PASSWORD",
        "SWARM_NATS_WORKER_PASSWORD",
        "SWARM_NATS_API_PASSWORD",
        "SWARM_NATS_ADMIN_PASSWORD",
        "REDIS_PASSWORD",
    ] {
        check.env(name, "checked-by-the-test");
    }
    match check.current_dir(root).output() {
        Ok(output) => assert!(
            output.status.success(),
            "compose config: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(_) => println!("no Compose client here: checked the compose file by reading it"),
    }
}

#[test]
fn the_image_is_multi_stage_and_runs_as_a_user() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "a builder and a runtime stage");
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(dockerfile.contains("ENTRYPOINT [\"swarmd\"]"));
}
