//! Workspace API keys, as the workspace's owners and admins manage them:
//! create (the key is shown once), list (masked), revoke. Managing keys
//! takes a signed-in user; a key cannot manage keys.

use common::api_keys;
use common::http::{json, json_body, no_content, path_param, respond};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::pagination;
use common::state::State;
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("keys-create", create),
    common::http_function!("keys-list", list),
    common::http_function!("keys-revoke", revoke),
];

/// `POST /workspaces/{workspace_id}/keys` with `name`, `scopes` and
/// optionally `expires_in_days` → 201 with the key, this once.
pub async fn create(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let new = json_body(&req, state.config.max_request_bytes)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        json(
            StatusCode::CREATED,
            &api_keys::create(state, access, new).await?,
        )
    })
    .await
}

/// `GET /workspaces/{workspace_id}/keys[?limit=&cursor=]`: newest first, masked.
pub async fn list(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let limit = pagination::limit(&req, 50, 200)?;
        let after = pagination::cursor(&req)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        json(StatusCode::OK, &api_keys::list(access, limit, after).await?)
    })
    .await
}

/// `DELETE /workspaces/{workspace_id}/keys/{key_id}` → 204, also when
/// revoked already.
pub async fn revoke(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let key_id = path_param(&req, "key_id")?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        api_keys::revoke(access, key_id).await?;
        Ok(no_content())
    })
    .await
}
