//! `ragway-bench scifact`: retrieval quality on BEIR SciFact. Every corpus
//! abstract becomes an inline Markdown document (`# title` then the text),
//! ingested by the real worker handler from `ragway.document.changed`
//! messages; each train query with judgements is then searched with
//! `retrieval::search` in the three modes (top 100 chunks, a document
//! ranked by its best chunk) and scored with nDCG@10 and recall@100.
//!
//! The train split is all this copy of the data set has: its figures are
//! indicative, not comparable one-to-one with published test-split ones.
//! `--corpus N` ingests a subset (every judged document of the queries
//! asked, then the corpus in file order up to N) for slow embedders; its
//! scores run higher. `--keep` keeps the database; `--reuse` searches a
//! kept one made with the same embedder and corpus size again.
//!
//! `--folds K` adds the fusion study: both legs of every query at hybrid
//! depth, fused offline by each candidate rule over a grid of semantic
//! weights; each rule's parameters are chosen on K−1 folds of the queries
//! and scored on the one left out, so its held-out figure was not tuned
//! on (see [`fusion_study`]).
//!
//! `--rerank` adds reranking: each query's best `RERANK_CANDIDATES` hybrid
//! chunks sent to the configured reranker (`RERANK_*`, e.g. the env of
//! `infra/stack/reranker.sh`), nDCG@10 before and after, and the time the
//! reranker took per query.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::aws_lambda_events::sqs::SqsEvent;
use common::config::{Config, EmbeddingProvider};
use common::documents::NewDocument;
use common::ids::{ChunkId, DocumentId, WorkspaceId};
use common::ingest::events::DocumentChanged;
use common::retrieval::{self, Filters, Mode, Search};
use common::state::State;
use common::workspaces::Access;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sqlx::Executor;

use super::{drop_scratch, flag, open_pool, run_indexer, scratch_pool, sqs_handler, tenant};

/// Chunks asked of each search: recall@100 needs 100 documents, and the
/// abstracts are mostly one chunk each.
const TOP_K: usize = 100;

#[derive(Deserialize)]
struct CorpusDoc {
    #[serde(rename = "_id")]
    id: String,
    title: String,
    text: String,
}

#[derive(Deserialize)]
struct Query {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

/// Relevant corpus ids per query id (score > 0), from a BEIR qrels TSV.
fn read_qrels(path: &Path) -> anyhow::Result<HashMap<String, HashSet<String>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut qrels: HashMap<String, HashSet<String>> = HashMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.trim_end_matches('\r').split('\t').collect();
        let [query, doc, score] = fields[..] else {
            bail!("{}: bad qrels line {line:?}", path.display());
        };
        if score.trim().parse::<i32>()? > 0 {
            qrels
                .entry(query.to_owned())
                .or_default()
                .insert(doc.to_owned());
        }
    }
    Ok(qrels)
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("{}: bad line", path.display())))
        .collect()
}

/// nDCG@10 with binary gains and a log2 discount (as pytrec_eval's
/// `ndcg_cut_10` on 0/1 qrels).
fn ndcg_at_10(ranked: &[&str], relevant: &HashSet<String>) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .filter(|(_, id)| relevant.contains(**id))
        .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(10))
        .map(|i| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    if ideal == 0.0 { 0.0 } else { dcg / ideal }
}

fn recall_at_100(ranked: &[&str], relevant: &HashSet<String>) -> f64 {
    let found = ranked
        .iter()
        .take(100)
        .filter(|id| relevant.contains(**id))
        .count();
    found as f64 / relevant.len().max(1) as f64
}

/// Sums of one mode's figures over the queries.
#[derive(Default)]
struct Tally {
    ndcg: f64,
    recall: f64,
    search: Duration,
    queries: usize,
}

