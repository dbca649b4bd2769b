//! Checks that need no running service: the shape of the source tree and the files we ship.

mod config_reference;
mod deploy;
#[path = "../shared/doc_examples.rs"]
mod doc_examples;
mod docs;

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with the directory it was found in.
fn rust_sources() -> (PathBuf, Vec<PathBuf>) {
    fn walk(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    (src, paths)
}
mod layers;
mod openapi_copies;
mod tracked;
