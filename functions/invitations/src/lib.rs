//! Invitations: as the workspace's owners and admins see them (invite,
//! list, revoke) and as the invitee does (list, accept, decline).

use common::http::{json, json_body, no_content, path_param, respond};
use common::invitations;
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::pagination;
use common::state::State;
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("invitations-create", invite),
    common::http_function!("invitations-list", list),
    common::http_function!("invitations-revoke", revoke),
    common::http_function!("invitations-received", received),
    common::http_function!("invitations-accept", accept),
    common::http_function!("invitations-decline", decline),
];

/// `POST /workspaces/{workspace_id}/invitations` with `email` and `role` → 201.
pub async fn invite(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let new = json_body(&req, state.config.max_request_bytes)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        json(
            StatusCode::CREATED,
            &invitations::invite(state, access, new).await?,
        )
    })
    .await
}

/// `GET /workspaces/{workspace_id}/invitations[?status=&limit=&cursor=]`.
pub async fn list(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let status = pagination::query_param(&req, "status");
        let limit = pagination::limit(&req, 50, 200)?;
        let after = pagination::cursor(&req)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        let page = invitations::list(access, status.as_deref(), limit, after).await?;
        json(StatusCode::OK, &page)
    })
    .await
}

/// `DELETE /workspaces/{workspace_id}/invitations/{invitation_id}` → 204.
pub async fn revoke(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let invitation_id = path_param(&req, "invitation_id")?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        invitations::revoke(access, invitation_id).await?;
        Ok(no_content())
    })
    .await
}

/// `GET /invitations`: the caller's open invitations.
pub async fn received(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let items = invitations::received(&state.db, caller).await?;
        json(StatusCode::OK, &serde_json::json!({ "items": items }))
    })
    .await
}

/// `POST /invitations/{invitation_id}/accept` with `token` → the workspace.
pub async fn accept(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let invitation_id = path_param(&req, "invitation_id")?;
        let acceptance = json_body(&req, state.config.max_request_bytes)?;
        let joined = invitations::accept(&state.db, caller, invitation_id, acceptance).await?;
        json(StatusCode::OK, &joined)
    })
    .await
}

/// `POST /invitations/{invitation_id}/decline` → 204.
pub async fn decline(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let invitation_id = path_param(&req, "invitation_id")?;
        invitations::decline(&state.db, caller, invitation_id).await?;
        Ok(no_content())
    })
    .await
}
