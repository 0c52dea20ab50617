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

/// A cursor the server never issued, of each kind a forger would try:
/// timestamps outside what Postgres or chrono can hold, `null`, wrong
/// shapes, base64 that is not JSON, text that is not base64.
fn forged_cursors() -> Vec<String> {
    use base64::Engine;
    let b64 = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let id = "00000000-0000-0000-0000-000000000001";
    let mut cursors: Vec<String> = [
        "\"0000-01-01T00:00:00Z\"".to_owned(),
        "\"10000-01-01T00:00:00Z\"".to_owned(),
        "\"+275760-09-13T00:00:00Z\"".to_owned(),
        "\"-271821-04-20T00:00:00Z\"".to_owned(),
        format!("[\"0000-01-01T00:00:00Z\",\"{id}\"]"),
        format!("[\"+10000-01-01T00:00:00Z\",\"{id}\"]"),
        format!("[\"+275760-09-13T00:00:00Z\",\"{id}\"]"),
        format!("[null,\"{id}\"]"),
        "null".to_owned(),
        "[null,null]".to_owned(),
        "-1".to_owned(),
        "2147483648".to_owned(),
        "1e999".to_owned(),
        "\"\"".to_owned(),
        "{}".to_owned(),
        format!("\"{id}\" "),
        format!(
            "{{\"w\":\"{id}\",\"p\":\"1:18446744073709551615:\",\"t\":null,\"x\":null,\"i\":null}}"
        ),
    ]
    .iter()
    .map(|json| b64(json))
    .collect();
    cursors.extend(
        [
            "null",
            "0000-01-01",
            "0000-01-01T00:00:00Z",
            "+275760-09-13T00:00:00Z",
            "10000-01-01T00:00:00Z",
            "10000",
            "%2B275760-09-13T00%3A00%3A00Z",
            "%00",
            "====",
            "%F0%9F%92%A9",
        ]
        .map(str::to_owned),
    );
    cursors.push("A".repeat(20_000));
    cursors
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn forged_cursors_are_refused_at_once_on_every_paged_route(pool: PgPool) {
    let api = gateway(state(pool, config(&[]))).await;
    let (token, _, _) = api.signup("alice@example.com").await;
    let ws = api.create_workspace(&token, "W").await;
    let doc = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/documents"),
            Some(&token),
            Some(json!({ "title": "t", "content": "some text" })),
        )
        .await;
    assert_eq!(doc.status, 201, "{}", doc.body);
    let doc = doc.body["id"].as_str().unwrap().to_owned();
    let chat = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/chat"),
            Some(&token),
            Some(json!({ "message": "anything?" })),
        )
        .await;
    assert_eq!(chat.status, 201, "{}", chat.body);
    let session = chat.body["session_id"].as_str().unwrap().to_owned();
    let routes = [
        format!("/workspaces/{ws}/documents"),
        format!("/workspaces/{ws}/documents/{doc}/versions"),
        format!("/workspaces/{ws}/documents/{doc}/chunks"),
        format!("/workspaces/{ws}/sync"),
        format!("/workspaces/{ws}/chat/sessions"),
        format!("/workspaces/{ws}/chat/sessions/{session}/messages"),
    ];
    let mut wrong = Vec::new();
    for route in &routes {
        for cursor in forged_cursors() {
            let path = format!("{route}?cursor={cursor}");
            let shown: String = path.chars().take(160).collect();
            let started = std::time::Instant::now();
            let Ok(reply) = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                api.send("GET", &path, Some(&token), None),
            )
            .await
            else {
                wrong.push(format!("{shown}: no answer in 10 s"));
                continue;
            };
            let took = started.elapsed();
            let problem = reply.content_type() == "application/problem+json";
            let field = reply.status != 422 || reply.body["field"] == "cursor";
            if took.as_secs() >= 3 || !(400..500).contains(&reply.status) || !problem || !field {
                wrong.push(format!(
                    "{shown}: {} after {took:?}: {}",
                    reply.status, reply.body
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Postgres text and jsonb cannot hold U+0000: every body member that
/// ends in one is refused with a 422 naming it, never stored, never a 500.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn nul_characters_are_refused_naming_the_field(pool: PgPool) {
    let api = gateway(state(pool, config(&[]))).await;
    let (token, _, _) = api.signup("alice@example.com").await;
    let ws = api.create_workspace(&token, "W").await;
    let docs = format!("/workspaces/{ws}/documents");
    let created = api
        .send(
            "POST",
            &docs,
            Some(&token),
            Some(json!({ "title": "t", "content": "text" })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let doc = format!("{docs}/{}", created.body["id"].as_str().unwrap());
    let etag = created.header("etag").to_owned();
    let nul = "a\u{0}b";
    let cases: Vec<(&str, String, serde_json::Value, &str)> = vec![
        (
            "POST",
            "/auth/signup".into(),
            json!({ "email": format!("x{nul}@example.com"), "password": "correct horse battery" }),
            "email",
        ),
        (
            "POST",
            "/auth/login".into(),
            json!({ "email": format!("x{nul}@example.com"), "password": "correct horse battery" }),
            "email",
        ),
        ("POST", "/workspaces".into(), json!({ "name": nul }), "name"),
        (
            "PATCH",
            format!("/workspaces/{ws}"),
            json!({ "name": nul }),
            "name",
        ),
        (
            "POST",
            format!("/workspaces/{ws}/members"),
            json!({ "email": format!("x{nul}@example.com") }),
            "email",
        ),
        (
            "POST",
            docs.clone(),
            json!({ "title": nul, "content": "x" }),
            "title",
        ),
        (
            "POST",
            docs.clone(),
            json!({ "title": "t", "content": nul }),
            "content",
        ),
        (
            "POST",
            docs.clone(),
            json!({ "title": "t", "content": { "k": [1, nul] } }),
            "content",
        ),
        (
            "POST",
            docs.clone(),
            json!({ "title": "t", "content": { nul: 1 } }),
            "content",
        ),
        // JSON held in a string: the NUL is in the document, escaped.
        (
            "POST",
            docs.clone(),
            json!({ "title": "t", "content": "{\"k\": \"a\\u0000b\"}", "content_type": "application/json" }),
            "content",
        ),
        (
            "POST",
            docs.clone(),
            json!({ "title": "t", "content": "x", "metadata": { "k": nul } }),
            "metadata",
        ),
        (
            "POST",
            docs.clone(),
            json!({ "title": "t", "content": "x", "metadata": { nul: 1 } }),
            "metadata",
        ),
        (
            "PUT",
            doc.clone(),
            json!({ "title": "t", "content": { "k": nul } }),
            "content",
        ),
        (
            "PUT",
            doc.clone(),
            json!({ "title": "t", "content": "x", "metadata": { "k": [nul] } }),
            "metadata",
        ),
        (
            "POST",
            format!("{doc}/versions"),
            json!({ "label": nul }),
            "label",
        ),
        (
            "POST",
            format!("/workspaces/{ws}/uploads"),
            json!({ "filename": "a.txt", "content_type": "text/plain", "size": 5, "title": nul }),
            "title",
        ),
        (
            "POST",
            format!("/workspaces/{ws}/uploads"),
            json!({ "filename": "a.txt", "content_type": "text/plain", "size": 5, "metadata": { "k": nul } }),
            "metadata",
        ),
        (
            "POST",
            format!("/workspaces/{ws}/uploads"),
            json!({ "filename": nul, "content_type": "text/plain", "size": 5 }),
            "filename",
        ),
        (
            "POST",
            format!("/workspaces/{ws}/query"),
            json!({ "question": nul }),
            "question",
        ),
        (
            "POST",
            format!("/workspaces/{ws}/query"),
            json!({ "question": "q", "filters": { "metadata": { "k": nul } } }),
            "filters",
        ),
        (
            "POST",
            format!("/workspaces/{ws}/chat"),
            json!({ "message": nul }),
            "message",
        ),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, field) in cases {
        let reply = api
            .send_with(
                method,
                &path,
                Some(&token),
                Some(body.clone()),
                &[("if-match", &etag)],
            )
            .await;
        let named = reply.body["field"].as_str().unwrap_or_default();
        if reply.status != 422
            || reply.content_type() != "application/problem+json"
            || !named.starts_with(field)
        {
            wrong.push(format!(
                "{method} {path} {body}: {} {}",
                reply.status, reply.body
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Nothing was stored: the document is as created.
    let list = api.send("GET", &docs, Some(&token), None).await;
    assert_eq!(
        list.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        list.body
    );
    let now = api.send("GET", &doc, Some(&token), None).await;
    assert_eq!(now.header("etag"), etag);
}
