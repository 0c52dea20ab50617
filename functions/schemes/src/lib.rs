//! Classification schemes: the named fields (labels, numbers, text,
//! booleans) a workspace's documents are sorted by. Running one is in
//! functions/classify.

use common::caller::Use;
use common::http::{json, json_body, no_content, path_param, respond};
use common::jobs::classify;
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::state::State;
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("schemes-create", create),
    common::http_function!("schemes-list", list),
    common::http_function!("schemes-get", get),
    common::http_function!("schemes-delete", delete),
];

/// `POST /workspaces/{workspace_id}/schemes` → 201 the scheme.
pub async fn create(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsWrite).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let new = json_body(&req, state.config.max_request_bytes)?;
        json(StatusCode::CREATED, &classify::create(access, new).await?)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/schemes`: the live schemes by name.
pub async fn list(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsRead).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        json(StatusCode::OK, &classify::list(access).await?)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/schemes/{scheme_id}`.
pub async fn get(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsRead).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let scheme = classify::get(access, path_param(&req, "scheme_id")?).await?;
        json(StatusCode::OK, &scheme)
    })
    .await
}

/// `DELETE /workspaces/{workspace_id}/schemes/{scheme_id}` → 204; its
/// jobs and results stay.
pub async fn delete(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsWrite).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        classify::delete(access, path_param(&req, "scheme_id")?).await?;
        Ok(no_content())
    })
    .await
}
