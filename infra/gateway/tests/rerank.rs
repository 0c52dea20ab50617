//! Reranking through the gateway, against servers speaking the Cohere and
//! Text Embeddings Inference `/rerank` contracts: the reranker's order
//! wins; a reranker that fails or is too slow leaves the fused order and
//! says so in `timings`, never failing the question. One test runs
//! against a real reranker process (`infra/stack/reranker.sh`), skipped,
//! saying why, when `RAGWAY_TEST_RERANK_BASE_URL` is unset.

use std::time::Duration;

use common::test_server::{Recorded, Reply, TestServer};
use serde_json::{Value, json};
use sqlx::PgPool;

mod support;
use support::{Api, config, gateway, state};

const DOCS: [(&str, &str); 3] = [
    (
        "Rivers",
        "The Seine flows through Paris and the Loire through Orleans.",
    ),
    (
        "Capitals",
        "Paris is the capital of France; Berlin is the capital of Germany.",
    ),
    (
        "Food",
        "Paris has many bakeries, and the baguette is a French bread.",
    ),
];

struct Stack {
    api: Api,
    token: String,
    ws: String,
}

async fn stack(pool: PgPool, overrides: &[(&str, &str)]) -> Stack {
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&probe, "rerank", &suffix).await;
    let mut vars = vec![("INGEST_QUEUE_URL", queue.as_str())];
    vars.extend_from_slice(overrides);
    let state = state(pool, config(&vars));
    let api = gateway(state.clone()).await;
    let (token, _, _) = api.signup(&format!("reranker-{suffix}@example.com")).await;
    let ws = api.create_workspace(&token, "Atlas").await;
    for (title, content) in DOCS {
        let created = api
            .send(
                "POST",
                &format!("/workspaces/{ws}/documents"),
                Some(&token),
                Some(json!({ "title": title, "content": content, "content_type": "text/plain" })),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
    }
    assert_eq!(support::drain(&state, &queue).await.failed, 0);
    Stack { api, token, ws }
}

impl Stack {
    async fn ask(&self, body: Value) -> support::Reply {
        self.api
            .send(
                "POST",
                &format!("/workspaces/{}/query", self.ws),
                Some(&self.token),
                Some(body),
            )
            .await
    }

    async fn qa(&self, body: Value) -> support::Reply {
        self.api
            .send(
                "POST",
                &format!("/workspaces/{}/qa", self.ws),
                Some(&self.token),
                Some(body),
            )
            .await
    }
}

