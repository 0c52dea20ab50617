//! Query: answer a question from the workspace's documents, with citations.

use common::State;
use common::answer::{self, Ask, Options, QueryIn};
use common::budget::Purpose;
use common::http::{json, json_body, path_param, respond};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[common::http_function!("query-ask", ask)];

/// `POST /workspaces/{workspace_id}/query` with `question`, `top_k`, `mode`,
/// `filters`, `answer`, `max_tokens` → `{answer, citations, usage, timings}`.
pub async fn ask(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let workspace = path_param(&req, "workspace_id")?;
        answer::rate_limit(state, caller.user_id, Purpose::Query).await?;
        let access = Access::open(&state.db, caller, workspace).await?;
        let body: QueryIn = json_body(&req, state.config.max_request_bytes)?;
        let question = answer::check_text("question", &body.question)?;
        let options = Options::parse(
            &state.config.query,
            body.top_k,
            body.mode,
            body.filters,
            body.answer,
            body.max_tokens,
        )?;
        let answered = answer::ask(
            state,
            access,
            Ask {
                retrieval_text: &question,
                question: &question,
                history: &[],
                options: &options,
                purpose: Purpose::Query,
            },
        )
        .await?;
        json(StatusCode::OK, &answered)
    })
    .await
}
