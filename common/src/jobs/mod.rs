//! Workspace jobs: bulk import of documents from a JSONL file, and export
//! of a workspace to one. Members start them here; the ingest worker runs
//! them in bounded steps through the ingest queue ([`run`], feature
//! `worker`), and anyone in the workspace follows their progress.
//!
//! An import is created with the file's size; the member PUTs the file to
//! the presigned URL, and S3's notification starts the first step. An
//! export is queued at once; when it has succeeded, reading the job gives
//! a presigned download of its JSONL.

pub mod classify;
// Only the worker reads and writes lines.
#[cfg(feature = "worker")]
pub mod lines;
#[cfg(feature = "worker")]
pub mod run;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;

use crate::error::{ApiError, Result};
use crate::ids::{JobId, UserId, WorkspaceId};
use crate::ingest::events::{JobStep, import_key_of};
use crate::pagination::Page;
use crate::state::State;
use crate::workspaces::Access;

/// The largest JSONL file an import takes (one presigned PUT).
pub const IMPORT_MAX_BYTES: i64 = 1 << 30;
/// The content type an import's file is PUT with (signed into the URL).
pub const JSONL_TYPE: &str = "application/x-ndjson";
/// How long an export's download link works.
pub const DOWNLOAD_TTL: std::time::Duration = std::time::Duration::from_secs(900);
/// Most failed lines a job keeps with their reasons (all are counted).
pub const MAX_FAILURES_KEPT: i64 = 1_000;
/// Failed lines a job's view lists.
const FAILURES_SHOWN: i64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = JobKind))]
pub enum Kind {
    Import,
    Export,
    /// A classification scheme run over documents ([`crate::jobs::classify`]).
    Classify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// Documents have a `Status` too: one name each in the API document.
#[cfg_attr(feature = "openapi", schema(as = JobStatus))]
pub enum Status {
    /// An import whose file has not arrived.
    AwaitingUpload,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Status {
    pub fn finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// `POST /workspaces/{id}/imports`: the JSONL file to come.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewImport {
    /// The file's exact size in bytes (signed into the upload URL).
    pub size: i64,
    /// A name to remember the file by.
    #[serde(default)]
    pub filename: Option<String>,
    /// Files that lines name in `file` instead of carrying content (at
    /// most 1,000): each gets a presigned PUT, to be used before the
    /// JSONL file's.
    #[serde(default)]
    pub files: Vec<ImportFile>,
}

/// A file an import's lines may name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportFile {
    /// Unique within the import, 1 to 255 characters.
    pub name: String,
    /// Its exact size in bytes (signed into its upload URL).
    pub size: i64,
    /// One the uploads take (PDF, text, Markdown, HTML, DOCX, CSV, JSON).
    pub content_type: String,
}

/// Most files one import declares.
pub const MAX_IMPORT_FILES: usize = 1_000;

/// Where to PUT one declared file.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileTarget {
    pub name: String,
    #[serde(flatten)]
    pub upload: crate::uploads::UploadTarget,
}

/// The key of an import's `n`-th declared file.
pub fn import_file_key(workspace: WorkspaceId, job: JobId, n: usize) -> String {
    format!("workspaces/{workspace}/imports/{job}/files/{n}")
}

/// `POST /workspaces/{id}/exports`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewExport {
    /// Also write each document's chunks with their embeddings.
    #[serde(default)]
    pub include_chunks: bool,
}

/// What a job has done so far.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    /// Import: lines read (blank lines are not counted).
    pub lines_read: i64,
    /// Import: documents created.
    pub created: i64,
    /// Import: lines skipped as duplicates (a live document with the same
    /// `client_id`, or without one, the same title, type, metadata and
    /// content).
    pub skipped: i64,
    /// Import: lines refused, each with its line number and reason;
    /// classify: documents refused, each with its reason.
    pub failed: i64,
    /// Export: documents written.
    pub exported: i64,
    /// Classify: documents selected when the job started.
    pub total: Option<i64>,
    /// Classify: documents classified (refused ones count as `failed`).
    pub classified: i64,
    /// Bytes read (import) or written (export).
    pub bytes: i64,
}

/// An import's documents by ingestion status.
#[derive(Debug, Default, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DocumentCounts {
    pub pending: i64,
    pub processing: i64,
    pub ready: i64,
    pub failed: i64,
}

