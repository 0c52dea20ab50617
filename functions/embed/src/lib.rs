//! What a site embedding a chat widget calls without an account: the
//! widget's script, and the short-lived embed tokens its visitors chat with.

use std::sync::OnceLock;

use common::conditional::{Preconditions, quote};
use common::http::{json, json_body, respond, source_ip};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use common::lambda_http::{Body, Request, Response};
use common::state::State;
use common::widgets;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("embed-token", token),
    common::http_function!("embed-script", script),
];

/// The widget, built into the function (it changes with a deployment only).
pub const SCRIPT: &str = include_str!("../../../widget/ragway-widget.js");

/// `POST /embed/token` with `widget_id` (and `renew`, the visitor's last
/// token) from a page whose `Origin` the widget allows → 201
/// `{token, expires_in, workspace_id, visitor_id, widget}`.
pub async fn token(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let request = json_body(&req, state.config.max_request_bytes)?;
        let origin = req.headers().get("origin").and_then(|v| v.to_str().ok());
        let issued = widgets::issue(state, request, origin, &source_ip(&req)).await?;
        json(StatusCode::CREATED, &issued)
    })
    .await
}

/// `GET /widget.js`: the widget's script, cached five minutes by
/// browsers and CDNs, then revalidated by its strong `ETag`.
pub async fn script(_state: &State, req: Request) -> Response<Body> {
    static TAG: OnceLock<String> = OnceLock::new();
    let tag = TAG.get_or_init(|| widgets::script_tag(SCRIPT));
    respond(&req, async {
        let preconditions = Preconditions::from_headers(req.headers())?;
        let builder = Response::builder()
            .header(ETAG, quote(tag))
            .header(CACHE_CONTROL, "public, max-age=300");
        let response = if preconditions.not_modified(tag) {
            builder.status(StatusCode::NOT_MODIFIED).body(Body::Empty)
        } else {
            builder
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, "text/javascript; charset=utf-8")
                .body(Body::Text(SCRIPT.to_owned()))
        };
        Ok(response.expect("static response is valid"))
    })
    .await
}
