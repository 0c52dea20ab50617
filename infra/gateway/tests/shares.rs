//! Share links: a member links a document, their own chat session or a
//! job that has succeeded (a classification's results, an export's
//! download); anyone with the link reads that object only, without
//! signing in, until it is revoked or expires or the object is deleted or
//! its creator leaves the workspace (the listing then says `inactive`);
//! tokens are stored hashed, views are limited per source address, and
//! strangers learn nothing (404).

use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::uploads::{Uploads, stack};
use support::{Api, Reply, config, gateway, state};

struct Setup {
    api: Api,
    pool: PgPool,
    alice: String,
    ws: String,
}

async fn setup(pool: PgPool, overrides: &[(&str, &str)]) -> Setup {
    let api = gateway(state(pool.clone(), config(overrides))).await;
    let (alice, _, _) = api.signup("alice@example.com").await;
    let ws = api.create_workspace(&alice, "Research").await;
    Setup {
        api,
        pool,
        alice,
        ws,
    }
}

impl Setup {
    async fn document(&self, title: &str, content: &str) -> String {
        let reply = self
            .api
            .send(
                "POST",
                &format!("/workspaces/{}/documents", self.ws),
                Some(&self.alice),
                Some(
                    json!({ "title": title, "content": content, "metadata": { "team": "trials" } }),
                ),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    async fn share(&self, token: &str, body: Value) -> Reply {
        self.api
            .send(
                "POST",
                &format!("/workspaces/{}/shares", self.ws),
                Some(token),
                Some(body),
            )
            .await
    }

    /// Alice's link to `document`: (link id, token).
    async fn share_document(&self, document: &str) -> (String, String) {
        let reply = self
            .share(&self.alice, json!({ "document_id": document }))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        (
            reply.body["id"].as_str().unwrap().to_owned(),
            reply.body["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn view(&self, token: &str) -> Reply {
        self.api
            .send("GET", &format!("/share/{token}"), None, None)
            .await
    }

    async fn revoke(&self, token: &str, link: &str) -> Reply {
        self.api
            .send(
                "DELETE",
                &format!("/workspaces/{}/shares/{link}", self.ws),
                Some(token),
                None,
            )
            .await
    }

    /// A transaction that sees the workspace's rows (row-level security).
    async fn in_workspace(&self) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut tx = self.pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.workspace_id', $1, true)")
            .bind(&self.ws)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx
    }

    async fn audit(&self) -> Vec<(String, Value)> {
        sqlx::query_as(
            "SELECT action, details FROM audit_log
             WHERE workspace_id = $1::uuid AND action LIKE 'share.%' ORDER BY id",
        )
        .bind(&self.ws)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

/// The one 404 every dead link gets, less what varies per request.
fn dead(reply: &Reply) -> Value {
    let mut problem = reply.problem(404).clone();
    problem.as_object_mut().unwrap().remove("instance");
    problem
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_document_link_opens_without_signing_in_and_shows_that_document_only(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let shared = s
        .document("Trial protocol", "Dose escalation in three cohorts.")
        .await;
    let other = s
        .document("Board minutes", "The acquisition closes in March.")
        .await;

    let created = s
        .share(
            &s.alice,
            json!({ "document_id": shared, "expires_in_hours": 48 }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("cache-control"), "no-store");
    let token = created.body["token"].as_str().unwrap();
    assert!(token.starts_with("rws_") && token.len() == 47, "{token}");
    assert_eq!(created.body["path"], format!("/share/{token}"));
    assert_eq!(created.body["target_kind"], "document");
    assert_eq!(created.body["target_id"], shared.as_str());
    assert_eq!(created.body["status"], "active");

    // No Authorization header at all.
    let view = s.view(token).await;
    assert_eq!(view.status, 200, "{}", view.body);
    assert_eq!(view.header("cache-control"), "no-store");
    assert_eq!(view.header("x-robots-tag"), "noindex");
    assert_eq!(view.header("referrer-policy"), "no-referrer");
    assert_eq!(view.body["kind"], "document");
    let document = &view.body["document"];
    assert_eq!(document["title"], "Trial protocol");
    assert_eq!(document["content"], "Dose escalation in three cohorts.");
    assert_eq!(document["content_type"], "text/plain");
    assert_eq!(document["metadata"], json!({ "team": "trials" }));
    assert!(view.body.get("chat_session").is_none());
    // Nothing of the workspace beyond the document: not the other
    // document, not the ids of the workspace, the document or its author.
    let text = view.body.to_string();
    for secret in [
        "Board minutes",
        "acquisition",
        other.as_str(),
        s.ws.as_str(),
        shared.as_str(),
        "created_by",
        "s3",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // Views are counted for the workspace's members.
    let listed = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{}/shares", s.ws),
            Some(&s.alice),
            None,
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["items"][0]["view_count"], 1);
    assert!(listed.body["items"][0]["last_viewed_at"].is_string());
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn only_the_tokens_hash_is_stored(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let document = s.document("Notes", "Some notes.").await;
    let (link, token) = s.share_document(&document).await;
    let mut tx = s.in_workspace().await;
    let (matches, anywhere): (bool, i64) = sqlx::query_as(
        "SELECT bool_and(token_hash = sha256(convert_to($2, 'UTF8'))),
                count(*) FILTER (WHERE strpos(row_to_json(s)::text, $2) > 0
                                    OR strpos(row_to_json(s)::text, $3) > 0)
         FROM share_links s WHERE id = $1::uuid",
    )
    .bind(&link)
    .bind(&token)
    .bind(token.trim_start_matches("rws_"))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(matches, "the row holds the token's SHA-256");
    assert_eq!(anywhere, 0, "the token itself is stored nowhere in the row");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_chat_session_link_shows_its_messages_with_citations(pool: PgPool) {
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&probe, "shares", &suffix).await;
    let app = state(
        pool.clone(),
        config(&[("INGEST_QUEUE_URL", queue.as_str())]),
    );
    common::db::ensure_vector_index(
        &app.db,
        app.config.embedding.dimensions,
        app.config.query.hnsw_ef_construction,
    )
    .await
    .unwrap();
    let api = gateway(app.clone()).await;
    let (alice, _, _) = api.signup("alice@example.com").await;
    let ws = api.create_workspace(&alice, "Research").await;
    let document = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/documents"),
            Some(&alice),
            Some(json!({ "title": "Vaccine trial", "content": "The vaccine trial enrolled 400 volunteers in Oslo." })),
        )
        .await;
    assert_eq!(document.status, 201, "{}", document.body);
    let outcome = support::drain(&app, &queue).await;
    assert_eq!(outcome.failed, 0, "ingestion failed");
    let chat = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/chat"),
            Some(&alice),
            Some(json!({ "message": "How many volunteers did the vaccine trial enroll?" })),
        )
        .await;
    assert_eq!(chat.status, 201, "{}", chat.body);
    let session = chat.body["session_id"].as_str().unwrap().to_owned();

    let created = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/shares"),
            Some(&alice),
            Some(json!({ "chat_session_id": session })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["target_kind"], "chat_session");
    let token = created.body["token"].as_str().unwrap();

    let view = api
        .send("GET", &format!("/share/{token}"), None, None)
        .await;
    assert_eq!(view.status, 200, "{}", view.body);
    assert_eq!(view.body["kind"], "chat_session");
    let shared = &view.body["chat_session"];
    assert_eq!(
        shared["title"],
        "How many volunteers did the vaccine trial enroll?"
    );
    let messages = shared["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{shared}");
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(
        messages[0]["content"],
        "How many volunteers did the vaccine trial enroll?"
    );
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"], chat.body["answer"]);
    // The citations the answer rested on, as the session holds them.
    let citations = messages[1]["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "{shared}");
    assert_eq!(citations[0]["title"], "Vaccine trial");
    assert!(messages[1].get("usage").is_none());
    assert!(view.body.get("document").is_none());
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn members_share_only_their_own_sessions_and_manage_only_their_own_links(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let (bob, _, bob_id) = s.api.signup("bob@example.com").await;
    s.api
        .join(&s.alice, &s.ws, &bob, "bob@example.com", "member")
        .await;
    let session = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{}/chat/sessions", s.ws),
            Some(&s.alice),
            Some(json!({ "title": "Private thoughts" })),
        )
        .await;
    assert_eq!(session.status, 201, "{}", session.body);
    let session = session.body["id"].as_str().unwrap();

    // Bob cannot see Alice's session, so he cannot share it either.
    let refused = s.share(&bob, json!({ "chat_session_id": session })).await;
    refused.problem(404);
    // He may share any document of the workspace.
    let document = s.document("Shared plan", "Everyone may read this.").await;
    let bobs = s.share(&bob, json!({ "document_id": document })).await;
    assert_eq!(bobs.status, 201, "{}", bobs.body);
    let bobs = bobs.body["id"].as_str().unwrap().to_owned();
    let (alices, _) = s.share_document(&document).await;

    // Bob lists his own links; the owner lists everyone's.
    let list = |token: String| {
        let api = &s.api;
        let path = format!("/workspaces/{}/shares", s.ws);
        async move {
            let reply = api.send("GET", &path, Some(&token), None).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(bob.clone()).await, vec![bobs.clone()]);
    assert_eq!(
        list(s.alice.clone()).await,
        vec![alices.clone(), bobs.clone()]
    );

    // Bob cannot revoke Alice's link; the owner can revoke Bob's.
    s.revoke(&bob, &alices).await.problem(404);
    assert_eq!(s.revoke(&s.alice, &bobs).await.status, 204);

    // A link lives no longer than its creator's membership.
    let again = s.share(&bob, json!({ "document_id": document })).await;
    assert_eq!(again.status, 201, "{}", again.body);
    let token = again.body["token"].as_str().unwrap();
    assert_eq!(s.view(token).await.status, 200);
    let removed = s
        .api
        .send(
            "DELETE",
            &format!("/workspaces/{}/members/{bob_id}", s.ws),
            Some(&s.alice),
            None,
        )
        .await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    s.view(token).await.problem(404);
    s.api
        .join(&s.alice, &s.ws, &bob, "bob@example.com", "member")
        .await;
    s.view(token).await.problem(404);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn strangers_get_404_on_create_list_and_revoke(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let document = s.document("Notes", "Some notes.").await;
    let (link, token) = s.share_document(&document).await;
    let (mallory, _, _) = s.api.signup("mallory@example.com").await;
    let own = s.api.create_workspace(&mallory, "Mine").await;

    s.share(&mallory, json!({ "document_id": document }))
        .await
        .problem(404);
    s.api
        .send(
            "GET",
            &format!("/workspaces/{}/shares", s.ws),
            Some(&mallory),
            None,
        )
        .await
        .problem(404);
    s.revoke(&mallory, &link).await.problem(404);
    // Nor through her own workspace.
    for reply in [
        s.api
            .send(
                "POST",
                &format!("/workspaces/{own}/shares"),
                Some(&mallory),
                Some(json!({ "document_id": document })),
            )
            .await,
        s.api
            .send(
                "DELETE",
                &format!("/workspaces/{own}/shares/{link}"),
                Some(&mallory),
                None,
            )
            .await,
    ] {
        reply.problem(404);
    }
    // Managing links needs a signed-in user.
    s.api
        .send("GET", &format!("/workspaces/{}/shares", s.ws), None, None)
        .await
        .problem(401);
    assert_eq!(s.view(&token).await.status, 200);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn revoked_expired_unknown_and_deleted_targets_are_the_same_404(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let document = s.document("Notes", "Some notes.").await;

    // Revoked: at once, and revoking again changes nothing.
    let (revoked, token) = s.share_document(&document).await;
    assert_eq!(s.view(&token).await.status, 200);
    assert_eq!(s.revoke(&s.alice, &revoked).await.status, 204);
    let after_revoke = dead(&s.view(&token).await);
    assert_eq!(s.revoke(&s.alice, &revoked).await.status, 204);

    // Expired.
    let (expired, expired_token) = s.share_document(&document).await;
    let mut tx = s.in_workspace().await;
    sqlx::query(
        "UPDATE share_links SET created_at = now() - interval '2 hours',
                                expires_at = now() - interval '1 second'
         WHERE id = $1::uuid",
    )
    .bind(&expired)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(dead(&s.view(&expired_token).await), after_revoke);

    // Unknown, and not even a token.
    let unknown = format!("rws_{}", "A".repeat(43));
    assert_eq!(dead(&s.view(&unknown).await), after_revoke);
    assert_eq!(dead(&s.view("guess").await), after_revoke);

    // The document deleted since.
    let (_, live) = s.share_document(&document).await;
    let deleted = s
        .api
        .send(
            "DELETE",
            &format!("/workspaces/{}/documents/{document}", s.ws),
            Some(&s.alice),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(dead(&s.view(&live).await), after_revoke);

    // The listing says what became of each; the audit log has one entry
    // per creation and one for the revocation, not for the replay.
    let listed = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{}/shares", s.ws),
            Some(&s.alice),
            None,
        )
        .await;
    let statuses: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    // Newest first; the expired one was backdated above.
    assert_eq!(statuses, ["active", "revoked", "expired"]);
    let audit = s.audit().await;
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "share.created",
            "share.revoked",
            "share.created",
            "share.created"
        ]
    );
    assert_eq!(audit[1].1["share_id"], revoked.as_str());
    assert_eq!(audit[1].1["target_kind"], "document");
    assert_eq!(audit[0].1["target_id"], document.as_str());
    assert!(
        !audit.iter().any(|(_, d)| d.to_string().contains(&token)),
        "no token in the audit log"
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn views_are_limited_per_source_address(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let document = s.document("Notes", "Some notes.").await;
    let (_, token) = s.share_document(&document).await;
    let limit = common::shares::VIEWS_PER_IP_PER_MINUTE as usize;
    // Guesses count as much as views.
    for i in 0..limit {
        let reply = if i % 2 == 0 {
            s.view(&token).await
        } else {
            s.view(&format!("rws_{}", "B".repeat(43))).await
        };
        assert_ne!(reply.status, 429, "view {i} refused");
    }
    let refused = s.view(&token).await;
    refused.problem(429);
    let retry: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn links_are_listed_newest_first_in_pages_without_tokens(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let document = s.document("Notes", "Some notes.").await;
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(s.share_document(&document).await.0);
    }
    made.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/workspaces/{}/shares?limit=2&cursor={c}", s.ws),
            None => format!("/workspaces/{}/shares?limit=2", s.ws),
        };
        let page = s.api.send("GET", &path, Some(&s.alice), None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        for item in page.body["items"].as_array().unwrap() {
            assert!(item.get("token").is_none() && item.get("path").is_none());
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!((pages, seen), (3, made));
    s.api
        .send(
            "GET",
            &format!("/workspaces/{}/shares?cursor=nonsense", s.ws),
            Some(&s.alice),
            None,
        )
        .await
        .problem(422);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn bad_requests_are_refused_and_create_nothing(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let document = s.document("Notes", "Some notes.").await;
    for (body, field) in [
        (json!({}), "document_id"),
        (
            json!({ "document_id": document, "chat_session_id": document }),
            "document_id",
        ),
        (
            json!({ "document_id": document, "expires_in_hours": 0 }),
            "expires_in_hours",
        ),
        (
            json!({ "document_id": document, "expires_in_hours": 90 * 24 + 1 }),
            "expires_in_hours",
        ),
    ] {
        let reply = s.share(&s.alice, body.clone()).await;
        assert_eq!(reply.problem(422)["field"], field, "{body}");
    }
    // Ids that name nothing here.
    let nothing = uuid::Uuid::now_v7().to_string();
    s.share(&s.alice, json!({ "document_id": nothing }))
        .await
        .problem(404);
    s.share(&s.alice, json!({ "chat_session_id": nothing }))
        .await
        .problem(404);
    s.revoke(&s.alice, &nothing).await.problem(404);
    // The longest lifetime is allowed, and the default is a week.
    let longest = s
        .share(
            &s.alice,
            json!({ "document_id": document, "expires_in_hours": 90 * 24 }),
        )
        .await;
    assert_eq!(longest.status, 201, "{}", longest.body);
    let mut tx = s.in_workspace().await;
    let hours: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM expires_at - created_at)::float8 / 3600 FROM share_links",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(hours.len(), 1);
    assert!((hours[0] - 2160.0).abs() < 0.01, "{hours:?}");
    let default = s.share(&s.alice, json!({ "document_id": document })).await;
    assert_eq!(default.status, 201, "{}", default.body);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_uploaded_document_shows_its_extracted_passages_in_order(pool: PgPool) {
    let stack = support::uploads::stack(
        pool,
        &[("CHUNK_TOKENS", "60"), ("CHUNK_OVERLAP_TOKENS", "10")],
    )
    .await;
    let api = &stack.api;
    let (alice, _, _) = api.signup("alice@example.com").await;
    let ws = api.create_workspace(&alice, "Library").await;
    let text = format!(
        "# Guide\n\n## Setup\n\n{}\n\n## Usage\n\n{}",
        "Install the sampler and calibrate it at every site. ".repeat(20),
        "Run the sampler once a day and log the readings. ".repeat(20)
    );
    let asked = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/uploads"),
            Some(&alice),
            Some(json!({ "filename": "guide.md", "content_type": "text/markdown", "size": text.len() })),
        )
        .await;
    assert_eq!(asked.status, 201, "{}", asked.body);
    let upload = &asked.body["upload"];
    let mut put = reqwest::Client::new()
        .put(upload["url"].as_str().unwrap())
        .body(text.clone());
    for (name, value) in upload["headers"].as_object().unwrap() {
        put = put.header(name, value.as_str().unwrap());
    }
    assert!(put.send().await.unwrap().status().is_success());
    let document = asked.body["document_id"].as_str().unwrap();
    let outcome = support::drain(&stack.state, &stack.queue).await;
    assert_eq!(outcome.failed, 0, "ingestion failed");

    let created = api
        .send(
            "POST",
            &format!("/workspaces/{ws}/shares"),
            Some(&alice),
            Some(json!({ "document_id": document })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let token = created.body["token"].as_str().unwrap();
    let view = api
        .send("GET", &format!("/share/{token}"), None, None)
        .await;
    assert_eq!(view.status, 200, "{}", view.body);
    let shared = &view.body["document"];
    assert_eq!(shared["title"], "guide.md");
    assert_eq!(shared["status"], "ready");
    assert!(shared.get("content").is_none(), "{shared}");
    assert_eq!(shared["truncated"], false);
    let passages = shared["passages"].as_array().unwrap();
    assert!(passages.len() > 2, "{shared}");
    let ordinals: Vec<i64> = passages
        .iter()
        .map(|p| p["ordinal"].as_i64().unwrap())
        .collect();
    assert_eq!(ordinals, (0..passages.len() as i64).collect::<Vec<_>>());
    assert!(passages[0]["text"].as_str().unwrap().contains("calibrate"));
    assert!(
        passages.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("readings")
    );
    assert_eq!(passages.last().unwrap()["heading"], "Guide > Usage");
    // Where the file lies is not shared.
    let body = view.body.to_string();
    assert!(!body.contains(&stack.bucket) && !body.contains("workspaces/"));
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_long_session_is_shared_up_to_a_size_and_says_so(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let session = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{}/chat/sessions", s.ws),
            Some(&s.alice),
            Some(json!({ "title": "Long" })),
        )
        .await;
    assert_eq!(session.status, 201, "{}", session.body);
    let session = session.body["id"].as_str().unwrap();
    let owner: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = $1")
        .bind("alice@example.com")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    // Three messages of 2 MiB each, as the session's own user.
    let mut tx = s.in_workspace().await;
    sqlx::query("SELECT set_config('app.user_id', $1, true)")
        .bind(&owner)
        .execute(&mut *tx)
        .await
        .unwrap();
    for (n, letter) in ["a", "b", "c"].iter().enumerate() {
        sqlx::query(
            "INSERT INTO chat_messages (workspace_id, session_id, id, role, content)
             VALUES ($1::uuid, $2::uuid, $3, $4, repeat($5, 2 * 1024 * 1024))",
        )
        .bind(&s.ws)
        .bind(session)
        .bind(uuid::Uuid::now_v7())
        .bind(if n % 2 == 0 { "user" } else { "assistant" })
        .bind(letter)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let created = s
        .share(&s.alice, json!({ "chat_session_id": session }))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let view = s.view(created.body["token"].as_str().unwrap()).await;
    assert_eq!(view.status, 200);
    let shared = &view.body["chat_session"];
    let firsts: Vec<&str> = shared["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["content"].as_str().unwrap()[..1])
        .collect();
    assert_eq!(firsts, ["a", "b"]);
    assert_eq!(shared["truncated"], true);
}

/// A workspace whose jobs run: a bucket and ingest queue of the test's
/// own, drained by hand.
struct Jobs {
    s: Uploads,
    alice: String,
    ws: String,
}

impl Jobs {
    async fn new(pool: PgPool) -> Self {
        let s = stack(pool, &[]).await;
        let (alice, _, _) = s.api.signup("alice@example.com").await;
        let ws = s.api.create_workspace(&alice, "Lab").await;
        Self { s, alice, ws }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.s
            .api
            .send(
                method,
                &format!("/workspaces/{}{path}", self.ws),
                Some(&self.alice),
                body,
            )
            .await
    }

    async fn document(&self, title: &str, content: &str) -> String {
        let reply = self
            .send(
                "POST",
                "/documents",
                Some(json!({ "title": title, "content": content })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// The scheme of the brief: one label field, `topic`.
    async fn scheme(&self) -> String {
        let reply = self
            .send(
                "POST",
                "/schemes",
                Some(json!({
                    "name": "Topics",
                    "fields": [{
                        "name": "topic", "kind": "single_label",
                        "description": "What it is about",
                        "values": [
                            {"value": "biology", "description": "cells genes"},
                            {"value": "physics", "description": "force energy"}
                        ]
                    }]
                })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    /// Starts a classification of `documents` (not drained): the job's id.
    async fn classify(&self, scheme: &str, documents: &[&str]) -> String {
        let reply = self
            .send(
                "POST",
                &format!("/schemes/{scheme}/jobs"),
                Some(json!({ "document_ids": documents })),
            )
            .await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    async fn job(&self, id: &str) -> Value {
        let reply = self.send("GET", &format!("/jobs/{id}"), None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }

    async fn share_job(&self, token: &str, job: &str) -> Reply {
        self.s
            .api
            .send(
                "POST",
                &format!("/workspaces/{}/shares", self.ws),
                Some(token),
                Some(json!({ "job_id": job })),
            )
            .await
    }

    async fn view(&self, token: &str) -> Reply {
        self.s
            .api
            .send("GET", &format!("/share/{token}"), None, None)
            .await
    }

    /// Sets a job's status behind the API's back.
    async fn set_status(&self, job: &str, status: &str) {
        let mut tx = common::db::tenant_tx(&self.s.state.db, None, Some(self.ws.parse().unwrap()))
            .await
            .unwrap();
        sqlx::query("UPDATE jobs SET status = $2 WHERE id = $1::uuid")
            .bind(job)
            .bind(status)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_classifications_results_open_without_signing_in_and_show_nothing_else(pool: PgPool) {
    let j = Jobs::new(pool.clone()).await;
    let cells = j
        .document(
            "Cell division",
            "Mitosis splits one cell into two daughter cells. Genes on the chromosomes are \
             copied first, and the cells grow.",
        )
        .await;
    let forces = j
        .document(
            "Falling bodies",
            "A falling body accelerates under gravity; the force equals mass times \
             acceleration, and energy is conserved.",
        )
        .await;
    let deleted = j
        .document(
            "Enzyme notes",
            "Enzymes copy genes inside the cell nucleus.",
        )
        .await;
    let unclassified = j
        .document("Board minutes", "The acquisition closes in March.")
        .await;
    assert_eq!(j.s.drain().await.failed, 0, "ingestion failed");
    let scheme = j.scheme().await;
    let job = j
        .classify(
            &scheme,
            &[cells.as_str(), forces.as_str(), deleted.as_str()],
        )
        .await;
    j.s.drain().await;
    let done = j.job(&job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["classified"], 3, "{done}");
    // A document deleted since the job ran is not shared.
    let removed = j
        .send("DELETE", &format!("/documents/{deleted}"), None)
        .await;
    assert_eq!(removed.status, 204, "{}", removed.body);

    let created = j.share_job(&j.alice, &job).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["target_kind"], "job");
    assert_eq!(created.body["target_id"], job.as_str());
    assert_eq!(created.body["status"], "active");
    let token = created.body["token"].as_str().unwrap().to_owned();

    // No Authorization header at all.
    let view = j.view(&token).await;
    assert_eq!(view.status, 200, "{}", view.body);
    assert_eq!(view.header("cache-control"), "no-store");
    assert_eq!(view.body["kind"], "job");
    let shared = &view.body["job"];
    assert_eq!(shared["id"], job.as_str());
    assert_eq!(shared["kind"], "classify");
    assert_eq!(shared["status"], "succeeded");
    assert_eq!(
        (&shared["total"], &shared["classified"], &shared["failed"]),
        (&json!(3), &json!(3), &json!(0)),
        "{shared}"
    );
    assert_eq!(shared["created_at"], done["created_at"]);
    assert_eq!(shared["finished_at"], done["finished_at"]);
    assert_eq!(shared["scheme"]["name"], "Topics");
    let fields = shared["scheme"]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0]["name"], "topic");
    assert_eq!(fields[0]["values"][1]["value"], "physics");
    // One result per live classified document, in document order.
    let results = shared["results"].as_array().unwrap();
    let titles: Vec<&str> = results
        .iter()
        .map(|r| r["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Cell division", "Falling bodies"], "{shared}");
    for (result, topic) in results.iter().zip(["biology", "physics"]) {
        let value = &result["values"]["topic"];
        assert_eq!(value["value"], topic, "{result}");
        let confidence = value["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&confidence), "{value}");
    }
    assert_eq!(shared["truncated"], false);
    assert!(shared.get("download").is_none());
    assert!(view.body.get("document").is_none());
    // Nothing else of the workspace: no chunk or document ids, not the
    // deleted or unclassified documents, no workspace or author ids.
    let text = view.body.to_string();
    for secret in [
        "chunk_ids",
        "document_id",
        "created_by",
        "options",
        cells.as_str(),
        forces.as_str(),
        deleted.as_str(),
        unclassified.as_str(),
        "Enzyme notes",
        "Board minutes",
        "acquisition",
        scheme.as_str(),
        j.ws.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // Audited as the other kinds; revoked, it is the 404 of any dead link.
    let audit: Vec<Value> = sqlx::query_scalar(
        "SELECT details FROM audit_log
         WHERE workspace_id = $1::uuid AND action = 'share.created'",
    )
    .bind(&j.ws)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["target_kind"], "job");
    assert_eq!(audit[0]["target_id"], job.as_str());
    // Past about 4 MiB of values the results stop at a whole document,
    // and say so: long text values for the first document (32 fields of
    // 150 KiB; one index row each, hence not one larger value).
    let mut tx = common::db::tenant_tx(&pool, None, Some(j.ws.parse().unwrap()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO classification_results (workspace_id, job_id, document_id, field, value, model)
         SELECT $1::uuid, $2::uuid, $3::uuid, 'notes_' || n, to_jsonb(repeat('x', 150 * 1024)),
                'default'
         FROM generate_series(1, 32) n",
    )
    .bind(&j.ws)
    .bind(&job)
    .bind(&cells)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let cut = j.view(&token).await;
    assert_eq!(cut.status, 200);
    let results = cut.body["job"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["title"], "Cell division");
    assert_eq!(results[0]["values"]["topic"]["value"], "biology");
    assert_eq!(cut.body["job"]["truncated"], true);

    let link = created.body["id"].as_str().unwrap();
    let revoked = j.send("DELETE", &format!("/shares/{link}"), None).await;
    assert_eq!(revoked.status, 204, "{}", revoked.body);
    assert_eq!(
        dead(&j.view(&token).await),
        dead(&j.view(&format!("rws_{}", "C".repeat(43))).await)
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_job_is_shared_once_it_has_succeeded_and_only_by_its_workspace(pool: PgPool) {
    let j = Jobs::new(pool).await;
    let document = j
        .document("Cell division", "Genes are copied before the cell divides.")
        .await;
    j.s.drain().await;
    let scheme = j.scheme().await;
    let job = j.classify(&scheme, &[document.as_str()]).await;

    // Queued, then running: its results are still to change.
    assert_eq!(j.job(&job).await["status"], "queued");
    let queued = j.share_job(&j.alice, &job).await;
    assert_eq!(queued.problem(409)["detail"], "the job has not succeeded");
    j.set_status(&job, "running").await;
    j.share_job(&j.alice, &job).await.problem(409);
    j.set_status(&job, "queued").await;

    // A stranger, from outside or through her own workspace: 404.
    let (mallory, _, _) = j.s.api.signup("mallory@example.com").await;
    let own = j.s.api.create_workspace(&mallory, "Mine").await;
    j.share_job(&mallory, &job).await.problem(404);
    let through_own =
        j.s.api
            .send(
                "POST",
                &format!("/workspaces/{own}/shares"),
                Some(&mallory),
                Some(json!({ "job_id": job })),
            )
            .await;
    through_own.problem(404);
    // No such job here.
    j.share_job(&j.alice, &uuid::Uuid::now_v7().to_string())
        .await
        .problem(404);

    // Once it has succeeded, it is shared; nothing was created before.
    j.s.drain().await;
    assert_eq!(j.job(&job).await["status"], "succeeded");
    let created = j.share_job(&j.alice, &job).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let listed = j.send("GET", "/shares", None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let items = listed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", listed.body);
    assert_eq!(items[0]["id"], created.body["id"]);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_export_jobs_link_downloads_the_export(pool: PgPool) {
    let j = Jobs::new(pool).await;
    j.document("Protocol", "Version one of the protocol.").await;
    j.s.drain().await;
    let export = j.send("POST", "/exports", Some(json!({}))).await;
    assert_eq!(export.status, 202, "{}", export.body);
    let job = export.body["id"].as_str().unwrap().to_owned();
    j.s.drain().await;
    assert_eq!(j.job(&job).await["status"], "succeeded");

    let created = j.share_job(&j.alice, &job).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let view = j.view(created.body["token"].as_str().unwrap()).await;
    assert_eq!(view.status, 200, "{}", view.body);
    let shared = &view.body["job"];
    assert_eq!(shared["kind"], "export");
    assert_eq!(shared["exported"], 1, "{shared}");
    assert!(shared.get("results").is_none() && shared.get("scheme").is_none());
    assert!(shared["download"]["expires_at"].is_string(), "{shared}");
    // Whoever holds the link downloads the export itself.
    let file = reqwest::get(shared["download"]["url"].as_str().unwrap())
        .await
        .unwrap();
    assert!(file.status().is_success(), "{}", file.status());
    let file = file.text().await.unwrap();
    let lines: Vec<Value> = file
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{file}");
    assert_eq!(lines[0]["title"], "Protocol");
    assert_eq!(lines[0]["content"], "Version one of the protocol.");
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_departed_members_links_list_as_inactive_and_do_not_open(pool: PgPool) {
    let s = setup(pool, &[]).await;
    let (bob, _, bob_id) = s.api.signup("bob@example.com").await;
    s.api
        .join(&s.alice, &s.ws, &bob, "bob@example.com", "member")
        .await;
    let document = s.document("Shared plan", "Everyone may read this.").await;
    let bobs = s.share(&bob, json!({ "document_id": document })).await;
    assert_eq!(bobs.status, 201, "{}", bobs.body);
    let (bobs, bobs_token) = (
        bobs.body["id"].as_str().unwrap().to_owned(),
        bobs.body["token"].as_str().unwrap().to_owned(),
    );
    let (alices, alices_token) = s.share_document(&document).await;
    // Each link's status as `token`'s listing shows it.
    let statuses = |token: String| {
        let (api, path) = (&s.api, format!("/workspaces/{}/shares", s.ws));
        async move {
            let reply = api.send("GET", &path, Some(&token), None).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    (
                        i["id"].as_str().unwrap().to_owned(),
                        i["status"].as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let pair = |id: &str, status: &str| (id.to_owned(), status.to_owned());
    assert_eq!(
        statuses(s.alice.clone()).await,
        [pair(&alices, "active"), pair(&bobs, "active")]
    );

    // Bob leaves: his link lists as inactive, and does not open.
    let removed = s
        .api
        .send(
            "DELETE",
            &format!("/workspaces/{}/members/{bob_id}", s.ws),
            Some(&s.alice),
            None,
        )
        .await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    assert_eq!(
        statuses(s.alice.clone()).await,
        [pair(&alices, "active"), pair(&bobs, "inactive")]
    );
    s.view(&bobs_token).await.problem(404);
    assert_eq!(s.view(&alices_token).await.status, 200);

    // Invited back, he does not bring it back to life; a new link works.
    s.api
        .join(&s.alice, &s.ws, &bob, "bob@example.com", "member")
        .await;
    assert_eq!(statuses(bob.clone()).await, [pair(&bobs, "inactive")]);
    s.view(&bobs_token).await.problem(404);
    let again = s.share(&bob, json!({ "document_id": document })).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(again.body["status"], "active");
    assert_eq!(
        s.view(again.body["token"].as_str().unwrap()).await.status,
        200
    );
    assert_eq!(
        statuses(s.alice.clone()).await[1..],
        [pair(&alices, "active"), pair(&bobs, "inactive")]
    );
}
