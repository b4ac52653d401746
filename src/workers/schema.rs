//! JSON Schemas of declared tasks, compiled with the `jsonschema` crate.
//!
//! A schema comes from a worker's `hello` or from `[[tasks]]`; compiling it
//! here refuses an invalid one before its task is offered. Remote `$ref`s
//! are never fetched (the crate is built without its HTTP and file
//! resolvers): a worker cannot make the server dial out.

/// A compiled input schema.
pub type Compiled = jsonschema::Validator;

/// Compiles `schema` (draft 2020-12 unless its `$schema` says otherwise).
pub fn compile(schema: &serde_json::Value) -> Result<Compiled, String> {
    jsonschema::validator_for(schema).map_err(|e| {
        let at = e.instance_path().to_string();
        if at.is_empty() {
            format!("not a valid JSON Schema: {e}")
        } else {
            format!("not a valid JSON Schema at {at}: {e}")
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn valid_and_invalid_schemas() {
        assert!(super::compile(&json!({"type": "object", "required": ["a"]})).is_ok());
        assert!(super::compile(&json!(true)).is_ok());
        let e = super::compile(&json!({"type": "nonsense"}))
            .err()
            .unwrap_or_default();
        assert!(e.contains("not a valid JSON Schema"), "{e}");
        let e = super::compile(&json!({"minLength": -1}))
            .err()
            .unwrap_or_default();
        assert!(e.contains("not a valid JSON Schema"), "{e}");
    }

    #[test]
    fn remote_refs_are_not_fetched() {
        let schema = json!({"$ref": "http://127.0.0.1:9/schema.json"});
        assert!(super::compile(&schema).is_err());
    }
}
