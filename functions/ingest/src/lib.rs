//! The ingest functions: the queue consumer (`ingest-worker`, whose
//! engine is `common::ingest::worker`, and which runs the steps of
//! workspace jobs, `common::jobs::run`) and the schedules that keep
//! ingestion whole (`ingest-requeue`) and the vector indexes in shape
//! (`ingest-indexer`).

use common::aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use common::ingest::store;
use common::ingest::worker::Message;
use common::jobs::run::ingest_queue_batch;
use common::lambda::Function;
use common::state::State;

pub const FUNCTIONS: &[Function] = &[
    common::sqs_function!("ingest-worker", worker),
    common::schedule_function!("ingest-indexer", indexer),
    common::schedule_function!("ingest-requeue", requeue),
];

/// Documents pending this long after their last write were never queued.
const REQUEUE_AFTER: std::time::Duration = std::time::Duration::from_secs(300);
/// Most documents one requeue run sends.
const REQUEUE_BATCH: i32 = 1_000;

/// A document whose lease lapsed this long ago is past any redelivery of
/// its message (visibility timeout 12 minutes, lease 10).
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(1800);

/// Scheduled: queues again the inline documents whose change message was
/// never sent (the queue failed after the document was stored) and the
/// uploads whose object's notification was lost, and fails those whose
/// ingestion never finished ([`store::fail_abandoned`]).
pub async fn requeue(state: &State, _event: serde_json::Value) -> common::Result<()> {
    let queue = state
        .ingest_queue()
        .await
        .map_err(common::ApiError::Internal)?;
    let queued = common::ingest::requeue_stale(&state.db, queue, REQUEUE_AFTER, REQUEUE_BATCH)
        .await
        .map_err(common::ApiError::Internal)?;
    if queued > 0 {
        tracing::warn!(queued, "documents stored but never queued, queued again");
    }
    let failed = store::fail_abandoned(&state.db, ABANDONED_AFTER, REQUEUE_BATCH)
        .await
        .map_err(common::ApiError::Internal)?;
    if failed > 0 {
        tracing::warn!(failed, "documents whose ingestion never finished, failed");
    }
    let bucket = state.bucket().await.map_err(common::ApiError::Internal)?;
    let queued = common::ingest::requeue_stale_uploads(
        &state.db,
        bucket,
        queue,
        REQUEUE_AFTER,
        REQUEUE_BATCH,
    )
    .await
    .map_err(common::ApiError::Internal)?;
    if queued > 0 {
        tracing::warn!(
            queued,
            "uploads whose object's notification was lost, queued again"
        );
    }
    Ok(())
}

/// The indexer starts no index build after this long (a build already
/// under way finishes; the function's timeout is 15 minutes).
const INDEXER_BUDGET: std::time::Duration = std::time::Duration::from_secs(300);

/// Scheduled: moves workspaces above the exact-search size into the HNSW
/// indexes and those below half of it out, builds the largest ones' own
/// vector indexes and drops those no longer wanted
/// (`common::retrieval::indexes`).
pub async fn indexer(state: &State, _event: serde_json::Value) -> common::Result<()> {
    let query = &state.config.query;
    let report = common::retrieval::indexes::maintain(
        &state.db,
        state.config.embedding.dimensions,
        query.hnsw_ef_construction,
        query.exact_search_max_chunks,
        query.dedicated_indexes_max,
        INDEXER_BUDGET,
    )
    .await?;
    tracing::info!(
        indexed = ?report.indexed,
        unindexed = ?report.unindexed,
        created = ?report.created,
        dropped = ?report.dropped,
        counted = ?report.counted,
        pending = report.pending,
        busy = report.busy,
        "vector indexes maintained"
    );
    Ok(())
}

/// Handles one SQS batch: the records the engine could not finish are
/// listed in `batchItemFailures`, so SQS delivers them again.
pub async fn worker(state: &State, event: SqsEvent) -> SqsBatchResponse {
    let messages: Vec<Message> = event
        .records
        .into_iter()
        .map(|record| Message {
            receives: record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
            id: record.message_id.unwrap_or_default(),
            body: record.body.unwrap_or_default(),
        })
        .collect();
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = ingest_queue_batch(state, messages)
        .await
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}
