//! Query, chat and budgets through the gateway: documents are created
//! through the API, ingested by the real worker from a test-owned queue,
//! then questioned.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::budget::{self, Purpose};
use common::config::DEFAULT_HNSW_EF_CONSTRUCTION;
use common::ids::{UserId, WorkspaceId};
use common::state::State;
use rand::{Rng, SeedableRng};
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

/// A gateway over a test-owned ingest queue, one signed-up user with one workspace.
async fn stack(pool: PgPool, overrides: &[(&str, &str)]) -> Stack {
    let probe = state(pool.clone(), config(&[]));
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let queue = support::test_queue(&probe, "query", &suffix).await;
    let mut vars = vec![
        ("INGEST_QUEUE_URL", queue.as_str()),
        ("CHUNK_TOKENS", "80"),
        ("CHUNK_OVERLAP_TOKENS", "10"),
    ];
    vars.extend_from_slice(overrides);
    let state = state(pool, config(&vars));
    // The shared HNSW index, as ragway-migrate builds it on deploy.
    common::db::ensure_vector_index(
        &state.db,
        state.config.embedding.dimensions,
        state.config.query.hnsw_ef_construction,
    )
    .await
    .unwrap();
    let api = gateway(state.clone()).await;
    let (token, _, _) = api.signup("asker@example.com").await;
    let ws = api.create_workspace(&token, "Library").await;
    Stack {
        state,
        api,
        token,
        ws,
        queue,
    }
}

impl Stack {
    /// DELETE `path` as the stack's user; it must answer 204.
    async fn delete(&self, path: &str) {
        let reply = self.api.send("DELETE", path, Some(&self.token), None).await;
        assert_eq!(reply.status, 204, "DELETE {path}: {}", reply.body);
    }

    /// Runs the worker over whatever is queued until the queue is empty.
    async fn drain(&self) {
        let outcome = support::drain(&self.state, &self.queue).await;
        assert_eq!(outcome.failed, 0, "ingestion failed");
    }

