//! Uploads: a pending document and a presigned S3 PUT for its file.

use common::caller::Use;
use common::http::{json, json_body, path_param, respond};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::state::State;
use common::uploads::{self, Upload, UploadTarget};
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[common::http_function!("uploads-create", create)];

/// `POST /workspaces/{workspace_id}/uploads` with `filename`, `content_type`,
/// `size` → 201 `{document_id, document, upload: {url, method, headers}, expires_at}`.
pub async fn create(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsWrite).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let new = json_body(&req, state.config.max_request_bytes)?;
        let planned = uploads::plan(access.workspace, new, &state.config)?;
        // Sign first (local work, no request to S3): if it fails, no
        // pending document is left behind.
        let ttl = state.config.ingest.upload_url_ttl;
        let expires_at = chrono::Utc::now() + ttl;
        let (url, headers) = state
            .bucket()
            .await?
            .presign_put(&planned.key, planned.content_type, planned.size, ttl)
            .await?;
        let document = uploads::create(access, planned).await?;
        let upload = Upload {
            document_id: document.id,
            document,
            upload: UploadTarget {
                url,
                method: "PUT",
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect(),
            },
            expires_at,
        };
        json(StatusCode::CREATED, &upload)
    })
    .await
}
