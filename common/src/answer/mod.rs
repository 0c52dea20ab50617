//! Answering a question from a workspace's documents: embed, retrieve,
//! reserve budget, generate, settle, cite. Shared by the query and chat
//! routes.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::budget::{self, Purpose};
use crate::chat::{ChatError, ChatRequest, Source, Turn};
use crate::config::RerankProvider;
use crate::error::{ApiError, Result};
use crate::ids::{ChunkId, DocumentId};
use crate::retrieval::{self, Filters, FiltersIn, Hit, Mode, Search};
use crate::state::State;
use crate::workspaces::Access;

pub mod stream;

/// Longest question or chat message, in characters.
pub const MAX_QUESTION_CHARS: usize = 4000;
/// Most chunks one request may retrieve.
pub const MAX_TOP_K: u32 = 50;
pub const DEFAULT_TOP_K: u32 = 8;
/// Characters of a chunk a citation quotes.
const SNIPPET_CHARS: usize = 240;

/// `POST /workspaces/{id}/query` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueryIn {
    pub question: String,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub filters: Option<FiltersIn>,
    #[serde(default)]
    pub answer: Option<bool>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Seed-shaped bodies: `true` answers with the events of the stream
    /// route, all at once (API Gateway buffers the response).
    #[serde(default)]
    pub stream: Option<bool>,
    /// Rerank the fused candidates (needs `RERANK_PROVIDER`); default
    /// `RERANK_DEFAULT`.
    #[serde(default)]
    pub rerank: Option<bool>,
}

/// The checked options every question carries (query and chat alike).
#[derive(Debug, Clone)]
pub struct Options {
    pub top_k: usize,
    pub mode: Mode,
    pub filters: Filters,
    pub answer: bool,
    pub max_tokens: u32,
    /// Rerank the fused candidates (`rerank` in the body); None: the
    /// deployment's `RERANK_DEFAULT`.
    pub rerank: Option<bool>,
}

impl Options {
    pub fn parse(
        config: &crate::config::QueryConfig,
        top_k: Option<u32>,
        mode: Option<Mode>,
        filters: Option<FiltersIn>,
        answer: Option<bool>,
        max_tokens: Option<u32>,
    ) -> Result<Self> {
        let top_k = top_k.unwrap_or(DEFAULT_TOP_K);
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(ApiError::unprocessable(
                "top_k",
                format!("must be between 1 and {MAX_TOP_K}"),
            ));
        }
        let max_tokens = max_tokens.unwrap_or(config.default_max_tokens);
        if !(1..=config.max_tokens_limit).contains(&max_tokens) {
            return Err(ApiError::unprocessable(
                "max_tokens",
                format!("must be between 1 and {}", config.max_tokens_limit),
            ));
        }
        Ok(Self {
            top_k: top_k as usize,
            mode: mode.unwrap_or_default(),
            filters: Filters::parse(filters)?,
            answer: answer.unwrap_or(true),
            max_tokens,
            rerank: None,
        })
    }
}

impl Options {
    /// With the request's choice of reranking.
    pub fn with_rerank(mut self, rerank: Option<bool>) -> Self {
        self.rerank = rerank;
        self
    }
}

/// Counts one query or chat request of `user` against
/// `QUERY_RATE_LIMIT_PER_MINUTE` (query and chat apart); 429 past it.
pub async fn rate_limit(state: &State, user: crate::ids::UserId, purpose: Purpose) -> Result<()> {
    let key = format!("{}:user:{user}", purpose.as_str());
    crate::rate_limit::hit(&state.db, &key, state.config.query.rate_limit()).await
}

/// The problem for a question the embedding provider did not embed: 503
/// when a retry may succeed (it is down, throttling, timing out), 502 when
/// it refused the request itself.
fn embed_problem(error: &crate::embed::EmbedError) -> ApiError {
    if error.is_retryable() {
        ApiError::ServiceUnavailable("the embedding provider is unavailable, retry shortly".into())
    } else {
        ApiError::BadGateway("the embedding provider refused to embed this question".into())
    }
}

/// The problem for an answer the model did not give: 503 when a retry may
/// succeed, 502 when it refused the request itself.
fn chat_problem(error: &ChatError) -> ApiError {
    match error {
        ChatError::Unavailable(_) => {
            ApiError::ServiceUnavailable("the answer model is unavailable, retry shortly".into())
        }
        ChatError::Failed(_) => {
            ApiError::BadGateway("the answer model refused to answer this request".into())
        }
    }
}

