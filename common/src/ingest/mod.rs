//! Ingestion's shared half: the ingest queue's messages (S3 event
//! notifications, parsed leniently so moto's trimmed events parse as well
//! as real ones, and our own document-changed messages), queueing a
//! document, and the worker's SQL. The worker itself is functions/ingest.

pub mod events;
pub mod store;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::state::State;
use events::DocumentChanged;

/// Queues `changed` for ingestion. The document is already stored (status
/// pending); a failure here is logged and returned, and the caller decides
/// whether the request fails.
pub async fn enqueue(state: &State, changed: &DocumentChanged) -> anyhow::Result<()> {
    state
        .sqs()
        .await
        .send_message()
        .queue_url(queue_url(state)?)
        .message_body(changed.to_message())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    Ok(())
}

fn queue_url(state: &State) -> anyhow::Result<&str> {
    state
        .config
        .ingest_queue_url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("INGEST_QUEUE_URL is not set"))
}

/// Most messages one SendMessageBatch carries (an SQS limit).
const SQS_BATCH: usize = 10;

/// Queues again the inline documents still `pending` `older_than` after
/// their last write (their first message was never sent: see migration
/// 20261123000007), at most `limit`, oldest first, ten per SQS call.
/// Returns how many were queued; one that SQS refused stays pending for
/// the next run. A document queued twice is ingested once.
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
    if stale.is_empty() {
        return Ok(0);
    }
    let bodies: Vec<String> = stale
        .into_iter()
        .map(|(workspace_id, document_id, version)| {
            DocumentChanged {
                workspace_id,
                document_id,
                version,
            }
            .to_message()
        })
        .collect();
    let sent = send_all(state, &bodies).await?;
    Ok(sent.into_iter().filter(|&sent| sent).count())
}

/// Sends `bodies` to the ingest queue, ten per SQS call; per body, whether
/// SQS took it (one it refused is logged). Stops at the first call that
/// fails.
pub async fn send_all(state: &State, bodies: &[String]) -> anyhow::Result<Vec<bool>> {
    let queue_url = queue_url(state)?;
    let sqs = state.sqs().await;
    let mut sent = vec![false; bodies.len()];
    for (n, batch) in bodies.chunks(SQS_BATCH).enumerate() {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let answer = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        for taken in answer.successful() {
            if let Some(slot) = taken
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| sent.get_mut(n * SQS_BATCH + i))
            {
                *slot = true;
            }
        }
        for refused in answer.failed() {
            tracing::warn!(code = refused.code(), message = ?refused.message(),
                "SQS refused a message for the ingest queue");
        }
    }
    Ok(sent)
}
