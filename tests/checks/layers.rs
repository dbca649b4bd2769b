//! Layers point one way: no two modules of `src/` import each other, directly or around a
//! loop. Modules are compared with their siblings (a parent may use its children and they it;
//! `broker::puller` and `broker::lane_counts` are siblings, `worker` and `mirror` too), an
//! import through a parent's `pub use` counts for the child that defines the item.

use std::collections::{BTreeMap, BTreeSet};

type Module = Vec<String>;

/// Every `.rs` file under `src/` with its module path (`src/broker/puller.rs` → broker::puller).
fn source_files() -> Vec<(Module, String)> {
    let (src, paths) = crate::rust_sources();
    paths
        .into_iter()
        .filter(|path| !path.ends_with("main.rs"))
        .map(|path| {
            let relative = path
                .strip_prefix(&src)
                .expect("under src")
                .with_extension("");
            let mut module: Module = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            (module, without_tests_and_comments(&text))
        })
        .collect()
}

/// The code of a file: unit tests (which may reach anywhere) and comments dropped.
fn without_tests_and_comments(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `use` trees expanded to paths: `use crate::a::{b, c::D as E};` → [crate a b], [crate a c D].
/// The alias, when there is one, is returned beside the path.
fn expand_use(tree: &str) -> Vec<(Vec<String>, Option<String>)> {
    fn split_top(list: &str) -> Vec<&str> {
        let (mut depth, mut start, mut parts) = (0, 0, Vec::new());
        for (i, c) in list.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&list[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&list[start..]);
        parts
    }
    let tree = tree.trim();
    if tree.is_empty() {
        return Vec::new();
    }
    if let Some(open) = tree.find('{') {
        let prefix: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').expect("closing brace")];
        return split_top(inner)
            .into_iter()
            .flat_map(expand_use)
            .map(|(mut path, alias)| {
                if path == ["self"] {
                    path.clear();
                }
                let mut full = prefix.clone();
                full.append(&mut path);
                (full, alias)
            })
            .collect();
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((path, alias)) => (path, Some(alias.trim().to_string())),
        None => (tree, None),
    };
    vec![(
        path.split("::").map(|s| s.trim().to_string()).collect(),
        alias,
    )]
}

/// The `use` statements of a file, each as (is `pub use`, the tree).
fn use_statements(code: &str) -> Vec<(bool, String)> {
    let mut found = Vec::new();
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let public = ["pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find(|prefix| trimmed.starts_with(**prefix));
        let private = trimmed.starts_with("use ");
        if public.is_some() || private {
            let skip = public.map_or(4, |prefix| prefix.len());
            let start = offset + (line.len() - trimmed.len()) + skip;
            let end = code[start..].find(';').map_or(code.len(), |at| start + at);
            found.push((public.is_some(), code[start..end].replace('\n', " ")));
        }
        offset += line.len();
    }
    found
}

/// Paths written inline in code (`crate::scale::auto_concurrency()`, `super::keys::X`).
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(start) {
            let preceded_by_ident = rest[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if !preceded_by_ident {
                paths.push(
                    tail[..len]
                        .split("::")
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                );
            }
            rest = &tail[len.max(1)..];
        }
    }
    paths
}

/// A path as written in `from` made absolute (without the leading `crate`); `None` for
/// paths into other crates.
fn absolute(from: &Module, path: &[String]) -> Option<Vec<String>> {
    let (mut base, mut rest) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        // `self` in a file names its own module, whether `a.rs` or `a/mod.rs`.
        Some("self") => (from.clone(), &path[1..]),
        Some("super") => {
            let mut base = from.clone();
            base.pop();
            (base, &path[1..])
        }
        _ => return None,
    };
    while rest.first().is_some_and(|s| s == "super") {
        base.pop();
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

#[test]
fn no_module_imports_its_way_back() {
    let files = source_files();
    let modules: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
    // Items a module re-exports from a child: (module, name) → the child that defines it.
    let mut reexports: BTreeMap<(Module, String), Module> = BTreeMap::new();
    for (module, code) in &files {
        for (public, tree) in use_statements(code) {
            if !public {
                continue;
            }
            for (path, alias) in expand_use(&tree) {
                let Some(name) = alias.or_else(|| path.last().cloned()) else {
                    continue;
                };
                let relative = if matches!(path[0].as_str(), "crate" | "super" | "self") {
                    path.clone()
                } else {
                    std::iter::once("self".to_string())
                        .chain(path.clone())
                        .collect()
                };
                if let Some(target) = absolute(module, &relative) {
                    reexports.insert((module.clone(), name), target);
                }
            }
        }
    }
    // The deepest module a path reaches, following re-exports.
    let resolve = |path: &[String]| -> Module {
        let mut path = path.to_vec();
        for _ in 0..8 {
            let mut longest = 0;
            for len in 1..=path.len() {
                if modules.contains(&path[..len]) {
                    longest = len;
                }
            }
            let module = path[..longest].to_vec();
            match path.get(longest) {
                Some(name) => match reexports.get(&(module.clone(), name.clone())) {
                    Some(target) if *target != path[..=longest] => {
                        let mut next = target.clone();
                        next.extend(path[longest + 1..].iter().cloned());
                        path = next;
                    }
                    _ => return module,
                },
                None => return module,
            }
        }
        path
    };

    // Edges between siblings: the children of the deepest common ancestor.
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut why: BTreeMap<(Module, Module), String> = BTreeMap::new();
    for (module, code) in &files {
        let mut paths: Vec<Vec<String>> = use_statements(code)
            .into_iter()
            .filter(|(public, _)| !public)
            .flat_map(|(_, tree)| expand_use(&tree).into_iter().map(|(p, _)| p))
            .collect();
        paths.extend(inline_paths(code));
        for path in paths {
            let Some(target) = absolute(module, &path) else {
                continue;
            };
            let target = resolve(&target);
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common == module.len() || common == target.len() {
                continue; // parent and child
            }
            let from = module[..=common].to_vec();
            let to = target[..=common].to_vec();
            why.entry((from.clone(), to.clone()))
                .or_insert_with(|| format!("{} uses {}", module.join("::"), path.join("::")));
            edges.entry(from).or_default().insert(to);
        }
    }

    let mut cycles = Vec::new();
    for start in edges.keys() {
        // A path from a successor back to `start` is a cycle through it.
        let mut stack: Vec<Vec<Module>> = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(trail) = stack.pop() {
            let last = trail.last().expect("non-empty").clone();
            for next in edges.get(&last).into_iter().flatten() {
                if next == start {
                    let mut around = trail.clone();
                    around.push(start.clone());
                    if around.iter().min() == Some(start) {
                        cycles.push(around);
                    }
                } else if seen.insert(next.clone()) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
    }
    let report: Vec<String> = cycles
        .iter()
        .map(|cycle| {
            cycle
                .windows(2)
                .map(|pair| why[&(pair[0].clone(), pair[1].clone())].clone())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    assert!(
        report.is_empty(),
        "modules import each other:\n  {}",
        report.join("\n  ")
    );
}
