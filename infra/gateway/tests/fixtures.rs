//! The events/ fixtures (the ones `sam local invoke -e` takes) fed to the
//! handlers in-process, as Lambda would deliver them.

use common::lambda::Handler;
use common::lambda_http::Body;
use ragway_gateway::registry;
use serde_json::Value;
use sqlx::PgPool;

mod support;
use support::{config, repo_root, state};

fn fixture_text(binary: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!("events/{binary}.json"))).unwrap()
}

/// Invokes `binary` with its fixture after text substitutions.
async fn invoke(
    state: &common::state::State,
    binary: &str,
    replace: &[(&str, &str)],
) -> (u16, Value) {
    let mut text = fixture_text(binary);
    for (from, to) in replace {
        text = text.replace(from, to);
    }
    let request = common::lambda_http::request::from_str(&text)
        .expect("fixture parses as an API Gateway request");
    let function = registry().into_iter().find(|f| f.name == binary).unwrap();
    let Handler::Http(handler) = function.handler else {
        panic!("{binary} is not HTTP")
    };
    let response = handler(state, request).await;
    let status = response.status().as_u16();
    let body = match response.body() {
        Body::Empty => Value::Null,
        body => serde_json::from_slice(body.as_ref()).unwrap(),
    };
    if status >= 400 {
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{binary}"
        );
    }
    (status, body)
}

