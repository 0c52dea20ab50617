//! Documents: a workspace's sources of knowledge, with optimistic
//! concurrency (entity tags), an append-only version history, soft deletes
//! (tombstones that sync delivers) and their chunks once ingested.
//!
//! Every function takes an [`Access`], so it runs in a transaction scoped
//! to a workspace the caller belongs to; documents of other workspaces are
//! invisible (404), by the explicit `workspace_id` filters and by RLS.

mod body;
pub mod sync;
pub mod versions;

pub(crate) use body::{Body, upload_state};
use body::{clean_metadata, clean_title};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};

use crate::conditional::Preconditions;
use crate::config::DocumentLimits;
use crate::error::{ApiError, Result};
use crate::ids::{ChunkId, DocumentId, UserId, WorkspaceId};
use crate::pagination::Page;
use crate::workspaces::Access;

/// Where a document is in ingestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Status {
    Pending,
    Processing,
    Ready,
    Failed,
}

impl std::str::FromStr for Status {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        serde_json::from_value(Value::String(s.to_owned())).map_err(|_| ())
    }
}

/// How the content arrived: in the request body, or as an S3 upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Source {
    Inline,
    Upload,
}

/// A document as the API shows it. `content` is present only where one
/// document is read whole (GET, writes, 412 bodies); lists and sync carry
/// the rest and the client fetches bodies by `ETag`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Document {
    pub id: DocumentId,
    pub workspace_id: WorkspaceId,
    pub title: String,
    pub source: Source,
    pub content_type: String,
    pub size: i64,
    pub status: Status,
    pub error: Option<String>,
    pub attempts: i32,
    /// The strong entity tag (unquoted): changes exactly when the title,
    /// content type, metadata or content change. Processing status and
    /// snapshots do not change it.
    pub etag: String,
    pub version: i32,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Json<Value>,
    pub created_by: Option<UserId>,
    pub updated_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[sqlx(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

macro_rules! summary_columns {
    () => {
        "id, workspace_id, title, source, content_type, size, status, error, attempts, \
         etag, version, metadata, created_by, updated_by, created_at, updated_at"
    };
}
macro_rules! full_columns {
    () => {
        concat!($crate::documents::summary_columns!(), ", content")
    };
}
pub(crate) use {full_columns, summary_columns};

/// Inserts the version row for the document state in CTE `$src`.
/// `$kind` and `$restored_from` are SQL expressions (literals or parameters).
macro_rules! record_version_from {
    ($src:literal, $kind:literal, $restored_from:literal) => {
        concat!(
            "INSERT INTO document_versions (document_id, version, workspace_id, kind, restored_from,
                 title, content, content_type, size, s3_key, content_sha256, etag, metadata, created_by)
             SELECT id, version, workspace_id, ",
            $kind,
            ", ",
            $restored_from,
            ", title, content, content_type, size, s3_key, content_sha256, etag, metadata, updated_by
             FROM ",
            $src
        )
    };
}

pub(crate) use record_version_from;

/// The UPDATE that moves a document to its next version; a content change
/// sends it back to `pending` for ingestion.
macro_rules! update_state {
    () => {
        "WITH d AS (
            UPDATE documents SET title = $3, content = $4, content_type = $5, size = $6,
                content_sha256 = $7, etag = $8, metadata = $9, updated_by = $10,
                version = version + 1,
                status = CASE WHEN $11 THEN 'pending' ELSE status END,
                error = CASE WHEN $11 THEN NULL ELSE error END,
                attempts = CASE WHEN $11 THEN 0 ELSE attempts END
            WHERE id = $1 AND workspace_id = $2
            RETURNING *
         ), v AS ("
    };
}

/// `POST /workspaces/{id}/documents`: an inline document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewDocument {
    /// A client-chosen id, unique within the workspace (offline-first
    /// clients create ids locally). Sending the same document again with
    /// it is a harmless replay.
    #[serde(default)]
    pub id: Option<DocumentId>,
    pub title: String,
    /// Text, or any JSON value (stored as `application/json`).
    pub content: Value,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// `PUT .../documents/{id}`: the new state, replacing the old one.
/// Metadata left out becomes `{}`; uploads take no `content` here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DocumentReplacement {
    pub title: String,
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// The outcome of a write: the document and whether its content changed
/// (then it is pending and must be queued for ingestion).
#[derive(Debug)]
pub struct Written {
    pub document: Document,
    pub content_changed: bool,
    /// False for a replay or a no-op write: nothing was stored.
    pub stored: bool,
}

/// Why a version exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum VersionKind {
    Create,
    Update,
    Snapshot,
    Restore,
}