/// One search in a transaction of its own.
async fn search_once(
    pool: &sqlx::PgPool,
    config: &Config,
    caller: common::auth::Caller,
    search: &Search<'_>,
) -> anyhow::Result<Vec<retrieval::Hit>> {
    let mut access = Access::open(pool, caller, search.workspace)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hits = retrieval::search(
        &mut access.tx,
        pool,
        &config.query,
        config.embedding.dimensions,
        search,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    access.commit().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(hits)
}

/// The reranking study's tally over the queries.
#[derive(Default)]
struct Reranked {
    /// nDCG@10 of the fused candidates, and of the reranker's order.
    fused: f64,
    ndcg: f64,
    candidates: usize,
    took: Vec<Duration>,
}

impl Reranked {
    fn report(&self, name: &str, queries: usize, timeout: Duration) {
        let n = queries.max(1) as f64;
        let mut took = self.took.clone();
        took.sort();
        let at = |q: f64| {
            took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        println!(
            "\nreranker {name}: {:.1} candidates a query (hybrid, fused)",
            self.candidates as f64 / n
        );
        println!("| order | nDCG@10 |");
        println!("|---|---|");
        println!("| fused | {:.4} |", self.fused / n);
        println!("| reranked | {:.4} |", self.ndcg / n);
        println!(
            "reranker time per query: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; {} of {} over RERANK_TIMEOUT_MS ({} ms)",
            at(0.5),
            at(0.95),
            at(1.0),
            took.iter().filter(|d| **d > timeout).count(),
            took.len(),
            timeout.as_millis()
        );
    }
}

fn string_flag<'a>(args: &'a [String], name: &str) -> anyhow::Result<Option<&'a str>> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(Some(
            args.get(i + 1).context("flag needs a value")?.as_str(),
        )),
        None => Ok(None),
    }
}

