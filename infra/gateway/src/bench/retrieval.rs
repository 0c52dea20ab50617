//! `ragway-bench retrieval`: retrieval latency and recall at scale, and
//! budget throughput.
//!
//! Seeds `--chunks` chunks (local embedder, 384 dimensions) over
//! `--workspaces` workspaces whose sizes follow Zipf's law (s = 1), of
//! topical text or, with `--uniform`, of uniformly random words (see
//! [`Corpus`]), runs
//! the ingest-indexer (workspaces above the exact-search size move to the
//! HNSW indexes), builds the shared index, then per size bucket:
//! - hybrid retrieval (`answer: false`, top 10) through the `query-ask`
//!   handler, interleaved with the same retrieval statements run directly
//!   (BEGIN with the RLS context, membership, `common::retrieval::search`,
//!   COMMIT: no HTTP event, auth, rate limit or JSON);
//! - recall@10 of the semantic leg against an exact scan of the workspace,
//!   and each leg's latency alone (direct).
//!
//! Then `--clients` concurrent clients reserve and commit tokens in one
//! workspace for `--seconds`, and the books are checked.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use common::budget::{self, Purpose};
use common::config::Config;
use common::ids::{UserId, WorkspaceId};
use common::retrieval::{Filters, Mode, Search};
use common::state::State;
use pgvector::Vector;
use rand::{Rng, SeedableRng};
use sqlx::Executor;
use sqlx::postgres::PgPoolOptions;

use super::{
    Samples, create_workspace, drop_scratch, flag, http_handler, post_request, run_indexer,
    scratch_pool, tenant, timed_pair,
};

const DB: &str = "ragway_bench_retrieval";
const CHUNKS_PER_DOCUMENT: usize = 50;

/// Vocabulary of the uniform corpus (`--uniform`): each chunk draws 60
/// words from it, so a given word is in about 3% of chunks and a
/// five-word question matches about 14% of a workspace (keyword search
/// cost grows with the matches).
const VOCABULARY: usize = 2_000;

/// The topical corpus (the default): a vocabulary of 20,000 words, 500
/// topics of 200 words each; a workspace writes about 10 topics, each
/// document one of them. A chunk draws 40 words from its document's topic
/// (Zipf-weighted within the topic: its top words are in nearly every
/// chunk of the topic, its tail in few) and 20 from the whole vocabulary;
/// a question draws 4 words from one of its workspace's topics and 1 from
/// the whole vocabulary.
const TOPICAL_VOCABULARY: usize = 20_000;
const TOPICS: usize = 500;
const TOPIC_WORDS: usize = 200;
const TOPICS_PER_WORKSPACE: usize = 10;

/// A pronounceable synthetic word for vocabulary entry `i`.
fn word(i: usize) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "da", "go", "hu", "zi", "be", "fo",
        "ya",
    ];
    let mut out = String::new();
    let mut n = i + 16;
    while n > 0 {
        out.push_str(SYLLABLES[n % 16]);
        n /= 16;
    }
    out
}

/// What the seeded chunks and the questions are made of.
///
/// Uniform bags of words have no structure: every chunk's vector is about
/// as far from a question as every other, which is the worst case for a
/// graph index (recall@10 0.66 at `ef_search` 100 on a 26,720-chunk
/// workspace). Text clusters by subject, which the topical corpus imitates.
enum Corpus {
    Uniform,
    Topical {
        /// Each topic's words, most frequent first.
        topics: Vec<Vec<usize>>,
        /// Cumulative Zipf weights over a topic's ranks.
        cdf: Vec<f64>,
    },
}

impl Corpus {
    fn new(uniform: bool, rng: &mut impl Rng) -> Self {
        if uniform {
            return Self::Uniform;
        }
        let topics = (0..TOPICS)
            .map(|_| rand::seq::index::sample(rng, TOPICAL_VOCABULARY, TOPIC_WORDS).into_vec())
            .collect();
        let mut total = 0.0;
        let cdf = (1..=TOPIC_WORDS)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Self::Topical { topics, cdf }
    }

