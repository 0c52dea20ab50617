//! `ragway-bench ingest`: a mixed corpus uploaded to the bucket, ingested
//! through the worker handler (S3 GET, extraction, chunking, local
//! embeddings, one-transaction chunk replacement with the HNSW and GIN
//! indexes in place), next to a raw COPY of the same chunk rows into an
//! identically indexed table in the same run. Three workspaces: one whose
//! chunks go into the shared HNSW index, one with an index of its own,
//! and a small one searched exactly (no HNSW insert).

use std::time::Instant;

use anyhow::{Context, bail};
use common::aws_lambda_events::sqs::SqsEvent;
use common::config::Config;
use common::state::State;
use extraction::chunk::{ChunkSpec, Chunker};
use extraction::extract::{self, Format};
use futures::StreamExt;
use serde_json::json;
use sqlx::Executor;

use super::{create_workspace, drop_scratch, flag, scratch_pool, sqs_handler, tenant};

const DB: &str = "ragway_bench_ingest";

const WORDS: &[&str] = &[
    "vaccine",
    "trial",
    "protein",
    "immune",
    "response",
    "climate",
    "model",
    "ocean",
    "temperature",
    "budget",
    "design",
    "review",
    "patients",
    "dose",
    "efficacy",
    "cells",
    "receptor",
    "binding",
    "signal",
    "pathway",
    "energy",
    "carbon",
    "policy",
    "market",
    "growth",
    "study",
    "results",
    "methods",
    "analysis",
    "sample",
    "control",
    "group",
];

/// Deterministic sentence-ish text of about `chars` characters.
pub(super) fn prose(seed: usize, chars: usize) -> String {
    let mut out = String::with_capacity(chars + 64);
    let mut x = (seed as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while out.len() < chars {
        for i in 0..12 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let word = WORDS[(x >> 33) as usize % WORDS.len()];
            if i == 0 {
                let mut c = word.chars();
                out.extend(c.next().map(|f| f.to_ascii_uppercase()));
                out.push_str(c.as_str());
            } else {
                out.push(' ');
                out.push_str(word);
            }
        }
        out.push_str(". ");
        if x.is_multiple_of(5) {
            out.push('\n');
        }
    }
    out
}

/// One document of the corpus: (file name, content type, bytes).
fn document(i: usize) -> (String, &'static str, Vec<u8>) {
    let body = prose(i, 2_000);
    match i % 5 {
        0 => (format!("notes-{i}.txt"), "text/plain", body.into_bytes()),
        1 => (
            format!("guide-{i}.md"),
            "text/markdown",
            format!("# Guide {i}\n\n## Background\n\n{}\n\n## Methods\n\n{}", &body[..1000], &body[1000..]).into_bytes(),
        ),
        2 => (
            format!("page-{i}.html"),
            "text/html",
            format!("<html><head><style>p{{}}</style></head><body><h1>Report {i}</h1><p>{}</p><h2>Results</h2><p>{}</p></body></html>", &body[..1000], &body[1000..]).into_bytes(),
        ),
        3 => {
            let mut csv = String::from("site,group,notes\n");
            for (n, sentence) in body.split(". ").enumerate() {
                csv.push_str(&format!("site-{n},{},\"{}\"\n", n % 3, sentence.replace('"', "")));
            }
            (format!("table-{i}.csv"), "text/csv", csv.into_bytes())
        }
        _ => {
            let items: Vec<_> = body
                .split(". ")
                .enumerate()
                .map(|(n, s)| json!({ "id": n, "finding": s }))
                .collect();
            (
                format!("data-{i}.json"),
                "application/json",
                serde_json::to_vec(&json!({ "study": i, "findings": items }))
                    .expect("JSON values serialize"),
            )
        }
    }
}

pub(super) fn peak_rss_mib() -> f64 {
    vm_hwm_mib("self").unwrap_or(0.0)
}

fn vm_hwm_mib(pid: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
}

