//! Every example of the documentation is checked somewhere: run by `tests/it/docs.rs`, run
//! by a named test, kept the same as compiled source, or marked as not runnable here with a
//! reason. A new example that nothing checks fails here.

use crate::doc_examples::{DOCUMENTS, Marker, appears_in, examples, repository, test_exists};

#[test]
fn every_documented_example_is_run_or_marked_with_a_reason() {
    let mut problems = Vec::new();
    let mut skipped = Vec::new();
    for document in DOCUMENTS {
        for example in examples(document) {
            let place = example.place();
            for marker in &example.markers {
                match marker {
                    Marker::RunBy(test) if !test_exists(test) => {
                        problems.push(format!("{place}: run by {test}, which does not exist"))
                    }
                    Marker::SameAs(path) => {
                        if let Err(why) = appears_in(&example.code, &repository().join(path)) {
                            problems.push(format!("{place}: {why}"));
                        }
                    }
                    Marker::Skip(why) if why.is_empty() => {
                        problems.push(format!("{place}: a skip must say why"))
                    }
                    _ => {}
                }
            }
            match example.skipped() {
                Some(why) => skipped.push(format!("{place} ({}): {why}", example.language)),
                None if example.checked_elsewhere() || example.runnable_language() => {}
                None => problems.push(format!(
                    "{place}: a `{}` example nothing checks: run it from a test and mark it \
                     `<!-- doc-test: run by module::test -->`, or mark why it cannot run here",
                    example.language
                )),
            }
        }
    }
    for line in &skipped {
        println!("SKIPPED {line}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn markers_are_read_as_written() {
    let text = "intro\n<!-- doc-test: skip: needs Docker -->\n```sh\ndocker compose up\n```\n\
                <!-- doc-test: setup\nswarmd worker &\n-->\n<!-- doc-test: expect done -->\n\n\
                ```sh\n  swarmd publish\n```\n```\ndiagram\n```\nprose\n```toml\n[nats]\n```\n";
    let found = crate::doc_examples::parse("x.md", text);
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(found[0].skipped(), Some("needs Docker"));
    assert_eq!(found[0].line, 3);
    assert_eq!(found[1].setup(), "swarmd worker &");
    assert_eq!(found[1].expected().collect::<Vec<_>>(), ["done"]);
    assert_eq!(found[1].code, "  swarmd publish\n");
    assert!(found[2].markers.is_empty(), "markers end at prose");
}
