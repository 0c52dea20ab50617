//! Share links: a member hands out a read-only link to one object of a
//! workspace (a document, a chat session of their own, or a job that has
//! succeeded: its counts, a classification's results, an export's
//! download) that anyone holding it may open without signing in, until it
//! expires or is revoked.
//! The token is shown once; only its SHA-256 is stored. Opening a link
//! shows that object only, as its creator sees it now, and is rate-limited
//! per source address; an unknown, revoked or expired link, or one whose
//! object is gone, is the same 404; so is one whose creator has left the
//! workspace since (listed as `inactive`). Creating and revoking a link
//! are written to the audit log.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::error::{ApiError, Result};
use crate::ids::{DocumentId, JobId, ShareLinkId, UserId, WorkspaceId};
use crate::jobs;
use crate::pagination::Page;
use crate::rate_limit::{self, Rule};
use crate::workspaces::{self, Access};

const TOKEN_PREFIX: &str = "rws_";
/// `rws_` and 32 random bytes in unpadded base64url.
const TOKEN_CHARS: usize = TOKEN_PREFIX.len() + 43;
/// A link's lifetime when the request names none: a week.
pub const DEFAULT_EXPIRY_HOURS: u32 = 7 * 24;
/// The longest lifetime a link may have: 90 days. Links are bearer
/// secrets; a long-lived one is created again rather than kept forever.
pub const MAX_EXPIRY_HOURS: u32 = 90 * 24;
/// Views per source address per minute, unknown tokens included, so
/// guessing costs the guesser.
pub const VIEWS_PER_IP_PER_MINUTE: u32 = 60;
/// Bytes of passages, messages or results one view carries, the first
/// ones in order, up to the one that crosses this (a document may have
/// thousands of chunks, and a Lambda response is at most 6 MB).
const MAX_SHARED_BYTES: i64 = 4 * 1024 * 1024;

/// What a link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TargetKind {
    Document,
    ChatSession,
    /// A job of the workspace that has succeeded: its results.
    Job,
}

/// `POST .../shares`: exactly one target (a document, one of the caller's
/// chat sessions, or a job that has succeeded), and optionally a lifetime.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewShare {
    #[serde(default)]
    pub document_id: Option<DocumentId>,
    #[serde(default)]
    pub chat_session_id: Option<Uuid>,
    #[serde(default)]
    pub job_id: Option<JobId>,
    /// Hours until the link stops working: 1 to 2160 (90 days), 168 by default.
    #[serde(default)]
    pub expires_in_hours: Option<u32>,
}

/// A link as listings show it: never its token.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShareLink {
    pub id: ShareLinkId,
    pub workspace_id: WorkspaceId,
    pub target_kind: TargetKind,
    pub target_id: Uuid,
    /// `active`, `expired`, `revoked`, or `inactive`: its creator has
    /// left the workspace since it was made (also when invited back
    /// later), and it no longer opens.
    pub status: String,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_viewed_at: Option<DateTime<Utc>>,
    pub view_count: i64,
}

/// A link just created: the listing fields, and the token, shown this once.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedShare {
    #[serde(flatten)]
    pub link: ShareLink,
    pub token: String,
    /// `/share/{token}`: the path under the API's base URL that opens it.
    pub path: String,
}

/// What `GET /share/{token}` shows: the shared object only.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedView {
    pub kind: TargetKind,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<SharedDocument>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_session: Option<SharedSession>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<SharedJob>,
}

/// A shared document: its title, type, own metadata and current text; no
/// storage location, no author ids, no other document.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedDocument {
    pub title: String,
    pub content_type: String,
    pub size: i64,
    pub version: i32,
    pub status: crate::documents::Status,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Json<Value>,
    pub updated_at: DateTime<Utc>,
    /// The text as written, for a document sent inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// For an uploaded file, its extracted text as ingestion chunked it,
    /// in order (neighbouring passages overlap a little); empty until
    /// ingested.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passages: Vec<SharedPassage>,
    /// Whether passages past the first 4 MiB or so of text were left out.
    #[sqlx(skip)]
    pub truncated: bool,
}

/// One passage of an uploaded document's text.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedPassage {
    pub ordinal: i32,
    pub page: Option<i32>,
    pub heading: Option<String>,
    pub text: String,
}