/// One line an import refused.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LineFailure {
    pub line: i64,
    pub client_id: Option<String>,
    pub reason: String,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    pub id: JobId,
    pub workspace_id: WorkspaceId,
    pub kind: Kind,
    pub status: Status,
    pub created_by: Option<UserId>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub options: Json<Value>,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub progress: Progress,
    /// Why the job failed.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Import: its documents by ingestion status (every one `ready` or
    /// `failed`: the import is wholly ingested).
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub documents: Option<DocumentCounts>,
    /// Import: the first refused lines, by line number.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<Vec<LineFailure>>,
    /// Classify: the first refused documents, by id.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_failures: Option<Vec<DocumentFailure>>,
    /// Export, once succeeded: where to download it.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download: Option<Download>,
    /// Import, when just created: where to PUT the file.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<crate::uploads::UploadTarget>,
    /// Import, when just created with files: where to PUT each.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileTarget>>,
    #[serde(skip)]
    pub object_key: String,
}

/// A document a classify job refused, with the reason.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DocumentFailure {
    pub document_id: crate::ids::DocumentId,
    pub reason: String,
}

/// A presigned download.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Download {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

macro_rules! job_columns {
    () => {
        "id, workspace_id, kind, status, created_by, options, lines_read, created, skipped, \
         failed, exported, total, classified, bytes, error, created_at, updated_at, started_at, finished_at, \
         object_key"
    };
}

/// A planned import: its id, file key and checked request; nothing stored
/// yet, so the URL is signed before the job exists.
pub struct PlannedImport {
    pub id: JobId,
    pub key: String,
    pub size: i64,
    filename: Option<String>,
    /// The declared files, checked, with their keys.
    pub files: Vec<(ImportFile, String)>,
}

pub fn plan_import(
    workspace: WorkspaceId,
    new: NewImport,
    upload_max_bytes: u64,
) -> Result<PlannedImport> {
    if new.size <= 0 {
        return Err(ApiError::unprocessable(
            "size",
            "size must be the file's size in bytes",
        ));
    }
    if new.size > IMPORT_MAX_BYTES {
        return Err(ApiError::too_large("size", IMPORT_MAX_BYTES as usize));
    }
    let filename = new.filename.map(|f| f.trim().to_owned());
    if filename
        .as_deref()
        .is_some_and(|f| f.is_empty() || f.chars().count() > 255 || f.chars().any(char::is_control))
    {
        return Err(ApiError::unprocessable(
            "filename",
            "filename must be 1 to 255 characters, none of them control characters",
        ));
    }
    if new.files.len() > MAX_IMPORT_FILES {
        return Err(ApiError::unprocessable(
            "files",
            format!("an import declares at most {MAX_IMPORT_FILES} files"),
        ));
    }
    let id = JobId::new();
    let mut names = std::collections::HashSet::new();
    let mut files = Vec::with_capacity(new.files.len());
    for (n, mut file) in new.files.into_iter().enumerate() {
        let at = format!("files[{n}]");
        file.name = file.name.trim().to_owned();
        if file.name.is_empty()
            || file.name.chars().count() > 255
            || file.name.chars().any(char::is_control)
        {
            return Err(ApiError::unprocessable(
                &format!("{at}.name"),
                "a file's name is 1 to 255 characters, none of them control characters",
            ));
        }
        if !names.insert(file.name.clone()) {
            return Err(ApiError::unprocessable(
                &format!("{at}.name"),
                format!("{} is declared twice", file.name),
            ));
        }
        file.content_type = crate::uploads::allowed_type(&file.content_type)
            .ok_or_else(|| {
                ApiError::unprocessable(
                    &format!("{at}.content_type"),
                    "files are PDF, plain text, Markdown, HTML, DOCX, CSV or JSON",
                )
            })?
            .to_owned();
        if file.size <= 0 {
            return Err(ApiError::unprocessable(
                &format!("{at}.size"),
                "size must be the file's size in bytes",
            ));
        }
        if file.size as u64 > upload_max_bytes {
            return Err(ApiError::too_large(
                &format!("{at}.size"),
                upload_max_bytes as usize,
            ));
        }
        let key = import_file_key(workspace, id, n);
        files.push((file, key));
    }
    Ok(PlannedImport {
        id,
        key: import_key_of(workspace, id),
        size: new.size,
        filename,
        files,
    })
}

