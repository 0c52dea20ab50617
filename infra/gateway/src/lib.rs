//! The local gateway: serves every HttpApi route of template.yaml on
//! 127.0.0.1 by turning each HTTP request into an API Gateway HTTP API
//! (payload 2.0) event and calling that route's handler in-process, and
//! feeds the ingest queue's messages to the queue consumer as SQS batches.

pub mod cors;
pub mod events;
pub mod schedule;
pub mod sqs;
pub mod template;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use common::lambda::{Function, Handler, HttpHandler, StreamHandler};
use common::state::State;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use template::{TemplateEvent, TemplateFunction};
use tokio::net::TcpListener;

/// API Gateway's HTTP API payload limit.
pub const MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

/// Every function of every package, by binary name.
pub fn registry() -> Vec<Function> {
    [
        health::FUNCTIONS,
        auth::FUNCTIONS,
        workspaces::FUNCTIONS,
        members::FUNCTIONS,
        invitations::FUNCTIONS,
        keys::FUNCTIONS,
        widgets::FUNCTIONS,
        embed::FUNCTIONS,
        shares::FUNCTIONS,
        jobs::FUNCTIONS,
        schemes::FUNCTIONS,
        classify::FUNCTIONS,
        schedules::FUNCTIONS,
        documents::FUNCTIONS,
        uploads::FUNCTIONS,
        ingest::FUNCTIONS,
        query::FUNCTIONS,
        chat::FUNCTIONS,
        study::FUNCTIONS,
        ai::FUNCTIONS,
        usage::FUNCTIONS,
        database::FUNCTIONS,
        docs::FUNCTIONS,
    ]
    .concat()
}

/// One HTTP route: method, path template split in segments, handler.
#[derive(Clone)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub binary: String,
    segments: Vec<Segment>,
    handler: RouteHandler,
}

/// A route's handler: answered whole (API Gateway), or streamed (a
/// function URL in response-streaming mode).
#[derive(Clone, Copy)]
enum RouteHandler {
    Whole(HttpHandler),
    Streamed(StreamHandler),
}

/// Response bodies, whole or streamed.
pub type GatewayBody = BoxBody<Bytes, std::convert::Infallible>;

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Literal(String),
    Param(String),
}

impl Route {
    fn new(method: &str, path: &str, binary: &str, handler: RouteHandler) -> Self {
        let segments = path
            .trim_start_matches('/')
            .split('/')
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => Segment::Param(name.to_owned()),
                    None => Segment::Literal(s.to_owned()),
                },
            )
            .collect();
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            binary: binary.to_owned(),
            segments,
            handler,
        }
    }

    /// The path parameters, when `path` matches this route (API Gateway
    /// matches a parameter to exactly one non-empty segment).
    fn matches(&self, method: &str, path: &str) -> Option<Vec<(String, String)>> {
        if self.method != method && self.method != "ANY" {
            return None;
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (segment, part) in self.segments.iter().zip(parts) {
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Param(name) if !part.is_empty() => {
                    let value = percent_encoding::percent_decode_str(part).decode_utf8_lossy();
                    params.push((name.clone(), value.into_owned()));
                }
                _ => return None,
            }
        }
        Some(params)
    }

    pub fn route_key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The routing table: every HttpApi event of the template bound to the
/// handler of its function's binary. Fails on a route without a handler.
pub struct Gateway {
    pub routes: Vec<Route>,
    pub queue_consumers: Vec<(TemplateFunction, Function)>,
    pub schedules: Vec<schedule::Schedule>,
    /// The HTTP API's CORS configuration ([`template::cors`]); None: no
    /// CORS, as an API without one.
    pub cors: Option<cors::Cors>,
}

impl Gateway {
    pub fn from_template(
        functions: &[TemplateFunction],
        registry: &[Function],
    ) -> anyhow::Result<Self> {
        let mut routes = Vec::new();
        let mut queue_consumers = Vec::new();
        let mut schedules = Vec::new();
        for function in functions {
            let Some(found) = registry.iter().find(|f| f.name == function.binary) else {
                bail!(
                    "{}: no handler for binary {}",
                    function.logical_id,
                    function.binary
                );
            };
            for event in &function.events {
                match (event, found.handler) {
                    (TemplateEvent::Http { method, path }, Handler::Http(handler)) => {
                        let handler = RouteHandler::Whole(handler);
                        routes.push(Route::new(method, path, &function.binary, handler));
                    }
                    (TemplateEvent::StreamingUrl, Handler::Stream(route)) => {
                        let handler = RouteHandler::Streamed(route.handler);
                        routes.push(Route::new(
                            route.method,
                            route.path,
                            &function.binary,
                            handler,
                        ));
                    }
                    (TemplateEvent::Sqs { .. }, Handler::Sqs(_)) => {
                        queue_consumers.push((function.clone(), *found));
                    }
                    (TemplateEvent::Schedule { expression }, Handler::Schedule(handler)) => {
                        let every = schedule::parse_rate(expression).with_context(|| {
                            format!(
                                "{}: only rate(...) schedules run locally, not {expression}",
                                function.logical_id
                            )
                        })?;
                        schedules.push(schedule::Schedule {
                            binary: function.binary.clone(),
                            every,
                            timeout: function.timeout.map(std::time::Duration::from_secs),
                            handler,
                        });
                    }
                    (event, _) => bail!(
                        "{}: handler kind does not fit event {event:?}",
                        function.logical_id
                    ),
                }
            }
        }
        // Literal segments win over parameters, as in API Gateway.
        routes.sort_by_key(|r| {
            r.segments
                .iter()
                .filter(|s| matches!(s, Segment::Param(_)))
                .count()
        });
        Ok(Self {
            routes,
            queue_consumers,
            schedules,
            cors: None,
        })
    }

