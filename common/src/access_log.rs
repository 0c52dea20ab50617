//! One structured line per request, the access log, and the request's id
//! in an `X-Request-Id` header. The line names the function (each route is
//! its own), method, status, latency, request id and, once known, the
//! caller and the workspace asked for; never a token or a body.

use std::cell::Cell;
use std::future::Future;
use std::time::Instant;

use http::HeaderValue;
use lambda_http::{Request, Response};

use crate::ids::{UserId, WorkspaceId};

/// What the handler learnt about the request while handling it.
#[derive(Debug, Default, Clone, Copy)]
struct Facts {
    user: Option<UserId>,
    workspace: Option<WorkspaceId>,
}

tokio::task_local! {
    static FACTS: Cell<Facts>;
}

/// Records the authenticated caller of the request being handled.
pub fn note_user(user: UserId) {
    let _ = FACTS.try_with(|facts| {
        facts.set(Facts {
            user: Some(user),
            ..facts.get()
        })
    });
}

/// Records the workspace the request being handled asks for (whether or
/// not the caller belongs to it: a refused probe is worth a line too).
pub fn note_workspace(workspace: WorkspaceId) {
    let _ = FACTS.try_with(|facts| {
        facts.set(Facts {
            workspace: Some(workspace),
            ..facts.get()
        })
    });
}

/// Handles `req` with `handle`, then sets `X-Request-Id` and writes the
/// access log line.
pub async fn logged<Fut, B>(
    function: &'static str,
    req: Request,
    handle: impl FnOnce(Request) -> Fut,
) -> Response<B>
where
    Fut: Future<Output = Response<B>>,
{
    let started = Instant::now();
    let method = req.method().to_string();
    let request_id = crate::http::request_id(&req).map(str::to_owned);
    let (mut response, facts) = FACTS
        .scope(Cell::new(Facts::default()), async move {
            let response = handle(req).await;
            (response, FACTS.with(Cell::get))
        })
        .await;
    if let Some(id) = request_id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        response.headers_mut().insert("x-request-id", id);
    }
    tracing::info!(
        target: "access",
        function,
        method,
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        request_id = request_id.as_deref().unwrap_or_default(),
        user_id = facts.user.map(|u| u.to_string()).unwrap_or_default(),
        workspace_id = facts.workspace.map(|w| w.to_string()).unwrap_or_default(),
        "request"
    );
    response
}