/// Creates a planned import, awaiting its file.
pub async fn create_import(mut access: Access, planned: PlannedImport) -> Result<Job> {
    let files: Vec<&ImportFile> = planned.files.iter().map(|(f, _)| f).collect();
    let options = serde_json::json!({
        "size": planned.size,
        "filename": planned.filename,
        "files": files,
    });
    let job: Job = sqlx::query_as(concat!(
        "INSERT INTO jobs (workspace_id, id, kind, status, created_by, options, object_key)
         VALUES ($1, $2, 'import', 'awaiting_upload', $3, $4, $5) RETURNING ",
        job_columns!()
    ))
    .bind(access.workspace)
    .bind(planned.id)
    .bind(access.caller)
    .bind(Json(options))
    .bind(&planned.key)
    .fetch_one(&mut *access.tx)
    .await?;
    crate::workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "import.created",
        None,
        serde_json::json!({ "job_id": planned.id, "size": planned.size }),
    )
    .await?;
    access.commit().await?;
    Ok(job)
}

/// The key of an export's JSONL file.
pub fn export_key_of(workspace: WorkspaceId, job: JobId) -> String {
    format!("workspaces/{workspace}/exports/{job}/export.jsonl")
}

/// Creates an export and queues its first step. When the queue does not
/// take the step, the job is marked failed (nothing would ever run it)
/// and the answer is 503: a retry is a new job.
pub async fn start_export(state: &State, mut access: Access, new: NewExport) -> Result<Job> {
    let id = JobId::new();
    let options = serde_json::json!({ "include_chunks": new.include_chunks });
    let key = export_key_of(access.workspace, id);
    insert_queued(&mut access, id, Kind::Export, &options, &key, None, 1).await?;
    crate::workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "export.created",
        None,
        serde_json::json!({ "job_id": id, "include_chunks": new.include_chunks }),
    )
    .await?;
    queue_first(state, access, id, 1).await
}

/// Inserts a queued job whose first step starts at `offset`, in the
/// access's transaction; [`queue_first`] commits it and queues that step.
pub(crate) async fn insert_queued(
    access: &mut Access,
    id: JobId,
    kind: Kind,
    options: &Value,
    object_key: &str,
    total: Option<i64>,
    offset: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO jobs (workspace_id, id, kind, status, created_by, options, object_key,
                           total, next_offset)
         VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8)",
    )
    .bind(access.workspace)
    .bind(id)
    .bind(kind)
    .bind(access.caller)
    .bind(Json(options))
    .bind(object_key)
    .bind(total)
    .bind(offset)
    .execute(&mut *access.tx)
    .await?;
    Ok(())
}

/// Commits a job [`insert_queued`] created and queues its first step (at
/// `offset`). When the queue does not take it, the job is marked failed
/// (nothing would ever run it) and the answer is 503: a retry is a new
/// job.
pub(crate) async fn queue_first(
    state: &State,
    mut access: Access,
    id: JobId,
    offset: i64,
) -> Result<Job> {
    let job = load(&mut access, id).await?;
    let (caller, workspace) = (access.caller, access.workspace);
    access.commit().await?;
    let step = JobStep {
        workspace_id: workspace,
        job_id: id,
        offset,
    };
    let sent = async {
        state
            .ingest_queue()
            .await?
            .send_all(std::slice::from_ref(&step.to_message()))
            .await
    };
    match sent.await {
        Ok(sent) if sent.first() == Some(&true) => Ok(job),
        outcome => {
            if let Err(error) = outcome {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "a job's first step not queued"
                );
            }
            let mut tx = crate::db::tenant_tx(&state.db, Some(caller), Some(workspace)).await?;
            sqlx::query(
                "UPDATE jobs SET status = 'failed', error = 'could not be queued',
                        finished_at = now(), updated_at = now()
                 WHERE workspace_id = $1 AND id = $2",
            )
            .bind(workspace)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Err(ApiError::ServiceUnavailable(
                "the job could not be queued; try again".into(),
            ))
        }
    }
}

/// One job with its details: an import's document counts and first
/// failures, a succeeded export's presigned download.
pub async fn get(state: &State, mut access: Access, id: JobId) -> Result<Job> {
    let mut job = load(&mut access, id).await?;
    access.commit().await?;
    if job.kind == Kind::Export && job.status == Status::Succeeded {
        let url = state
            .bucket()
            .await?
            .presign_get(
                &job.object_key,
                &format!("export-{}.jsonl", job.id),
                DOWNLOAD_TTL,
            )
            .await?;
        job.download = Some(Download {
            url,
            expires_at: Utc::now() + DOWNLOAD_TTL,
        });
    }
    Ok(job)
}

