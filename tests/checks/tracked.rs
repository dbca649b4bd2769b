//! Nothing a program generates is committed: build output, logs, database snapshots, caches
//! and tool reports belong in `.gitignore`, not in the tree a newcomer clones.

use std::{path::Path, process::Command};

/// What a run of the suite, a demo or a tool leaves behind, as path endings or folder names.
const GENERATED_SUFFIXES: &[&str] = &[
    ".rdb",     // a Redis snapshot (redis-server started in the checkout)
    ".aof",     // Redis's append-only file
    ".log",     // any program's log
    ".pyc",     // Python's bytecode
    ".profraw", // coverage counters
    ".orig",    // a patch's leftovers
    ".rej", ".swp", // an editor's swap file
];
const GENERATED_FOLDERS: &[&str] = &[
    "target",
    "__pycache__",
    "node_modules",
    ".hypothesis",
    ".schemathesis",
    "mutants.out",
    "mutants.out.old",
    "ui-artifacts",
];

/// Why `path` is a generated file, or `None` for a source.
fn generated(path: &str) -> Option<String> {
    if let Some(suffix) = GENERATED_SUFFIXES.iter().find(|s| path.ends_with(*s)) {
        return Some(format!("{path}: a generated {suffix} file"));
    }
    let folders = Path::new(path).parent().into_iter().flat_map(Path::iter);
    for folder in folders {
        let folder = folder.to_string_lossy();
        if GENERATED_FOLDERS.contains(&folder.as_ref()) {
            return Some(format!("{path}: inside a generated {folder}/ folder"));
        }
    }
    (Path::new(path).file_name()? == "core").then(|| format!("{path}: a core dump"))
}

#[test]
fn the_rules_catch_what_tools_leave_behind() {
    for path in [
        "dump.rdb",
        "clients/python/swarmd/__pycache__/agent.cpython-311.pyc",
        "target/debug/swarmd",
        "fuzz/target/x",
        "tests/ui/node_modules/playwright-core/index.js",
        "mutants.out/outcomes.json",
        "core",
        "swarmd.log",
    ] {
        assert!(generated(path).is_some(), "{path} passed");
    }
    for path in ["src/main.rs", "schemas/openapi.json", "docs/core-ideas.md"] {
        assert_eq!(generated(path), None);
    }
}

#[test]
fn no_generated_file_is_tracked() {
    let root = env!("CARGO_MANIFEST_DIR");
    if !Path::new(root).join(".git").exists() {
        eprintln!("SKIPPED: {root} is not a git checkout");
        return;
    }
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .expect("git ls-files");
    assert!(listed.status.success(), "git ls-files failed");
    let tracked = String::from_utf8_lossy(&listed.stdout);
    let offenders: Vec<String> = tracked
        .split('\0')
        .filter(|p| !p.is_empty())
        .filter_map(generated)
        .collect();
    assert!(
        offenders.is_empty(),
        "generated files are committed (git rm --cached them and ignore them in .gitignore):\n{}",
        offenders.join("\n")
    );
}