    async fn create_in(
        &self,
        token: &str,
        ws: &str,
        title: &str,
        content: &str,
        metadata: Value,
    ) -> String {
        let reply = self
            .api
            .send(
                "POST",
                &format!("/workspaces/{ws}/documents"),
                Some(token),
                Some(json!({ "title": title, "content": content, "content_type": "text/plain", "metadata": metadata })),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.body["id"].as_str().unwrap().to_owned()
    }

    async fn create(&self, title: &str, content: &str, metadata: Value) -> String {
        self.create_in(&self.token, &self.ws, title, content, metadata)
            .await
    }

    async fn query(&self, body: Value) -> support::Reply {
        self.api
            .send(
                "POST",
                &format!("/workspaces/{}/query", self.ws),
                Some(&self.token),
                Some(body),
            )
            .await
    }

    async fn today(&self) -> Value {
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
        reply.body
    }
}

/// (chunk id, score) of each citation, in order.
fn citation_scores(reply: &support::Reply) -> Vec<(String, f64)> {
    reply.body["citations"]
        .as_array()
        .unwrap_or_else(|| panic!("no citations in {}", reply.body))
        .iter()
        .map(|c| {
            (
                c["chunk_id"].as_str().unwrap().to_owned(),
                c["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn cited_documents(reply: &support::Reply) -> Vec<String> {
    reply.body["citations"]
        .as_array()
        .unwrap_or_else(|| panic!("no citations in {}", reply.body))
        .iter()
        .map(|c| c["document_id"].as_str().unwrap().to_owned())
        .collect()
}

const MALARIA: &str = "Artemisinin combination therapy cures most uncomplicated malaria infections. \
    Resistance to artemisinin has emerged in the Mekong region, where parasites clear more slowly.";
const VACCINE: &str = "The measles vaccine is given in two doses. After both doses about 97 percent \
    of children are protected against measles for life.";
const SLEEP: &str = "Adults who sleep less than six hours a night show impaired memory consolidation \
    and slower reaction times in driving simulators.";

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn questions_are_answered_from_the_right_passages_with_real_citations(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let malaria = s.create("Malaria treatment", MALARIA, json!({})).await;
    let vaccine = s.create("Measles vaccination", VACCINE, json!({})).await;
    let sleep = s.create("Sleep and memory", SLEEP, json!({})).await;
    s.drain().await;

    for mode in ["hybrid", "semantic", "keyword"] {
        let reply = s
            .query(json!({ "question": "How many doses of measles vaccine do children need?", "mode": mode, "top_k": 3 }))
            .await;
        assert_eq!(reply.status, 200, "{mode}: {}", reply.body);
        let cited = cited_documents(&reply);
        assert_eq!(cited.first(), Some(&vaccine), "{mode}: {}", reply.body);
        let answer = reply.body["answer"].as_str().unwrap();
        assert!(answer.contains("[1]"), "{mode}: {answer}");
        // Every marker in the answer names a citation.
        for n in markers(answer) {
            assert!(n >= 1 && n <= cited.len(), "{mode}: [{n}] in {answer}");
        }
        let usage = &reply.body["usage"];
        assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        );
        assert!(reply.body["timings"]["total_ms"].as_f64().unwrap() > 0.0);
    }

    // Citations resolve to real chunks of the cited documents.
    let reply = s
        .query(json!({ "question": "artemisinin resistance Mekong", "answer": false, "top_k": 5 }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body["answer"].is_null());
    assert_eq!(reply.body["usage"]["total_tokens"], 0);
    let citations = reply.body["citations"].as_array().unwrap();
    assert_eq!(citations[0]["document_id"], malaria.as_str());
    assert_eq!(citations[0]["title"], "Malaria treatment");
    for c in citations {
        let doc = c["document_id"].as_str().unwrap();
        let chunks = s
            .api
            .send(
                "GET",
                &format!("/workspaces/{}/documents/{doc}/chunks", s.ws),
                Some(&s.token),
                None,
            )
            .await;
        let chunk = chunks.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == c["chunk_id"])
            .unwrap_or_else(|| panic!("citation {c} is not a chunk of its document"));
        assert_eq!(chunk["ordinal"], c["ordinal"]);
        let snippet = c["snippet"].as_str().unwrap().trim_end_matches('…');
        assert!(chunk["content"].as_str().unwrap().starts_with(snippet));
        assert!(
            [&malaria, &vaccine, &sleep]
                .iter()
                .any(|d| d.as_str() == doc)
        );
    }

    // Filters drop chunks after scoring, never change the scores (document
    // frequencies stay the workspace's).
    let plain = s
        .query(json!({ "question": "measles vaccine malaria sleep", "mode": "keyword", "answer": false }))
        .await;
    let filtered = s
        .query(
            json!({ "question": "measles vaccine malaria sleep", "mode": "keyword", "answer": false,
                        "filters": { "document_ids": [malaria, vaccine, sleep] } }),
        )
        .await;
    let (plain, filtered) = (citation_scores(&plain), citation_scores(&filtered));
    assert_eq!(plain.len(), 3, "{plain:?}");
    assert_eq!(plain.len(), filtered.len());
    for (a, b) in plain.iter().zip(&filtered) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-9, "{a:?} vs {b:?}");
    }

    // Tokens were committed to today's budget, nothing is left reserved.
    let today = s.today().await;
    assert!(today["used"].as_i64().unwrap() > 0, "{today}");
    assert_eq!(today["reserved"], 0);
    assert_eq!(
        today["remaining"].as_i64().unwrap(),
        today["limit"].as_i64().unwrap() - today["used"].as_i64().unwrap()
    );
    assert_eq!(today["requests"], 3);

    // A question nothing matches spends nothing.
    let reply = s
        .query(json!({ "question": "zzyzx qwertyuiop", "mode": "keyword" }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["citations"], json!([]));
    assert_eq!(s.today().await["requests"], 3);
}

fn markers(answer: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        if let Some(close) = rest.find(']') {
            for n in rest[..close].split(',') {
                if let Ok(n) = n.trim().parse() {
                    out.push(n);
                }
            }
        }
    }
    out
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn every_filter_operator_selects_the_right_documents(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let text = "Protein folding study with enzyme kinetics.";
    let a = s
        .create(
            "A",
            text,
            json!({ "year": 2019, "tag": "bio", "author": { "name": "Ada" }, "draft": true }),
        )
        .await;
    let b = s
        .create(
            "B",
            text,
            json!({ "year": 2021, "tag": "chem", "author": { "name": "Bo" } }),
        )
        .await;
    let c = s
        .create(
            "C",
            text,
            json!({ "year": 2023, "tag": "bio", "date": "2023-05-01" }),
        )
        .await;
    let d = s.create("D", text, json!({ "year": "2024" })).await;
    s.drain().await;

    let ids = |v: &[&String]| -> HashSet<String> { v.iter().map(|s| (*s).clone()).collect() };
    let cases: Vec<(Value, HashSet<String>)> = vec![
        (json!({ "tag": "bio" }), ids(&[&a, &c])),
        (json!({ "tag": { "$eq": "chem" } }), ids(&[&b])),
        (json!({ "tag": { "$ne": "bio" } }), ids(&[&b, &d])),
        (json!({ "tag": { "$in": ["chem", "none"] } }), ids(&[&b])),
        (json!({ "tag": { "$nin": ["bio"] } }), ids(&[&b, &d])),
        (json!({ "year": { "$gt": 2019 } }), ids(&[&b, &c])),
        (json!({ "year": { "$gte": 2021, "$lt": 2023 } }), ids(&[&b])),
        (json!({ "year": { "$lte": 2021 } }), ids(&[&a, &b])),
        (json!({ "year": { "$gt": "2000" } }), ids(&[&d])),
        (json!({ "date": { "$gte": "2023-01-01" } }), ids(&[&c])),
        (json!({ "draft": { "$exists": true } }), ids(&[&a])),
        (json!({ "draft": { "$exists": false } }), ids(&[&b, &c, &d])),
        (json!({ "author.name": "Bo" }), ids(&[&b])),
        (
            json!({ "$or": [{ "tag": "chem" }, { "year": 2023 }] }),
            ids(&[&b, &c]),
        ),
        (
            json!({ "$and": [{ "tag": "bio" }, { "year": { "$lt": 2020 } }] }),
            ids(&[&a]),
        ),
    ];
    for mode in ["keyword", "semantic", "hybrid"] {
        for (filter, expected) in &cases {
            let reply = s
                .query(json!({ "question": "protein folding enzyme", "mode": mode, "answer": false, "top_k": 50, "filters": { "metadata": filter } }))
                .await;
            assert_eq!(reply.status, 200, "{filter}: {}", reply.body);
            let got: HashSet<String> = cited_documents(&reply).into_iter().collect();
            assert_eq!(&got, expected, "{mode} {filter}");
        }
        let reply = s
            .query(json!({ "question": "protein", "mode": mode, "answer": false, "filters": { "document_ids": [a, d] } }))
            .await;
        let got: HashSet<String> = cited_documents(&reply).into_iter().collect();
        assert_eq!(got, ids(&[&a, &d]), "{mode} document_ids");
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn empty_filters_match_everything_and_an_empty_or_is_a_422_in_every_mode(pool: PgPool) {
    let s = stack(pool, &[]).await;
    let text = "Protein folding study with enzyme kinetics.";
    let a = s.create("A", text, json!({ "tag": "bio" })).await;
    let b = s.create("B", text, json!({})).await;
    s.drain().await;
    let both: HashSet<String> = [a.clone(), b].into_iter().collect();
    for mode in ["keyword", "semantic", "hybrid"] {
        // Each of these once reached Postgres as `AND ()`: a 500.
        for filter in [
            json!({}),
            json!({ "$and": [] }),
            json!({ "$and": [{}] }),
            json!({ "$or": [{}, {}] }),
            json!({ "$or": [{ "tag": "chem" }, {}] }),
            json!({ "$and": [{ "$or": [{}] }, { "$and": [{}, {}] }] }),
        ] {
            let reply = s
                .query(json!({ "question": "protein folding enzyme", "mode": mode, "answer": false, "filters": { "metadata": filter } }))
                .await;
            assert_eq!(reply.status, 200, "{mode} {filter}: {}", reply.body);
            let got: HashSet<String> = cited_documents(&reply).into_iter().collect();
            assert_eq!(got, both, "{mode} {filter}");
        }
        let reply = s
            .query(json!({ "question": "protein", "mode": mode, "answer": false, "filters": { "metadata": { "$and": [{}, { "tag": "bio" }] } } }))
            .await;
        let got: HashSet<String> = cited_documents(&reply).into_iter().collect();
        assert_eq!(got, [a.clone()].into_iter().collect(), "{mode}");
        for filter in [json!({ "$or": [] }), json!({ "$and": [{}, { "$or": [] }] })] {
            let reply = s
                .query(json!({ "question": "protein", "mode": mode, "filters": { "metadata": filter } }))
                .await;
            assert_eq!(
                reply.problem(422)["field"],
                "filters.metadata",
                "{mode} {filter}"
            );
        }
    }
    // Chat parses the same filters.
    for (filter, status) in [
        (json!({ "$or": [{}, {}] }), 201),
        (json!({ "$or": [] }), 422),
    ] {
        let reply = s
            .api
            .send(
                "POST",
                &format!("/workspaces/{}/chat", s.ws),
                Some(&s.token),
                Some(json!({ "message": "protein folding?", "filters": { "metadata": filter } })),
            )
            .await;
        assert_eq!(reply.status, status, "chat {filter}: {}", reply.body);
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn bad_questions_get_422_and_strangers_404(pool: PgPool) {
    let s = stack(pool, &[]).await;
    for (body, field) in [
        (json!({ "question": "" }), "question"),
        (json!({ "question": "x", "top_k": 0 }), "top_k"),
        (json!({ "question": "x", "top_k": 51 }), "top_k"),
        (json!({ "question": "x", "max_tokens": 0 }), "max_tokens"),
        (
            json!({ "question": "x", "filters": { "metadata": { "a": { "$regex": "b" } } } }),
            "filters.metadata",
        ),
        (
            json!({ "question": "x", "filters": { "metadata": [] } }),
            "filters.metadata",
        ),
    ] {
        let reply = s.query(body.clone()).await;
        let problem = reply.problem(422);
        assert!(problem.to_string().contains(field), "{body}: {problem}");
    }
    for body in [
        json!({ "question": "x", "mode": "fuzzy" }),
        json!({ "question": "x", "unknown": 1 }),
        json!({ "question": 7 }),
    ] {
        let reply = s.query(body.clone()).await;
        assert!(
            reply.status == 400 || reply.status == 422,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.content_type(), "application/problem+json");
    }
    let (stranger, _, _) = s.api.signup("stranger@example.com").await;
    for (method, path) in [
        ("POST", format!("/workspaces/{}/query", s.ws)),
        ("POST", format!("/workspaces/{}/chat", s.ws)),
        ("GET", format!("/workspaces/{}/usage/today", s.ws)),
        ("GET", format!("/workspaces/{}/usage", s.ws)),
        ("GET", format!("/workspaces/{}/chat/sessions", s.ws)),
    ] {
        let reply = s
            .api
            .send(
                method,
                &path,
                Some(&stranger),
                Some(json!({ "question": "x", "message": "x" })),
            )
            .await;
        reply.problem(404);
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn queries_never_return_another_workspaces_chunks(pool: PgPool) {
    // A low exact-search threshold sends the larger workspaces through the
    // HNSW index, the smaller ones through exact scans.
    let s = stack(pool, &[("VECTOR_EXACT_SEARCH_MAX_CHUNKS", "4")]).await;
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let words = [
        "protein", "enzyme", "vaccine", "malaria", "sleep", "memory", "cell", "gene", "virus",
        "immune", "dose", "trial",
    ];
    let mut owned: Vec<(String, HashSet<String>)> = Vec::new();
    for w in 0..6 {
        let ws = if w == 0 {
            s.ws.clone()
        } else {
            s.api.create_workspace(&s.token, &format!("W{w}")).await
        };
        let mut docs = HashSet::new();
        for d in 0..rng.random_range(1..=(2 + w * 2)) {
            let text: Vec<&str> = (0..30)
                .map(|_| words[rng.random_range(0..words.len())])
                .collect();
            let id = s
                .create_in(
                    &s.token,
                    &ws,
                    &format!("doc {w}-{d}"),
                    &text.join(" "),
                    json!({}),
                )
                .await;
            docs.insert(id);
        }
        owned.push((ws, docs));
    }
    s.drain().await;
    // The two largest also get vector indexes of their own, so all three
    // semantic paths run: exact scan, own index, shared index.
    let report = run_indexer(&s.state.db, s.state.config.embedding.dimensions, 4, 2)
        .await
        .unwrap();
    println!("own indexes: {:?}", report.created);
    for _ in 0..60 {
        let (ws, docs) = &owned[rng.random_range(0..owned.len())];
        let mode = ["hybrid", "semantic", "keyword"][rng.random_range(0..3)];
        let question: Vec<&str> = (0..3)
            .map(|_| words[rng.random_range(0..words.len())])
            .collect();
        let reply = s
            .api
            .send(
                "POST",
                &format!("/workspaces/{ws}/query"),
                Some(&s.token),
                Some(json!({ "question": question.join(" "), "mode": mode, "top_k": 50, "answer": rng.random_bool(0.3) })),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        for doc in cited_documents(&reply) {
            assert!(
                docs.contains(&doc),
                "seed {seed}: {mode} in {ws} cited {doc}"
            );
        }
        if mode == "semantic" && !reply.body["answer"].is_string() {
            // Semantic search finds something in every non-empty workspace.
            assert!(!cited_documents(&reply).is_empty(), "seed {seed}");
        }
    }
}

/// The workspace's owner (its row is readable only in the workspace's RLS
/// context).
async fn owner_of(pool: &PgPool, ws: WorkspaceId) -> UserId {
    let mut tx = common::db::tenant_tx(pool, None, Some(ws)).await.unwrap();
    let (owner,): (uuid::Uuid,) = sqlx::query_as("SELECT owner_id FROM workspaces WHERE id = $1")
        .bind(ws)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    UserId(owner)
}

async fn reserve(
    state: &State,
    ws: WorkspaceId,
    user: UserId,
    amount: u64,
    ttl: Duration,
) -> common::Result<budget::Reservation> {
    // As the handlers reserve: in a transaction scoped to the workspace.
    let mut tx = common::db::tenant_tx(&state.db, Some(user), Some(ws)).await?;
    let reservation = budget::reserve(&mut tx, ws, user, Purpose::Query, amount, ttl).await?;
    tx.commit().await?;
    Ok(reservation)
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_days_reservations_go_with_its_usage(pool: PgPool) {
    let s = stack(pool.clone(), &[]).await;
    let other = s.api.create_workspace(&s.token, "Other").await;
    for ws in [&s.ws, &other] {
        let ws: WorkspaceId = ws.parse().unwrap();
        let user = owner_of(&pool, ws).await;
        for _ in 0..3 {
            reserve(&s.state, ws, user, 10, Duration::from_secs(60))
                .await
                .unwrap();
        }
    }
    let mine: WorkspaceId = s.ws.parse().unwrap();
    let count = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM token_reservations WHERE workspace_id = $1")
                .bind(mine)
                .fetch_one(&pool)
                .await
                .unwrap();
        n
    };
    assert_eq!(count().await, 3);
    // Deleting a day's usage (a purge would) deletes its reservations, and
    // only those.
    sqlx::query("DELETE FROM workspace_daily_usage WHERE workspace_id = $1")
        .bind(mine)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(count().await, 0);
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM token_reservations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 3);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn concurrent_reservations_never_overspend_and_dead_ones_are_swept(pool: PgPool) {
    let s = stack(pool.clone(), &[]).await;
    let reply = s
        .api
        .send(
            "PATCH",
            &format!("/workspaces/{}", s.ws),
            Some(&s.token),
            Some(json!({ "daily_token_limit": 1000 })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ws: WorkspaceId = s.ws.parse().unwrap();
    let user = owner_of(&pool, ws).await;

    // A watcher checks the invariant while 100 clients reserve, commit and release.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let pool = pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut checks = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT tokens_used, tokens_reserved FROM workspace_daily_usage WHERE workspace_id = $1",
                )
                .bind(ws)
                .fetch_optional(&pool)
                .await
                .unwrap();
                if let Some((used, reserved)) = row {
                    assert!(used + reserved <= 1000, "overspent: {used} + {reserved}");
                }
                checks += 1;
            }
            checks
        })
    };
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let state = s.state.clone();
        tasks.push(tokio::spawn(async move {
            match reserve(&state, ws, user, 37, Duration::from_secs(300)).await {
                Ok(r) => {
                    tokio::time::sleep(Duration::from_millis(i % 7)).await;
                    if i % 3 == 0 {
                        budget::release(&state.db, &r).await.unwrap();
                        (1, 0)
                    } else {
                        // Real usage at most what was reserved.
                        budget::commit(&state.db, &r, 20, 10 + i % 8, "test")
                            .await
                            .unwrap();
                        (1, 30 + i % 8)
                    }
                }
                Err(e) => {
                    assert_eq!(e.status(), 429, "{e}");
                    (0, 0)
                }
            }
        }));
    }
    let mut granted = 0;
    let mut spent = 0;
    for task in tasks {
        let (g, used) = task.await.unwrap();
        granted += g;
        spent += used;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(watcher.await.unwrap() > 0);
    assert!(granted >= 27, "at least the first 27 fit: {granted}");
    assert!(granted < 100, "the limit stopped some: {granted}");
    let today = s.today().await;
    assert_eq!(today["used"].as_u64().unwrap(), spent, "{today}");
    assert_eq!(today["reserved"], 0, "{today}");
    assert!(spent <= 1000);

    // Over the limit: 429 with Retry-After until the next UTC midnight.
    let err = reserve(&s.state, ws, user, 5000, Duration::from_secs(300))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 429);
    let common::ApiError::TooManyRequests { retry_after, .. } = err else {
        panic!("not a 429")
    };
    assert!(retry_after <= Duration::from_secs(86_400) && retry_after >= Duration::from_secs(1));

    // A function that dies after reserving: its tokens are held until the
    // sweeper expires the reservation after its TTL.
    let before = s.today().await;
    let dead = reserve(&s.state, ws, user, 50, Duration::from_millis(1500))
        .await
        .unwrap();
    let held = s.today().await;
    assert_eq!(held["reserved"], 50, "{held}");
    assert_eq!(
        budget::sweep(&s.state.db).await.unwrap(),
        0,
        "not expired yet"
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let sweeper = ragway_gateway::registry()
        .into_iter()
        .find(|f| f.name == "usage-sweeper")
        .unwrap();
    let common::lambda::Handler::Schedule(sweep) = sweeper.handler else {
        panic!("usage-sweeper is not scheduled")
    };
    let event: Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo_root().join("events/usage-sweeper.json")).unwrap(),
    )
    .unwrap();
    sweep(&s.state, event.clone()).await.unwrap();
    let after = s.today().await;
    assert_eq!(after["reserved"], 0, "{after}");
    assert_eq!(after["used"], before["used"]);
    // Sweeping again, or releasing the swept reservation, changes nothing.
    sweep(&s.state, event).await.unwrap();
    budget::release(&s.state.db, &dead).await.unwrap();
    assert_eq!(s.today().await["reserved"], 0);
    // The call finished after all: what it really used still counts, once.
    budget::commit(&s.state.db, &dead, 10, 5, "late")
        .await
        .unwrap();
    budget::commit(&s.state.db, &dead, 10, 5, "late")
        .await
        .unwrap();
    let late = s.today().await;
    assert_eq!(
        late["used"].as_i64().unwrap(),
        before["used"].as_i64().unwrap() + 15
    );
    assert_eq!(late["reserved"], 0);

    // History by day: today's row and zero rows before it.
    let today_date = chrono::Utc::now().date_naive();
    let from = today_date - chrono::Days::new(2);
    let reply = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{}/usage?from={from}&to={today_date}", s.ws),
            Some(&s.token),
            None,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let items = reply.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["used"], 0);
    assert_eq!(items[2]["used"], late["used"]);
    let reply = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{}/usage?from={today_date}&to={from}", s.ws),
            Some(&s.token),
            None,
        )
        .await;
    reply.problem(422);
    // Dates chrono parses but Postgres cannot hold are a 422, not a 500.
    for query in ["to=99999-01-01", "from=-20000-01-01", "to=2026-02-30"] {
        let reply = s
            .api
            .send(
                "GET",
                &format!("/workspaces/{}/usage?{query}", s.ws),
                Some(&s.token),
                None,
            )
            .await;
        reply.problem(422);
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn an_exhausted_budget_and_a_busy_user_get_429_with_retry_after(pool: PgPool) {
    let s = stack(pool, &[("QUERY_RATE_LIMIT_PER_MINUTE", "2")]).await;
    s.create("Malaria treatment", MALARIA, json!({})).await;
    s.drain().await;
    let reply = s
        .api
        .send(
            "PATCH",
            &format!("/workspaces/{}", s.ws),
            Some(&s.token),
            Some(json!({ "daily_token_limit": 100 })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Prompt + max_tokens cannot fit in 100 tokens.
    let reply = s.query(json!({ "question": "artemisinin malaria" })).await;
    let problem = reply.problem(429);
    assert!(problem["detail"].as_str().unwrap().contains("budget"));
    let retry: u64 = reply.header("retry-after").parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    assert_eq!(s.today().await["reserved"], 0);
    // Passages alone cost no tokens and still work.
    let reply = s
        .query(json!({ "question": "artemisinin malaria", "answer": false }))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // More than two requests in a minute are refused for this user. The
    // windows are fixed minutes, so send three more: even if a window
    // ends among them, one is refused.
    let mut refused = None;
    for _ in 0..3 {
        let reply = s
            .query(json!({ "question": "artemisinin malaria", "answer": false }))
            .await;
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
    }
    let reply = refused.expect("a request over the per-user limit is refused");
    reply.problem(429);
    assert!(!reply.header("retry-after").is_empty());
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn chat_sessions_keep_both_turns_and_belong_to_their_user(pool: PgPool) {
    let s = stack(pool, &[]).await;
    s.create("Malaria treatment", MALARIA, json!({})).await;
    s.create("Measles vaccination", VACCINE, json!({})).await;
    s.drain().await;
    let chat = |token: String, body: Value| {
        let api = &s.api;
        let ws = s.ws.clone();
        async move {
            api.send(
                "POST",
                &format!("/workspaces/{ws}/chat"),
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let first = chat(s.token.clone(), json!({ "message": "What cures malaria?" })).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let session = first.body["session_id"].as_str().unwrap().to_owned();
    assert!(
        first.body["answer"]
            .as_str()
            .unwrap()
            .contains("rtemisinin"),
        "{}",
        first.body
    );
    assert!(!first.body["citations"].as_array().unwrap().is_empty());
    // A follow-up that names no topic still retrieves the malaria passage.
    let second = chat(
        s.token.clone(),
        json!({ "message": "Where has resistance emerged?", "session_id": session }),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["session_id"], session.as_str());
    assert!(
        second.body["answer"].as_str().unwrap().contains("Mekong"),
        "{}",
        second.body
    );

    let sessions = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{}/chat/sessions", s.ws),
            Some(&s.token),
            None,
        )
        .await;
    assert_eq!(sessions.status, 200, "{}", sessions.body);
    let items = sessions.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["title"], "What cures malaria?");
    // A forged cursor whose time Postgres cannot hold is a 422, not a 500.
    let forged = common::pagination::encode(&(
        chrono::NaiveDate::from_ymd_opt(-5000, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc(),
        uuid::Uuid::nil(),
    ));
    s.api
        .send(
            "GET",
            &format!("/workspaces/{}/chat/sessions?cursor={forged}", s.ws),
            Some(&s.token),
            None,
        )
        .await
        .problem(422);
    let path = format!("/workspaces/{}/chat/sessions/{session}/messages", s.ws);
    let messages = s.api.send("GET", &path, Some(&s.token), None).await;
    assert_eq!(messages.status, 200, "{}", messages.body);
    let items = messages.body["items"].as_array().unwrap();
    let roles: Vec<_> = items.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(items[0]["content"], "What cures malaria?");
    assert_eq!(items[1]["citations"], first.body["citations"]);
    let page = s
        .api
        .send("GET", &format!("{path}?limit=3"), Some(&s.token), None)
        .await;
    let next = page.body["next_cursor"].as_str().unwrap();
    let rest = s
        .api
        .send(
            "GET",
            &format!("{path}?limit=3&cursor={next}"),
            Some(&s.token),
            None,
        )
        .await;
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 1);

    // Another member of the same workspace sees none of it.
    let (other, _, _) = s.api.signup("colleague@example.com").await;
    s.api
        .join(&s.token, &s.ws, &other, "colleague@example.com", "member")
        .await;
    s.api
        .send("GET", &path, Some(&other), None)
        .await
        .problem(404);
    let mine = s
        .api
        .send(
            "GET",
            &format!("/workspaces/{}/chat/sessions", s.ws),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(mine.body["items"], json!([]));
    chat(
        other.clone(),
        json!({ "message": "hi", "session_id": session }),
    )
    .await
    .problem(404);
    s.api
        .send(
            "DELETE",
            &format!("/workspaces/{}/chat/sessions/{session}", s.ws),
            Some(&other),
            None,
        )
        .await
        .problem(404);
    // Its owner deletes it; then it is gone.
    s.delete(&format!("/workspaces/{}/chat/sessions/{session}", s.ws))
        .await;
    s.api
        .send("GET", &path, Some(&s.token), None)
        .await
        .problem(404);
}

/// The ingest-indexer with exact search up to `min` chunks and at most
/// `max` own indexes, built with the default `ef_construction`.
async fn run_indexer(
    pool: &PgPool,
    dims: usize,
    min: u32,
    max: u32,
) -> common::Result<common::retrieval::indexes::Maintenance> {
    let ef = DEFAULT_HNSW_EF_CONSTRUCTION;
    common::retrieval::indexes::maintain(pool, dims, ef, min, max, Duration::from_secs(60)).await
}

/// Citations of a passages-only question in `mode`: (chunk, score).
async fn hits(s: &Stack, ws: &str, question: &str, mode: &str) -> Vec<(String, f64)> {
    let reply = s
        .api
        .send(
            "POST",
            &format!("/workspaces/{ws}/query"),
            Some(&s.token),
            Some(json!({ "question": question, "mode": mode, "answer": false })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    citation_scores(&reply)
}

async fn semantic_hits(s: &Stack, ws: &str, question: &str) -> Vec<(String, f64)> {
    hits(s, ws, question, "semantic").await
}

/// The same chunks in the same order, with the same scores.
fn assert_same_hits(a: &[(String, f64)], b: &[(String, f64)]) {
    assert_eq!(
        a.iter().map(|h| &h.0).collect::<Vec<_>>(),
        b.iter().map(|h| &h.0).collect::<Vec<_>>()
    );
    for (x, y) in a.iter().zip(b) {
        assert!((x.1 - y.1).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn large_workspaces_move_to_vector_indexes_and_the_largest_get_their_own(pool: PgPool) {
    use common::retrieval::indexes::{Maintenance, index_name, maintain};
    // Exact search up to 1 chunk: both workspaces qualify for the indexes.
    let s = stack(pool.clone(), &[("VECTOR_EXACT_SEARCH_MAX_CHUNKS", "1")]).await;
    let dims = s.state.config.embedding.dimensions;
    let other = s.api.create_workspace(&s.token, "Other").await;
    let mut mine = Vec::new();
    for (title, text) in [("Malaria", MALARIA), ("Vaccine", VACCINE), ("Sleep", SLEEP)] {
        mine.push(s.create(title, text, json!({})).await);
    }
    for (title, text) in [("Malaria", MALARIA), ("Vaccine", VACCINE)] {
        s.create_in(&s.token, &other, title, text, json!({})).await;
    }
    s.drain().await;
    let question = "how is malaria treated";
    // Until the indexer has run, every workspace is searched exactly, and
    // no vector is in an HNSW index.
    let exact = semantic_hits(&s, &s.ws, question).await;
    assert_eq!(exact.len(), 3);
    let (ws, theirs): (WorkspaceId, WorkspaceId) = (s.ws.parse().unwrap(), other.parse().unwrap());
    // Flagged chunks of both workspaces (each readable in its own context).
    let indexed_chunks = || {
        let pool = pool.clone();
        async move {
            let mut n = 0;
            for w in [ws, theirs] {
                let mut tx = common::db::tenant_tx(&pool, None, Some(w)).await.unwrap();
                let (count,): (i64,) =
                    sqlx::query_as("SELECT count(*) FROM chunks WHERE vector_indexed")
                        .fetch_one(&mut *tx)
                        .await
                        .unwrap();
                tx.commit().await.unwrap();
                n += count;
            }
            n
        }
    };
    assert_eq!(indexed_chunks().await, 0);
    let keyword_question = "malaria vaccine trial";
    let keyword_before = hits(&s, &other, keyword_question, "keyword").await;
    assert_eq!(keyword_before.len(), 2);
    // The chunk count and mean length the indexer stores for keyword
    // search (BM25), as the workspace's own context reads them.
    let keyword_stats = |w: WorkspaceId| {
        let pool = pool.clone();
        async move {
            let mut tx = common::db::tenant_tx(&pool, None, Some(w)).await.unwrap();
            let stats: (Option<i64>, Option<f64>, f64) = sqlx::query_as(
                "SELECT w.search_chunks, w.search_mean_tokens,
                        (SELECT avg(token_count)::float8 FROM chunks)
                 FROM workspaces w WHERE w.id = $1",
            )
            .bind(w)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
            stats
        }
    };
    assert_eq!(keyword_stats(theirs).await.0, None);

    // More than 1 chunk: both are indexed; at most one own index, the
    // larger workspace's.
    let name = index_name(ws, dims);
    let index_of = |name: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String,)>("SELECT indexdef FROM pg_indexes WHERE indexname = $1")
                .bind(name)
                .fetch_optional(&pool)
                .await
                .unwrap()
        }
    };
    // The indexer with exact search up to `min` chunks and `max` own
    // indexes, built with `ef` (ef_construction).
    let index_with = |min: u32, max: u32, ef: u32| {
        let pool = pool.clone();
        async move {
            maintain(&pool, dims, ef, min, max, Duration::from_secs(60))
                .await
                .unwrap()
        }
    };
    let ef = s.state.config.query.hnsw_ef_construction;
    let index = |min: u32, max: u32| index_with(min, max, ef);
    let report = index(1, 1).await;
    assert_eq!(report.indexed, vec![ws, theirs]);
    assert_eq!(report.created, std::slice::from_ref(&name));
    assert_eq!(indexed_chunks().await, 5);
    let (definition,) = index_of(name.clone()).await.expect("the index exists");
    assert!(
        definition.contains(&s.ws)
            && definition.contains("hnsw")
            && definition.contains(&format!("ef_construction='{ef}'")),
        "{definition}"
    );
    // Nothing to do the second time.
    let again = index(1, 1).await;
    assert_eq!(again, Maintenance::default());
    // Keyword search in a flagged workspace reads the stored statistics:
    // the real ones, so its scores are those counted per question before.
    let (chunks, mean, real_mean) = keyword_stats(theirs).await;
    assert_eq!(chunks, Some(2));
    assert!(
        (mean.unwrap() - real_mean).abs() < 1e-9,
        "{mean:?} vs {real_mean}"
    );
    assert_same_hits(
        &hits(&s, &other, keyword_question, "keyword").await,
        &keyword_before,
    );

    // The same passages, scored alike, through the workspace's own index as
    // by the exact scan; the other workspace, through the shared index,
    // still sees only its own.
    let own = semantic_hits(&s, &s.ws, question).await;
    assert_same_hits(&own, &exact);
    let shared = semantic_hits(&s, &other, question).await;
    assert_eq!(shared.len(), 2);
    assert!(shared.iter().all(|h| !own.iter().any(|o| o.0 == h.0)));
    // A document ingested into an indexed workspace is indexed too, and found.
    s.create_in(&s.token, &other, "Sleep", SLEEP, json!({}))
        .await;
    s.drain().await;
    assert_eq!(indexed_chunks().await, 6);
    assert_eq!(semantic_hits(&s, &other, "sleep and memory").await.len(), 3);

    // A document ingested into the workspace with its own index goes there
    // alone, not into the shared index too, and is found.
    const DENGUE: &str = "Dengue fever is spread by Aedes mosquitoes. No antiviral treats it.";
    let fever = s.create("Dengue", DENGUE, json!({})).await;
    s.drain().await;
    assert_eq!(indexed_chunks().await, 6);
    assert_eq!(semantic_hits(&s, &s.ws, "dengue fever").await.len(), 4);
    // Configured otherwise, the indexer builds the index again that way,
    // and first puts that chunk into the shared index, which the workspace
    // is searched through meanwhile.
    let rebuilt = index_with(1, 1, 64).await;
    assert_eq!(
        (rebuilt.dropped, rebuilt.created),
        (vec![name.clone()], vec![name.clone()])
    );
    let (definition,) = index_of(name.clone()).await.expect("the index exists");
    assert!(definition.contains("ef_construction='64'"), "{definition}");
    assert_eq!(indexed_chunks().await, 7);
    // Out of time, a run leaves such an index as it is, in use, for later.
    let late = maintain(&pool, dims, ef, 1, 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((late.pending, late.dropped.len()), (1, 0));
    assert!(index_of(name.clone()).await.is_some());
    // Without its own index, a workspace whose new chunks went there alone
    // is searched exactly, never through the shared index (which would
    // miss the new one).
    let rash = s
        .create("Rash", "A dengue rash appears after the fever.", json!({}))
        .await;
    s.drain().await;
    assert_eq!(indexed_chunks().await, 7);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP INDEX {name}")))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(semantic_hits(&s, &s.ws, "dengue fever").await.len(), 5);
    let report = index(1, 1).await;
    assert_eq!(report.created, std::slice::from_ref(&name));
    assert_eq!(semantic_hits(&s, &s.ws, "dengue fever").await.len(), 5);

    // Shrunk below half the threshold (1 chunk left, threshold 4), the
    // workspace is searched exactly again and its index goes; the other
    // (3 chunks) stays.
    for doc in mine[1..].iter().chain([&fever, &rash]) {
        s.delete(&format!("/workspaces/{}/documents/{doc}", s.ws))
            .await;
    }
    let report = index(4, 5).await;
    assert_eq!(report.unindexed, vec![ws]);
    assert_eq!(report.dropped, std::slice::from_ref(&name));
    assert!(
        report
            .created
            .iter()
            .all(|n| *n == index_name(theirs, dims))
    );
    assert!(index_of(name).await.is_none());
    assert_eq!(indexed_chunks().await, 3);
    // Its lexeme counts go with it; the other's stay.
    let terms_of = |w: WorkspaceId| {
        let pool = pool.clone();
        async move {
            let mut tx = common::db::tenant_tx(&pool, None, Some(w)).await.unwrap();
            let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM workspace_terms")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            n
        }
    };
    assert_eq!(terms_of(ws).await, 0);
    assert!(terms_of(theirs).await > 0);
    // The next run stores the grown workspace's statistics.
    assert_eq!(keyword_stats(theirs).await.0, Some(3));
    assert_eq!(semantic_hits(&s, &s.ws, question).await.len(), 1);
    assert_eq!(semantic_hits(&s, &other, question).await.len(), 3);

    // A deleted workspace leaves the indexes at the next run.
    s.delete(&format!("/workspaces/{other}")).await;
    let report = index(4, 5).await;
    assert_eq!(report.unindexed, vec![theirs]);
    assert_eq!(indexed_chunks().await, 0);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn a_chunk_written_while_its_workspace_moves_to_the_index_is_indexed_too(pool: PgPool) {
    let s = stack(pool.clone(), &[("VECTOR_EXACT_SEARCH_MAX_CHUNKS", "1")]).await;
    let dims = s.state.config.embedding.dimensions;
    for (title, text) in [("Malaria", MALARIA), ("Vaccine", VACCINE)] {
        s.create(title, text, json!({})).await;
    }
    s.drain().await;
    let ws: WorkspaceId = s.ws.parse().unwrap();
    // An ingestion in flight: one more chunk written, not yet committed.
    let mut writer = common::db::chunk_writer_tx(&pool, ws).await.unwrap();
    let (doc,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM documents LIMIT 1")
        .fetch_one(&mut *writer)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO chunks (id, workspace_id, document_id, ordinal, content, token_count, embedding)
         VALUES ($1, $2, $3, 99, 'a late chunk about malaria', 6, $4)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(ws)
    .bind(doc)
    .bind(pgvector::Vector::from(vec![0.1f32; dims]))
    .execute(&mut *writer)
    .await
    .unwrap();
    // The indexer flags what it sees, then waits for the writer before
    // flagging the workspace...
    let indexer = {
        let pool = pool.clone();
        tokio::spawn(async move { run_indexer(&pool, dims, 1, 0).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !indexer.is_finished(),
        "the indexer waits for the chunk writer"
    );
    writer.commit().await.unwrap();
    let report = indexer.await.unwrap().unwrap();
    assert_eq!(report.indexed, vec![ws]);
    // ...so the late chunk is in the index with the others.
    let mut tx = common::db::tenant_tx(&pool, None, Some(ws)).await.unwrap();
    let (outside, all): (i64, i64) =
        sqlx::query_as("SELECT count(*) FILTER (WHERE NOT vector_indexed), count(*) FROM chunks")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!((outside, all), (0, 3));
    // The index path finds all three.
    assert_eq!(semantic_hits(&s, &s.ws, "malaria").await.len(), 3);
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn no_transaction_idles_while_a_remote_embedder_embeds_the_question(pool: PgPool) {
    use common::test_server::{Reply, TestServer};
    // An OpenAI-compatible embedder that takes its time; any unit vector
    // does for this test.
    let dims = config(&[]).embedding.dimensions;
    let server = TestServer::start(move |request, _| {
        let inputs = request.json()["input"].as_array().map_or(1, Vec::len);
        let data: Vec<Value> = (0..inputs)
            .map(|i| json!({ "index": i, "embedding": vec![1.0_f32; dims] }))
            .collect();
        Reply::json(200, json!({ "data": data, "model": "slow" })).delay(Duration::from_millis(600))
    })
    .await;
    let base_url = format!("{}/v1", server.url());
    let s = stack(
        pool.clone(),
        &[
            ("EMBEDDING_PROVIDER", "openai"),
            ("EMBEDDING_BASE_URL", &base_url),
            ("EMBEDDING_MODEL", "slow"),
        ],
    )
    .await;
    s.create("Malaria", MALARIA, json!({})).await;
    s.drain().await;

    // While the question is being embedded, no session of this database
    // sits idle in a transaction (for more than the moment between two
    // statements of one: a loaded machine catches those too).
    let path = format!("/workspaces/{}/query", s.ws);
    let ask = s.api.send(
        "POST",
        &path,
        Some(&s.token),
        Some(json!({ "question": "how is malaria treated", "answer": false })),
    );
    let watch = async {
        let (mut idle, mut polls) = (0, 0);
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < until {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND state LIKE 'idle in transaction%'
                   AND clock_timestamp() - state_change > interval '100 milliseconds'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            idle += n;
            polls += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (idle, polls)
    };
    let (reply, (idle, polls)) = tokio::join!(ask, watch);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(citation_scores(&reply).len(), 1);
    assert!(polls > 5, "{polls} polls");
    assert_eq!(idle, 0, "sessions idle in a transaction over {polls} polls");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.json()["input"].as_array().is_some_and(|i| i
                .iter()
                .any(|t| t.as_str() == Some("how is malaria treated"))))
    );
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn the_keyword_search_function_keeps_to_the_transactions_workspace(pool: PgPool) {
    let s = stack(pool.clone(), &[]).await;
    let other = s.api.create_workspace(&s.token, "Other").await;
    s.create("Malaria treatment", MALARIA, json!({})).await;
    s.create_in(&s.token, &other, "Malaria elsewhere", MALARIA, json!({}))
        .await;
    s.drain().await;
    let (mine, theirs): (WorkspaceId, WorkspaceId) =
        (s.ws.parse().unwrap(), other.parse().unwrap());
    let mut tx = common::db::tenant_tx(&pool, None, Some(mine))
        .await
        .unwrap();
    let search = |ws: WorkspaceId| {
        sqlx::query_as::<_, (uuid::Uuid, Vec<Option<String>>)>(
            "SELECT chunk_id, tf FROM search_keyword($1, ARRAY['artemisinin', 'malaria'],
                                                     ARRAY['artemisinin', 'malaria'], 10)",
        )
        .bind(ws)
    };
    let terms = |ws: WorkspaceId| {
        sqlx::query_as::<_, (String, Option<i32>, i64)>(
            "SELECT lexeme, chunks, n FROM keyword_terms($1, 'Artemisinin for malaria')",
        )
        .bind(ws)
    };
    let found = search(mine).fetch_all(&mut *tx).await.unwrap();
    assert_eq!(found.len(), 1, "its own chunk");
    // Both lexemes occur in it.
    assert!(
        found[0].1.iter().all(|tf| tf
            .as_deref()
            .is_some_and(|n| n.parse::<i32>().is_ok_and(|n| n > 0))),
        "{found:?}"
    );
    // The question's lexemes, stemmed, stop words dropped; the workspace
    // has that one chunk; nothing counted yet.
    assert_eq!(
        terms(mine).fetch_all(&mut *tx).await.unwrap(),
        [
            ("artemisinin".to_owned(), None, 1),
            ("malaria".to_owned(), None, 1)
        ]
    );
    // Asking for another workspace than the transaction's finds nothing,
    // and the policy exempting the function's owner does not reach the app role.
    assert!(search(theirs).fetch_all(&mut *tx).await.unwrap().is_empty());
    assert!(terms(theirs).fetch_all(&mut *tx).await.unwrap().is_empty());
    let (visible,): (i64,) = sqlx::query_as("SELECT count(*) FROM chunks WHERE workspace_id = $1")
        .bind(theirs)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible, 0);
    tx.commit().await.unwrap();
    // Without a workspace context it finds nothing at all.
    let mut tx = common::db::tenant_tx(&pool, None, None).await.unwrap();
    assert!(search(mine).fetch_all(&mut *tx).await.unwrap().is_empty());
    assert!(terms(mine).fetch_all(&mut *tx).await.unwrap().is_empty());
}

/// The keyword ranking of `question` in `ws` (best `limit`), and how many
/// matches it read.
async fn keyword_reads(
    pool: &PgPool,
    ws: WorkspaceId,
    question: &str,
    filters: &common::retrieval::Filters,
    limit: usize,
) -> (Vec<(String, f64)>, usize) {
    use common::retrieval::{Mode, Search, keyword};
    let mut tx = common::db::tenant_tx(pool, None, Some(ws)).await.unwrap();
    let search = Search {
        workspace: ws,
        text: question,
        embedding: None,
        mode: Mode::Keyword,
        top_k: limit,
        filters,
        semantic_weight: 0.5,
    };
    let ranking = keyword::rank(&mut tx, &search, limit).await.unwrap();
    tx.commit().await.unwrap();
    let ranked = ranking
        .ranked
        .into_iter()
        .map(|(id, score)| (id.0.to_string(), score))
        .collect();
    (ranked, ranking.read)
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn keyword_search_in_a_large_workspace_reads_only_matches_that_can_rank(pool: PgPool) {
    use common::retrieval::{Filters, FiltersIn};
    let s = stack(pool.clone(), &[("VECTOR_EXACT_SEARCH_MAX_CHUNKS", "1")]).await;
    let ws: WorkspaceId = s.ws.parse().unwrap();
    // One chunk each: malaria in nearly all, vaccine in some (three times
    // in one, which outranks every artemisinin chunk), artemisinin in few.
    let filler = "Field notes from the district clinic, recorded weekly.";
    for i in 0..24 {
        let text = match i {
            0 => format!("Vaccine vaccine vaccine trial against malaria. {filler}"),
            1..=5 => format!("A vaccine for malaria, report {i}. {filler}"),
            6..=8 => format!("Artemisinin treats malaria, case {i}. {filler}"),
            _ => format!("Malaria season report {i}. {filler}"),
        };
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        s.create(&format!("Note {i}"), &text, json!({ "kind": kind }))
            .await;
    }
    s.create("Other", &format!("Cholera outbreak. {filler}"), json!({}))
        .await;
    s.drain().await;
    let question = "artemisinin vaccine malaria";
    let open = Filters::default();
    let even = Filters::parse(Some(
        serde_json::from_value::<FiltersIn>(json!({ "metadata": { "kind": { "$eq": "even" } } }))
            .unwrap(),
    ))
    .unwrap();
    // Before the indexer has counted anything: every match is read.
    let (before, read_all) = keyword_reads(&pool, ws, question, &open, 2).await;
    let (before_even, _) = keyword_reads(&pool, ws, question, &even, 2).await;
    assert_eq!(read_all, 24);
    assert_eq!(before.len(), 2);
    let before_api = hits(&s, &s.ws, question, "keyword").await;

    let report = run_indexer(&pool, s.state.config.embedding.dimensions, 1, 1)
        .await
        .unwrap();
    assert_eq!(report.counted, vec![ws]);
    // Counted: artemisinin's 3 matches read first, then vaccine's 6 (its
    // bound is above the second-best artemisinin score), never the 15
    // malaria-only chunks. The same chunks with the same scores.
    let (after, read) = keyword_reads(&pool, ws, question, &open, 2).await;
    assert_same_hits(&after, &before);
    assert_eq!(read, 9, "{after:?}");
    // The triple vaccine chunk is first: skipping vaccine would lose it.
    let (triple, _) = keyword_reads(&pool, ws, "vaccine", &open, 1).await;
    assert_eq!(after[0].0, triple[0].0);
    // Filters too, and through the handler with its default depth.
    let (after_even, _) = keyword_reads(&pool, ws, question, &even, 2).await;
    assert_same_hits(&after_even, &before_even);
    assert_same_hits(&hits(&s, &s.ws, question, "keyword").await, &before_api);
    // A second run counts nothing again.
    let again = run_indexer(&pool, s.state.config.embedding.dimensions, 1, 1)
        .await
        .unwrap();
    assert!(again.counted.is_empty());

    // A lexeme new since the count is read first, counted over its
    // matches; malaria's bound is below its score, so malaria goes unread.
    let new = s
        .create(
            "Quinine",
            &format!("Quinine for malaria. {filler}"),
            json!({}),
        )
        .await;
    s.drain().await;
    let (found, read) = keyword_reads(&pool, ws, "quinine vaccine malaria", &open, 1).await;
    assert_eq!(read, 7, "quinine's match and vaccine's 6");
    let (chunk,): (uuid::Uuid,) = {
        let mut tx = common::db::tenant_tx(&pool, None, Some(ws)).await.unwrap();
        let row = sqlx::query_as("SELECT id FROM chunks WHERE document_id = $1")
            .bind(uuid::Uuid::parse_str(&new).unwrap())
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        row
    };
    assert_eq!(found[0].0, chunk.to_string());
}

/// Hybrid hits of `question` in `ws`, searched with `db` in `tx`.
async fn hybrid_in(
    state: &State,
    db: &PgPool,
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ws: WorkspaceId,
    question: &str,
) -> Vec<(String, f64)> {
    search_in(state, db, tx, ws, question, common::retrieval::Mode::Hybrid).await
}

async fn search_in(
    state: &State,
    db: &PgPool,
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ws: WorkspaceId,
    question: &str,
    mode: common::retrieval::Mode,
) -> Vec<(String, f64)> {
    use common::retrieval::{Filters, Search};
    let embedder = state.embedder().await.unwrap();
    let embedding = embedder.embed_query(question).await.unwrap();
    let filters = Filters::default();
    let hits = common::retrieval::search(
        tx,
        db,
        &state.config.query,
        state.config.embedding.dimensions,
        &Search {
            workspace: ws,
            text: question,
            embedding: Some(&embedding),
            mode,
            top_k: 5,
            filters: &filters,
            semantic_weight: 0.5,
        },
    )
    .await
    .unwrap();
    hits.into_iter()
        .map(|h| (h.chunk_id.0.to_string(), h.score))
        .collect()
}

/// Three connections open and back in `pool`, idle.
async fn warm_up(pool: &PgPool) {
    let warm: Vec<_> = futures::future::join_all((0..3).map(|_| pool.acquire())).await;
    drop(warm);
    // Connections go back to the pool in tasks of their own.
    for _ in 0..100 {
        if pool.num_idle() >= 3 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} idle connections", pool.num_idle());
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn semantic_searches_scan_the_vector_index_deeper_than_hybrid_ones(pool: PgPool) {
    use common::retrieval::Mode;
    let s = stack(
        pool.clone(),
        &[("HNSW_EF_SEARCH", "60"), ("HNSW_EF_SEARCH_SEMANTIC", "300")],
    )
    .await;
    s.create("Malaria", MALARIA, json!({})).await;
    s.drain().await;
    let ws: WorkspaceId = s.ws.parse().unwrap();
    let dims = s.state.config.embedding.dimensions;
    run_indexer(&pool, dims, 0, 1).await.unwrap();
    for (mode, ef) in [(Mode::Semantic, "300"), (Mode::Hybrid, "60")] {
        let mut tx = common::db::tenant_tx(&pool, None, Some(ws)).await.unwrap();
        let found = search_in(&s.state, &pool, &mut tx, ws, "malaria treatment", mode).await;
        assert!(!found.is_empty(), "{mode:?}");
        let (set,): (String,) = sqlx::query_as("SELECT current_setting('hnsw.ef_search')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(set, ef, "{mode:?}");
        tx.rollback().await.unwrap();
    }
}

#[sqlx::test(migrator = "common::db::MIGRATOR")]
async fn hybrid_legs_on_a_second_connection_find_what_one_connection_finds(pool: PgPool) {
    use sqlx::Connection;
    use sqlx::postgres::{PgConnection, PgPoolOptions};
    let s = stack(pool.clone(), &[]).await;
    for (title, text) in [("Malaria", MALARIA), ("Vaccine", VACCINE), ("Sleep", SLEEP)] {
        s.create(title, text, json!({})).await;
    }
    s.drain().await;
    let ws: WorkspaceId = s.ws.parse().unwrap();
    // Searched through an HNSW index, as large workspaces are (the legs run
    // concurrently only there).
    let dims = s.state.config.embedding.dimensions;
    let report = run_indexer(&pool, dims, 1, 1).await.unwrap();
    assert_eq!(report.indexed, vec![ws]);
    let question = "malaria treatment and measles vaccine doses";
    let options = (*pool.connect_options()).clone();

    // One connection: the legs run one after the other in the transaction.
    let single = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .unwrap();
    let mut tx = common::db::tenant_tx(&single, None, Some(ws))
        .await
        .unwrap();
    let alone = hybrid_in(&s.state, &single, &mut tx, ws, question).await;
    tx.commit().await.unwrap();
    assert_eq!(alone.len(), 3, "{alone:?}");

    // Idle connections in the pool: the keyword leg runs on one of them,
    // with the same result.
    warm_up(&pool).await;
    let mut tx = common::db::tenant_tx(&pool, None, Some(ws)).await.unwrap();
    assert_same_hits(
        &hybrid_in(&s.state, &pool, &mut tx, ws, question).await,
        &alone,
    );
    tx.commit().await.unwrap();

    // The server closed the idle connections (an RDS Proxy timeout, say):
    // the leg falls back to the transaction, and the answer is the same.
    warm_up(&pool).await;
    let mut tx = common::db::tenant_tx(&pool, None, Some(ws)).await.unwrap();
    let (mine,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let mut killer = PgConnection::connect_with(&options).await.unwrap();
    let kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE datname = current_database() AND pid NOT IN ($1, pg_backend_pid())";
    let killed = sqlx::query(kill)
        .bind(mine)
        .execute(&mut killer)
        .await
        .unwrap();
    assert!(killed.rows_affected() >= 1);
    for _ in 0..100 {
        let (left,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND pid NOT IN ($1, pg_backend_pid())",
        )
        .bind(mine)
        .fetch_one(&mut killer)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pool.num_idle() >= 1, "a (dead) idle connection to try");
    assert_same_hits(
        &hybrid_in(&s.state, &pool, &mut tx, ws, question).await,
        &alone,
    );
    tx.commit().await.unwrap();
}
