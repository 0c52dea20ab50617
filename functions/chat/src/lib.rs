//! Chat: conversations over the workspace's documents. Each user's
//! sessions are their own; both turns of every exchange are stored.
//! Widget visitors (embed tokens) chat too, each in sessions of its own.

use common::answer::{self, Options};
use common::budget::Purpose;
use common::caller::{Caller, Grant, Use};
use common::conversations;
use common::http::{
    json, json_body, json_private, no_content, path_param, respond, routed, routed_param,
};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::pagination;
use common::retrieval::{FiltersIn, Mode};
use common::sse::{self, SseBody};
use common::state::State;
use common::workspaces::Access;
use serde::Deserialize;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("chat-send", send),
    common::stream_function!("chat-stream", "POST", STREAM_PATH, stream),
    common::http_function!("chat-sessions", sessions),
    common::http_function!("chat-session-create", create_session),
    common::http_function!("chat-messages", messages),
    common::http_function!("chat-delete", delete),
];

/// Served by a function URL (API Gateway's HTTP APIs cannot stream).
pub const STREAM_PATH: &str = "/workspaces/{workspace_id}/chat/stream";

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
    /// Seed-shaped bodies: `true` answers with the events of the stream
    /// route, all at once (API Gateway buffers the response).
    #[serde(default)]
    stream: Option<bool>,
    /// Rerank the fused candidates (needs `RERANK_PROVIDER`).
    #[serde(default)]
    rerank: Option<bool>,
}

impl ChatIn {
    /// The message and the question's options, checked (the filters move
    /// into the options).
    fn checked(&mut self, state: &State) -> common::Result<(String, Options)> {
        let message = answer::check_text("message", &self.message)?;
        let options = Options::parse(
            &state.config.query,
            self.top_k,
            self.mode,
            self.filters.take(),
            Some(true),
            self.max_tokens,
        )?
        .with_rerank(self.rerank);
        Ok((message, options))
    }
}

/// `POST /workspaces/{workspace_id}/chat` with `message` and optional
/// `session_id` → `{session_id, message_id, answer, citations, usage, timings}`.
/// Without `session_id` a new session starts (201); otherwise 200.
pub async fn send(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Chat).await?;
        let workspace = path_param(&req, "workspace_id")?;
        rate_limit(state, &req, caller).await?;
        let access = Access::open(&state.db, caller, workspace).await?;
        let mut body: ChatIn = json_body(&req, state.config.max_request_bytes)?;
        let (message, options) = body.checked(state)?;
        if body.stream == Some(true) {
            let streamed =
                conversations::send_stream(state, access, body.session_id, &message, &options)
                    .await?;
            return Ok(sse::whole(streamed).await);
        }
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

/// `POST /workspaces/{workspace_id}/chat/stream`: a chat turn answered
/// as server-sent events; `done` carries `session_id` and `message_id`.
pub async fn stream(state: &State, req: Request) -> Response<SseBody> {
    sse::respond(&req, async {
        let params = routed(&req, "POST", STREAM_PATH)?;
        let caller = state.caller_for(&req, Use::Chat).await?;
        let workspace = routed_param(&params, "workspace_id")?;
        rate_limit(state, &req, caller).await?;
        let access = Access::open(&state.db, caller, workspace).await?;
        let mut body: ChatIn = json_body(&req, state.config.max_request_bytes)?;
        let (message, options) = body.checked(state)?;
        conversations::send_stream(state, access, body.session_id, &message, &options).await
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    #[serde(default)]
    title: Option<String>,
}

/// `POST /workspaces/{workspace_id}/chat/sessions` with an optional
/// `title` → 201 the new, empty session (sessions also start implicitly,
/// with a chat message and no `session_id`).
pub async fn create_session(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Chat).await?;
        let workspace = path_param(&req, "workspace_id")?;
        let body: NewSession = json_body(&req, state.config.max_request_bytes)?;
        let access = Access::open(&state.db, caller, workspace).await?;
        let session = conversations::create_session(access, body.title.as_deref()).await?;
        json_private(StatusCode::CREATED, &session)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/chat/sessions?limit=&cursor=` → the
/// caller's sessions, most recently active first.
pub async fn sessions(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Chat).await?;
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
        let caller = state.caller_for(&req, Use::Chat).await?;
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
        let caller = state.caller_for(&req, Use::Chat).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let session = path_param(&req, "session_id")?;
        conversations::delete(access, session).await?;
        Ok(no_content())
    })
    .await
}

/// A member's or key's messages count against the user's chat limit; a
/// visitor's against its own and its token's (a widget's visitors all
/// act for its creator, and must not share one count).
async fn rate_limit(state: &State, req: &Request, caller: Caller) -> common::Result<()> {
    if matches!(caller.grant, Some(Grant::Visitor { .. })) {
        common::widgets::count_message(state, req, caller).await
    } else {
        answer::rate_limit(state, caller.user_id, Purpose::Chat).await
    }
}
