//! Uploads: a document whose file the client PUTs straight to S3 with a
//! presigned URL. The document starts `pending`; the bucket's
//! ObjectCreated notification brings the file to the ingest worker.

use chrono::{DateTime, Utc};
use extraction::format::Format;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;

use crate::config::Config;
use crate::documents::{Document, full_columns, record_version_from};
use crate::error::{ApiError, Result};
use crate::ids::{DocumentId, WorkspaceId};
use crate::storage::document_prefix;
use crate::workspaces::Access;

/// `POST /workspaces/{id}/uploads`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewUpload {
    pub filename: String,
    pub content_type: String,
    /// Exact size in bytes; the presigned URL is bound to it.
    pub size: i64,
    /// Defaults to the file name.
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// How the client sends the file.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadTarget {
    pub url: String,
    pub method: &'static str,
    /// Headers the PUT must carry exactly (they are signed).
    pub headers: serde_json::Map<String, Value>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Upload {
    pub document_id: DocumentId,
    pub document: Document,
    pub upload: UploadTarget,
    pub expires_at: DateTime<Utc>,
}

/// The canonical MIME type of the declared one, if ingestion reads it
/// (`extraction::format`: aliases such as `application/x-pdf` and
/// `text/tab-separated-values` included).
pub fn allowed_type(content_type: &str) -> Option<&'static str> {
    Format::from_content_type(content_type).map(|format| format.mime())
}

/// A file name safe in an S3 key and a Content-Disposition: ASCII letters,
/// digits, `.`, `-`, `_`; anything else becomes `_`; at most 120 characters
/// keeping the extension; never empty, never a dot file.
pub fn safe_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut safe: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while safe.contains("__") {
        safe = safe.replace("__", "_");
    }
    let safe = safe.trim_matches(|c| c == '.' || c == '_').to_owned();
    let safe = if safe.chars().count() > 120 {
        match safe.rsplit_once('.') {
            Some((stem, ext)) if ext.len() <= 10 => {
                format!("{}.{ext}", &stem[..120 - ext.len() - 1])
            }
            _ => safe[..120].to_owned(),
        }
    } else {
        safe
    };
    if safe.is_empty() {
        "file".to_owned()
    } else {
        safe
    }
}

/// A checked upload request: the document's id, key and first state.
pub struct PlannedUpload {
    pub id: DocumentId,
    /// `workspaces/{wid}/documents/{did}/{safe-file-name}`.
    pub key: String,
    pub content_type: &'static str,
    pub size: i64,
    file: String,
    body: crate::documents::Body,
}

/// Checks the request (4xx problems naming the field) and names the
/// object; nothing is stored, so the URL can be signed before the
/// document exists and a signing failure leaves nothing behind.
pub fn plan(workspace: WorkspaceId, new: NewUpload, config: &Config) -> Result<PlannedUpload> {
    let filename = new.filename.trim();
    if filename.is_empty() || filename.chars().count() > 255 {
        return Err(ApiError::unprocessable(
            "filename",
            "filename must be 1 to 255 characters",
        ));
    }
    let content_type = allowed_type(&new.content_type).ok_or_else(|| {
        ApiError::unprocessable(
            "content_type",
            format!(
                "uploads are PDF, plain text, Markdown, HTML, DOCX, CSV or JSON ({})",
                Format::ALL.map(|format| format.mime()).join(", ")
            ),
        )
    })?;
    if new.size <= 0 {
        return Err(ApiError::unprocessable(
            "size",
            "size must be the file's size in bytes",
        ));
    }
    if new.size as u64 > config.ingest.upload_max_bytes {
        return Err(ApiError::too_large(
            "size",
            config.ingest.upload_max_bytes as usize,
        ));
    }
    let title = new.title.as_deref().unwrap_or(filename);
    let body = crate::documents::upload_state(
        title,
        content_type,
        new.size,
        new.metadata,
        &config.documents,
    )?;
    let id = DocumentId::new();
    let file = safe_file_name(filename);
    let key = format!("{}{file}", document_prefix(workspace, id));
    Ok(PlannedUpload {
        id,
        key,
        content_type,
        size: new.size,
        file,
        body,
    })
}

/// Creates the planned upload's pending document (version 1).
pub async fn create(mut access: Access, planned: PlannedUpload) -> Result<Document> {
    let PlannedUpload {
        id,
        key,
        content_type,
        size,
        file,
        body,
    } = planned;
    let document: Document = sqlx::query_as(concat!(
        "WITH d AS (
            INSERT INTO documents (id, workspace_id, title, source, content, content_type, size,
                                   content_sha256, etag, version, metadata, created_by, updated_by,
                                   s3_key, file_name)
            VALUES ($1, $2, $3, 'upload', NULL, $4, $5, $6, $7, 1, $8, $9, $9, $10, $11)
            RETURNING *
         ), v AS (",
        record_version_from!("d", "'create'", "NULL::integer"),
        "         ) SELECT ",
        full_columns!(),
        " FROM d"
    ))
    .bind(id)
    .bind(access.workspace)
    .bind(&body.title)
    .bind(content_type)
    .bind(size)
    .bind(&body.content_sha256)
    .bind(&body.etag)
    .bind(Json(&body.metadata))
    .bind(access.caller)
    .bind(&key)
    .bind(&file)
    .fetch_one(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_made_safe_for_keys() {
        assert_eq!(
            safe_file_name("report 2025 (final).pdf"),
            "report_2025_final_.pdf"
        );
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("C:\\Users\\me\\notes.md"), "notes.md");
        assert_eq!(safe_file_name("…"), "file");
        assert_eq!(safe_file_name(".env"), "env");
        assert_eq!(safe_file_name("ünïcödé.txt"), "n_c_d_.txt");
        let long = format!("{}.docx", "a".repeat(300));
        let safe = safe_file_name(&long);
        assert_eq!(safe.len(), 120);
        assert!(safe.ends_with(".docx"));
    }

    #[test]
    fn only_readable_types_are_accepted() {
        assert_eq!(allowed_type("application/PDF"), Some("application/pdf"));
        assert_eq!(
            allowed_type("text/plain; charset=utf-16"),
            Some("text/plain")
        );
        assert_eq!(allowed_type("text/x-markdown"), Some("text/markdown"));
        // What the extractor reads, uploads accept (these were refused).
        assert_eq!(allowed_type("application/x-pdf"), Some("application/pdf"));
        assert_eq!(allowed_type("text/tab-separated-values"), Some("text/csv"));
        assert_eq!(allowed_type("application/xhtml+xml"), Some("text/html"));
        assert_eq!(allowed_type("image/png"), None);
        assert_eq!(allowed_type("application/zip"), None);
    }
}
