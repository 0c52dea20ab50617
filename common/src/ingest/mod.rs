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

use events::DocumentChanged;

/// Queues again the inline documents still `pending` `older_than` after
/// their last write (their first message was never sent: see migration
/// 20261123000007), at most `limit`, oldest first, ten per SQS call.
/// Returns how many were queued; one that SQS refused stays pending for
/// the next run. A document queued twice is ingested once.
pub async fn requeue_stale(
    db: &sqlx::PgPool,
    queue: crate::queue::Queue<'_>,
    older_than: std::time::Duration,
    limit: i32,
) -> anyhow::Result<usize> {
    let stale: Vec<(crate::ids::WorkspaceId, crate::ids::DocumentId, i32)> = sqlx::query_as(
        "SELECT workspace_id, document_id, version FROM stale_pending_documents($1, $2)",
    )
    // sqlx encodes a Duration as an interval.
    .bind(older_than)
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

/// Queues again, as S3's notification of their object, the uploaded
/// documents still `pending` `older_than` after their last write whose
/// object exists (its notification was lost, or came before the
/// document was committed: see migration 20261207000028), at most
/// `limit` looked at, oldest first. Those without an object are left
/// alone. Returns how many were queued.
pub async fn requeue_stale_uploads(
    db: &sqlx::PgPool,
    bucket: crate::storage::Bucket<'_>,
    queue: crate::queue::Queue<'_>,
    older_than: std::time::Duration,
    limit: i32,
) -> anyhow::Result<usize> {
    let stale: Vec<(crate::ids::WorkspaceId, crate::ids::DocumentId, String)> = sqlx::query_as(
        "SELECT workspace_id, document_id, s3_key FROM stale_pending_uploads($1, $2)",
    )
    // sqlx encodes a Duration as an interval.
    .bind(older_than)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let mut bodies = Vec::new();
    for (_, document, key) in &stale {
        match bucket.head(key).await {
            Ok(Some((size, etag))) => bodies.push(events::object_created(
                bucket.name(),
                key,
                size,
                etag.as_deref(),
            )),
            Ok(None) => {}
            // Tried again on the next run; the others go on.
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                document = %document,
                "could not ask S3 for a pending upload's object"
            ),
        }
    }
    if bodies.is_empty() {
        return Ok(0);
    }
    let sent = queue.send_all(&bodies).await?;
    Ok(sent.into_iter().filter(|&sent| sent).count())
}
