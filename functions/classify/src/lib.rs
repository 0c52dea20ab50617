//! Classification jobs: a scheme run over documents through the ingest
//! worker, its results as JSON or CSV, and retries of what it refused.

use common::budget::Purpose;
use common::caller::Use;
use common::http::{json, json_body, path_param, respond};
use common::jobs::classify::{self, results};
use common::lambda::Function;
use common::lambda_http::http::{HeaderValue, StatusCode, header};
use common::lambda_http::{Body, Request, Response};
use common::pagination;
use common::state::State;
use common::workspaces::Access;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("classify-run", run),
    common::http_function!("classify-results", results),
    common::http_function!("classify-retry", retry),
];

/// `POST /workspaces/{workspace_id}/schemes/{scheme_id}/jobs`
/// `{document_ids?, filter?}` → 202 the classify job, queued.
pub async fn run(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsWrite).await?;
        common::answer::rate_limit(state, caller.user_id, Purpose::Classify).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let run = if req.body().is_empty() {
            classify::NewRun::default()
        } else {
            json_body(&req, state.config.max_request_bytes)?
        };
        let job = classify::start(state, access, path_param(&req, "scheme_id")?, run).await?;
        json(StatusCode::ACCEPTED, &job)
    })
    .await
}

/// `POST /workspaces/{workspace_id}/jobs/{job_id}/retry` → 202 a new job
/// over the documents the finished one refused.
pub async fn retry(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsWrite).await?;
        common::answer::rate_limit(state, caller.user_id, Purpose::Classify).await?;
        let access = Access::open(&state.db, caller, path_param(&req, "workspace_id")?).await?;
        let job = classify::retry(state, access, path_param(&req, "job_id")?).await?;
        json(StatusCode::ACCEPTED, &job)
    })
    .await
}

/// `GET /workspaces/{workspace_id}/jobs/{job_id}/results
/// [?field=&value=&limit=&cursor=&format=json|csv]`: a page of results by
/// document. As CSV, the next page's address is in a `Link` header.
pub async fn results(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller_for(&req, Use::DocumentsRead).await?;
        let workspace_id = path_param(&req, "workspace_id")?;
        let job_id = path_param(&req, "job_id")?;
        let csv = match pagination::query_param(&req, "format").as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(_) => {
                return Err(common::ApiError::unprocessable(
                    "format",
                    "format is json or csv",
                ));
            }
        };
        let filter = results::Filter {
            field: pagination::query_param(&req, "field"),
            value: pagination::query_param(&req, "value"),
            limit: pagination::limit(&req, 100, 1_000)?,
            after: pagination::cursor(&req)?,
        };
        let access = Access::open(&state.db, caller, workspace_id).await?;
        let page = results::list(access, job_id, filter).await?;
        if !csv {
            return json(StatusCode::OK, &page.page());
        }
        let mut response = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/csv; charset=utf-8")
            .header(
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"classification-{job_id}.csv\""),
            )
            .body(Body::from(page.csv()?))
            .map_err(|e| common::anyhow::anyhow!("csv response: {e}"))?;
        if let Some(cursor) = &page.next_cursor {
            // The same query (its filter, limit, format) at the next cursor.
            let mut query: Vec<&str> = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
                .collect();
            let next = format!("cursor={cursor}");
            query.push(&next);
            let link = format!("<{}?{}>; rel=\"next\"", req.uri().path(), query.join("&"));
            if let Ok(value) = HeaderValue::from_str(&link) {
                response.headers_mut().insert(header::LINK, value);
            }
        }
        Ok(response)
    })
    .await
}