/// A shared chat session: its title and messages with their citations.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedSession {
    pub title: String,
    pub created_at: DateTime<Utc>,
    pub messages: Vec<SharedMessage>,
    /// Whether messages past the first 4 MiB or so were left out.
    pub truncated: bool,
}

/// One message of a shared session (no token usage).
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedMessage {
    pub role: String,
    pub content: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::answer::Citation>))]
    pub citations: Json<Value>,
    pub created_at: DateTime<Utc>,
}

/// A shared job: what it is and what it did; for a classification its
/// scheme and results, for an export its download. No ids of its creator,
/// workspace or documents, no chunk ids, no error or storage location.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedJob {
    pub id: JobId,
    pub kind: jobs::Kind,
    pub status: jobs::Status,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub progress: SharedProgress,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Classify: the scheme the documents were sorted by.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<SharedScheme>,
    /// Classify: each live document's values, in document order
    /// (documents deleted since are left out).
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<SharedResult>>,
    /// Classify: whether results past the first 4 MiB or so were left out.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Export: where to download its JSONL (the URL works for 15 minutes).
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download: Option<jobs::Download>,
    #[serde(skip)]
    object_key: String,
}

/// A shared job's counts, as the job shows them.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedProgress {
    /// Import: documents created.
    pub created: i64,
    /// Import: lines skipped as duplicates.
    pub skipped: i64,
    /// Import: lines refused; classify: documents refused.
    pub failed: i64,
    /// Export: documents written.
    pub exported: i64,
    /// Classify: documents selected when the job started.
    pub total: Option<i64>,
    /// Classify: documents classified.
    pub classified: i64,
}

/// The scheme of a shared classification: its name and fields.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedScheme {
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::jobs::classify::Field>))]
    pub fields: Json<Vec<crate::jobs::classify::Field>>,
}

/// One document's values in a shared classification.
#[derive(Debug, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedResult {
    pub title: String,
    /// By field name.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, SharedValue>))]
    pub values: Json<BTreeMap<String, SharedValue>>,
}

/// One field's value of a document, and how sure the classifier was.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SharedValue {
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub value: Value,
    pub confidence: Option<f32>,
}

/// A link's columns as [`ShareLink`]. A link whose creator is no member,
/// or a member only since after the link was made (they left and came
/// back), is `inactive`: [`view`] refuses it.
macro_rules! link_columns {
    () => {
        "s.id, s.workspace_id, s.target_kind, s.target_id, \
         CASE WHEN s.revoked_at IS NOT NULL THEN 'revoked' \
              WHEN s.expires_at <= now() THEN 'expired' \
              WHEN NOT EXISTS (SELECT 1 FROM workspace_members m \
                               WHERE m.workspace_id = s.workspace_id AND m.user_id = s.created_by \
                                 AND m.created_at <= s.created_at) THEN 'inactive' \
              ELSE 'active' END AS status, \
         s.created_by, s.created_at, s.expires_at, s.revoked_at, s.last_viewed_at, s.view_count"
    };
}

fn new_token() -> (String, Vec<u8>) {
    crate::auth::secret_token(TOKEN_PREFIX)
}

/// The stored form of a token as the client sent it.
fn digest(token: &str) -> Vec<u8> {
    crate::auth::token_digest(token.trim())
}

fn not_found() -> ApiError {
    ApiError::not_found("share link")
}

