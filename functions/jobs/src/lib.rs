//! Workspace jobs: bulk import from a JSONL file (presigned upload, then
//! the ingest worker), export to one (a presigned download once done),
//! and following or cancelling them.

use common::caller::Use;
use common::http::{json, json_body, path_param, respond};
use common::jobs;
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::pagination;
use common::state::State;
use common::uploads::UploadTarget;
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("jobs-import", import),
    common::http_function!("jobs-export", export),
    common::http_function!("jobs-list", list),
    common::http_function!("jobs-get", get),
    common::http_function!("jobs-cancel", cancel),
];

/// `POST /workspaces/{workspace_id}/imports` `{size, filename?, files?}` →
/// 201 the job, awaiting its file, with `upload: {url, method: PUT,
/// headers}`, and `files: [{name, url, method, headers}]` for the files
/// its lines name (PUT before the JSONL: its arrival starts the job).
pub async fn import(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsWrite).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let new = json_body(&req, state.config.max_request_bytes)?;
        let planned =
            jobs::plan_import(access.workspace, new, state.config.ingest.upload_max_bytes)?;
        // Signed before the job exists: a signing failure leaves nothing.
        let bucket = state.bucket().await?;
        let ttl = state.config.ingest.upload_url_ttl;
        let upload = target(
            bucket
                .presign_put(&planned.key, jobs::JSONL_TYPE, planned.size, ttl)
                .await?,
        );
        let mut files = Vec::with_capacity(planned.files.len());
        for (file, key) in &planned.files {
            let signed = bucket
                .presign_put(key, &file.content_type, file.size, ttl)
                .await?;
            files.push(jobs::FileTarget {
                name: file.name.clone(),
                upload: target(signed),
            });
        }
        let mut job = jobs::create_import(access, planned).await?;
        job.upload = Some(upload);
        job.files = (!files.is_empty()).then_some(files);
        json(StatusCode::CREATED, &job)
    })
    .await
}

fn target((url, headers): (String, Vec<(String, String)>)) -> UploadTarget {
    UploadTarget {
        url,
        method: "PUT",
        headers: headers
            .into_iter()
            .map(|(k, v)| (k, common::serde_json::Value::String(v)))
            .collect(),
    }
}

/// `POST /workspaces/{workspace_id}/exports` `{include_chunks?}` → 202 the
/// job, queued.
pub async fn export(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsRead).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let new = if req.body().is_empty() {
            jobs::NewExport::default()
        } else {
            json_body(&req, state.config.max_request_bytes)?
        };
        let job = jobs::start_export(state, access, new).await?;
        json(StatusCode::ACCEPTED, &job)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/jobs[?limit=&cursor=]`: newest first.
pub async fn list(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsRead).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let limit = pagination::limit(&req, 50, 200)?;
        let after = pagination::cursor(&req)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        json(StatusCode::OK, &jobs::list(access, limit, after).await?)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/jobs/{job_id}`: progress, an import's
/// documents and refused lines, an export's download once it succeeded.
pub async fn get(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsRead).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let job = jobs::get(state, access, path_param(&req, "job_id")?).await?;
        json(StatusCode::OK, &job)
    })
    .await
}

/// `POST /workspaces/{workspace_id}/jobs/{job_id}/cancel` → 200 the job;
/// 409 once it has finished.
pub async fn cancel(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsWrite).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let job = jobs::cancel(access, path_param(&req, "job_id")?).await?;
        json(StatusCode::OK, &job)
    })
    .await
}
