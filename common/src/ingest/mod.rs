//! Ingestion: what arrives on the ingest queue and how it is handled.
//!
//! This stage parses the queue's messages (S3 event notifications, leniently
//! so moto's trimmed events parse as well as real ones) and acknowledges
//! them; extraction, chunking and embedding are built by the ingestion issue.

pub mod events;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

use crate::state::State;
use events::{DocumentChanged, QueueMessage};

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

/// Handles one SQS batch, reporting failed records in `batchItemFailures`
/// so one bad message never holds back its batch-mates.
pub async fn handle_batch(_state: &State, event: SqsEvent) -> SqsBatchResponse {
    let mut failures = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        match QueueMessage::parse(record.body.as_deref().unwrap_or_default()) {
            Ok(QueueMessage::TestEvent) => {
                tracing::info!(message_id = %id, "S3 test event acknowledged")
            }
            Ok(QueueMessage::DocumentChanged(changed)) => {
                // Extraction, chunking and embedding arrive with the ingestion issue.
                tracing::info!(message_id = %id, workspace = %changed.workspace_id,
                    document = %changed.document_id, version = changed.version,
                    "document changed; ingestion not built yet, acknowledged");
            }
            Ok(QueueMessage::ObjectsCreated(objects)) => {
                for object in objects {
                    // No document store exists yet: nothing to ingest into.
                    tracing::info!(message_id = %id, key = %object.key, workspace = ?object.workspace_id,
                        document = ?object.document_id, "object created; no document to ingest yet, skipped");
                }
            }
            Err(error) => {
                tracing::warn!(message_id = %id, %error, "unreadable ingest message");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failures.push(failure);
            }
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}
