//! Documents: inline create, list, read (conditional), replace (If-Match),
//! delete, versions, chunks, and incremental sync.

use common::caller::Use;
use common::conditional::Preconditions;
use common::documents::{self, ListFilter, Written, sync, versions};
use common::error::{ApiError, Result};
use common::http::{json, json_body, no_content, not_modified, path_param, respond, with_etag};
use common::ids::{DocumentId, WorkspaceId};
use common::ingest::events::DocumentChanged;
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::http::header::LOCATION;
use common::lambda_http::{Body, Request, Response};
use common::pagination::{self, query_param};
use common::state::State;
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("documents-create", create),
    common::http_function!("documents-list", list),
    common::http_function!("documents-get", get),
    common::http_function!("documents-update", update),
    common::http_function!("documents-delete", delete),
    common::http_function!("documents-versions", list_versions),
    common::http_function!("documents-version", get_version),
    common::http_function!("documents-snapshot", snapshot),
    common::http_function!("documents-restore", restore),
    common::http_function!("documents-chunks", chunks),
    common::http_function!("documents-sync", sync_changes),
];

/// The caller's access to the path's workspace (404 for non-members);
/// an API key needs a scope covering `what`.
async fn access(state: &State, req: &Request, what: Use) -> Result<Access> {
    let caller = state.caller_for(req, what).await?;
    let workspace: WorkspaceId = path_param(req, "workspace_id")?;
    Access::open(&state.db, caller, workspace).await
}

fn body_limit(state: &State) -> usize {
    state
        .config
        .max_request_bytes
        .max(state.config.documents.body_bytes())
}

/// After a stored content change: queue the new version for ingestion.
/// The document is already saved as `pending`; a queue failure is logged,
/// not returned, since the write itself succeeded.
async fn queue_ingestion(state: &State, written: &Written) {
    if !(written.stored && written.content_changed) {
        return;
    }
    let doc = &written.document;
    let changed = DocumentChanged {
        workspace_id: doc.workspace_id,
        document_id: doc.id,
        version: doc.version,
    };
    let queued = async { state.ingest_queue().await?.send(changed.to_message()).await };
    if let Err(error) = queued.await {
        tracing::error!(error = format!("{error:#}"), document = %doc.id,
            "document stored but not queued for ingestion");
    }
}

fn document_response(status: StatusCode, written: &Written) -> Result<Response<Body>> {
    Ok(with_etag(
        json(status, &written.document)?,
        &written.document.etag,
    ))
}

