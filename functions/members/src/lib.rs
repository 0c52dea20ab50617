//! Workspace membership: list, invite, remove; invitations as the
//! workspace sees them (list, revoke) and as the invitee does (list,
//! accept, decline).

use common::State;
use common::http::{json, json_body, no_content, path_param, respond};
use common::invitations::{self, MemberRequest, NewInvitation};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::pagination;
use common::workspaces::{self, Access};

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("members-list", list),
    common::http_function!("members-add", add),
    common::http_function!("members-remove", remove),
    common::http_function!("invitations-create", invite),
    common::http_function!("invitations-list", invitations_list),
    common::http_function!("invitations-revoke", revoke),
    common::http_function!("invitations-received", received),
    common::http_function!("invitations-accept", accept),
    common::http_function!("invitations-decline", decline),
];

/// `GET /workspaces/{workspace_id}/members`.
pub async fn list(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
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
        let invitation = create(state, access, new).await?;
        json(StatusCode::ACCEPTED, &invitation)
    })
    .await
}

async fn create(
    state: &State,
    access: Access,
    new: NewInvitation,
) -> common::Result<invitations::Invitation> {
    let mailer = state.mailer().await.map_err(common::ApiError::Internal)?;
    invitations::create(access, &state.config.invitations, mailer.as_ref(), new).await
}

/// `POST /workspaces/{workspace_id}/invitations` with `email` and `role` → 201.
pub async fn invite(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let new = json_body(&req, state.config.max_request_bytes)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        json(StatusCode::CREATED, &create(state, access, new).await?)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/invitations[?status=&limit=&cursor=]`.
pub async fn invitations_list(state: &State, req: Request) -> Response<Body> {
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
