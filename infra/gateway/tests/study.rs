//! Study tools (summarize, qa, mindmap) and the AI proxy through the
//! gateway: documents are created through the API and ingested by the real
//! worker from a test-owned queue; the default extractive provider, or a
//! scripted OpenAI-compatible server speaking the real protocol.

use std::collections::HashSet;
use std::sync::Arc;

use common::state::State;
use common::test_server::{Reply, TestServer};
use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::{Api, config, gateway, state};

struct Stack {
    state: Arc<State>,
    api: Api,
    token: String,
    ws: String,
    queue: String,
}

const HANDBOOK: &str = "# Operations handbook\n\n\
## Backups\n\n\
Database backups run every night at two. Database backups are kept for thirty days in a second region. \
Restoring a database backup takes about an hour. The office plants are watered on Tuesdays.\n\n\
### Restore drills\n\n\
A restore drill replays the latest database backup into a scratch server. Restore drills run every quarter.\n\n\
## Security\n\n\
Passwords rotate every year. Passwords need twelve characters. Security keys are required for administrators.\n";

/// A gateway over a test-owned ingest queue, one user with one workspace.
async fn stack(pool: PgPool, overrides: &[(&str, &str)]) -> Stack {
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&probe, "study", &suffix).await;
    let mut vars = vec![
        ("INGEST_QUEUE_URL", queue.as_str()),
        ("CHUNK_TOKENS", "80"),
        ("CHUNK_OVERLAP_TOKENS", "10"),
    ];
    vars.extend_from_slice(overrides);
    let state = state(pool, config(&vars));
    let api = gateway(state.clone()).await;
    let (token, _, _) = api.signup("student@example.com").await;
    let ws = api.create_workspace(&token, "Study").await;
    Stack {
        state,
        api,
        token,
        ws,
        queue,
    }
}