/// Peak RSS of each live child of this process (the worker keeps its
/// extraction children between files).
fn children_peak_rss_mib() -> Vec<f64> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let parent = status.lines().find(|l| l.starts_with("PPid:"))?;
            (parent.split_whitespace().nth(1)? == me).then(|| vm_hwm_mib(&pid.to_string()))?
        })
        .collect()
}

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let docs = flag(args, "--docs", 2_000)?;
    let batch = flag(args, "--batch", template_batch_size("ingest-worker")?)?.max(1);
    let keep = args.iter().any(|a| a == "--keep");
    let config = Config::from_env().context("load the stack env first: . .local/test/env")?;
    let pool = scratch_pool(&config, DB).await?;
    common::db::ensure_vector_index(
        &pool,
        config.embedding.dimensions,
        config.query.hnsw_ef_construction,
    )
    .await?;
    let state = State::with_pool(config.clone(), pool.clone())?;
    let (_, caller, indexed) = tenant(&state, &pool, "Indexed").await?;
    let small = create_workspace(&pool, caller, "Small").await?;
    let own = create_workspace(&pool, caller, "Own").await?;
    // Workspaces already above VECTOR_EXACT_SEARCH_MAX_CHUNKS, as the
    // ingest-indexer leaves them: the chunks of one go into the shared HNSW
    // index, those of the other (among the largest) into its own alone.
    for (workspace, own_index) in [(indexed, false), (own, true)] {
        let mut tx = common::db::tenant_tx(&pool, Some(caller.user_id), Some(workspace)).await?;
        sqlx::query("UPDATE workspaces SET vector_indexed = true, vector_own = $2 WHERE id = $1")
            .bind(workspace)
            .bind(own_index)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    let dimensions = config.embedding.dimensions;
    sqlx::raw_sql(sqlx::AssertSqlSafe(common::db::vector_index_sql(
        &common::retrieval::indexes::index_name(own, dimensions),
        dimensions,
        config.query.hnsw_ef_construction,
        Some(own),
    )))
    .execute(&pool)
    .await?;

    let corpus: Vec<_> = (0..docs).map(document).collect();
    let total_bytes: usize = corpus.iter().map(|(_, _, b)| b.len()).sum();

    // Extraction and chunking alone (one core).
    let chunker = Chunker::new(ChunkSpec {
        max_tokens: config.ingest.chunk_tokens,
        overlap_tokens: config.ingest.chunk_overlap_tokens,
    })?;
    let started = Instant::now();
    let mut pure_chunks = 0;
    let mut tokens = 0usize;
    for (_, content_type, bytes) in &corpus {
        let format = Format::from_content_type(content_type).context("format")?;
        let chunks = chunker.chunk(&extract::extract(bytes, format)?);
        tokens += chunks.iter().map(|c| c.token_count as usize).sum::<usize>();
        pure_chunks += chunks.len();
    }
    let pure = started.elapsed().as_secs_f64();
    println!(
        "corpus: {docs} documents (txt, md, html, csv, json), {:.1} MB, {pure_chunks} chunks, {tokens} tokens",
        total_bytes as f64 / 1e6
    );
    println!(
        "extraction + chunking: {:.1} MB/s ({:.0} chunks/s) on one core",
        total_bytes as f64 / 1e6 / pure,
        pure_chunks as f64 / pure
    );

    for (label, workspace) in [
        ("indexed workspace (HNSW insert per chunk)", indexed),
        (
            "workspace with its own index (HNSW insert into it alone)",
            own,
        ),
        ("small workspace (searched exactly: no HNSW insert)", small),
    ] {
        println!("-- {label}");
        pass(
            &state,
            &pool,
            caller,
            workspace,
            &corpus,
            total_bytes,
            batch,
        )
        .await?;
    }
    let children = children_peak_rss_mib();
    println!(
        "peak RSS of this process (worker + benchmark): {:.0} MiB; its extraction children: {} (sum {:.0} MiB)",
        peak_rss_mib(),
        children
            .iter()
            .map(|c| format!("{c:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        children.iter().sum::<f64>()
    );
    pool.close().await;
    if !keep {
        drop_scratch(&config, DB).await?;
    }
    Ok(())
}

/// The SQS `BatchSize` template.yaml gives `binary`'s queue event.
fn template_batch_size(binary: &str) -> anyhow::Result<usize> {
    let functions = ragway_gateway::template::load("template.yaml".as_ref())?;
    functions
        .iter()
        .filter(|f| f.binary == binary)
        .flat_map(|f| &f.events)
        .find_map(|event| match event {
            ragway_gateway::template::TemplateEvent::Sqs { batch_size, .. } => Some(*batch_size),
            _ => None,
        })
        .with_context(|| format!("template.yaml gives {binary} no SQS event"))
}

/// The corpus put in the bucket as `workspace`'s pending uploads, ingested
/// through the worker handler, then the same chunk rows COPYed raw into an
/// identically indexed table (same insert trigger, same workspace context).
async fn pass(
    state: &State,
    pool: &sqlx::PgPool,
    caller: common::auth::Caller,
    workspace: common::ids::WorkspaceId,
    corpus: &[(String, &'static str, Vec<u8>)],
    total_bytes: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let config = &state.config;
    let bucket = config
        .bucket_name
        .clone()
        .context("BUCKET_NAME is not set")?;
    let mut rows = Vec::new();
    let mut tx = common::db::tenant_tx(pool, Some(caller.user_id), Some(workspace)).await?;
    for (name, content_type, bytes) in corpus {
        let id = uuid::Uuid::now_v7();
        let key = format!("workspaces/{workspace}/documents/{id}/{name}");
        sqlx::query(
            "INSERT INTO documents (id, workspace_id, title, source, content_type, size, s3_key,
                 content_sha256, etag, version, metadata, created_by, updated_by, file_name)
             VALUES ($1, $2, $3, 'upload', $4, $5, $6, '', md5($6), 1, '{}', $7, $7, $3)",
        )
        .bind(id)
        .bind(workspace)
        .bind(name)
        .bind(content_type)
        .bind(bytes.len() as i64)
        .bind(&key)
        .bind(caller.user_id)
        .execute(&mut *tx)
        .await?;
        rows.push((key, bytes.clone()));
    }
    tx.commit().await?;
    let s3 = state.s3().await;
    let mut puts = futures::stream::iter(rows.iter().map(|(key, bytes)| {
        s3.put_object()
            .bucket(&bucket)
            .key(key)
            .body(bytes.clone().into())
            .send()
    }))
    .buffer_unordered(8);
    while let Some(put) = puts.next().await {
        put?;
    }
    drop(puts);
    // The ingest queue is the stack's; the benchmark hands events to the
    // worker directly, so drop the notifications S3 queued for these puts.
    if let Some(queue) = &config.ingest_queue_url {
        let _ = state
            .sqs()
            .await
            .purge_queue()
            .queue_url(queue)
            .send()
            .await;
    }

    // Through the worker handler, in SQS batches of `batch` S3
    // notifications (template.yaml's BatchSize unless --batch says).
    let worker = sqs_handler("ingest-worker")?;
    let records: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, (key, bytes))| {
            let body = json!({ "Records": [{
                "eventName": "ObjectCreated:Put",
                "s3": { "bucket": { "name": bucket },
                        "object": { "key": key, "size": bytes.len(), "sequencer": format!("{:016X}", i + 1) } }
            }]});
            json!({ "messageId": format!("m{i}"), "body": body.to_string(), "attributes": { "ApproximateReceiveCount": "1" } })
        })
        .collect();
    let cpu = CpuClock::start()?;
    let started = Instant::now();
    let mut failed = 0;
    for records in records.chunks(batch) {
        let event: SqsEvent = serde_json::from_value(json!({ "Records": records }))?;
        failed += worker(state, event).await.batch_item_failures.len();
    }
    let worker_secs = started.elapsed().as_secs_f64();
    let cpu = cpu.stop()?;
    let mut tx = common::db::tenant_tx(pool, None, Some(workspace)).await?;
    let (chunks, ready, in_index): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM chunks), (SELECT count(*) FROM documents WHERE status = 'ready'),
                (SELECT count(*) FROM chunks WHERE vector_indexed)",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if failed > 0 || ready as usize != corpus.len() {
        bail!(
            "{failed} records failed, {ready} of {} documents ready",
            corpus.len()
        );
    }
    let worker_rate = chunks as f64 / worker_secs;
    println!(
        "worker handler: {chunks} chunks ({in_index} into the shared HNSW index) in {worker_secs:.1} s = {worker_rate:.0} chunks/s, {:.2} MB/s (S3 GET, extract, chunk, embed {} dims, store)",
        total_bytes as f64 / 1e6 / worker_secs,
        config.embedding.dimensions
    );
    println!(
        "  CPU seconds meanwhile: worker process (with its extraction children) {:.1}, Postgres {:.1}, S3 emulator {:.1} (2 cores: {:.1} available)",
        cpu.own,
        cpu.postgres,
        cpu.emulator,
        2.0 * worker_secs
    );

    let (copied, copy_secs) = raw_copy(pool, workspace).await?;
    let copy_rate = copied as f64 / copy_secs;
    println!(
        "raw COPY: {copied} rows in {copy_secs:.1} s = {copy_rate:.0} chunks/s; worker / COPY = {:.2}",
        worker_rate / copy_rate
    );
    delete_objects(s3, &bucket, rows.iter().map(|(key, _)| key.as_str())).await
}