    /// A workspace's topics (none for the uniform corpus).
    fn workspace_topics(&self, rng: &mut impl Rng) -> Vec<usize> {
        match self {
            Self::Uniform => Vec::new(),
            Self::Topical { .. } => {
                rand::seq::index::sample(rng, TOPICS, TOPICS_PER_WORKSPACE).into_vec()
            }
        }
    }

    /// `topical` words from `topic` (if any) and the rest from anywhere.
    fn words(&self, rng: &mut impl Rng, topic: Option<usize>, topical: usize, n: usize) -> String {
        let words: Vec<String> = match (self, topic) {
            (Self::Topical { topics, cdf }, Some(topic)) => (0..n)
                .map(|i| {
                    if i < topical {
                        let x = rng.random_range(0.0..cdf[TOPIC_WORDS - 1]);
                        word(topics[topic][cdf.partition_point(|&c| c <= x)])
                    } else {
                        word(rng.random_range(0..TOPICAL_VOCABULARY))
                    }
                })
                .collect(),
            _ => (0..n)
                .map(|_| word(rng.random_range(0..VOCABULARY)))
                .collect(),
        };
        words.join(" ")
    }

    /// A chunk of a document about `topic`.
    fn chunk(&self, rng: &mut impl Rng, topic: Option<usize>) -> String {
        self.words(rng, topic, 40, 60)
    }

    /// A question to a workspace writing about `topics`.
    fn question(&self, rng: &mut impl Rng, topics: &[usize]) -> String {
        let topic = (!topics.is_empty()).then(|| topics[rng.random_range(0..topics.len())]);
        self.words(rng, topic, 4, 5)
    }
}

/// Zipf sizes summing to about `total`, largest first, each at least 1.
fn zipf_sizes(total: usize, n: usize) -> Vec<usize> {
    let h: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
    (1..=n)
        .map(|i| ((total as f64 / h / i as f64).round() as usize).max(1))
        .collect()
}

fn bucket(size: usize) -> usize {
    match size {
        0..500 => 0,
        500..5_000 => 1,
        _ => 2,
    }
}
const BUCKETS: [&str; 3] = [
    "small (<500 chunks)",
    "medium (500-4,999)",
    "large (>=5,000)",
];