/// The scratch database of one embedding provider, so a kept local run
/// and a kept real-embedder run can sit side by side for `--reuse`.
fn database(provider: EmbeddingProvider) -> &'static str {
    match provider {
        EmbeddingProvider::Local => "ragway_bench_scifact_local",
        EmbeddingProvider::OpenAi => "ragway_bench_scifact_openai",
        EmbeddingProvider::Bedrock => "ragway_bench_scifact_bedrock",
    }
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let data = match string_flag(args, "--data")? {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/scifact"),
    };
    let limit = flag(args, "--queries", usize::MAX)?;
    let keep = args.iter().any(|a| a == "--keep");
    let reuse = args.iter().any(|a| a == "--reuse");
    let folds = flag(args, "--folds", 0)?;
    let rerank = args.iter().any(|a| a == "--rerank");
    if folds == 1 {
        bail!("--folds needs at least 2 folds (or 0 for no fusion study)");
    }
    let config = Config::from_env().context("load the stack env first: . .local/test/env")?;
    // Questions go through `embed_query`, so EMBEDDING_QUERY_MODEL applies.
    let query_embedder = common::embed::build(&config.embedding, None)?;
    let reranker = if rerank {
        Some(
            common::rerank::build(&config.rerank, None)?
                .context("--rerank needs RERANK_PROVIDER (infra/stack/reranker.sh env)")?,
        )
    } else {
        None
    };

    let qrels = read_qrels(&data.join("qrels/train.tsv"))?;
    let queries: Vec<Query> = read_jsonl::<Query>(&data.join("queries.jsonl"))?
        .into_iter()
        .filter(|q| qrels.contains_key(&q.id))
        .take(limit)
        .collect();
    let mut corpus: Vec<CorpusDoc> = read_jsonl(&data.join("corpus.jsonl"))?;
    let full_corpus = corpus.len();
    if let Some(size) = string_flag(args, "--corpus")? {
        // A smaller haystack for slow embedders: the judged documents of
        // the queries asked, then the corpus in file order up to `size`.
        let size: usize = size.parse().context("--corpus takes a number")?;
        let judged: HashSet<&String> = queries.iter().flat_map(|q| &qrels[&q.id]).collect();
        let mut others = size.saturating_sub(judged.len());
        corpus.retain(|d| {
            judged.contains(&d.id)
                || (others > 0 && {
                    others -= 1;
                    true
                })
        });
    }
    let embedder_label = format!(
        "{:?} {} {}, {} documents",
        config.embedding.provider,
        config.embedding.model.as_deref().unwrap_or("-"),
        config.embedding.dimensions,
        corpus.len()
    );
    println!(
        "BEIR SciFact, train split (indicative only; published figures are test-split): {} documents, {} queries with judgements",
        corpus.len(),
        queries.len()
    );
    if corpus.len() < full_corpus {
        println!(
            "SUBSET: {} of {full_corpus} documents (every judged one kept): scores run higher than on the full corpus",
            corpus.len()
        );
    }
    println!(
        "embedder: {embedder_label}; queries embedded as model {:?}",
        config
            .embedding
            .query_model
            .as_deref()
            .or(config.embedding.model.as_deref())
            .unwrap_or("-")
    );

    let db = database(config.embedding.provider);
    let (pool, state, caller, workspace) = if reuse {
        let pool = open_pool(&config, db).await?;
        // A run kept under an older schema is brought up to date.
        common::db::MIGRATOR.run(&pool).await?;
        let state = State::with_pool(config.clone(), pool.clone())?;
        let (caller, workspace) = kept_workspace(&pool, &embedder_label).await?;
        println!("reusing the ingestion kept in {db}");
        (pool, state, caller, workspace)
    } else {
        let pool = scratch_pool(&config, db).await?;
        let state = State::with_pool(config.clone(), pool.clone())?;
        let (_, caller, workspace) = tenant(&state, &pool, &embedder_label).await?;
        ingest(&state, &pool, caller, workspace, &corpus).await?;
        (pool, state, caller, workspace)
    };
    // As the deployed stack has it within one ingest-indexer period: a
    // workspace above the exact-search size moves to the HNSW indexes.
    common::db::ensure_vector_index(
        &pool,
        config.embedding.dimensions,
        config.query.hnsw_ef_construction,
    )
    .await?;
    let report = run_indexer(&pool, &config).await?;
    println!(
        "ingest-indexer: {} workspaces moved to the HNSW indexes, own indexes built: {:?}",
        report.indexed.len(),
        report.created
    );
    if !report.indexed.is_empty() {
        // The steady state autovacuum reaches: the flagged rows' old
        // versions gone, index-only scans back.
        pool.execute("VACUUM ANALYZE chunks").await?;
    }

    // Document id → BEIR id.
    let mut tx = common::db::tenant_tx(&pool, Some(caller.user_id), Some(workspace)).await?;
    let beir: HashMap<DocumentId, String> = sqlx::query_as::<_, (DocumentId, String)>(
        "SELECT id, metadata->>'beir_id' FROM documents WHERE workspace_id = $1",
    )
    .bind(workspace)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let (chunks,): (i64,) = sqlx::query_as("SELECT count(*) FROM chunks WHERE workspace_id = $1")
        .bind(workspace)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    println!("{} documents, {chunks} chunks in the workspace", beir.len());

    let modes = [Mode::Keyword, Mode::Semantic, Mode::Hybrid];
    let mut tallies: Vec<Tally> = modes.iter().map(|_| Tally::default()).collect();
    let mut embed_time = Duration::ZERO;
    let mut index_recall = 0.0;
    let filters = Filters::default();
    let semantic_weight = config.query.semantic_weight(config.embedding.provider);
    // The fusion study's inputs: each query's legs at hybrid depth.
    let mut studied: Vec<StudiedQuery> = Vec::new();
    let mut beir_of_chunk: HashMap<ChunkId, String> = HashMap::new();
    let mut reranked = Reranked::default();
    for query in &queries {
        let started = Instant::now();
        let embedding = query_embedder.embed_query(&query.text).await?;
        embed_time += started.elapsed();
        let relevant = &qrels[&query.id];
        for (mode, tally) in modes.iter().zip(&mut tallies) {
            let started = Instant::now();
            let mut access = Access::open(&pool, caller, workspace)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let hits = retrieval::search(
                &mut access.tx,
                &pool,
                &config.query,
                config.embedding.dimensions,
                &Search {
                    workspace,
                    text: &query.text,
                    embedding: Some(&embedding),
                    mode: *mode,
                    top_k: TOP_K,
                    filters: &filters,
                    semantic_weight,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{mode:?} search: {e}"))?;
            tally.search += started.elapsed();
            if *mode == Mode::Semantic {
                // The index path against an exact scan: recall@10 on real vectors.
                let exact: Vec<(common::ids::ChunkId,)> = sqlx::query_as(
                    "SELECT id FROM chunks WHERE workspace_id = $1 ORDER BY embedding <=> $2, id LIMIT 10",
                )
                .bind(workspace)
                .bind(pgvector::Vector::from(embedding.clone()))
                .fetch_all(&mut *access.tx)
                .await?;
                let found = exact
                    .iter()
                    .filter(|(id,)| hits.iter().take(10).any(|h| h.chunk_id == *id))
                    .count();
                index_recall += found as f64 / exact.len().max(1) as f64;
            }
            access.commit().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            // A document ranks where its best chunk does.
            let mut seen = HashSet::new();
            let ranked: Vec<&str> = hits
                .iter()
                .filter(|h| seen.insert(h.document_id))
                .filter_map(|h| beir.get(&h.document_id).map(String::as_str))
                .collect();
            tally.ndcg += ndcg_at_10(&ranked, relevant);
            tally.recall += recall_at_100(&ranked, relevant);
            tally.queries += 1;
        }
        if let Some(reranker) = &reranker {
            // As the query route asks when reranking: the candidates, fused.
            let hits = search_once(
                &pool,
                &config,
                caller,
                &Search {
                    workspace,
                    text: &query.text,
                    embedding: Some(&embedding),
                    mode: Mode::Hybrid,
                    top_k: config.rerank.candidates,
                    filters: &filters,
                    semantic_weight,
                },
            )
            .await
            .context("rerank candidates")?;
            let texts: Vec<&str> = hits.iter().map(|h| h.content.as_str()).collect();
            let started = Instant::now();
            let ranking = reranker
                .rerank(&query.text, &texts)
                .await
                .map_err(|e| anyhow::anyhow!("rerank: {e}"))?;
            reranked.took.push(started.elapsed());
            let ranked = |order: &mut dyn Iterator<Item = &retrieval::Hit>| -> f64 {
                let mut seen = HashSet::new();
                let ranked: Vec<&str> = order
                    .filter(|h| seen.insert(h.document_id))
                    .filter_map(|h| beir.get(&h.document_id).map(String::as_str))
                    .collect();
                ndcg_at_10(&ranked, relevant)
            };
            reranked.fused += ranked(&mut hits.iter());
            reranked.ndcg += ranked(&mut ranking.iter().map(|(i, _)| &hits[*i]));
            reranked.candidates += hits.len();
        }
        if folds > 0 {
            let mut legs = Vec::new();
            for mode in [Mode::Semantic, Mode::Keyword] {
                // A leg alone at the depth hybrid asks of it, same scores.
                let hits = search_once(
                    &pool,
                    &config,
                    caller,
                    &Search {
                        workspace,
                        text: &query.text,
                        embedding: Some(&embedding),
                        mode,
                        top_k: retrieval::candidates(TOP_K) as usize,
                        filters: &filters,
                        semantic_weight,
                    },
                )
                .await
                .with_context(|| format!("{mode:?} leg"))?;
                for h in &hits {
                    if let Some(id) = beir.get(&h.document_id) {
                        beir_of_chunk.insert(h.chunk_id, id.clone());
                    }
                }
                legs.push(hits.iter().map(|h| (h.chunk_id, h.score)).collect());
            }
            let keyword = legs.pop().unwrap_or_default();
            let semantic = legs.pop().unwrap_or_default();
            studied.push(StudiedQuery {
                semantic,
                keyword,
                relevant: relevant.clone(),
            });
        }
    }

    let n = queries.len().max(1) as f64;
    println!();
    println!("| mode | nDCG@10 | recall@100 | mean search ms |");
    println!("|---|---|---|---|");
    for (mode, tally) in modes.iter().zip(&tallies) {
        println!(
            "| {} | {:.4} | {:.4} | {:.1} |",
            format!("{mode:?}").to_lowercase(),
            tally.ndcg / n,
            tally.recall / n,
            tally.search.as_secs_f64() * 1e3 / n
        );
    }
    println!(
        "\nmean query embedding: {:.1} ms (semantic and hybrid add it; not in the search column)",
        embed_time.as_secs_f64() * 1e3 / n
    );
    println!(
        "semantic recall@10 against an exact scan: {:.3} ({} chunks; exact search up to {})",
        index_recall / n,
        chunks,
        config.query.exact_search_max_chunks
    );

    if let Some(reranker) = &reranker {
        reranked.report(reranker.name(), queries.len(), config.rerank.timeout);
    }
    if folds > 0 {
        fusion_study::report(&studied, &beir_of_chunk, folds, semantic_weight);
    }

    drop(state);
    pool.close().await;
    if !keep && !reuse {
        drop_scratch(&config, db).await?;
    }
    Ok(())
}

/// The user and workspace of a kept run made with the same embedder.
async fn kept_workspace(
    pool: &sqlx::PgPool,
    embedder_label: &str,
) -> anyhow::Result<(common::auth::Caller, WorkspaceId)> {
    let (user,): (uuid::Uuid,) =
        sqlx::query_as("SELECT id FROM users WHERE email = 'bench@example.com'")
            .fetch_optional(pool)
            .await?
            .context("no kept run: run once with --keep")?;
    let mut tx = common::db::tenant_tx(pool, Some(user.into()), None).await?;
    let workspace: Option<(WorkspaceId,)> =
        sqlx::query_as("SELECT id FROM workspaces WHERE name = $1")
            .bind(embedder_label)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    let (workspace,) =
        workspace.with_context(|| format!("the kept run was not made with {embedder_label}"))?;
    Ok((common::auth::Caller::member(user.into()), workspace))
}

/// Creates every abstract as an inline document and runs the worker over
/// their change messages in SQS batches of 10, as the queue delivers them.
async fn ingest(
    state: &State,
    pool: &sqlx::PgPool,
    caller: common::auth::Caller,
    workspace: WorkspaceId,
    corpus: &[CorpusDoc],
) -> anyhow::Result<()> {
    let started = Instant::now();
    let limits = &state.config.documents;
    let mut created = futures::stream::iter(corpus.iter().map(|doc| async move {
        let access = Access::open(pool, caller, workspace).await?;
        let new = NewDocument {
            id: None,
            title: doc.title.clone(),
            content: format!("# {}\n\n{}", doc.title, doc.text).into(),
            content_type: Some("text/markdown".into()),
            metadata: Some(json!({ "beir_id": doc.id })),
        };
        let written = common::documents::create(access, new, limits).await?;
        Ok::<_, common::error::ApiError>(DocumentChanged {
            workspace_id: workspace,
            document_id: written.document.id,
            version: written.document.version,
        })
    }))
    .buffer_unordered(4);
    let mut messages = Vec::with_capacity(corpus.len());
    while let Some(changed) = created.next().await {
        messages.push(changed.map_err(|e| anyhow::anyhow!("creating a document: {e}"))?);
    }
    drop(created);
    let create_secs = started.elapsed().as_secs_f64();

    let worker = sqs_handler("ingest-worker")?;
    let records: Vec<_> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({ "messageId": format!("m{i}"), "body": m.to_message(),
                    "attributes": { "ApproximateReceiveCount": "1" } })
        })
        .collect();
    let started = Instant::now();
    let mut failed = 0;
    for batch in records.chunks(10) {
        let event: SqsEvent = serde_json::from_value(json!({ "Records": batch }))?;
        failed += worker(state, event).await.batch_item_failures.len();
    }
    let worker_secs = started.elapsed().as_secs_f64();
    let mut tx = common::db::tenant_tx(pool, Some(caller.user_id), Some(workspace)).await?;
    let (ready,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM documents WHERE workspace_id = $1 AND status = 'ready'",
    )
    .bind(workspace)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if failed > 0 || ready as usize != corpus.len() {
        bail!(
            "{failed} records failed, {ready} of {} documents ready",
            corpus.len()
        );
    }
    println!(
        "ingest: {} documents created in {create_secs:.1} s; worker (extract, chunk, embed, store) {worker_secs:.1} s = {:.1} documents/s",
        corpus.len(),
        corpus.len() as f64 / worker_secs
    );
    // Fresh statistics, as autovacuum would gather on a live table.
    sqlx::query("ANALYZE chunks").execute(pool).await?;
    Ok(())
}

