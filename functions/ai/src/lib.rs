//! The AI proxy: members without a key of their own call the deployment's
//! model through it, within the workspace's rules (`common::study::proxy`).

use common::answer;
use common::budget::Purpose;
use common::caller::Use;
use common::http::{json, json_body, path_param, respond};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::state::State;
use common::study::proxy;
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[common::http_function!("ai-generate", generate)];

/// `POST /workspaces/{workspace_id}/ai/generate` with `prompt`,
/// `context_document_ids`, `model`, `max_tokens` → `{text, model,
/// context_documents, context_truncated, usage, timings}`; 403 when the
/// owner has turned the proxy off, 422 for a model not allowed.
pub async fn generate(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Query).await?;
        let workspace = path_param(&req, "workspace_id")?;
        answer::rate_limit(state, caller.user_id, Purpose::Generate).await?;
        let access = Access::open(&state.db, caller, workspace).await?;
        let body = json_body(&req, state.config.max_request_bytes)?;
        let generated = proxy::generate(state, access, body).await?;
        json(StatusCode::OK, &generated)
    })
    .await
}