/// Binds `$1..$10` of the statements that write a document state: id,
/// workspace, title, content, content type, size, content hash, entity
/// tag, metadata, and the caller as author.
trait BindState<'q> {
    fn bind_state(self, id: DocumentId, access: &Access, body: &'q Body) -> Self;
}

impl<'q, O> BindState<'q> for sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments> {
    fn bind_state(self, id: DocumentId, access: &Access, body: &'q Body) -> Self {
        self.bind(id)
            .bind(access.workspace)
            .bind(&body.title)
            .bind(&body.content)
            .bind(&body.content_type)
            .bind(body.size)
            .bind(&body.content_sha256)
            .bind(&body.etag)
            .bind(Json(&body.metadata))
            .bind(access.caller)
    }
}

/// The current row, locked for a write.
#[derive(sqlx::FromRow)]
struct Locked {
    #[sqlx(flatten)]
    document: Document,
    content_sha256: String,
    s3_key: Option<String>,
}

async fn lock(
    tx: &mut Transaction<'static, Postgres>,
    ws: WorkspaceId,
    id: DocumentId,
) -> Result<Locked> {
    sqlx::query_as(concat!(
        "SELECT ",
        full_columns!(),
        ", content_sha256, s3_key FROM documents
         WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL FOR UPDATE"
    ))
    .bind(id)
    .bind(ws)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ApiError::not_found("document"))
}

/// 412 with the server's copy, so the client can merge.
fn precondition_failed(current: &Document) -> ApiError {
    ApiError::PreconditionFailed {
        detail: "the document changed since you read it; `current` is the server's copy \
                 and the ETag header its tag"
            .into(),
        current: serde_json::to_value(current).ok().map(Box::new),
        etag: Some(current.etag.clone()),
    }
}

/// Checks the request's conditions against the locked row.
fn check(pre: &Preconditions, current: &Document) -> Result<()> {
    if pre.allow_write(Some(&current.etag)) {
        Ok(())
    } else {
        Err(precondition_failed(current))
    }
}

/// Creates an inline document (version 1, status pending). With a
/// client-chosen id already present in this workspace, the same document
/// again is a replay (`stored: false`), a different one (or one since
/// deleted) is 409.
pub async fn create(
    mut access: Access,
    new: NewDocument,
    limits: &DocumentLimits,
) -> Result<Written> {
    let body = Body::inline(
        &new.title,
        new.content,
        new.content_type.as_deref(),
        new.metadata,
        limits,
    )?;
    let id = new.id.unwrap_or_default();
    let inserted: Option<Document> = sqlx::query_as(concat!(
        "WITH d AS (
            INSERT INTO documents (id, workspace_id, title, source, content, content_type, size,
                                   content_sha256, etag, version, metadata, created_by, updated_by)
            VALUES ($1, $2, $3, 'inline', $4, $5, $6, $7, $8, 1, $9, $10, $10)
            ON CONFLICT (workspace_id, id) DO NOTHING
            RETURNING *
         ), v AS (",
        record_version_from!("d", "'create'", "NULL::integer"),
        ") SELECT ",
        full_columns!(),
        " FROM d"
    ))
    .bind_state(id, &access, &body)
    .fetch_optional(&mut *access.tx)
    .await?;
    let written = match inserted {
        Some(document) => Written {
            document,
            content_changed: true,
            stored: true,
        },
        None => match find_live(&mut access, id).await? {
            Some(document) if document.version == 1 && document.etag == body.etag => Written {
                document,
                content_changed: false,
                stored: false,
            },
            _ => {
                return Err(ApiError::Conflict(
                    "a document with this id already exists; PUT to change it".into(),
                ));
            }
        },
    };
    access.commit().await?;
    Ok(written)
}

