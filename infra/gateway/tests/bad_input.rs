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

/// Text a hostile client sends: operators, NUL and other controls,
/// escapes, bidi and byte-order marks, dates past any calendar, long runs.
fn hostile_text(rng: &mut impl rand::Rng) -> String {
    const PIECES: &[&str] = &[
        "",
        " ",
        "$and",
        "$or",
        "$in",
        "$gt",
        "$exists",
        "$regex",
        "a.b",
        "a..b",
        ".",
        "tag",
        "\u{0}",
        "a\u{0}b",
        "\\u0000",
        "\u{1}",
        "\"",
        "'; DROP TABLE documents; --",
        "\u{202e}",
        "\u{feff}",
        "💩",
        "null",
        "0000-01-01T00:00:00Z",
        "+275760-09-13T00:00:00Z",
        "%00",
        "protein",
        "W/\"x\"",
    ];
    match rng.random_range(0..10) {
        0 => "x".repeat(rng.random_range(0..5000)),
        1 => (0..rng.random_range(0..20))
            .map(|_| char::from_u32(rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}'))
            .collect(),
        _ => (0..rng.random_range(1..4))
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect(),
    }
}

/// Any JSON value, `depth` levels at most, with [`hostile_text`] keys.
fn hostile_json(rng: &mut impl rand::Rng, depth: u32) -> serde_json::Value {
    use serde_json::Value;
    match rng.random_range(0..if depth == 0 { 6 } else { 9 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => json!([0, -1, i64::MIN, i64::MAX, u64::MAX, 1e308, -0.0, 2.5])[rng.random_range(0..8)]
            .clone(),
        3 => json!(rng.random::<i64>()),
        4 | 5 => Value::String(hostile_text(rng)),
        6 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| hostile_json(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..5))
                .map(|_| (hostile_text(rng), hostile_json(rng, depth - 1)))
                .collect(),
        ),
    }
}

/// Members whose text is the client's own words (not a name from a list).
const FREE_TEXT: &[&str] = &["title", "content", "question", "message"];

/// A body for a route: its own members, each now and then left out or
/// of any type, free text often hostile text; sometimes an unknown
/// member, or no object at all.
fn hostile_body(
    rng: &mut impl rand::Rng,
    members: &[(&str, serde_json::Value)],
) -> serde_json::Value {
    if rng.random_range(0..12) == 0 {
        return hostile_json(rng, 4);
    }
    let mut body = serde_json::Map::new();
    for (name, plausible) in members {
        let value = match rng.random_range(0..20) {
            0 => continue,
            1 | 2 => hostile_json(rng, 4),
            3..=7 if FREE_TEXT.contains(name) => serde_json::Value::String(hostile_text(rng)),
            _ => plausible.clone(),
        };
        body.insert((*name).to_owned(), value);
    }
    if rng.random_range(0..12) == 0 {
        body.insert(hostile_text(rng), hostile_json(rng, 2));
    }
    serde_json::Value::Object(body)
}

/// A metadata filter: plausible operators over hostile values, nested.
fn hostile_filter(rng: &mut impl rand::Rng, depth: u32) -> serde_json::Value {
    match rng.random_range(0..if depth == 0 { 3 } else { 6 }) {
        0 => json!({}),
        1 => json!({ hostile_text(rng): hostile_json(rng, 2) }),
        2 => {
            let op = [
                "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists",
            ][rng.random_range(0..9)];
            json!({ ["tag", "year", "a.b", ""][rng.random_range(0..4)]: { op: hostile_json(rng, 1) } })
        }
        _ => {
            let op = ["$and", "$or"][rng.random_range(0..2)];
            let items: Vec<serde_json::Value> = (0..rng.random_range(0..4))
                .map(|_| hostile_filter(rng, depth - 1))
                .collect();
            json!({ op: items })
        }
    }
}

/// Hundreds of generated hostile bodies (fixed seed) to the routes that
/// take the richest input, over a workspace with ingested documents so
/// retrieval really runs: every answer is 2xx, or a 4xx problem+json
/// whose 422 names the field. Never a 5xx.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn generated_hostile_bodies_get_2xx_or_a_4xx_problem(pool: PgPool) {
    use rand::SeedableRng;
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&probe, "hostile", &suffix).await;
    let state = state(
        pool,
        config(&[
            ("INGEST_QUEUE_URL", &queue),
            ("QUERY_RATE_LIMIT_PER_MINUTE", "100000"),
            ("DEFAULT_DAILY_TOKEN_LIMIT", "100000000"),
        ]),
    );
    let api = gateway(state.clone()).await;
    let (token, _, _) = api.signup("alice@example.com").await;
    let ws = api.create_workspace(&token, "W").await;
    for (title, tag, year) in [("Folding", "bio", 2019), ("Kinetics", "chem", 2024)] {
        let reply = api
            .send(
                "POST",
                &format!("/workspaces/{ws}/documents"),
                Some(&token),
                Some(json!({ "title": title, "content": format!("Protein {title} and enzyme kinetics."), "metadata": { "tag": tag, "year": year } })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    assert_eq!(support::drain(&state, &queue).await.failed, 0);

    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    let mut wrong = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..360 {
        let filters = json!({ "metadata": hostile_filter(&mut rng, 3) });
        let (path, body) = match i % 3 {
            0 => (
                format!("/workspaces/{ws}/documents"),
                hostile_body(
                    &mut rng,
                    &[
                        ("title", json!("A title")),
                        ("content", json!("Some protein text")),
                        ("content_type", json!("text/plain")),
                        ("metadata", json!({ "tag": "bio" })),
                        ("id", json!(uuid::Uuid::new_v4())),
                    ],
                ),
            ),
            1 => (
                format!("/workspaces/{ws}/query"),
                hostile_body(
                    &mut rng,
                    &[
                        ("question", json!("protein kinetics?")),
                        ("mode", json!(["hybrid", "semantic", "keyword"][i % 3])),
                        ("top_k", json!(5)),
                        ("filters", filters),
                        ("answer", json!(i % 2 == 0)),
                        ("max_tokens", json!(64)),
                    ],
                ),
            ),
            _ => (
                format!("/workspaces/{ws}/chat"),
                hostile_body(
                    &mut rng,
                    &[
                        ("message", json!("what about enzymes?")),
                        ("mode", json!(["hybrid", "semantic", "keyword"][i % 3])),
                        ("top_k", json!(3)),
                        ("filters", filters),
                        ("max_tokens", json!(64)),
                    ],
                ),
            ),
        };
        let reply = api
            .send("POST", &path, Some(&token), Some(body.clone()))
            .await;
        let route = path.rsplit('/').next().unwrap().to_owned();
        *seen.entry((route, reply.status)).or_insert(0) += 1;
        let ok = (200..300).contains(&reply.status)
            || ((400..500).contains(&reply.status)
                && reply.content_type() == "application/problem+json"
                && (reply.status != 422 || reply.body["field"].is_string()));
        if !ok {
            let shown: String = body.to_string().chars().take(300).collect();
            wrong.push(format!("{path} {shown}: {} {}", reply.status, reply.body));
        }
    }
    println!("status counts: {seen:?}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The run reached past validation on every route.
    for route in ["documents", "query", "chat"] {
        assert!(
            seen.iter()
                .any(|((r, s), _)| r == route && (200..300).contains(s)),
            "no 2xx for {route}: {seen:?}"
        );
    }
}