pub(crate) async fn load(access: &mut Access, id: JobId) -> Result<Job> {
    let mut job: Job = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE workspace_id = $1 AND id = $2"
    ))
    .bind(access.workspace)
    .bind(id)
    .fetch_optional(&mut *access.tx)
    .await?
    .ok_or_else(|| ApiError::not_found("job"))?;
    if job.kind == Kind::Import {
        let counts: DocumentCounts = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                    count(*) FILTER (WHERE status = 'processing') AS processing,
                    count(*) FILTER (WHERE status = 'ready') AS ready,
                    count(*) FILTER (WHERE status = 'failed') AS failed
             FROM documents WHERE workspace_id = $1 AND job_id = $2 AND deleted_at IS NULL",
        )
        .bind(access.workspace)
        .bind(id)
        .fetch_one(&mut *access.tx)
        .await?;
        let failures: Vec<LineFailure> = sqlx::query_as(
            "SELECT line, client_id, reason FROM job_failures
             WHERE workspace_id = $1 AND job_id = $2 ORDER BY line LIMIT $3",
        )
        .bind(access.workspace)
        .bind(id)
        .bind(FAILURES_SHOWN)
        .fetch_all(&mut *access.tx)
        .await?;
        job.documents = Some(counts);
        job.failures = Some(failures);
    }
    if job.kind == Kind::Classify {
        let failures = sqlx::query_as(
            "SELECT document_id, reason FROM classification_failures
             WHERE workspace_id = $1 AND job_id = $2 ORDER BY document_id LIMIT $3",
        )
        .bind(access.workspace)
        .bind(id)
        .bind(FAILURES_SHOWN)
        .fetch_all(&mut *access.tx)
        .await?;
        job.document_failures = Some(failures);
    }
    Ok(job)
}

/// The workspace's jobs, newest first.
pub async fn list(mut access: Access, limit: usize, after: Option<JobId>) -> Result<Page<Job>> {
    let jobs: Vec<Job> = sqlx::query_as(concat!(
        "SELECT ",
        job_columns!(),
        " FROM jobs WHERE workspace_id = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(access.workspace)
    .bind(after)
    .bind(limit as i64 + 1)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(Page::from_rows(jobs, limit, |j: &Job| j.id))
}

/// Cancels a job that has not finished: its steps stop at the next one
/// (what they stored stays). The job's creator or an owner/admin may;
/// cancelling a finished job is 409.
pub async fn cancel(mut access: Access, id: JobId) -> Result<Job> {
    let found: Option<(Option<UserId>, Status)> = sqlx::query_as(
        "SELECT created_by, status FROM jobs WHERE workspace_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(access.workspace)
    .bind(id)
    .fetch_optional(&mut *access.tx)
    .await?;
    let (creator, status) = found.ok_or_else(|| ApiError::not_found("job"))?;
    access.require(
        creator == Some(access.caller) || access.role.manages_members(),
        "cancel another member's job",
    )?;
    if status.finished() {
        return Err(ApiError::Conflict(format!(
            "the job has finished ({})",
            serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )));
    }
    sqlx::query(
        "UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now()
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(access.workspace)
    .bind(id)
    .execute(&mut *access.tx)
    .await?;
    let job = load(&mut access, id).await?;
    access.commit().await?;
    Ok(job)
}

/// Queues the step of a job that starts at `offset` (the worker's steps
/// queue their successors so), retrying a refused send twice.
#[cfg(feature = "worker")]
pub(crate) async fn send_next(state: &State, step: &JobStep, offset: i64) -> anyhow::Result<()> {
    let next = JobStep {
        offset,
        ..step.clone()
    };
    let queue = state.ingest_queue().await?;
    let body = next.to_message();
    let mut attempt = 0;
    loop {
        match queue.send_all(std::slice::from_ref(&body)).await {
            Ok(sent) if sent.first() == Some(&true) => return Ok(()),
            Ok(_) if attempt >= 2 => anyhow::bail!("SQS refused the job's next step"),
            Err(error) if attempt >= 2 => return Err(error),
            _ => {}
        }
        attempt += 1;
        tokio::time::sleep(std::time::Duration::from_millis(200 << attempt)).await;
    }
}
