//! Uploads and ingestion end to end on the local stack, through the real
//! AWS SDK: presigned PUT with a plain HTTP client → S3 notification →
//! SQS → worker → chunks with embeddings; inline documents and edits via
//! the same queue; duplicates, reordering, bad files, poison messages,
//! foreign keys, and a database that is down for one delivery.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::state::State;
use ragway_gateway::sqs;
use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::{Api, config, gateway, ingest_worker, state};

/// A bucket and queue of this test's own (so other tests' messages never
/// mix in), wired like the stack's: ObjectCreated under workspaces/ → queue.
struct Stack {
    state: Arc<State>,
    api: Api,
    token: String,
    ws: String,
    queue: String,
    bucket: String,
}

async fn stack(pool: PgPool) -> Stack {
    let support::uploads::Uploads {
        state,
        api,
        queue,
        bucket,
    } = support::uploads::stack(
        pool,
        &[("CHUNK_TOKENS", "60"), ("CHUNK_OVERLAP_TOKENS", "10")],
    )
    .await;
    let (token, _, _) = api.signup("ingest@example.com").await;
    let ws = api.create_workspace(&token, "Library").await;
    Stack {
        state,
        api,
        token,
        ws,
        queue,
        bucket,
    }
}

/// Makes the database refuse inserts of `document`'s chunks with
/// SQLSTATE `code` (P0001, a plain raised exception, if none).
async fn refuse_chunks_of(pool: &PgPool, document: &str, code: Option<&str>) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION test_refuse_chunks() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.document_id = '{document}' THEN
                 RAISE EXCEPTION 'refused for the test' USING ERRCODE = '{}';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER test_refuse BEFORE INSERT ON chunks
             FOR EACH ROW EXECUTE FUNCTION test_refuse_chunks();",
        code.unwrap_or("P0001")
    )))
    .execute(pool)
    .await
    .unwrap();
}

impl Stack {
    /// The worker's state with `settings` on top of the stack's own.
    fn reconfigure(&mut self, pool: PgPool, settings: &[(&str, &str)]) {
        let mut all = vec![
            ("BUCKET_NAME", self.bucket.as_str()),
            ("INGEST_QUEUE_URL", self.queue.as_str()),
            ("CHUNK_TOKENS", "60"),
            ("CHUNK_OVERLAP_TOKENS", "10"),
        ];
        all.extend_from_slice(settings);
        self.state = state(pool, config(&all));
    }

    /// Creates inline documents of (title, content); their ids.
    async fn create_all(&self, documents: &[(&str, &str)]) -> Vec<String> {
        let mut ids = Vec::new();
        for (title, text) in documents {
            let doc = self
                .create(json!({ "title": title, "content": text }))
                .await;
            ids.push(doc["id"].as_str().unwrap().to_owned());
        }
        ids
    }

    /// Runs the worker over whatever is queued until the queue is empty.
    async fn drain(&self) -> sqs::PollOutcome {
        support::drain(&self.state, &self.queue).await
    }

    /// Runs the worker over one batch (up to 10 messages) as `state`.
    async fn poll_once(&self, state: &Arc<State>) -> sqs::PollOutcome {
        sqs::poll_once(
            state,
            &self.queue,
            ingest_worker(),
            10,
            Duration::from_millis(500),
        )
        .await
        .unwrap()
    }

