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
    /// The workspace's own limit on a document's chunks, if it set one.
    pub max_document_chunks: Option<i32>,
}

/// What a queue message asks the worker to ingest.
#[derive(Debug, Clone, Copy)]
pub enum Ingest<'a> {
    /// An inline document's current content.
    Inline,
    /// An uploaded object: its key, and the event's sequencer and ETag
    /// when it carries them.
    Upload {
        key: &'a str,
        sequencer: Option<&'a str>,
        etag: Option<&'a str>,
    },
}

/// `a` is a later S3 sequencer than `b`, in SQL: hex strings of possibly
/// different lengths, left-padded with zeros to one width, compared
/// bytewise ([`sequencer_later`]).
macro_rules! sequencer_later_sql {
    ($a:literal, $b:literal) => {
        concat!(
            "(lpad(upper(",
            $a,
            "), greatest(length(",
            $a,
            "), length(",
            $b,
            ")), '0') COLLATE \"C\" > ",
            "lpad(upper(",
            $b,
            "), greatest(length(",
            $a,
            "), length(",
            $b,
            ")), '0') COLLATE \"C\")"
        )
    };
}

/// The claims of [`claim_all`]. `$2..$6`: per message, the document id,
/// whether it is an upload, and the upload's key, sequencer and ETag.
/// Returns, per message whose document exists (`n`: its 1-based place),
/// the document as it was before, and whether this message took it. One
/// message per document may: the latest S3 write's, else the first in the
/// batch. It takes a live
/// document of the message's kind and file (uploads: the same key, and no
/// later sequencer already ingested) whose content is not already
/// ingested (inline: the current hash; uploads: the object's ETag) and
/// that no other delivery holds a live lease on. Nothing is claimed in a
/// deleted workspace (`workspace_deleted`): its documents are refused.
///
/// `doc.id = ANY($2)` (here and in [`READY_SQL`]) bounds the documents
/// read by the batch, whatever the planner's statistics say. Without it,
/// statistics taken before a workspace's bulk upload priced the
/// workspace at one row, and each statement read all its documents, at
/// a cost growing with the workspace.
const CLAIM_SQL: &str = concat!(
    "WITH m AS (
         SELECT * FROM unnest($2::uuid[], $3::bool[], $4::text[], $5::text[], $6::text[])
             WITH ORDINALITY AS m(id, upload, key, sequencer, etag, n)
     ), first AS (
         SELECT DISTINCT ON (id) * FROM m
         ORDER BY id, lpad(upper(sequencer), 64, '0') COLLATE \"C\" DESC NULLS LAST, n
     ), w AS (
         SELECT max_document_chunks, deleted_at IS NOT NULL AS deleted FROM workspaces WHERE id = $1
     ), d AS (
         SELECT id, source, status, content, content_type, size, s3_key, content_sha256,
                ingested_sha256, object_etag, object_sequencer, deleted_at IS NOT NULL AS deleted
         FROM documents WHERE workspace_id = $1 AND id = ANY($2)
     ), claimed AS (
         UPDATE documents doc SET status = 'processing', attempts = doc.attempts + 1, error = NULL,
                processing_until = now() + interval '10 minutes'
         FROM first m
         WHERE doc.workspace_id = $1 AND doc.id = ANY($2) AND doc.id = m.id
           AND doc.deleted_at IS NULL AND NOT coalesce((SELECT deleted FROM w), false)
           AND (doc.status <> 'processing' OR doc.processing_until IS NULL
                OR doc.processing_until < now())
           AND CASE WHEN m.upload THEN doc.source = 'upload' AND doc.s3_key = m.key
                        AND NOT coalesce(",
    sequencer_later_sql!("doc.object_sequencer", "m.sequencer"),
    ", false)
                        AND NOT (doc.status = 'ready' AND coalesce(doc.object_etag = m.etag, false))
                    ELSE doc.source = 'inline'
                        AND NOT (doc.status = 'ready'
                                 AND coalesce(doc.ingested_sha256 = doc.content_sha256, false))
               END
         RETURNING m.n
     )
     SELECT m.n, d.source, d.status, d.content, d.content_type, d.size, d.s3_key,
            d.content_sha256, d.ingested_sha256, d.object_etag, d.object_sequencer, d.deleted,
            (SELECT max_document_chunks FROM w) AS max_document_chunks,
            coalesce((SELECT deleted FROM w), false) AS workspace_deleted,
            EXISTS (SELECT 1 FROM claimed c WHERE c.n = m.n) AS claimed
     FROM m JOIN d ON d.id = m.id"
);

