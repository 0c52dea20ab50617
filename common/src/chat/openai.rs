//! Any OpenAI-compatible chat completions endpoint (OpenAI, vLLM,
//! llama.cpp's server, Ollama's `/v1`, LiteLLM…).

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::citations::resolve;
use super::prompt::Prompt;
use super::{
    AnswerStream, ChatError, ChatModel, ChatRequest, ChatResponse, Piece, Role, Usage,
    check_request,
};
use crate::config::{ChatConfig, Secret};
use crate::token_count;
use crate::transport::{RetryPolicy, http_client};

/// `POST {base_url}/chat/completions` with `{"model", "messages",
/// "max_tokens", "temperature": 0}`: the system text, the history, then the
/// sources and question as the last user message.
///
/// Guarantees: the answer is `choices[0].message.content` with its
/// citations resolved (markers naming sources not given are removed);
/// usage is the server's `usage`, or, where it reports none, the cl100k
/// count of the prompt (as [`super::estimate_prompt_tokens`]) and of the
/// answer. 408, 429, 5xx, timeouts and connection errors are retried up to
/// `max_retries` times with exponential backoff and jitter, or after the
/// server's `Retry-After` (capped at 20 s), then are
/// [`ChatError::Unavailable`]; other 4xx answers fail at once as
/// [`ChatError::Failed`] with the server's message.
#[derive(Debug)]
pub struct OpenAiChat {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<Secret>,
    retry: RetryPolicy,
}

impl OpenAiChat {
    /// From the chat configuration: `base_url` (e.g.
    /// `http://127.0.0.1:8080/v1`, trailing slash allowed) and `model` are
    /// required; `api_key` becomes a bearer token; `timeout` bounds each
    /// request.
    pub fn from_config(config: &ChatConfig) -> anyhow::Result<Self> {
        let base = config
            .base_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| anyhow::anyhow!("the openai chat provider needs CHAT_BASE_URL"))?;
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "CHAT_BASE_URL must be an http(s) URL, got {base:?}"
        );
        let model = config
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| anyhow::anyhow!("the openai chat provider needs CHAT_MODEL"))?;
        anyhow::ensure!(
            !config.timeout.is_zero(),
            "CHAT_TIMEOUT_SECONDS must be positive"
        );
        Ok(Self {
            client: http_client(config.timeout)?,
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            model: model.to_owned(),
            api_key: config.api_key.clone().filter(|k| !k.expose().is_empty()),
            retry: RetryPolicy::new(config.max_retries),
        })
    }

    fn request<'p>(&'p self, prompt: &'p Prompt, max_tokens: u32, stream: bool) -> Request<'p> {
        let mut messages = vec![Message {
            role: "system",
            content: &prompt.system,
        }];
        messages.extend(prompt.messages.iter().map(|m| Message {
            role: match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content: &m.content,
        }));
        Request {
            model: &self.model,
            messages,
            max_tokens,
            temperature: 0.0,
            stream: stream.then_some(true),
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        }
    }

    async fn answer(&self, req: &ChatRequest<'_>) -> Result<ChatResponse, ChatError> {
        check_request(req)?;
        let prompt = Prompt::new(req);
        let request = self.request(&prompt, req.max_tokens, false);
        let response: Response = self
            .retry
            .post_json(
                "openai chat",
                &self.client,
                &self.url,
                self.api_key.as_ref(),
                &request,
            )
            .await?;

        let (text, usage) = response.into_text("openai chat")?;
        let usage = Usage {
            prompt_tokens: usage
                .prompt_tokens
                .unwrap_or_else(|| prompt.estimate_tokens()),
            completion_tokens: usage
                .completion_tokens
                .unwrap_or_else(|| token_count::count(&text) as u64),
        };
        let valid: Vec<usize> = req.sources.iter().map(|s| s.number).collect();
        let (answer, cited) = resolve(&text, &valid);
        Ok(ChatResponse {
            answer,
            cited,
            usage,
        })
    }
}

impl ChatModel for OpenAiChat {
    fn name(&self) -> &str {
        &self.model
    }

