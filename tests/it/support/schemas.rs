//! Validators for the JSON Schemas in `schemas/`, resolving their `$ref`s to the files.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn read(file: &str) -> Value {
    let path = schemas_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Serves `https://swarm-director.dev/schemas/<file>` from the repository.
struct LocalSchemas;

impl jsonschema::Retrieve for LocalSchemas {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let file = uri
            .as_str()
            .strip_prefix("https://swarm-director.dev/schemas/")
            .ok_or_else(|| format!("not one of our schemas: {}", uri.as_str()))?;
        Ok(read(file))
    }
}

/// A validator for `schemas/<file>`.
pub fn validator(file: &str) -> jsonschema::Validator {
    jsonschema::options()
        .with_retriever(LocalSchemas)
        .build(&read(file))
        .expect("a valid JSON Schema")
}

/// Panics with every violation when `instance` breaks the schema.
pub fn assert_valid(validator: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{instance} breaks the schema: {errors:?}"
    );
}

/// Panics unless `body` matches the OpenAPI document's response schema for `method`
/// `path` (the route template) and `status`.
pub fn assert_openapi_response(method: &str, path: &str, status: u16, body: &Value) {
    let mut document = read("openapi.json");
    let schema = document["paths"][path][method]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"]
        .clone();
    assert!(
        !schema.is_null(),
        "openapi.json documents no JSON {status} for {method} {path}"
    );
    // Validate against the document itself, so `#/components/...` references resolve.
    let object = document.as_object_mut().expect("an object");
    for (key, value) in schema.as_object().expect("a schema object") {
        object.insert(key.clone(), value.clone());
    }
    let validator = jsonschema::options()
        .with_retriever(LocalSchemas)
        .build(&document)
        .expect("a valid schema");
    assert_valid(&validator, body);
}
