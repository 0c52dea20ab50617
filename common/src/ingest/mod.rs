//! Ingestion's shared half: the ingest queue's messages (S3 event
//! notifications, parsed leniently so moto's trimmed events parse as well
//! as real ones, and our own document-changed messages), queueing a
//! document, and the worker's SQL. The worker itself is functions/ingest.

pub mod events;
pub mod store;

use crate::state::State;
use events::DocumentChanged;

/// Queues `changed` for ingestion. The document is already stored (status
/// pending); a failure here is logged and returned, and the caller decides
/// whether the request fails.
pub async fn enqueue(state: &State, changed: &DocumentChanged) -> anyhow::Result<()> {
    let Some(queue_url) = &state.config.ingest_queue_url else {
        anyhow::bail!(
            "INGEST_QUEUE_URL is not set; document {} not queued",
            changed.document_id
        );
    };
    state
        .sqs()
        .await
        .send_message()
        .queue_url(queue_url)
        .message_body(changed.to_message())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    Ok(())
}

/// Queues again the inline documents still `pending` `older_than` after
/// their last write (their first message was never sent: see migration
/// 20261123000007), at most `limit`, oldest first. Returns how many were
/// queued. A document queued twice is ingested once.
pub async fn requeue_stale(
    state: &State,
    older_than: std::time::Duration,
    limit: i32,
) -> anyhow::Result<usize> {
    let stale: Vec<(crate::ids::WorkspaceId, crate::ids::DocumentId, i32)> = sqlx::query_as(
        "SELECT workspace_id, document_id, version FROM stale_pending_documents($1, $2)",
    )
    .bind(
        sqlx::postgres::types::PgInterval::try_from(older_than)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    )
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    for (workspace_id, document_id, version) in &stale {
        enqueue(
            state,
            &DocumentChanged {
                workspace_id: *workspace_id,
                document_id: *document_id,
                version: *version,
            },
        )
        .await?;
    }
    Ok(stale.len())
}
