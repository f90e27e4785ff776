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
    json!({
        "operationId": op_id,
        "summary": route.summary,
        "tags": [route.function.name()],
        "x-dspy-function": route.function.name(),
        "parameters": params,
        "responses": {
            "2XX": {"description": "success"},
            "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
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
    json!({
        "openapi": "3.1.0",
        "info": {"title": "dspy-storage", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Storage for optimized DSPy programs: versions, aliases, metrics, search, retention, backup."},
        "paths": paths,
        "components": {"schemas": {"Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}
        }}}
    })
}

pub async fn serve() -> Response {
    Json(document()).into_response()
}
