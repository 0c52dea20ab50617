//! `ragway-bench import`: a JSONL corpus imported into a new workspace as
//! a user does it: `POST .../imports` through its handler, the file PUT to
//! the bucket, and the ingest-worker handler fed from the stack's real
//! queue (the S3 notification, then the job's own steps) until every
//! document is `ready`; then a raw COPY of the same chunk rows into an
//! identically indexed table, the yardstick for storing them.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use common::aws_lambda_events::sqs::SqsEvent;
use common::config::Config;
use common::ingest::events::import_key_of;
use common::state::State;
use serde_json::{Value, json};

use super::ingest::{CpuClock, delete_objects, peak_rss_mib, prose, raw_copy};
use super::{drop_scratch, event_request, flag, http_handler, scratch_pool, sqs_handler, tenant};

const DB: &str = "ragway_bench_import";

pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let docs = flag(args, "--docs", 10_000)?;
    // About 3.8 chunks of 400 tokens a document, as the corpus.
    let chars = flag(args, "--chars", 7_500)?;
    let keep = args.iter().any(|a| a == "--keep");
    let config = Config::from_env().context("load the stack env first: . .local/test/env")?;
    let queue = config
        .ingest_queue_url
        .clone()
        .context("INGEST_QUEUE_URL is not set")?;
    let bucket = config
        .bucket_name
        .clone()
        .context("BUCKET_NAME is not set")?;
    let pool = scratch_pool(&config, DB).await?;
    let state = State::with_pool(config.clone(), pool.clone())?;
    let (token, _, workspace) = tenant(&state, &pool, "Imported").await?;

    let mut file = Vec::with_capacity(docs * (chars + 200));
    for i in 0..docs {
        let line = json!({
            "client_id": format!("doc-{i}"),
            "title": format!("Report {i}"),
            "content": prose(i, chars),
            "metadata": { "n": i, "shelf": i % 17 },
        });
        serde_json::to_writer(&mut file, &line)?;
        file.push(b'\n');
    }
    println!(
        "corpus: {docs} documents as JSONL, {:.1} MB",
        file.len() as f64 / 1e6
    );

    let sqs = state.sqs().await;
    let s3 = state.s3().await;
    // Whatever earlier runs left in the stack's queue is not ours.
    let _ = sqs.purge_queue().queue_url(&queue).send().await;

    let cpu = CpuClock::start()?;
    let started = Instant::now();
    let (key, uploaded, worker_secs) = import_file(
        &state, &pool, &token, workspace, &bucket, &queue, file, started,
    )
    .await?;
    let total = started.elapsed().as_secs_f64();
    let cpu = cpu.stop()?;

    let mut tx = common::db::tenant_tx(&pool, None, Some(workspace)).await?;
    let (chunks, ready): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM chunks),
                (SELECT count(*) FROM documents WHERE status = 'ready' AND deleted_at IS NULL)",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if ready as usize != docs {
        bail!("{ready} of {docs} documents ready");
    }
    let rate = chunks as f64 / total;
    println!(
        "import: {docs} documents, {chunks} chunks in {total:.1} s from the first byte of the upload to the last document ready = {rate:.0} chunks/s, {:.0} documents/s",
        docs as f64 / total
    );
    println!(
        "  upload (PUT of the file) {uploaded:.1} s; worker handler {worker_secs:.1} s; queue and the rest {:.1} s",
        total - uploaded - worker_secs
    );
    println!(
        "  CPU seconds meanwhile: bench + worker {:.1}, Postgres {:.1}, S3/SQS emulator {:.1} (2 cores: {:.1} available)",
        cpu.own,
        cpu.postgres,
        cpu.emulator,
        2.0 * total
    );
    let (copied, copy_secs) = raw_copy(&pool, workspace).await?;
    let copy_rate = copied as f64 / copy_secs;
    println!(
        "raw COPY: {copied} rows in {copy_secs:.1} s = {copy_rate:.0} chunks/s; import / COPY = {:.2}",
        rate / copy_rate
    );
    println!(
        "peak RSS of this process (worker + benchmark): {:.0} MiB",
        peak_rss_mib()
    );
    delete_objects(s3, &bucket, std::iter::once(key.as_str())).await?;
    pool.close().await;
    if !keep {
        drop_scratch(&config, DB).await?;
    }
    Ok(())
}