async fn seed_workspace(
    state: &State,
    user: UserId,
    workspace: WorkspaceId,
    size: usize,
    corpus: &Corpus,
    topics: &[usize],
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<()> {
    let embedder = state.embedder().await?;
    let mut tx = common::db::tenant_tx(&state.db, Some(user), Some(workspace)).await?;
    let documents = size.div_ceil(CHUNKS_PER_DOCUMENT);
    let doc_ids: Vec<uuid::Uuid> = (0..documents).map(|_| uuid::Uuid::now_v7()).collect();
    let doc_topics: Vec<Option<usize>> = (0..documents)
        .map(|_| (!topics.is_empty()).then(|| topics[rng.random_range(0..topics.len())]))
        .collect();
    sqlx::query(
        "INSERT INTO documents (id, workspace_id, title, source, content, content_type, size,
             content_sha256, etag, version, metadata, status, created_by, updated_by)
         SELECT d, $1, 'Bench document', 'inline', '', 'text/plain', 0, md5(d::text), md5(d::text),
                1, '{}', 'ready', $3, $3
         FROM unnest($2::uuid[]) d",
    )
    .bind(workspace)
    .bind(&doc_ids)
    .bind(user)
    .execute(&mut *tx)
    .await?;
    for start in (0..size).step_by(1000) {
        let end = (start + 1000).min(size);
        let texts: Vec<String> = (start..end)
            .map(|i| corpus.chunk(rng, doc_topics[i / CHUNKS_PER_DOCUMENT]))
            .collect();
        let vectors = embedder.embed(&texts).await?;
        let ids: Vec<uuid::Uuid> = (start..end).map(|_| uuid::Uuid::now_v7()).collect();
        let docs: Vec<uuid::Uuid> = (start..end)
            .map(|i| doc_ids[i / CHUNKS_PER_DOCUMENT])
            .collect();
        let ordinals: Vec<i32> = (start..end)
            .map(|i| (i % CHUNKS_PER_DOCUMENT) as i32)
            .collect();
        let tokens: Vec<i32> = texts.iter().map(|_| 60).collect();
        let embeddings: Vec<Vector> = vectors.into_iter().map(Vector::from).collect();
        sqlx::query(
            "INSERT INTO chunks (id, workspace_id, document_id, ordinal, content, token_count, embedding)
             SELECT id, $1, doc, ord, content, tokens, emb
             FROM unnest($2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::int[], $7::vector[])
                  AS t(id, doc, ord, content, tokens, emb)",
        )
        .bind(workspace)
        .bind(&ids)
        .bind(&docs)
        .bind(&ordinals)
        .bind(&texts)
        .bind(&tokens)
        .bind(&embeddings)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The retrieval the handler runs, without the HTTP layer.
async fn direct(
    state: &State,
    user: UserId,
    workspace: WorkspaceId,
    question: &str,
    mode: Mode,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    let embedding = if mode == Mode::Keyword {
        None
    } else {
        state
            .embedder()
            .await?
            .embed(std::slice::from_ref(&question.to_owned()))
            .await?
            .pop()
    };
    let mut tx = common::db::tenant_tx(&state.db, Some(user), None).await?;
    let member: Option<(String, String)> = sqlx::query_as(common::workspaces::MEMBERSHIP_SQL)
        .bind(workspace)
        .bind(user)
        .fetch_optional(&mut *tx)
        .await?;
    member.context("not a member")?;
    let hits = common::retrieval::search(
        &mut tx,
        &state.db,
        &state.config.query,
        state.config.embedding.dimensions,
        &Search {
            workspace,
            text: question,
            embedding: embedding.as_deref(),
            mode,
            top_k: 10,
            filters: &Filters::default(),
            semantic_weight: state
                .config
                .query
                .semantic_weight(state.config.embedding.provider),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(hits.into_iter().map(|h| h.chunk_id.0).collect())
}

/// How many matches the keyword leg of a hybrid search (top 10) reads,
/// and how many chunks match the question.
async fn keyword_read(
    state: &State,
    user: UserId,
    workspace: WorkspaceId,
    question: &str,
) -> anyhow::Result<(usize, usize)> {
    let filters = Filters::default();
    let search = Search {
        workspace,
        text: question,
        embedding: None,
        mode: Mode::Keyword,
        top_k: 10,
        filters: &filters,
        semantic_weight: 0.5,
    };
    let mut tx = common::db::tenant_tx(&state.db, Some(user), Some(workspace)).await?;
    let limit = common::retrieval::candidates(10) as usize;
    let ranking = common::retrieval::keyword::rank(&mut tx, &search, limit).await?;
    let (matched,): (i64,) = sqlx::query_as(
        "WITH t AS (SELECT array_agg(lexeme) AS l FROM keyword_terms($1, $2))
         SELECT count(*) FROM t, search_keyword($1, t.l, t.l, 1000000)",
    )
    .bind(workspace)
    .bind(question)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((ranking.read, usize::try_from(matched)?))
}

/// The exact top 10 by cosine distance (no index).
async fn exact(
    state: &State,
    user: UserId,
    workspace: WorkspaceId,
    question: &str,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    let embedding = state
        .embedder()
        .await?
        .embed(std::slice::from_ref(&question.to_owned()))
        .await?
        .pop()
        .context("one vector")?;
    let mut tx = common::db::tenant_tx(&state.db, Some(user), Some(workspace)).await?;
    let rows: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "SELECT id FROM chunks WHERE workspace_id = $1
         ORDER BY embedding <=> $2, id LIMIT 10",
    )
    .bind(workspace)
    .bind(Vector::from(embedding))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let total = flag(args, "--chunks", 200_000)?;
    let n_workspaces = flag(args, "--workspaces", 1_000)?;
    let per_bucket = flag(args, "--queries", 200)?;
    let clients = flag(args, "--clients", 32)?;
    let seconds = flag(args, "--seconds", 5)?;
    let keep = args.iter().any(|a| a == "--keep");
    let sweep = ef_sweep(args)?;
    let mut config = Config::from_env().context("load the stack env first: . .local/test/env")?;
    // The handler still counts every request; the bench just never hits the limit.
    config.query.rate_limit_per_minute = u32::MAX;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    let setup = Instant::now();
    let pool = scratch_pool(&config, DB).await?;
    let state = State::with_pool(config.clone(), pool.clone())?;
    let (token, caller, first) = tenant(&state, &pool, "w0").await?;
    let user = caller.user_id;
    if args.iter().any(|a| a == "--budget-only") {
        budget_run(
            &config,
            user,
            first,
            clients,
            Duration::from_secs(seconds as u64),
        )
        .await?;
        pool.close().await;
        return drop_scratch(&config, DB).await;
    }
    let mut workspaces = vec![first];
    for i in 1..n_workspaces {
        workspaces.push(create_workspace(&pool, caller, &format!("w{i}")).await?);
    }
    let sizes = zipf_sizes(total, n_workspaces);
    let corpus = Corpus::new(args.iter().any(|a| a == "--uniform"), &mut rng);
    let topics: Vec<Vec<usize>> = workspaces
        .iter()
        .map(|_| corpus.workspace_topics(&mut rng))
        .collect();
    for ((ws, size), topics) in workspaces.iter().zip(&sizes).zip(&topics) {
        seed_workspace(&state, user, *ws, *size, &corpus, topics, &mut rng).await?;
    }
    let seeded = setup.elapsed();
    let own = Instant::now();
    let report = run_indexer(&pool, &config).await?;
    let own = own.elapsed();
    let index = Instant::now();
    {
        let mut conn = pool.acquire().await?;
        // The whole graph in memory: building it on disk is many times slower.
        conn.execute("SET maintenance_work_mem = '1GB'").await?;
        common::db::ensure_vector_index(
            &mut *conn,
            config.embedding.dimensions,
            config.query.hnsw_ef_construction,
        )
        .await?;
        conn.execute("VACUUM ANALYZE chunks").await?;
        conn.execute("ANALYZE documents").await?;
    }
    println!(
        "seeded {} chunks over {} workspaces (largest {}, smallest {}) in {:.1} s",
        sizes.iter().sum::<usize>(),
        n_workspaces,
        sizes[0],
        sizes[n_workspaces - 1],
        seeded.as_secs_f64(),
    );
    println!(
        "ingest-indexer: {} workspaces moved to the HNSW indexes, own indexes for {}, in {:.1} s; shared index of their chunks built in {:.1} s",
        report.indexed.len(),
        report.created.len(),
        own.as_secs_f64(),
        index.elapsed().as_secs_f64()
    );
    println!(
        "exact search up to VECTOR_EXACT_SEARCH_MAX_CHUNKS = {}, own indexes for at most VECTOR_DEDICATED_INDEXES_MAX = {}, hnsw.ef_search {} (hybrid) / {} (semantic)",
        config.query.exact_search_max_chunks,
        config.query.dedicated_indexes_max,
        config.query.hnsw_ef_search,
        config.query.hnsw_ef_search_semantic
    );

    // Latency and recall per bucket.
    let sweep_states = sweep
        .iter()
        .map(|&ef| {
            let mut config = config.clone();
            config.query.hnsw_ef_search = ef;
            config.query.hnsw_ef_search_semantic = ef;
            State::with_pool(config, pool.clone())
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ask = http_handler("query-ask")?;
    let mut by_bucket: [Vec<(WorkspaceId, &[usize])>; 3] = Default::default();
    for ((ws, size), topics) in workspaces.iter().zip(&sizes).zip(&topics) {
        by_bucket[bucket(*size)].push((*ws, topics));
    }
    let mut all_handler = Samples::default();
    let mut all_raw = Samples::default();
    for (b, members) in by_bucket.iter().enumerate() {
        if members.is_empty() {
            continue;
        }
        let (mut handler, mut raw) = (Samples::default(), Samples::default());
        // Each leg alone, direct (membership, the leg, details).
        let (mut semantic_leg, mut keyword_leg) = (Samples::default(), Samples::default());
        let mut recall = 0.0;
        let (mut read, mut matched) = (Vec::with_capacity(per_bucket), 0);
        let mut swept: Vec<(Samples, f64)> = sweep.iter().map(|_| Default::default()).collect();
        for turn in 0..per_bucket {
            let (ws, topics) = members[rng.random_range(0..members.len())];
            let question = corpus.question(&mut rng, topics);
            let body = serde_json::json!({ "question": question, "top_k": 10, "answer": false });
            let ws_text = ws.to_string();
            let request = post_request(
                "POST /workspaces/{workspace_id}/query",
                &format!("/workspaces/{ws_text}/query"),
                &[("workspace_id", &ws_text)],
                &token,
                &body,
            );
            let ((h, response), (r, direct_ids)) = timed_pair(
                turn,
                ask(&state, request),
                direct(&state, user, ws, &question, Mode::Hybrid),
            )
            .await;
            anyhow::ensure!(
                response.status() == 200,
                "handler answered {}: {}",
                response.status(),
                String::from_utf8_lossy(response.body().as_ref())
            );
            direct_ids?;
            handler.push(h);
            raw.push(r);
            all_handler.push(h);
            all_raw.push(r);
            let t = Instant::now();
            let found = direct(&state, user, ws, &question, Mode::Semantic).await?;
            semantic_leg.push(t.elapsed());
            let t = Instant::now();
            direct(&state, user, ws, &question, Mode::Keyword).await?;
            keyword_leg.push(t.elapsed());
            let (r, m) = keyword_read(&state, user, ws, &question).await?;
            read.push(r);
            matched += m;
            let truth = exact(&state, user, ws, &question).await?;
            recall += share_found(&truth, &found);
            for ((latency, recall), state) in swept.iter_mut().zip(&sweep_states) {
                let t = Instant::now();
                let found = direct(state, user, ws, &question, Mode::Semantic).await?;
                latency.push(t.elapsed());
                *recall += share_found(&truth, &found);
            }
        }
        print_row(
            BUCKETS[b],
            members.len(),
            &handler,
            &raw,
            recall / per_bucket as f64,
        );
        println!(
            "{:<22} direct, one leg: semantic p50 {:6.2} p95 {:6.2} ms | keyword p50 {:6.2} p95 {:6.2} ms",
            "",
            semantic_leg.quantile(0.5),
            semantic_leg.quantile(0.95),
            keyword_leg.quantile(0.5),
            keyword_leg.quantile(0.95),
        );
        read.sort_unstable();
        println!(
            "{:<22} keyword matches read (hybrid depth): mean {:.0} of {:.0} matching, p95 {}",
            "",
            read.iter().sum::<usize>() as f64 / read.len().max(1) as f64,
            matched as f64 / read.len().max(1) as f64,
            read[(read.len() * 95 / 100).min(read.len().saturating_sub(1))],
        );
        for (ef, (latency, recall)) in sweep.iter().zip(&swept) {
            println!(
                "{:<22} hnsw.ef_search {ef:>4}: semantic recall@10 {:.3}, semantic leg p50 {:6.2} p95 {:6.2} ms",
                "",
                recall / per_bucket as f64,
                latency.quantile(0.5),
                latency.quantile(0.95),
            );
        }
    }
    print_row("all", n_workspaces, &all_handler, &all_raw, f64::NAN);

    // Budget: reserve + commit pairs from many clients in one workspace.
    budget_run(
        &config,
        user,
        first,
        clients,
        Duration::from_secs(seconds as u64),
    )
    .await?;

    pool.close().await;
    if !keep {
        drop_scratch(&config, DB).await?;
    }
    Ok(())
}

/// The share of `truth` in `found` (recall against the exact answer).
fn share_found(truth: &[uuid::Uuid], found: &[uuid::Uuid]) -> f64 {
    let hit = truth.iter().filter(|id| found.contains(id)).count();
    hit as f64 / truth.len().max(1) as f64
}

/// `--ef-sweep 100,200,400`: semantic recall and latency at each
/// hnsw.ef_search too (same questions, direct).
fn ef_sweep(args: &[String]) -> anyhow::Result<Vec<u32>> {
    let Some(i) = args.iter().position(|a| a == "--ef-sweep") else {
        return Ok(Vec::new());
    };
    args.get(i + 1)
        .context("--ef-sweep needs a list: 100,200,400")?
        .split(',')
        .map(|v| Ok(v.trim().parse::<u32>()?))
        .collect()
}

fn print_row(what: &str, workspaces: usize, handler: &Samples, raw: &Samples, recall: f64) {
    println!(
        "{what:<22} ws={workspaces:<4} n={:<4} handler p50 {:6.2} p95 {:6.2} p99 {:6.2} ms | direct p50 {:6.2} p95 {:6.2} p99 {:6.2} ms | ratio p50 {:.2} p95 {:.2} | semantic recall@10 {}",
        handler.0.len(),
        handler.quantile(0.5),
        handler.quantile(0.95),
        handler.quantile(0.99),
        raw.quantile(0.5),
        raw.quantile(0.95),
        raw.quantile(0.99),
        handler.quantile(0.5) / raw.quantile(0.5),
        handler.quantile(0.95) / raw.quantile(0.95),
        if recall.is_nan() {
            "-".to_owned()
        } else {
            format!("{recall:.3}")
        },
    );
}

async fn budget_run(
    config: &Config,
    user: UserId,
    workspace: WorkspaceId,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let base: sqlx::postgres::PgConnectOptions = config.database_url.expose().parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(clients as u32)
        .connect_with(base.database(DB))
        .await?;
    let limit: i64 = 1_000_000_000;
    let mut tx = common::db::tenant_tx(&pool, Some(user), Some(workspace)).await?;
    sqlx::query("UPDATE workspaces SET daily_token_limit = $2 WHERE id = $1")
        .bind(workspace)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let pairs = Arc::new(AtomicU64::new(0));
    let spent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (pool, stop, pairs, spent) = (pool.clone(), stop.clone(), pairs.clone(), spent.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // The handlers reserve in the membership check's
                // transaction; here the reserve has one of its own.
                let mut tx = common::db::tenant_tx(&pool, Some(user), Some(workspace)).await?;
                let r = budget::reserve(
                    &mut tx,
                    workspace,
                    user,
                    Purpose::Query,
                    600,
                    Duration::from_secs(300),
                )
                .await
                .map_err(|e| anyhow::anyhow!("reserve: {e}"))?;
                tx.commit().await?;
                let used = 300 + (n + c as u64) % 200;
                budget::commit(&pool, &r, used - 50, 50, "bench")
                    .await
                    .map_err(|e| anyhow::anyhow!("commit: {e}"))?;
                pairs.fetch_add(1, Ordering::Relaxed);
                spent.fetch_add(used, Ordering::Relaxed);
                n += 1;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (used, reserved): (i64, i64) = sqlx::query_as(
        "SELECT tokens_used, tokens_reserved FROM workspace_daily_usage
         WHERE workspace_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date",
    )
    .bind(workspace)
    .fetch_one(&pool)
    .await?;
    let pairs = pairs.load(Ordering::Relaxed);
    let spent = spent.load(Ordering::Relaxed) as i64;
    println!(
        "budget: {clients} clients, {pairs} reserve+commit pairs in {elapsed:.1} s = {:.0} pairs/s; \
         used {used} (clients counted {spent}), reserved {reserved}: {}",
        pairs as f64 / elapsed,
        if used == spent && reserved == 0 && used <= limit {
            "books balance, no overspend"
        } else {
            "MISMATCH"
        }
    );
    pool.close().await;
    Ok(())
}