/// Creates a link to a live document of the workspace (any member), to
/// one of the caller's own chat sessions (another member's is 404, as
/// everywhere), or to a job of the workspace (any member) that has
/// succeeded (409 before: a running job's results still change). The
/// token is in the answer only.
pub async fn create(mut access: Access, new: NewShare) -> Result<CreatedShare> {
    let (kind, target) = match (new.document_id, new.chat_session_id, new.job_id) {
        (Some(document), None, None) => (TargetKind::Document, document.0),
        (None, Some(session), None) => (TargetKind::ChatSession, session),
        (None, None, Some(job)) => (TargetKind::Job, job.0),
        _ => {
            return Err(ApiError::unprocessable(
                "document_id",
                "give exactly one of document_id, chat_session_id and job_id",
            ));
        }
    };
    let hours = new.expires_in_hours.unwrap_or(DEFAULT_EXPIRY_HOURS);
    if !(1..=MAX_EXPIRY_HOURS).contains(&hours) {
        return Err(ApiError::unprocessable(
            "expires_in_hours",
            format!("expires_in_hours must be between 1 and {MAX_EXPIRY_HOURS}"),
        ));
    }
    let visible: bool = match kind {
        TargetKind::Document => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM documents
                                WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL)",
            )
            .bind(target)
            .bind(access.workspace)
            .fetch_one(&mut *access.tx)
            .await?
        }
        // The explicit user filter repeats what RLS enforces.
        TargetKind::ChatSession => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM chat_sessions
                                WHERE id = $1 AND workspace_id = $2 AND user_id = $3)",
            )
            .bind(target)
            .bind(access.workspace)
            .bind(access.caller)
            .fetch_one(&mut *access.tx)
            .await?
        }
        TargetKind::Job => {
            let status: Option<jobs::Status> =
                sqlx::query_scalar("SELECT status FROM jobs WHERE workspace_id = $1 AND id = $2")
                    .bind(access.workspace)
                    .bind(target)
                    .fetch_optional(&mut *access.tx)
                    .await?;
            if status.is_some_and(|s| s != jobs::Status::Succeeded) {
                return Err(ApiError::Conflict("the job has not succeeded".into()));
            }
            status.is_some()
        }
    };
    if !visible {
        return Err(ApiError::not_found(match kind {
            TargetKind::Document => "document",
            TargetKind::ChatSession => "chat session",
            TargetKind::Job => "job",
        }));
    }
    let (token, hash) = new_token();
    let id = ShareLinkId::new();
    sqlx::query(
        "INSERT INTO share_links (id, workspace_id, created_by, target_kind, target_id, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(hours => $7))",
    )
    .bind(id)
    .bind(access.workspace)
    .bind(access.caller)
    .bind(kind)
    .bind(target)
    .bind(&hash)
    .bind(hours as i32)
    .execute(&mut *access.tx)
    .await?;
    let link = one(&mut access.tx, access.workspace, id).await?;
    workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "share.created",
        None,
        serde_json::json!({
            "share_id": id, "target_kind": kind, "target_id": target, "expires_at": link.expires_at,
        }),
    )
    .await?;
    access.commit().await?;
    Ok(CreatedShare {
        link,
        path: format!("/share/{token}"),
        token,
    })
}

async fn one(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    id: ShareLinkId,
) -> Result<ShareLink> {
    sqlx::query_as(concat!(
        "SELECT ",
        link_columns!(),
        " FROM share_links s WHERE s.workspace_id = $1 AND s.id = $2"
    ))
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(not_found)
}

/// The caller's links in the workspace, newest first; owners and admins
/// see everyone's.
pub async fn list(
    mut access: Access,
    limit: usize,
    after: Option<(DateTime<Utc>, ShareLinkId)>,
) -> Result<Page<ShareLink>> {
    let everyone = access.role.manages_members();
    let rows = sqlx::query_as(concat!(
        "SELECT ",
        link_columns!(),
        " FROM share_links s
         WHERE s.workspace_id = $1 AND ($2 OR s.created_by = $3)
           AND ($4::timestamptz IS NULL OR (s.created_at, s.id) < ($4, $5))
         ORDER BY s.created_at DESC, s.id DESC LIMIT $6"
    ))
    .bind(access.workspace)
    .bind(everyone)
    .bind(access.caller)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit as i64 + 1)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(Page::from_rows(rows, limit, |s: &ShareLink| {
        (s.created_at, s.id)
    }))
}