    fn complete<'a>(
        &'a self,
        req: &'a ChatRequest<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, ChatError>> {
        Box::pin(self.answer(req))
    }

    fn generate<'a>(
        &'a self,
        req: &'a super::GenerateRequest<'a>,
    ) -> BoxFuture<'a, Result<ChatResponse, ChatError>> {
        Box::pin(self.generated(req))
    }

    fn structured<'a>(
        &'a self,
        req: &'a super::StructuredRequest<'a>,
    ) -> BoxFuture<'a, Result<super::StructuredResponse, ChatError>> {
        Box::pin(self.structured_reply(req))
    }

    /// `stream: true` with `stream_options.include_usage`: the text as the
    /// server sends it; usage from its last chunk, or counted as
    /// [`Self::complete`] counts it. Retried only until the response
    /// starts.
    fn stream<'a>(&'a self, req: &'a ChatRequest<'a>) -> AnswerStream<'a> {
        let start = async move {
            check_request(req)?;
            let prompt = Prompt::new(req);
            let request = self.request(&prompt, req.max_tokens, true);
            let response = self
                .retry
                .post_for_stream(
                    "openai chat",
                    &self.client,
                    &self.url,
                    self.api_key.as_ref(),
                    &request,
                )
                .await?;
            Ok::<_, ChatError>(StreamReader {
                response,
                buf: Vec::new(),
                text: String::new(),
                usage: None,
                prompt_estimate: prompt.estimate_tokens(),
                queue: Default::default(),
                ended: false,
            })
        };
        futures::stream::once(start)
            .flat_map(|started| match started {
                Ok(reader) => futures::stream::unfold(reader, |mut reader| async move {
                    reader.next().await.map(|piece| (piece, reader))
                })
                .boxed(),
                Err(e) => futures::stream::iter([Err(e)]).boxed(),
            })
            .boxed()
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    max_tokens: u32,
    temperature: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// One `data:` event of a streamed completion.
#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    #[serde(default)]
    usage: Option<ResponseUsage>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Option<ChoiceMessage>,
}

/// Reads a streamed completion (`text/event-stream` of chunks, ending
/// with `data: [DONE]` or the connection's end) into pieces.
struct StreamReader {
    response: reqwest::Response,
    buf: Vec<u8>,
    /// What was written so far, to count it if the server reports no usage.
    text: String,
    usage: Option<ResponseUsage>,
    prompt_estimate: u64,
    queue: std::collections::VecDeque<Piece>,
    ended: bool,
}

impl StreamReader {
    fn usage(&self) -> Usage {
        let usage = self.usage.as_ref();
        Usage {
            prompt_tokens: usage
                .and_then(|u| u.prompt_tokens)
                .unwrap_or(self.prompt_estimate),
            completion_tokens: usage
                .and_then(|u| u.completion_tokens)
                .unwrap_or_else(|| token_count::count(&self.text) as u64),
        }
    }

    /// The events of every complete line in the buffer.
    fn parse_lines(&mut self) -> Result<(), ChatError> {
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue; // comments, event names, blank separators
            };
            let data = data.trim();
            if data == "[DONE]" {
                self.end();
                return Ok(());
            }
            let chunk: StreamChunk = serde_json::from_str(data).map_err(|e| {
                ChatError::Failed(format!("openai chat: unexpected stream event ({e})"))
            })?;
            if let Some(usage) = chunk.usage {
                self.usage = Some(usage);
            }
            for choice in chunk.choices {
                if let Some(text) = choice.delta.and_then(|d| d.content)
                    && !text.is_empty()
                {
                    self.text.push_str(&text);
                    self.queue.push_back(Piece::Text(text));
                }
            }
        }
        Ok(())
    }

    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            let usage = self.usage();
            self.queue.push_back(Piece::Usage(usage));
        }
    }

    /// The next piece; `None` after the usage.
    async fn next(&mut self) -> Option<Result<Piece, ChatError>> {
        loop {
            if let Some(piece) = self.queue.pop_front() {
                return Some(Ok(piece));
            }
            if self.ended {
                return None;
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => {
                    self.buf.extend_from_slice(&bytes);
                    if let Err(e) = self.parse_lines() {
                        self.ended = true;
                        return Some(Err(e));
                    }
                }
                // Closed without [DONE]: what came is the answer.
                Ok(None) => self.end(),
                Err(e) => {
                    self.ended = true;
                    return Some(Err(ChatError::Unavailable(format!(
                        "openai chat: the stream broke off: {e}"
                    ))));
                }
            }
        }
    }
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ResponseUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
}

