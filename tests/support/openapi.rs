//! Checks answers against an OpenAPI 3 description: the operation must be
//! described with that status, and the JSON must fit its schema (types,
//! required properties, enums, nullable, `$ref`, `allOf`) — enough to keep a
//! description and the server from drifting apart.

use serde_json::Value;
use std::collections::BTreeSet;

pub struct OpenApi {
    doc: Value,
    /// (method, path template) of each operation checked so far.
    checked: std::sync::Mutex<BTreeSet<(String, String)>>,
}

impl OpenApi {
    pub fn parse(yaml: &str) -> OpenApi {
        let doc: Value = serde_saphyr::from_str(yaml).expect("the OpenAPI description is YAML");
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
            "an OpenAPI 3 description"
        );
        OpenApi {
            doc,
            checked: Default::default(),
        }
    }

    /// Checks one answer of `method path` (the path as described, e.g.
    /// `/login/start/{flowID}`).
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let operation = &self.doc["paths"][path][method.to_ascii_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not described");
        let mut response = &operation["responses"][status.to_string()];
        if let Some(reference) = response["$ref"].as_str() {
            response = self.resolve(reference);
        }
        assert!(
            response.is_object(),
            "{method} {path} is not described answering {status}: {body}"
        );
        let schema = &response["content"]["application/json"]["schema"];
        if let Err(problem) = self.fits(body, schema, "$") {
            panic!("{method} {path} {status}: {problem}\n{body:#}");
        }
        self.checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((method.to_ascii_lowercase(), path.to_owned()));
    }

    /// Operations described but never checked.
    pub fn unchecked(&self) -> Vec<String> {
        let checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        let mut missing = Vec::new();
        for (path, operations) in self.doc["paths"].as_object().expect("paths") {
            for method in operations.as_object().expect("operations").keys() {
                if !checked.contains(&(method.clone(), path.clone())) {
                    missing.push(format!("{method} {path}"));
                }
            }
        }
        missing
    }

    fn resolve(&self, reference: &str) -> &Value {
        let pointer = reference.strip_prefix('#').expect("a local $ref");
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} is not in the description"))
    }

    fn fits(&self, value: &Value, schema: &Value, at: &str) -> Result<(), String> {
        if let Some(reference) = schema["$ref"].as_str() {
            return self.fits(value, self.resolve(reference), at);
        }
        if let Some(all) = schema["allOf"].as_array() {
            for part in all {
                self.fits(value, part, at)?;
            }
        }
        if value.is_null() {
            return if schema["nullable"] == true || schema.get("type").is_none() {
                Ok(())
            } else {
                Err(format!(
                    "{at} is null, which the description does not allow"
                ))
            };
        }
        if let Some(kind) = schema["type"].as_str() {
            let fits = match kind {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                other => return Err(format!("{at}: unknown type {other} in the description")),
            };
            if !fits {
                return Err(format!("{at} is not {kind}: {value}"));
            }
        }
        if let Some(choices) = schema["enum"].as_array()
            && !choices.contains(value)
        {
            return Err(format!("{at} = {value} is none of {choices:?}"));
        }
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if value.get(name).is_none() {
                return Err(format!("{at}.{name} is required but missing"));
            }
        }
        if let (Some(properties), Some(object)) =
            (schema["properties"].as_object(), value.as_object())
        {
            for (name, property) in properties {
                if let Some(inner) = object.get(name) {
                    self.fits(inner, property, &format!("{at}.{name}"))?;
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                self.fits(item, items, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}