/// The workspace's chunk rows COPYed raw into a table with the same
/// indexes and insert trigger, in the workspace's context (the trigger
/// reads its flag): rows and seconds, the yardstick for storing them.
pub(super) async fn raw_copy(
    pool: &sqlx::PgPool,
    workspace: common::ids::WorkspaceId,
) -> anyhow::Result<(u64, f64)> {
    let mut tx = common::db::tenant_tx(pool, None, Some(workspace)).await?;
    let mut copy_text = Vec::new();
    {
        let mut out = tx
            .copy_out_raw(
                "COPY (SELECT id, workspace_id, document_id, ordinal, content, token_count, page, heading, embedding FROM chunks) TO STDOUT",
            )
            .await?;
        while let Some(bytes) = out.next().await {
            copy_text.extend_from_slice(&bytes?);
        }
    }
    tx.commit().await?;
    let table = format!("bench_copy_{}", workspace.0.simple());
    pool.execute(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (LIKE chunks INCLUDING DEFAULTS INCLUDING INDEXES); \
         CREATE TRIGGER chunks_before_write BEFORE INSERT ON {table} \
             FOR EACH ROW EXECUTE FUNCTION chunks_before_write()"
    )))
    .await?;
    let mut tx = common::db::chunk_writer_tx(pool, workspace).await?;
    let started = Instant::now();
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY {table} (id, workspace_id, document_id, ordinal, content, token_count, page, heading, embedding) FROM STDIN"
        ))
        .await?;
    copy.send(copy_text).await?;
    let copied = copy.finish().await?;
    tx.commit().await?;
    Ok((copied, started.elapsed().as_secs_f64()))
}

