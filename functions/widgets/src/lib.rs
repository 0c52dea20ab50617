//! Chat widgets, as their workspace's owners and admins manage them:
//! allowed origins, greeting, colour, per-visitor limits.

use common::http::{json, json_body, no_content, path_param, respond};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::state::State;
use common::widgets;
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("widgets-create", create),
    common::http_function!("widgets-list", list),
    common::http_function!("widgets-get", get),
    common::http_function!("widgets-update", update),
    common::http_function!("widgets-delete", delete),
];

/// `POST /workspaces/{workspace_id}/widgets` with `name`,
/// `allowed_origins` and optional `greeting`, `theme_color`,
/// `visitor_messages_per_hour`, `enabled` → 201 the widget.
pub async fn create(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let new = json_body(&req, state.config.max_request_bytes)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        json(StatusCode::CREATED, &widgets::create(access, new).await?)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/widgets` → `{items}`.
pub async fn list(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        let items = widgets::list(access).await?;
        json(StatusCode::OK, &serde_json::json!({ "items": items }))
    })
    .await
}

/// `GET /workspaces/{workspace_id}/widgets/{widget_id}`.
pub async fn get(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let widget_id: uuid::Uuid = path_param(&req, "widget_id")?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        json(StatusCode::OK, &widgets::get(access, widget_id).await?)
    })
    .await
}

/// `PATCH /workspaces/{workspace_id}/widgets/{widget_id}` with the fields
/// to change → the widget.
pub async fn update(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let widget_id: uuid::Uuid = path_param(&req, "widget_id")?;
        let changes = json_body(&req, state.config.max_request_bytes)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        json(
            StatusCode::OK,
            &widgets::update(access, widget_id, changes).await?,
        )
    })
    .await
}

/// `DELETE /workspaces/{workspace_id}/widgets/{widget_id}` → 204.
pub async fn delete(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let widget_id: uuid::Uuid = path_param(&req, "widget_id")?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        widgets::delete(access, widget_id).await?;
        Ok(no_content())
    })
    .await
}