    async fn document(&self, id: &str) -> Value {
        let reply = self
            .api
            .send(
                "GET",
                &format!("/workspaces/{}/documents/{id}", self.ws),
                Some(&self.token),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }

    async fn chunks(&self, id: &str) -> Vec<Value> {
        let reply = self
            .api
            .send(
                "GET",
                &format!("/workspaces/{}/documents/{id}/chunks?limit=500", self.ws),
                Some(&self.token),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["items"].as_array().unwrap().clone()
    }

    /// Asks for an upload and PUTs `bytes` with a plain HTTP client.
    async fn upload(&self, filename: &str, content_type: &str, bytes: &[u8]) -> String {
        let reply = self
            .api
            .send(
                "POST",
                &format!("/workspaces/{}/uploads", self.ws),
                Some(&self.token),
                Some(json!({ "filename": filename, "content_type": content_type, "size": bytes.len() })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let upload = &reply.body["upload"];
        assert_eq!(upload["method"], "PUT");
        let mut put = reqwest::Client::new()
            .put(upload["url"].as_str().unwrap())
            .body(bytes.to_vec());
        for (name, value) in upload["headers"].as_object().unwrap() {
            put = put.header(name, value.as_str().unwrap());
        }
        let response = put.send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{:?}",
            response.text().await
        );
        reply.body["document_id"].as_str().unwrap().to_owned()
    }

    async fn create(&self, body: Value) -> Value {
        let reply = self
            .api
            .send(
                "POST",
                &format!("/workspaces/{}/documents", self.ws),
                Some(&self.token),
                Some(body),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn uploads_of_every_text_format_become_ready_with_chunks(pool: PgPool) {
    let s = stack(pool).await;
    let long = "The vaccine trial enrolled participants across many sites. ".repeat(30);
    let files: Vec<(&str, &str, Vec<u8>)> = vec![
        ("notes.txt", "text/plain", long.as_bytes().to_vec()),
        (
            "guide.md",
            "text/markdown",
            format!("# Guide\n\n## Setup\n\n{long}\n\n## Usage\n\nRun it.").into_bytes(),
        ),
        (
            "page.html",
            "text/html",
            format!("<html><head><script>var secret = 1;</script></head><body><h1>Results</h1><p>{long}</p></body></html>").into_bytes(),
        ),
        (
            "table.csv",
            "text/csv",
            b"site,enrolled\nOslo,120\n\"Lyon, FR\",80\n".to_vec(),
        ),
        (
            "data.json",
            "application/json",
            br#"{"trial": {"name": "T7", "sites": ["Oslo", "Lyon"]}}"#.to_vec(),
        ),
    ];
    let mut ids = Vec::new();
    for (name, content_type, bytes) in &files {
        ids.push(s.upload(name, content_type, bytes).await);
    }
    let outcome = s.drain().await;
    assert_eq!(outcome.failed, 0, "{outcome:?}");
    for (id, (name, _, _)) in ids.iter().zip(&files) {
        let doc = s.document(id).await;
        assert_eq!(doc["status"], "ready", "{name}: {doc}");
        assert_eq!(doc["attempts"], 1, "{name}");
        let chunks = s.chunks(id).await;
        assert!(!chunks.is_empty(), "{name} has chunks");
        for (ordinal, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk["ordinal"], ordinal as i64, "{name}");
            assert!(
                chunk["token_count"].as_i64().unwrap() <= 60,
                "{name}: {chunk}"
            );
        }
    }
    let md = s.chunks(&ids[1]).await;
    assert!(
        md.iter().any(|c| c["locator"]["heading"]
            .as_str()
            .is_some_and(|h| h.contains("Setup"))),
        "markdown chunks keep their heading: {md:?}"
    );
    let html = s.chunks(&ids[2]).await;
    assert!(
        html.iter()
            .all(|c| !c["content"].as_str().unwrap().contains("secret")),
        "scripts are dropped"
    );
    let csv = s.chunks(&ids[3]).await;
    let csv_text: String = csv.iter().map(|c| c["content"].as_str().unwrap()).collect();
    assert!(csv_text.contains("site: Lyon, FR"), "{csv_text}");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn inline_documents_and_edits_are_ingested_and_duplicates_change_nothing(pool: PgPool) {
    let s = stack(pool.clone()).await;
    let doc = s
        .create(json!({ "title": "Notes", "content": "# Trial\n\nFirst draft about proteins.", "content_type": "text/markdown" }))
        .await;
    let id = doc["id"].as_str().unwrap().to_owned();
    // The same message delivered twice, in one batch and again later.
    let message = common::ingest::events::DocumentChanged {
        workspace_id: s.ws.parse().unwrap(),
        document_id: id.parse().unwrap(),
        version: 1,
    }
    .to_message();
    let sqs_client = s.state.sqs().await;
    sqs_client
        .send_message()
        .queue_url(&s.queue)
        .message_body(&message)
        .send()
        .await
        .unwrap();
    // The API's own message and this duplicate: two deliveries in one
    // batch, one claim.
    let outcome = s.poll_once(&s.state).await;
    assert_eq!((outcome.received, outcome.failed), (2, 0));
    s.drain().await;
    let first = s.chunks(&id).await;
    assert_eq!(s.document(&id).await["status"], "ready");
    assert!(first[0]["content"].as_str().unwrap().contains("proteins"));
    sqs_client
        .send_message()
        .queue_url(&s.queue)
        .message_body(&message)
        .send()
        .await
        .unwrap();
    s.drain().await;
    let again = s.chunks(&id).await;
    assert_eq!(
        first, again,
        "a redelivery changes nothing (same chunk ids)"
    );
    assert_eq!(s.document(&id).await["attempts"], 1);

    // An edit, then the old version's message arriving after the new one's.
    let tag = format!("\"{}\"", doc["etag"].as_str().unwrap());
    let edited = s
        .api
        .send_with(
            "PUT",
            &format!("/workspaces/{}/documents/{id}", s.ws),
            Some(&s.token),
            Some(json!({ "title": "Notes", "content": "# Trial\n\nSecond draft about vaccines.", "content_type": "text/markdown" })),
            &[("if-match", &tag)],
        )
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    s.drain().await;
    sqs_client
        .send_message()
        .queue_url(&s.queue)
        .message_body(&message)
        .send()
        .await
        .unwrap();
    s.drain().await;
    let now = s.chunks(&id).await;
    let text: String = now.iter().map(|c| c["content"].as_str().unwrap()).collect();
    assert!(
        text.contains("vaccines") && !text.contains("proteins"),
        "{text}"
    );
    assert_eq!(s.document(&id).await["status"], "ready");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_document_whose_queueing_failed_is_queued_again_by_the_requeue_schedule(pool: PgPool) {
    let s = stack(pool.clone()).await;
    let queued = s
        .create(
            json!({ "title": "Queued", "content": "Proteins fold.", "content_type": "text/plain" }),
        )
        .await;
    let queued = queued["id"].as_str().unwrap().to_owned();
    assert_eq!(s.drain().await.failed, 0);
    assert_eq!(s.document(&queued).await["status"], "ready");

    // A gateway whose queue does not exist: the document is stored (201),
    // its message is not sent.
    let missing = s.queue.replace("t-ingest-", "t-missing-");
    let broken = gateway(state(
        pool.clone(),
        config(&[("INGEST_QUEUE_URL", &missing)]),
    ))
    .await;
    let reply = broken
        .send(
            "POST",
            &format!("/workspaces/{}/documents", s.ws),
            Some(&s.token),
            Some(json!({ "title": "Lost", "content": "Vaccines protect children.", "content_type": "text/plain" })),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let lost = reply.body["id"].as_str().unwrap().to_owned();
    s.drain().await;
    assert_eq!(
        s.document(&lost).await["status"],
        "pending",
        "nothing was queued"
    );

    // Not yet stale: left alone. Stale: queued again, once; then ingested.
    let queue = s.state.ingest_queue().await.unwrap();
    let requeue =
        |older_than: Duration| common::ingest::requeue_stale(&s.state.db, queue, older_than, 100);
    assert_eq!(requeue(Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(requeue(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(s.drain().await.failed, 0);
    let doc = s.document(&lost).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    assert!(
        s.chunks(&lost).await[0]["content"]
            .as_str()
            .unwrap()
            .contains("Vaccines")
    );
    assert_eq!(
        requeue(Duration::ZERO).await.unwrap(),
        0,
        "nothing pending is left"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_upload_whose_notification_was_lost_is_queued_again_by_the_requeue_schedule(
    pool: PgPool,
) {
    let s = stack(pool).await;
    let lost = s
        .upload("lost notes.txt", "text/plain", b"Tides follow the moon.")
        .await;
    // Another upload asked for, its file never put.
    let reply = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{}/uploads", s.ws),
            Some(&s.token),
            Some(json!({ "filename": "never.txt", "content_type": "text/plain", "size": 5 })),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let never = reply.body["document_id"].as_str().unwrap().to_owned();
    // The object's notification is lost.
    let sqs = s.state.sqs().await;
    let mut lost_messages = 0;
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&s.queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if received.messages().is_empty() {
            break;
        }
        for message in received.messages() {
            sqs.delete_message()
                .queue_url(&s.queue)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            lost_messages += 1;
        }
    }
    assert_eq!(lost_messages, 1, "the put's notification");
    assert_eq!(s.document(&lost).await["status"], "pending");

    // Not yet stale: left alone. Stale: the one whose object exists is
    // queued as its notification would have been, once; then ingested.
    let bucket = s.state.bucket().await.unwrap();
    let queue = s.state.ingest_queue().await.unwrap();
    let requeue = |older_than: Duration| {
        common::ingest::requeue_stale_uploads(&s.state.db, bucket, queue, older_than, 100)
    };
    assert_eq!(requeue(Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(requeue(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(s.drain().await.failed, 0);
    let doc = s.document(&lost).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    assert!(
        s.chunks(&lost).await[0]["content"]
            .as_str()
            .unwrap()
            .contains("Tides")
    );
    assert_eq!(
        s.document(&never).await["status"],
        "pending",
        "no object, no message"
    );
    assert_eq!(
        requeue(Duration::ZERO).await.unwrap(),
        0,
        "nothing with an object is left"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn wrong_files_fail_the_document_with_their_reason(pool: PgPool) {
    let s = stack(pool).await;
    // A PDF declared as plain text.
    let pdf = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n".to_vec();
    let disguised = s.upload("notes.txt", "text/plain", &pdf).await;
    // A file whose size is not the declared one (written past the URL).
    let reply = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{}/uploads", s.ws),
            Some(&s.token),
            Some(json!({ "filename": "short.txt", "content_type": "text/plain", "size": 5 })),
        )
        .await;
    let oversized = reply.body["document_id"].as_str().unwrap().to_owned();
    let key = format!("workspaces/{}/documents/{oversized}/short.txt", s.ws);
    s.state
        .s3()
        .await
        .put_object()
        .bucket(&s.bucket)
        .key(&key)
        .body(ByteStream::from_static(b"much longer than five bytes"))
        .send()
        .await
        .unwrap();
    let outcome = s.drain().await;
    assert_eq!(outcome.failed, 0, "bad files are not retried: {outcome:?}");
    let doc = s.document(&disguised).await;
    assert_eq!(doc["status"], "failed");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("declared text/plain"),
        "{doc}"
    );
    let doc = s.document(&oversized).await;
    assert_eq!(doc["status"], "failed");
    assert!(
        doc["error"].as_str().unwrap().contains("5 were declared"),
        "{doc}"
    );
    assert!(s.chunks(&oversized).await.is_empty());
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn uploads_are_checked_before_a_url_is_signed(pool: PgPool) {
    let s = stack(pool).await;
    let path = format!("/workspaces/{}/uploads", s.ws);
    for (body, status, field) in [
        (
            json!({ "filename": "a.png", "content_type": "image/png", "size": 10 }),
            422,
            "content_type",
        ),
        (
            json!({ "filename": "a.pdf", "content_type": "application/pdf", "size": 0 }),
            422,
            "size",
        ),
        (
            json!({ "filename": "a.pdf", "content_type": "application/pdf", "size": 60_000_000 }),
            413,
            "size",
        ),
        (
            json!({ "filename": "", "content_type": "application/pdf", "size": 10 }),
            422,
            "filename",
        ),
    ] {
        let reply = s
            .api
            .send("POST", &path, Some(&s.token), Some(body.clone()))
            .await;
        assert_eq!(reply.problem(status)["field"], field, "{body}");
    }
    let reply = s
        .api
        .send(
            "POST",
            &path,
            Some(&s.token),
            Some(json!({ "filename": "../../Trial report (v2).pdf", "content_type": "application/pdf", "size": 1234 })),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let id = reply.body["document_id"].as_str().unwrap();
    let url = reply.body["upload"]["url"].as_str().unwrap();
    assert!(
        url.contains(&format!(
            "workspaces/{}/documents/{id}/Trial_report_v2_.pdf",
            s.ws
        )),
        "{url}"
    );
    assert!(url.contains("X-Amz-Expires=900"), "{url}");
    assert_eq!(reply.body["document"]["status"], "pending");
    assert_eq!(
        reply.body["upload"]["headers"]["content-type"],
        "application/pdf"
    );
    // The URL is bound to the declared type and size: both are signed, so
    // S3 refuses a PUT with another (the emulator does not check signatures).
    let signed = url
        .split("X-Amz-SignedHeaders=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(
        signed.contains("content-length") && signed.contains("content-type"),
        "{signed}"
    );
    // Non-members cannot ask for uploads into the workspace.
    let (other, _, _) = s.api.signup("other@example.com").await;
    s.api
        .send(
            "POST",
            &path,
            Some(&other),
            Some(json!({ "filename": "a.pdf", "content_type": "application/pdf", "size": 10 })),
        )
        .await
        .problem(404);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn poison_and_foreign_records_never_hold_back_their_batch(pool: PgPool) {
    let s = stack(pool.clone()).await;
    let good = s
        .upload(
            "good.txt",
            "text/plain",
            b"A perfectly good file about climate.",
        )
        .await;
    // Another workspace's document, addressed through this workspace's prefix.
    let (other, _, _) = s.api.signup("other@example.com").await;
    let other_ws = s.api.create_workspace(&other, "Theirs").await;
    let theirs = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{other_ws}/documents"),
            Some(&other),
            Some(json!({ "title": "Theirs", "content": "private" })),
        )
        .await;
    let their_id = theirs.body["id"].as_str().unwrap().to_owned();
    let foreign_key = format!("workspaces/{}/documents/{their_id}/x.txt", s.ws);
    s.state
        .s3()
        .await
        .put_object()
        .bucket(&s.bucket)
        .key(&foreign_key)
        .body(ByteStream::from_static(b"overwrite attempt"))
        .send()
        .await
        .unwrap();
    let sqs_client = s.state.sqs().await;
    sqs_client
        .send_message()
        .queue_url(&s.queue)
        .message_body("this is not a message we know")
        .send()
        .await
        .unwrap();
    let outcome = s.drain().await;
    assert!(
        outcome.failed >= 1,
        "the poison record is reported: {outcome:?}"
    );
    assert_eq!(s.document(&good).await["status"], "ready");
    // The foreign document holds its own text only (it was ingested from
    // its own queued message), never the object written under our prefix.
    let mut tx = common::db::tenant_tx(&pool, None, Some(other_ws.parse().unwrap()))
        .await
        .unwrap();
    let texts: Vec<(String,)> =
        sqlx::query_as("SELECT content FROM chunks WHERE document_id = $1::uuid")
            .bind(&their_id)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(texts.len(), 1);
    assert!(
        texts[0].0.contains("private") && !texts[0].0.contains("overwrite"),
        "{texts:?}"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_database_outage_is_retried_and_nothing_is_lost_or_doubled(pool: PgPool) {
    let s = stack(pool.clone()).await;
    let doc = s
        .create(json!({ "title": "Outage", "content": "Text that must survive an outage." }))
        .await;
    let id = doc["id"].as_str().unwrap().to_owned();
    // A worker whose database is unreachable: every record is reported failed.
    let down = Arc::new(
        State::with_pool(
            s.state.config.clone(),
            sqlx::postgres::PgPoolOptions::new()
                .acquire_timeout(Duration::from_millis(300))
                .connect_lazy("postgres://ragway:ragway@127.0.0.1:9/none")
                .unwrap(),
        )
        .unwrap(),
    );
    let outcome = s.poll_once(&down).await;
    assert_eq!(
        (outcome.received, outcome.failed, outcome.deleted),
        (1, 1, 0)
    );
    // The message is still there; a healthy worker ingests it once.
    let outcome = s.drain().await;
    assert_eq!((outcome.received, outcome.failed), (1, 0));
    let doc = s.document(&id).await;
    assert_eq!(doc["status"], "ready");
    let chunks = s.chunks(&id).await;
    assert_eq!(chunks.len(), 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_document_the_database_refuses_mid_batch_is_retried_alone(pool: PgPool) {
    let s = stack(pool.clone()).await;
    let ids = s
        .create_all(&[
            ("One", "Alpha notes about ocean currents."),
            ("Two", "Beta notes about carbon budgets."),
            ("Three", "Gamma notes about market growth."),
        ])
        .await;
    // The database refuses the second document's chunks, in the middle of
    // the batch's one transaction.
    refuse_chunks_of(&pool, &ids[1], None).await;
    let outcome = s.poll_once(&s.state).await;
    assert_eq!(
        (outcome.received, outcome.failed),
        (3, 1),
        "one batch, only the refused document's record fails"
    );
    for i in [0, 2] {
        assert_eq!(s.document(&ids[i]).await["status"], "ready");
        assert_eq!(s.chunks(&ids[i]).await.len(), 1);
    }
    assert_ne!(s.document(&ids[1]).await["status"], "ready");
    assert!(s.chunks(&ids[1]).await.is_empty());

    // Once the database takes it, the redelivery (at once: the failed
    // attempt gave its lease back) stores it, once; the others are untouched.
    sqlx::raw_sql("DROP TRIGGER test_refuse ON chunks")
        .execute(&pool)
        .await
        .unwrap();
    let outcome = s.drain().await;
    assert_eq!((outcome.received, outcome.failed), (1, 0));
    let refused = s.document(&ids[1]).await;
    assert_eq!(refused["status"], "ready");
    assert_eq!(refused["attempts"], 2);
    assert_eq!(s.chunks(&ids[1]).await.len(), 1);
    assert_eq!(s.document(&ids[0]).await["attempts"], 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_batch_short_of_time_starts_nothing_and_gives_its_documents_back(pool: PgPool) {
    let s = stack(pool.clone()).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let text = format!("Note {i} about tidal energy and the coastline.");
        let doc = s
            .create(json!({ "title": format!("N{i}"), "content": text }))
            .await;
        ids.push(doc["id"].as_str().unwrap().to_owned());
    }
    // Received messages stay hidden meanwhile, as on the deployed queue, so
    // one poll gathers all 12 over two receives.
    s.state
        .sqs()
        .await
        .set_queue_attributes()
        .queue_url(&s.queue)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "60",
        )
        .send()
        .await
        .unwrap();
    // One batch larger than a single receive (template.yaml's BatchSize is
    // above 10), handed to a worker whose function times out after 5 s: less
    // than a document may need, so none is started. Each record is queued
    // again as a new message and acknowledged, so it comes back at once
    // and the short batch does not count against its maxReceiveCount.
    let outcome = sqs::poll_once_within(
        &s.state,
        &s.queue,
        ingest_worker(),
        25,
        Duration::from_millis(500),
        Some(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(
        (outcome.received, outcome.failed, outcome.deleted),
        (12, 0, 12)
    );
    for id in &ids {
        let doc = s.document(id).await;
        assert_ne!(doc["status"], "ready");
        assert_eq!(
            doc["attempts"], 0,
            "an attempt never started is not counted"
        );
        assert!(s.chunks(id).await.is_empty());
    }
    // The new messages are there, and the leases were given back: the next
    // batches ingest every document once.
    let outcome = s.drain().await;
    assert_eq!((outcome.received, outcome.failed), (12, 0));
    for id in &ids {
        let doc = s.document(id).await;
        assert_eq!(doc["status"], "ready");
        assert_eq!(doc["attempts"], 1);
        assert_eq!(s.chunks(id).await.len(), 1);
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn pdf_and_docx_uploads_keep_pages_and_headings(pool: PgPool) {
    use extraction::fixtures::{docx, pdf_with_pages};
    let s = stack(pool).await;
    let pdf = pdf_with_pages(&[
        &["Enrolment opened in March"],
        &["Efficacy reached ninety percent"],
    ]);
    let word = docx(
        r#"<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Methods</w:t></w:r></w:p>
<w:p><w:r><w:t>Participants were randomised into two groups.</w:t></w:r></w:p>"#,
    );
    let pdf_id = s.upload("trial.pdf", "application/pdf", &pdf).await;
    let docx_id = s
        .upload(
            "protocol.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            &word,
        )
        .await;
    let outcome = s.drain().await;
    assert_eq!(outcome.failed, 0, "{outcome:?}");
    assert_eq!(s.document(&pdf_id).await["status"], "ready");
    let pages: Vec<(i64, String)> = s
        .chunks(&pdf_id)
        .await
        .iter()
        .map(|c| {
            (
                c["locator"]["page"].as_i64().unwrap(),
                c["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert_eq!(pages[0].0, 1);
    assert!(pages[0].1.contains("Enrolment"), "{pages:?}");
    assert_eq!(pages[1].0, 2);
    assert!(pages[1].1.contains("Efficacy"), "{pages:?}");
    let doc = s.document(&docx_id).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    let chunks = s.chunks(&docx_id).await;
    assert!(
        chunks.iter().any(|c| c["locator"]["heading"] == "Methods"
            && c["content"].as_str().unwrap().contains("randomised")),
        "{chunks:?}"
    );
}

/// Issue 22: a batch holding hostile files (a PDF that draws itself, one
/// whose forms fan out, zip bombs, deep nesting, endless text) stores its
/// ordinary documents on the first delivery; each hostile file ends
/// `failed` with its reason, or `ready` within its bounds; nothing is
/// redelivered and nothing stays `processing`; the worker lives on.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn hostile_files_fail_alone_and_their_batch_is_stored_at_once(pool: PgPool) {
    let mut s = stack(pool.clone()).await;
    // Tighter CPU budgets than the defaults keep the test short; the
    // cases that burn theirs end the same way, only sooner.
    s.reconfigure(
        pool,
        &[
            ("EXTRACT_CPU_BASE_SECONDS", "2"),
            ("EXTRACT_CPU_SECONDS_PER_MB", "1"),
        ],
    );
    let wanted = [
        "pdf-self-drawing-form",
        "pdf-xobject-fan-out",
        "html-nested-divs",
        "docx-250mb-of-spaces",
        "docx-60mb-of-words",
        "docx-billion-laughs",
        "json-nested-100k",
        "json-nul-escapes",
        "text-1mb-without-whitespace",
    ];
    let mut hostile = Vec::new();
    for case in extraction::hostile::corpus() {
        if wanted.contains(&case.name) {
            let id = s.upload(case.name, case.content_type, &case.bytes).await;
            hostile.push((case, id));
        }
    }
    let mut ordinary = Vec::new();
    for i in 0..3 {
        let text = format!("Ordinary notes number {i} about tidal energy and coastal erosion.");
        ordinary.push(
            s.upload(&format!("notes-{i}.txt"), "text/plain", text.as_bytes())
                .await,
        );
    }
    // Batches as large as SQS gives (the emulator hands out ten at most).
    let (mut received, mut failed) = (0, 0);
    loop {
        let outcome = sqs::poll_once(
            &s.state,
            &s.queue,
            ingest_worker(),
            32,
            Duration::from_millis(500),
        )
        .await
        .unwrap();
        if outcome.received == 0 {
            break;
        }
        received += outcome.received;
        failed += outcome.failed;
    }
    assert_eq!(
        (received, failed),
        (wanted.len() + 3, 0),
        "every record handled on its first delivery"
    );
    for id in &ordinary {
        let doc = s.document(id).await;
        assert_eq!(doc["status"], "ready", "{doc}");
        assert_eq!(s.chunks(id).await.len(), 1);
    }
    for (case, id) in &hostile {
        let doc = s.document(id).await;
        let status = doc["status"].as_str().unwrap();
        match case.fails_with {
            Some(words) => {
                assert_eq!(status, "failed", "{}: {doc}", case.name);
                let error = doc["error"].as_str().unwrap();
                assert!(error.contains(words), "{}: {error}", case.name);
            }
            None => assert!(
                status == "ready" || status == "failed" && doc["error"].is_string(),
                "{}: {doc}",
                case.name
            ),
        }
        assert_eq!(doc["attempts"], 1, "{}: {doc}", case.name);
    }
    // NULs the JSON escaped are gone, the rest of its text is stored.
    let (_, nul_id) = hostile
        .iter()
        .find(|(case, _)| case.name == "json-nul-escapes")
        .unwrap();
    let chunks = s.chunks(nul_id).await;
    assert!(!chunks.is_empty());
    // The worker still works.
    let after = s
        .create(json!({ "title": "After", "content": "Still ingesting after the attack." }))
        .await;
    let id = after["id"].as_str().unwrap().to_owned();
    assert_eq!(s.drain().await.failed, 0);
    assert_eq!(s.document(&id).await["status"], "ready");
}

/// Data the database refuses for good (here a data exception, SQLSTATE
/// 22P05, as for text it cannot hold) fails its document with the reason
/// at once instead of being retried through every receive.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn data_the_database_refuses_fails_the_document_at_once(pool: PgPool) {
    let s = stack(pool.clone()).await;
    let ids = s
        .create_all(&[
            ("Kept", "Notes about river deltas."),
            ("Refused", "Notes the database will not hold."),
        ])
        .await;
    refuse_chunks_of(&pool, &ids[1], Some("22P05")).await;
    let outcome = s.drain().await;
    assert_eq!((outcome.received, outcome.failed), (2, 0), "not retried");
    assert_eq!(s.document(&ids[0]).await["status"], "ready");
    let refused = s.document(&ids[1]).await;
    assert_eq!(refused["status"], "failed");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("cannot store the document's text"),
        "{refused}"
    );
    assert_eq!(refused["attempts"], 1);
}

/// A document whose worker died on every delivery (its message has gone
/// to the DLQ) does not stay `processing` for ever: the requeue schedule
/// fails it with a reason once its lease lapsed long ago, and leaves one
/// whose lease lapsed recently (a redelivery is still due) alone.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn documents_whose_worker_died_are_failed_by_the_requeue_schedule(pool: PgPool) {
    let s = stack(pool.clone()).await;
    let mut ids = Vec::new();
    for title in ["Long gone", "Recent"] {
        let doc = s
            .create(json!({ "title": title, "content": "Text a crashed worker held." }))
            .await;
        ids.push(doc["id"].as_str().unwrap().to_owned());
    }
    // As a dead worker leaves them: claimed, attempts counted, lease lapsed.
    let mut tx = common::db::tenant_tx(&pool, None, Some(s.ws.parse().unwrap()))
        .await
        .unwrap();
    for (id, lapsed) in [(&ids[0], "31 minutes"), (&ids[1], "5 minutes")] {
        let updated = sqlx::query(
            "UPDATE documents SET status = 'processing', attempts = 5,
                    processing_until = now() - $2::interval
             WHERE id = $1::uuid",
        )
        .bind(id)
        .bind(lapsed)
        .execute(&mut *tx)
        .await
        .unwrap();
        assert_eq!(updated.rows_affected(), 1);
    }
    tx.commit().await.unwrap();
    let requeue = s.state.clone();
    let handler = ingest::FUNCTIONS
        .iter()
        .find(|f| f.name == "ingest-requeue")
        .unwrap();
    let common::lambda::Handler::Schedule(run) = handler.handler else {
        panic!("ingest-requeue is a schedule");
    };
    run(&requeue, json!({})).await.unwrap();
    let gone = s.document(&ids[0]).await;
    assert_eq!(gone["status"], "failed", "{gone}");
    assert!(
        gone["error"]
            .as_str()
            .unwrap()
            .contains("stopped 5 times without finishing"),
        "{gone}"
    );
    assert_eq!(s.document(&ids[1]).await["status"], "processing");
    // A redelivery (here the queued message) can still ingest the failed one.
    assert_eq!(s.drain().await.failed, 0);
    assert_eq!(s.document(&ids[0]).await["status"], "ready");
}

/// An extraction child that dies mid-batch (here past a small memory
/// limit) fails only its own document; the worker starts another child
/// for the rest, and stores them on the same delivery.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_dying_extractor_fails_only_its_own_document(pool: PgPool) {
    let mut s = stack(pool.clone()).await;
    s.reconfigure(pool, &[("EXTRACT_MEMORY_MB", "64")]);
    let bomb = extraction::hostile::docx_inflating("lorem ipsum dolor ", 60 * 1024 * 1024);
    let big = s
        .upload(
            "big.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            &bomb,
        )
        .await;
    let mut ordinary = Vec::new();
    for i in 0..4 {
        let text = format!("Notes {i} on glacier retreat and sea level.");
        ordinary.push(
            s.upload(&format!("n{i}.txt"), "text/plain", text.as_bytes())
                .await,
        );
    }
    let outcome = s.drain().await;
    assert_eq!((outcome.received, outcome.failed), (5, 0), "{outcome:?}");
    let doc = s.document(&big).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("more than 64 MB of memory"),
        "{doc}"
    );
    for id in &ordinary {
        assert_eq!(s.document(id).await["status"], "ready");
    }
}

/// A workspace can allow its documents fewer chunks than the deployment;
/// a document making more fails with the reason, a smaller one is stored.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_workspace_chunk_limit_fails_larger_documents(pool: PgPool) {
    let s = stack(pool).await;
    let path = format!("/workspaces/{}", s.ws);
    s.api
        .send(
            "PATCH",
            &path,
            Some(&s.token),
            Some(json!({ "max_document_chunks": 0 })),
        )
        .await
        .problem(422);
    let reply = s
        .api
        .send(
            "PATCH",
            &path,
            Some(&s.token),
            Some(json!({ "max_document_chunks": 2 })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["max_document_chunks"], 2);
    let long = "Sediment moves along the coast with every tide and storm. ".repeat(60);
    let big = s.create(json!({ "title": "Long", "content": long })).await;
    let small = s
        .create(json!({ "title": "Short", "content": "A short note." }))
        .await;
    assert_eq!(s.drain().await.failed, 0);
    let big = s.document(big["id"].as_str().unwrap()).await;
    assert_eq!(big["status"], "failed", "{big}");
    assert!(
        big["error"]
            .as_str()
            .unwrap()
            .contains("more than 2 chunks"),
        "{big}"
    );
    let small = s.document(small["id"].as_str().unwrap()).await;
    assert_eq!(small["status"], "ready");
}
