//! The fenced examples of the documentation and the markers that say how each is checked,
//! shared by the inventory (`tests/checks`: every example is run or marked) and the runner
//! (`tests/it/docs.rs`: the runnable ones run against the real services).
//!
//! A marker is an HTML comment (invisible where Markdown is rendered) on the lines just
//! before a fence:
//! - `<!-- doc-test: skip: why -->` — cannot run here (Compose, Kubernetes, a release build);
//!   listed as SKIPPED with its reason every run;
//! - `<!-- doc-test: run by module::test -->` — a test of `tests/it/module.rs` runs it as
//!   printed (the inventory checks the test exists);
//! - `<!-- doc-test: same as path -->` — its lines appear, in order, in that source file,
//!   which the suite compiles and runs;
//! - `<!-- doc-test: setup` … `-->` — shell run before the example, in the same shell (a
//!   worker or API it talks to, a file it reads);
//! - `<!-- doc-test: check` … `-->` — shell run after it, in the same shell, that fails
//!   unless the example did what the text says (a fire completed, a row changed);
//! - `<!-- doc-test: expect text -->` — what the example prints must contain `text`.
//!
//! Unmarked `sh` examples run with bash, `toml` ones load as a settings file, `nginx` ones
//! pass `nginx -t`; an example of any other language must be marked. Fences without a
//! language (diagrams) are not examples.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Files whose examples a newcomer follows.
pub const DOCUMENTS: [&str; 10] = [
    "README.md",
    "docs/usage.md",
    "docs/configuration.md",
    "docs/operations.md",
    "docs/guarantees.md",
    "docs/performance.md",
    "schemas/README.md",
    "schemas/agent-protocol.md",
    "SECURITY.md",
    "deploy/README.md",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    Skip(String),
    RunBy(String),
    SameAs(String),
    Setup(String),
    Check(String),
    Expect(String),
}

/// One fenced example.
#[derive(Debug, Clone)]
pub struct Example {
    pub document: &'static str,
    /// 1-based line of its opening fence.
    pub line: usize,
    pub language: String,
    pub code: String,
    pub markers: Vec<Marker>,
}

impl Example {
    pub fn place(&self) -> String {
        format!("{}:{}", self.document, self.line)
    }

    pub fn skipped(&self) -> Option<&str> {
        self.markers.iter().find_map(|m| match m {
            Marker::Skip(why) => Some(why.as_str()),
            _ => None,
        })
    }

    pub fn checked_elsewhere(&self) -> bool {
        self.markers
            .iter()
            .any(|m| matches!(m, Marker::RunBy(_) | Marker::SameAs(_)))
    }

    pub fn setup(&self) -> String {
        self.markers
            .iter()
            .filter_map(|m| match m {
                Marker::Setup(code) => Some(code.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn check(&self) -> String {
        self.markers
            .iter()
            .filter_map(|m| match m {
                Marker::Check(code) => Some(code.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn expected(&self) -> impl Iterator<Item = &str> {
        self.markers.iter().filter_map(|m| match m {
            Marker::Expect(text) => Some(text.as_str()),
            _ => None,
        })
    }

    /// Languages the runner runs by themselves.
    pub fn runnable_language(&self) -> bool {
        matches!(self.language.as_str(), "sh" | "toml" | "nginx")
    }
}

pub fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every example of `document`, in order.
pub fn examples(document: &'static str) -> Vec<Example> {
    let text = std::fs::read_to_string(repository().join(document))
        .unwrap_or_else(|e| panic!("{document}: {e}"));
    parse(document, &text)
}

/// The examples of `text`, which is `document`.
pub fn parse(document: &'static str, text: &str) -> Vec<Example> {
    let lines: Vec<&str> = text.lines().collect();
    let mut examples = Vec::new();
    let mut markers = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if let Some(rest) = line.trim_start().strip_prefix("<!-- doc-test:") {
            let rest = rest.trim();
            if rest == "setup" || rest == "check" {
                let mut code = Vec::new();
                i += 1;
                while i < lines.len() && lines[i].trim() != "-->" {
                    code.push(lines[i]);
                    i += 1;
                }
                assert!(i < lines.len(), "{document}: a {rest} marker is not closed");
                let code = code.join("\n");
                markers.push(if rest == "setup" {
                    Marker::Setup(code)
                } else {
                    Marker::Check(code)
                });
            } else {
                let body = rest
                    .strip_suffix("-->")
                    .unwrap_or_else(|| panic!("{document}:{}: a marker ends on its line", i + 1))
                    .trim();
                markers.push(marker(body).unwrap_or_else(|| {
                    panic!("{document}:{}: unknown doc-test marker {body:?}", i + 1)
                }));
            }
        } else if let Some(info) = line.trim_start().strip_prefix("```") {
            let indent = line.len() - line.trim_start().len();
            let start = i;
            let mut code = Vec::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "```" {
                code.push(lines[i].get(indent..).unwrap_or(lines[i].trim_start()));
                i += 1;
            }
            let language = info.trim().to_string();
            if !language.is_empty() {
                examples.push(Example {
                    document,
                    line: start + 1,
                    language,
                    code: code.join("\n") + "\n",
                    markers: std::mem::take(&mut markers),
                });
            }
            markers.clear();
        } else if !line.trim().is_empty() {
            markers.clear();
        }
        i += 1;
    }
    examples
}

fn marker(body: &str) -> Option<Marker> {
    let (kind, argument) = body.split_once(' ').unwrap_or((body, ""));
    let argument = argument.trim().to_string();
    Some(match kind {
        "skip:" => Marker::Skip(argument),
        "run" => Marker::RunBy(argument.strip_prefix("by ")?.trim().to_string()),
        "same" => Marker::SameAs(argument.strip_prefix("as ")?.trim().to_string()),
        "expect" => Marker::Expect(argument),
        _ => return None,
    })
}

/// Whether `tests/it/<module>.rs` defines the test `module::name`.
pub fn test_exists(path: &str) -> bool {
    let Some((module, name)) = path.split_once("::") else {
        return false;
    };
    let file = repository().join("tests/it").join(format!("{module}.rs"));
    std::fs::read_to_string(file).is_ok_and(|source| source.contains(&format!("fn {name}(")))
}

/// Whether every non-blank line of `code` appears in `file`, in order (compared trimmed).
pub fn appears_in(code: &str, file: &Path) -> Result<(), String> {
    let source = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut source_lines = source.lines().map(str::trim);
    for wanted in code.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !source_lines.any(|line| line == wanted) {
            return Err(format!(
                "{wanted:?} is not in {} (in order)",
                file.display()
            ));
        }
    }
    Ok(())
}
