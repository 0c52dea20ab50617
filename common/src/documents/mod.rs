//! Documents: a workspace's sources of knowledge, with optimistic
//! concurrency (entity tags), an append-only version history, soft deletes
//! (tombstones that sync delivers) and their chunks once ingested.
//!
//! Every function takes an [`Access`], so it runs in a transaction scoped
//! to a workspace the caller belongs to; documents of other workspaces are
//! invisible (404), by the explicit `workspace_id` filters and by RLS.

pub mod sync;
pub mod versions;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
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
pub enum Source {
    Inline,
    Upload,
}

/// A document as the API shows it. `content` is present only where one
/// document is read whole (GET, writes, 412 bodies); lists and sync carry
/// the rest and the client fetches bodies by `ETag`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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
pub enum VersionKind {
    Create,
    Update,
    Snapshot,
    Restore,
}

/// Validated content and its hashes.
pub(crate) struct Body {
    pub(crate) title: String,
    pub(crate) content: Option<String>,
    pub(crate) content_type: String,
    pub(crate) size: i64,
    pub(crate) metadata: Value,
    pub(crate) content_sha256: String,
    pub(crate) etag: String,
}

/// The first state of an uploaded document: title and metadata checked,
/// content unknown until the file arrives (empty content hash).
pub(crate) fn upload_state(
    title: &str,
    content_type: &str,
    size: i64,
    metadata: Option<Value>,
    limits: &DocumentLimits,
) -> Result<Body> {
    Ok(Body::new(
        clean_title(title, limits)?,
        None,
        content_type.to_owned(),
        size,
        clean_metadata(metadata, limits)?,
        String::new(),
    ))
}