/// Empties the bucket of this pass's objects: the emulator keeps every
/// object in memory, and its GETs grow slower as the bucket grows.
pub(super) async fn delete_objects<'a>(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    keys: impl Iterator<Item = &'a str>,
) -> anyhow::Result<()> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let keys: Vec<&str> = keys.collect();
    for batch in keys.chunks(1000) {
        let objects = batch
            .iter()
            .map(|key| ObjectIdentifier::builder().key(*key).build())
            .collect::<Result<Vec<_>, _>>()?;
        s3.delete_objects()
            .bucket(bucket)
            .delete(Delete::builder().set_objects(Some(objects)).build()?)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e)))?;
    }
    Ok(())
}

/// CPU seconds used by this process, by Postgres (every `postgres`
/// process, and the backends it reaped) and by the S3 emulator (moto):
/// on a 2-core machine the three share the cores, so the wall-clock rate
/// alone does not say whose time it was. From /proc (USER_HZ = 100).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuTimes {
    pub(super) own: f64,
    pub(super) postgres: f64,
    pub(super) emulator: f64,
}

pub(super) struct CpuClock(CpuTimes);

impl CpuClock {
    pub(super) fn start() -> anyhow::Result<Self> {
        Ok(Self(cpu_times()?))
    }

    pub(super) fn stop(self) -> anyhow::Result<CpuTimes> {
        let end = cpu_times()?;
        Ok(CpuTimes {
            own: end.own - self.0.own,
            postgres: end.postgres - self.0.postgres,
            emulator: end.emulator - self.0.emulator,
        })
    }
}

fn cpu_times() -> anyhow::Result<CpuTimes> {
    let mut times = CpuTimes::default();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ...`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // utime, stime, cutime, cstime: fields 14 to 17 of proc(5).
        let ticks: f64 = (11..15)
            .filter_map(|i| fields.get(i)?.parse::<f64>().ok())
            .sum();
        let secs = ticks / 100.0;
        // Field 4, the parent: the worker's extraction children count as
        // the worker.
        let parent = fields.get(1).and_then(|p| p.parse::<u32>().ok());
        match &stat[open + 1..close] {
            _ if pid == std::process::id() || parent == Some(std::process::id()) => {
                times.own += secs
            }
            "postgres" => times.postgres += secs,
            comm if comm.starts_with("moto") || comm == "s3s-fs" => times.emulator += secs,
            _ => {}
        }
    }
    Ok(times)
}
