//! The OpenAPI 3.1 document, generated from the route table.

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::routes::{all_routes, Route};

fn operation(route: &Route) -> Value {
    let params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let op_id = format!(
        "{}_{}",
        route.method.as_str().to_lowercase(),
        route
            .path
            .trim_matches('/')
            .replace(['/', '.', '-'], "_")
            .replace(['{', '}'], "")
    );
    let mut op = json!({
        "operationId": op_id,
        "summary": route.summary,
        "tags": [route.function.name()],
        "x-dspy-function": route.function.name(),
        "parameters": params,
        "responses": {
            "2XX": {"description": "success"},
            "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
    });
    // The promotion-policy routes' shapes (docs/API.md "Promotion policies and the alias history").
    let schema = |name: &str| json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}});
    match (route.method.as_str(), route.path) {
        ("PUT", "/signatures/{signature}/aliases/{alias}/policy") => {
            op["requestBody"] = schema("AliasPolicy");
            op["responses"]["2XX"] = json!({"description": "the policy in force"});
            op["responses"]["2XX"]["content"] = schema("AliasPolicyRecord")["content"].clone();
        }
        ("GET", "/signatures/{signature}/aliases/{alias}/policy") => {
            op["responses"]["2XX"] = json!({"description": "the policy in force"});
            op["responses"]["2XX"]["content"] = schema("AliasPolicyRecord")["content"].clone();
        }
        ("GET", "/signatures/{signature}/aliases/{alias}/history") => {
            op["responses"]["2XX"] = json!({"description": "entries, newest first"});
            op["responses"]["2XX"]["content"] = schema("AliasHistoryPage")["content"].clone();
        }
        ("PUT", "/signatures/{signature}/aliases/{alias}") => {
            op["requestBody"] = schema("AliasMove");
        }
        _ => {}
    }
    op
}

/// Schemas of the promotion-policy routes.
fn policy_schemas() -> Value {
    let requirement = json!({
        "type": "object", "additionalProperties": false, "required": ["metric"],
        "properties": {
            "metric": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
            "min": {"type": "number"},
            "min_records": {"type": "integer", "minimum": 0, "maximum": 1_000_000, "default": 1},
            "window": {"type": "string", "description": "a duration back from now: 7d, 12h, 30m, 45s, 2w"},
            "environment": {"type": "object", "maxProperties": 16,
                            "additionalProperties": {"type": ["string", "number", "boolean"]}},
            "not_worse_than_current": {"type": "boolean", "default": false},
            "tolerance": {"type": "number", "minimum": 0, "default": 0}
        }
    });
    let policy = json!({
        "type": "object", "additionalProperties": false,
        "properties": {"protected": {"type": "boolean", "default": false}, "require": requirement}
    });
    json!({
        "AliasPolicy": policy,
        "AliasPolicyRecord": {"allOf": [{"$ref": "#/components/schemas/AliasPolicy"}, {"type": "object", "properties": {
            "project": {"type": "string"}, "signature": {"type": "string"}, "alias": {"type": "string"},
            "rev": {"type": "string"}, "updated_at": {"type": "string", "format": "date-time"},
            "updated_by": {"type": "string"}}}]},
        "AliasMove": {"type": "object", "additionalProperties": false, "required": ["version"], "properties": {
            "version": {"type": "string"},
            "expected_version": {"type": ["string", "null"]},
            "override": {"type": "object", "additionalProperties": false, "required": ["reason"],
                         "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 500}}}}},
        "AliasHistoryEntry": {"type": "object", "properties": {
            "at": {"type": "string", "format": "date-time"},
            "action": {"type": "string", "enum": ["move", "override", "refused", "remove", "delete_target", "restore", "policy_set", "policy_removed"]},
            "alias": {"type": "string"},
            "from_version": {"type": ["string", "null"]}, "to_version": {"type": ["string", "null"]},
            "to_id": {"type": "string"}, "by": {"type": "string"},
            "gate": {"type": "object", "properties": {
                "passed": {"type": "boolean"}, "metric": {"type": "string"}, "records": {"type": "integer"},
                "mean": {"type": ["number", "null"]}, "programs": {"type": "array", "items": {"type": "string"}},
                "current_version": {"type": "string"}, "current_mean": {"type": ["number", "null"]},
                "current_records": {"type": "integer"}, "failed": {"type": "string"}}},
            "override_reason": {"type": "string"}, "policy_rev": {"type": "string"},
            "policy": {"$ref": "#/components/schemas/AliasPolicy"}, "backup": {"type": "string"},
            "id": {"type": "string"}}},
        "AliasHistoryPage": {"type": "object", "properties": {
            "signature": {"type": "string"}, "project": {"type": "string"}, "alias": {"type": "string"},
            "entries": {"type": "array", "items": {"$ref": "#/components/schemas/AliasHistoryEntry"}},
            "next_cursor": {"type": ["string", "null"]}}}
    })
}

/// Builds the document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in all_routes() {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method.as_str().to_lowercase()] = operation(&route);
    }
    let mut schemas = json!({"Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "enum": ["invalid_request", "unauthenticated", "forbidden",
                     "not_found", "conflict", "policy_violation", "archived", "payload_too_large",
                     "integrity_error", "throttled", "unavailable", "internal_error"]},
            "message": {"type": "string"}, "field": {"type": "string"}}}}
    }});
    if let (Some(all), Value::Object(more)) = (schemas.as_object_mut(), policy_schemas()) {
        all.extend(more);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "dspy-storage", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Storage for optimized DSPy programs: versions, aliases, metrics, search, retention, backup."},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

pub async fn serve() -> Response {
    Json(document()).into_response()
}