async fn find_live(access: &mut Access, id: DocumentId) -> Result<Option<Document>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        full_columns!(),
        " FROM documents WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL"
    ))
    .bind(id)
    .bind(access.workspace)
    .fetch_optional(&mut *access.tx)
    .await?)
}

/// One live document, with its content.
pub async fn get(mut access: Access, id: DocumentId) -> Result<Document> {
    let document = find_live(&mut access, id)
        .await?
        .ok_or_else(|| ApiError::not_found("document"))?;
    access.commit().await?;
    Ok(document)
}

/// Replaces a document's title, metadata and (inline) content, if the
/// request's `If-Match` still names the current state; a new version.
/// Sending the current state again changes nothing.
pub async fn replace(
    mut access: Access,
    id: DocumentId,
    replacement: DocumentReplacement,
    pre: &Preconditions,
    limits: &DocumentLimits,
) -> Result<Written> {
    pre.require_if_match()?;
    let current = lock(&mut access.tx, access.workspace, id).await?;
    check(pre, &current.document)?;
    let body = match (current.document.source, replacement.content) {
        (Source::Inline, Some(content)) => Body::inline(
            &replacement.title,
            content,
            replacement.content_type.as_deref(),
            replacement.metadata,
            limits,
        )?,
        (Source::Inline, None) => {
            return Err(ApiError::unprocessable(
                "content",
                "content is required: PUT replaces the whole document",
            ));
        }
        (Source::Upload, Some(_)) => {
            return Err(ApiError::unprocessable(
                "content",
                "an uploaded document's content changes by uploading a new file",
            ));
        }
        (Source::Upload, None) => {
            if replacement.content_type.is_some() {
                return Err(ApiError::unprocessable(
                    "content_type",
                    "an uploaded document's content type comes from its file",
                ));
            }
            let doc = &current.document;
            Body::new(
                clean_title(&replacement.title, limits)?,
                None,
                doc.content_type.clone(),
                doc.size,
                clean_metadata(replacement.metadata, limits)?,
                current.content_sha256.clone(),
            )
        }
    };
    if body.etag == current.document.etag {
        access.commit().await?;
        return Ok(Written {
            document: current.document,
            content_changed: false,
            stored: false,
        });
    }
    let content_changed = body.content_sha256 != current.content_sha256;
    let document = write_state(
        &mut access,
        id,
        &body,
        content_changed,
        VersionKind::Update,
        None,
    )
    .await?;
    access.commit().await?;
    Ok(Written {
        document,
        content_changed,
        stored: true,
    })
}

/// Writes `body` as the document's next version (kind `update` or `restore`).
async fn write_state(
    access: &mut Access,
    id: DocumentId,
    body: &Body,
    content_changed: bool,
    kind: VersionKind,
    restored_from: Option<i32>,
) -> Result<Document> {
    let sql = concat!(
        update_state!(),
        record_version_from!("d", "$12", "$13"),
        ") SELECT ",
        full_columns!(),
        " FROM d"
    );
    Ok(sqlx::query_as(sql)
        .bind_state(id, access, body)
        .bind(content_changed)
        .bind(kind)
        .bind(restored_from)
        .fetch_one(&mut *access.tx)
        .await?)
}

/// What a delete leaves to clean up outside the database.
#[derive(Debug)]
pub struct Deleted {
    pub source: Source,
    pub s3_key: Option<String>,
}

/// Soft-deletes a document: it becomes a tombstone (sync delivers it) and
/// its chunks are deleted in the same transaction, so they stop being
/// searchable at commit. `If-Match` is honoured when sent.
pub async fn delete(mut access: Access, id: DocumentId, pre: &Preconditions) -> Result<Deleted> {
    let current = lock(&mut access.tx, access.workspace, id).await?;
    check(pre, &current.document)?;
    sqlx::query("DELETE FROM chunks WHERE document_id = $1 AND workspace_id = $2")
        .bind(id)
        .bind(access.workspace)
        .execute(&mut *access.tx)
        .await?;
    sqlx::query(
        "UPDATE documents SET deleted_at = now(), updated_by = $3 WHERE id = $1 AND workspace_id = $2",
    )
    .bind(id)
    .bind(access.workspace)
    .bind(access.caller)
    .execute(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(Deleted {
        source: current.document.source,
        s3_key: current.s3_key,
    })
}

/// Filters for the document list.
#[derive(Debug, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    /// Case-insensitive substring of the title.
    pub title_contains: Option<String>,
}