/// One query of the fusion study: its legs at hybrid depth (chunk and the
/// leg's own score, best first) and the BEIR ids judged relevant.
struct StudiedQuery {
    semantic: Vec<(ChunkId, f64)>,
    keyword: Vec<(ChunkId, f64)>,
    relevant: HashSet<String>,
}

/// Candidate fusion rules compared offline on the legs of every query,
/// with honest selection: a rule's semantic weight (and threshold) is
/// chosen on K−1 folds of the queries (query i is in fold i mod K) and its
/// nDCG@10 is taken on the fold left out. The held-out columns are thus
/// not tuned on; the whole-split curves after them are for reading only.
mod fusion_study {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Rule {
        /// One leg alone, as `mode: keyword` / `semantic` would rank.
        Keyword,
        Semantic,
        /// `retrieval::fuse`, the shipped rule.
        Shipped,
        /// Scores mapped to 0..=1 over the leg's candidates; absent 0.
        MinMax,
        /// Standard scores over the leg's candidates; absent: the leg's
        /// lowest.
        ZScore,
        /// Reciprocal rank, 1/(60 + rank); absent 0.
        Rrf,
        /// Z-score, and a leg whose best standard score is below the
        /// threshold (nothing stands out) sits the query out, unless both do.
        Gated(f64),
        /// Z-score, and when the legs' top tens share fewer than this many
        /// chunks, the lighter-weighted leg sits the query out (at an even
        /// weight, neither).
        Agree(usize),
        /// The same with min-max scores.
        AgreeMinMax(usize),
    }

