//! A question answered as server-sent events, for the streaming routes:
//!
//! - `citations`: every retrieved passage (`[n]` in the answer names the
//!   n-th), before the model is called;
//! - `delta` (`{text}`): the answer as the model writes it, its markers
//!   resolved against the passages given;
//! - `usage`: the provider's count of the whole answer;
//! - `done`: the numbers cited (in order of first mention), timings, and
//!   what the caller adds (a chat's session and message ids);
//! - `error` (problem fields) instead of `usage` and `done` when the model
//!   fails midway: a stream never just stops.
//!
//! Comments (`: keep-alive`) go out while the model is silent. The tokens
//! are reserved before the first event, as for an unstreamed answer, and
//! settled after the last with the provider's usage. A client that goes
//! away stops the generation: it is charged the prompt and what was
//! written, and the rest of the reservation is released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use lambda_http::Response;
use serde::Serialize;
use sqlx::PgPool;

use super::{
    Ask, Citation, Timings, Usage, chat_problem, citation, ms, reservation_estimate, retrieve,
    sources,
};
use crate::budget::{self, Reservation};
use crate::chat::citations::MarkerFilter;
use crate::chat::{ChatModel, ChatRequest, Piece, Source, Turn};
use crate::error::Result;
use crate::sse::{self, Sender, SseBody};
use crate::state::State;
use crate::workspaces::Access;

/// How long the model may be silent before a keep-alive comment.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(10);

/// What a finished answer leaves for its route to record: the text, the
/// numbers it cites, and what it cost. The route's `done` fields come back.
pub struct Finished {
    pub answer: String,
    pub cited: Vec<usize>,
    pub citations: Vec<Citation>,
    pub usage: Usage,
}

/// Records a finished answer (a chat stores both turns); its JSON object
/// is merged into the `done` event.
pub type OnFinish =
    Box<dyn FnOnce(Finished) -> BoxFuture<'static, Result<serde_json::Value>> + Send>;

#[derive(Serialize)]
struct CitationsEvent<'a> {
    citations: &'a [Citation],
}

#[derive(Serialize)]
struct Delta<'a> {
    text: &'a str,
}

/// Retrieves, reserves, then answers `ask` as a stream of events; errors
/// before the first event (a bad filter, an exhausted budget) are the
/// caller's problem responses.
pub async fn ask_stream(
    state: &State,
    access: Access,
    ask: Ask<'_>,
    on_finish: OnFinish,
) -> Result<Response<SseBody>> {
    let started = Instant::now();
    let options = ask.options;
    let mut timings = Timings::default();
    let (mut access, hits) = retrieve(state, access, &ask, &mut timings).await?;
    let citations: Vec<Citation> = hits.iter().map(citation).collect();

    if !options.answer || hits.is_empty() {
        access.commit().await?;
        let answer = if options.answer {
            super::NOTHING_FOUND.to_owned()
        } else {
            String::new()
        };
        let (events, response) = sse::channel();
        tokio::spawn(async move {
            if !events
                .event(
                    "citations",
                    &CitationsEvent {
                        citations: &citations,
                    },
                )
                .await
            {
                return;
            }
            if !answer.is_empty() {
                events.event("delta", &Delta { text: &answer }).await;
            }
            timings.total_ms = ms(started);
            let finished = Finished {
                answer,
                cited: Vec::new(),
                citations: Vec::new(),
                usage: Usage::default(),
            };
            finish(&events, on_finish, finished, timings).await;
        });
        return Ok(response);
    }

    let sources = sources(&hits);
    let request = ChatRequest {
        question: ask.question,
        history: ask.history,
        sources: &sources,
        max_tokens: options.max_tokens,
    };
    let (prompt_estimate, estimate) = reservation_estimate(&request);
    let model = state.chat_model().await?.clone();
    let reservation = budget::reserve(
        &mut access.tx,
        access.workspace,
        access.caller,
        ask.purpose,
        estimate,
        state.config.query.reservation_ttl,
    )
    .await?;
    access.commit().await?;

    let (events, response) = sse::channel();
    let generation = Generation {
        db: state.db.clone(),
        model,
        reservation,
        question: ask.question.to_owned(),
        history: ask.history.to_vec(),
        sources,
        max_tokens: options.max_tokens,
        prompt_estimate,
        citations,
        timings,
        started,
    };
    tokio::spawn(generation.run(events, on_finish));
    Ok(response)
}

/// Everything the answer's task owns: it outlives the handler's borrow
/// of the state (under Lambda the body streams after the handler returned).
struct Generation {
    db: PgPool,
    model: Arc<dyn ChatModel>,
    reservation: Reservation,
    question: String,
    history: Vec<Turn>,
    sources: Vec<Source>,
    max_tokens: u32,
    prompt_estimate: u64,
    citations: Vec<Citation>,
    timings: Timings,
    started: Instant,
}

