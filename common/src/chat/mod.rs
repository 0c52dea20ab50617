//! Answers written from numbered source passages, through one trait with
//! three providers:
//!
//! - [`ExtractiveAnswerer`]: quotes the source sentences that share the
//!   most words with the question; no network, deterministic (the default);
//! - [`OpenAiChat`]: any OpenAI-compatible `/chat/completions` endpoint;
//! - [`BedrockChat`]: Amazon Bedrock's Converse API, signed with SigV4.
//!
//! Whatever the provider, an answer cites passages as `[n]` markers, and
//! [`ChatResponse::cited`] lists exactly the numbers of the passages it was
//! given that the answer text cites: markers naming any other number are
//! removed from the text before it is returned.

use std::sync::Arc;

use anyhow::Context;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::{ChatConfig, ChatProvider};

mod bedrock;
pub(crate) mod citations;
mod extractive;
mod openai;
mod prompt;

pub use bedrock::BedrockChat;
pub use extractive::ExtractiveAnswerer;
pub use openai::OpenAiChat;

/// Who said a turn of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One earlier message of the conversation, oldest first in a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub content: String,
}

/// One numbered passage the model may cite as `[number]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// 1-based; the sources of a request are numbered 1, 2, … in order.
    pub number: usize,
    pub title: String,
    /// Where in the document, e.g. `"p. 3"` or `"Intro > Setup"`.
    pub locator: Option<String>,
    pub text: String,
}

/// A question to answer from `sources`, after `history`.
#[derive(Debug, Clone, Copy)]
pub struct ChatRequest<'a> {
    pub question: &'a str,
    pub history: &'a [Turn],
    pub sources: &'a [Source],
    /// Most tokens the answer may take (must be positive).
    pub max_tokens: u32,
}

/// Tokens one answer cost, as the provider counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A generated answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatResponse {
    /// The answer text; its `[n]` markers name only given sources, written
    /// `[1]` or `[1, 3]`.
    pub answer: String,
    /// Source numbers cited in the answer, each the number of a given
    /// source (so in `1..=sources.len()`), in order of first mention, no
    /// duplicates.
    pub cited: Vec<usize>,
    pub usage: Usage,
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The next text of the answer.
    Text(String),
    /// What the whole answer cost; the last piece.
    Usage(Usage),
}

/// A streamed answer ([`ChatModel::stream`]); an error ends it.
pub type AnswerStream<'a> = futures::stream::BoxStream<'a, Result<Piece, ChatError>>;

/// Why no answer was generated.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Worth retrying later (429, 408, 5xx, timeouts, connection errors).
    /// The providers have already retried `max_retries` times.
    #[error("answer model unavailable: {0}")]
    Unavailable(String),
    /// Retrying will not help (bad request, auth, unusable response).
    #[error("answer generation failed: {0}")]
    Failed(String),
}

impl ChatError {
    /// Whether the caller may retry the same request later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ChatError::Unavailable(_))
    }
}

impl From<crate::transport::ProviderError> for ChatError {
    fn from(e: crate::transport::ProviderError) -> Self {
        if e.retryable {
            ChatError::Unavailable(e.message)
        } else {
            ChatError::Failed(e.message)
        }
    }
}

/// Any answer model.
pub trait ChatModel: Send + Sync {
    /// The model's name as recorded with usage (`"extractive"`, or the
    /// configured model id).
    fn name(&self) -> &str;
    /// An answer to `req.question` from `req.sources`, at most
    /// `req.max_tokens` long, with its citations resolved.
    fn complete<'a>(
        &'a self,
        req: &'a ChatRequest<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, ChatError>>;

