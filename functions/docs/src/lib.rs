//! The API described: `GET /openapi.json` (the OpenAPI 3.0 document, built
//! from common's own request and response types) and `GET /docs`, a Redoc
//! page whose script this package ships (`GET /docs/{asset}`), so the page
//! works with no CDN.

pub mod openapi30;
pub mod operations;

use std::sync::OnceLock;

use common::http::{path_param, respond};
use common::lambda::Function;
use common::lambda_http::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
};
use common::lambda_http::http::{HeaderValue, StatusCode};
use common::lambda_http::{Body, Request, Response};
use common::state::State;
use common::{ApiError, Result};
use sha2::{Digest, Sha256};

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("docs-openapi", openapi),
    common::http_function!("docs-page", page),
    common::http_function!("docs-asset", asset),
];

/// Redoc's standalone bundle, vendored from the npm registry
/// (assets/README.md names its version and licence).
pub const REDOC_ASSET: &str = "redoc-2.5.4.standalone.js";
// Text, not bytes: API Gateway passes a text body as is, where bytes
// would travel base64-encoded, a third larger.
const REDOC_JS: &str = include_str!("../assets/redoc.standalone.js");

/// The served document: OpenAPI 3.0 JSON and its strong entity tag.
pub struct Published {
    pub json: Vec<u8>,
    pub etag: String,
}

/// The document, built once per cold start: the same bytes and tag for
/// every request, so `If-None-Match` revalidation holds across instances
/// of the same build.
pub fn published() -> &'static Published {
    static DOCUMENT: OnceLock<Published> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let json = serde_json::to_vec(&document()).expect("a JSON value serializes");
        let digest = Sha256::digest(&json);
        let etag = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Published { json, etag }
    })
}

/// The OpenAPI 3.0 document of every route.
pub fn document() -> serde_json::Value {
    openapi30::downgrade(operations::openapi())
}

/// `GET /openapi.json`: public, cacheable, revalidated by its `ETag`.
pub async fn openapi(_state: &State, req: Request) -> Response<Body> {
    let doc = published();
    let tag = common::conditional::quote(&doc.etag);
    let matches = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let builder = Response::builder()
        .header(ETAG, &tag)
        .header(CACHE_CONTROL, "public, max-age=300, must-revalidate");
    if matches {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::Empty)
            .expect("static headers are valid");
    }
    builder
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(doc.json.clone()))
        .expect("static headers are valid")
}

/// `GET /docs`: the Redoc page, reading `/openapi.json` beside it.
pub async fn page(_state: &State, _req: Request) -> Response<Body> {
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ragway API</title>
<style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
<redoc spec-url="openapi.json"></redoc>
<script src="docs/{REDOC_ASSET}"></script>
</body>
</html>
"#
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/html; charset=utf-8")
        .header(CACHE_CONTROL, "public, max-age=300")
        // Redoc styles itself inline and renders from a blob worker; nothing
        // leaves the origin.
        .header(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; style-src 'self' 'unsafe-inline'; \
                 img-src 'self' data:; worker-src 'self' blob:; font-src 'self' data:",
            ),
        )
        .body(Body::from(html))
        .expect("static headers are valid")
}

/// `GET /docs/{asset}`: the page's script; its name carries its version,
/// so caches may keep it for good.
pub async fn asset(_state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let name: String = path_param(&req, "asset")?;
        if name != REDOC_ASSET {
            return Err(ApiError::not_found("asset"));
        }
        asset_response()
    })
    .await
}

fn asset_response() -> Result<Response<Body>> {
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/javascript; charset=utf-8")
        .header(CACHE_CONTROL, "public, max-age=31536000, immutable")
        .body(Body::from(REDOC_JS))
        .expect("static headers are valid"))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every key and value in the document, depth first.
    fn walk<'a>(value: &'a Value, seen: &mut Vec<(&'a str, &'a Value)>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    seen.push((key, inner));
                    walk(inner, seen);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, seen)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_openapi_3_0_without_3_1_constructs() {
        let doc = super::document();
        if let Ok(path) = std::env::var("RAGWAY_OPENAPI_OUT") {
            std::fs::write(path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        }
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
        let mut seen = Vec::new();
        walk(&doc, &mut seen);
        for (key, value) in seen {
            let bad = match key {
                "$schema" | "const" | "jsonSchemaDialect" | "webhooks" | "pathItems"
                | "prefixItems" | "contentMediaType" => true,
                "type" => value.is_array() || value == "null",
                "exclusiveMinimum" | "exclusiveMaximum" => !value.is_boolean(),
                "examples" => value.is_array(),
                _ => false,
            };
            assert!(!bad, "3.1-only construct: {key}: {value}");
        }
    }
}
