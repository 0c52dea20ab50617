//! `POST /workspaces/{id}/qa`: a question answered from the workspace's
//! documents exactly as the query route answers it (`use_rag: true`, the
//! default), or by the model alone (`use_rag: false`).

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Timings;
use crate::answer::{self, Ask, Citation, Options, Usage};
use crate::budget::Purpose;
use crate::chat::{GenerateRequest, estimate_generate_tokens};
use crate::error::{ApiError, Result};
use crate::retrieval::{FiltersIn, Mode};
use crate::state::State;
use crate::workspaces::Access;

/// What the model is told when it answers alone.
const INSTRUCTIONS: &str = "Answer the user's question briefly and accurately, in the \
    language of the question. If you do not know, say so; do not guess.";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QaIn {
    pub question: String,
    #[serde(default)]
    pub use_rag: Option<bool>,
    #[serde(default)]
    pub top_k: Option<u32>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub filters: Option<FiltersIn>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// As the query route's `rerank` (with `use_rag`).
    #[serde(default)]
    pub rerank: Option<bool>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QaAnswer {
    pub answer: String,
    pub use_rag: bool,
    /// The passages the answer cites (`[n]` is the n-th); empty without RAG.
    pub citations: Vec<Citation>,
    pub model: String,
    pub usage: Usage,
    pub timings: Timings,
}

/// `max_tokens` as the query route takes it: 1 to `max_tokens_limit`,
/// default `default_max_tokens`; 422 naming `max_tokens` otherwise.
pub fn check_max_tokens(state: &State, max_tokens: Option<u32>) -> Result<u32> {
    let config = &state.config.query;
    let max_tokens = max_tokens.unwrap_or(config.default_max_tokens);
    if !(1..=config.max_tokens_limit).contains(&max_tokens) {
        return Err(ApiError::unprocessable(
            "max_tokens",
            format!("must be between 1 and {}", config.max_tokens_limit),
        ));
    }
    Ok(max_tokens)
}

/// Answers `body.question`: through [`answer::ask`] (retrieval, budget,
/// citations: the query route's path, charged as `qa`) or by one
/// generation without sources.
pub async fn ask(state: &State, access: Access, body: QaIn) -> Result<QaAnswer> {
    let started = Instant::now();
    let question = answer::check_text("question", &body.question)?;
    let use_rag = body.use_rag.unwrap_or(true);
    if use_rag {
        let options = Options::parse(
            &state.config.query,
            body.top_k,
            body.mode,
            body.filters,
            None,
            body.max_tokens,
        )?
        .with_rerank(body.rerank);
        let answered = answer::ask(
            state,
            access,
            Ask {
                retrieval_text: &question,
                question: &question,
                history: &[],
                options: &options,
                purpose: Purpose::Qa,
            },
        )
        .await?;
        let model = if answered.usage.total_tokens == 0 {
            // Nothing matched: no model ran.
            "none".to_owned()
        } else {
            state.chat_model().await?.name().to_owned()
        };
        return Ok(QaAnswer {
            answer: answered.answer.unwrap_or_default(),
            use_rag,
            citations: answered.citations,
            model,
            usage: answered.usage,
            timings: Timings {
                read_ms: answered.timings.embed_ms + answered.timings.retrieve_ms,
                generate_ms: answered.timings.generate_ms,
                total_ms: answered.timings.total_ms,
            },
        });
    }
    if body.top_k.is_some()
        || body.mode.is_some()
        || body.filters.is_some()
        || body.rerank.is_some()
    {
        return Err(ApiError::unprocessable(
            "use_rag",
            "top_k, mode, filters and rerank apply to retrieval, which use_rag: false turns off",
        ));
    }
    let max_tokens = check_max_tokens(state, body.max_tokens)?;
    let model = state.chat_model().await?;
    let request = GenerateRequest {
        system: INSTRUCTIONS,
        prompt: &question,
        max_tokens,
        model: None,
    };
    let estimate = super::estimate(estimate_generate_tokens(&request), max_tokens);
    let t = Instant::now();
    let (answer, spent) =
        super::metered(state, access, Purpose::Qa, estimate, model.name(), async {
            let response = super::call(model.as_ref(), &request).await?;
            let mut spent = super::Spent::default();
            spent.add(response.usage);
            Ok((response.answer, spent))
        })
        .await?;
    Ok(QaAnswer {
        answer,
        use_rag,
        citations: Vec::new(),
        model: model.name().to_owned(),
        usage: spent.usage(),
        timings: Timings {
            read_ms: 0.0,
            generate_ms: super::ms(t),
            total_ms: super::ms(started),
        },
    })
}
