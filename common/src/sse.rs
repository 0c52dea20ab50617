//! Server-sent events: a response body fed through a channel while the
//! handler's task writes the answer, so the first event leaves before the
//! last is written. Under Lambda the body goes out through response
//! streaming (`lambda_http::run_with_streaming_response`), locally through
//! the gateway's connection.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use lambda_http::Request;
use lambda_http::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use lambda_http::http::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::ApiError;

/// Events buffered between the writer and a slow client; past it the
/// writer waits (and the model with it).
const BUFFERED_EVENTS: usize = 64;

/// A comment line: proxies and clients see traffic while the model thinks.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// A response body: a whole one (an answer given before any event, such
/// as a problem), or the events of a [`Sender`] until it is dropped.
pub struct SseBody {
    whole: Option<Bytes>,
    events: Option<mpsc::Receiver<Bytes>>,
}

impl SseBody {
    pub fn whole(bytes: impl Into<Bytes>) -> Self {
        Self {
            whole: Some(bytes.into()),
            events: None,
        }
    }

    /// Everything the body holds or will hold, read to its end.
    pub async fn collect(mut self) -> Bytes {
        let mut out = Vec::new();
        if let Some(whole) = self.whole.take() {
            out.extend_from_slice(&whole);
        }
        if let Some(events) = &mut self.events {
            while let Some(event) = events.recv().await {
                out.extend_from_slice(&event);
            }
        }
        out.into()
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(whole) = self.whole.take() {
            return Poll::Ready(Some(Ok(Frame::data(whole))));
        }
        match &mut self.events {
            Some(events) => events
                .poll_recv(cx)
                .map(|event| event.map(|bytes| Ok(Frame::data(bytes)))),
            None => Poll::Ready(None),
        }
    }
}

/// Writes events; every write says whether the client is still there.
pub struct Sender {
    tx: mpsc::Sender<Bytes>,
}

impl Sender {
    /// Sends `event: {name}` with `data` as JSON; `false` once the body
    /// was dropped (the client went away).
    pub async fn event(&self, name: &str, data: &impl Serialize) -> bool {
        self.raw(encode(name, data)).await
    }

    pub async fn keep_alive(&self) -> bool {
        self.raw(Bytes::from_static(KEEP_ALIVE)).await
    }

    async fn raw(&self, bytes: Bytes) -> bool {
        self.tx.send(bytes).await.is_ok()
    }

    /// Resolves once the body was dropped (the client went away).
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// One event: `event: {name}` and its JSON on one `data:` line (JSON
/// escapes newlines, so one line always holds it).
pub fn encode(name: &str, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// A stream of events: the writer and the 200 `text/event-stream` response.
pub fn channel() -> (Sender, Response<SseBody>) {
    let (tx, rx) = mpsc::channel(BUFFERED_EVENTS);
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/event-stream")
        .header(CACHE_CONTROL, "no-store")
        // Proxies (nginx and the like) must not hold events back.
        .header("x-accel-buffering", "no")
        .body(SseBody {
            whole: None,
            events: Some(rx),
        })
        .expect("static headers are valid");
    (Sender { tx }, response)
}

/// A handler's outcome before its stream starts: the stream, or the
/// problem+json answer of [`crate::http::respond`].
pub async fn respond<F>(req: &Request, outcome: F) -> Response<SseBody>
where
    F: Future<Output = Result<Response<SseBody>, ApiError>>,
{
    match outcome.await {
        Ok(response) => response,
        Err(error) => {
            let (parts, body) =
                crate::http::problem_response(&error, crate::http::request_id(req)).into_parts();
            Response::from_parts(parts, SseBody::whole(body.to_vec()))
        }
    }
}

/// A streamed response read to its end, as one whole body (for a route
/// behind API Gateway asked to stream: it buffers responses anyway).
pub async fn whole(response: Response<SseBody>) -> Response<lambda_http::Body> {
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        lambda_http::Body::from(body.collect().await.to_vec()),
    )
}

/// The problem fields of an `error` event (a failure after the stream began).
pub fn problem(error: &ApiError, request_id: Option<&str>) -> serde_json::Value {
    serde_json::to_value(error.problem(request_id)).unwrap_or_default()
}
