//! A document's history: every state it has had, one row per version, in
//! an append-only table. Snapshots pin the current state under a label;
//! restore writes an old state as the newest version.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;

use super::{Body, Document, VersionKind, Written, check, lock, require_live, write_state};
use crate::conditional::Preconditions;
use crate::error::{ApiError, Result};
use crate::ids::{DocumentId, UserId};
use crate::pagination::Page;
use crate::workspaces::Access;

/// One version; `content` only when a single version is read.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Version {
    pub version: i32,
    pub kind: VersionKind,
    pub label: Option<String>,
    /// For `restore`: the version whose state was restored.
    pub restored_from: Option<i32>,
    pub title: String,
    pub content_type: String,
    pub size: i64,
    pub etag: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Json<Value>,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    #[sqlx(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

macro_rules! version_columns {
    () => {
        "version, kind, label, restored_from, title, content_type, size, etag, metadata, \
         created_by, created_at"
    };
}

/// Versions of a live document, newest first.
pub async fn list(
    mut access: Access,
    id: DocumentId,
    before: Option<i32>,
    limit: usize,
) -> Result<Page<Version>> {
    require_live(&mut access, id).await?;
    let rows: Vec<Version> = sqlx::query_as(concat!(
        "SELECT ",
        version_columns!(),
        " FROM document_versions WHERE document_id = $1 AND workspace_id = $2 AND version < $3
          ORDER BY version DESC LIMIT $4"
    ))
    .bind(id)
    .bind(access.workspace)
    .bind(before.unwrap_or(i32::MAX))
    .bind(limit as i64 + 1)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(Page::from_rows(rows, limit, |v| v.version))
}

/// One version of a live document, with its content.
pub async fn get(mut access: Access, id: DocumentId, version: i32) -> Result<Version> {
    require_live(&mut access, id).await?;
    let found = fetch(&mut access, id, version).await?;
    access.commit().await?;
    Ok(found)
}

async fn fetch(access: &mut Access, id: DocumentId, version: i32) -> Result<Version> {
    sqlx::query_as(concat!(
        "SELECT ",
        version_columns!(),
        ", content FROM document_versions WHERE document_id = $1 AND workspace_id = $2 AND version = $3"
    ))
    .bind(id)
    .bind(access.workspace)
    .bind(version)
    .fetch_optional(&mut *access.tx)
    .await?
    .ok_or_else(|| ApiError::not_found("version"))
}

const MAX_LABEL_CHARS: usize = 200;

/// Pins the current state as a new version labelled `label`. The content
/// and so the entity tag stay the same; the version number moves on.
pub async fn snapshot(
    mut access: Access,
    id: DocumentId,
    label: Option<String>,
) -> Result<Version> {
    let label = label.map(|l| l.trim().to_owned()).filter(|l| !l.is_empty());
    if let Some(label) = &label
        && (label.chars().count() > MAX_LABEL_CHARS || label.chars().any(char::is_control))
    {
        return Err(ApiError::unprocessable(
            "label",
            format!("label must be at most {MAX_LABEL_CHARS} printable characters"),
        ));
    }
    lock(&mut access.tx, access.workspace, id).await?;
    let version: Version = sqlx::query_as(concat!(
        "WITH d AS (
            UPDATE documents SET version = version + 1, updated_by = $3
            WHERE id = $1 AND workspace_id = $2 RETURNING *
         )
         INSERT INTO document_versions (document_id, version, workspace_id, kind, label, title, content,
             content_type, size, s3_key, content_sha256, etag, metadata, created_by)
         SELECT id, version, workspace_id, 'snapshot', $4, title, content, content_type, size, s3_key,
             content_sha256, etag, metadata, updated_by FROM d
         RETURNING ",
        version_columns!()
    ))
    .bind(id)
    .bind(access.workspace)
    .bind(access.caller)
    .bind(label)
    .fetch_one(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(version)
}

/// Makes version `version`'s state the document's newest version, if the
/// request's `If-Match` (when sent) names the current state. Restoring the
/// state the document already has changes nothing.
pub async fn restore(
    mut access: Access,
    id: DocumentId,
    version: i32,
    pre: &Preconditions,
) -> Result<Written> {
    let current = lock(&mut access.tx, access.workspace, id).await?;
    check(pre, &current.document)?;
    let old = fetch(&mut access, id, version).await?;
    let (content_sha256, s3_key): (String, Option<String>) = sqlx::query_as(
        "SELECT content_sha256, s3_key FROM document_versions
         WHERE document_id = $1 AND workspace_id = $2 AND version = $3",
    )
    .bind(id)
    .bind(access.workspace)
    .bind(version)
    .fetch_one(&mut *access.tx)
    .await?;
    if s3_key != current.s3_key {
        // Uploaded files are replaced by new uploads, not restored from history.
        return Err(ApiError::Conflict(
            "this version refers to a file that was since replaced; upload it again".into(),
        ));
    }
    let body = Body::new(
        old.title,
        old.content,
        old.content_type,
        old.size,
        old.metadata.0,
        content_sha256,
    );
    if body.etag == current.document.etag {
        access.commit().await?;
        return Ok(Written {
            document: current.document,
            content_changed: false,
            stored: false,
        });
    }
    let content_changed = body.content_sha256 != current.content_sha256;
    let document: Document = write_state(
        &mut access,
        id,
        &body,
        content_changed,
        VersionKind::Restore,
        Some(version),
    )
    .await?;
    access.commit().await?;
    Ok(Written {
        document,
        content_changed,
        stored: true,
    })
}
