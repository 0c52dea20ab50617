//! The ingest worker's reads and writes, each in the document's workspace
//! context (row-level security applies; the worker has no user).

use pgvector::Vector;
use sqlx::PgPool;

use crate::db::tenant_tx;
use crate::documents::{Source, Status};
use crate::ids::{DocumentId, WorkspaceId};

/// What the worker needs to know about a document.
#[derive(Debug, sqlx::FromRow)]
pub struct Target {
    pub source: Source,
    pub status: Status,
    pub content: Option<String>,
    pub content_type: String,
    /// Declared size for uploads, content bytes for inline documents.
    pub size: i64,
    pub s3_key: Option<String>,
    pub content_sha256: String,
    pub ingested_sha256: Option<String>,
    pub object_etag: Option<String>,
    pub object_sequencer: Option<String>,
    pub deleted: bool,
}

/// The document, deleted or not; `None` if it does not exist in `workspace`.
pub async fn load(
    db: &PgPool,
    workspace: WorkspaceId,
    document: DocumentId,
) -> Result<Option<Target>, sqlx::Error> {
    let mut tx = tenant_tx(db, None, Some(workspace)).await?;
    let target = sqlx::query_as(
        "SELECT source, status, content, content_type, size, s3_key, content_sha256,
                ingested_sha256, object_etag, object_sequencer, deleted_at IS NOT NULL AS deleted
         FROM documents WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace)
    .bind(document)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(target)
}

/// Claims a live document for ingestion: `processing`, one more attempt,
/// no error, leased for ten minutes. False when another worker holds a
/// live lease (a duplicate delivery in flight), or when what this message
/// brings is already ingested (an inline document's current content; an
/// upload's object with ETag `object_etag`): nothing to do.
pub async fn claim(
    db: &PgPool,
    workspace: WorkspaceId,
    document: DocumentId,
    object_etag: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let mut tx = tenant_tx(db, None, Some(workspace)).await?;
    let claimed = sqlx::query(
        "UPDATE documents SET status = 'processing', attempts = attempts + 1, error = NULL,
                processing_until = now() + interval '10 minutes'
         WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL
           AND (status <> 'processing' OR processing_until IS NULL OR processing_until < now())
           AND NOT (status = 'ready' AND CASE WHEN source = 'upload'
                        THEN coalesce(object_etag = $3, false)
                        ELSE coalesce(ingested_sha256 = content_sha256, false) END)",
    )
    .bind(workspace)
    .bind(document)
    .bind(object_etag)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(claimed)
}

