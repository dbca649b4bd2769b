//! The Kubernetes manifests (`deploy/k8s/`): confined pods, verified database TLS, NATS
//! roles, a closed network, only variables and flags `swarmd` has, the seed's autoscaling
//! and quotas, and — where the tools are installed — kustomize and the API schemas.

use std::collections::{BTreeMap, BTreeSet};

use swarm_director::{broker::lane_name, config::Settings};
use yaml_rust2::Yaml;

use super::{prometheus::exported, *};

#[test]
fn every_pod_runs_confined_non_root_read_only_without_capabilities() {
    let manifests = Manifests::load();
    // Every pod runs confined: non-root, the runtime's seccomp profile, no privilege
    // escalation, no capabilities, a read-only root.
    let pods = manifests.pods();
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
}

#[test]
fn postgres_certificates_are_verified_against_a_mounted_ca() {
    let manifests = Manifests::load();
    let named = |kind: &str, name: &str| manifests.named(kind, name);
    let pods = manifests.pods();
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
}

#[test]
fn every_fleet_pod_connects_to_nats_as_its_role() {
    let manifests = Manifests::load();
    let by_kind = manifests.by_kind();
    let named = |kind: &str, name: &str| manifests.named(kind, name);
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
}

#[test]
fn the_network_is_closed_by_default() {
    let manifests = Manifests::load();
    let by_kind = manifests.by_kind();
    // Closed by default: a policy denies all traffic not allowed by another.
    let deny = named_policy(&by_kind, "swarm-default-deny");
    assert_eq!(mapping(&deny["spec"]["podSelector"]).len(), 0);
    assert_eq!(strings(&deny["spec"]["policyTypes"]), ["Ingress", "Egress"]);
}

#[test]
fn deployments_hand_swarmd_only_what_it_reads_and_services_select_pods() {
    let manifests = Manifests::load();
    let by_kind = manifests.by_kind();
    let named = |kind: &str, name: &str| manifests.named(kind, name);
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
}

#[test]
fn autoscalers_follow_the_seed_and_keda_watches_real_lanes() {
    let manifests = Manifests::load();
    let by_kind = manifests.by_kind();
    let named = |kind: &str, name: &str| manifests.named(kind, name);
    let defaults = Settings::default();
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
}

#[test]
fn quotas_and_limits_follow_the_seed() {
    let manifests = Manifests::load();
    let by_kind = manifests.by_kind();
    // The seed's quota and limits, and containers that fit them.
    let quota = &by_kind["ResourceQuota"][0]["spec"]["hard"];
    assert_eq!(text(&quota["requests.cpu"]), "20");
    assert_eq!(text(&quota["limits.memory"]), "80Gi");
    let limits = &by_kind["LimitRange"][0]["spec"]["limits"];
    assert_eq!(text(&limits[1]["max"]["cpu"]), "4");
    assert_eq!(text(&limits[1]["min"]["memory"]), "128Mi");
}

#[test]
fn kustomize_renders_and_the_schemas_accept_the_manifests() {
    let manifests = Manifests::load();
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
        assert_eq!(
            kinds,
            manifests.docs.len(),
            "kustomize renders every document"
        );
    }
    let validator = std::env::var_os("HOME")
        .map(|home| {
            Path::new(&home).join(".cache/swarmdirector/deploy-venv/bin/kubernetes-validate")
        })
        .filter(|path| path.exists());
    if let Some(validator) = validator {
        let core: Vec<String> = manifests
            .listed
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
