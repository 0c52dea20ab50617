//! The OpenAPI document: exactly template.yaml's routes (the API
//! Gateway ones and the streaming function URLs), a valid OpenAPI 3.0
//! document, served with a strong ETag beside its Redoc page; and
//! schemathesis, fuzzing every operation against the local gateway with
//! a real token, finds no 5xx and no response the document does not
//! describe.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use ragway_gateway::{Gateway, registry, template};
use serde_json::Value;
use sqlx::PgPool;

mod support;
use support::{config, gateway, repo_root, state};

/// `METHOD /path` of every route the gateway serves from template.yaml.
fn template_routes() -> BTreeSet<String> {
    let functions = template::load(&repo_root().join("template.yaml")).unwrap();
    let gateway = Gateway::from_template(&functions, &registry()).unwrap();
    gateway.routes.iter().map(|r| r.route_key()).collect()
}

/// `METHOD /path` of every operation in the document.
fn documented_routes(doc: &Value) -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"].contains(&&**method) {
                routes.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    routes
}

#[test]
fn the_document_has_exactly_the_templates_routes() {
    let routes = template_routes();
    let documented = documented_routes(&docs::document());
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "routes without an operation: {undocumented:?}; operations without a route: {unserved:?}"
    );
    // The streamed answers are in it, as server-sent events.
    let doc = docs::document();
    for path in [
        "/workspaces/{workspace_id}/query/stream",
        "/workspaces/{workspace_id}/chat/stream",
    ] {
        assert!(
            doc["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]
                .is_object(),
            "{path} does not document text/event-stream"
        );
    }
}

/// A tool of the fuzzing venv (infra/stack/fuzz.sh installs it).
fn fuzz_tool(name: &str) -> PathBuf {
    let path = repo_root().join(".local/fuzz-venv/bin").join(name);
    assert!(
        path.exists(),
        "{} missing: run infra/stack/fuzz.sh (installs infra/stack/fuzz-requirements.txt)",
        path.display()
    );
    path
}

