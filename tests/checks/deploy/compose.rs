//! The Compose file (`deploy/compose/`) runs the whole stack with what `swarmd` has.

use std::collections::BTreeMap;

use swarm_director::config::Settings;

use super::*;

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