/// A question's text: trimmed, non-empty, bounded, no NUL; 422 naming `field`.
pub fn check_text(field: &str, text: &str) -> Result<String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::unprocessable(field, "must not be empty"));
    }
    if text.chars().count() > MAX_QUESTION_CHARS {
        return Err(ApiError::unprocessable(
            field,
            format!("must be at most {MAX_QUESTION_CHARS} characters"),
        ));
    }
    if text.contains('\0') {
        return Err(ApiError::unprocessable(field, "must not contain NUL"));
    }
    Ok(text.to_owned())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Locator {
    pub page: Option<i32>,
    pub heading: Option<String>,
}

/// A passage an answer rests on. In an answer, `[n]` refers to the n-th citation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Citation {
    pub document_id: DocumentId,
    pub title: String,
    pub chunk_id: ChunkId,
    pub ordinal: i32,
    pub locator: Locator,
    pub snippet: String,
    pub score: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// Where the time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Timings {
    pub embed_ms: f64,
    pub retrieve_ms: f64,
    /// Present when the candidates were sent to the reranker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_ms: Option<f64>,
    /// `applied`, or why the fused order stands (`fallback: timeout`,
    /// `fallback: error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank: Option<&'static str>,
    pub generate_ms: f64,
    pub total_ms: f64,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Answered {
    /// Absent when the request asked for passages only (`answer: false`).
    pub answer: Option<String>,
    pub citations: Vec<Citation>,
    pub usage: Usage,
    pub timings: Timings,
}

/// One question to answer.
pub struct Ask<'a> {
    /// What retrieval matches (for chat: recent turns and the message).
    pub retrieval_text: &'a str,
    /// What the model answers.
    pub question: &'a str,
    pub history: &'a [Turn],
    pub options: &'a Options,
    pub purpose: Purpose,
}

/// The answer when nothing in the workspace matches: no model call, no tokens.
pub const NOTHING_FOUND: &str =
    "None of this workspace's documents match the question, so there is nothing to answer from.";

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 100_000.0).round() / 100.0
}

/// Retrieves, reserves, generates and settles. No transaction stays open
/// across a provider call: a remote embedder embeds the question between
/// the membership check's transaction and retrieval's, and the tokens are
/// reserved in `access`'s transaction, which is committed before the model
/// is called (the reservation must be durable first).
pub async fn ask(state: &State, access: Access, ask: Ask<'_>) -> Result<Answered> {
    let started = Instant::now();
    let options = ask.options;
    let mut timings = Timings::default();
    let (mut access, hits) = retrieve(state, access, &ask, &mut timings).await?;

    if !options.answer {
        access.commit().await?;
        timings.total_ms = ms(started);
        return Ok(Answered {
            answer: None,
            citations: hits.iter().map(citation).collect(),
            usage: Usage::default(),
            timings,
        });
    }
    if hits.is_empty() {
        access.commit().await?;
        timings.total_ms = ms(started);
        return Ok(Answered {
            answer: Some(NOTHING_FOUND.into()),
            citations: Vec::new(),
            usage: Usage::default(),
            timings,
        });
    }

    let sources = sources(&hits);
    let request = ChatRequest {
        question: ask.question,
        history: ask.history,
        sources: &sources,
        max_tokens: options.max_tokens,
    };
    let (_, estimate) = reservation_estimate(&request);
    // Built before anything is reserved: a model that cannot be built must
    // not leave tokens held until the sweeper's TTL. Cached after the
    // container's first build, so the open transaction rarely waits on it.
    let model = state.chat_model().await?;
    // Reserved in the membership's transaction, against the limit as it is
    // now (not as read with the membership), and committed at once: the
    // reservation is durable and its locks released before the model runs.
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

    let t = Instant::now();
    let outcome = model.complete(&request).await;
    timings.generate_ms = ms(t);
    let response = match outcome {
        Ok(response) => response,
        Err(e) => {
            if let Err(release) = budget::release(&state.db, &reservation).await {
                // The sweeper releases it after its TTL.
                tracing::warn!(error = %release, "releasing a reservation failed");
            }
            tracing::warn!(error = %e, model = model.name(), "answer generation failed");
            return Err(chat_problem(&e));
        }
    };
    budget::commit(
        &state.db,
        &reservation,
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
        model.name(),
    )
    .await?;

    let citations = response
        .cited
        .iter()
        .filter_map(|n| hits.get(n.wrapping_sub(1)).map(citation))
        .collect();
    timings.total_ms = ms(started);
    Ok(Answered {
        answer: Some(crate::chat::citations::renumber(
            &response.answer,
            &response.cited,
        )),
        citations,
        usage: Usage {
            prompt_tokens: response.usage.prompt_tokens,
            completion_tokens: response.usage.completion_tokens,
            // Provider-reported numbers: never an overflow.
            total_tokens: response
                .usage
                .prompt_tokens
                .saturating_add(response.usage.completion_tokens),
        },
        timings,
    })
}