/// `POST /workspaces/{workspace_id}/documents` → 201 (200 for a replay of
/// the same client-chosen id and content).
pub async fn create(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let access = access(state, &req, Use::DocumentsWrite).await?;
        let new = json_body(&req, body_limit(state))?;
        let workspace = access.workspace;
        let written = documents::create(access, new, &state.config.documents).await?;
        queue_ingestion(state, &written).await;
        let status = if written.stored {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let mut response = document_response(status, &written)?;
        let location = format!("/workspaces/{workspace}/documents/{}", written.document.id);
        if let Ok(value) = location.parse() {
            response.headers_mut().insert(LOCATION, value);
        }
        Ok(response)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/documents?query=&status=&limit=&cursor=`.
pub async fn list(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let access = access(state, &req, Use::DocumentsRead).await?;
        let status = query_param(&req, "status")
            .map(|s| {
                s.parse().map_err(|_| {
                    ApiError::unprocessable(
                        "status",
                        "status is one of pending, processing, ready, failed",
                    )
                })
            })
            .transpose()?;
        let title_contains = query_param(&req, "query").map(|q| q.trim().to_owned());
        if title_contains
            .as_ref()
            .is_some_and(|q| q.chars().count() > 200 || q.chars().any(char::is_control))
        {
            return Err(ApiError::unprocessable(
                "query",
                "query must be at most 200 printable characters",
            ));
        }
        let filter = ListFilter {
            status,
            title_contains: title_contains.filter(|q| !q.is_empty()),
        };
        let limit = pagination::limit(&req, 50, 200)?;
        let after: Option<DocumentId> = pagination::cursor(&req)?;
        json(
            StatusCode::OK,
            &documents::list(access, filter, after, limit).await?,
        )
    })
    .await
}

/// `GET .../documents/{document_id}`: 304 when `If-None-Match` names the
/// current tag; 412 when `If-Match` does not.
pub async fn get(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let access = access(state, &req, Use::DocumentsRead).await?;
        let pre = Preconditions::from_headers(req.headers())?;
        let id: DocumentId = path_param(&req, "document_id")?;
        let document = documents::get(access, id).await?;
        if !pre.allow_read(&document.etag) {
            return Err(ApiError::PreconditionFailed {
                detail: "If-Match does not name the document's current ETag".into(),
                current: None,
                etag: Some(document.etag),
            });
        }
        if pre.not_modified(&document.etag) {
            return Ok(not_modified(&document.etag));
        }
        Ok(with_etag(json(StatusCode::OK, &document)?, &document.etag))
    })
    .await
}

/// `PUT .../documents/{document_id}` with `If-Match` (428 without; 412 with
/// the server's copy when stale).
pub async fn update(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let access = access(state, &req, Use::DocumentsWrite).await?;
        let pre = Preconditions::from_headers(req.headers())?;
        pre.require_if_match()?;
        let id: DocumentId = path_param(&req, "document_id")?;
        let replacement = json_body(&req, body_limit(state))?;
        let written =
            documents::replace(access, id, replacement, &pre, &state.config.documents).await?;
        queue_ingestion(state, &written).await;
        document_response(StatusCode::OK, &written)
    })
    .await
}

/// `DELETE .../documents/{document_id}` → 204; a tombstone stays for sync.
pub async fn delete(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let access = access(state, &req, Use::DocumentsWrite).await?;
        let pre = Preconditions::from_headers(req.headers())?;
        let id: DocumentId = path_param(&req, "document_id")?;
        let workspace = access.workspace;
        let deleted = documents::delete(access, id, &pre).await?;
        if deleted.source == documents::Source::Upload || deleted.s3_key.is_some() {
            // The tombstone is committed; a file left behind is only storage,
            // never served (reads and ingestion skip deleted documents).
            let removed = async {
                let bucket = state.bucket().await?;
                bucket.delete_document_files(workspace, id).await
            };
            if let Err(error) = removed.await {
                tracing::error!(error = format!("{error:#}"), document = %id,
                    "document deleted but its files were not removed");
            }
        }
        Ok(no_content())
    })
    .await
}

/// `GET .../documents/{document_id}/versions?limit=&cursor=`, newest first.
pub async fn list_versions(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let access = access(state, &req, Use::DocumentsRead).await?;
        let id: DocumentId = path_param(&req, "document_id")?;
        let limit = pagination::limit(&req, 50, 200)?;
        let before: Option<i32> = pagination::cursor(&req)?;
        json(
            StatusCode::OK,
            &versions::list(access, id, before, limit).await?,
        )
    })
    .await
}

/// `GET .../documents/{document_id}/versions/{version}` with its content.
pub async fn get_version(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let access = access(state, &req, Use::DocumentsRead).await?;
        let id: DocumentId = path_param(&req, "document_id")?;
        let version = version_param(&req)?;
        let found = versions::get(access, id, version).await?;
        Ok(with_etag(json(StatusCode::OK, &found)?, &found.etag))
    })
    .await
}

fn version_param(req: &Request) -> Result<i32> {
    path_param::<i32>(req, "version")
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            ApiError::BadRequest("path parameter version must be a positive integer".into())
        })
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SnapshotRequest {
    #[serde(default)]
    label: Option<String>,
}

/// `POST .../documents/{document_id}/versions` (optional `label`) → 201.
pub async fn snapshot(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let access = access(state, &req, Use::DocumentsWrite).await?;
        let id: DocumentId = path_param(&req, "document_id")?;
        let request: SnapshotRequest = if req.body().as_ref().iter().all(u8::is_ascii_whitespace) {
            SnapshotRequest::default()
        } else {
            json_body(&req, state.config.max_request_bytes)?
        };
        let version = versions::snapshot(access, id, request.label).await?;
        json(StatusCode::CREATED, &version)
    })
    .await
}

/// `POST .../documents/{document_id}/versions/{version}/restore` → the
/// document at its new version (`If-Match` honoured when sent).
pub async fn restore(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let access = access(state, &req, Use::DocumentsWrite).await?;
        let pre = Preconditions::from_headers(req.headers())?;
        let id: DocumentId = path_param(&req, "document_id")?;
        let version = version_param(&req)?;
        let written = versions::restore(access, id, version, &pre).await?;
        queue_ingestion(state, &written).await;
        document_response(StatusCode::OK, &written)
    })
    .await
}

/// `GET .../documents/{document_id}/chunks?limit=&cursor=` in order.
pub async fn chunks(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let access = access(state, &req, Use::DocumentsRead).await?;
        let id: DocumentId = path_param(&req, "document_id")?;
        let limit = pagination::limit(&req, 100, 500)?;
        let after: Option<i32> = pagination::cursor(&req)?;
        json(
            StatusCode::OK,
            &documents::chunks(access, id, after, limit).await?,
        )
    })
    .await
}

/// `GET /workspaces/{workspace_id}/sync?cursor=&limit=`: changes since the cursor.
pub async fn sync_changes(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let access = access(state, &req, Use::DocumentsRead).await?;
        let limit = pagination::limit(&req, 100, 200)?;
        let cursor = query_param(&req, "cursor");
        let changes = sync::changes(access, cursor.as_deref(), limit).await?;
        let mut response = json(StatusCode::OK, &changes)?;
        response.headers_mut().insert(
            common::lambda_http::http::header::CACHE_CONTROL,
            common::lambda_http::http::HeaderValue::from_static("no-store"),
        );
        Ok(response)
    })
    .await
}