macro_rules! list_page {
    ($($cond:literal)?) => {
        concat!(
            "SELECT ", summary_columns!(),
            " FROM documents WHERE workspace_id = $1 AND deleted_at IS NULL AND id < $2",
            $($cond,)?
            " ORDER BY id DESC LIMIT $3"
        )
    };
}

/// The list page statement without filters (`$1` workspace, `$2` the id to
/// start below, `$3` rows); public so benchmarks run exactly this SQL raw.
pub const LIST_PAGE_SQL: &str = list_page!();

/// A page of live documents, newest first. Keyset on the immutable id, so
/// concurrent inserts never make a page repeat or skip an existing row.
pub async fn list(
    mut access: Access,
    filter: ListFilter,
    after: Option<DocumentId>,
    limit: usize,
) -> Result<Page<Document>> {
    let pattern = filter.title_contains.as_deref().map(|q| {
        let escaped = q
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let sql = match (filter.status.is_some(), pattern.is_some()) {
        (false, false) => LIST_PAGE_SQL,
        (true, false) => list_page!(" AND status = $4"),
        (false, true) => list_page!(" AND title ILIKE $4"),
        (true, true) => list_page!(" AND status = $4 AND title ILIKE $5"),
    };
    let after = after.map_or(uuid::Uuid::max(), |id| id.0);
    // A title search is planned for its pattern each time: a cached generic
    // plan cannot know whether the pattern is rare (use the trigram index)
    // or common (walk the list index).
    let mut query = sqlx::query_as(sql)
        .persistent(pattern.is_none())
        .bind(access.workspace)
        .bind(after)
        .bind(limit as i64 + 1);
    if let Some(status) = filter.status {
        query = query.bind(status);
    }
    if let Some(pattern) = pattern {
        query = query.bind(pattern);
    }
    let rows: Vec<Document> = query.fetch_all(&mut *access.tx).await?;
    access.commit().await?;
    Ok(Page::from_rows(rows, limit, |d| d.id))
}

/// Where in its source a chunk came from, for citations.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = ChunkLocator))]
pub struct Locator {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Chunk {
    pub id: ChunkId,
    pub ordinal: i32,
    pub locator: Locator,
    pub token_count: i32,
    pub content: String,
}

/// A page of a live document's chunks in order (empty until ingested).
pub async fn chunks(
    mut access: Access,
    id: DocumentId,
    after: Option<i32>,
    limit: usize,
) -> Result<Page<Chunk>> {
    require_live(&mut access, id).await?;
    type Row = (ChunkId, i32, Option<i32>, Option<String>, i32, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, ordinal, page, heading, token_count, content FROM chunks
         WHERE document_id = $1 AND workspace_id = $2 AND ordinal > $3
         ORDER BY ordinal LIMIT $4",
    )
    .bind(id)
    .bind(access.workspace)
    .bind(after.unwrap_or(-1))
    .bind(limit as i64 + 1)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    let chunks = rows
        .into_iter()
        .map(|(id, ordinal, page, heading, token_count, content)| Chunk {
            id,
            ordinal,
            locator: Locator { page, heading },
            token_count,
            content,
        })
        .collect();
    Ok(Page::from_rows(chunks, limit, |c| c.ordinal))
}

/// 404 unless the document is live in the access's workspace.
async fn require_live(access: &mut Access, id: DocumentId) -> Result<()> {
    let found: Option<(i32,)> = sqlx::query_as(
        "SELECT 1 FROM documents WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(access.workspace)
    .fetch_optional(&mut *access.tx)
    .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("document"))
}