/// Embeds the question (outside the transaction when the embedder is
/// remote) and retrieves its passages in `access`'s workspace.
async fn retrieve(
    state: &State,
    mut access: Access,
    ask: &Ask<'_>,
    timings: &mut Timings,
) -> Result<(Access, Vec<Hit>)> {
    let options = ask.options;

    let embedding = if options.mode == Mode::Keyword {
        None
    } else {
        let t = Instant::now();
        let embedder = state.embedder().await?;
        let embed = embedder.embed_query(ask.retrieval_text);
        let embedded = if embedder.in_process() {
            // No call leaves the process: no reason to leave the transaction.
            embed.await
        } else {
            let (reopened, embedded) = access.without_tx(&state.db, embed).await?;
            access = reopened;
            embedded
        };
        let vector = embedded.map_err(|e| {
            tracing::warn!(error = %e, "question embedding failed");
            embed_problem(&e)
        })?;
        timings.embed_ms = ms(t);
        Some(vector)
    };

    // The question's choice, else its workspace's, else the deployment's
    // (the workspace is asked only when there is a reranker to use).
    let wanted = match options.rerank {
        Some(wanted) => Some(wanted),
        None if state.config.rerank.provider != RerankProvider::None => Some(
            crate::workspaces::rerank_default(&mut access.tx, access.workspace)
                .await?
                .unwrap_or(state.config.rerank.default_on),
        ),
        None => None,
    };
    let reranker = match wanted {
        Some(true) => Some(state.reranker().await?.ok_or_else(|| {
            ApiError::unprocessable("rerank", "no reranker is configured (RERANK_PROVIDER)")
        })?),
        _ => None,
    };
    let top_k = match reranker {
        Some(_) => options
            .top_k
            .max(state.config.rerank.candidates.min(MAX_TOP_K as usize)),
        None => options.top_k,
    };
    let t = Instant::now();
    let mut hits = retrieval::search(
        &mut access.tx,
        &state.db,
        &state.config.query,
        state.config.embedding.dimensions,
        &Search {
            workspace: access.workspace,
            text: ask.retrieval_text,
            embedding: embedding.as_deref(),
            mode: options.mode,
            top_k,
            filters: &options.filters,
            semantic_weight: state
                .config
                .query
                .semantic_weight(state.config.embedding.provider),
        },
    )
    .await?;
    timings.retrieve_ms = ms(t);
    crate::metrics::emit(
        &[(
            "RetrievalLatency",
            crate::metrics::Unit::Milliseconds,
            timings.retrieve_ms,
        )],
        &[("Mode", options.mode.as_str())],
    );
    if let Some(reranker) = reranker
        && hits.len() > 1
    {
        let t = Instant::now();
        let texts: Vec<&str> = hits.iter().map(|h| h.content.as_str()).collect();
        let call = tokio::time::timeout(
            state.config.rerank.timeout,
            reranker.rerank(ask.retrieval_text, &texts),
        );
        // No transaction waits on the reranker.
        let (reopened, ranked) = access.without_tx(&state.db, call).await?;
        access = reopened;
        timings.rerank_ms = Some(ms(t));
        timings.rerank = Some(match ranked {
            Ok(Ok(ranking)) => {
                let mut slots: Vec<Option<Hit>> = hits.drain(..).map(Some).collect();
                hits = ranking
                    .into_iter()
                    .filter_map(|(i, score)| {
                        let mut hit = slots.get_mut(i)?.take()?;
                        if score.is_finite() {
                            hit.score = score;
                        }
                        Some(hit)
                    })
                    .collect();
                "applied"
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, reranker = reranker.name(), "reranking failed; fused order kept");
                "fallback: error"
            }
            Err(_) => {
                tracing::warn!(
                    reranker = reranker.name(),
                    "reranking timed out; fused order kept"
                );
                "fallback: timeout"
            }
        });
    }
    hits.truncate(options.top_k);
    Ok((access, hits))
}