    /// The route table, as printed at start.
    pub fn describe(&self) -> String {
        let mut lines: Vec<String> = self
            .routes
            .iter()
            .map(|r| format!("  {:<7} {:<48} → {}", r.method, r.path, r.binary))
            .collect();
        lines.sort();
        for (function, _) in &self.queue_consumers {
            for event in &function.events {
                if let TemplateEvent::Sqs { queue, .. } = event {
                    lines.push(format!("  SQS     {queue:<48} → {}", function.binary));
                }
            }
        }
        for schedule in &self.schedules {
            lines.push(format!(
                "  EVERY   {:<48} → {}",
                format!("{:?}", schedule.every),
                schedule.binary
            ));
        }
        lines.join("\n")
    }

    fn find(&self, method: &str, path: &str) -> Option<(&Route, Vec<(String, String)>)> {
        self.routes
            .iter()
            .find_map(|route| route.matches(method, path).map(|params| (route, params)))
    }

    /// Serves HTTP on `listener` until the task is dropped.
    pub async fn serve(
        self: Arc<Self>,
        state: Arc<State>,
        listener: TcpListener,
    ) -> anyhow::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await.context("accepting a connection")?;
            // Streamed events are small writes: Nagle's algorithm would hold
            // each until the client's delayed ACK (about 40 ms).
            let _ = stream.set_nodelay(true);
            let gateway = self.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let gateway = gateway.clone();
                    let state = state.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(gateway.handle(&state, req, peer).await)
                    }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "connection closed");
                }
            });
        }
    }

    async fn handle(
        &self,
        state: &State,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<GatewayBody> {
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        // API Gateway answers a preflight itself, on every path.
        if let Some(cors) = &self.cors
            && method == "OPTIONS"
            && req.headers().contains_key("access-control-request-method")
        {
            let mut response = Response::builder().status(StatusCode::NO_CONTENT);
            for (name, value) in cors.preflight(req.headers()).unwrap_or_default() {
                response = response.header(name, value);
            }
            return response
                .body(Full::new(Bytes::new()).boxed())
                .expect("preflight headers are valid");
        }
        let origin = req
            .headers()
            .get("origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut response = self.route(state, req, &method, &path, peer).await;
        if let Some(cors) = &self.cors {
            cors.decorate(origin.as_deref(), response.headers_mut());
        }
        response
    }

    async fn route(
        &self,
        state: &State,
        req: Request<Incoming>,
        method: &str,
        path: &str,
        peer: SocketAddr,
    ) -> Response<GatewayBody> {
        let (method, path) = (method.to_owned(), path.to_owned());
        let Some((route, params)) = self.find(&method, &path) else {
            return gateway_message(StatusCode::NOT_FOUND, "Not Found");
        };
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_PAYLOAD_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return gateway_message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
            }
        };
        let event = events::http_event(&parts, &body, &route.route_key(), &params, peer);
        let request = match common::lambda_http::request::from_str(&event.to_string()) {
            Ok(request) => request,
            Err(e) => {
                tracing::error!(error = %e, "event did not parse as an API Gateway v2 request");
                return gateway_message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
            }
        };
        let started = std::time::Instant::now();
        let (parts, body) = match route.handler {
            RouteHandler::Whole(handler) => {
                let (parts, body) = handler(state, request).await.into_parts();
                (parts, Full::new(Bytes::from(body.to_vec())).boxed())
            }
            // Events go out as the handler's task writes them.
            RouteHandler::Streamed(handler) => {
                let (parts, body) = handler(state, request).await.into_parts();
                (parts, body.boxed())
            }
        };
        tracing::info!(
            method, path, route = %route.binary, status = parts.status.as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0, "request"
        );
        Response::from_parts(parts, body)
    }
}

/// API Gateway's own answers (no route, payload too large) are `{"message": ...}`.
fn gateway_message(status: StatusCode, message: &str) -> Response<GatewayBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(
                serde_json::json!({ "message": message }).to_string(),
            ))
            .boxed(),
        )
        .expect("static response is valid")
}