    /// Free-form text for `req` (summaries, mind maps, the AI proxy): no
    /// sources, so the response's `cited` is empty; at most
    /// `req.max_tokens` long; usage as the provider counted it. Models
    /// that cannot (test doubles) refuse with [`ChatError::Failed`].
    fn generate<'a>(
        &'a self,
        req: &'a GenerateRequest<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, ChatError>> {
        let _ = req;
        Box::pin(async {
            Err(ChatError::Failed(
                "this model does not generate free-form text".into(),
            ))
        })
    }

    /// One JSON value for `req`: the model is asked (through its
    /// provider's structured-output mechanism) for a reply fitting
    /// `req.schema`, at most `req.max_tokens` long; the value is returned as
    /// the model wrote it, not validated against the schema (the caller
    /// validates). Models that cannot (the extractive default, test
    /// doubles) refuse with [`ChatError::Failed`].
    fn structured<'a>(
        &'a self,
        req: &'a StructuredRequest<'a>,
    ) -> BoxFuture<'a, Result<StructuredResponse, ChatError>> {
        let _ = req;
        Box::pin(async {
            Err(ChatError::Failed(
                "this model does not produce structured output".into(),
            ))
        })
    }

    /// The same answer as it is written: text pieces as the model produces
    /// them (their markers not yet resolved; see
    /// [`citations::MarkerFilter`]), then one [`Piece::Usage`]. By default
    /// the whole answer of [`Self::complete`] as one piece, for providers
    /// streamed here through no API of their own.
    fn stream<'a>(&'a self, req: &'a ChatRequest<'a>) -> AnswerStream<'a> {
        use futures::StreamExt;
        futures::stream::once(self.complete(req))
            .flat_map(|done| {
                futures::stream::iter(match done {
                    Ok(response) => vec![
                        Ok(Piece::Text(response.answer)),
                        Ok(Piece::Usage(response.usage)),
                    ],
                    Err(e) => vec![Err(e)],
                })
            })
            .boxed()
    }
}

/// The configured provider. `aws` is needed for Bedrock only (region,
/// credentials and the `AWS_ENDPOINT_URL` override come from it).
///
/// Fails on configuration a provider cannot work with (OpenAI without base
/// URL or model, Bedrock without model, AWS configuration, region or
/// credentials, a zero timeout).
pub fn build(
    config: &ChatConfig,
    aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    Ok(match config.provider {
        ChatProvider::Extractive => Arc::new(ExtractiveAnswerer::new()),
        ChatProvider::OpenAi => Arc::new(OpenAiChat::from_config(config)?),
        ChatProvider::Bedrock => {
            let aws = aws.context("the bedrock chat provider needs the AWS SDK configuration")?;
            Arc::new(BedrockChat::from_config(config, aws)?)
        }
    })
}

/// Upper bound, in cl100k tokens, of the prompt [`ChatModel::complete`]
/// sends for `req`: system text, numbered sources, history, question and
/// per-message overhead. Meant for reserving budget before the call; a
/// model with another tokenizer may count its prompt differently.
pub fn estimate_prompt_tokens(req: &ChatRequest<'_>) -> u64 {
    prompt::Prompt::new(req).estimate_tokens()
}

/// A free-form generation: instructions, one user message, a length cap.
#[derive(Debug, Clone, Copy)]
pub struct GenerateRequest<'a> {
    /// Instructions sent as the system text.
    pub system: &'a str,
    /// The user message.
    pub prompt: &'a str,
    /// Most tokens the text may take (must be positive).
    pub max_tokens: u32,
    /// Another model of the same provider than the configured one (the AI
    /// proxy's allow-listed choice); `None`: the configured model.
    pub model: Option<&'a str>,
}

/// Upper bound, in cl100k tokens, of the prompt [`ChatModel::generate`]
/// sends for `req` (system text, user message, per-message overhead).
pub fn estimate_generate_tokens(req: &GenerateRequest<'_>) -> u64 {
    (crate::token_count::count(req.system) + crate::token_count::count(req.prompt)) as u64
        + 2 * 5
        + 4
}