/// The prompt's cl100k estimate, and the tokens to reserve for `request`.
/// The estimate is exact in cl100k tokens; other models' tokenizers count
/// the same text differently (SmolLM2: +6%), so a margin is reserved. The
/// commit records what the provider really counted.
fn reservation_estimate(request: &ChatRequest<'_>) -> (u64, u64) {
    let prompt = crate::chat::estimate_prompt_tokens(request);
    (prompt, prompt + prompt / 4 + u64::from(request.max_tokens))
}

/// Numbered passages for the model, in retrieval order.
fn sources(hits: &[Hit]) -> Vec<Source> {
    hits.iter()
        .enumerate()
        .map(|(i, hit)| Source {
            number: i + 1,
            title: hit.title.clone(),
            locator: locator_text(hit.page, hit.heading.as_deref()),
            text: hit.content.clone(),
        })
        .collect()
}

fn locator_text(page: Option<i32>, heading: Option<&str>) -> Option<String> {
    match (page, heading) {
        (Some(p), Some(h)) => Some(format!("p. {p}, {h}")),
        (Some(p), None) => Some(format!("p. {p}")),
        (None, Some(h)) => Some(h.to_owned()),
        (None, None) => None,
    }
}

pub fn citation(hit: &Hit) -> Citation {
    Citation {
        document_id: hit.document_id,
        title: hit.title.clone(),
        chunk_id: hit.chunk_id,
        ordinal: hit.ordinal,
        locator: Locator {
            page: hit.page,
            heading: hit.heading.clone(),
        },
        snippet: snippet(&hit.content),
        score: hit.score,
    }
}

/// The start of `text`, cut at a word boundary, with an ellipsis when cut.
pub fn snippet(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= SNIPPET_CHARS {
        return text.to_owned();
    }
    let end = text
        .char_indices()
        .nth(SNIPPET_CHARS)
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let cut = &text[..end];
    let cut = cut
        .rfind(char::is_whitespace)
        .filter(|&i| i > end / 2)
        .map_or(cut, |i| &cut[..i]);
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::citations::renumber;

    #[test]
    fn a_refused_provider_call_is_a_502_and_an_unavailable_one_a_503() {
        use crate::embed::EmbedError;
        let status = |e: ApiError| e.status().as_u16();
        assert_eq!(
            status(chat_problem(&ChatError::Unavailable("429".into()))),
            503
        );
        assert_eq!(status(chat_problem(&ChatError::Failed("400".into()))), 502);
        assert_eq!(
            status(embed_problem(&EmbedError::Unavailable("timeout".into()))),
            503
        );
        assert_eq!(
            status(embed_problem(&EmbedError::Failed("400".into()))),
            502
        );
        // The problem says whether to retry, not the provider's own words.
        let problem =
            chat_problem(&ChatError::Failed("secret upstream detail".into())).problem(None);
        assert_eq!(problem.status, 502);
        assert!(!problem.detail.contains("secret"), "{}", problem.detail);
    }

    #[test]
    fn markers_follow_citation_order() {
        assert_eq!(
            renumber("A [3]. B [1, 3]. C [2][3]. D [x] [].", &[3, 1, 2]),
            "A [1]. B [2, 1]. C [3][1]. D [x] []."
        );
        assert_eq!(renumber("No marker.", &[]), "No marker.");
        assert_eq!(renumber("Dropped [9].", &[1]), "Dropped.");
        assert_eq!(renumber("Open [2", &[2]), "Open [2");
        // Brackets the model's marker parser left alone stay as written.
        assert_eq!(
            renumber("Rows [1 2] and [a1] [4].", &[4]),
            "Rows [1 2] and [a1] [1]."
        );
    }

    #[test]
    fn snippets_cut_at_a_word() {
        let text = "word ".repeat(100);
        let s = snippet(&text);
        assert!(
            s.ends_with('…') && s.chars().count() <= SNIPPET_CHARS + 1,
            "{s}"
        );
        assert!(!s.contains("wor…"));
        assert_eq!(snippet(" short "), "short");
    }

    #[test]
    fn texts_are_checked() {
        assert!(check_text("question", "  ").is_err());
        assert!(check_text("question", "a\0b").is_err());
        assert!(check_text("question", &"x".repeat(MAX_QUESTION_CHARS + 1)).is_err());
        assert_eq!(check_text("question", " why? ").unwrap(), "why?");
    }
}