/// A document as [`claim_all`] found it, and whether this delivery took it.
#[derive(Debug, sqlx::FromRow)]
pub struct Claim {
    #[sqlx(flatten)]
    pub target: Target,
    /// `processing`, one more attempt, leased to this delivery for ten
    /// minutes. When false nothing was written.
    pub claimed: bool,
    /// The workspace is deleted: nothing of it is claimed or ingested.
    pub workspace_deleted: bool,
}

impl Claim {
    /// Why [`CLAIM_SQL`] left the document to `ingest`'s message alone, read
    /// from the state the document was in (for the log).
    pub fn unclaimed_reason(&self, ingest: Ingest<'_>) -> &'static str {
        let target = &self.target;
        let ready = target.status == Status::Ready;
        match ingest {
            _ if self.workspace_deleted => "the workspace was deleted",
            _ if target.deleted => "the document was deleted",
            Ingest::Inline if target.source != Source::Inline => "not an inline document",
            Ingest::Inline
                if ready && target.ingested_sha256.as_deref() == Some(&target.content_sha256) =>
            {
                "this content is already ingested"
            }
            Ingest::Upload { key, .. }
                if target.source != Source::Upload || target.s3_key.as_deref() != Some(key) =>
            {
                "not this document's file"
            }
            Ingest::Upload {
                sequencer: Some(sequencer),
                ..
            } if target
                .object_sequencer
                .as_deref()
                .is_some_and(|seen| sequencer_later(seen, sequencer)) =>
            {
                "a later write of this key was already ingested"
            }
            Ingest::Upload {
                etag: Some(etag), ..
            } if ready && target.object_etag.as_deref() == Some(etag) => {
                "this object is already ingested"
            }
            _ => "being ingested by another delivery (or it changed meanwhile)",
        }
    }
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    n: i64,
    #[sqlx(flatten)]
    claim: Claim,
}

/// Claims the documents of one workspace that a batch's messages ask for,
/// in one statement ([`CLAIM_SQL`]), and reads what each was: one entry
/// per message, in order (`None`: no such document in `workspace`,
/// deleted or not). A claim is taken only where there is work for the
/// message; otherwise [`Target`] says why not.
pub async fn claim_all(
    db: &PgPool,
    workspace: WorkspaceId,
    wanted: &[(DocumentId, Ingest<'_>)],
) -> Result<Vec<Option<Claim>>, sqlx::Error> {
    let n = wanted.len();
    let (mut ids, mut uploads, mut keys, mut sequencers, mut etags) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (document, ingest) in wanted {
        ids.push(document.0);
        let (upload, key, sequencer, etag) = match *ingest {
            Ingest::Inline => (false, None, None, None),
            Ingest::Upload {
                key,
                sequencer,
                etag,
            } => (true, Some(key), sequencer, etag),
        };
        uploads.push(upload);
        keys.push(key);
        sequencers.push(sequencer);
        etags.push(etag);
    }
    // A claim lost in a crash costs nothing: the messages were not yet
    // acknowledged, and their redelivery claims again. So its commit does
    // not wait for the WAL flush (the chunks' commit does).
    let mut tx = db
        .begin_with(sqlx::AssertSqlSafe(format!(
            "{}; SET LOCAL synchronous_commit = off; {}",
            crate::db::begin_statement(None, Some(workspace)),
            crate::db::GENERIC_PLANS
        )))
        .await?;
    let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_SQL)
        .bind(workspace)
        .bind(&ids)
        .bind(&uploads)
        .bind(&keys)
        .bind(&sequencers)
        .bind(&etags)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    let mut claims: Vec<Option<Claim>> = (0..n).map(|_| None).collect();
    for row in rows {
        if let Some(slot) = usize::try_from(row.n - 1)
            .ok()
            .and_then(|i| claims.get_mut(i))
        {
            *slot = Some(row.claim);
        }
    }
    Ok(claims)
}

/// Gives back the leases of claimed documents whose ingestion failed and
/// will be retried, so their redelivery need not wait for the lease to
/// lapse (they stay `processing`). `started` false: none of them was
/// tried, so their claim's attempt is taken back too.
pub async fn release(
    db: &PgPool,
    workspace: WorkspaceId,
    documents: &[DocumentId],
    started: bool,
) -> Result<(), sqlx::Error> {
    let ids: Vec<uuid::Uuid> = documents.iter().map(|d| d.0).collect();
    let mut tx = tenant_tx(db, None, Some(workspace)).await?;
    sqlx::query(
        "UPDATE documents SET processing_until = NULL,
                attempts = CASE WHEN $3 THEN attempts ELSE greatest(attempts - 1, 0) END
         WHERE workspace_id = $1 AND id = ANY($2) AND status = 'processing'
           AND processing_until IS NOT NULL",
    )
    .bind(workspace)
    .bind(&ids)
    .bind(started)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
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

/// Fails documents of a deleted workspace with `reason`, whatever their
/// state (claimed or not): nothing of the workspace is ingested any more.
pub async fn fail_refused(
    db: &PgPool,
    workspace: WorkspaceId,
    documents: &[DocumentId],
    reason: &str,
) -> Result<(), sqlx::Error> {
    let ids: Vec<uuid::Uuid> = documents.iter().map(|d| d.0).collect();
    let mut tx = tenant_tx(db, None, Some(workspace)).await?;
    sqlx::query(
        "UPDATE documents SET status = 'failed', error = $3, processing_until = NULL
         WHERE workspace_id = $1 AND id = ANY($2) AND deleted_at IS NULL
           AND (status <> 'failed' OR error IS DISTINCT FROM $3)",
    )
    .bind(workspace)
    .bind(&ids)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Fails the documents whose ingestion lease lapsed more than
/// `older_than` ago, at most `limit`: their worker crashed or ran out of
/// time on every delivery and their message has gone to the DLQ (see
/// migration 20261206000013). Returns how many were failed.
pub async fn fail_abandoned(
    db: &PgPool,
    older_than: std::time::Duration,
    limit: i32,
) -> anyhow::Result<usize> {
    let abandoned: Vec<(WorkspaceId, DocumentId, i32)> = sqlx::query_as(
        "SELECT workspace_id, document_id, attempts FROM abandoned_documents($1, $2)",
    )
    .bind(older_than)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let mut failed = 0;
    for (workspace, document, attempts) in abandoned {
        let reason = format!(
            "ingestion stopped {attempts} times without finishing (its worker crashed or ran out \
             of time); upload the file again, or redrive the ingest DLQ once the cause is fixed"
        );
        let mut tx = tenant_tx(db, None, Some(workspace)).await?;
        // Still abandoned: a late redelivery may have taken it meanwhile.
        failed += sqlx::query(
            "UPDATE documents SET status = 'failed', error = $3, processing_until = NULL
             WHERE workspace_id = $1 AND id = $2 AND status = 'processing'
               AND deleted_at IS NULL AND processing_until < now() - $4",
        )
        .bind(workspace)
        .bind(document)
        .bind(&reason)
        .bind(older_than)
        .execute(&mut *tx)
        .await?
        .rows_affected() as usize;
        tx.commit().await?;
    }
    Ok(failed)
}

/// What the store's statements fail with.
pub use sqlx::Error as StoreError;

/// Why the database refused a document's data for good, if it did: a
/// data exception (SQLSTATE class 22: a character it cannot hold, a
/// value out of range) or a program limit (class 54: a row or a text
/// search vector too large). Retrying cannot help these; anything else
/// (connections, deadlocks, a server going away) may pass next time.
pub fn refused_data(error: &sqlx::Error) -> Option<String> {
    let db = error.as_database_error()?;
    let code = db.code()?;
    (code.starts_with("22") || code.starts_with("54")).then(|| {
        format!(
            "the database cannot store the document's text: {}",
            db.message()
        )
    })
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

/// Chunks made from a document, ready to store.
#[derive(Debug)]
pub struct Ingested {
    pub document: DocumentId,
    pub made: Made,
    pub chunks: Vec<NewChunk>,
}

/// Marks documents `ready` with what their chunks were made from, and
/// deletes their old chunks, where each still holds what its chunks were
/// made from (inline: the same content hash; uploads: the same key, and
/// no later sequencer ingested meanwhile). One statement: the UPDATE locks
/// the document rows, and the DELETE runs for the rows it updated, whose
/// ids it returns. Per document `$2..$7`: id, content hash, and for
/// uploads key, sequencer, ETag and size (key NULL: inline).
const READY_SQL: &str = concat!(
    "WITH m AS (
         SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[])
             AS m(id, sha, key, sequencer, etag, size)
     ), ready AS (
         UPDATE documents doc SET status = 'ready', error = NULL, ingested_sha256 = m.sha,
                ingested_at = now(), processing_until = NULL,
                content_sha256 = CASE WHEN m.key IS NULL THEN doc.content_sha256 ELSE m.sha END,
                object_etag = CASE WHEN m.key IS NULL THEN doc.object_etag ELSE m.etag END,
                object_sequencer = CASE WHEN m.key IS NULL THEN doc.object_sequencer
                                        ELSE m.sequencer END,
                size = CASE WHEN m.key IS NULL THEN doc.size ELSE m.size END
         FROM m
         WHERE doc.workspace_id = $1 AND doc.id = ANY($2) AND doc.id = m.id
           AND doc.deleted_at IS NULL
           AND EXISTS (SELECT 1 FROM workspaces w WHERE w.id = $1 AND w.deleted_at IS NULL)
           AND CASE WHEN m.key IS NULL THEN doc.content_sha256 = m.sha
                    ELSE doc.s3_key = m.key AND NOT coalesce(",
    sequencer_later_sql!("doc.object_sequencer", "m.sequencer"),
    ", false)
               END
         RETURNING doc.id
     ), old AS (
         DELETE FROM chunks c USING ready
         WHERE c.workspace_id = $1 AND c.document_id = ANY($2) AND c.document_id = ready.id
     )
     SELECT id FROM ready"
);

/// What [`replace_all`] stored.
#[derive(Debug, PartialEq)]
pub struct Stored {
    /// Per document, whether it was stored.
    pub documents: Vec<bool>,
    /// The workspace was deleted: nothing was stored.
    pub workspace_deleted: bool,
}

/// Replaces the chunks of documents of one workspace and marks them
/// `ready`, all in one transaction of two statements ([`READY_SQL`], then
/// the chunks), where each document still holds what its chunks were made
/// from and the workspace is not deleted. Returns, per document, whether
/// it was stored; false (nothing written for it) when it or its workspace
/// was deleted or its content moved on meanwhile: a newer message carries
/// the newer state.
///
/// The transaction holds the workspace's vector-flag lock shared from its
/// start ([`crate::db::chunk_writer_tx`]), and deleting a workspace takes
/// it exclusively: a store that found the workspace live commits before
/// the deletion does, and one that starts later finds it deleted.
pub async fn replace_all(
    db: &PgPool,
    workspace: WorkspaceId,
    documents: &[Ingested],
) -> Result<Stored, sqlx::Error> {
    let mut tx = crate::db::chunk_writer_tx(db, workspace).await?;
    let n = documents.len();
    let (mut ids, mut hashes, mut keys, mut sequencers, mut etags, mut sizes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for doc in documents {
        ids.push(doc.document.0);
        match &doc.made {
            Made::Inline { content_sha256 } => {
                hashes.push(content_sha256.as_str());
                keys.push(None);
                sequencers.push(None);
                etags.push(None);
                sizes.push(None);
            }
            Made::Upload {
                key,
                etag,
                sequencer,
                size,
                content_sha256,
            } => {
                hashes.push(content_sha256.as_str());
                keys.push(Some(key.as_str()));
                sequencers.push(sequencer.as_deref());
                etags.push(Some(etag.as_str()));
                sizes.push(Some(*size));
            }
        }
    }
    let ready: Vec<uuid::Uuid> = sqlx::query_scalar(READY_SQL)
        .bind(workspace)
        .bind(&ids)
        .bind(&hashes)
        .bind(&keys)
        .bind(&sequencers)
        .bind(&etags)
        .bind(&sizes)
        .fetch_all(&mut *tx)
        .await?;
    let stored: Vec<bool> = ids.iter().map(|id| ready.contains(id)).collect();
    if ready.len() < ids.len() {
        // Why some were not: only then is the workspace read again.
        let deleted: bool = sqlx::query_scalar(
            "SELECT coalesce((SELECT deleted_at IS NOT NULL FROM workspaces WHERE id = $1), false)",
        )
        .bind(workspace)
        .fetch_one(&mut *tx)
        .await?;
        if deleted {
            tx.commit().await?;
            return Ok(Stored {
                documents: stored,
                workspace_deleted: true,
            });
        }
    }
    let rows = documents
        .iter()
        .zip(&stored)
        .filter(|(_, stored)| **stored)
        .map(|(doc, _)| doc.chunks.len())
        .sum();
    let mut chunk_ids = Vec::with_capacity(rows);
    let mut document_ids = Vec::with_capacity(rows);
    let mut ordinals = Vec::with_capacity(rows);
    let mut contents = Vec::with_capacity(rows);
    let mut tokens = Vec::with_capacity(rows);
    let mut pages = Vec::with_capacity(rows);
    let mut headings = Vec::with_capacity(rows);
    let mut embeddings = Vec::with_capacity(rows);
    for (doc, _) in documents.iter().zip(&stored).filter(|(_, stored)| **stored) {
        for (ordinal, chunk) in doc.chunks.iter().enumerate() {
            chunk_ids.push(crate::ids::ChunkId::new().0);
            document_ids.push(doc.document.0);
            ordinals.push(ordinal as i32);
            contents.push(chunk.content.as_str());
            tokens.push(chunk.token_count);
            pages.push(chunk.page);
            headings.push(chunk.heading.as_deref());
            embeddings.push(Vector::from(chunk.embedding.clone()));
        }
    }
    if rows > 0 {
        // One statement for every document: arrays unnested server-side.
        sqlx::query(
            "INSERT INTO chunks (id, workspace_id, document_id, ordinal, content, token_count, page, heading, embedding)
             SELECT u.id, $1, u.document_id, u.ordinal, u.content, u.token_count, u.page, u.heading, u.embedding
             FROM UNNEST($2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::int[], $7::int[], $8::text[], $9::vector[])
                  AS u(id, document_id, ordinal, content, token_count, page, heading, embedding)",
        )
        .bind(workspace)
        .bind(&chunk_ids)
        .bind(&document_ids)
        .bind(&ordinals)
        .bind(&contents)
        .bind(&tokens)
        .bind(&pages)
        .bind(&headings)
        .bind(&embeddings)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Stored {
        documents: stored,
        workspace_deleted: false,
    })
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