/// Revokes a link (its creator, or an owner or admin); it stops working at
/// once. Revoking it again changes nothing. Another member's link is 404,
/// as it is absent from their listing.
pub async fn revoke(mut access: Access, id: ShareLinkId) -> Result<()> {
    let link = one(&mut access.tx, access.workspace, id).await?;
    if link.created_by != access.caller && !access.role.manages_members() {
        return Err(not_found());
    }
    let revoked = sqlx::query(
        "UPDATE share_links SET revoked_at = now(), revoked_by = $3
         WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(access.workspace)
    .bind(id)
    .bind(access.caller)
    .execute(&mut *access.tx)
    .await?
    .rows_affected()
        == 1;
    if revoked {
        workspaces::audit(
            &mut access.tx,
            access.workspace,
            access.caller,
            "share.revoked",
            None,
            serde_json::json!({
                "share_id": id, "target_kind": link.target_kind, "target_id": link.target_id,
                "created_by": link.created_by,
            }),
        )
        .await?;
    }
    access.commit().await
}

/// Opens a link: counted per source address first (429 past
/// [`VIEWS_PER_IP_PER_MINUTE`]), then the shared object as the link's
/// creator sees it now, read-only. 404 alike for a token that is unknown,
/// revoked or expired, whose creator left the workspace, or whose object
/// was deleted since.
pub async fn view(state: &crate::state::State, token: &str, source_ip: &str) -> Result<SharedView> {
    let db = &state.db;
    rate_limit::hit(
        db,
        &format!(
            "share-view:ip:{}",
            crate::auth::throttle::source_of(source_ip)
        ),
        Rule {
            limit: VIEWS_PER_IP_PER_MINUTE,
            window: std::time::Duration::from_secs(60),
        },
    )
    .await?;
    let token = token.trim();
    if !token.starts_with(TOKEN_PREFIX) || token.len() != TOKEN_CHARS {
        return Err(not_found());
    }
    type Link = (
        ShareLinkId,
        WorkspaceId,
        UserId,
        TargetKind,
        Uuid,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let link: Option<Link> = sqlx::query_as(
        "SELECT id, workspace_id, created_by, target_kind, target_id, created_at, expires_at
         FROM share_link_lookup($1)",
    )
    .bind(digest(token))
    .fetch_optional(db)
    .await?;
    let (id, workspace, creator, kind, target, created_at, expires_at) =
        link.ok_or_else(not_found)?;
    // Scoped to the creator in the link's workspace: row-level security
    // then shows exactly what they may see, their own sessions included.
    let mut tx = crate::db::tenant_tx(db, Some(creator), Some(workspace)).await?;
    // Made during the creator's current membership: a member who left
    // takes their links along, also if invited back later.
    let member: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM workspace_members
                        WHERE workspace_id = $1 AND user_id = $2 AND created_at <= $3)",
    )
    .bind(workspace)
    .bind(creator)
    .bind(created_at)
    .fetch_one(&mut *tx)
    .await?;
    if !member {
        return Err(not_found());
    }
    let mut view = SharedView {
        kind,
        expires_at,
        document: None,
        chat_session: None,
        job: None,
    };
    match kind {
        TargetKind::Document => {
            view.document = Some(
                shared_document(&mut tx, workspace, target)
                    .await?
                    .ok_or_else(not_found)?,
            )
        }
        TargetKind::ChatSession => {
            view.chat_session = Some(
                shared_session(&mut tx, workspace, creator, target)
                    .await?
                    .ok_or_else(not_found)?,
            )
        }
        TargetKind::Job => {
            view.job = Some(
                shared_job(&mut tx, workspace, JobId(target))
                    .await?
                    .ok_or_else(not_found)?,
            )
        }
    }
    sqlx::query(
        "UPDATE share_links SET view_count = view_count + 1, last_viewed_at = now()
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Some(job) = view.job.as_mut().filter(|j| j.kind == jobs::Kind::Export) {
        let url = state
            .bucket()
            .await?
            .presign_get(
                &job.object_key,
                &format!("export-{}.jsonl", job.id),
                jobs::DOWNLOAD_TTL,
            )
            .await?;
        job.download = Some(jobs::Download {
            url,
            expires_at: Utc::now() + jobs::DOWNLOAD_TTL,
        });
    }
    Ok(view)
}

async fn shared_document(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    id: Uuid,
) -> Result<Option<SharedDocument>> {
    let document: Option<SharedDocument> = sqlx::query_as(
        "SELECT title, content_type, size, version, status, metadata, updated_at, content
         FROM documents WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(workspace)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(mut document) = document else {
        return Ok(None);
    };
    if document.content.is_none() {
        let (passages, truncated) = within_budget(
            sqlx::query_as(
                "SELECT ordinal, page, heading, text, total FROM (
                    SELECT ordinal, page, heading, content AS text, count(*) OVER () AS total,
                           octet_length(content) AS bytes,
                           sum(octet_length(content)) OVER (ORDER BY ordinal) AS upto
                    FROM chunks WHERE document_id = $1 AND workspace_id = $2) c
                 WHERE upto - bytes < $3 ORDER BY ordinal",
            )
            .bind(id)
            .bind(workspace)
            .bind(MAX_SHARED_BYTES)
            .fetch_all(&mut **tx)
            .await?,
        );
        document.passages = passages;
        document.truncated = truncated;
    }
    Ok(Some(document))
}

/// A job that has succeeded, with a classification's scheme and results
/// (an export's download is signed once the transaction is over).
async fn shared_job(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    id: JobId,
) -> Result<Option<SharedJob>> {
    let job: Option<SharedJob> = sqlx::query_as(
        "SELECT id, kind, status, created, skipped, failed, exported, total, classified,
                created_at, finished_at, object_key
         FROM jobs WHERE workspace_id = $1 AND id = $2 AND status = 'succeeded'",
    )
    .bind(workspace)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(mut job) = job else {
        return Ok(None);
    };
    if job.kind == jobs::Kind::Classify {
        // A deleted scheme's jobs and results stay, and so does the link.
        let scheme: Option<SharedScheme> = sqlx::query_as(
            "SELECT s.name, s.fields FROM jobs j
             JOIN classification_schemes s
               ON s.workspace_id = j.workspace_id AND s.id = (j.options->>'scheme_id')::uuid
             WHERE j.workspace_id = $1 AND j.id = $2",
        )
        .bind(workspace)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(scheme) = scheme else {
            return Ok(None);
        };
        // Per live document, its values by field; the byte budget is
        // spent by whole documents in id order.
        let (results, truncated) = within_budget(
            sqlx::query_as(
                "SELECT title, values, total FROM (
                    SELECT d.id, d.title, r.values, count(*) OVER () AS total,
                           octet_length(d.title) + octet_length(r.values::text) AS bytes,
                           sum(octet_length(d.title) + octet_length(r.values::text))
                               OVER (ORDER BY d.id) AS upto
                    FROM (SELECT document_id,
                                 jsonb_object_agg(field, jsonb_build_object(
                                     'value', value, 'confidence', confidence)) AS values
                          FROM classification_results
                          WHERE workspace_id = $1 AND job_id = $2
                          GROUP BY document_id) r
                    JOIN documents d ON d.workspace_id = $1 AND d.id = r.document_id
                         AND d.deleted_at IS NULL) x
                 WHERE upto - bytes < $3 ORDER BY id",
            )
            .bind(workspace)
            .bind(id)
            .bind(MAX_SHARED_BYTES)
            .fetch_all(&mut **tx)
            .await?,
        );
        job.scheme = Some(scheme);
        job.results = Some(results);
        job.truncated = Some(truncated);
    }
    Ok(Some(job))
}

