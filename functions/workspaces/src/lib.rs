//! Workspaces: create, list, read, rename or re-limit, delete; and the
//! schedule that removes what deleted ones leave behind (`workspaces-purge`).

use common::caller::Use;
use common::http::{json, json_body, no_content, path_param, respond};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::pagination;
use common::state::State;
use common::workspaces::{self, Access};

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("workspaces-create", create),
    common::http_function!("workspaces-list", list),
    common::http_function!("workspaces-get", get),
    common::http_function!("workspaces-update", update),
    common::http_function!("workspaces-delete", delete),
    common::http_function!("workspaces-audit", audit),
    common::schedule_function!("workspaces-purge", purge),
];

/// `POST /workspaces` → 201; the caller becomes its owner.
pub async fn create(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let new = json_body(&req, state.config.max_request_bytes)?;
        let workspace = workspaces::create(
            &state.db,
            caller,
            new,
            state.config.default_daily_token_limit,
        )
        .await?;
        json(StatusCode::CREATED, &workspace)
    })
    .await
}

/// `GET /workspaces` → the caller's workspaces with their role in each.
pub async fn list(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let items = workspaces::list(&state.db, caller).await?;
        json(StatusCode::OK, &serde_json::json!({ "items": items }))
    })
    .await
}

/// `GET /workspaces/{workspace_id}`; 404 for non-members.
pub async fn get(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Admin).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        json(StatusCode::OK, &workspaces::get(access).await?)
    })
    .await
}

/// `PATCH /workspaces/{workspace_id}` with `name` and/or `daily_token_limit`.
pub async fn update(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Admin).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let changes = json_body(&req, state.config.max_request_bytes)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        json(StatusCode::OK, &workspaces::update(access, changes).await?)
    })
    .await
}

/// `DELETE /workspaces/{workspace_id}` → 204 (owner only).
pub async fn delete(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        workspaces::delete(access).await?;
        Ok(no_content())
    })
    .await
}

/// Scheduled: removes the uploaded files and the chunks of deleted
/// workspaces (`common::purge`), until its time is short; the next run
/// goes on from there.
pub async fn purge(state: &State, _event: serde_json::Value) -> common::Result<()> {
    let report = common::purge::run(state)
        .await
        .map_err(common::ApiError::Internal)?;
    tracing::info!(
        workspaces = report.workspaces,
        files = report.files,
        chunks = report.chunks,
        purged = ?report.purged,
        stopped = report.stopped,
        "deleted workspaces purged"
    );
    Ok(())
}

/// `GET /workspaces/{workspace_id}/audit[?action=&limit=&cursor=]`: the
/// audit log, newest first (owners and admins, or an `admin` key).
pub async fn audit(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Admin).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let action = pagination::query_param(&req, "action");
        let limit = pagination::limit(&req, 50, 200)?;
        let before = pagination::cursor(&req)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        let page = workspaces::audit_log(access, action.as_deref(), limit, before).await?;
        json(StatusCode::OK, &page)
    })
    .await
}
