//! Workspace membership: list, invite (by email: an invitation, see the
//! invitations package), remove.

use common::caller::Use;
use common::http::{json, json_body, no_content, path_param, respond};
use common::invitations::{self, MemberRequest};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::state::State;
use common::workspaces::{self, Access};

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("members-list", list),
    common::http_function!("members-add", add),
    common::http_function!("members-remove", remove),
];

/// `GET /workspaces/{workspace_id}/members`.
pub async fn list(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Admin).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let items = workspaces::members(access).await?;
        json(StatusCode::OK, &serde_json::json!({ "items": items }))
    })
    .await
}

/// `POST /workspaces/{workspace_id}/members` with `email` and `role`:
/// invites them (202 with the invitation; they join when they accept).
pub async fn add(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let request: MemberRequest = json_body(&req, state.config.max_request_bytes)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        let new = request.into_invitation()?;
        let invitation = invitations::invite(state, access, new).await?;
        json(StatusCode::ACCEPTED, &invitation)
    })
    .await
}

/// `DELETE /workspaces/{workspace_id}/members/{user_id}` → 204.
pub async fn remove(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let user_id = path_param(&req, "user_id")?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        workspaces::remove_member(access, user_id).await?;
        Ok(no_content())
    })
    .await
}
