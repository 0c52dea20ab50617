//! `GET /health`: is the function able to reach its database, bucket and queue?

use common::http::json;
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::state::State;

pub const FUNCTIONS: &[Function] = &[common::http_function!("health-check", check)];

/// 200 `healthy` when every component answers, 503 `degraded` otherwise.
pub async fn check(state: &State, req: Request) -> Response<Body> {
    common::http::respond(&req, async {
        let health =
            common::health::check(&state.db, state.bucket().await, state.ingest_queue().await)
                .await;
        let status = if health.is_healthy() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json(status, &health)
    })
    .await
}