async fn shared_session(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    creator: UserId,
    id: Uuid,
) -> Result<Option<SharedSession>> {
    let session: Option<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT title, created_at FROM chat_sessions
         WHERE id = $1 AND workspace_id = $2 AND user_id = $3",
    )
    .bind(id)
    .bind(workspace)
    .bind(creator)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((title, created_at)) = session else {
        return Ok(None);
    };
    let (messages, truncated) = within_budget(
        sqlx::query_as(
            "SELECT role, content, citations, created_at, total FROM (
                SELECT id, role, content, citations, created_at, count(*) OVER () AS total,
                       octet_length(content) + octet_length(citations::text) AS bytes,
                       sum(octet_length(content) + octet_length(citations::text))
                           OVER (ORDER BY id) AS upto
                FROM chat_messages WHERE workspace_id = $1 AND session_id = $2) m
             WHERE upto - bytes < $3 ORDER BY id",
        )
        .bind(workspace)
        .bind(id)
        .bind(MAX_SHARED_BYTES)
        .fetch_all(&mut **tx)
        .await?,
    );
    Ok(Some(SharedSession {
        title,
        created_at,
        messages,
        truncated,
    }))
}

/// A row and the count of all rows, of which only those within the byte
/// budget were fetched.
#[derive(sqlx::FromRow)]
struct Counted<T> {
    #[sqlx(flatten)]
    item: T,
    total: i64,
}

/// The rows fetched, and whether some were left out.
fn within_budget<T>(rows: Vec<Counted<T>>) -> (Vec<T>, bool) {
    let total = rows.first().map_or(0, |r| r.total);
    let items: Vec<T> = rows.into_iter().map(|r| r.item).collect();
    let truncated = (items.len() as i64) < total;
    (items, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unguessable_and_stored_hashed() {
        let (a, hash_a) = new_token();
        let (b, _) = new_token();
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_CHARS);
        assert_ne!(a, b);
        assert_eq!(hash_a.len(), 32);
        assert_eq!(hash_a, digest(&a));
    }
}
