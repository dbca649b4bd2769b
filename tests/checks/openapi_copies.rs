//! The OpenAPI document carries its own copies of the task-envelope and dead-letter schemas
//! (a client's tools resolve no reference outside the document): they must say what the
//! files in `schemas/` say.

use std::path::Path;

use serde_json::Value;

fn read(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `file` as a component named `name`: without `$schema` and `$id`, its own `$defs` reached
/// through the component, and the envelope through its component.
fn as_component(file: &str, name: &str) -> Value {
    fn rewrite(value: &mut Value, name: &str) {
        match value {
            Value::Object(fields) => {
                for (key, item) in fields.iter_mut() {
                    match (key.as_str(), item.as_str()) {
                        ("$ref", Some(target)) => {
                            *item = match target.strip_prefix("#/$defs/") {
                                Some(def) => format!("#/components/schemas/{name}/$defs/{def}"),
                                None if target == "task-envelope.schema.json" => {
                                    "#/components/schemas/TaskEnvelope".into()
                                }
                                None => panic!("{name}: a reference to {target}"),
                            }
                            .into();
                        }
                        _ => rewrite(item, name),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| rewrite(item, name)),
            _ => {}
        }
    }
    let mut schema = read(file);
    let fields = schema.as_object_mut().unwrap();
    fields.remove("$schema");
    fields.remove("$id");
    rewrite(&mut schema, name);
    schema
}

#[test]
fn the_documents_copies_match_the_schema_files() {
    let openapi = read("openapi.json");
    for (file, name) in [
        ("task-envelope.schema.json", "TaskEnvelope"),
        ("dead-letter.schema.json", "DeadLetter"),
    ] {
        assert_eq!(
            openapi["components"]["schemas"][name],
            as_component(file, name),
            "components.schemas.{name} differs from schemas/{file}: copy the file's change"
        );
    }
}

#[test]
fn every_reference_stays_inside_the_document() {
    fn refs<'a>(value: &'a Value, into: &mut Vec<&'a str>) {
        match value {
            Value::Object(fields) => {
                for (key, item) in fields {
                    match (key.as_str(), item.as_str()) {
                        ("$ref", Some(target)) => into.push(target),
                        _ => refs(item, into),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, into)),
            _ => {}
        }
    }
    let openapi = read("openapi.json");
    let mut found = Vec::new();
    refs(&openapi, &mut found);
    for target in found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{target}: a reference outside the document"));
        assert!(openapi.pointer(pointer).is_some(), "{target} names nothing");
    }
}

/// `POST /v1/schedules` promises exactly what a definition may hold: the cron pattern is
/// the reader's own ([`cron_syntax::pattern`]), the zones are the ones it knows.
#[test]
fn a_schedules_cron_and_zone_are_what_the_reader_takes() {
    use swarm_director::schedule::cron_syntax;
    let openapi = read("openapi.json");
    let definition = &openapi["components"]["schemas"]["ScheduleDefinition"]["properties"];
    let pattern = cron_syntax::pattern();
    assert_eq!(
        definition["cron"]["pattern"].as_str(),
        Some(pattern.as_str()),
        "the cron pattern differs from the reader's; it is now:\n{}",
        serde_json::to_string(&pattern).unwrap()
    );
    let mut zones: Vec<Value> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|zone| zone.name().into())
        .collect();
    zones.push(Value::Null);
    assert_eq!(
        definition["time_zone"]["enum"],
        Value::Array(zones.clone()),
        "the time zones differ from chrono-tz's; they are now:\n{}",
        serde_json::to_string(&zones).unwrap()
    );
}
