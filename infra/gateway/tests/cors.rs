//! CORS through the local gateway, as API Gateway's HTTP API answers it
//! from template.yaml's `CorsConfiguration`: preflights answered by the
//! gateway, allowed origins get `Access-Control-Allow-Origin` and the
//! exposed headers (ETag, Retry-After) on actual responses, streamed ones
//! included; other origins get no CORS headers.

use std::sync::Arc;

use ragway_gateway::cors::Cors;
use ragway_gateway::{Gateway, registry, template};
use serde_json::json;
use sqlx::PgPool;

mod support;
use support::{Api, config, repo_root, state};

const APP: &str = "https://app.example.com";

/// The gateway with template.yaml's CORS configuration, its origins
/// replaced by `origins` when given.
async fn gateway(pool: PgPool, overrides: &[(&str, &str)], origins: Option<&[&str]>) -> Api {
    let path = repo_root().join("template.yaml");
    let functions = template::load(&path).unwrap();
    let mut gateway = Gateway::from_template(&functions, &registry()).unwrap();
    let mut cors: Cors = template::load_cors(&path)
        .unwrap()
        .expect("the API has CORS");
    if let Some(origins) = origins {
        cors.allow_origins = origins.iter().map(|o| o.to_string()).collect();
    }
    gateway.cors = Some(cors);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(Arc::new(gateway).serve(state(pool, config(overrides)), listener));
    Api {
        base,
        http: reqwest::Client::new(),
    }
}

async fn preflight(api: &Api, path: &str, origin: &str, method: &str) -> reqwest::Response {
    api.http
        .request(reqwest::Method::OPTIONS, format!("{}{path}", api.base))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization,content-type,if-match",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_template_default_lets_any_origin_call_with_bearer_tokens(pool: PgPool) {
    let api = gateway(pool, &[], None).await;
    assert_eq!(
        template::load_cors(&repo_root().join("template.yaml"))
            .unwrap()
            .unwrap()
            .allow_origins,
        ["*"]
    );
    let answer = preflight(
        &api,
        "/workspaces/x/documents/y",
        "https://any.example",
        "PATCH",
    )
    .await;
    assert_eq!(answer.status(), 204);
    assert_eq!(header(&answer, "access-control-allow-origin"), "*");
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(header(&answer, "access-control-allow-methods").contains(method));
    }
    for name in [
        "authorization",
        "content-type",
        "x-api-key",
        "if-match",
        "if-none-match",
    ] {
        assert!(header(&answer, "access-control-allow-headers").contains(name));
    }
    assert_eq!(header(&answer, "access-control-max-age"), "600");

    let script = api
        .http
        .get(format!("{}/widget.js", api.base))
        .header("origin", "https://any.example")
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(header(&script, "access-control-allow-origin"), "*");
    let exposed = header(&script, "access-control-expose-headers").to_lowercase();
    for name in ["etag", "retry-after", "location"] {
        assert!(exposed.contains(name), "{exposed}");
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn configured_origins_only_get_cors_headers(pool: PgPool) {
    // No token at all from this IP: every request is a 429 with Retry-After.
    let api = gateway(
        pool,
        &[("EMBED_TOKENS_PER_IP_PER_MINUTE", "0")],
        Some(&[APP]),
    )
    .await;

    let allowed = preflight(&api, "/embed/token", APP, "POST").await;
    assert_eq!(allowed.status(), 204);
    assert_eq!(header(&allowed, "access-control-allow-origin"), APP);
    let refused = preflight(&api, "/embed/token", "https://evil.example", "POST").await;
    assert_eq!(refused.status(), 204);
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert!(
        refused
            .headers()
            .get("access-control-allow-methods")
            .is_none()
    );
    // A header the API does not take fails the preflight too.
    let odd = api
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/embed/token", api.base),
        )
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-secret")
        .send()
        .await
        .unwrap();
    assert!(odd.headers().get("access-control-allow-origin").is_none());

    let limited = |origin: &'static str| {
        api.http
            .post(format!("{}/embed/token", api.base))
            .header("origin", origin)
            .json(&json!({ "widget_id": uuid::Uuid::new_v4() }))
            .send()
    };
    let from_app = limited(APP).await.unwrap();
    assert_eq!(from_app.status(), 429);
    assert_eq!(header(&from_app, "access-control-allow-origin"), APP);
    assert!(header(&from_app, "vary").contains("Origin"));
    assert!(
        header(&from_app, "access-control-expose-headers").contains("retry-after"),
        "the widget reads Retry-After"
    );
    assert!(!header(&from_app, "retry-after").is_empty());
    let from_evil = limited("https://evil.example").await.unwrap();
    assert!(
        from_evil
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn streamed_answers_carry_cors_headers_too(pool: PgPool) {
    let api = gateway(pool, &[], Some(&[APP])).await;
    let (token, _, _) = api.signup("streamer@example.com").await;
    let ws = api.create_workspace(&token, "Atlas").await;
    let path = format!("/workspaces/{ws}/chat/stream");
    let allowed = preflight(&api, &path, APP, "POST").await;
    assert_eq!(header(&allowed, "access-control-allow-origin"), APP);

    let streamed = api
        .http
        .post(format!("{}{path}", api.base))
        .bearer_auth(&token)
        .header("origin", APP)
        .json(&json!({ "message": "Anything there?" }))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    assert_eq!(header(&streamed, "content-type"), "text/event-stream");
    assert_eq!(header(&streamed, "access-control-allow-origin"), APP);
    let text = streamed.text().await.unwrap();
    assert!(text.contains("event: done"), "{text}");
}
