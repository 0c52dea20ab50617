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