impl Response {
    /// The first choice's text and the reported usage; `what` names the
    /// call in errors.
    fn into_text(self, what: &str) -> Result<(String, ResponseUsage), ChatError> {
        let Some(choice) = self.choices.into_iter().next() else {
            return Err(ChatError::Failed(format!(
                "{what}: the response has no choices"
            )));
        };
        let Some(text) = choice.message.content else {
            return Err(ChatError::Failed(format!(
                "{what}: the model returned no text (finish_reason {})",
                choice.finish_reason.as_deref().unwrap_or("unknown")
            )));
        };
        Ok((text, self.usage.unwrap_or_default()))
    }
}

#[derive(Deserialize, Default)]
struct ResponseUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// Free-form generation: the same endpoint and retries as answers, with
/// the request's system text and prompt as the two messages, and its model
/// in place of the configured one when it names another.
impl OpenAiChat {
    async fn generated(&self, req: &super::GenerateRequest<'_>) -> Result<ChatResponse, ChatError> {
        super::check_generate(req)?;
        let request = GenerateBody {
            model: req.model.unwrap_or(&self.model),
            messages: [
                Message {
                    role: "system",
                    content: req.system,
                },
                Message {
                    role: "user",
                    content: req.prompt,
                },
            ],
            max_tokens: req.max_tokens,
            temperature: 0.0,
        };
        let response: Response = self
            .retry
            .post_json(
                "openai generate",
                &self.client,
                &self.url,
                self.api_key.as_ref(),
                &request,
            )
            .await?;
        let (text, usage) = response.into_text("openai generate")?;
        Ok(ChatResponse {
            usage: Usage {
                prompt_tokens: usage
                    .prompt_tokens
                    .unwrap_or_else(|| super::estimate_generate_tokens(req)),
                completion_tokens: usage
                    .completion_tokens
                    .unwrap_or_else(|| token_count::count(&text) as u64),
            },
            answer: text,
            cited: Vec::new(),
        })
    }
}

#[derive(Serialize)]
struct GenerateBody<'a> {
    model: &'a str,
    messages: [Message<'a>; 2],
    max_tokens: u32,
    temperature: f32,
}

/// Structured output: the same endpoint and retries as answers, the
/// request's system text and prompt as the two messages, and
/// `response_format` asking for JSON fitting the request's schema in
/// strict mode.
impl OpenAiChat {
    async fn structured_reply(
        &self,
        req: &super::StructuredRequest<'_>,
    ) -> Result<super::StructuredResponse, ChatError> {
        super::check_structured(req)?;
        let request = StructuredBody {
            model: &self.model,
            messages: [
                Message {
                    role: "system",
                    content: req.system,
                },
                Message {
                    role: "user",
                    content: req.prompt,
                },
            ],
            max_tokens: req.max_tokens,
            temperature: 0.0,
            response_format: ResponseFormat {
                kind: "json_schema",
                json_schema: JsonSchemaFormat {
                    name: req.name,
                    schema: req.schema,
                    strict: true,
                },
            },
        };
        let response: Response = self
            .retry
            .post_json(
                "openai structured",
                &self.client,
                &self.url,
                self.api_key.as_ref(),
                &request,
            )
            .await?;
        let (text, usage) = response.into_text("openai structured")?;
        let value = parse_json_reply(&text).map_err(|e| {
            ChatError::Failed(format!(
                "openai structured: the reply is not JSON: {e} (reply: {})",
                excerpt(&text)
            ))
        })?;
        Ok(super::StructuredResponse {
            value,
            usage: Usage {
                prompt_tokens: usage
                    .prompt_tokens
                    .unwrap_or_else(|| super::estimate_structured_tokens(req)),
                completion_tokens: usage
                    .completion_tokens
                    .unwrap_or_else(|| token_count::count(&text) as u64),
            },
        })
    }
}

/// The JSON value of a reply, tolerating surrounding whitespace and a
/// Markdown code fence (```` ```json ```` or ```` ``` ````) around it.
fn parse_json_reply(text: &str) -> Result<serde_json::Value, serde_json::Error> {
    let mut body = text.trim();
    if let Some(rest) = body.strip_prefix("```")
        && let Some(inner) = rest.trim_end().strip_suffix("```")
    {
        // The info string (e.g. `json`) runs to the end of the first line.
        body = match inner.split_once('\n') {
            Some((info, code)) if !info.trim_start().starts_with(['{', '[']) => code,
            _ => inner,
        }
        .trim();
    }
    serde_json::from_str(body)
}