#[test]
fn the_document_is_valid_openapi_3_0() {
    let doc = docs::document();
    assert_eq!(doc["openapi"], docs::openapi30::VERSION);
    let file = std::env::temp_dir().join(format!("ragway-openapi-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = Command::new(fuzz_tool("openapi-spec-validator"))
        .args(["--schema", "3.0"])
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "openapi-spec-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn openapi_json_is_public_and_revalidates_by_its_etag(pool: PgPool) {
    let api = gateway(state(pool, config(&[]))).await;
    let reply = api.send("GET", "/openapi.json", None, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type(), "application/json");
    assert_eq!(reply.body, docs::document());
    let etag = reply.header("etag").to_owned();
    assert!(etag.starts_with('"'), "a strong tag: {etag}");
    assert!(reply.header("cache-control").starts_with("public"));

    let again = api
        .send_with(
            "GET",
            "/openapi.json",
            None,
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(again.status, 304);
    assert_eq!(again.body, Value::Null);
    assert_eq!(again.header("etag"), etag);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_docs_page_loads_its_script_from_the_service(pool: PgPool) {
    let api = gateway(state(pool, config(&[]))).await;
    let page = api.send("GET", "/docs", None, None).await;
    assert_eq!(page.status, 200);
    assert!(page.content_type().starts_with("text/html"));
    let html = page.body.as_str().unwrap();
    let script = format!("docs/{}", docs::REDOC_ASSET);
    assert!(
        html.contains(&format!(r#"<script src="{script}">"#)),
        "{html}"
    );
    assert!(html.contains(r#"spec-url="openapi.json""#));
    assert!(!html.contains("https://"), "nothing from a CDN: {html}");

    let asset = api.send("GET", &format!("/{script}"), None, None).await;
    assert_eq!(asset.status, 200);
    assert!(asset.content_type().starts_with("text/javascript"));
    assert!(
        asset.body.as_str().unwrap().len() > 500_000,
        "the Redoc bundle"
    );
    assert!(asset.header("cache-control").contains("immutable"));

    let missing = api.send("GET", "/docs/redoc-0.0.0.js", None, None).await;
    missing.problem(404);
}

/// One schemathesis run against `base`; its output, and whether it passed.
async fn schemathesis(
    base: &str,
    env: Vec<(&'static str, String)>,
    args: &[&str],
) -> (bool, String) {
    // Hypothesis keeps an example database in the working directory: a
    // scratch one, not the crate's.
    let scratch = std::env::temp_dir().join(format!("ragway-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut command = Command::new(fuzz_tool("schemathesis"));
    command
        .current_dir(&scratch)
        .arg("--config-file")
        .arg(repo_root().join("infra/stack/schemathesis.toml"))
        .args(["--no-color", "run", &format!("{base}/openapi.json")])
        .args(["--url", base])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
        ])
        .args(["--workers", "1", "--seed", "19", "--request-timeout", "30"])
        .args(args)
        .envs(env);
    // The gateway runs on this test's runtime: wait for the child off it.
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&scratch);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The run's summary lines (cases, failures), for the log.
fn summary(output: &str) -> String {
    output
        .lines()
        .filter(|l| {
            l.contains("test cases")
                || l.contains("Test cases")
                || l.contains("operations")
                || l.contains("passed")
                || l.contains("failed")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn schemathesis_finds_no_server_errors_and_no_undocumented_responses(pool: PgPool) {
    // Rate limits would answer most questions with 429 (documented, but
    // then the answering code goes untested). A queue of the test's own,
    // drained below: the classify job's results are real ones.
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&probe, "fuzz", &suffix).await;
    let overrides = [
        ("QUERY_RATE_LIMIT_PER_MINUTE", "100000"),
        ("INGEST_QUEUE_URL", queue.as_str()),
    ];
    let state = state(pool, config(&overrides));
    let api = gateway(state.clone()).await;
    let (token, _, user_id) = api.signup("fuzz@example.com").await;
    let ws = api.create_workspace(&token, "fuzzed").await;
    let document = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/documents"),
            Some(&token),
            Some(serde_json::json!({ "title": "Fuzz", "content": "Schemathesis reads this." })),
        )
        .await;
    assert_eq!(document.status, 201, "{}", document.body);
    let session = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/chat/sessions"),
            Some(&token),
            Some(serde_json::json!({ "title": "fuzz" })),
        )
        .await;
    assert_eq!(session.status, 201, "{}", session.body);
    let invitation = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/invitations"),
            Some(&token),
            Some(serde_json::json!({ "email": "invitee@example.com", "role": "member" })),
        )
        .await;
    assert_eq!(invitation.status, 201, "{}", invitation.body);
    let key = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/keys"),
            Some(&token),
            Some(serde_json::json!({ "name": "fuzz", "scopes": ["query"] })),
        )
        .await;
    assert_eq!(key.status, 201, "{}", key.body);
    let widget = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/widgets"),
            Some(&token),
            Some(serde_json::json!({ "name": "fuzz", "allowed_origins": ["https://example.com"] })),
        )
        .await;
    assert_eq!(widget.status, 201, "{}", widget.body);
    let share = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/shares"),
            Some(&token),
            Some(serde_json::json!({ "document_id": document.body["id"] })),
        )
        .await;
    assert_eq!(share.status, 201, "{}", share.body);
    // An import awaiting its file: the job the job routes' path names.
    let job = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/imports"),
            Some(&token),
            Some(serde_json::json!({ "size": 1024, "filename": "fuzz.jsonl" })),
        )
        .await;
    assert_eq!(job.status, 201, "{}", job.body);
    // A classification scheme, and a run of it over the document, done
    // (the document ingested first): the job the results and retry
    // routes' path names.
    let scheme = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/schemes"),
            Some(&token),
            Some(serde_json::json!({
                "name": "Topics",
                "fields": [
                    { "name": "topic", "kind": "single_label", "description": "What it is about",
                      "values": [
                        { "value": "testing", "description": "fuzzing, schemas, reading" },
                        { "value": "cooking", "description": "dough, oven, yeast" }
                      ] },
                    { "name": "year", "kind": "number" },
                    { "name": "summary", "kind": "text" }
                ]
            })),
        )
        .await;
    assert_eq!(scheme.status, 201, "{}", scheme.body);
    let scheme_id = scheme.body["id"].as_str().unwrap().to_owned();
    assert_eq!(support::drain(&state, &queue).await.failed, 0);
    let classified = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/schemes/{scheme_id}/jobs"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(classified.status, 202, "{}", classified.body);
    assert_eq!(support::drain(&state, &queue).await.failed, 0);
    let classify_job = classified.body["id"].as_str().unwrap().to_owned();
    let results = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/jobs/{classify_job}/results"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (
            results.status,
            results.body["items"].as_array().map(Vec::len)
        ),
        (200, Some(1)),
        "{}",
        results.body
    );
    // A schedule (a daily export, not due during the run): the one the
    // schedule routes' path names. Fuzzed PATCHes and DELETEs may pause
    // or delete it; a deleted one answers 404, which is documented.
    let schedule = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/schedules"),
            Some(&token),
            Some(serde_json::json!({
                "name": "Nightly export", "action": "export", "every_minutes": 1440
            })),
        )
        .await;
    assert_eq!(schedule.status, 201, "{}", schedule.body);
    let env = vec![
        ("RAGWAY_FUZZ_SCHEME_ID", scheme_id),
        (
            "RAGWAY_FUZZ_SCHEDULE_ID",
            schedule.body["id"].as_str().unwrap().to_owned(),
        ),
        ("RAGWAY_FUZZ_CLASSIFY_JOB_ID", classify_job),
        (
            "RAGWAY_FUZZ_JOB_ID",
            job.body["id"].as_str().unwrap().to_owned(),
        ),
        (
            "RAGWAY_FUZZ_SHARE_ID",
            share.body["id"].as_str().unwrap().to_owned(),
        ),
        (
            "RAGWAY_FUZZ_SHARE_TOKEN",
            share.body["token"].as_str().unwrap().to_owned(),
        ),
        (
            "RAGWAY_FUZZ_KEY_ID",
            key.body["id"].as_str().unwrap().to_owned(),
        ),
        (
            "RAGWAY_FUZZ_WIDGET_ID",
            widget.body["id"].as_str().unwrap().to_owned(),
        ),
        ("RAGWAY_FUZZ_TOKEN", token.clone()),
        ("RAGWAY_FUZZ_WORKSPACE_ID", ws.clone()),
        (
            "RAGWAY_FUZZ_DOCUMENT_ID",
            document.body["id"].as_str().unwrap().to_owned(),
        ),
        (
            "RAGWAY_FUZZ_SESSION_ID",
            session.body["id"].as_str().unwrap().to_owned(),
        ),
        (
            "RAGWAY_FUZZ_INVITATION_ID",
            invitation.body["id"].as_str().unwrap().to_owned(),
        ),
        ("RAGWAY_FUZZ_MEMBER_ID", user_id),
        ("RAGWAY_FUZZ_ASSET", docs::REDOC_ASSET.to_owned()),
    ];
    // Deleting the workspace or the account would turn every later case
    // into a 404 or 401: those two run last, on their own.
    let last = "^DELETE (/auth/me|/workspaces/\\{workspace_id\\})$";
    let started = std::time::Instant::now();
    let (passed, output) = schemathesis(
        &api.base,
        env.clone(),
        &["--max-examples", "20", "--exclude-name-regex", last],
    )
    .await;
    eprintln!(
        "schemathesis, every operation but the two last:\n{}",
        summary(&output)
    );
    assert!(passed, "{output}");
    let (passed, output) = schemathesis(
        &api.base,
        env,
        &["--max-examples", "20", "--include-name-regex", last],
    )
    .await;
    eprintln!(
        "schemathesis, the two last:\n{}\n({:.0?} in all)",
        summary(&output),
        started.elapsed()
    );
    assert!(passed, "{output}");
}
