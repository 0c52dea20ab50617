//! Study tools (summaries, questions, mind maps): each route parses its
//! request, calls `common::study`, and renders.

use common::answer;
use common::budget::Purpose;
use common::caller::Use;
use common::http::{json, json_body, path_param, respond};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::state::State;
use common::study::{mindmap, qa, summarize};
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("study-summarize", summarize),
    common::http_function!("study-qa", ask),
    common::http_function!("study-mindmap", mindmap),
];

/// `POST /workspaces/{workspace_id}/summarize` with `document_ids` or
/// `text`, `style`, `max_tokens` → `{summary, style, statistics, model,
/// usage, timings}`.
pub async fn summarize(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Query).await?;
        let workspace = path_param(&req, "workspace_id")?;
        answer::rate_limit(state, caller.user_id, Purpose::Summarize).await?;
        let access = Access::open(&state.db, caller, workspace).await?;
        let body = json_body(&req, state.config.max_request_bytes)?;
        let summary = summarize::summarize(state, access, body).await?;
        json(StatusCode::OK, &summary)
    })
    .await
}

/// `POST /workspaces/{workspace_id}/qa` with `question`, `use_rag` and,
/// with RAG, the query route's options → `{answer, use_rag, citations,
/// model, usage, timings}`.
pub async fn ask(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Query).await?;
        let workspace = path_param(&req, "workspace_id")?;
        answer::rate_limit(state, caller.user_id, Purpose::Qa).await?;
        let access = Access::open(&state.db, caller, workspace).await?;
        let body = json_body(&req, state.config.max_request_bytes)?;
        let answered = qa::ask(state, access, body).await?;
        json(StatusCode::OK, &answered)
    })
    .await
}

/// `POST /workspaces/{workspace_id}/mindmap` with `topic` and/or
/// `document_ids`, `depth` → `{root: {id, label, children}, depth, nodes,
/// repaired, model, usage, timings}`.
pub async fn mindmap(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Query).await?;
        let workspace = path_param(&req, "workspace_id")?;
        answer::rate_limit(state, caller.user_id, Purpose::Mindmap).await?;
        let access = Access::open(&state.db, caller, workspace).await?;
        let body = json_body(&req, state.config.max_request_bytes)?;
        let map = mindmap::draw(state, access, body).await?;
        json(StatusCode::OK, &map)
    })
    .await
}
