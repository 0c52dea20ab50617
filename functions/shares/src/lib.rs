//! Share links: members create, list and revoke read-only links to a
//! document, one of their chat sessions or a job that has succeeded;
//! anyone holding a link opens it with `GET /share/{token}`, without
//! signing in.

use common::http::{json, json_body, no_content, path_param, respond, source_ip};
use common::lambda::Function;
use common::lambda_http::http::header::{CACHE_CONTROL, HeaderName, HeaderValue};
use common::lambda_http::http::{StatusCode, header};
use common::lambda_http::{Body, Request, Response};
use common::pagination;
use common::shares;
use common::state::State;
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("shares-create", create),
    common::http_function!("shares-list", list),
    common::http_function!("shares-revoke", revoke),
    common::http_function!("shares-view", view),
];

/// `POST /workspaces/{workspace_id}/shares` with `document_id`,
/// `chat_session_id` or `job_id`, and optionally `expires_in_hours` → 201
/// with the token, this once.
pub async fn create(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let new = json_body(&req, state.config.max_request_bytes)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        let mut response = json(StatusCode::CREATED, &shares::create(access, new).await?)?;
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/shares[?limit=&cursor=]`: newest first,
/// never the tokens.
pub async fn list(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let limit = pagination::limit(&req, 50, 200)?;
        let after = pagination::cursor(&req)?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        json(StatusCode::OK, &shares::list(access, limit, after).await?)
    })
    .await
}

/// `DELETE /workspaces/{workspace_id}/shares/{share_id}` → 204, also when
/// revoked already.
pub async fn revoke(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let share_id = path_param(&req, "share_id")?;
        let access = Access::open(&state.db, caller, workspace_id).await?;
        shares::revoke(access, share_id).await?;
        Ok(no_content())
    })
    .await
}

/// `GET /share/{token}`: the shared object, no sign-in. Neither the answer
/// nor the link may be kept by caches, search engines or the pages it
/// leads to (problems included: they say whether a link works).
pub async fn view(state: &State, req: Request) -> Response<Body> {
    let mut response = respond(&req, async {
        let token: String = path_param(&req, "token")?;
        json(
            StatusCode::OK,
            &shares::view(state, &token, &source_ip(&req)).await?,
        )
    })
    .await;
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