/// Imports `file` as a member does (`POST .../imports` through its
/// handler, the PUT, the worker fed from the queue) until every document
/// is ready: the file's key, and the seconds from `started` to the end
/// of the upload and spent in the worker's handler.
#[allow(clippy::too_many_arguments)]
pub(super) async fn import_file(
    state: &State,
    pool: &sqlx::PgPool,
    token: &str,
    workspace: common::ids::WorkspaceId,
    bucket: &str,
    queue: &str,
    file: Vec<u8>,
    started: Instant,
) -> anyhow::Result<(String, f64, f64)> {
    let path = format!("/workspaces/{workspace}/imports");
    let reply = http_handler("jobs-import")?(
        state,
        event_request(
            "POST",
            "POST /workspaces/{workspace_id}/imports",
            &path,
            &[("workspace_id", &workspace.to_string())],
            token,
            Some(&json!({ "size": file.len(), "filename": "corpus.jsonl" })),
        ),
    )
    .await;
    let job: Value = serde_json::from_slice(reply.body())?;
    if reply.status() != 201 {
        bail!("jobs-import answered {}: {job}", reply.status());
    }
    let job_id: common::ids::JobId = serde_json::from_value(job["id"].clone())?;
    let key = import_key_of(workspace, job_id);
    state
        .s3()
        .await
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type(common::jobs::JSONL_TYPE)
        .body(file.into())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_s3::error::DisplayErrorContext(e)))?;
    let uploaded = started.elapsed().as_secs_f64();
    let worker_secs = feed_worker(state, queue, || async {
        let (status, unready) = progress(pool, workspace, job_id).await?;
        if status != "running" && status != "queued" && status != "awaiting_upload" && unready == 0
        {
            if status != "succeeded" {
                bail!("the import ended {status}");
            }
            return Ok(true);
        }
        Ok(false)
    })
    .await?;
    Ok((key, uploaded, worker_secs))
}

/// Feeds the ingest-worker handler from the stack's queue as Lambda
/// does (batches of up to 10, failures left for redelivery, the rest
/// deleted) until `finished` says so; the seconds spent in the handler.
/// Fails after a minute with nothing queued and not finished.
pub(super) async fn feed_worker<F, Fut>(
    state: &State,
    queue: &str,
    mut finished: F,
) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let sqs = state.sqs().await;
    let worker = sqs_handler("ingest-worker")?;
    let mut worker_secs = 0.0;
    let mut idle_since = Instant::now();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await?;
        let messages = received.messages.unwrap_or_default();
        if !messages.is_empty() {
            idle_since = Instant::now();
            let records: Vec<Value> = messages
                .iter()
                .map(|m| {
                    let receives = m
                        .attributes
                        .as_ref()
                        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                        .cloned()
                        .unwrap_or_else(|| "1".into());
                    json!({
                        "messageId": m.message_id,
                        "receiptHandle": m.receipt_handle,
                        "body": m.body,
                        "attributes": { "ApproximateReceiveCount": receives },
                    })
                })
                .collect();
            let event: SqsEvent = serde_json::from_value(json!({ "Records": records }))?;
            let handled = Instant::now();
            let failures = worker(state, event).await.batch_item_failures;
            worker_secs += handled.elapsed().as_secs_f64();
            for m in &messages {
                if failures
                    .iter()
                    .any(|f| Some(&f.item_identifier) == m.message_id.as_ref())
                {
                    continue;
                }
                if let Some(handle) = &m.receipt_handle {
                    sqs.delete_message()
                        .queue_url(queue)
                        .receipt_handle(handle)
                        .send()
                        .await?;
                }
            }
        }
        if finished().await? {
            return Ok(worker_secs);
        }
        if idle_since.elapsed() > Duration::from_secs(60) {
            bail!("nothing queued for a minute and not finished");
        }
    }
}

/// The job's status and how many of the workspace's documents are not
/// yet `ready`.
pub(super) async fn progress(
    pool: &sqlx::PgPool,
    workspace: common::ids::WorkspaceId,
    job: common::ids::JobId,
) -> anyhow::Result<(String, i64)> {
    let mut tx = common::db::tenant_tx(pool, None, Some(workspace)).await?;
    let row = sqlx::query_as(
        "SELECT (SELECT status FROM jobs WHERE id = $1),
                (SELECT count(*) FROM documents WHERE status <> 'ready' AND deleted_at IS NULL)",
    )
    .bind(job)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}