impl Stack {
    /// Creates a document and ingests it; returns its id.
    async fn document(&self, title: &str, content: &str, content_type: &str) -> String {
        let reply = self
            .api
            .send(
                "POST",
                &format!("/workspaces/{}/documents", self.ws),
                Some(&self.token),
                Some(json!({ "title": title, "content": content, "content_type": content_type })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        let outcome = support::drain(&self.state, &self.queue).await;
        assert_eq!(outcome.failed, 0, "ingestion failed");
        reply.body["id"].as_str().unwrap().to_owned()
    }

    async fn post(&self, route: &str, body: Value) -> support::Reply {
        self.post_as(&self.token, &self.ws, route, body).await
    }

    async fn post_as(&self, token: &str, ws: &str, route: &str, body: Value) -> support::Reply {
        self.api
            .send(
                "POST",
                &format!("/workspaces/{ws}/{route}"),
                Some(token),
                Some(body),
            )
            .await
    }

    async fn patch(&self, token: &str, body: Value) -> support::Reply {
        self.api
            .send(
                "PATCH",
                &format!("/workspaces/{}", self.ws),
                Some(token),
                Some(body),
            )
            .await
    }

    async fn used_today(&self) -> i64 {
        let reply = self
            .api
            .send(
                "GET",
                &format!("/workspaces/{}/usage/today", self.ws),
                Some(&self.token),
                None,
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["reserved"], 0, "nothing left reserved");
        reply.body["used"].as_i64().unwrap()
    }

    /// Purposes and (prompt, completion) tokens of the committed reservations.
    async fn committed(&self) -> Vec<(String, i64, i64)> {
        sqlx::query_as(
            "SELECT purpose, prompt_tokens, completion_tokens FROM token_reservations
             WHERE workspace_id = $1::uuid AND state = 'committed' ORDER BY created_at",
        )
        .bind(&self.ws)
        .fetch_all(&self.state.db)
        .await
        .unwrap()
    }
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

fn walk<'a>(node: &'a Value, level: usize, out: &mut Vec<(&'a Value, usize)>) {
    out.push((node, level));
    for child in node["children"].as_array().unwrap() {
        walk(child, level + 1, out);
    }
}

/// Checks the tree's shape: ids unique, labels non-empty, no level past
/// `depth`; returns (node, level) pairs.
fn checked_tree(root: &Value, depth: usize) -> Vec<(&Value, usize)> {
    let mut nodes = Vec::new();
    walk(root, 0, &mut nodes);
    let ids: HashSet<&str> = nodes
        .iter()
        .map(|(n, _)| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), nodes.len(), "ids unique: {root}");
    for (node, level) in &nodes {
        assert!(*level <= depth, "level {level} past depth {depth}: {root}");
        assert!(!node["label"].as_str().unwrap().trim().is_empty(), "{root}");
        assert_eq!(
            node.as_object().unwrap().len(),
            3,
            "only id, label, children: {node}"
        );
    }
    nodes
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn extractive_summaries_quote_fewer_central_sentences_with_statistics(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let text = "Solar panels convert sunlight into electricity. The cafeteria serves soup on Mondays. \
                Solar panels on roofs feed electricity into the grid. Modern solar panels convert \
                about a fifth of the sunlight they receive. My cousin owns a red bicycle. Electricity \
                from solar panels is cheapest at noon.";
    let input_sentences: Vec<&str> = text.split(". ").map(|p| p.trim_end_matches('.')).collect();

    // Given a text with asides, when it is summarized in each style,
    for style in ["concise", "detailed", "bullets"] {
        let reply = s
            .post("summarize", json!({ "text": text, "style": style }))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let summary = reply.body["summary"].as_str().unwrap();
        let sentences: Vec<&str> = summary
            .lines()
            .flat_map(|l| l.trim_start_matches("- ").split(". "))
            .map(|p| p.trim_end_matches('.'))
            .filter(|p| !p.is_empty())
            .collect();
        // then every sentence comes from the input, there are fewer, and
        // the asides are left out;
        assert!(
            !sentences.is_empty() && sentences.len() < input_sentences.len(),
            "{style}: {summary}"
        );
        for sentence in &sentences {
            assert!(
                input_sentences.contains(sentence),
                "{style}: {sentence:?} not in the input"
            );
        }
        for aside in ["cafeteria", "bicycle"] {
            assert!(!summary.contains(aside), "{style}: {summary}");
        }
        if style == "bullets" {
            assert!(summary.lines().count() >= 2, "{summary}");
            assert!(summary.lines().all(|l| l.starts_with("- ")), "{summary}");
        }
        // the statistics describe the input and the summary;
        let stats = &reply.body["statistics"];
        assert_eq!(stats["input_words"], words(text), "{stats}");
        assert_eq!(stats["output_words"], words(summary), "{stats}");
        assert_eq!(
            stats["input_tokens"],
            common::token_count::count(text),
            "{stats}"
        );
        assert_eq!(
            stats["output_tokens"],
            common::token_count::count(summary),
            "{stats}"
        );
        assert_eq!(stats["parts"], 1);
        assert_eq!(reply.body["model"], "extractive");
        // and the usage is what the extractive summarizer read and wrote.
        assert_eq!(reply.body["usage"]["prompt_tokens"], stats["input_tokens"]);
        assert_eq!(
            reply.body["usage"]["completion_tokens"],
            stats["output_tokens"]
        );
    }
    let charged: i64 = s.committed().await.iter().map(|(_, p, c)| p + c).sum();
    assert_eq!(s.used_today().await, charged);
    assert!(
        s.committed()
            .await
            .iter()
            .all(|(purpose, _, _)| purpose == "summarize")
    );

    // Neither or both sources, or a style not offered, is a 422.
    let reply = s.post("summarize", json!({ "style": "concise" })).await;
    assert_eq!(reply.problem(422)["field"], "document_ids");
    let reply = s
        .post("summarize", json!({ "text": "x", "document_ids": [] }))
        .await;
    reply.problem(422);
    let reply = s
        .post("summarize", json!({ "text": text, "style": "haiku" }))
        .await;
    reply.problem(422);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn documents_are_summarized_from_their_chunks(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let doc = s.document("Handbook", HANDBOOK, "text/markdown").await;
    let reply = s
        .post(
            "summarize",
            json!({ "document_ids": [doc], "style": "detailed" }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let summary = reply.body["summary"].as_str().unwrap();
    assert!(summary.contains("backup"), "{summary}");
    assert!(!summary.contains("plants"), "{summary}");
    assert_eq!(reply.body["documents"][0]["id"], doc.as_str());
    assert!(
        reply.body["statistics"]["output_words"].as_u64()
            < reply.body["statistics"]["input_words"].as_u64(),
        "{}",
        reply.body
    );

    // A document of no workspace, or of another one, is a 404.
    let reply = s
        .post(
            "summarize",
            json!({ "document_ids": [uuid::Uuid::now_v7()] }),
        )
        .await;
    reply.problem(404);
    let (other_token, _, _) = s.api.signup("other@example.com").await;
    let other_ws = s.api.create_workspace(&other_token, "Other").await;
    let reply = s
        .post_as(
            &other_token,
            &other_ws,
            "summarize",
            json!({ "document_ids": [doc] }),
        )
        .await;
    reply.problem(404);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn extractive_mind_maps_follow_headings_within_depth(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let doc = s.document("Handbook", HANDBOOK, "text/markdown").await;
    for depth in 1..=4usize {
        let reply = s
            .post("mindmap", json!({ "document_ids": [doc], "depth": depth }))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let root = &reply.body["root"];
        let nodes = checked_tree(root, depth);
        assert_eq!(reply.body["nodes"], nodes.len());
        assert_eq!(root["label"], "Handbook");
        let top: Vec<&str> = root["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["label"].as_str().unwrap())
            .collect();
        assert!(
            top.contains(&"Backups") && top.contains(&"Security"),
            "{top:?}"
        );
        if depth >= 2 {
            let backups = root["children"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["label"] == "Backups")
                .unwrap();
            let below: Vec<&str> = backups["children"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["label"].as_str().unwrap())
                .collect();
            assert!(below.contains(&"Restore drills"), "{below:?}");
            assert!(nodes.iter().any(|(_, level)| *level == 2), "{root}");
        }
    }
    // From a topic: the matching passages, under the topic.
    let reply = s
        .post(
            "mindmap",
            json!({ "topic": "password rotation", "depth": 2 }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["root"]["label"], "password rotation");
    checked_tree(&reply.body["root"], 2);
    assert!(reply.body["nodes"].as_u64().unwrap() > 1, "{}", reply.body);

    for depth in [0, 5] {
        let reply = s
            .post("mindmap", json!({ "topic": "x", "depth": depth }))
            .await;
        assert_eq!(reply.problem(422)["field"], "depth");
    }
    let charged: i64 = s.committed().await.iter().map(|(_, p, c)| p + c).sum();
    assert_eq!(s.used_today().await, charged);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn qa_with_rag_answers_as_query_and_without_from_the_model(pool: PgPool) {
    let s = stack(pool, &[]).await;
    s.document("Handbook", HANDBOOK, "text/markdown").await;
    let question = "How long are database backups kept?";
    let qa = s
        .post("qa", json!({ "question": question, "use_rag": true }))
        .await;
    assert_eq!(qa.status, 200, "{}", qa.body);
    let query = s.post("query", json!({ "question": question })).await;
    assert_eq!(query.status, 200, "{}", query.body);
    assert_eq!(qa.body["answer"], query.body["answer"]);
    assert_eq!(qa.body["citations"], query.body["citations"]);
    assert_eq!(qa.body["usage"], query.body["usage"]);
    assert!(
        qa.body["answer"].as_str().unwrap().contains("thirty days"),
        "{}",
        qa.body
    );

    let alone = s
        .post("qa", json!({ "question": question, "use_rag": false }))
        .await;
    assert_eq!(alone.status, 200, "{}", alone.body);
    assert_eq!(alone.body["citations"], json!([]));
    assert_eq!(alone.body["use_rag"], false);
    let usage = &alone.body["usage"];
    assert_eq!(usage["prompt_tokens"], common::token_count::count(question));
    assert_eq!(
        usage["completion_tokens"],
        common::token_count::count(alone.body["answer"].as_str().unwrap())
    );
    let purposes: Vec<String> = s.committed().await.into_iter().map(|(p, _, _)| p).collect();
    assert_eq!(purposes, ["qa", "query", "qa"]);
    let charged: i64 = s.committed().await.iter().map(|(_, p, c)| p + c).sum();
    assert_eq!(s.used_today().await, charged);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_workspace_over_budget_gets_429_from_every_tool(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let reply = s.patch(&s.token, json!({ "daily_token_limit": 50 })).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let long = "Solar panels convert sunlight into electricity. ".repeat(20);
    for (route, body) in [
        ("summarize", json!({ "text": long })),
        (
            "qa",
            json!({ "question": "Why is the sky blue?", "use_rag": false, "max_tokens": 100 }),
        ),
        ("mindmap", json!({ "topic": "solar", "max_tokens": 100 })),
        ("ai/generate", json!({ "prompt": long, "max_tokens": 100 })),
    ] {
        let reply = s.post(route, body).await;
        reply.problem(429);
        assert!(!reply.header("retry-after").is_empty(), "{route}");
    }
    assert_eq!(s.used_today().await, 0);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn each_tool_is_rate_limited_per_user(pool: PgPool) {
    let s = stack(pool, &[("QUERY_RATE_LIMIT_PER_MINUTE", "2")]).await;
    let text = "Solar panels convert sunlight. Solar panels feed the grid. Cats nap.";
    for route in ["summarize", "ai/generate"] {
        let body = if route == "summarize" {
            json!({ "text": text })
        } else {
            json!({ "prompt": text })
        };
        for _ in 0..2 {
            let reply = s.post(route, body.clone()).await;
            assert_eq!(reply.status, 200, "{route}: {}", reply.body);
        }
        let reply = s.post(route, body).await;
        reply.problem(429);
        assert!(!reply.header("retry-after").is_empty());
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn non_members_get_404_from_every_tool(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let (stranger, _, _) = s.api.signup("stranger@example.com").await;
    for (route, body) in [
        (
            "summarize",
            json!({ "text": "One sentence here. Another one there." }),
        ),
        ("qa", json!({ "question": "why?" })),
        ("mindmap", json!({ "topic": "x" })),
        ("ai/generate", json!({ "prompt": "hello" })),
    ] {
        s.post_as(&stranger, &s.ws, route, body.clone())
            .await
            .problem(404);
        let missing = uuid::Uuid::now_v7().to_string();
        s.post_as(&s.token, &missing, route, body)
            .await
            .problem(404);
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_owner_turns_the_proxy_off_and_sets_its_models(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let text = "Solar panels convert sunlight into electricity. Solar panels feed the grid. \
                The cafeteria serves soup. Electricity from solar panels is cheap at noon.";
    // The default provider quotes central sentences of the prompt.
    let reply = s.post("ai/generate", json!({ "prompt": text })).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["model"], "extractive");
    assert!(
        reply.body["text"]
            .as_str()
            .unwrap()
            .contains("Solar panels"),
        "{}",
        reply.body
    );
    assert_eq!(
        reply.body["usage"]["prompt_tokens"],
        common::token_count::count(text)
    );

    // A member may not change the proxy settings.
    let (member, _, _) = s.api.signup("member@example.com").await;
    s.api
        .join(&s.token, &s.ws, &member, "member@example.com", "member")
        .await;
    s.patch(&member, json!({ "ai_proxy_enabled": false }))
        .await
        .problem(403);

    // A model outside the allow-list is a 422.
    let reply = s
        .post("ai/generate", json!({ "prompt": text, "model": "gpt-4o" }))
        .await;
    assert_eq!(reply.problem(422)["field"], "model");
    let reply = s
        .patch(&s.token, json!({ "ai_allowed_models": ["gpt-4o"] }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["ai_allowed_models"], json!(["gpt-4o"]));
    let reply = s
        .post(
            "ai/generate",
            json!({ "prompt": text, "model": "extractive" }),
        )
        .await;
    assert_eq!(reply.problem(422)["field"], "model");
    s.patch(&s.token, json!({ "ai_allowed_models": [] }))
        .await
        .problem(422);
    let reply = s
        .patch(&s.token, json!({ "ai_allowed_models": null }))
        .await;
    assert_eq!(
        reply.body["ai_allowed_models"],
        Value::Null,
        "{}",
        reply.body
    );

    // Off: 403 for every member, the owner included; nothing is charged.
    let before = s.used_today().await;
    let reply = s
        .patch(&s.token, json!({ "ai_proxy_enabled": false }))
        .await;
    assert_eq!(reply.body["ai_proxy_enabled"], false, "{}", reply.body);
    s.post("ai/generate", json!({ "prompt": text }))
        .await
        .problem(403);
    s.post_as(&member, &s.ws, "ai/generate", json!({ "prompt": text }))
        .await
        .problem(403);
    assert_eq!(s.used_today().await, before);
    // The study tools are not the proxy: they go on.
    let reply = s.post("summarize", json!({ "text": text })).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    s.patch(&s.token, json!({ "ai_proxy_enabled": true })).await;
    let reply = s
        .post_as(&member, &s.ws, "ai/generate", json!({ "prompt": text }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn completion(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Reply {
    Reply::json(
        200,
        json!({
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}
        }),
    )
}

async fn openai_stack(pool: PgPool, server: &TestServer) -> Stack {
    let base = format!("{}/v1", server.url());
    stack(
        pool,
        &[
            ("CHAT_PROVIDER", "openai"),
            ("CHAT_BASE_URL", &base),
            ("CHAT_MODEL", "scripted"),
            ("CHAT_MAX_RETRIES", "0"),
        ],
    )
    .await
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn malformed_mind_maps_from_a_model_are_repaired_or_refused(pool: PgPool) {
    let replies = [
        // Fenced, other key names, too deep, a repeated and an empty child.
        "Sure! Here it is:\n```json\n{\"name\": \"Energy\", \"subtopics\": [{\"title\": \"Solar\", \"nodes\": [{\"label\": \"Panels\", \"children\": [{\"label\": \"Cells\"}]}]}, \"Wind\", \"Wind\", \"\"]}\n```",
        // An outline instead of JSON.
        "# Energy\n- Solar\n  - Panels\n- Wind\n",
        // Nothing usable.
        "I'm sorry, I cannot draw that.",
        "{\"label\": \"Energy\", \"children\": [{\"label\": \"Solar\", ",
    ];
    let server = TestServer::start(move |_, n| completion(replies[n.min(3)], 40, 25)).await;
    let s = openai_stack(pool, &server).await;

    let reply = s
        .post("mindmap", json!({ "topic": "energy", "depth": 2 }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["repaired"], true);
    let nodes = checked_tree(&reply.body["root"], 2);
    let labels: Vec<&str> = nodes
        .iter()
        .map(|(n, _)| n["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Energy", "Solar", "Panels", "Wind"]);
    assert_eq!(reply.body["usage"]["prompt_tokens"], 40);

    let reply = s
        .post("mindmap", json!({ "topic": "energy", "depth": 3 }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let nodes = checked_tree(&reply.body["root"], 3);
    assert_eq!(nodes.len(), 4, "{}", reply.body);

    // Refused, never passed on; the tokens the model spent still count.
    for _ in 0..2 {
        let reply = s.post("mindmap", json!({ "topic": "energy" })).await;
        let problem = reply.problem(502);
        assert!(!problem.to_string().contains("sorry"), "{problem}");
    }
    assert_eq!(s.used_today().await, 4 * (40 + 25));
    let body = server.requests()[0].json();
    assert!(
        body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("JSON")
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn long_texts_are_summarized_map_reduce_and_charged_as_reported(pool: PgPool) {
    let server =
        TestServer::start(|_, n| completion(&format!("Partial summary {n}."), 900 + n as u64, 30))
            .await;
    let s = openai_stack(pool, &server).await;
    let long: String = (0..900)
        .map(|i| format!("Paragraph {i} explains how solar panel number {i} feeds the grid."))
        .collect::<Vec<_>>()
        .join("\n");
    let reply = s
        .post("summarize", json!({ "text": long, "style": "bullets" }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let requests = server.requests();
    let parts = reply.body["statistics"]["parts"].as_u64().unwrap() as usize;
    assert!(parts > 1, "{}", reply.body);
    // Every part, then at least one reduce call; each within the context.
    assert!(
        requests.len() > parts,
        "{} calls for {parts} parts",
        requests.len()
    );
    for r in &requests {
        let body = r.json();
        let user = body["messages"][1]["content"].as_str().unwrap();
        assert!(common::token_count::count(user) <= common::study::CONTEXT_TOKENS);
        assert_eq!(body["model"], "scripted");
    }
    let last = requests.last().unwrap().json();
    assert!(
        last["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("bulleted")
    );
    assert!(
        last["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("Partial summary")
    );
    assert!(
        reply.body["summary"]
            .as_str()
            .unwrap()
            .starts_with("- Partial summary")
    );

    // The charge is the sum of what the server reported, call by call.
    let n = requests.len() as u64;
    let reported: u64 = (0..n).map(|i| 900 + i + 30).sum();
    assert_eq!(reply.body["usage"]["total_tokens"], reported);
    assert_eq!(s.used_today().await as u64, reported);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_proxy_sends_the_allowed_model_and_charges_reported_usage(pool: PgPool) {
    let server = TestServer::start(|_, _| completion("Hello from the model.", 17, 5)).await;
    let s = openai_stack(pool, &server).await;
    let reply = s
        .patch(
            &s.token,
            json!({ "ai_allowed_models": ["scripted", "scripted-large"] }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = s
        .post(
            "ai/generate",
            json!({ "prompt": "Say hello.", "model": "scripted-large", "max_tokens": 20 }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["text"], "Hello from the model.");
    assert_eq!(reply.body["model"], "scripted-large");
    let body = server.requests()[0].json();
    assert_eq!(body["model"], "scripted-large");
    assert_eq!(body["max_tokens"], 20);
    assert_eq!(body["messages"][1]["content"], "Say hello.");
    assert_eq!(s.used_today().await, 22);
    let committed = s.committed().await;
    assert_eq!(committed, [("generate".to_owned(), 17, 5)]);
    let reply = s
        .post("ai/generate", json!({ "prompt": "Hi", "model": "other" }))
        .await;
    assert_eq!(reply.problem(422)["field"], "model");
    assert_eq!(
        server.requests().len(),
        1,
        "a refused model is never called"
    );
}

/// The tools against a real local model (llama.cpp with SmolLM2-135M,
/// `infra/stack/llm.sh up`): each answers or, for a mind map the model
/// could not shape, refuses with 502; what is charged is what the server
/// reported. Skipped, saying why, when `RAGWAY_TEST_CHAT_BASE_URL` is unset.
#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_tools_work_with_a_real_local_model(pool: PgPool) {
    let Some((base_url, model)) = support::real_chat_model("study") else {
        return;
    };
    let s = stack(
        pool,
        &[
            ("CHAT_PROVIDER", "openai"),
            ("CHAT_BASE_URL", &base_url),
            ("CHAT_MODEL", &model),
            ("CHAT_TIMEOUT_SECONDS", "120"),
            ("CHAT_MAX_RETRIES", "1"),
        ],
    )
    .await;
    let doc = s.document("Handbook", HANDBOOK, "text/markdown").await;

    let summary = s
        .post(
            "summarize",
            json!({ "document_ids": [doc], "style": "bullets", "max_tokens": 60 }),
        )
        .await;
    assert_eq!(summary.status, 200, "{}", summary.body);
    assert!(
        words(summary.body["summary"].as_str().unwrap()) > 0,
        "{}",
        summary.body
    );
    assert!(summary.body["statistics"]["output_words"].as_u64().unwrap() > 0);

    let qa = s
        .post(
            "qa",
            json!({ "question": "How long are backups kept?", "use_rag": false, "max_tokens": 40 }),
        )
        .await;
    assert_eq!(qa.status, 200, "{}", qa.body);
    assert!(!qa.body["answer"].as_str().unwrap().trim().is_empty());
    assert_eq!(qa.body["model"], model.as_str());

    let generated = s
        .post(
            "ai/generate",
            json!({ "prompt": "Say hello.", "max_tokens": 20 }),
        )
        .await;
    assert_eq!(generated.status, 200, "{}", generated.body);
    assert!(!generated.body["text"].as_str().unwrap().trim().is_empty());

    // A tiny model often cannot shape a tree: a checked tree or a 502,
    // never its raw output.
    let map = s
        .post(
            "mindmap",
            json!({ "topic": "database backups", "depth": 2, "max_tokens": 200 }),
        )
        .await;
    match map.status {
        200 => {
            checked_tree(&map.body["root"], 2);
        }
        502 => {
            map.problem(502);
        }
        other => panic!("mindmap answered {other}: {}", map.body),
    }

    // Charged exactly what the server reported, call by call, and the
    // replies say the same.
    let committed = s.committed().await;
    let purposes: Vec<&str> = committed.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        purposes,
        ["summarize", "qa", "generate", "mindmap"],
        "{committed:?}"
    );
    for ((_, prompt, completion), reply) in committed.iter().zip([&summary, &qa, &generated]) {
        assert!(*prompt > 0 && *completion > 0, "{committed:?}");
        assert_eq!(
            reply.body["usage"]["prompt_tokens"], *prompt,
            "{}",
            reply.body
        );
        assert_eq!(
            reply.body["usage"]["completion_tokens"], *completion,
            "{}",
            reply.body
        );
    }
    let total: i64 = committed.iter().map(|(_, p, c)| p + c).sum();
    assert_eq!(s.used_today().await, total);
}