/// A reply that must be one JSON value fitting `schema` (classification).
#[derive(Debug, Clone, Copy)]
pub struct StructuredRequest<'a> {
    /// Instructions sent as the system text.
    pub system: &'a str,
    /// The user message.
    pub prompt: &'a str,
    /// The output's name: OpenAI's `json_schema.name`, Bedrock's tool name
    /// (`[a-zA-Z0-9_-]{1,64}`).
    pub name: &'a str,
    /// A JSON Schema (object at the top, every property required,
    /// `additionalProperties: false`, as OpenAI's strict mode wants).
    pub schema: &'a serde_json::Value,
    /// Most tokens the reply may take (must be positive).
    pub max_tokens: u32,
}

/// A structured reply: the value as the model wrote it (NOT validated
/// against the schema here; the caller validates) and its usage.
#[derive(Debug, Clone, PartialEq)]
pub struct StructuredResponse {
    pub value: serde_json::Value,
    pub usage: Usage,
}

/// Upper bound, in cl100k tokens, of the prompt [`ChatModel::structured`]
/// sends for `req` (system text, user message, the schema as serialized,
/// per-message overhead).
pub fn estimate_structured_tokens(req: &StructuredRequest<'_>) -> u64 {
    (crate::token_count::count(req.system)
        + crate::token_count::count(req.prompt)
        + crate::token_count::count(&req.schema.to_string())) as u64
        + 2 * 5
        + 4
}

/// Checks every provider's `structured` makes before any work.
fn check_structured(req: &StructuredRequest<'_>) -> Result<(), ChatError> {
    if req.max_tokens == 0 {
        return Err(ChatError::Failed("max_tokens must be positive".into()));
    }
    Ok(())
}

/// Checks every provider's `generate` makes before any work.
fn check_generate(req: &GenerateRequest<'_>) -> Result<(), ChatError> {
    if req.max_tokens == 0 {
        return Err(ChatError::Failed("max_tokens must be positive".into()));
    }
    Ok(())
}

