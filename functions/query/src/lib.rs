//! Query: answer a question from the workspace's documents, with citations.

use common::answer::{self, Ask, Options, QueryIn};
use common::budget::Purpose;
use common::caller::Use;
use common::http::{json, json_body, path_param, respond, routed, routed_param};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::sse::{self, SseBody};
use common::state::State;
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("query-ask", ask),
    common::stream_function!("query-stream", "POST", STREAM_PATH, stream),
];

/// Served by a function URL (API Gateway's HTTP APIs cannot stream).
pub const STREAM_PATH: &str = "/workspaces/{workspace_id}/query/stream";

/// `POST /workspaces/{workspace_id}/query/stream`: the same request,
/// answered as server-sent events (`common::answer::stream`).
pub async fn stream(state: &State, req: Request) -> Response<SseBody> {
    sse::respond(&req, async {
        let params = routed(&req, "POST", STREAM_PATH)?;
        let caller = state.caller_for(&req, Use::Query).await?;
        let workspace = routed_param(&params, "workspace_id")?;
        answer::rate_limit(state, caller.user_id, Purpose::Query).await?;
        let access = Access::open(&state.db, caller, workspace).await?;
        let body: QueryIn = json_body(&req, state.config.max_request_bytes)?;
        let (question, options, _) = checked(state, body)?;
        answer::stream::ask_stream(
            state,
            access,
            Ask {
                retrieval_text: &question,
                question: &question,
                history: &[],
                options: &options,
                purpose: Purpose::Query,
            },
            no_record(),
        )
        .await
    })
    .await
}

/// `POST /workspaces/{workspace_id}/query` with `question`, `top_k`, `mode`,
/// `filters`, `answer`, `max_tokens` → `{answer, citations, usage, timings}`.
pub async fn ask(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Query).await?;
        let workspace = path_param(&req, "workspace_id")?;
        answer::rate_limit(state, caller.user_id, Purpose::Query).await?;
        let access = Access::open(&state.db, caller, workspace).await?;
        let body: QueryIn = json_body(&req, state.config.max_request_bytes)?;
        let (question, options, streamed) = checked(state, body)?;
        let ask = Ask {
            retrieval_text: &question,
            question: &question,
            history: &[],
            options: &options,
            purpose: Purpose::Query,
        };
        if streamed {
            let streamed = answer::stream::ask_stream(state, access, ask, no_record()).await?;
            return Ok(sse::whole(streamed).await);
        }
        let answered = answer::ask(state, access, ask).await?;
        json(StatusCode::OK, &answered)
    })
    .await
}

/// A query's answer is not stored: nothing to add to `done`.
fn no_record() -> answer::stream::OnFinish {
    Box::new(|_| Box::pin(async { Ok(serde_json::json!({})) }))
}

/// The question and its options, checked, and whether the body asked
/// for a stream.
fn checked(state: &State, body: QueryIn) -> common::Result<(String, Options, bool)> {
    let question = answer::check_text("question", &body.question)?;
    let options = Options::parse(
        &state.config.query,
        body.top_k,
        body.mode,
        body.filters,
        body.answer,
        body.max_tokens,
    )?
    .with_rerank(body.rerank);
    Ok((question, options, body.stream == Some(true)))
}