/// How the model's stream ended.
enum End {
    Complete(Option<crate::chat::Usage>),
    Failed(crate::chat::ChatError),
    ClientGone,
}

impl Generation {
    async fn run(mut self, events: Sender, on_finish: OnFinish) {
        let request = ChatRequest {
            question: &self.question,
            history: &self.history,
            sources: &self.sources,
            max_tokens: self.max_tokens,
        };
        let valid: Vec<usize> = self.sources.iter().map(|s| s.number).collect();
        let mut filter = MarkerFilter::new(&valid);
        let mut written = String::new();
        let generating = Instant::now();

        let end = if events
            .event(
                "citations",
                &CitationsEvent {
                    citations: &self.citations,
                },
            )
            .await
        {
            let mut pieces = self.model.stream(&request);
            let mut keep_alive = tokio::time::interval(KEEP_ALIVE_EVERY);
            keep_alive.tick().await; // the first tick is immediate
            let mut usage = None;
            loop {
                tokio::select! {
                    piece = pieces.next() => match piece {
                        Some(Ok(Piece::Text(text))) => {
                            written.push_str(&text);
                            let out = filter.push(&text);
                            if !out.is_empty() && !events.event("delta", &Delta { text: &out }).await {
                                break End::ClientGone;
                            }
                            keep_alive.reset();
                        }
                        Some(Ok(Piece::Usage(counted))) => usage = Some(counted),
                        Some(Err(e)) => break End::Failed(e),
                        None => break End::Complete(usage),
                    },
                    _ = keep_alive.tick() => {
                        if !events.keep_alive().await {
                            break End::ClientGone;
                        }
                    }
                    _ = events.closed() => break End::ClientGone,
                }
            }
        } else {
            End::ClientGone
        };
        self.timings.generate_ms = ms(generating);
        let name = self.model.name().to_owned();
        // What was written, counted as a provider without usage would.
        let partial = crate::chat::Usage {
            prompt_tokens: self.prompt_estimate,
            completion_tokens: crate::token_count::count(&written) as u64,
        };

        match end {
            End::ClientGone => {
                tracing::info!(written = written.len(), "client left a streamed answer");
                settle(&self.db, &self.reservation, partial, &name).await;
            }
            End::Failed(e) => {
                tracing::warn!(error = %e, model = %name, "streamed generation failed");
                if written.is_empty() {
                    if let Err(release) = budget::release(&self.db, &self.reservation).await {
                        tracing::warn!(error = %release, "releasing a reservation failed");
                    }
                } else {
                    settle(&self.db, &self.reservation, partial, &name).await;
                }
                events
                    .event("error", &sse::problem(&chat_problem(&e), None))
                    .await;
            }
            End::Complete(usage) => {
                let usage = usage.unwrap_or(partial);
                let tail = filter.finish();
                if !tail.is_empty() {
                    events.event("delta", &Delta { text: &tail }).await;
                }
                settle(&self.db, &self.reservation, usage, &name).await;
                let cited = filter.cited().to_vec();
                let usage = Usage {
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                    total_tokens: usage.prompt_tokens.saturating_add(usage.completion_tokens),
                };
                let citations = cited
                    .iter()
                    .filter_map(|n| self.citations.get(n.wrapping_sub(1)).cloned())
                    .collect();
                let (answer, _) = crate::chat::citations::resolve(&written, &valid);
                self.timings.total_ms = ms(self.started);
                let finished = Finished {
                    answer,
                    cited,
                    citations,
                    usage,
                };
                finish(&events, on_finish, finished, self.timings).await;
            }
        }
    }
}

/// Commits `usage` against the reservation; a failure leaves it to the
/// sweeper (the answer was already sent).
async fn settle(db: &PgPool, reservation: &Reservation, usage: crate::chat::Usage, model: &str) {
    if let Err(e) = budget::commit(
        db,
        reservation,
        usage.prompt_tokens,
        usage.completion_tokens,
        model,
    )
    .await
    {
        tracing::error!(error = %e, "committing a streamed answer's tokens failed");
    }
}

/// `usage`, the route's record, then `done`; a record that fails is an
/// `error` event instead of `done`.
async fn finish(events: &Sender, on_finish: OnFinish, finished: Finished, timings: Timings) {
    let usage = finished.usage;
    let cited = finished.cited.clone();
    if !events.event("usage", &usage).await {
        // Gone: still record what was answered.
        let _ = on_finish(finished).await;
        return;
    }
    match on_finish(finished).await {
        Ok(extra) => {
            let mut done = serde_json::json!({ "cited": cited, "timings": timings });
            if let (Some(done), serde_json::Value::Object(extra)) = (done.as_object_mut(), extra) {
                done.extend(extra);
            }
            events.event("done", &done).await;
        }
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(error = %e.chain(), "recording a streamed answer failed");
            }
            events.event("error", &sse::problem(&e, None)).await;
        }
    }
}
