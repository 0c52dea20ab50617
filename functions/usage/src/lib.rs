//! Usage: a workspace's token budget today and by day; the sweeper that
//! releases reservations whose function died before settling them.

use chrono::NaiveDate;
use common::budget;
use common::caller::Use;
use common::http::{json_private, path_param, respond};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::pagination::query_param;
use common::state::State;
use common::workspaces::Access;
use common::{ApiError, Result};

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("usage-today", today),
    common::http_function!("usage-days", days),
    common::schedule_function!("usage-sweeper", sweep),
];

/// Longest `from..=to` range of one request, in days.
const MAX_DAYS: i64 = 366;

/// `GET /workspaces/{workspace_id}/usage/today` → `{day, limit, used, reserved, remaining, requests}`.
pub async fn today(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Admin).await?;
        let mut access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let day = budget::today(&mut access.tx, access.workspace).await?;
        access.commit().await?;
        json_private(StatusCode::OK, &day)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/usage?from=YYYY-MM-DD&to=YYYY-MM-DD` →
/// `{items: [one row per UTC day], keys: [what each API key spent in the
/// range]}`; `to` defaults to today, `from` to 29 days before `to`.
pub async fn days(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::Admin).await?;
        let mut access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let to = date_param(&req, "to")?.unwrap_or_else(|| chrono::Utc::now().date_naive());
        let from = match date_param(&req, "from")? {
            Some(from) => from,
            None => to.checked_sub_days(chrono::Days::new(29)).ok_or_else(|| {
                ApiError::unprocessable("to", "must be a date from year 1 to 9999")
            })?,
        };
        if from > to {
            return Err(ApiError::unprocessable("from", "must not be after `to`"));
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(ApiError::unprocessable(
                "from",
                format!("a range covers at most {MAX_DAYS} days"),
            ));
        }
        let items = budget::range(&mut access.tx, access.workspace, from, to).await?;
        let keys = budget::by_key(&mut access.tx, access.workspace, from, to).await?;
        access.commit().await?;
        json_private(
            StatusCode::OK,
            &serde_json::json!({ "items": items, "keys": keys }),
        )
    })
    .await
}

/// `?name=YYYY-MM-DD` in [`common::db::POSTGRES_YEARS`], 422 otherwise.
fn date_param(req: &Request, name: &str) -> Result<Option<NaiveDate>> {
    query_param(req, name)
        .map(|raw| {
            NaiveDate::parse_from_str(&raw, "%Y-%m-%d")
                .ok()
                .filter(|d| common::db::POSTGRES_YEARS.contains(&chrono::Datelike::year(d)))
                .ok_or_else(|| ApiError::unprocessable(name, "must be a date, YYYY-MM-DD"))
        })
        .transpose()
}

/// Scheduled: expires every reservation past its TTL, returning its tokens.
pub async fn sweep(state: &State, _event: serde_json::Value) -> Result<()> {
    let expired = budget::sweep(&state.db).await?;
    if expired > 0 {
        tracing::info!(expired, "expired token reservations released");
    }
    Ok(())
}
