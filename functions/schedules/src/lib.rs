//! Recurring tasks: schedules that start a classification or an export
//! every so often, and the dispatcher that runs the due ones (and
//! resumes stalled jobs) every minute.

use common::caller::Use;
use common::http::{json, json_body, no_content, path_param, respond};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::schedules;
use common::state::State;
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("schedules-create", create),
    common::http_function!("schedules-list", list),
    common::http_function!("schedules-get", get),
    common::http_function!("schedules-update", update),
    common::http_function!("schedules-delete", delete),
    common::schedule_function!("schedules-dispatch", dispatch),
];

/// `POST /workspaces/{workspace_id}/schedules` → 201 the schedule.
pub async fn create(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsWrite).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let new = json_body(&req, state.config.max_request_bytes)?;
        json(StatusCode::CREATED, &schedules::create(access, new).await?)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/schedules`.
pub async fn list(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsRead).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        json(StatusCode::OK, &schedules::list(access).await?)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/schedules/{schedule_id}`: with its
/// latest runs.
pub async fn get(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsRead).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let schedule = schedules::get(access, path_param(&req, "schedule_id")?).await?;
        json(StatusCode::OK, &schedule)
    })
    .await
}

/// `PATCH /workspaces/{workspace_id}/schedules/{schedule_id}`
/// `{name?, paused?, every_minutes?, cron?}`: pause, resume, retime.
pub async fn update(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsWrite).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let changes = json_body(&req, state.config.max_request_bytes)?;
        let schedule = schedules::update(access, path_param(&req, "schedule_id")?, changes).await?;
        json(StatusCode::OK, &schedule)
    })
    .await
}

/// `DELETE /workspaces/{workspace_id}/schedules/{schedule_id}` → 204.
pub async fn delete(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsWrite).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        schedules::delete(access, path_param(&req, "schedule_id")?).await?;
        Ok(no_content())
    })
    .await
}

/// Every minute: the due schedules' runs, then stalled jobs resumed.
pub async fn dispatch(state: &State, _event: common::serde_json::Value) -> common::Result<()> {
    let done = schedules::dispatch(state).await?;
    if done != schedules::Dispatched::default() {
        tracing::info!(
            started = done.started,
            failed = done.failed,
            resumed = done.resumed,
            "schedules dispatched"
        );
    }
    Ok(())
}