/// `failed` with a reason the user can read.
pub async fn mark_failed(
    db: &PgPool,
    workspace: WorkspaceId,
    document: DocumentId,
    error: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = tenant_tx(db, None, Some(workspace)).await?;
    sqlx::query(
        "UPDATE documents SET status = 'failed', error = $3, processing_until = NULL
         WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(workspace)
    .bind(document)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// One chunk ready to store.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub content: String,
    pub token_count: i32,
    pub page: Option<i32>,
    pub heading: Option<String>,
    pub embedding: Vec<f32>,
}

/// What the chunks were made from.
#[derive(Debug, Clone)]
pub enum Made {
    /// An inline document's text with this hash.
    Inline { content_sha256: String },
    /// An uploaded object: its key, S3 ETag and event sequencer, and the
    /// real size and hash of the bytes read.
    Upload {
        key: String,
        etag: String,
        sequencer: Option<String>,
        size: i64,
        content_sha256: String,
    },
}

/// Whether S3 sequencer `a` is later than `b` (hex strings of possibly
/// different lengths: left-pad the shorter with zeros, then compare).
pub fn sequencer_later(a: &str, b: &str) -> bool {
    let width = a.len().max(b.len());
    let pad = |s: &str| format!("{s:0>width$}").to_ascii_uppercase();
    pad(a) > pad(b)
}

/// Replaces the document's chunks and marks it `ready`, in one
/// transaction, if the document still holds what the chunks were made
/// from. Returns false (writing nothing) when it was deleted or its
/// content moved on meanwhile: a newer message carries the newer state.
pub async fn replace_chunks(
    db: &PgPool,
    workspace: WorkspaceId,
    document: DocumentId,
    made: &Made,
    chunks: Vec<NewChunk>,
) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::chunk_writer_tx(db, workspace).await?;
    let current: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT content_sha256, s3_key, object_sequencer FROM documents
         WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(workspace)
    .bind(document)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((content_sha256, s3_key, seen_sequencer)) = current else {
        return Ok(false);
    };
    let still_current = match made {
        Made::Inline {
            content_sha256: made,
        } => *made == content_sha256,
        Made::Upload { key, sequencer, .. } => {
            s3_key.as_deref() == Some(key.as_str())
                && match (sequencer, &seen_sequencer) {
                    (Some(new), Some(seen)) => !sequencer_later(seen, new),
                    _ => true,
                }
        }
    };
    if !still_current {
        return Ok(false);
    }
    sqlx::query("DELETE FROM chunks WHERE workspace_id = $1 AND document_id = $2")
        .bind(workspace)
        .bind(document)
        .execute(&mut *tx)
        .await?;
    let n = chunks.len();
    let mut ids = Vec::with_capacity(n);
    let mut ordinals = Vec::with_capacity(n);
    let mut contents = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut pages = Vec::with_capacity(n);
    let mut headings = Vec::with_capacity(n);
    let mut embeddings = Vec::with_capacity(n);
    for (ordinal, chunk) in chunks.into_iter().enumerate() {
        ids.push(crate::ids::ChunkId::new().0);
        ordinals.push(ordinal as i32);
        contents.push(chunk.content);
        tokens.push(chunk.token_count);
        pages.push(chunk.page);
        headings.push(chunk.heading);
        embeddings.push(Vector::from(chunk.embedding));
    }
    // One statement for the whole document: arrays unnested server-side.
    sqlx::query(
        "INSERT INTO chunks (id, workspace_id, document_id, ordinal, content, token_count, page, heading, embedding)
         SELECT u.id, $1, $2, u.ordinal, u.content, u.token_count, u.page, u.heading, u.embedding
         FROM UNNEST($3::uuid[], $4::int[], $5::text[], $6::int[], $7::int[], $8::text[], $9::vector[])
              AS u(id, ordinal, content, token_count, page, heading, embedding)",
    )
    .bind(workspace)
    .bind(document)
    .bind(&ids)
    .bind(&ordinals)
    .bind(&contents)
    .bind(&tokens)
    .bind(&pages)
    .bind(&headings)
    .bind(&embeddings)
    .execute(&mut *tx)
    .await?;
    match made {
        Made::Inline { content_sha256 } => {
            sqlx::query(
                "UPDATE documents SET status = 'ready', error = NULL, ingested_sha256 = $3, ingested_at = now(),
                     processing_until = NULL
                 WHERE workspace_id = $1 AND id = $2",
            )
            .bind(workspace)
            .bind(document)
            .bind(content_sha256)
            .execute(&mut *tx)
            .await?;
        }
        Made::Upload {
            etag,
            sequencer,
            size,
            content_sha256,
            ..
        } => {
            sqlx::query(
                "UPDATE documents SET status = 'ready', error = NULL, ingested_sha256 = $3,
                     content_sha256 = $3, object_etag = $4, object_sequencer = $5, size = $6,
                     ingested_at = now(), processing_until = NULL
                 WHERE workspace_id = $1 AND id = $2",
            )
            .bind(workspace)
            .bind(document)
            .bind(content_sha256)
            .bind(etag)
            .bind(sequencer)
            .bind(size)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequencers_compare_as_left_padded_hex() {
        assert!(sequencer_later("0055AED6DCD90281E6", "0055AED6DCD90281E5"));
        assert!(sequencer_later("10", "F"));
        assert!(!sequencer_later("F", "10"));
        assert!(!sequencer_later("00AB", "ab"));
        assert!(sequencer_later("ac", "00AB"));
    }
}