/// The start of `text` for an error message (at most 200 characters).
fn excerpt(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[derive(Serialize)]
struct StructuredBody<'a> {
    model: &'a str,
    messages: [Message<'a>; 2],
    max_tokens: u32,
    temperature: f32,
    response_format: ResponseFormat<'a>,
}

#[derive(Serialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    json_schema: JsonSchemaFormat<'a>,
}

#[derive(Serialize)]
struct JsonSchemaFormat<'a> {
    name: &'a str,
    schema: &'a serde_json::Value,
    strict: bool,
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::*;
    use crate::chat::tests::{capitals, config};
    use crate::chat::{Turn, estimate_prompt_tokens};
    use crate::config::ChatProvider;
    use crate::test_server::{Reply, TestServer};

    fn chat(server: &TestServer) -> OpenAiChat {
        let mut c = config(ChatProvider::OpenAi);
        c.base_url = Some(format!("{}/v1/", server.url()));
        c.model = Some("test-model".into());
        c.api_key = Some(Secret::new("sk-test"));
        c.max_retries = 3;
        let mut chat = OpenAiChat::from_config(&c).unwrap();
        chat.retry.base = Duration::from_millis(5);
        chat
    }

    fn completion(content: &str) -> Reply {
        Reply::json(
            200,
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "test-model",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333}
            }),
        )
    }

    async fn ask(chat: &OpenAiChat, history: &[Turn]) -> Result<ChatResponse, ChatError> {
        let sources = capitals();
        let req = ChatRequest {
            question: "What is the capital of France?",
            history,
            sources: &sources,
            max_tokens: 64,
        };
        chat.complete(&req).await
    }

    #[tokio::test]
    async fn sends_system_history_and_question_and_parses_the_answer() {
        let server =
            TestServer::start(|_, _| completion("Paris is the capital of France [1].")).await;
        let chat = chat(&server);
        assert_eq!(chat.name(), "test-model");
        let history = [
            Turn {
                role: Role::User,
                content: "Hi".into(),
            },
            Turn {
                role: Role::Assistant,
                content: "Hello! Ask me about your documents.".into(),
            },
        ];
        let response = ask(&chat, &history).await.unwrap();
        assert_eq!(response.answer, "Paris is the capital of France [1].");
        assert_eq!(response.cited, [1]);
        assert_eq!(
            response.usage,
            Usage {
                prompt_tokens: 321,
                completion_tokens: 12
            }
        );

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.header("authorization"), Some("Bearer sk-test"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["temperature"].as_f64(), Some(0.0));
        assert_eq!(body.as_object().unwrap().len(), 4, "{body}");
        let messages = body["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert!(
            messages[0]["content"]
                .as_str()
                .unwrap()
                .contains("only the numbered sources")
        );
        assert_eq!(messages[1]["content"], "Hi");
        let last = messages[3]["content"].as_str().unwrap();
        assert!(
            last.starts_with("Sources:\n\n[1] France (p. 3)\nParis"),
            "{last}"
        );
        assert!(last.contains("[2] Germany\nBerlin"), "{last}");
        assert!(
            last.ends_with("Question: What is the capital of France?"),
            "{last}"
        );
    }

    #[tokio::test]
    async fn citations_to_sources_not_given_are_removed() {
        let server = TestServer::start(|_, _| {
            completion("Paris [1][5] is the capital [7]; Berlin is not [2, 9].")
        })
        .await;
        let response = ask(&chat(&server), &[]).await.unwrap();
        assert_eq!(
            response.answer,
            "Paris [1] is the capital; Berlin is not [2]."
        );
        assert_eq!(response.cited, [1, 2]);
    }

    #[tokio::test]
    async fn usage_is_counted_locally_when_the_server_reports_none() {
        let server = TestServer::start(|_, _| {
            Reply::json(
                200,
                json!({"choices": [{"message": {"role": "assistant", "content": "Paris [1]."}}]}),
            )
        })
        .await;
        let response = ask(&chat(&server), &[]).await.unwrap();
        let sources = capitals();
        let req = ChatRequest {
            question: "What is the capital of France?",
            history: &[],
            sources: &sources,
            max_tokens: 64,
        };
        assert_eq!(response.usage.prompt_tokens, estimate_prompt_tokens(&req));
        assert_eq!(
            response.usage.completion_tokens,
            token_count::count("Paris [1].") as u64
        );
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_retried() {
        let server = TestServer::start(|_, n| match n {
            0 => Reply::json(429, json!({"error": {"message": "Rate limit reached"}}))
                .header("Retry-After", "0"),
            1 => Reply::text(502, "bad gateway"),
            2 => Reply::json(503, json!({"error": {"message": "overloaded"}})),
            _ => completion("Paris [1]."),
        })
        .await;
        let started = Instant::now();
        let response = ask(&chat(&server), &[]).await.unwrap();
        assert_eq!(response.answer, "Paris [1].");
        assert_eq!(server.requests().len(), 4);
        assert!(started.elapsed() < Duration::from_secs(5));
        let bodies: Vec<Value> = server.requests().iter().map(|r| r.json()).collect();
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "same request each time"
        );
    }

    #[tokio::test]
    async fn retries_run_out_as_unavailable() {
        let server = TestServer::start(|_, _| Reply::text(500, "boom")).await;
        let err = ask(&chat(&server), &[]).await.unwrap_err();
        assert!(
            matches!(&err, ChatError::Unavailable(m) if m.contains("500") && m.contains("boom")),
            "{err}"
        );
        assert!(err.is_retryable());
        assert_eq!(server.requests().len(), 4, "1 attempt + 3 retries");
    }

    #[tokio::test]
    async fn bad_requests_fail_without_retry() {
        let server = TestServer::start(|_, _| {
            Reply::json(
                400,
                json!({"error": {"message": "This model's maximum context length is 4096 tokens", "type": "invalid_request_error"}}),
            )
        })
        .await;
        let err = ask(&chat(&server), &[]).await.unwrap_err();
        assert!(
            matches!(&err, ChatError::Failed(m) if m.contains("400") && m.contains("maximum context length")),
            "{err}"
        );
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn unusable_responses_fail() {
        for body in [
            json!({"choices": []}),
            json!({"choices": [{"message": {"role": "assistant", "content": null}, "finish_reason": "length"}]}),
            json!({"unexpected": true}),
        ] {
            let server = TestServer::start(move |_, _| Reply::json(200, body.clone())).await;
            let err = ask(&chat(&server), &[]).await.unwrap_err();
            assert!(matches!(err, ChatError::Failed(_)), "{err}");
        }
    }

    #[tokio::test]
    async fn timeouts_are_unavailable() {
        let server =
            TestServer::start(|_, _| completion("late").delay(Duration::from_secs(5))).await;
        let mut c = config(ChatProvider::OpenAi);
        c.base_url = Some(format!("{}/v1", server.url()));
        c.model = Some("m".into());
        c.timeout = Duration::from_millis(200);
        c.max_retries = 1;
        let mut chat = OpenAiChat::from_config(&c).unwrap();
        chat.retry.base = Duration::from_millis(1);
        let err = ask(&chat, &[]).await.unwrap_err();
        assert!(matches!(err, ChatError::Unavailable(_)), "{err}");
        assert_eq!(server.requests().len(), 2);
    }

    fn label_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": ["invoice", "contract", "other"]},
                "confidence": {"type": "number"}
            },
            "required": ["label", "confidence"],
            "additionalProperties": false
        })
    }

    async fn classify(
        chat: &OpenAiChat,
        schema: &Value,
    ) -> Result<crate::chat::StructuredResponse, ChatError> {
        let req = crate::chat::StructuredRequest {
            system: "Classify the document.",
            prompt: "Invoice no. 42, due in 30 days.",
            name: "document_label",
            schema,
            max_tokens: 50,
        };
        chat.structured(&req).await
    }

    #[tokio::test]
    async fn structured_asks_for_the_schema_in_strict_mode_and_parses_the_value() {
        let server =
            TestServer::start(|_, _| completion(r#"{"label": "invoice", "confidence": 0.9}"#))
                .await;
        let schema = label_schema();
        let response = classify(&chat(&server), &schema).await.unwrap();
        assert_eq!(
            response.value,
            json!({"label": "invoice", "confidence": 0.9})
        );
        assert_eq!(
            response.usage,
            Usage {
                prompt_tokens: 321,
                completion_tokens: 12
            },
            "usage from the server"
        );

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.header("authorization"), Some("Bearer sk-test"));
        let body = r.json();
        assert_eq!(
            body,
            json!({
                "model": "test-model",
                "messages": [
                    {"role": "system", "content": "Classify the document."},
                    {"role": "user", "content": "Invoice no. 42, due in 30 days."}
                ],
                "max_tokens": 50,
                "temperature": 0.0,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "document_label", "schema": schema, "strict": true}
                }
            })
        );
    }

    #[tokio::test]
    async fn structured_value_is_read_from_a_fenced_reply_and_usage_counted_without_the_servers() {
        let content = "\n ```json\n{\"label\": \"contract\", \"confidence\": 1}\n```  \n";
        let server = TestServer::start(move |_, _| {
            Reply::json(
                200,
                json!({"choices": [{"message": {"role": "assistant", "content": content}}]}),
            )
        })
        .await;
        let schema = label_schema();
        let response = classify(&chat(&server), &schema).await.unwrap();
        assert_eq!(
            response.value,
            json!({"label": "contract", "confidence": 1})
        );
        let req = crate::chat::StructuredRequest {
            system: "Classify the document.",
            prompt: "Invoice no. 42, due in 30 days.",
            name: "document_label",
            schema: &schema,
            max_tokens: 50,
        };
        assert_eq!(
            response.usage,
            Usage {
                prompt_tokens: crate::chat::estimate_structured_tokens(&req),
                completion_tokens: token_count::count(content) as u64,
            }
        );
    }

    #[test]
    fn json_replies_are_parsed_with_or_without_a_fence() {
        for (text, expected) in [
            (r#"{"a": 1}"#, json!({"a": 1})),
            ("  [1, 2]\n", json!([1, 2])),
            ("```json\n{\"a\": 1}\n```", json!({"a": 1})),
            ("```\n{\"a\": 1}\n```", json!({"a": 1})),
            ("```{\"a\": 1}```", json!({"a": 1})),
            (r#"{"a": "```"}"#, json!({"a": "```"})),
        ] {
            assert_eq!(parse_json_reply(text).unwrap(), expected, "{text:?}");
        }
        for text in [
            "",
            "label: invoice",
            "```json\nnot json\n```",
            "{\"a\": 1} trailing",
        ] {
            assert!(parse_json_reply(text).is_err(), "{text:?}");
        }
    }

    #[tokio::test]
    async fn structured_reply_that_is_not_json_fails_without_retry() {
        let server = TestServer::start(|_, _| completion("The label is invoice.")).await;
        let schema = label_schema();
        let err = classify(&chat(&server), &schema).await.unwrap_err();
        assert!(
            matches!(&err, ChatError::Failed(m)
                if m.starts_with("openai structured: the reply is not JSON: ")
                    && m.contains("The label is invoice.")),
            "{err}"
        );
        assert!(!err.is_retryable());
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn structured_throttling_is_retried() {
        let server = TestServer::start(|_, n| match n {
            0 => Reply::json(429, json!({"error": {"message": "Rate limit reached"}}))
                .header("Retry-After", "0"),
            _ => completion(r#"{"label": "other", "confidence": 0.2}"#),
        })
        .await;
        let schema = label_schema();
        let response = classify(&chat(&server), &schema).await.unwrap();
        assert_eq!(response.value["label"], "other");
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[0].json(),
            requests[1].json(),
            "the same request again"
        );
    }

    #[tokio::test]
    async fn structured_with_zero_max_tokens_fails_before_any_request() {
        let server = TestServer::start(|_, _| completion("{}")).await;
        let schema = label_schema();
        let req = crate::chat::StructuredRequest {
            system: "s",
            prompt: "p",
            name: "n",
            schema: &schema,
            max_tokens: 0,
        };
        let err = chat(&server).structured(&req).await.unwrap_err();
        assert!(matches!(err, ChatError::Failed(_)), "{err}");
        assert!(server.requests().is_empty());
    }

    #[test]
    fn configuration() {
        let mut c = config(ChatProvider::OpenAi);
        c.model = Some("m".into());
        c.base_url = Some("127.0.0.1:8080/v1".into());
        assert!(OpenAiChat::from_config(&c).is_err(), "no scheme");
        c.base_url = Some(" http://127.0.0.1:8080/v1/ ".into());
        c.api_key = Some(Secret::new(""));
        let chat = OpenAiChat::from_config(&c).unwrap();
        assert_eq!(chat.url, "http://127.0.0.1:8080/v1/chat/completions");
        assert!(chat.api_key.is_none(), "an empty key sends no header");
    }
}
