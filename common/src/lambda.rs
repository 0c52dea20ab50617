//! How a function binary runs: every package exports a table of its
//! functions; a binary looks itself up by name, builds [`State`] once and
//! hands events to the Lambda runtime. The local gateway reads the same
//! tables, so Lambda and local runs call the very same handler.

use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use lambda_http::lambda_runtime::{self, LambdaEvent};
use lambda_http::{Body, Request, Response};

use crate::state::State;

/// An HTTP route handler (API Gateway HTTP API, payload 2.0).
pub type HttpHandler = for<'a> fn(&'a State, Request) -> BoxFuture<'a, Response<Body>>;

/// An SQS batch consumer that reports partial failures.
pub type SqsHandler = for<'a> fn(
    &'a State,
    aws_lambda_events::sqs::SqsEvent,
) -> BoxFuture<'a, aws_lambda_events::sqs::SqsBatchResponse>;

/// A scheduled job (EventBridge schedule). An error fails the invocation,
/// so the scheduler's retry policy applies. [`remaining_time`] gives the
/// invocation's deadline.
pub type ScheduleHandler =
    for<'a> fn(&'a State, serde_json::Value) -> BoxFuture<'a, Result<(), crate::error::ApiError>>;

/// Any JSON event, answered with JSON; an error fails the invocation.
/// No [`State`]: for functions that must not need the app's
/// configuration (the migration function reads the database variables
/// alone). [`remaining_time`] gives the invocation's deadline.
pub type RawHandler =
    fn(serde_json::Value) -> BoxFuture<'static, anyhow::Result<serde_json::Value>>;

/// An HTTP route whose answer streams (server-sent events): served by a
/// Lambda function URL in response-streaming mode, which routes nothing,
/// so the route's method and path pattern travel with the handler.
pub type StreamHandler =
    for<'a> fn(&'a State, Request) -> BoxFuture<'a, Response<crate::sse::SseBody>>;

#[derive(Clone, Copy)]
pub struct StreamRoute {
    pub method: &'static str,
    /// With `{name}` parameters, as template.yaml writes paths.
    pub path: &'static str,
    pub handler: StreamHandler,
}

/// What kind of event a function consumes.
#[derive(Clone, Copy)]
pub enum Handler {
    Http(HttpHandler),
    Stream(StreamRoute),
    Sqs(SqsHandler),
    Schedule(ScheduleHandler),
    Raw(RawHandler),
}

/// One function: its binary name (`<resource>-<action>`, as in template.yaml) and handler.
#[derive(Clone, Copy)]
pub struct Function {
    pub name: &'static str,
    pub handler: Handler,
}

// Where the worker and the schedules read it, below this module.
pub use crate::deadline::{remaining_time, with_deadline};

/// Wraps an `async fn(&State, Request) -> Response<Body>` as an [`HttpHandler`].
#[macro_export]
macro_rules! http_function {
    ($name:literal, $handler:path) => {{
        fn boxed<'a>(
            state: &'a $crate::state::State,
            req: $crate::lambda_http::Request,
        ) -> $crate::futures::future::BoxFuture<
            'a,
            $crate::lambda_http::Response<$crate::lambda_http::Body>,
        > {
            Box::pin($crate::access_log::logged($name, req, move |req| {
                $handler(state, req)
            }))
        }
        $crate::lambda::Function {
            name: $name,
            handler: $crate::lambda::Handler::Http(boxed),
        }
    }};
}

/// Wraps an `async fn(&State, Request) -> Response<SseBody>` serving
/// `method path` as a [`StreamRoute`].
#[macro_export]
macro_rules! stream_function {
    ($name:literal, $method:literal, $path:expr, $handler:path) => {{
        fn boxed<'a>(
            state: &'a $crate::state::State,
            req: $crate::lambda_http::Request,
        ) -> $crate::futures::future::BoxFuture<
            'a,
            $crate::lambda_http::Response<$crate::sse::SseBody>,
        > {
            Box::pin($crate::access_log::logged($name, req, move |req| {
                $handler(state, req)
            }))
        }
        $crate::lambda::Function {
            name: $name,
            handler: $crate::lambda::Handler::Stream($crate::lambda::StreamRoute {
                method: $method,
                path: $path,
                handler: boxed,
            }),
        }
    }};
}

/// Wraps an `async fn(&State, SqsEvent) -> SqsBatchResponse` as an [`SqsHandler`].
#[macro_export]
macro_rules! sqs_function {
    ($name:literal, $handler:path) => {{
        fn boxed<'a>(
            state: &'a $crate::state::State,
            event: $crate::aws_lambda_events::sqs::SqsEvent,
        ) -> $crate::futures::future::BoxFuture<'a, $crate::aws_lambda_events::sqs::SqsBatchResponse> {
            Box::pin($handler(state, event))
        }
        $crate::lambda::Function {
            name: $name,
            handler: $crate::lambda::Handler::Sqs(boxed),
        }
    }};
}