fn titles(reply: &support::Reply) -> Vec<String> {
    reply.body["citations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["title"].as_str().unwrap().to_owned())
        .collect()
}

/// Ranks documents by how many times they contain "bread"/"baguette",
/// then "Loire": the reverse of what the question's words favour.
fn cohere_scores(request: &Recorded) -> Vec<Value> {
    let body = request.json();
    let docs = body["documents"].as_array().unwrap();
    let mut results: Vec<Value> = docs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let text = text.as_str().unwrap();
            let score = if text.contains("baguette") {
                0.9
            } else if text.contains("Loire") {
                0.5
            } else {
                0.1
            };
            json!({ "index": index, "relevance_score": score })
        })
        .collect();
    results.reverse();
    results
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_rerankers_order_wins_and_failures_keep_the_fused_one(pool: PgPool) {
    let server = TestServer::start(|request, n| match n {
        // 1st and 2nd: a working reranker; 3rd: a failing one; 4th: too slow.
        0 | 1 => Reply::json(200, json!({ "results": cohere_scores(request) })),
        2 => Reply::json(500, json!({ "error": "model not loaded" })),
        _ => Reply::json(200, json!({ "results": cohere_scores(request) }))
            .delay(Duration::from_secs(2)),
    })
    .await;
    let url = format!("{}/v1", server.url());
    let s = stack(
        pool,
        &[
            ("RERANK_PROVIDER", "cohere"),
            ("RERANK_BASE_URL", &url),
            ("RERANK_MODEL", "bge-reranker-v2-m3"),
            ("RERANK_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    let question = "What is the capital of France?";

    let fused = s
        .ask(json!({ "question": question, "answer": false }))
        .await;
    assert_eq!(fused.status, 200, "{}", fused.body);
    assert!(
        fused.body["timings"].get("rerank").is_none(),
        "off by default"
    );
    assert_eq!(titles(&fused)[0], "Capitals");

    let reranked = s
        .ask(json!({ "question": question, "answer": false, "rerank": true, "top_k": 2 }))
        .await;
    assert_eq!(reranked.status, 200, "{}", reranked.body);
    assert_eq!(titles(&reranked), ["Food", "Rivers"]);
    assert_eq!(reranked.body["timings"]["rerank"], "applied");
    assert!(reranked.body["timings"]["rerank_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(reranked.body["citations"][0]["score"], 0.9);
    // The reranker saw the question and every fused candidate, not only top_k.
    let sent = server.requests()[0].json();
    assert_eq!(sent["query"], question);
    assert_eq!(sent["model"], "bge-reranker-v2-m3");
    assert_eq!(sent["documents"].as_array().unwrap().len(), 3);
    assert_eq!(server.requests()[0].path, "/v1/rerank");

    // With an answer too: the model is given the reranked passages.
    let answered = s.ask(json!({ "question": question, "rerank": true })).await;
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(answered.body["timings"]["rerank"], "applied");

    for expected in ["fallback: error", "fallback: timeout"] {
        let kept = s
            .ask(json!({ "question": question, "answer": false, "rerank": true }))
            .await;
        assert_eq!(kept.status, 200, "{expected}: {}", kept.body);
        assert_eq!(kept.body["timings"]["rerank"], expected);
        assert_eq!(titles(&kept), titles(&fused), "{expected}: the fused order");
    }
    // On for the whole workspace (owner or admin): questions that do not
    // say are reranked; `null` goes back to the deployment's default (off).
    let server_calls = server.requests().len();
    for (setting, reranked) in [(json!(true), true), (Value::Null, false)] {
        let patched = s
            .api
            .send(
                "PATCH",
                &format!("/workspaces/{}", s.ws),
                Some(&s.token),
                Some(json!({ "rerank": setting })),
            )
            .await;
        assert_eq!(patched.status, 200, "{}", patched.body);
        assert_eq!(patched.body["rerank"], setting);
        let asked = s
            .ask(json!({ "question": question, "answer": false }))
            .await;
        assert_eq!(
            asked.body["timings"].get("rerank").is_some(),
            reranked,
            "{}",
            asked.body
        );
    }
    assert_eq!(server.requests().len(), server_calls + 1);
    // Turned off per request: not called.
    let before = server.requests().len();
    let off = s
        .ask(json!({ "question": question, "answer": false, "rerank": false }))
        .await;
    assert!(off.body["timings"].get("rerank").is_none());
    assert_eq!(server.requests().len(), before);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn text_embeddings_inference_reranks_and_none_configured_is_refused(pool: PgPool) {
    let server = TestServer::start(|request, _| {
        let body = request.json();
        let texts = body["texts"].as_array().unwrap();
        let ranked: Vec<Value> = texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let score = if text.as_str().unwrap().contains("Seine") {
                    5.0
                } else {
                    -1.0
                };
                json!({ "index": index, "score": score })
            })
            .collect();
        Reply::json(200, json!(ranked))
    })
    .await;
    let s = stack(
        pool.clone(),
        &[
            ("RERANK_PROVIDER", "tei"),
            ("RERANK_BASE_URL", &server.url()),
            ("RERANK_DEFAULT", "true"),
        ],
    )
    .await;
    // On by default here: the question does not ask.
    let reply = s
        .ask(json!({ "question": "What is the capital of France?", "answer": false, "top_k": 1 }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(titles(&reply), ["Rivers"]);
    assert_eq!(server.requests()[0].path, "/rerank");

    // Q&A with RAG answers as the query route does, reranking included.
    let question = "What is the capital of France?";
    let reranked = s.qa(json!({ "question": question, "top_k": 1 })).await;
    assert_eq!(reranked.status, 200, "{}", reranked.body);
    assert_eq!(server.requests().len(), 2);
    assert_eq!(
        server.requests()[1].json()["texts"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // The one passage the answer was given is the reranker's (the answer
    // cites only what it uses, so it may cite nothing from the rivers).
    assert!(
        !titles(&reranked).contains(&"Capitals".to_owned()),
        "{}",
        reranked.body
    );
    let fused = s
        .qa(json!({ "question": question, "top_k": 1, "rerank": false }))
        .await;
    assert_eq!(titles(&fused), ["Capitals"], "{}", fused.body);
    assert_eq!(server.requests().len(), 2, "not called when turned off");
    s.qa(json!({ "question": question, "use_rag": false, "rerank": true }))
        .await
        .problem(422);

    // Asking for reranking where none is configured is a client error.
    let plain = stack(pool, &[]).await;
    plain
        .ask(json!({ "question": "Paris?", "rerank": true }))
        .await
        .problem(422);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_real_reranker_puts_the_passage_that_answers_first(pool: PgPool) {
    let Some(url) = support::real_server(
        "RAGWAY_TEST_RERANK_BASE_URL",
        "rerank",
        "`infra/stack/reranker.sh up`, then set it to http://127.0.0.1:8093",
    ) else {
        return;
    };
    let s = stack(
        pool,
        &[
            ("RERANK_PROVIDER", "cohere"),
            ("RERANK_BASE_URL", &url),
            // A cold model on a busy machine: the bound is not under test.
            ("RERANK_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    for (question, expected) in [
        ("What is the capital of France?", "Capitals"),
        ("Which bread is typically French?", "Food"),
        ("Which river flows through Orleans?", "Rivers"),
    ] {
        let reply = s
            .ask(json!({ "question": question, "answer": false, "rerank": true, "top_k": 3 }))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["timings"]["rerank"], "applied", "{}", reply.body);
        assert_eq!(titles(&reply)[0], expected, "{question}: {}", reply.body);
        // The model's relevance scores, best first.
        let scores: Vec<f64> = reply.body["citations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["score"].as_f64().unwrap())
            .collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
        // They are the model's, not the fusion's.
        let fused = s
            .ask(json!({ "question": question, "answer": false, "rerank": false, "top_k": 3 }))
            .await;
        assert_ne!(
            fused.body["citations"][0]["score"], reply.body["citations"][0]["score"],
            "{}",
            fused.body
        );
    }
}
