//! Bad input of every kind gets a clear 4xx problem+json, never a 500.

use serde_json::json;
use sqlx::PgPool;

mod support;
use support::{config, gateway, state};

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn malformed_bodies_are_4xx_problems(pool: PgPool) {
    let api = gateway(state(pool, config(&[]))).await;
    let (token, _, _) = api.signup("alice@example.com").await;
    let ws = api.create_workspace(&token, "W").await;
    let cases: Vec<(&str, String, &str, Vec<u8>, u16)> = vec![
        (
            "POST",
            "/auth/signup".into(),
            "application/json",
            b"{\"email\": ".to_vec(),
            400,
        ),
        (
            "POST",
            "/auth/signup".into(),
            "application/json",
            b"not json".to_vec(),
            400,
        ),
        (
            "POST",
            "/auth/signup".into(),
            "application/json",
            b"".to_vec(),
            400,
        ),
        (
            "POST",
            "/auth/signup".into(),
            "application/json",
            b"{} trailing".to_vec(),
            400,
        ),
        (
            "POST",
            "/auth/signup".into(),
            "application/json",
            b"[1,2]".to_vec(),
            422,
        ),
        (
            "POST",
            "/auth/signup".into(),
            "application/json",
            br#"{"email": 5, "password": "x"}"#.to_vec(),
            422,
        ),
        (
            "POST",
            "/auth/signup".into(),
            "application/json",
            br#"{"email": "a@b.co"}"#.to_vec(),
            422,
        ),
        (
            "POST",
            "/auth/signup".into(),
            "application/json",
            br#"{"email":"a@b.co","password":"long enough pw","admin":true}"#.to_vec(),
            422,
        ),
        (
            "POST",
            "/auth/login".into(),
            "text/plain",
            b"hello".to_vec(),
            415,
        ),
        (
            "POST",
            "/auth/login".into(),
            "application/json",
            vec![0xff, 0xfe, 0x00],
            400,
        ),
        (
            "POST",
            "/auth/refresh".into(),
            "application/json",
            br#"{"refresh_token": null}"#.to_vec(),
            422,
        ),
        (
            "POST",
            "/workspaces".into(),
            "application/json",
            br#"{"name": ""}"#.to_vec(),
            422,
        ),
        (
            "POST",
            "/workspaces".into(),
            "application/json",
            br#"{"name": "x", "daily_token_limit": -5}"#.to_vec(),
            422,
        ),
        (
            "POST",
            "/workspaces".into(),
            "application/json",
            br#"{"name": "x", "daily_token_limit": "lots"}"#.to_vec(),
            422,
        ),
        (
            "PATCH",
            format!("/workspaces/{ws}"),
            "application/json",
            br#"{}"#.to_vec(),
            422,
        ),
        (
            "POST",
            format!("/workspaces/{ws}/members"),
            "application/json",
            br#"{"email": "a@b.co", "role": "king"}"#.to_vec(),
            422,
        ),
    ];
    for (method, path, content_type, body, status) in cases {
        let mut request = api
            .http
            .request(method.parse().unwrap(), format!("{}{}", api.base, path))
            .header("content-type", content_type)
            .body(body.clone());
        if !path.starts_with("/auth") {
            request = request.bearer_auth(&token);
        }
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let ct = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let text = response.text().await.unwrap();
        assert_eq!(
            got,
            status,
            "{method} {path} {:?}: {text}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(ct, "application/problem+json", "{method} {path}");
        let problem: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["status"], status);
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn wrong_types_name_the_field(pool: PgPool) {
    let api = gateway(state(pool, config(&[]))).await;
    let (token, _, _) = api.signup("alice@example.com").await;
    let reply = api
        .send(
            "POST",
            "/workspaces",
            Some(&token),
            Some(json!({"name": "x", "daily_token_limit": "lots"})),
        )
        .await;
    assert_eq!(reply.problem(422)["field"], "daily_token_limit");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn bad_ids_in_paths_are_400_problems(pool: PgPool) {
    let api = gateway(state(pool, config(&[]))).await;
    let (token, _, _) = api.signup("alice@example.com").await;
    let ws = api.create_workspace(&token, "W").await;
    for path in [
        "/workspaces/not-a-uuid".to_owned(),
        "/workspaces/123".to_owned(),
        "/workspaces/%27%20OR%201%3D1--".to_owned(),
        format!("/workspaces/{ws}/members/nope"),
    ] {
        let reply = api.send("GET", &path, Some(&token), None).await;
        if path.contains("/members/") {
            // No GET on a single member: the gateway's own 404.
            assert_eq!(reply.status, 404, "{path}");
            let reply = api.send("DELETE", &path, Some(&token), None).await;
            reply.problem(400);
        } else {
            reply.problem(400);
        }
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn oversized_bodies_are_413_problems(pool: PgPool) {
    let api = gateway(state(pool, config(&[]))).await;
    let big = json!({"email": "a@example.com", "password": "p".repeat(70_000)});
    let reply = api.send("POST", "/auth/signup", None, Some(big)).await;
    reply.problem(413);
    // Past API Gateway's own 10 MB limit the gateway answers before any handler.
    let huge = vec![b' '; ragway_gateway::MAX_PAYLOAD_BYTES + 1];
    let reply = api
        .raw("POST", "/auth/signup", "application/json", huge)
        .await;
    assert_eq!(reply.status, 413);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn unauthenticated_workspace_calls_are_401(pool: PgPool) {
    let api = gateway(state(pool, config(&[]))).await;
    for (method, path) in [
        ("GET", "/workspaces"),
        ("POST", "/workspaces"),
        ("GET", "/auth/me"),
    ] {
        api.send(method, path, None, None).await.problem(401);
    }
}
