//! The OpenAPI 3 document (`GET /api/openapi.json`), built from the routes and the request
//! and reply types of `shared::api`: each route names its types, and their schemas come from the
//! types themselves (utoipa), so the document cannot drift from what is served. The committed
//! copy, `docs/openapi.json`, is checked against it by the test suite.

use super::route::{Route, Who};
use super::schema::{Body, collect_of};
use serde_json::{Map, Value, json};

fn content(body: &Body, schemas: &mut Vec<(String, Value)>) -> Option<Value> {
    match body {
        Body::None => None,
        Body::Json {
            name,
            collect,
            array,
        } => {
            collect(schemas);
            let r = json!({"$ref": format!("#/components/schemas/{}", name())});
            let schema = if *array {
                json!({"type": "array", "items": r})
            } else {
                r
            };
            Some(json!({"application/json": {"schema": schema}}))
        }
        Body::Multipart(parts) => {
            let props: Map<String, Value> = parts
                .iter()
                .map(|(name, file)| {
                    let s = if *file {
                        json!({"type": "string", "format": "binary"})
                    } else {
                        json!({"type": "string"})
                    };
                    ((*name).to_owned(), s)
                })
                .collect();
            Some(
                json!({"multipart/form-data": {"schema": {"type": "object", "properties": props}}}),
            )
        }
        Body::Bytes(media) => {
            Some(json!({ *media: {"schema": {"type": "string", "format": "binary"}} }))
        }
    }
}

/// The OpenAPI 3 document of `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    let mut schemas: Vec<(String, Value)> = Vec::new();
    collect_of::<freeagent_shared::api_error::ApiErrorBody>(&mut schemas);
    for route in routes {
        let security = match route.who {
            Who::Anyone => json!([]),
            Who::ApiKey | Who::RegisterKey => json!([{"apiKey": []}, {"bearer": []}]),
            Who::ApiKeyOrBuildToken => json!([{"apiKey": []}, {"bearer": []}, {"buildToken": []}]),
            Who::Worker => json!([{"workerToken": []}, {"apiKey": []}]),
        };
        let mut params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if let Some(q) = route.query {
            params.extend(q());
        }
        let mut ok = json!({"description": "Success"});
        if let Some(c) = content(&route.reply, &mut schemas) {
            ok["content"] = c;
        }
        let mut op = json!({
            "summary": route.summary,
            "operationId": format!("{}{}", route.method, route.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "security": security,
            "responses": {
                route.status.to_string(): ok,
                "default": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiErrorBody"}}}},
            },
        });
        if let Some(c) = content(&route.request, &mut schemas) {
            op["requestBody"] = json!({"required": true, "content": c});
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(route.method.to_owned(), op);
        }
    }
    // Sorted, so the document is stable byte for byte.
    let components: std::collections::BTreeMap<String, Value> = schemas.into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Free Agent gateway", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "buildToken": {"type": "apiKey", "in": "header", "name": "X-Build-Token"},
                "workerToken": {"type": "apiKey", "in": "header", "name": "X-Worker-Token"},
            },
            "schemas": components,
        },
    })
}