/// Checks shared by every provider, before any work.
fn check_request(req: &ChatRequest<'_>) -> Result<(), ChatError> {
    if req.max_tokens == 0 {
        return Err(ChatError::Failed("max_tokens must be positive".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Secret;

    pub(crate) fn config(provider: ChatProvider) -> ChatConfig {
        ChatConfig {
            provider,
            model: None,
            base_url: None,
            api_key: None,
            timeout: Duration::from_secs(5),
            max_retries: 3,
        }
    }

    pub(crate) fn source(number: usize, title: &str, locator: Option<&str>, text: &str) -> Source {
        Source {
            number,
            title: title.into(),
            locator: locator.map(Into::into),
            text: text.into(),
        }
    }

    /// Two passages about capitals.
    pub(crate) fn capitals() -> Vec<Source> {
        vec![
            source(
                1,
                "France",
                Some("p. 3"),
                "Paris is the capital of France. It lies on the Seine.",
            ),
            source(
                2,
                "Germany",
                None,
                "Berlin is the capital of Germany. It has many museums.",
            ),
        ]
    }

    #[test]
    fn roles_serialize_lowercase() {
        let turn = Turn {
            role: Role::Assistant,
            content: "hi".into(),
        };
        assert_eq!(
            serde_json::to_value(&turn).unwrap(),
            serde_json::json!({"role": "assistant", "content": "hi"})
        );
        let user: Role = serde_json::from_str("\"user\"").unwrap();
        assert_eq!(user, Role::User);
    }

    #[tokio::test]
    async fn build_extractive_by_default() {
        let model = build(&config(ChatProvider::Extractive), None).unwrap();
        assert_eq!(model.name(), "extractive");
        let sources = capitals();
        let req = ChatRequest {
            question: "What is the capital of France?",
            history: &[],
            sources: &sources,
            max_tokens: 200,
        };
        let response = model.complete(&req).await.unwrap();
        assert_eq!(response.cited.first(), Some(&1), "{response:?}");
    }

    #[test]
    fn build_rejects_incomplete_configuration() {
        let mut openai = config(ChatProvider::OpenAi);
        assert!(build(&openai, None).is_err(), "no base url or model");
        openai.base_url = Some("http://127.0.0.1:9/v1".into());
        assert!(build(&openai, None).is_err(), "no model");
        openai.model = Some("m".into());
        openai.api_key = Some(Secret::new("k"));
        assert!(build(&openai, None).is_ok());
        openai.timeout = Duration::ZERO;
        assert!(build(&openai, None).is_err(), "zero timeout");

        let mut bedrock = config(ChatProvider::Bedrock);
        bedrock.model = Some("amazon.nova-micro-v1:0".into());
        let err = build(&bedrock, None).err().unwrap().to_string();
        assert!(err.contains("AWS"), "{err}");
        let no_region = aws_config::SdkConfig::builder().build();
        assert!(build(&bedrock, Some(&no_region)).is_err());
    }

    #[tokio::test]
    async fn zero_max_tokens_fails_before_any_work() {
        let model = build(&config(ChatProvider::Extractive), None).unwrap();
        let sources = capitals();
        let req = ChatRequest {
            question: "capital?",
            history: &[],
            sources: &sources,
            max_tokens: 0,
        };
        let err = model.complete(&req).await.unwrap_err();
        assert!(matches!(err, ChatError::Failed(_)), "{err}");
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn the_extractive_model_refuses_structured_output() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"label": {"type": "string"}},
            "required": ["label"],
            "additionalProperties": false
        });
        let req = StructuredRequest {
            system: "Classify.",
            prompt: "Invoice no. 42.",
            name: "label",
            schema: &schema,
            max_tokens: 20,
        };
        let err = ExtractiveAnswerer::new()
            .structured(&req)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ChatError::Failed(m) if m == "this model does not produce structured output"),
            "{err}"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn structured_estimate_counts_system_prompt_and_schema() {
        let small = serde_json::json!({"type": "object"});
        let large = serde_json::json!({
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": ["invoice", "contract", "other"]},
                "confidence": {"type": "number"}
            },
            "required": ["label", "confidence"],
            "additionalProperties": false
        });
        let req = StructuredRequest {
            system: "Classify the document.",
            prompt: "Invoice no. 42, due in 30 days.",
            name: "label",
            schema: &small,
            max_tokens: 20,
        };
        let count = |t: &str| crate::token_count::count(t) as u64;
        let base = estimate_structured_tokens(&req);
        assert!(
            base >= count(req.system) + count(req.prompt) + count(&small.to_string()),
            "{base}"
        );
        let with_large = estimate_structured_tokens(&StructuredRequest {
            schema: &large,
            ..req
        });
        assert_eq!(
            with_large - base,
            count(&large.to_string()) - count(&small.to_string())
        );
        assert!(check_structured(&req).is_ok());
        assert!(matches!(
            check_structured(&StructuredRequest {
                max_tokens: 0,
                ..req
            }),
            Err(ChatError::Failed(_))
        ));
    }

    #[test]
    fn estimate_grows_with_every_part_of_the_prompt() {
        let sources = capitals();
        let history = [
            Turn {
                role: Role::User,
                content: "Tell me about Europe.".into(),
            },
            Turn {
                role: Role::Assistant,
                content: "Europe has many capitals [1].".into(),
            },
        ];
        let bare = ChatRequest {
            question: "What is the capital of France?",
            history: &[],
            sources: &[],
            max_tokens: 100,
        };
        let with_sources = ChatRequest {
            sources: &sources,
            ..bare
        };
        let with_history = ChatRequest {
            history: &history,
            ..with_sources
        };
        let (a, b, c) = (
            estimate_prompt_tokens(&bare),
            estimate_prompt_tokens(&with_sources),
            estimate_prompt_tokens(&with_history),
        );
        let source_text: u64 = sources
            .iter()
            .map(|s| crate::token_count::count(&s.text) as u64)
            .sum();
        assert!(a > crate::token_count::count(bare.question) as u64);
        assert!(b >= a + source_text, "{a} {b}");
        assert!(c > b, "{b} {c}");
        assert_eq!(estimate_prompt_tokens(&with_history), c, "deterministic");
    }
}