/// Wraps an `async fn(&State, serde_json::Value) -> Result<(), ApiError>` as a [`ScheduleHandler`].
#[macro_export]
macro_rules! schedule_function {
    ($name:literal, $handler:path) => {{
        fn boxed<'a>(
            state: &'a $crate::state::State,
            event: $crate::serde_json::Value,
        ) -> $crate::futures::future::BoxFuture<'a, ::std::result::Result<(), $crate::ApiError>>
        {
            Box::pin($handler(state, event))
        }
        $crate::lambda::Function {
            name: $name,
            handler: $crate::lambda::Handler::Schedule(boxed),
        }
    }};
}

/// Wraps an `async fn(serde_json::Value) -> anyhow::Result<serde_json::Value>` as a [`RawHandler`].
#[macro_export]
macro_rules! raw_function {
    ($name:literal, $handler:path) => {{
        fn boxed(
            event: $crate::serde_json::Value,
        ) -> $crate::futures::future::BoxFuture<
            'static,
            $crate::anyhow::Result<$crate::serde_json::Value>,
        > {
            Box::pin($handler(event))
        }
        $crate::lambda::Function {
            name: $name,
            handler: $crate::lambda::Handler::Raw(boxed),
        }
    }};
}

/// Runs the function called `name` from `functions` under the Lambda runtime.
/// Call from a binary's `main` with `env!("CARGO_BIN_NAME")`.
pub fn serve(functions: &[Function], name: &str) -> Result<(), lambda_runtime::Error> {
    // The template declares AWS_ENDPOINT_URL (empty in AWS) so that
    // `sam local invoke` can set it; the SDK would warn about an empty one.
    if std::env::var_os("AWS_ENDPOINT_URL").is_some_and(|v| v.is_empty()) {
        // SAFETY: no other thread runs yet (the runtime starts below).
        unsafe { std::env::remove_var("AWS_ENDPOINT_URL") };
    }
    crate::telemetry::init();
    let function = functions
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| format!("no function named {name} in this package"))?;
    // One event at a time per container: a single-threaded runtime starts
    // faster and needs no cross-thread synchronisation.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match function.handler {
            Handler::Http(handler) => {
                let state = app_state().await?;
                lambda_http::run(lambda_http::service_fn(move |req: Request| async move {
                    Ok::<_, std::convert::Infallible>(handler(state, req).await)
                }))
                .await
            }
            Handler::Stream(route) => {
                let state = app_state().await?;
                lambda_http::run_with_streaming_response(lambda_http::service_fn(
                    move |req: Request| async move {
                        Ok::<_, std::convert::Infallible>((route.handler)(state, req).await)
                    },
                ))
                .await
            }
            Handler::Sqs(handler) => {
                let state = app_state().await?;
                lambda_runtime::run(lambda_runtime::service_fn(
                    move |event: LambdaEvent<aws_lambda_events::sqs::SqsEvent>| async move {
                        let work = handler(state, event.payload);
                        Ok::<_, std::convert::Infallible>(
                            with_deadline(invocation_deadline(&event.context), work).await,
                        )
                    },
                ))
                .await
            }
            Handler::Schedule(handler) => {
                let state = app_state().await?;
                lambda_runtime::run(lambda_runtime::service_fn(
                    move |event: LambdaEvent<serde_json::Value>| async move {
                        let work = handler(state, event.payload);
                        // The whole cause chain: the invocation's error is
                        // all a failed schedule leaves in the logs.
                        with_deadline(invocation_deadline(&event.context), work).await.map_err(|e| {
                            let chain = e.chain();
                            tracing::error!(function = function.name, error = %chain, "scheduled run failed");
                            lambda_runtime::Error::from(chain)
                        })
                    },
                ))
                .await
            }
            Handler::Raw(handler) => {
                lambda_runtime::run(lambda_runtime::service_fn(
                    move |event: LambdaEvent<serde_json::Value>| async move {
                        let work = handler(event.payload);
                        with_deadline(invocation_deadline(&event.context), work)
                            .await
                            .map_err(|e| {
                                let chain = format!("{e:#}");
                                tracing::error!(function = function.name, error = %chain, "invocation failed");
                                lambda_runtime::Error::from(chain)
                            })
                    },
                ))
                .await
            }
        }
    })
}

/// The app's [`State`], built once per container; its secrets are read
/// here (crate::secrets). Lives as long as the container: leaking gives
/// handlers a `&'static State`.
async fn app_state() -> anyhow::Result<&'static State> {
    let config = crate::secrets::load_config().await?;
    Ok(Box::leak(Box::new(State::new(config)?)))
}

/// When Lambda cuts the invocation off, on this process's clock.
fn invocation_deadline(context: &lambda_runtime::Context) -> Instant {
    let left = context
        .deadline()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left
}
