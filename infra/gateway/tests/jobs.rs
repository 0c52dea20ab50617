//! Workspace jobs against the real bucket, queue and database: a JSONL
//! import runs through the ingest queue in steps, refuses bad lines alone
//! with their line numbers, skips duplicates, and its documents become
//! ready and answer questions; a redelivered or doubled step changes
//! nothing twice; an export downloads as JSONL that imports into another
//! workspace as it was; strangers learn nothing, and a cancelled import
//! stops.

use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::Api;
use support::uploads::{Uploads, stack};

/// Asks for an import of `bytes` and PUTs them: the job's id.
async fn import(s: &Uploads, token: &str, ws: &str, bytes: &[u8]) -> String {
    let reply = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{ws}/imports"),
            Some(token),
            Some(json!({ "size": bytes.len(), "filename": "corpus.jsonl" })),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.body["status"], "awaiting_upload");
    assert_eq!(reply.body["kind"], "import");
    Uploads::put(&reply.body["upload"], bytes).await;
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn job(api: &Api, token: &str, ws: &str, id: &str) -> Value {
    let reply = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/jobs/{id}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

fn jsonl(lines: &[String]) -> Vec<u8> {
    let mut out = lines.join("\n").into_bytes();
    out.push(b'\n');
    out
}

async fn live_documents(pool: &PgPool, ws: &str) -> i64 {
    let mut tx = common::db::tenant_tx(pool, None, Some(ws.parse().unwrap()))
        .await
        .unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM documents WHERE deleted_at IS NULL")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    n
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_import_makes_ready_documents_and_refuses_bad_lines_alone(pool: PgPool) {
    let s = stack(pool.clone(), &[]).await;
    let (alice, _, _) = s.api.signup("alice@example.com").await;
    let ws = s.api.create_workspace(&alice, "Library").await;

    let mut lines = vec![
        json!({"title": "Aspirin trial", "client_id": "a-1", "metadata": {"team": "cardio"},
               "content": "Low-dose aspirin reduced cardiovascular events in the trial cohort."})
        .to_string(),
        String::new(),
        r#"{"title": "broken""#.to_owned(),
        json!({"title": "No content"}).to_string(),
        json!({"title": "Statins", "client_id": "a-2", "content_type": "text/markdown",
               "content": "# Statins\n\nStatins lower LDL cholesterol."})
        .to_string(),
        json!({"title": "Aspirin again", "client_id": "a-1", "content": "other text"}).to_string(),
        json!({"title": "Settings", "content": {"dose": "81 mg"}}).to_string(),
        json!({"title": "Nul", "content": "a\u{0}b"}).to_string(),
        json!({"title": "Settings", "content": {"dose": "81 mg"}}).to_string(),
    ];
    // Past one step's lines: the import continues through the queue.
    for i in 0..1_100 {
        lines.push(
            json!({"title": format!("Note {i}"), "content": format!("Observation number {i} of the ward.")})
                .to_string(),
        );
    }
    let file = jsonl(&lines);
    let id = import(&s, &alice, &ws, &file).await;
    s.drain().await;

    let done = job(&s.api, &alice, &ws, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["lines_read"], 1_108,
        "blank lines are not read: {done}"
    );
    assert_eq!(done["created"], 1_103);
    assert_eq!(done["skipped"], 2, "a-1 again, and the same Settings line");
    assert_eq!(done["failed"], 3);
    assert_eq!(done["bytes"], file.len());
    assert_eq!(done["documents"]["ready"], 1_103, "{}", done["documents"]);
    let failures = done["failures"].as_array().unwrap();
    let numbers: Vec<i64> = failures
        .iter()
        .map(|f| f["line"].as_i64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        [3, 4, 8],
        "physical line numbers, blank lines counted"
    );
    assert!(
        failures[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a JSON document line")
    );
    assert!(
        failures[1]["reason"]
            .as_str()
            .unwrap()
            .contains("needs content")
    );
    assert!(
        failures[2]["reason"]
            .as_str()
            .unwrap()
            .starts_with("content:")
    );
    assert_eq!(live_documents(&pool, &ws).await, 1_103);

    // The imported documents answer questions, with their metadata.
    s.assert_cites(&ws, &alice, "Does aspirin reduce cardiovascular events?")
        .await;
    let listed = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{ws}/documents?query=Aspirin"),
            Some(&alice),
            None,
        )
        .await;
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", listed.body);
    assert_eq!(items[0]["metadata"], json!({"team": "cardio"}));
    assert_eq!(items[0]["status"], "ready");

    // The same file again: every line it took is a duplicate now.
    let again = import(&s, &alice, &ws, &file).await;
    s.drain().await;
    let again = job(&s.api, &alice, &ws, &again).await;
    assert_eq!(again["status"], "succeeded");
    assert_eq!(again["created"], 0, "{again}");
    assert_eq!(again["skipped"], 1_105);
    assert_eq!(again["failed"], 3);
    assert_eq!(live_documents(&pool, &ws).await, 1_103);

    let list = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{ws}/jobs?limit=1"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["items"][0]["id"], again["id"], "newest first");
    let next = list.body["next_cursor"].as_str().unwrap();
    let rest = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{ws}/jobs?limit=1&cursor={next}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(rest.body["items"][0]["id"], done["id"]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_redelivered_or_doubled_step_changes_nothing_twice(pool: PgPool) {
    let s = stack(pool.clone(), &[]).await;
    let (alice, _, _) = s.api.signup("alice@example.com").await;
    let ws = s.api.create_workspace(&alice, "Library").await;
    let lines: Vec<String> = (0..3)
        .map(|i| json!({"title": format!("Doc {i}"), "content": format!("Text {i}.")}).to_string())
        .collect();
    let id = import(&s, &alice, &ws, &jsonl(&lines)).await;

    // The first step, delivered twice at once and then once more (S3's
    // own notification is still queued).
    let step = common::ingest::events::JobStep {
        workspace_id: ws.parse().unwrap(),
        job_id: id.parse().unwrap(),
        offset: 0,
    };
    let (a, b) = tokio::join!(
        common::jobs::run::run_step(&s.state, step.clone(), 1),
        common::jobs::run::run_step(&s.state, step.clone(), 1)
    );
    a.unwrap();
    b.unwrap();
    s.drain().await;
    common::jobs::run::run_step(&s.state, step, 2)
        .await
        .unwrap();

    let done = job(&s.api, &alice, &ws, &id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(
        (
            done["lines_read"].as_i64(),
            done["created"].as_i64(),
            done["skipped"].as_i64()
        ),
        (Some(3), Some(3), Some(0)),
        "{done}"
    );
    assert_eq!(live_documents(&pool, &ws).await, 3);
    assert_eq!(done["documents"]["ready"], 3);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_export_imports_into_another_workspace_as_it_was(pool: PgPool) {
    let s = stack(pool.clone(), &[]).await;
    let (alice, _, _) = s.api.signup("alice@example.com").await;
    let ws = s.api.create_workspace(&alice, "Library").await;
    let create = |body: Value| {
        let (api, alice, ws) = (&s.api, &alice, &ws);
        async move {
            let reply = api
                .send(
                    "POST",
                    &format!("/workspaces/{ws}/documents"),
                    Some(alice),
                    Some(body),
                )
                .await;
            assert_eq!(reply.status, 201, "{}", reply.body);
            reply
        }
    };
    let first = create(
        json!({"title": "Protocol", "content": "Version one of the protocol.",
                              "metadata": {"site": "north"}}),
    )
    .await;
    let first_id = first.body["id"].as_str().unwrap().to_owned();
    let edited = s
        .api
        .send_with(
            "PUT",
            &format!("/workspaces/{ws}/documents/{first_id}"),
            Some(&alice),
            Some(
                json!({"title": "Protocol", "content": "Version two of the protocol.",
                        "metadata": {"site": "north"}}),
            ),
            &[("if-match", first.header("etag"))],
        )
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    create(json!({"title": "Doses", "content": {"aspirin": "81 mg"}})).await;
    s.drain().await;
    // A scheme, run over both documents: the export carries it and each
    // document's values.
    let scheme = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{ws}/schemes"),
            Some(&alice),
            Some(
                json!({"name": "Kinds", "fields": [{"name": "kind", "kind": "single_label",
                        "values": [{"value": "protocol", "description": "protocol version"},
                                   {"value": "dose", "description": "aspirin mg dose"}]}]}),
            ),
        )
        .await;
    assert_eq!(scheme.status, 201, "{}", scheme.body);
    let run = s
        .api
        .send(
            "POST",
            &format!(
                "/workspaces/{ws}/schemes/{}/jobs",
                scheme.body["id"].as_str().unwrap()
            ),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(run.status, 202, "{}", run.body);
    s.drain().await;

    let reply = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{ws}/exports"),
            Some(&alice),
            Some(json!({"include_chunks": true})),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.body["status"], "queued");
    let export_id = reply.body["id"].as_str().unwrap().to_owned();
    s.drain().await;
    let done = job(&s.api, &alice, &ws, &export_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["exported"], 2);
    let url = done["download"]["url"].as_str().unwrap();
    let file = reqwest::get(url).await.unwrap();
    assert!(file.status().is_success());
    let file = file.bytes().await.unwrap().to_vec();
    assert_eq!(done["bytes"], file.len());
    let lines: Vec<Value> = file
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["scheme"]["name"], "Kinds", "schemes come first");
    assert_eq!(
        lines[0]["scheme"]["fields"][0]["values"][1]["value"],
        "dose"
    );
    let protocol = lines.iter().find(|l| l["title"] == "Protocol").unwrap();
    assert_eq!(protocol["classifications"][0]["scheme"], "Kinds");
    assert_eq!(protocol["classifications"][0]["field"], "kind");
    assert_eq!(protocol["classifications"][0]["value"], "protocol");
    assert_eq!(protocol["classifications"][0]["model"], "default");
    assert_eq!(protocol["content"], "Version two of the protocol.");
    assert_eq!(protocol["versions"].as_array().unwrap().len(), 2);
    assert_eq!(
        protocol["versions"][0]["content"],
        "Version one of the protocol."
    );
    let chunks = protocol["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty());
    assert!(
        chunks[0]["embedding"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    );

    // Into another workspace: the same documents, history and metadata.
    let other = s.api.create_workspace(&alice, "Copy").await;
    let imported = import(&s, &alice, &other, &file).await;
    s.drain().await;
    let imported = job(&s.api, &alice, &other, &imported).await;
    assert_eq!(imported["status"], "succeeded", "{imported}");
    assert_eq!(
        imported["created"], 3,
        "two documents and the scheme: {imported}"
    );
    assert_eq!(imported["documents"]["ready"], 2);
    let schemes = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{other}/schemes"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(schemes.body[0]["name"], "Kinds", "{}", schemes.body);
    assert_eq!(schemes.body[0]["fields"], scheme.body["fields"]);
    let listed = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{other}/documents"),
            Some(&alice),
            None,
        )
        .await;
    let copy = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["title"] == "Protocol")
        .unwrap()
        .clone();
    assert_eq!(copy["metadata"], json!({"site": "north"}));
    assert_eq!(copy["version"], 2);
    assert_eq!(
        copy["etag"],
        protocol_etag(&s.api, &alice, &ws, &first_id).await
    );
    let versions = s
        .api
        .send(
            "GET",
            &format!(
                "/workspaces/{other}/documents/{}/versions",
                copy["id"].as_str().unwrap()
            ),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(versions.body["items"].as_array().unwrap().len(), 2);
    s.assert_cites(&other, &alice, "What does version two of the protocol say?")
        .await;

    // Back into its own workspace: every line is a duplicate.
    let back = import(&s, &alice, &ws, &file).await;
    s.drain().await;
    let back = job(&s.api, &alice, &ws, &back).await;
    assert_eq!(
        (back["created"].as_i64(), back["skipped"].as_i64()),
        (Some(0), Some(3))
    );
}

async fn protocol_etag(api: &Api, token: &str, ws: &str, id: &str) -> Value {
    let reply = api
        .send(
            "GET",
            &format!("/workspaces/{ws}/documents/{id}"),
            Some(token),
            None,
        )
        .await;
    reply.body["etag"].clone()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn strangers_learn_nothing_and_a_cancelled_import_stops(pool: PgPool) {
    let s = stack(pool.clone(), &[]).await;
    let (alice, _, _) = s.api.signup("alice@example.com").await;
    let (bob, _, _) = s.api.signup("bob@example.com").await;
    let (carol, _, _) = s.api.signup("carol@example.com").await;
    let ws = s.api.create_workspace(&alice, "Library").await;
    s.api
        .join(&alice, &ws, &carol, "carol@example.com", "member")
        .await;

    let line = jsonl(&[json!({"title": "Secret", "content": "Only for members."}).to_string()]);
    let reply = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{ws}/imports"),
            Some(&alice),
            Some(json!({ "size": line.len() })),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let upload = reply.body["upload"].clone();

    for (method, path, body) in [
        ("GET", format!("/workspaces/{ws}/jobs/{id}"), None),
        ("GET", format!("/workspaces/{ws}/jobs"), None),
        ("POST", format!("/workspaces/{ws}/jobs/{id}/cancel"), None),
        (
            "POST",
            format!("/workspaces/{ws}/imports"),
            Some(json!({"size": 10})),
        ),
        ("POST", format!("/workspaces/{ws}/exports"), Some(json!({}))),
    ] {
        s.api
            .send(method, &path, Some(&bob), body)
            .await
            .problem(404);
    }
    // Another workspace's id for this job: 404 too.
    let bobs = s.api.create_workspace(&bob, "Bob's").await;
    s.api
        .send(
            "GET",
            &format!("/workspaces/{bobs}/jobs/{id}"),
            Some(&bob),
            None,
        )
        .await
        .problem(404);

    // Bad requests say what is wrong.
    let bad = |body: Value| {
        let (api, alice, ws) = (&s.api, &alice, &ws);
        async move {
            api.send(
                "POST",
                &format!("/workspaces/{ws}/imports"),
                Some(alice),
                Some(body),
            )
            .await
        }
    };
    assert_eq!(bad(json!({"size": 0})).await.problem(422)["field"], "size");
    assert_eq!(
        bad(json!({"size": 2_i64 << 30})).await.problem(413)["field"],
        "size"
    );
    bad(json!({"size": 5, "format": "csv"})).await.problem(422);

    // A member cannot cancel Alice's job; Alice can, once.
    s.api
        .send(
            "POST",
            &format!("/workspaces/{ws}/jobs/{id}/cancel"),
            Some(&carol),
            None,
        )
        .await
        .problem(403);
    let cancelled = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{ws}/jobs/{id}/cancel"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    s.api
        .send(
            "POST",
            &format!("/workspaces/{ws}/jobs/{id}/cancel"),
            Some(&alice),
            None,
        )
        .await
        .problem(409);

    // Its file arriving afterwards imports nothing.
    Uploads::put(&upload, &line).await;
    s.drain().await;
    let after = job(&s.api, &alice, &ws, &id).await;
    assert_eq!(after["status"], "cancelled");
    assert_eq!(after["created"], 0);
    assert_eq!(live_documents(&pool, &ws).await, 0);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn lines_can_name_files_uploaded_with_the_import(pool: PgPool) {
    let s = stack(pool.clone(), &[]).await;
    let (alice, _, _) = s.api.signup("alice@example.com").await;
    let ws = s.api.create_workspace(&alice, "Library").await;
    let notes = b"# Field notes\n\nThe glacier retreated forty metres in the survey year.\n";
    let lines = jsonl(&[
        json!({"title": "Glacier notes", "file": "notes.md", "client_id": "f-1",
               "metadata": {"site": "ice"}})
        .to_string(),
        json!({"title": "Never sent", "file": "missing.txt"}).to_string(),
        json!({"title": "Not declared", "file": "other.pdf"}).to_string(),
        json!({"title": "Inline", "content": "An inline line beside the files."}).to_string(),
    ]);
    let declared = json!([
        {"name": "notes.md", "size": notes.len(), "content_type": "text/markdown"},
        {"name": "missing.txt", "size": 10, "content_type": "text/plain"},
    ]);
    let start = |file: Vec<u8>| {
        let (api, alice, ws, declared) = (&s.api, &alice, &ws, declared.clone());
        async move {
            let reply = api
                .send(
                    "POST",
                    &format!("/workspaces/{ws}/imports"),
                    Some(alice),
                    Some(json!({ "size": file.len(), "files": declared })),
                )
                .await;
            assert_eq!(reply.status, 201, "{}", reply.body);
            let files = reply.body["files"].as_array().unwrap().clone();
            assert_eq!(files.len(), 2);
            assert_eq!(files[0]["name"], "notes.md");
            assert_eq!(files[0]["method"], "PUT");
            // The files first: the JSONL's arrival starts the job.
            Uploads::put(&files[0], notes).await;
            Uploads::put(&reply.body["upload"], &file).await;
            reply.body["id"].as_str().unwrap().to_owned()
        }
    };
    let id = start(lines.clone()).await;
    s.drain().await;
    let done = job(&s.api, &alice, &ws, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        (done["created"].as_i64(), done["failed"].as_i64()),
        (Some(2), Some(2)),
        "{done}"
    );
    assert_eq!(done["documents"]["ready"], 2, "{done}");
    let reasons: Vec<&str> = done["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("was not uploaded"), "{reasons:?}");
    assert!(
        reasons[1].contains("not one of the import's files"),
        "{reasons:?}"
    );

    // The file became an uploaded document, ingested, with the line's
    // title and metadata.
    let listed = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{ws}/documents"),
            Some(&alice),
            None,
        )
        .await;
    let glacier = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["title"] == "Glacier notes")
        .unwrap()
        .clone();
    assert_eq!(glacier["source"], "upload", "{glacier}");
    assert_eq!(glacier["content_type"], "text/markdown");
    assert_eq!(glacier["metadata"], json!({"site": "ice"}));
    assert_eq!(glacier["status"], "ready");
    s.assert_cites(&ws, &alice, "How far did the glacier retreat?")
        .await;

    // The same file and lines again: the named file is a duplicate by
    // its client id, the inline line by its content.
    let again = start(lines).await;
    s.drain().await;
    let again = job(&s.api, &alice, &ws, &again).await;
    assert_eq!(
        (again["created"].as_i64(), again["skipped"].as_i64()),
        (Some(0), Some(2)),
        "{again}"
    );
    assert_eq!(live_documents(&pool, &ws).await, 2);
}
