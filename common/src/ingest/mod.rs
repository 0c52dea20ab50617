//! Ingestion's shared half: the ingest queue's messages (S3 event
//! notifications, parsed leniently so moto's trimmed events parse as well
//! as real ones, and our own document-changed messages), queueing a
//! document, the worker's SQL, and (feature `worker`) the worker's engine
//! and its extraction children.

pub mod events;
#[cfg(feature = "worker")]
pub mod extractor;
pub mod store;
#[cfg(feature = "worker")]
pub mod worker;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use events::DocumentChanged;

/// The ingest queue, through one SQS client. Built by
/// [`State::ingest_queue`](crate::State::ingest_queue).
#[derive(Clone, Copy)]
pub struct Queue<'a> {
    sqs: &'a aws_sdk_sqs::Client,
    url: &'a str,
}

fn sqs_error<E: std::error::Error + Send + Sync + 'static>(
    e: aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> anyhow::Error {
    anyhow::anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e))
}

impl<'a> Queue<'a> {
    pub fn new(sqs: &'a aws_sdk_sqs::Client, url: &'a str) -> Self {
        Self { sqs, url }
    }

    /// Queues `changed` for ingestion. The document is already stored
    /// (status pending); a failure here is logged and returned, and the
    /// caller decides whether the request fails.
    pub async fn enqueue(&self, changed: &DocumentChanged) -> anyhow::Result<()> {
        self.sqs
            .send_message()
            .queue_url(self.url)
            .message_body(changed.to_message())
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(())
    }

    /// Whether the queue answers (the health check).
    pub async fn probe(&self) -> anyhow::Result<()> {
        self.sqs
            .get_queue_attributes()
            .queue_url(self.url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map(|_| ())
            .map_err(sqs_error)
    }
}

/// Most messages one SendMessageBatch carries (an SQS limit).
const SQS_BATCH: usize = 10;

/// Queues again the inline documents still `pending` `older_than` after
/// their last write (their first message was never sent: see migration
/// 20261123000007), at most `limit`, oldest first, ten per SQS call.
/// Returns how many were queued; one that SQS refused stays pending for
/// the next run. A document queued twice is ingested once.
pub async fn requeue_stale(
    db: &sqlx::PgPool,
    queue: Queue<'_>,
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
    .fetch_all(db)
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
    let sent = queue.send_all(&bodies).await?;
    Ok(sent.into_iter().filter(|&sent| sent).count())
}

impl Queue<'_> {
    /// Sends `bodies` to the ingest queue, ten per SQS call; per body,
    /// whether SQS took it (one it refused is logged). Stops at the first
    /// call that fails.
    pub async fn send_all(&self, bodies: &[String]) -> anyhow::Result<Vec<bool>> {
        let (queue_url, sqs) = (self.url, self.sqs);
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
                .map_err(sqs_error)?;
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
}
