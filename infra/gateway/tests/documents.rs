//! Documents end to end over real HTTP: entity tags and conditional
//! requests, concurrent writers, versions, deletes, limits, isolation,
//! keyset pages and incremental sync.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::{Api, Reply, config, gateway, state};

/// A user with a workspace, on a fresh gateway.
struct Setup {
    api: Arc<Api>,
    token: String,
    ws: String,
}

async fn setup(pool: PgPool, overrides: &[(&str, &str)]) -> Setup {
    let api = gateway(state(pool, config(overrides))).await;
    let (token, _, _) = api.signup("alice@example.com").await;
    let ws = api.create_workspace(&token, "Notes").await;
    Setup {
        api: Arc::new(api),
        token,
        ws,
    }
}

impl Setup {
    fn docs(&self) -> String {
        format!("/workspaces/{}/documents", self.ws)
    }

    async fn create(&self, title: &str, content: &str) -> Reply {
        let reply = self
            .api
            .send(
                "POST",
                &self.docs(),
                Some(&self.token),
                Some(json!({ "title": title, "content": content })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply
    }

    async fn put(&self, id: &str, if_match: Option<&str>, body: Value) -> Reply {
        let headers: Vec<(&str, &str)> = if_match.map(|t| ("if-match", t)).into_iter().collect();
        self.api
            .send_with(
                "PUT",
                &format!("{}/{id}", self.docs()),
                Some(&self.token),
                Some(body),
                &headers,
            )
            .await
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.api
            .send_with("GET", path, Some(&self.token), None, headers)
            .await
    }

    async fn sync(&self, cursor: Option<&str>, limit: usize) -> Reply {
        let mut path = format!("/workspaces/{}/sync?limit={limit}", self.ws);
        if let Some(cursor) = cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let reply = self.get(&path, &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply
    }
}

fn quoted(etag: &Value) -> String {
    format!("\"{}\"", etag.as_str().unwrap())
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn inline_document_is_created_read_and_revalidated_by_etag(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let created = s
        .api
        .send(
            "POST",
            &s.docs(),
            Some(&s.token),
            Some(json!({
                "title": "  Field notes ",
                "content": "# Trial\n\n120 people enrolled.",
                "content_type": "text/markdown; charset=utf-8",
                "metadata": { "project": "trial-7", "year": 2025 }
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let doc = &created.body;
    let id = doc["id"].as_str().unwrap();
    assert_eq!(doc["title"], "Field notes");
    assert_eq!(doc["content_type"], "text/markdown");
    assert_eq!(doc["status"], "pending");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["source"], "inline");
    assert_eq!(doc["size"], 29);
    assert_eq!(doc["metadata"]["year"], 2025);
    assert_eq!(created.header("etag"), quoted(&doc["etag"]));
    assert_eq!(created.header("location"), format!("{}/{id}", s.docs()));

    let path = format!("{}/{id}", s.docs());
    let read = s.get(&path, &[]).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["content"], "# Trial\n\n120 people enrolled.");
    assert_eq!(read.header("etag"), created.header("etag"));
    assert_eq!(read.header("cache-control"), "private, no-cache");

    let tag = created.header("etag").to_owned();
    let weak = format!("W/{tag}");
    let listed = format!("\"nope\", {tag}");
    // If-None-Match: weak comparison, lists, `*` → 304 with no body.
    for condition in [tag.as_str(), weak.as_str(), listed.as_str(), "*"] {
        let reply = s.get(&path, &[("if-none-match", condition)]).await;
        assert_eq!(reply.status, 304, "If-None-Match: {condition}");
        assert_eq!(reply.body, Value::Null);
        assert_eq!(reply.header("etag"), tag);
    }
    let changed = s.get(&path, &[("if-none-match", "\"stale\"")]).await;
    assert_eq!(changed.status, 200);
    // If-Match on a read: strong comparison.
    assert_eq!(s.get(&path, &[("if-match", &tag)]).await.status, 200);
    s.get(&path, &[("if-match", &weak)]).await.problem(412);
    s.get(&path, &[("if-none-match", "not-quoted")])
        .await
        .problem(400);

    // JSON content is stored as canonical JSON text.
    let structured = s
        .api
        .send(
            "POST",
            &s.docs(),
            Some(&s.token),
            Some(json!({ "title": "Config", "content": { "b": 1, "a": [true] } })),
        )
        .await;
    assert_eq!(structured.status, 201, "{}", structured.body);
    assert_eq!(structured.body["content_type"], "application/json");
    assert_eq!(structured.body["content"], r#"{"a":[true],"b":1}"#);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn put_requires_if_match_and_a_stale_tag_gets_the_server_copy(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let created = s.create("Plan", "first draft").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let v1 = created.header("etag").to_owned();
    let edit = |text: &str| json!({ "title": "Plan", "content": text });

    let missing = s.put(&id, None, edit("second")).await;
    assert!(
        missing.problem(428)["detail"]
            .as_str()
            .unwrap()
            .contains("If-Match")
    );

    let second = s.put(&id, Some(&v1), edit("second draft")).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["version"], 2);
    assert_eq!(second.body["status"], "pending");
    assert_eq!(second.body["content"], "second draft");
    let v2 = second.header("etag").to_owned();
    assert_ne!(v2, v1);
    assert_eq!(v2, quoted(&second.body["etag"]));

    // The old tag is stale: 412 with the current copy and its tag.
    let stale = s.put(&id, Some(&v1), edit("lost update")).await;
    let problem = stale.problem(412);
    assert_eq!(problem["current"]["content"], "second draft");
    assert_eq!(problem["current"]["version"], 2);
    assert_eq!(stale.header("etag"), v2);
    // Strong comparison: a weak tag never matches for a write.
    s.put(&id, Some(&format!("W/{v2}")), edit("weak"))
        .await
        .problem(412);
    // If-None-Match: * on an existing document fails a write.
    let both = s
        .api
        .send_with(
            "PUT",
            &format!("{}/{id}", s.docs()),
            Some(&s.token),
            Some(edit("x")),
            &[("if-match", &v2), ("if-none-match", "*")],
        )
        .await;
    both.problem(412);
    s.put(&id, Some("garbage"), edit("x")).await.problem(400);

    // A list containing the current tag, then `*`.
    let listed = format!("\"other\", {v2}");
    let third = s.put(&id, Some(&listed), edit("third draft")).await;
    assert_eq!(third.body["version"], 3, "{}", third.body);
    let fourth = s
        .put(
            &id,
            Some("*"),
            json!({ "title": "Plan v4", "content": "third draft" }),
        )
        .await;
    assert_eq!(fourth.body["version"], 4, "{}", fourth.body);
    // A title-only change bumps the tag but does not re-queue ingestion.
    assert_ne!(fourth.header("etag"), third.header("etag"));
    // Sending the current state again changes nothing.
    let v4 = fourth.header("etag").to_owned();
    let same = s
        .put(
            &id,
            Some(&v4),
            json!({ "title": "Plan v4", "content": "third draft" }),
        )
        .await;
    assert_eq!((same.status, same.body["version"].as_i64()), (200, Some(4)));
    assert_eq!(same.header("etag"), v4);

    // PUT replaces: content is required for inline documents.
    s.put(&id, Some(&v4), json!({ "title": "No content" }))
        .await
        .problem(422);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn concurrent_writers_with_the_same_tag_have_exactly_one_winner(pool: PgPool) {
    let s = Arc::new(setup(pool, &[]).await);
    let created = s.create("Shared", "v1").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let tag = created.header("etag").to_owned();
    let writers = (0..8).map(|n| {
        let (s, id, tag) = (s.clone(), id.clone(), tag.clone());
        tokio::spawn(async move {
            s.put(
                &id,
                Some(&tag),
                json!({ "title": "Shared", "content": format!("writer {n}") }),
            )
            .await
        })
    });
    let replies: Vec<Reply> = futures::future::join_all(writers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let winners: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for loser in replies.iter().filter(|r| r.status != 200) {
        // Every loser sees the winner's state.
        assert_eq!(
            loser.problem(412)["current"]["content"],
            winners[0].body["content"]
        );
    }
    let now = s.get(&format!("{}/{id}", s.docs()), &[]).await;
    assert_eq!(now.body["version"], 2);
    assert_eq!(now.body["content"], winners[0].body["content"]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn versions_record_history_snapshots_and_restores(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let created = s.create("Essay", "opening").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let v1_tag = created.header("etag").to_owned();
    let second = s
        .put(
            &id,
            Some(&v1_tag),
            json!({ "title": "Essay", "content": "rewritten" }),
        )
        .await;
    let v2_tag = second.header("etag").to_owned();
    let versions = format!("{}/{id}/versions", s.docs());

    let snap = s
        .api
        .send(
            "POST",
            &versions,
            Some(&s.token),
            Some(json!({ "label": "before review" })),
        )
        .await;
    assert_eq!(snap.status, 201, "{}", snap.body);
    assert_eq!(
        (snap.body["version"].as_i64(), snap.body["kind"].as_str()),
        (Some(3), Some("snapshot"))
    );
    assert_eq!(snap.body["label"], "before review");
    // A snapshot keeps the content, so the entity tag stays.
    let doc = s.get(&format!("{}/{id}", s.docs()), &[]).await;
    assert_eq!(
        (doc.body["version"].as_i64(), doc.header("etag")),
        (Some(3), v2_tag.as_str())
    );
    // An empty body is a snapshot without a label.
    let bare = s.api.send("POST", &versions, Some(&s.token), None).await;
    assert_eq!(
        (bare.status, bare.body["label"].clone()),
        (201, Value::Null)
    );

    let page = s.get(&format!("{versions}?limit=2"), &[]).await;
    let numbers: Vec<i64> = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![4, 3]);
    assert!(
        page.body["items"][0].get("content").is_none(),
        "lists leave content out"
    );
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let rest = s
        .get(&format!("{versions}?limit=2&cursor={cursor}"), &[])
        .await;
    let kinds: Vec<&str> = rest.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["update", "create"]);
    assert_eq!(rest.body["next_cursor"], Value::Null);

    let first = s.get(&format!("{versions}/1"), &[]).await;
    assert_eq!(
        (first.status, first.body["content"].as_str()),
        (200, Some("opening"))
    );
    assert_eq!(first.header("etag"), v1_tag);
    s.get(&format!("{versions}/99"), &[]).await.problem(404);
    s.get(&format!("{versions}/zero"), &[]).await.problem(400);

    // Restore honours If-Match when sent.
    let restore = format!("{versions}/1/restore");
    let restore_if = |tag: String| {
        let (s, restore) = (&s, &restore);
        async move {
            s.api
                .send_with("POST", restore, Some(&s.token), None, &[("if-match", &tag)])
                .await
        }
    };
    let stale = restore_if(v1_tag.clone()).await;
    assert_eq!(stale.problem(412)["current"]["content"], "rewritten");
    let restored = restore_if(v2_tag.clone()).await;
    assert_eq!(restored.status, 200, "{}", restored.body);
    assert_eq!(restored.body["version"], 5);
    assert_eq!(restored.body["content"], "opening");
    assert_eq!(restored.body["status"], "pending");
    assert_eq!(restored.header("etag"), v1_tag, "same state, same tag");
    let latest = s.get(&format!("{versions}?limit=1"), &[]).await;
    assert_eq!(latest.body["items"][0]["kind"], "restore");
    assert_eq!(latest.body["items"][0]["restored_from"], 1);
    // Restoring the state it already has changes nothing.
    let again = s.api.send("POST", &restore, Some(&s.token), None).await;
    assert_eq!(again.body["version"], 5);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn delete_leaves_a_tombstone_and_removes_chunks_and_files(pool: PgPool) {
    let s = setup(pool.clone(), &[]).await;
    let created = s.create("Report", "body").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let doc_path = format!("{}/{id}", s.docs());

    // As ingestion will: chunks for the document, and the document as an
    // upload with its file in the bucket.
    let state = state(pool.clone(), config(&[]));
    let key = format!("workspaces/{}/documents/{id}/report.txt", s.ws);
    let bucket = state
        .config
        .bucket_name
        .clone()
        .expect("test stack sets BUCKET_NAME");
    let s3 = state.s3().await;
    s3.put_object()
        .bucket(&bucket)
        .key(&key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"body"))
        .send()
        .await
        .unwrap();
    let mut tx = common::db::tenant_tx(&pool, None, Some(s.ws.parse().unwrap()))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE documents SET source = 'upload', s3_key = $2, status = 'ready' WHERE id = $1::uuid",
    )
    .bind(&id)
    .bind(&key)
    .execute(&mut *tx)
    .await
    .unwrap();
    for (ordinal, page) in [(0, 1), (1, 2)] {
        sqlx::query(
            "INSERT INTO chunks (id, workspace_id, document_id, ordinal, content, token_count, page, heading)
             VALUES ($1, $2::uuid, $3::uuid, $4, $5, 3, $6, 'Results')",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(&s.ws)
        .bind(&id)
        .bind(ordinal)
        .bind(format!("chunk {ordinal}"))
        .bind(page)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let chunks = s.get(&format!("{doc_path}/chunks?limit=1"), &[]).await;
    assert_eq!(
        chunks.body["items"][0]["locator"],
        json!({ "page": 1, "heading": "Results" })
    );
    assert_eq!(chunks.body["items"][0]["token_count"], 3);
    let cursor = chunks.body["next_cursor"].as_str().unwrap();
    let next = s
        .get(&format!("{doc_path}/chunks?limit=1&cursor={cursor}"), &[])
        .await;
    assert_eq!(next.body["items"][0]["ordinal"], 1);

    // A stale If-Match protects deletes too.
    let stale = s
        .api
        .send_with(
            "DELETE",
            &doc_path,
            Some(&s.token),
            None,
            &[("if-match", "\"stale\"")],
        )
        .await;
    stale.problem(412);
    let deleted = s.api.send("DELETE", &doc_path, Some(&s.token), None).await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    s.get(&doc_path, &[]).await.problem(404);
    s.get(&format!("{doc_path}/chunks"), &[]).await.problem(404);
    s.get(&format!("{doc_path}/versions"), &[])
        .await
        .problem(404);
    s.api
        .send("DELETE", &doc_path, Some(&s.token), None)
        .await
        .problem(404);
    let list = s.get(&s.docs(), &[]).await;
    assert_eq!(list.body["items"], json!([]));

    let mut tx = common::db::tenant_tx(&pool, None, Some(s.ws.parse().unwrap()))
        .await
        .unwrap();
    let (left,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM chunks WHERE document_id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(left, 0, "chunks are gone with the document");
    let head = s3.head_object().bucket(&bucket).key(&key).send().await;
    assert!(head.is_err(), "the stored file is removed");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn limits_and_bad_input_are_problems_naming_the_field(pool: PgPool) {
    let s = setup(
        pool,
        &[
            ("DOCUMENT_MAX_CONTENT_BYTES", "1000"),
            ("DOCUMENT_MAX_TITLE_CHARS", "20"),
            ("DOCUMENT_MAX_METADATA_BYTES", "100"),
            ("DOCUMENT_MAX_METADATA_DEPTH", "2"),
        ],
    )
    .await;
    let post = |body: Value| {
        let s = &s;
        async move {
            s.api
                .send("POST", &s.docs(), Some(&s.token), Some(body))
                .await
        }
    };
    let cases = [
        (
            json!({ "title": "t", "content": "x".repeat(1001) }),
            413,
            "content",
        ),
        (
            json!({ "title": "x".repeat(21), "content": "x" }),
            422,
            "title",
        ),
        (json!({ "title": "  ", "content": "x" }), 422, "title"),
        (
            json!({ "title": "t", "content": "x", "metadata": { "a": "y".repeat(100) } }),
            413,
            "metadata",
        ),
        (
            json!({ "title": "t", "content": "x", "metadata": { "a": { "b": { "c": 1 } } } }),
            422,
            "metadata",
        ),
        (
            json!({ "title": "t", "content": "x", "metadata": [1, 2] }),
            422,
            "metadata",
        ),
        (
            json!({ "title": "t", "content": "x", "content_type": "application/pdf" }),
            422,
            "content_type",
        ),
        (
            json!({ "title": "t", "content": "{oops", "content_type": "application/json" }),
            422,
            "content",
        ),
        (json!({ "title": "t", "content": null }), 422, "content"),
        (
            json!({ "title": "t", "content": "x", "colour": "red" }),
            422,
            "colour",
        ),
        (json!({ "title": 5, "content": "x" }), 422, "title"),
        (
            json!({ "id": "not-a-uuid", "title": "t", "content": "x" }),
            422,
            "id",
        ),
    ];
    for (body, status, field) in cases {
        let reply = post(body.clone()).await;
        let problem = reply.problem(status);
        let named = problem["field"].as_str().unwrap_or_default();
        assert!(
            named == field || named.starts_with(field),
            "{body}: {problem}"
        );
    }
    let docs = s.docs();
    for (query, field) in [
        ("status=done", "status"),
        ("query=a%00b", "query"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("cursor=bm90LWpzb24", "cursor"),
        (&*format!("query={}", "q".repeat(201)), "query"),
    ] {
        let reply = s.get(&format!("{docs}?{query}"), &[]).await;
        assert_eq!(reply.problem(422)["field"], field, "{query}");
    }
    let sync = format!("/workspaces/{}/sync", s.ws);
    let bogus = common::pagination::encode(
        &json!({ "w": s.ws, "p": "9:1:", "t": null, "x": null, "i": null }),
    );
    s.get(&format!("{sync}?cursor={bogus}"), &[])
        .await
        .problem(422);
    s.get(&format!("{docs}/not-a-uuid"), &[]).await.problem(400);
    let ok = s.create("fits", &"x".repeat(1000)).await;
    assert_eq!(ok.body["size"], 1000);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn another_workspace_never_sees_or_touches_a_document(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let created = s.create("Private", "secret").await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let tag = created.header("etag").to_owned();
    let (mallory, _, _) = s.api.signup("mallory@example.com").await;
    let own_ws = s.api.create_workspace(&mallory, "Mine").await;
    let foreign = format!("{}/{id}", s.docs());
    let misplaced = format!("/workspaces/{own_ws}/documents/{id}");
    let mut probes = Vec::new();
    for doc in [&foreign, &misplaced] {
        probes.extend([
            ("GET", doc.clone()),
            ("PUT", doc.clone()),
            ("DELETE", doc.clone()),
            ("GET", format!("{doc}/versions")),
            ("GET", format!("{doc}/versions/1")),
            ("POST", format!("{doc}/versions")),
            ("POST", format!("{doc}/versions/1/restore")),
            ("GET", format!("{doc}/chunks")),
        ]);
    }
    probes.push(("GET", s.docs()));
    probes.push(("POST", s.docs()));
    probes.push(("GET", format!("/workspaces/{}/sync", s.ws)));
    for (method, path) in probes {
        // Each route gets a body it would accept, so only the ids are wrong.
        let body = if path.ends_with("/versions") {
            json!({ "label": "pwned" })
        } else {
            json!({ "title": "pwned", "content": "x" })
        };
        let reply = s
            .api
            .send_with(
                method,
                &path,
                Some(&mallory),
                Some(body),
                &[("if-match", &tag)],
            )
            .await;
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.body);
        reply.problem(404);
    }
    // A cursor from one workspace is refused in another.
    let cursor = s.sync(None, 10).await.body["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{own_ws}/sync?cursor={cursor}"),
            Some(&mallory),
            None,
        )
        .await;
    theirs.problem(422);
    // Nothing changed.
    let now = s.get(&foreign, &[]).await;
    assert_eq!(
        (now.body["version"].as_i64(), now.body["content"].as_str()),
        (Some(1), Some("secret"))
    );
    // Ids are scoped to their workspace: the same id elsewhere is another
    // document, and the original is untouched.
    let twin = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{own_ws}/documents"),
            Some(&mallory),
            Some(json!({ "id": id, "title": "t", "content": "x" })),
        )
        .await;
    assert_eq!(twin.status, 201, "{}", twin.body);
    let still = s.get(&foreign, &[]).await;
    assert_eq!(still.body["content"], "secret");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn client_chosen_ids_make_creates_replayable(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let id = uuid::Uuid::now_v7().to_string();
    let body = json!({ "id": id, "title": "Offline note", "content": "written on a plane" });
    let first = s
        .api
        .send("POST", &s.docs(), Some(&s.token), Some(body.clone()))
        .await;
    assert_eq!(
        (first.status, first.body["id"].as_str()),
        (201, Some(id.as_str()))
    );
    let replay = s
        .api
        .send("POST", &s.docs(), Some(&s.token), Some(body))
        .await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["etag"], first.body["etag"]);
    let different = s
        .api
        .send(
            "POST",
            &s.docs(),
            Some(&s.token),
            Some(json!({ "id": id, "title": "Offline note", "content": "other" })),
        )
        .await;
    different.problem(409);
    let versions = s.get(&format!("{}/{id}/versions", s.docs()), &[]).await;
    assert_eq!(versions.body["items"].as_array().unwrap().len(), 1);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn list_pages_never_repeat_or_skip_while_others_insert(pool: PgPool) {
    let s = Arc::new(setup(pool, &[]).await);
    let mut existing = HashSet::new();
    for n in 0..30 {
        let title = if n % 3 == 0 {
            format!("Alpha report {n}")
        } else {
            format!("beta memo {n}")
        };
        existing.insert(
            s.create(&title, "text").await.body["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let inserter = {
        let s = s.clone();
        tokio::spawn(async move {
            for n in 0..20 {
                s.create(&format!("late {n}"), "text").await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{}?limit=7&cursor={c}", s.docs()),
            None => format!("{}?limit=7", s.docs()),
        };
        let page = s.get(&path, &[]).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for item in page.body["items"].as_array().unwrap() {
            assert!(item.get("content").is_none(), "lists leave content out");
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    inserter.await.unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no document appears twice");
    for id in &existing {
        assert!(unique.contains(id), "existing document {id} was skipped");
    }
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");

    let search = s
        .get(&format!("{}?query=ALPHA%20rep&limit=200", s.docs()), &[])
        .await;
    assert_eq!(search.body["items"].as_array().unwrap().len(), 10);
    let literal = s
        .get(&format!("{}?query=%25&limit=200", s.docs()), &[])
        .await;
    assert_eq!(literal.body["items"], json!([]), "% is matched literally");
    let pending = s
        .get(&format!("{}?status=pending&limit=200", s.docs()), &[])
        .await;
    assert_eq!(pending.body["items"].as_array().unwrap().len(), 50);
    let ready = s.get(&format!("{}?status=ready", s.docs()), &[]).await;
    assert_eq!(ready.body["items"], json!([]));
}

/// A client's copy of a workspace, kept by sync: id → version.
#[derive(Default)]
struct Replica {
    docs: HashMap<String, i64>,
    cursor: Option<String>,
    /// Every (id, version, deleted) delivered, to catch repeats.
    delivered: HashSet<(String, i64, bool)>,
}

impl Replica {
    /// One sync request; returns how many changes it applied.
    async fn pull(&mut self, s: &Setup, limit: usize) -> (usize, bool) {
        let reply = s.sync(self.cursor.as_deref(), limit).await;
        let changes = reply.body["changes"].as_array().unwrap();
        for change in changes {
            match change["op"].as_str().unwrap() {
                "upsert" => {
                    let doc = &change["document"];
                    let id = doc["id"].as_str().unwrap().to_owned();
                    let version = doc["version"].as_i64().unwrap();
                    assert!(
                        self.delivered.insert((id.clone(), version, false)),
                        "{id} v{version} delivered twice"
                    );
                    self.docs.insert(id, version);
                }
                "delete" => {
                    let id = change["id"].as_str().unwrap().to_owned();
                    assert!(
                        self.delivered.insert((id.clone(), 0, true)),
                        "tombstone {id} delivered twice"
                    );
                    self.docs.remove(&id);
                }
                op => panic!("unknown op {op}"),
            }
        }
        self.cursor = Some(reply.body["cursor"].as_str().unwrap().to_owned());
        (changes.len(), reply.body["has_more"].as_bool().unwrap())
    }

    /// Pulls until the server has nothing more right now.
    async fn catch_up(&mut self, s: &Setup, limit: usize) {
        loop {
            let (_, more) = self.pull(s, limit).await;
            if !more {
                break;
            }
        }
    }
}

/// The database's truth (read in the workspace's RLS context).
async fn live_versions(pool: &PgPool, ws: &str) -> HashMap<String, i64> {
    let mut tx = common::db::tenant_tx(pool, None, Some(ws.parse().unwrap()))
        .await
        .unwrap();
    let rows: Vec<(uuid::Uuid, i32)> = sqlx::query_as(
        "SELECT id, version FROM documents WHERE workspace_id = $1::uuid AND deleted_at IS NULL",
    )
    .bind(ws)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, v)| (id.to_string(), v as i64))
        .collect()
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn sync_delivers_each_change_and_tombstone_once(pool: PgPool) {
    let s = setup(pool.clone(), &[]).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            s.create(&format!("doc {n}"), "text").await.body["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Deleted before the first sync: a new client never hears of it.
    s.api
        .send(
            "DELETE",
            &format!("{}/{}", s.docs(), ids[4]),
            Some(&s.token),
            None,
        )
        .await;
    let mut replica = Replica::default();
    let (first, more) = replica.pull(&s, 3).await;
    assert_eq!((first, more), (3, true));
    let (second, more) = replica.pull(&s, 3).await;
    assert_eq!((second, more), (1, false));
    assert_eq!(replica.docs, live_versions(&pool, &s.ws).await);
    // Nothing new: an empty page, and the cursor still works.
    assert_eq!(replica.pull(&s, 3).await, (0, false));

    let doc0 = s.get(&format!("{}/{}", s.docs(), ids[0]), &[]).await;
    s.put(
        &ids[0],
        Some(doc0.header("etag")),
        json!({ "title": "doc 0", "content": "edited" }),
    )
    .await;
    s.api
        .send(
            "DELETE",
            &format!("{}/{}", s.docs(), ids[1]),
            Some(&s.token),
            None,
        )
        .await;
    let added = s.create("doc 5", "text").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = s.sync(replica.cursor.as_deref(), 10).await;
    let ops: Vec<(String, String)> = reply.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let id = c["id"]
                .as_str()
                .or(c["document"]["id"].as_str())
                .unwrap()
                .to_owned();
            (c["op"].as_str().unwrap().to_owned(), id)
        })
        .collect();
    assert_eq!(
        ops,
        vec![
            ("upsert".to_owned(), ids[0].clone()),
            ("delete".to_owned(), ids[1].clone()),
            ("upsert".to_owned(), added)
        ],
        "changes arrive once, in commit order"
    );
    let after = s.sync(reply.body["cursor"].as_str(), 10).await;
    assert_eq!(
        after.body["changes"],
        json!([]),
        "tombstones are delivered once"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn sync_sees_a_transaction_that_commits_after_a_later_one(pool: PgPool) {
    let s = setup(pool.clone(), &[]).await;
    let early = s.create("early", "a").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let late = s.create("late", "b").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut replica = Replica::default();
    replica.catch_up(&s, 10).await;
    let ws: common::ids::WorkspaceId = s.ws.parse().unwrap();

    // Transaction A writes first (the lower transaction id) and stays open...
    let mut a = common::db::tenant_tx(&pool, None, Some(ws)).await.unwrap();
    sqlx::query(
        "UPDATE documents SET title = 'early, slow', version = version + 1 WHERE id = $1::uuid",
    )
    .bind(&early)
    .execute(&mut *a)
    .await
    .unwrap();
    // ...while B writes later and commits first.
    let mut b = common::db::tenant_tx(&pool, None, Some(ws)).await.unwrap();
    sqlx::query(
        "UPDATE documents SET title = 'late, fast', version = version + 1 WHERE id = $1::uuid",
    )
    .bind(&late)
    .execute(&mut *b)
    .await
    .unwrap();
    b.commit().await.unwrap();
    replica.catch_up(&s, 10).await;
    assert_eq!(replica.docs[&late], 2);
    assert_eq!(replica.docs[&early], 1, "A has not committed yet");
    a.commit().await.unwrap();
    // A sequence-number cursor would now be past A's number and skip it.
    replica.catch_up(&s, 10).await;
    assert_eq!(
        replica.docs[&early], 2,
        "A's change arrives after it commits"
    );
    assert_eq!(replica.docs, live_versions(&pool, &s.ws).await);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_syncing_reader_converges_with_concurrent_writers(pool: PgPool) {
    use rand::{Rng, SeedableRng};
    let s = Arc::new(setup(pool.clone(), &[]).await);
    let seed: u64 = rand::random();
    println!("writer seed {seed}");
    let writers = (0..4u64).map(|w| {
        let s = s.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ w);
            let mut mine: Vec<(String, String)> = Vec::new(); // (id, etag)
            for step in 0..40 {
                let roll = rng.random_range(0..10);
                if mine.is_empty() || roll < 4 {
                    let reply = s.create(&format!("w{w} s{step}"), "text").await;
                    mine.push((reply.body["id"].as_str().unwrap().to_owned(), reply.header("etag").to_owned()));
                } else if roll < 8 {
                    let i = rng.random_range(0..mine.len());
                    let (id, tag) = mine[i].clone();
                    let reply = s.put(&id, Some(&tag), json!({ "title": format!("w{w} s{step}"), "content": format!("edit {step}") })).await;
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    mine[i].1 = reply.header("etag").to_owned();
                } else {
                    let (id, _) = mine.swap_remove(rng.random_range(0..mine.len()));
                    let reply = s.api.send("DELETE", &format!("{}/{id}", s.docs()), Some(&s.token), None).await;
                    assert_eq!(reply.status, 204);
                }
            }
        })
    });
    let writers = futures::future::join_all(writers);
    let reader = {
        let s = s.clone();
        async move {
            let mut replica = Replica::default();
            for _ in 0..60 {
                replica.pull(&s, 5).await;
            }
            replica
        }
    };
    let (results, mut replica) = tokio::join!(writers, reader);
    for result in results {
        result.unwrap();
    }
    replica.catch_up(&s, 5).await;
    assert_eq!(
        replica.docs,
        live_versions(&pool, &s.ws).await,
        "seed {seed}"
    );
    // Quiet now: another pull brings nothing.
    assert_eq!(replica.pull(&s, 5).await, (0, false));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn content_changes_are_queued_for_ingestion(pool: PgPool) {
    use common::ingest::events::QueueMessage;
    // A queue of this test's own, so other tests' messages never mix in.
    let probe = state(pool.clone(), config(&[]));
    let sqs = probe.sqs().await;
    let name = format!(
        "t-docs-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let created = sqs.create_queue().queue_name(name).send().await.unwrap();
    let url = created.queue_url().unwrap().to_owned();
    let s = setup(pool, &[("INGEST_QUEUE_URL", &url)]).await;

    let doc = s.create("Queued", "one").await;
    let id = doc.body["id"].as_str().unwrap().to_owned();
    let v2 = s
        .put(
            &id,
            Some(doc.header("etag")),
            json!({ "title": "Queued", "content": "two" }),
        )
        .await;
    // A title-only change leaves the chunks as they are: nothing to ingest.
    let v3 = s
        .put(
            &id,
            Some(v2.header("etag")),
            json!({ "title": "Renamed", "content": "two" }),
        )
        .await;
    assert_eq!(
        (v3.body["version"].as_i64(), v3.body["status"].as_str()),
        (Some(3), Some("pending"))
    );
    let restore = format!("{}/{id}/versions/1/restore", s.docs());
    let v4 = s.api.send("POST", &restore, Some(&s.token), None).await;
    assert_eq!(v4.body["version"], 4, "{}", v4.body);

    let mut versions = Vec::new();
    for _ in 0..10 {
        let received = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in received.messages() {
            match QueueMessage::parse(message.body().unwrap()).unwrap() {
                QueueMessage::DocumentChanged(changed) => {
                    assert_eq!(changed.document_id.to_string(), id);
                    assert_eq!(changed.workspace_id.to_string(), s.ws);
                    versions.push(changed.version);
                }
                other => panic!("unexpected message {other:?}"),
            }
        }
        if versions.len() >= 3 {
            break;
        }
    }
    versions.sort();
    assert_eq!(versions, vec![1, 2, 4]);
}