    #[derive(Clone, Copy, Debug)]
    struct Candidate {
        rule: Rule,
        weight: f64,
    }

    /// A candidate and its nDCG@10 per query.
    type Scored = (Candidate, Vec<f64>);

    const WEIGHTS: [f64; 21] = [
        0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75,
        0.8, 0.85, 0.9, 0.95, 1.0,
    ];
    const GATES: [f64; 3] = [3.0, 4.0, 5.0];
    const AGREEMENT: [usize; 5] = [1, 2, 3, 4, 5];

    /// A query's candidates numbered once (semantic list first, then the
    /// keyword one), so each rule's fusion is arithmetic on vectors.
    struct Prepared<'a> {
        query: &'a StudiedQuery,
        /// (candidate, the leg's score), best first.
        semantic: Vec<(usize, f64)>,
        keyword: Vec<(usize, f64)>,
        /// Per candidate: its document (numbered within the query) and
        /// whether that document is relevant.
        document: Vec<usize>,
        relevant: Vec<bool>,
        chunks: HashMap<ChunkId, usize>,
    }

    fn prepare<'a>(
        query: &'a StudiedQuery,
        beir_of_chunk: &HashMap<ChunkId, String>,
    ) -> Prepared<'a> {
        let mut chunks: HashMap<ChunkId, usize> = HashMap::new();
        let mut documents: HashMap<&str, usize> = HashMap::new();
        let mut document = Vec::new();
        let mut relevant = Vec::new();
        let mut number = |leg: &[(ChunkId, f64)]| -> Vec<(usize, f64)> {
            leg.iter()
                .map(|(id, score)| {
                    let next = chunks.len();
                    let n = *chunks.entry(*id).or_insert_with(|| {
                        let beir = beir_of_chunk.get(id).map(String::as_str).unwrap_or("");
                        let next_doc = documents.len();
                        document.push(*documents.entry(beir).or_insert(next_doc));
                        relevant.push(query.relevant.contains(beir));
                        next
                    });
                    (n, *score)
                })
                .collect()
        };
        let semantic = number(&query.semantic);
        let keyword = number(&query.keyword);
        Prepared {
            query,
            semantic,
            keyword,
            document,
            relevant,
            chunks,
        }
    }

    /// A leg's normalised score per candidate (`missing` where it has none).
    fn normalised(rule: Rule, leg: &[(usize, f64)], candidates: usize) -> Vec<f64> {
        let n = leg.len() as f64;
        let mut out;
        match rule {
            Rule::MinMax | Rule::AgreeMinMax(_) => {
                let (lo, hi) = leg
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, s)| {
                        (lo.min(*s), hi.max(*s))
                    });
                out = vec![0.0; candidates];
                for (i, s) in leg {
                    out[*i] = if hi > lo { (s - lo) / (hi - lo) } else { 1.0 };
                }
            }
            Rule::Rrf => {
                out = vec![0.0; candidates];
                for (rank, (i, _)) in leg.iter().enumerate() {
                    out[*i] = 1.0 / (61.0 + rank as f64);
                }
            }
            _ => {
                let mean = leg.iter().map(|(_, s)| s).sum::<f64>() / n.max(1.0);
                let sd =
                    (leg.iter().map(|(_, s)| (s - mean).powi(2)).sum::<f64>() / n.max(1.0)).sqrt();
                let z = |s: f64| if sd > 0.0 { (s - mean) / sd } else { 1.0 };
                let lowest = leg.iter().map(|(_, s)| z(*s)).fold(f64::INFINITY, f64::min);
                // Equal scores (or one) mark their chunks: 1 against 0.
                let floor = if sd > 0.0 && lowest.is_finite() {
                    lowest
                } else {
                    0.0
                };
                out = vec![floor; candidates];
                for (i, s) in leg {
                    out[*i] = z(*s);
                }
            }
        }
        out
    }

    /// The candidates `candidate` ranks first for `q`, best first.
    fn order(candidate: Candidate, q: &Prepared) -> Vec<usize> {
        let Candidate { rule, mut weight } = candidate;
        let ids = |leg: &[(usize, f64)]| leg.iter().take(TOP_K).map(|(i, _)| *i).collect();
        match rule {
            Rule::Keyword => return ids(&q.keyword),
            Rule::Semantic => return ids(&q.semantic),
            Rule::Shipped => {
                return retrieval::fuse(&q.query.semantic, &q.query.keyword, weight, TOP_K)
                    .into_iter()
                    .map(|(id, _)| q.chunks[&id])
                    .collect();
            }
            _ => {}
        }
        let candidates = q.document.len();
        let sem = normalised(rule, &q.semantic, candidates);
        let kw = normalised(rule, &q.keyword, candidates);
        if let Rule::Gated(threshold) = rule {
            let top = |leg: &[(usize, f64)], n: &[f64]| {
                leg.iter().map(|(i, _)| n[*i]).fold(f64::MIN, f64::max)
            };
            match (
                top(&q.semantic, &sem) >= threshold,
                top(&q.keyword, &kw) >= threshold,
            ) {
                (false, true) => weight = 0.0,
                (true, false) => weight = 1.0,
                _ => {}
            }
        }
        if let Rule::Agree(needed) | Rule::AgreeMinMax(needed) = rule {
            let top: Vec<usize> = q.semantic.iter().take(10).map(|(i, _)| *i).collect();
            let shared = q
                .keyword
                .iter()
                .take(10)
                .filter(|(i, _)| top.contains(i))
                .count();
            if shared < needed && weight != 0.5 {
                weight = if weight > 0.5 { 1.0 } else { 0.0 };
            }
        }
        let mut scores: Vec<(usize, f64)> = (0..candidates)
            .map(|i| (i, weight * sem[i] + (1.0 - weight) * kw[i]))
            .collect();
        // Stable: ties keep first appearance, semantic list first.
        scores.sort_by(|a, b| b.1.total_cmp(&a.1));
        scores.into_iter().take(TOP_K).map(|(i, _)| i).collect()
    }

    fn ndcg(candidate: Candidate, q: &Prepared) -> f64 {
        let mut seen = vec![false; q.document.len()];
        let mut dcg = 0.0;
        let mut rank = 0;
        for i in order(candidate, q) {
            let doc = q.document[i];
            if std::mem::replace(&mut seen[doc], true) {
                continue;
            }
            if q.relevant[i] {
                dcg += 1.0 / (rank as f64 + 2.0).log2();
            }
            rank += 1;
            if rank == 10 {
                break;
            }
        }
        let ideal: f64 = (0..q.query.relevant.len().min(10))
            .map(|i| 1.0 / (i as f64 + 2.0).log2())
            .sum();
        if ideal == 0.0 { 0.0 } else { dcg / ideal }
    }

    fn label(c: Candidate) -> String {
        match c.rule {
            Rule::Keyword => "keyword".into(),
            Rule::Semantic => "semantic".into(),
            Rule::Gated(t) => format!("w {:.2}, gate {t:.1}", c.weight),
            Rule::Agree(m) | Rule::AgreeMinMax(m) => format!("w {:.2}, agree {m}", c.weight),
            _ => format!("w {:.2}", c.weight),
        }
    }

    pub(super) fn report(
        queries: &[StudiedQuery],
        beir_of_chunk: &HashMap<ChunkId, String>,
        folds: usize,
        shipped_weight: f64,
    ) {
        let grid = |rule: Rule| -> Vec<Candidate> {
            WEIGHTS
                .iter()
                .map(|&weight| Candidate { rule, weight })
                .collect()
        };
        let gated: Vec<Candidate> = GATES.iter().flat_map(|&t| grid(Rule::Gated(t))).collect();
        let mut families: Vec<(String, Vec<Candidate>)> = vec![
            (
                "keyword".into(),
                vec![Candidate {
                    rule: Rule::Keyword,
                    weight: 0.0,
                }],
            ),
            (
                "semantic".into(),
                vec![Candidate {
                    rule: Rule::Semantic,
                    weight: 1.0,
                }],
            ),
            (
                "better leg".into(),
                vec![
                    Candidate {
                        rule: Rule::Keyword,
                        weight: 0.0,
                    },
                    Candidate {
                        rule: Rule::Semantic,
                        weight: 1.0,
                    },
                ],
            ),
            (
                format!("shipped, w {shipped_weight}"),
                vec![Candidate {
                    rule: Rule::Shipped,
                    weight: shipped_weight,
                }],
            ),
            ("shipped".into(), grid(Rule::Shipped)),
            ("min-max".into(), grid(Rule::MinMax)),
            ("z-score".into(), grid(Rule::ZScore)),
            ("rrf".into(), grid(Rule::Rrf)),
            ("z-score gated".into(), gated),
            (
                "z-score agree".into(),
                AGREEMENT
                    .iter()
                    .flat_map(|&m| grid(Rule::Agree(m)))
                    .collect(),
            ),
            (
                "min-max agree".into(),
                AGREEMENT
                    .iter()
                    .flat_map(|&m| grid(Rule::AgreeMinMax(m)))
                    .collect(),
            ),
        ];
        let any: Vec<Candidate> = families[5..].iter().flat_map(|(_, c)| c.clone()).collect();
        families.push(("any rule".into(), any));

        let prepared: Vec<Prepared> = queries.iter().map(|q| prepare(q, beir_of_chunk)).collect();
        // Per-query nDCG@10 of every distinct candidate.
        let mut cache: Vec<Scored> = Vec::new();
        let mut scores_of = |c: Candidate| -> Vec<f64> {
            if let Some((_, s)) = cache
                .iter()
                .find(|(k, _)| k.rule == c.rule && k.weight == c.weight)
            {
                return s.clone();
            }
            let s: Vec<f64> = prepared.iter().map(|q| ndcg(c, q)).collect();
            cache.push((c, s.clone()));
            s
        };
        let scored: Vec<(String, Vec<Scored>)> = families
            .iter()
            .map(|(name, cands)| {
                (
                    name.clone(),
                    cands.iter().map(|&c| (c, scores_of(c))).collect(),
                )
            })
            .collect();
        let mean = |s: &[f64], keep: &dyn Fn(usize) -> bool| -> f64 {
            let (sum, n) = s
                .iter()
                .enumerate()
                .filter(|(i, _)| keep(*i))
                .fold((0.0, 0usize), |(sum, n), (_, v)| (sum + v, n + 1));
            sum / n.max(1) as f64
        };

        println!(
            "\nFusion study: nDCG@10 on each held-out fold of {folds} (query i in fold i mod {folds}); \
             each rule's weight (and gate) chosen on the other folds, shown in brackets"
        );
        print!("| fold | queries |");
        for (name, _) in &scored {
            print!(" {name} |");
        }
        println!();
        println!("|{}", "---|".repeat(scored.len() + 2));
        let mut sums = vec![0.0; scored.len()];
        for fold in 0..folds {
            let held = |i: usize| i % folds == fold;
            let train = |i: usize| i % folds != fold;
            print!(
                "| {} | {} |",
                fold + 1,
                (0..queries.len()).filter(|i| held(*i)).count()
            );
            for ((_, cands), sum) in scored.iter().zip(&mut sums) {
                let best = cands
                    .iter()
                    .fold(None::<(&Candidate, &Vec<f64>, f64)>, |best, (c, s)| {
                        let m = mean(s, &train);
                        match best {
                            Some((_, _, bm)) if bm >= m => best,
                            _ => Some((c, s, m)),
                        }
                    })
                    .expect("a family has candidates");
                let held_out = mean(best.1, &held);
                *sum += held_out;
                if cands.len() > 1 {
                    print!(" {held_out:.4} ({}) |", label(*best.0));
                } else {
                    print!(" {held_out:.4} |");
                }
            }
            println!();
        }
        print!("| mean | {} |", queries.len());
        for sum in &sums {
            print!(" {:.4} |", sum / folds as f64);
        }
        println!();

        println!(
            "\nWhole train split (for reading, not a held-out figure): nDCG@10 by semantic weight"
        );
        print!("| rule |");
        for w in WEIGHTS {
            print!(" {w:.2} |");
        }
        println!();
        println!("|{}", "---|".repeat(WEIGHTS.len() + 1));
        let all = |_: usize| true;
        let mut rows: Vec<(String, Rule)> = vec![
            ("shipped".into(), Rule::Shipped),
            ("min-max".into(), Rule::MinMax),
            ("z-score".into(), Rule::ZScore),
            ("rrf".into(), Rule::Rrf),
        ];
        rows.extend(
            GATES
                .iter()
                .map(|&t| (format!("z-score gate {t:.1}"), Rule::Gated(t))),
        );
        rows.extend(
            AGREEMENT
                .iter()
                .map(|&m| (format!("z-score agree {m}"), Rule::Agree(m))),
        );
        rows.extend(
            AGREEMENT
                .iter()
                .map(|&m| (format!("min-max agree {m}"), Rule::AgreeMinMax(m))),
        );
        for (name, rule) in rows {
            print!("| {name} |");
            for weight in WEIGHTS {
                print!(
                    " {:.4} |",
                    mean(&scores_of(Candidate { rule, weight }), &all)
                );
            }
            println!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn ndcg_discounts_by_log2_of_rank() {
        let relevant = set(&["a", "b"]);
        assert!((ndcg_at_10(&["a", "b", "x"], &relevant) - 1.0).abs() < 1e-12);
        // One of two relevant at rank 2: (1/log2 3) / (1 + 1/log2 3).
        let expected = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at_10(&["x", "a"], &relevant) - expected).abs() < 1e-12);
        let eleventh: Vec<&str> = std::iter::repeat_n("x", 10).chain(["a"]).collect();
        assert_eq!(ndcg_at_10(&eleventh, &relevant), 0.0);
    }

    #[test]
    fn recall_counts_the_first_hundred() {
        let relevant = set(&["a", "b"]);
        assert_eq!(recall_at_100(&["a", "x"], &relevant), 0.5);
    }
}
