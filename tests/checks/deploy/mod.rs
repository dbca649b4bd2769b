//! The deployment files we ship parse, hang together and ask only for what `swarmd` has.
//! They need no running service, so they live apart from the integration tests; the
//! programs that load them for real (nginx, promtool) are in `tests/it/deploy_tools.rs`.

mod compose;
mod image;
mod kubernetes;
mod prometheus;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use yaml_rust2::Yaml;

pub fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn yaml(path: &str) -> yaml_rust2::Yaml {
    yaml_rust2::YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
        .remove(0)
}

pub fn documents(path: &str) -> Vec<Yaml> {
    yaml_rust2::YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

pub fn text(yaml: &Yaml) -> String {
    match yaml {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

pub fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_vec()
        .map_or_else(Vec::new, |v| v.iter().map(text).collect())
}

pub fn mapping(yaml: &Yaml) -> BTreeMap<String, Yaml> {
    yaml.as_hash()
        .map(|h| h.iter().map(|(k, v)| (text(k), v.clone())).collect())
        .unwrap_or_default()
}

/// Environment variables the program reads: the settings table's and those read outside it.
pub fn program_env() -> BTreeSet<String> {
    use swarm_director::config::table::{PROCESS_VARIABLES, SETTINGS};
    SETTINGS
        .iter()
        .map(|setting| setting.env.to_string())
        .chain(PROCESS_VARIABLES.iter().map(|(name, ..)| name.to_string()))
        .collect()
}

/// `swarmd <args> --help` succeeds only when every subcommand and flag in `args` exists.
pub fn assert_swarmd_accepts(args: &[String], context: &str) {
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

pub fn port_of(addr: &str) -> i64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// The NetworkPolicy named `name`.
pub fn named_policy<'a>(by_kind: &BTreeMap<String, Vec<&'a Yaml>>, name: &str) -> &'a Yaml {
    by_kind["NetworkPolicy"]
        .iter()
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no NetworkPolicy {name}"))
}

pub const K8S_FILES: [&str; 10] = [
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

/// The Kubernetes manifests the kustomization lists, each of a known kind, named, and in
/// the fleet's namespace.
pub struct Manifests {
    pub listed: Vec<String>,
    pub docs: Vec<(String, Yaml)>,
}

impl Manifests {
    pub fn load() -> Self {
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
        }
        Self { listed, docs }
    }

    pub fn by_kind(&self) -> BTreeMap<String, Vec<&Yaml>> {
        let mut by_kind: BTreeMap<String, Vec<&Yaml>> = BTreeMap::new();
        for (_, doc) in &self.docs {
            let kind = doc["kind"].as_str().unwrap_or_default();
            by_kind.entry(kind.to_string()).or_default().push(doc);
        }
        by_kind
    }

    pub fn named(&self, kind: &str, name: &str) -> Option<&Yaml> {
        self.docs.iter().map(|(_, doc)| doc).find(|doc| {
            doc["kind"].as_str() == Some(kind) && doc["metadata"]["name"].as_str() == Some(name)
        })
    }

    /// The pod templates of every Deployment and Job.
    pub fn pods(&self) -> Vec<&Yaml> {
        let by_kind = self.by_kind();
        let mut pods: Vec<&Yaml> = Vec::new();
        for kind in ["Deployment", "Job"] {
            for doc in by_kind.get(kind).into_iter().flatten() {
                pods.push(&doc["spec"]["template"]["spec"]);
            }
        }
        pods
    }
}
