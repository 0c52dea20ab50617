//! utoipa 5 writes OpenAPI 3.1; API Gateway imports 3.0. This rewrites the
//! few 3.1 constructs utoipa emits into their 3.0 forms, so the served
//! document is the one an operator can import.

use serde_json::{Map, Value, json};

/// The 3.0 version the served document declares.
pub const VERSION: &str = "3.0.3";

/// `doc` as an OpenAPI 3.0 document.
pub fn downgrade(doc: utoipa::openapi::OpenApi) -> Value {
    let mut value = serde_json::to_value(&doc).expect("an OpenAPI document serializes");
    let root = value.as_object_mut().expect("the document is an object");
    root.insert("openapi".into(), json!(VERSION));
    for key in ["jsonSchemaDialect", "webhooks"] {
        root.remove(key);
    }
    if let Some(license) = root.get_mut("info").and_then(|i| i.get_mut("license")) {
        // 3.1's SPDX `identifier`; 3.0 has only a name and a url.
        license.as_object_mut().map(|l| l.remove("identifier"));
    }
    if let Some(components) = root.get_mut("components").and_then(Value::as_object_mut) {
        components.remove("pathItems");
    }
    rewrite(&mut value);
    value
}

fn rewrite(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(rewrite),
        Value::Object(map) => {
            schema_to_30(map);
            map.values_mut().for_each(rewrite);
        }
        _ => {}
    }
}

/// One object, if it is a 3.1 schema, in 3.0 terms. Only schema objects
/// carry these keys with these value types (a `properties` map's entry
/// named `type` is an object, not a string or a list).
fn schema_to_30(map: &mut Map<String, Value>) {
    map.remove("$schema");
    // `type: [T, "null"]` → `type: T, nullable: true`.
    if let Some(Value::Array(types)) = map.get("type").cloned() {
        let others: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        let nullable = others.len() < types.len();
        match others.as_slice() {
            [one] => {
                map.insert("type".into(), one.clone());
            }
            _ => {
                map.remove("type");
            }
        }
        if nullable {
            map.insert("nullable".into(), json!(true));
        }
    }
    if map.get("type") == Some(&json!("null")) {
        map.remove("type");
        map.insert("nullable".into(), json!(true));
    }
    // `oneOf: [{type: null}, X]` (utoipa's Option of a referenced type) →
    // `allOf: [X], nullable: true` (3.0 ignores a `$ref`'s siblings).
    for key in ["oneOf", "anyOf"] {
        let Some(Value::Array(variants)) = map.get(key) else {
            continue;
        };
        let is_null = |v: &Value| {
            v.get("type") == Some(&json!("null")) && v.as_object().is_some_and(|o| o.len() == 1)
        };
        if !variants.iter().any(is_null) {
            continue;
        }
        let rest: Vec<Value> = variants.iter().filter(|v| !is_null(v)).cloned().collect();
        map.remove(key);
        map.insert("nullable".into(), json!(true));
        if rest.len() == 1 {
            map.insert("allOf".into(), Value::Array(rest));
        } else {
            map.insert(key.into(), Value::Array(rest));
        }
    }
    // Numeric exclusive bounds → the bound and a boolean.
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(number @ Value::Number(_)) = map.get(exclusive).cloned() {
            map.insert(bound.into(), number);
            map.insert(exclusive.into(), json!(true));
        }
    }
    if let Some(constant) = map.remove("const") {
        map.insert("enum".into(), json!([constant]));
    }
    // A schema's `examples` list → one `example` (a media type's `examples`
    // is a map, valid in 3.0, and stays).
    if let Some(Value::Array(examples)) = map.get("examples") {
        let first = examples.first().cloned();
        map.remove("examples");
        if let Some(first) = first {
            map.insert("example".into(), first);
        }
    }
    for key in [
        "contentEncoding",
        "contentMediaType",
        "propertyNames",
        "unevaluatedProperties",
    ] {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_types_and_references_take_their_3_0_forms() {
        let mut schema = json!({
            "properties": {
                "type": {"type": ["string", "null"]},
                "next": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/X"}]},
                "n": {"type": "integer", "exclusiveMinimum": 0, "examples": [3]},
            }
        });
        rewrite(&mut schema);
        assert_eq!(
            schema,
            json!({
                "properties": {
                    "type": {"type": "string", "nullable": true},
                    "next": {"allOf": [{"$ref": "#/components/schemas/X"}], "nullable": true},
                    "n": {"type": "integer", "minimum": 0, "exclusiveMinimum": true, "example": 3},
                }
            })
        );
    }
}