/// Invokes streaming `binary` with its fixture; the whole body as text.
async fn invoke_stream(
    state: &common::state::State,
    binary: &str,
    replace: &[(&str, &str)],
) -> (u16, String) {
    let mut text = fixture_text(binary);
    for (from, to) in replace {
        text = text.replace(from, to);
    }
    let request = common::lambda_http::request::from_str(&text)
        .expect("fixture parses as a function URL request");
    let function = registry().into_iter().find(|f| f.name == binary).unwrap();
    let Handler::Stream(route) = function.handler else {
        panic!("{binary} does not stream")
    };
    let (parts, body) = (route.handler)(state, request).await.into_parts();
    let body = body.collect().await;
    (
        parts.status.as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn every_route_fixture_runs_through_its_handler(pool: PgPool) {
    support::verify_sender().await;
    let state = state(pool, config(&[]));
    let (status, tokens) = invoke(&state, "auth-signup", &[]).await;
    assert_eq!(status, 201, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, login) = invoke(&state, "auth-login", &[]).await;
    assert_eq!(status, 200, "{login}");
    let auth = [
        ("REPLACE_WITH_ACCESS_TOKEN", access.as_str()),
        ("REPLACE_WITH_REFRESH_TOKEN", refresh.as_str()),
    ];

    let (status, me) = invoke(&state, "auth-me", &auth).await;
    assert_eq!(
        (status, me["email"].as_str()),
        (200, Some("alice@example.com"))
    );
    assert_eq!(invoke(&state, "auth-jwks", &[]).await.0, 200);
    let (status, discovery) = invoke(&state, "auth-openid", &[]).await;
    assert_eq!(
        (status, discovery["jwks_uri"].as_str()),
        (200, Some("http://ragway.test/.well-known/jwks.json"))
    );

    // The fixtures name a workspace that does not exist: 404 problems, never 5xx.
    let (status, created) = invoke(&state, "workspaces-create", &auth).await;
    assert_eq!((status, created["name"].as_str()), (201, Some("Research")));
    assert_eq!(
        invoke(&state, "workspaces-list", &auth).await.1["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for binary in [
        "workspaces-get",
        "workspaces-update",
        "workspaces-delete",
        "members-list",
        "members-add",
        "members-remove",
        "invitations-create",
        "invitations-list",
        "invitations-revoke",
        "shares-create",
        "shares-list",
        "shares-revoke",
        "jobs-import",
        "jobs-export",
        "jobs-list",
        "jobs-get",
        "jobs-cancel",
        "schemes-create",
        "schemes-list",
        "schemes-get",
        "schemes-delete",
        "classify-run",
        "classify-results",
        "classify-retry",
        "schedules-create",
        "schedules-list",
        "schedules-get",
        "schedules-update",
        "schedules-delete",
        "documents-create",
        "documents-list",
        "documents-get",
        "documents-update",
        "documents-delete",
        "documents-versions",
        "documents-version",
        "documents-snapshot",
        "documents-restore",
        "documents-chunks",
        "documents-sync",
        "uploads-create",
        "query-ask",
        "chat-send",
        "chat-sessions",
        "chat-session-create",
        "chat-messages",
        "chat-delete",
        "usage-today",
        "usage-days",
        "study-summarize",
        "study-qa",
        "study-mindmap",
        "ai-generate",
    ] {
        let (status, body) = invoke(&state, binary, &auth).await;
        assert_eq!(status, 404, "{binary}: {body}");
    }
    // The same fixtures pointed at the real workspace succeed.
    let ws = created["id"].as_str().unwrap();
    let real = [
        auth[0],
        auth[1],
        ("0b4d3c2a-1111-4e5f-8a9b-0c1d2e3f4a5b", ws),
    ];
    assert_eq!(invoke(&state, "workspaces-get", &real).await.0, 200);
    assert_eq!(
        invoke(&state, "workspaces-update", &real).await.1["name"],
        "Research (renamed)"
    );
    assert_eq!(invoke(&state, "members-list", &real).await.0, 200);

    // Invitations: made and listed in the real workspace; the invitee's
    // routes (the caller standing in) see none and find no such id.
    let (status, invited) = invoke(&state, "members-add", &real).await;
    assert_eq!(
        (status, invited["email"].as_str()),
        (202, Some("bob@example.com")),
        "{invited}"
    );
    let (status, invited) = invoke(&state, "invitations-create", &real).await;
    assert_eq!((status, invited["role"].as_str()), (201, Some("admin")));
    let (status, listed) = invoke(&state, "invitations-list", &real).await;
    assert_eq!(
        (status, listed["items"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{listed}"
    );
    assert_eq!(invoke(&state, "invitations-revoke", &real).await.0, 404);
    let as_invitee = [
        ("REPLACE_WITH_INVITEE_TOKEN", access.as_str()),
        ("REPLACE_WITH_INVITATION_TOKEN", "rwi_not-the-token"),
    ];
    let (status, received) = invoke(&state, "invitations-received", &as_invitee).await;
    assert_eq!(
        (status, received["items"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    assert_eq!(
        invoke(&state, "invitations-accept", &as_invitee).await.0,
        404
    );
    assert_eq!(
        invoke(&state, "invitations-decline", &as_invitee).await.0,
        404
    );

    let (status, upload) = invoke(&state, "uploads-create", &real).await;
    assert_eq!(status, 201, "{upload}");
    assert_eq!(upload["document"]["status"], "pending");
    assert!(
        upload["upload"]["url"]
            .as_str()
            .unwrap()
            .contains("Trial_report_final_.pdf")
    );

    // Documents: create, then every other fixture pointed at the new document.
    let (status, doc) = invoke(&state, "documents-create", &real).await;
    assert_eq!(
        (status, doc["status"].as_str()),
        (201, Some("pending")),
        "{doc}"
    );
    let doc_id = doc["id"].as_str().unwrap().to_owned();
    let etag = doc["etag"].as_str().unwrap().to_owned();
    let on_doc = [
        real[0],
        real[1],
        real[2],
        ("0b4d3c2a-2222-4e5f-8a9b-0c1d2e3f4a5b", doc_id.as_str()),
        ("REPLACE_WITH_ETAG", etag.as_str()),
    ];
    // A share link to the document: made, listed, opened without signing
    // in, revoked; then it opens no more.
    let (status, shared) = invoke(&state, "shares-create", &on_doc).await;
    assert_eq!(
        (status, shared["target_kind"].as_str()),
        (201, Some("document")),
        "{shared}"
    );
    let on_share = [
        real[0],
        real[1],
        real[2],
        (
            "0b4d3c2a-8888-4e5f-8a9b-0c1d2e3f4a5b",
            shared["id"].as_str().unwrap(),
        ),
        (
            "REPLACE_WITH_SHARE_TOKEN",
            shared["token"].as_str().unwrap(),
        ),
    ];
    let (status, listed) = invoke(&state, "shares-list", &on_share).await;
    assert_eq!(
        (status, listed["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{listed}"
    );
    let (status, view) = invoke(&state, "shares-view", &on_share).await;
    assert_eq!(
        (status, view["kind"].as_str()),
        (200, Some("document")),
        "{view}"
    );
    assert_eq!(invoke(&state, "shares-revoke", &on_share).await.0, 204);
    assert_eq!(invoke(&state, "shares-view", &on_share).await.0, 404);
    // Jobs: an import awaiting its file, an export queued; both listed,
    // the import read back and cancelled, then cancelling it again is 409.
    let (status, import) = invoke(&state, "jobs-import", &real).await;
    assert_eq!(
        (
            status,
            import["status"].as_str(),
            import["upload"]["method"].as_str()
        ),
        (201, Some("awaiting_upload"), Some("PUT")),
        "{import}"
    );
    let (status, export) = invoke(&state, "jobs-export", &real).await;
    assert_eq!(
        (status, export["kind"].as_str(), export["status"].as_str()),
        (202, Some("export"), Some("queued")),
        "{export}"
    );
    let on_job = [
        real[0],
        real[1],
        real[2],
        (
            "0b4d3c2a-9999-4e5f-8a9b-0c1d2e3f4a5b",
            import["id"].as_str().unwrap(),
        ),
    ];
    let (status, listed) = invoke(&state, "jobs-list", &on_job).await;
    assert_eq!(
        (status, listed["items"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{listed}"
    );
    let (status, job) = invoke(&state, "jobs-get", &on_job).await;
    assert_eq!(
        (status, job["kind"].as_str(), job["status"].as_str()),
        (200, Some("import"), Some("awaiting_upload")),
        "{job}"
    );
    let (status, cancelled) = invoke(&state, "jobs-cancel", &on_job).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    assert_eq!(invoke(&state, "jobs-cancel", &on_job).await.0, 409);
    // Classification: a scheme made, listed and read; a run of it queued
    // (over the document above); that job's results (none yet) and its
    // retry, refused while it runs; the scheme deleted, then not found.
    let (status, scheme) = invoke(&state, "schemes-create", &real).await;
    assert_eq!(
        (status, scheme["name"].as_str()),
        (201, Some("Topics")),
        "{scheme}"
    );
    let on_scheme = [
        real[0],
        real[1],
        real[2],
        (
            "0b4d3c2a-aaaa-4e5f-8a9b-0c1d2e3f4a5b",
            scheme["id"].as_str().unwrap(),
        ),
    ];
    let (status, listed) = invoke(&state, "schemes-list", &on_scheme).await;
    assert_eq!(
        (status, listed.as_array().map(Vec::len)),
        (200, Some(1)),
        "{listed}"
    );
    let (status, got) = invoke(&state, "schemes-get", &on_scheme).await;
    assert_eq!((status, &got["id"]), (200, &scheme["id"]), "{got}");
    let (status, run) = invoke(&state, "classify-run", &on_scheme).await;
    assert_eq!(
        (status, run["kind"].as_str(), run["status"].as_str()),
        (202, Some("classify"), Some("queued")),
        "{run}"
    );
    let on_run = [
        on_scheme[0],
        on_scheme[1],
        on_scheme[2],
        on_scheme[3],
        (
            "0b4d3c2a-9999-4e5f-8a9b-0c1d2e3f4a5b",
            run["id"].as_str().unwrap(),
        ),
    ];
    let (status, results) = invoke(&state, "classify-results", &on_run).await;
    assert_eq!(
        (status, results["items"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{results}"
    );
    let (status, retried) = invoke(&state, "classify-retry", &on_run).await;
    assert_eq!(status, 409, "{retried}");
    assert_eq!(invoke(&state, "schemes-delete", &on_scheme).await.0, 204);
    assert_eq!(invoke(&state, "schemes-get", &on_scheme).await.0, 404);
    // Schedules: an export every day made, listed and read (no runs yet),
    // paused; deleted, then not found.
    let (status, schedule) = invoke(&state, "schedules-create", &real).await;
    assert_eq!(
        (
            status,
            schedule["action"].as_str(),
            schedule["paused"].as_bool()
        ),
        (201, Some("export"), Some(false)),
        "{schedule}"
    );
    let on_schedule = [
        real[0],
        real[1],
        real[2],
        (
            "0b4d3c2a-bbbb-4e5f-8a9b-0c1d2e3f4a5b",
            schedule["id"].as_str().unwrap(),
        ),
    ];
    let (status, listed) = invoke(&state, "schedules-list", &on_schedule).await;
    assert_eq!(
        (status, listed.as_array().map(Vec::len)),
        (200, Some(1)),
        "{listed}"
    );
    let (status, got) = invoke(&state, "schedules-get", &on_schedule).await;
    assert_eq!(
        (status, &got["id"], got["runs"].as_array().map(Vec::len)),
        (200, &schedule["id"], Some(0)),
        "{got}"
    );
    let (status, paused) = invoke(&state, "schedules-update", &on_schedule).await;
    assert_eq!(
        (status, paused["paused"].as_bool()),
        (200, Some(true)),
        "{paused}"
    );
    assert_eq!(
        invoke(&state, "schedules-delete", &on_schedule).await.0,
        204
    );
    assert_eq!(invoke(&state, "schedules-get", &on_schedule).await.0, 404);
    for (binary, expected) in [
        ("documents-list", 200),
        ("documents-get", 200),
        ("documents-update", 200),
        ("documents-versions", 200),
        ("documents-version", 200),
        ("documents-snapshot", 201),
        ("documents-restore", 200),
        ("documents-chunks", 200),
        ("documents-sync", 200),
        ("documents-delete", 204),
    ] {
        let (status, body) = invoke(&state, binary, &on_doc).await;
        assert_eq!(status, expected, "{binary}: {body}");
    }

    // Query, chat and usage against the real workspace (its one document
    // was deleted above, so nothing is retrieved and no tokens are spent).
    let (status, answered) = invoke(&state, "query-ask", &real).await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["citations"], serde_json::json!([]));
    // The function URL's event (no route key, no path parameters).
    let (status, streamed) = invoke_stream(&state, "query-stream", &real).await;
    assert_eq!(status, 200, "{streamed}");
    assert!(
        streamed.starts_with("event: citations\ndata: {\"citations\":[]}")
            && streamed.contains("event: done"),
        "{streamed}"
    );
    assert_eq!(invoke_stream(&state, "query-stream", &auth).await.0, 404);
    let (status, chat) = invoke(&state, "chat-send", &real).await;
    assert_eq!(status, 201, "{chat}");
    let session = chat["session_id"].as_str().unwrap().to_owned();
    let on_session = [
        real[0],
        real[1],
        real[2],
        ("0b4d3c2a-3333-4e5f-8a9b-0c1d2e3f4a5b", session.as_str()),
    ];
    let (status, sessions) = invoke(&state, "chat-sessions", &on_session).await;
    assert_eq!(
        (status, sessions["items"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (status, messages) = invoke(&state, "chat-messages", &on_session).await;
    assert_eq!(
        (status, messages["items"].as_array().map(Vec::len)),
        (200, Some(2))
    );
    assert_eq!(invoke(&state, "chat-delete", &on_session).await.0, 204);
    let (status, made) = invoke(&state, "chat-session-create", &real).await;
    assert_eq!(
        (status, made["title"].as_str()),
        (201, Some("Trial questions"))
    );
    let (status, streamed) = invoke_stream(&state, "chat-stream", &real).await;
    assert_eq!(status, 200, "{streamed}");
    assert!(streamed.contains("\"session_id\""), "{streamed}");
    let (status, today) = invoke(&state, "usage-today", &real).await;
    assert_eq!((status, today["used"].as_i64()), (200, Some(0)), "{today}");
    let (status, days) = invoke(&state, "usage-days", &real).await;
    assert_eq!(
        (status, days["items"].as_array().map(Vec::len)),
        (200, Some(23)),
        "{days}"
    );

    // The study tools and the AI proxy in the real workspace: the given
    // text is summarized, the rest finds no document and says so.
    let (status, summary) = invoke(&state, "study-summarize", &real).await;
    assert_eq!(status, 200, "{summary}");
    assert!(
        summary["summary"].as_str().unwrap().starts_with("- "),
        "{summary}"
    );
    for binary in ["study-qa", "study-mindmap", "ai-generate"] {
        let (status, body) = invoke(&state, binary, &real).await;
        assert_eq!(status, 200, "{binary}: {body}");
    }

    let (status, rotated) = invoke(&state, "auth-refresh", &auth).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(invoke(&state, "auth-logout", &auth).await.0, 204);
    assert_eq!(invoke(&state, "workspaces-delete", &real).await.0, 204);
    // The health fixture reaches the test stack's database, bucket and queue.
    let (status, health) = invoke(&state, "health-check", &[]).await;
    assert_eq!(status, 200, "{health}");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn sqs_fixtures_are_acknowledged(pool: PgPool) {
    let state = state(pool, config(&[]));
    let handler = support::ingest_worker();
    for fixture in ["ingest-worker", "s3-test-event"] {
        let event = serde_json::from_str(&fixture_text(fixture)).unwrap();
        let response = handler(&state, event).await;
        assert!(response.batch_item_failures.is_empty(), "{fixture}");
    }
    // A record whose body is not an S3 notification is reported, alone.
    let mut event: Value = serde_json::from_str(&fixture_text("ingest-worker")).unwrap();
    let mut poison = event["Records"][0].clone();
    poison["messageId"] = "poison-1".into();
    poison["body"] = "this is not json".into();
    // A queued inline document is a message the worker understands.
    let mut inline = event["Records"][0].clone();
    inline["messageId"] = "inline-1".into();
    inline["body"] = common::ingest::events::DocumentChanged {
        workspace_id: common::ids::WorkspaceId::new(),
        document_id: common::ids::DocumentId::new(),
        version: 1,
    }
    .to_message()
    .into();
    event["Records"].as_array_mut().unwrap().push(inline);
    event["Records"].as_array_mut().unwrap().push(poison);
    let response = handler(&state, serde_json::from_value(event).unwrap()).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, vec!["poison-1".to_owned()]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn every_schedule_fixture_runs_through_its_handler(pool: PgPool) {
    let state = state(pool, config(&[]));
    let mut ran = Vec::new();
    for function in registry() {
        let Handler::Schedule(handler) = function.handler else {
            continue;
        };
        let event = serde_json::from_str(&fixture_text(function.name)).unwrap();
        handler(&state, event)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", function.name));
        ran.push(function.name);
    }
    ran.sort();
    assert_eq!(
        ran,
        [
            "ingest-indexer",
            "ingest-requeue",
            "schedules-dispatch",
            "usage-sweeper",
            "workspaces-purge"
        ]
    );
}
