//! Chat: conversations over the workspace's documents. Each user's
//! sessions are their own; both turns of every exchange are stored.

use common::State;
use common::answer::{self, Options};
use common::budget::Purpose;
use common::conversations;
use common::http::{json, json_body, json_private, no_content, path_param, respond};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::pagination;
use common::retrieval::{FiltersIn, Mode};
use common::workspaces::Access;
use serde::Deserialize;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("chat-send", send),
    common::http_function!("chat-sessions", sessions),
    common::http_function!("chat-messages", messages),
    common::http_function!("chat-delete", delete),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatIn {
    message: String,
    #[serde(default)]
    session_id: Option<uuid::Uuid>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    filters: Option<FiltersIn>,
    #[serde(default)]
    max_tokens: Option<u32>,
}

/// `POST /workspaces/{workspace_id}/chat` with `message` and optional
/// `session_id` → `{session_id, message_id, answer, citations, usage, timings}`.
/// Without `session_id` a new session starts (201); otherwise 200.
pub async fn send(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace = path_param(&req, "workspace_id")?;
        answer::rate_limit(state, caller.user_id, Purpose::Chat).await?;
        let access = Access::open(&state.db, caller, workspace).await?;
        let body: ChatIn = json_body(&req, state.config.max_request_bytes)?;
        let message = answer::check_text("message", &body.message)?;
        let options = Options::parse(
            &state.config.query,
            body.top_k,
            body.mode,
            body.filters,
            Some(true),
            body.max_tokens,
        )?;
        let reply = conversations::send(state, access, body.session_id, &message, &options).await?;
        let status = if body.session_id.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        json(status, &reply)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/chat/sessions?limit=&cursor=` → the
/// caller's sessions, most recently active first.
pub async fn sessions(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let limit = pagination::limit(&req, 20, 100)?;
        let after = pagination::cursor(&req)?;
        let page = conversations::sessions(access, limit, after).await?;
        json_private(StatusCode::OK, &page)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/chat/sessions/{session_id}/messages` →
/// the session's messages, oldest first.
pub async fn messages(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let session = path_param(&req, "session_id")?;
        let limit = pagination::limit(&req, 50, 200)?;
        let after = pagination::cursor(&req)?;
        let page = conversations::messages(access, session, limit, after).await?;
        json_private(StatusCode::OK, &page)
    })
    .await
}

/// `DELETE /workspaces/{workspace_id}/chat/sessions/{session_id}` → 204.
pub async fn delete(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let session = path_param(&req, "session_id")?;
        conversations::delete(access, session).await?;
        Ok(no_content())
    })
    .await
}