const INLINE_TYPES: &[&str] = &["text/plain", "text/markdown", "application/json"];

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn clean_title(title: &str, limits: &DocumentLimits) -> Result<String> {
    let title = title.trim();
    if title.is_empty() {
        return Err(ApiError::unprocessable("title", "title must not be empty"));
    }
    if title.chars().count() > limits.title_chars {
        return Err(ApiError::unprocessable(
            "title",
            format!("title must be at most {} characters", limits.title_chars),
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "title",
            "title must not contain control characters",
        ));
    }
    Ok(title.to_owned())
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether any key or string in `value` holds NUL (jsonb cannot store it).
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn clean_metadata(metadata: Option<Value>, limits: &DocumentLimits) -> Result<Value> {
    let metadata = metadata.unwrap_or_else(|| Value::Object(Default::default()));
    let Value::Object(map) = &metadata else {
        return Err(ApiError::unprocessable(
            "metadata",
            "metadata must be a JSON object",
        ));
    };
    if map.keys().any(|k| k.is_empty() || k.chars().count() > 128) {
        return Err(ApiError::unprocessable(
            "metadata",
            "metadata keys must be 1 to 128 characters",
        ));
    }
    if has_nul(&metadata) {
        return Err(ApiError::unprocessable(
            "metadata",
            "metadata must not contain NUL characters",
        ));
    }
    if serde_json::to_vec(&metadata).map_or(0, |v| v.len()) > limits.metadata_bytes {
        return Err(ApiError::too_large("metadata", limits.metadata_bytes));
    }
    if depth(&metadata) > limits.metadata_depth {
        return Err(ApiError::unprocessable(
            "metadata",
            format!(
                "metadata may nest at most {} levels deep",
                limits.metadata_depth
            ),
        ));
    }
    Ok(metadata)
}

/// Inline content: a string in one of [`INLINE_TYPES`], or any JSON value.
fn clean_content(
    content: Value,
    content_type: Option<&str>,
    limits: &DocumentLimits,
) -> Result<(String, String)> {
    let declared = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    if let Some(ct) = &declared
        && !INLINE_TYPES.contains(&ct.as_str())
    {
        return Err(ApiError::unprocessable(
            "content_type",
            format!(
                "inline documents are {}; upload other formats",
                INLINE_TYPES.join(", ")
            ),
        ));
    }
    let (text, content_type) = match content {
        Value::String(text) => {
            let ct = declared.unwrap_or_else(|| "text/plain".to_owned());
            if ct == "application/json" {
                let parsed = serde_json::from_str::<Value>(&text).map_err(|_| {
                    ApiError::unprocessable(
                        "content",
                        "content is declared application/json but is not valid JSON",
                    )
                })?;
                // Stored escaped it fits, but its extracted text would not.
                if has_nul(&parsed) {
                    return Err(nul_content());
                }
            }
            (text, ct)
        }
        Value::Null => {
            return Err(ApiError::unprocessable(
                "content",
                "content must be text or a JSON value",
            ));
        }
        value => {
            if declared
                .as_deref()
                .is_some_and(|ct| ct != "application/json")
            {
                return Err(ApiError::unprocessable(
                    "content_type",
                    "structured content is application/json",
                ));
            }
            if has_nul(&value) {
                return Err(nul_content());
            }
            let text = serde_json::to_string(&value)
                .map_err(|e| anyhow::anyhow!("serializing content: {e}"))?;
            (text, "application/json".to_owned())
        }
    };
    if text.len() > limits.content_bytes {
        return Err(ApiError::too_large("content", limits.content_bytes));
    }
    if text.contains('\0') {
        // Postgres text cannot hold NUL.
        return Err(nul_content());
    }
    Ok((text, content_type))
}

/// Content holding U+0000, raw or (in JSON) escaped: neither the content
/// column nor the chunks extracted from it could store it.
fn nul_content() -> ApiError {
    ApiError::unprocessable("content", "content must not contain NUL characters")
}

impl Body {
    fn new(
        title: String,
        content: Option<String>,
        content_type: String,
        size: i64,
        metadata: Value,
        content_sha256: String,
    ) -> Self {
        let meta = serde_json::to_vec(&metadata).unwrap_or_default();
        let etag = sha256_hex(&[
            title.as_bytes(),
            content_type.as_bytes(),
            &meta,
            content_sha256.as_bytes(),
        ]);
        Self {
            title,
            content,
            content_type,
            size,
            metadata,
            content_sha256,
            etag,
        }
    }

    fn inline(
        title: &str,
        content: Value,
        content_type: Option<&str>,
        metadata: Option<Value>,
        limits: &DocumentLimits,
    ) -> Result<Self> {
        let title = clean_title(title, limits)?;
        let (text, content_type) = clean_content(content, content_type, limits)?;
        let metadata = clean_metadata(metadata, limits)?;
        let sha = sha256_hex(&[text.as_bytes()]);
        let size = text.len() as i64;
        Ok(Self::new(
            title,
            Some(text),
            content_type,
            size,
            metadata,
            sha,
        ))
    }
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
pub struct Locator {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
}

#[derive(Debug, Serialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DocumentLimits {
        DocumentLimits {
            content_bytes: 100,
            title_chars: 10,
            metadata_bytes: 64,
            metadata_depth: 2,
        }
    }

    #[test]
    fn etag_covers_title_type_metadata_and_content() {
        let base = Body::inline("t", "hello".into(), None, None, &limits()).unwrap();
        let same =
            Body::inline(" t ", "hello".into(), Some("text/plain"), None, &limits()).unwrap();
        assert_eq!(base.etag, same.etag);
        for other in [
            Body::inline("u", "hello".into(), None, None, &limits()),
            Body::inline("t", "hello!".into(), None, None, &limits()),
            Body::inline("t", "hello".into(), Some("text/markdown"), None, &limits()),
            Body::inline(
                "t",
                "hello".into(),
                None,
                Some(serde_json::json!({"a": 1})),
                &limits(),
            ),
        ] {
            assert_ne!(other.unwrap().etag, base.etag);
        }
        assert_eq!(base.etag.len(), 64);
    }

    #[test]
    fn limits_name_their_field() {
        let field = |r: Result<Body>| match r {
            Err(ApiError::Unprocessable { field, .. }) => (422, field.unwrap()),
            Err(ApiError::PayloadTooLarge { field, .. }) => (413, field.unwrap()),
            other => panic!("expected a problem, got {:?}", other.map(|b| b.etag)),
        };
        let l = limits();
        assert_eq!(
            field(Body::inline("", "x".into(), None, None, &l)),
            (422, "title".into())
        );
        assert_eq!(
            field(Body::inline("12345678901", "x".into(), None, None, &l)),
            (422, "title".into())
        );
        assert_eq!(
            field(Body::inline("t", "x".repeat(101).into(), None, None, &l)),
            (413, "content".into())
        );
        assert_eq!(
            field(Body::inline("t", "x".into(), Some("image/png"), None, &l)),
            (422, "content_type".into())
        );
        assert_eq!(
            field(Body::inline(
                "t",
                "{".into(),
                Some("application/json"),
                None,
                &l
            )),
            (422, "content".into())
        );
        assert_eq!(
            field(Body::inline("t", Value::Null, None, None, &l)),
            (422, "content".into())
        );
        let deep = serde_json::json!({"a": {"b": {"c": 1}}});
        assert_eq!(
            field(Body::inline("t", "x".into(), None, Some(deep), &l)),
            (422, "metadata".into())
        );
        let big = serde_json::json!({"a": "y".repeat(100)});
        assert_eq!(
            field(Body::inline("t", "x".into(), None, Some(big), &l)),
            (413, "metadata".into())
        );
        assert_eq!(
            field(Body::inline(
                "t",
                "x".into(),
                None,
                Some(serde_json::json!([1])),
                &l
            )),
            (422, "metadata".into())
        );
        let nul = serde_json::json!({"a": ["ok", "bad\u{0}"]});
        assert_eq!(
            field(Body::inline("t", "x".into(), None, Some(nul.clone()), &l)),
            (422, "metadata".into())
        );
        // In content: raw, in a JSON value, escaped in JSON text.
        for (content, content_type) in [
            (Value::from("a\u{0}b"), None),
            (nul, None),
            (Value::from(r#"{"k": "\u0000"}"#), Some("application/json")),
        ] {
            assert_eq!(
                field(Body::inline("t", content, content_type, None, &l)),
                (422, "content".into())
            );
        }
        // Escaped NUL in text that is not JSON is just those six characters.
        assert!(Body::inline("t", r#"{"k": "\u0000"}"#.into(), None, None, &l).is_ok());
    }

    #[test]
    fn structured_content_is_stored_as_json() {
        let body = Body::inline(
            "t",
            serde_json::json!({"b": 1, "a": [true]}),
            None,
            None,
            &limits(),
        )
        .unwrap();
        assert_eq!(body.content_type, "application/json");
        assert_eq!(body.content.as_deref(), Some(r#"{"a":[true],"b":1}"#));
    }

    mod properties {
        use super::*;
        use crate::fuzz;
        use proptest::prelude::*;

        fn content_type() -> impl Strategy<Value = Option<String>> {
            prop::option::of(prop_oneof![
                prop::sample::select(vec![
                    "text/plain",
                    "application/json",
                    "text/markdown; charset=utf-8",
                    "TEXT/HTML",
                    "image/png",
                    "",
                    ";",
                ])
                .prop_map(str::to_owned),
                fuzz::text(),
            ])
        }

        proptest! {
            #![proptest_config(fuzz::config())]

            /// Any inline document: stored as checked, or refused naming one
            /// of its own members; what is stored holds no NUL anywhere and
            /// keeps to the limits.
            #[test]
            fn any_inline_document_is_stored_clean_or_refused_naming_its_field(
                title in fuzz::text(),
                content in fuzz::json(),
                content_type in content_type(),
                metadata in prop::option::of(fuzz::json()),
            ) {
                let l = limits();
                match Body::inline(&title, content, content_type.as_deref(), metadata, &l) {
                    Ok(body) => {
                        let text = body.content.unwrap();
                        prop_assert!(!body.title.is_empty() && !body.title.contains('\0'));
                        prop_assert!(!text.contains('\0') && text.len() <= l.content_bytes);
                        prop_assert!(!has_nul(&body.metadata) && body.metadata.is_object());
                        if body.content_type == "application/json" {
                            let parsed: Value = serde_json::from_str(&text).unwrap();
                            prop_assert!(!has_nul(&parsed));
                        }
                    }
                    Err(error) => {
                        let field = fuzz::field(&error);
                        prop_assert!(
                            matches!(field, Some("title" | "content" | "content_type" | "metadata")),
                            "{error:?}"
                        );
                    }
                }
            }
        }
    }
}
