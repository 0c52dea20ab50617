//! Amazon Bedrock's Converse and ConverseStream APIs, called over plain
//! HTTPS with a SigV4 signature (`aws-sigv4`), without the Bedrock SDK
//! crate.

mod stream;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::citations::resolve;
use super::prompt::{self, Prompt};
use super::{
    AnswerStream, ChatError, ChatModel, ChatRequest, ChatResponse, Role, Usage, check_request,
};
use crate::config::ChatConfig;
use crate::token_count;
use crate::transport::BedrockModel;

/// `POST {endpoint}/model/{modelId}/converse` with
/// `{"system": [{"text"}], "messages": [{"role", "content": [{"text"}]}],
/// "inferenceConfig": {"maxTokens", "temperature": 0}}`, signed with SigV4
/// using the SDK configuration's credentials (cached until five minutes
/// before they expire).
///
/// The endpoint is, in order: the configuration's `base_url`, the SDK
/// configuration's endpoint override (`AWS_ENDPOINT_URL`), else
/// `https://bedrock-runtime.{region}.amazonaws.com`. The model may be a
/// model id, an inference-profile id or an ARN.
///
/// Converse wants the first message from the user and roles alternating:
/// leading assistant turns of the history are dropped and consecutive
/// turns of one role merged. Guarantees: the answer is the text blocks of
/// `output.message.content`, joined, with citations resolved (markers
/// naming sources not given are removed); usage is the response's
/// `inputTokens`/`outputTokens` (counted in cl100k if absent). Throttling
/// (429), 408, 5xx, timeouts and connection errors are retried, then are
/// [`ChatError::Unavailable`]; validation and access errors are
/// [`ChatError::Failed`] at once.
///
/// Streamed ([`ChatModel::stream`]), the same request goes to
/// `/model/{modelId}/converse-stream`, signed the same way, and each text
/// delta of the event-stream answer is a piece as soon as its frame is
/// whole; usage comes from the final `metadata` event (counted as above
/// if absent). Only getting the response started is retried; after that,
/// an exception frame (throttling, model stream and server errors
/// [`ChatError::Unavailable`], validation and access
/// [`ChatError::Failed`]), a frame that does not decode, or a body that
/// ends before `messageStop` is an error after the text already given,
/// never a shortened answer. The configured timeout bounds the whole
/// stream.
pub struct BedrockChat {
    /// `/model/{encoded model id}/converse`.
    bedrock: BedrockModel,
    model: String,
}

impl std::fmt::Debug for BedrockChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BedrockChat")
            .field("endpoint", &self.bedrock.endpoint)
            .field("model", &self.model)
            .field("region", &self.bedrock.region())
            .finish_non_exhaustive()
    }
}

impl BedrockChat {
    /// From the chat configuration (`model` required) and the SDK
    /// configuration, which must have a region and a credentials provider.
    pub fn from_config(config: &ChatConfig, aws: &aws_config::SdkConfig) -> anyhow::Result<Self> {
        let model = config
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the bedrock chat provider needs CHAT_MODEL (a model or inference-profile id)"
                )
            })?
            .to_owned();
        anyhow::ensure!(
            !config.timeout.is_zero(),
            "CHAT_TIMEOUT_SECONDS must be positive"
        );
        let bedrock = BedrockModel::from_sdk(
            aws,
            config.base_url.as_deref(),
            &model,
            "converse",
            config.timeout,
            config.max_retries,
            "the bedrock chat provider",
        )?;
        Ok(Self { bedrock, model })
    }

    async fn answer(&self, req: &ChatRequest<'_>) -> Result<ChatResponse, ChatError> {
        check_request(req)?;
        let prompt = Prompt::new(req);
        let messages = prompt.alternating();
        let request = Request::new(&prompt, &messages, req.max_tokens);
        let response: Response = self.bedrock.post_json("bedrock converse", &request).await?;

        let Some(message) = response.output.message else {
            return Err(ChatError::Failed(format!(
                "bedrock converse: the response has no message (stopReason {})",
                response.stop_reason.as_deref().unwrap_or("unknown")
            )));
        };
        let text: String = message
            .content
            .into_iter()
            .filter_map(|block| block.text)
            .collect();
        let usage = Usage {
            prompt_tokens: response
                .usage
                .as_ref()
                .and_then(|u| u.input_tokens)
                .unwrap_or_else(|| prompt.estimate_tokens()),
            completion_tokens: response
                .usage
                .as_ref()
                .and_then(|u| u.output_tokens)
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

impl ChatModel for BedrockChat {
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

    fn stream<'a>(&'a self, req: &'a ChatRequest<'a>) -> AnswerStream<'a> {
        let start = async move {
            check_request(req)?;
            let prompt = Prompt::new(req);
            let messages = prompt.alternating();
            let request = Request::new(&prompt, &messages, req.max_tokens);
            let response = self
                .bedrock
                .post_for_stream(
                    "bedrock converse-stream",
                    "converse-stream",
                    stream::EVENT_STREAM,
                    &request,
                )
                .await?;
            Ok::<_, ChatError>(stream::EventStreamReader::new(
                response,
                prompt.estimate_tokens(),
            ))
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

/// The body of Converse and ConverseStream alike.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    system: [Text<'a>; 1],
    messages: Vec<Message<'a>>,
    inference_config: InferenceConfig,
}

impl<'a> Request<'a> {
    fn new(prompt: &'a Prompt, messages: &'a [prompt::Message], max_tokens: u32) -> Self {
        Request {
            system: [Text {
                text: &prompt.system,
            }],
            messages: messages
                .iter()
                .map(|m| Message {
                    role: m.role,
                    content: [Text { text: &m.content }],
                })
                .collect(),
            inference_config: InferenceConfig {
                max_tokens,
                temperature: 0.0,
            },
        }
    }
}

#[derive(Serialize)]
struct Message<'a> {
    role: Role,
    content: [Text<'a>; 1],
}

#[derive(Serialize)]
struct Text<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig {
    max_tokens: u32,
    temperature: f32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    output: Output,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<ResponseUsage>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    message: Option<OutputMessage>,
}

#[derive(Deserialize)]
struct OutputMessage {
    #[serde(default)]
    content: Vec<Block>,
}

/// A content block; blocks other than text (reasoning, tool use) have no
/// `text` and are skipped.
#[derive(Deserialize)]
struct Block {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// Free-form generation through Converse: the request's system text and
/// one user message, signed and retried as answers are, on the request's
/// model when it names another than the configured one.
impl BedrockChat {
    async fn generated(&self, req: &super::GenerateRequest<'_>) -> Result<ChatResponse, ChatError> {
        super::check_generate(req)?;
        let request = GenerateBody {
            system: [GenerateText { text: req.system }],
            messages: [GenerateMessage {
                role: "user",
                content: [GenerateText { text: req.prompt }],
            }],
            inference_config: GenerateInference {
                max_tokens: req.max_tokens,
                temperature: 0.0,
            },
        };
        let response: GenerateResponse = match req.model.filter(|m| *m != self.model) {
            Some(model) => {
                self.bedrock
                    .post_json_for("bedrock generate", model, &request)
                    .await?
            }
            None => self.bedrock.post_json("bedrock generate", &request).await?,
        };
        let Some(message) = response.output.message else {
            return Err(ChatError::Failed(format!(
                "bedrock generate: the response has no message (stopReason {})",
                response.stop_reason.as_deref().unwrap_or("unknown")
            )));
        };
        let text: String = message
            .content
            .into_iter()
            .filter_map(|block| block.text)
            .collect();
        let usage = response.usage.unwrap_or_default();
        Ok(ChatResponse {
            usage: Usage {
                prompt_tokens: usage
                    .input_tokens
                    .unwrap_or_else(|| super::estimate_generate_tokens(req)),
                completion_tokens: usage
                    .output_tokens
                    .unwrap_or_else(|| token_count::count(&text) as u64),
            },
            answer: text,
            cited: Vec::new(),
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateBody<'a> {
    system: [GenerateText<'a>; 1],
    messages: [GenerateMessage<'a>; 1],
    inference_config: GenerateInference,
}

#[derive(Serialize)]
struct GenerateMessage<'a> {
    role: &'static str,
    content: [GenerateText<'a>; 1],
}

#[derive(Serialize)]
struct GenerateText<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateInference {
    max_tokens: u32,
    temperature: f32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    output: GenerateOutput,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<GenerateUsage>,
}

#[derive(Deserialize)]
struct GenerateOutput {
    #[serde(default)]
    message: Option<GenerateOutputMessage>,
}

#[derive(Deserialize)]
struct GenerateOutputMessage {
    #[serde(default)]
    content: Vec<GenerateBlock>,
}

#[derive(Deserialize)]
struct GenerateBlock {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerateUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

/// Structured output through Converse: the request's system text and one
/// user message, with one tool whose input schema is the request's schema
/// and `toolChoice` forcing the model to call it; the value is that call's
/// input. Signed and retried as answers are.
impl BedrockChat {
    async fn structured_reply(
        &self,
        req: &super::StructuredRequest<'_>,
    ) -> Result<super::StructuredResponse, ChatError> {
        super::check_structured(req)?;
        let request = StructuredBody {
            system: [GenerateText { text: req.system }],
            messages: [GenerateMessage {
                role: "user",
                content: [GenerateText { text: req.prompt }],
            }],
            inference_config: GenerateInference {
                max_tokens: req.max_tokens,
                temperature: 0.0,
            },
            tool_config: ToolConfig {
                tools: [Tool {
                    tool_spec: ToolSpec {
                        name: req.name,
                        description: "Record the result.",
                        input_schema: InputSchema { json: req.schema },
                    },
                }],
                tool_choice: ToolChoice {
                    tool: ToolName { name: req.name },
                },
            },
        };
        let response: StructuredResponseBody = self
            .bedrock
            .post_json("bedrock structured", &request)
            .await?;
        let stop_reason = response.stop_reason.as_deref().unwrap_or("unknown");
        let Some(input) = response
            .output
            .message
            .into_iter()
            .flat_map(|m| m.content)
            .filter_map(|block| block.tool_use)
            .find(|tool_use| tool_use.name == req.name)
            .map(|tool_use| tool_use.input)
        else {
            return Err(ChatError::Failed(format!(
                "bedrock structured: the model did not call the {} tool (stopReason {stop_reason})",
                req.name
            )));
        };
        let usage = response.usage.unwrap_or_default();
        Ok(super::StructuredResponse {
            usage: Usage {
                prompt_tokens: usage
                    .input_tokens
                    .unwrap_or_else(|| super::estimate_structured_tokens(req)),
                completion_tokens: usage
                    .output_tokens
                    .unwrap_or_else(|| token_count::count(&input.to_string()) as u64),
            },
            value: input,
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StructuredBody<'a> {
    system: [GenerateText<'a>; 1],
    messages: [GenerateMessage<'a>; 1],
    inference_config: GenerateInference,
    tool_config: ToolConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    tools: [Tool<'a>; 1],
    tool_choice: ToolChoice<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tool<'a> {
    tool_spec: ToolSpec<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec<'a> {
    name: &'a str,
    description: &'static str,
    input_schema: InputSchema<'a>,
}

#[derive(Serialize)]
struct InputSchema<'a> {
    json: &'a serde_json::Value,
}

#[derive(Serialize)]
struct ToolChoice<'a> {
    tool: ToolName<'a>,
}

#[derive(Serialize)]
struct ToolName<'a> {
    name: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StructuredResponseBody {
    output: StructuredOutput,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<GenerateUsage>,
}

#[derive(Deserialize)]
struct StructuredOutput {
    #[serde(default)]
    message: Option<StructuredOutputMessage>,
}

#[derive(Deserialize)]
struct StructuredOutputMessage {
    #[serde(default)]
    content: Vec<StructuredBlock>,
}

/// A content block; those without `toolUse` (text, reasoning) are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StructuredBlock {
    #[serde(default)]
    tool_use: Option<ToolUse>,
}

#[derive(Deserialize)]
struct ToolUse {
    name: String,
    #[serde(default)]
    input: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_config::{Region, SdkConfig};
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use serde_json::json;

    use std::sync::{Arc, Mutex};

    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message as EventMessage};
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::chat::citations::MarkerFilter;
    use crate::chat::tests::{capitals, config};
    use crate::chat::{Piece, Turn};
    use crate::config::ChatProvider;
    use crate::test_server::{Recorded, Reply, TestServer};
    use crate::transport::tests::expected_authorization;

    const KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";

    fn credentials() -> Credentials {
        Credentials::new(KEY_ID, SECRET, Some("session-token".into()), None, "test")
    }

    fn sdk() -> SdkConfig {
        SdkConfig::builder()
            .region(Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(credentials()))
            .build()
    }

    fn chat(server: &TestServer) -> BedrockChat {
        chat_at(&server.url(), Duration::from_secs(5))
    }

    fn chat_at(url: &str, timeout: Duration) -> BedrockChat {
        let mut c = config(ChatProvider::Bedrock);
        c.model = Some(MODEL.into());
        c.base_url = Some(format!("{url}/"));
        c.timeout = timeout;
        let mut chat = BedrockChat::from_config(&c, &sdk()).unwrap();
        chat.bedrock.retry.base = Duration::from_millis(5);
        chat
    }

    fn converse(text: &str) -> Reply {
        Reply::json(
            200,
            json!({
                "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": 410, "outputTokens": 17, "totalTokens": 427},
                "metrics": {"latencyMs": 300}
            }),
        )
    }

    fn turn(role: Role, content: &str) -> Turn {
        Turn {
            role,
            content: content.into(),
        }
    }

    async fn ask(chat: &BedrockChat, history: &[Turn]) -> Result<ChatResponse, ChatError> {
        let sources = capitals();
        let req = ChatRequest {
            question: "What is the capital of France?",
            history,
            sources: &sources,
            max_tokens: 256,
        };
        chat.complete(&req).await
    }

    #[tokio::test]
    async fn signed_converse_request_and_parsed_answer() {
        let server = TestServer::start(|_, _| converse("Paris is the capital [1].")).await;
        let chat = chat(&server);
        assert_eq!(chat.name(), MODEL);
        let history = [
            turn(Role::Assistant, "Welcome! Ask about your documents."),
            turn(Role::User, "Hi"),
            turn(Role::Assistant, "Hello."),
            turn(Role::User, "Europe?"),
        ];
        let response = ask(&chat, &history).await.unwrap();
        assert_eq!(response.answer, "Paris is the capital [1].");
        assert_eq!(response.cited, [1]);
        assert_eq!(
            response.usage,
            Usage {
                prompt_tokens: 410,
                completion_tokens: 17
            }
        );

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.path,
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-amz-security-token"), Some("session-token"));
        let date = r.header("x-amz-date").unwrap();
        let authorization = r.header("authorization").unwrap();
        assert!(
            authorization.starts_with(&format!(
                "AWS4-HMAC-SHA256 Credential={KEY_ID}/{}/eu-west-1/bedrock/aws4_request, SignedHeaders=",
                &date[..8]
            )),
            "{authorization}"
        );
        assert_eq!(
            authorization,
            expected_authorization(r, &server.url(), credentials(), "eu-west-1"),
            "the signature must cover what was sent"
        );

        let body = r.json();
        assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
        assert!(
            body["system"][0]["text"]
                .as_str()
                .unwrap()
                .contains("only the numbered sources")
        );
        assert_eq!(
            body["inferenceConfig"],
            json!({"maxTokens": 256, "temperature": 0.0})
        );
        let messages = body["messages"].as_array().unwrap();
        let roles: Vec<&str> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"], "{body}");
        assert_eq!(messages[0]["content"], json!([{"text": "Hi"}]));
        assert_eq!(messages[1]["content"], json!([{"text": "Hello."}]));
        let last = messages[2]["content"][0]["text"].as_str().unwrap();
        assert!(
            last.starts_with("Europe?\n\nSources:\n\n[1] France (p. 3)"),
            "{last}"
        );
        assert!(last.ends_with("Question: What is the capital of France?"));
    }

    #[tokio::test]
    async fn text_blocks_are_joined_and_stray_citations_removed() {
        let server = TestServer::start(|_, _| {
            Reply::json(
                200,
                json!({
                    "output": {"message": {"role": "assistant", "content": [
                        {"reasoningContent": {"reasoningText": {"text": "thinking [4]"}}},
                        {"text": "Paris [1][3]. "},
                        {"text": "Berlin [2]."}
                    ]}},
                    "stopReason": "end_turn"
                }),
            )
        })
        .await;
        let response = ask(&chat(&server), &[]).await.unwrap();
        assert_eq!(response.answer, "Paris [1]. Berlin [2].");
        assert_eq!(response.cited, [1, 2]);
        assert_eq!(
            response.usage.completion_tokens,
            token_count::count("Paris [1][3]. Berlin [2].") as u64,
            "counted locally without usage"
        );
        assert!(response.usage.prompt_tokens > 0);
    }

    #[tokio::test]
    async fn throttling_is_retried_and_validation_is_not() {
        let server = TestServer::start(|_, n| {
            if n < 2 {
                Reply::json(
                    429,
                    json!({"message": "Too many requests, please wait before trying again."}),
                )
                .header(
                    "x-amzn-ErrorType",
                    "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
                )
            } else {
                converse("Paris [1].")
            }
        })
        .await;
        let response = ask(&chat(&server), &[]).await.unwrap();
        assert_eq!(response.answer, "Paris [1].");
        let requests = server.requests();
        assert_eq!(requests.len(), 3);
        assert_ne!(
            requests[0].header("authorization"),
            None,
            "every attempt is signed"
        );

        let server = TestServer::start(|_, _| {
            Reply::json(
                400,
                json!({"message": "A conversation must start with a user message."}),
            )
            .header(
                "x-amzn-ErrorType",
                "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            )
        })
        .await;
        let err = ask(&chat(&server), &[]).await.unwrap_err();
        assert!(
            matches!(&err, ChatError::Failed(m) if m.contains("ValidationException") && m.contains("user message")),
            "{err}"
        );
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn server_errors_run_out_as_unavailable() {
        let server = TestServer::start(|_, _| {
            Reply::json(
                503,
                json!({"message": "Bedrock is unable to process your request."}),
            )
            .header("x-amzn-ErrorType", "ServiceUnavailableException:")
        })
        .await;
        let err = ask(&chat(&server), &[]).await.unwrap_err();
        assert!(
            matches!(&err, ChatError::Unavailable(m) if m.contains("ServiceUnavailableException")),
            "{err}"
        );
        assert_eq!(server.requests().len(), 4, "1 attempt + 3 retries");
    }

    #[tokio::test]
    async fn a_response_without_message_fails() {
        let server = TestServer::start(|_, _| {
            Reply::json(200, json!({"output": {}, "stopReason": "content_filtered"}))
        })
        .await;
        let err = ask(&chat(&server), &[]).await.unwrap_err();
        assert!(
            matches!(&err, ChatError::Failed(m) if m.contains("content_filtered")),
            "{err}"
        );
    }

    // ConverseStream, against a local server writing real event-stream
    // frames (encoded with the SDK's own encoder) step by step.

    /// What the streaming server does after an answer's head.
    enum Step {
        Write(Vec<u8>),
        Pause(Duration),
        /// Waits for the test's go-ahead; a dropped sender ends the body.
        Gate(tokio::sync::oneshot::Receiver<()>),
    }

    /// One connection's answer.
    struct Script {
        status: u16,
        headers: Vec<(&'static str, String)>,
        steps: Vec<Step>,
    }

    impl Script {
        fn stream(steps: Vec<Step>) -> Self {
            Script {
                status: 200,
                headers: vec![("Content-Type", stream::EVENT_STREAM.into())],
                steps,
            }
        }

        /// Each frame in a write of its own.
        fn frames(frames: Vec<Vec<u8>>) -> Self {
            Self::stream(frames.into_iter().map(Step::Write).collect())
        }
    }

    /// Answers the n-th connection with the n-th script, recording requests.
    struct StreamServer {
        url: String,
        requests: Arc<Mutex<Vec<Recorded>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl StreamServer {
        async fn start(scripts: Vec<Script>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let requests = Arc::new(Mutex::new(Vec::new()));
            let log = requests.clone();
            let task = tokio::spawn(async move {
                let mut scripts = scripts.into_iter();
                while let Ok((stream, _)) = listener.accept().await {
                    let Some(script) = scripts.next() else { break };
                    let log = log.clone();
                    tokio::spawn(async move {
                        let _ = serve_script(stream, &log, script).await;
                    });
                }
            });
            Self {
                url,
                requests,
                task,
            }
        }

        fn requests(&self) -> Vec<Recorded> {
            self.requests.lock().unwrap().clone()
        }
    }

    impl Drop for StreamServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve_script(
        mut stream: TcpStream,
        log: &Mutex<Vec<Recorded>>,
        script: Script,
    ) -> std::io::Result<()> {
        let Some(request) = crate::test_server::read_request(&mut stream).await? else {
            return Ok(());
        };
        log.lock().unwrap().push(request);

        let mut head = format!("HTTP/1.1 {} Test\r\n", script.status);
        for (name, value) in &script.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await?;
        for step in script.steps {
            match step {
                Step::Write(bytes) => {
                    stream.write_all(&bytes).await?;
                    stream.flush().await?;
                }
                Step::Pause(wait) => tokio::time::sleep(wait).await,
                Step::Gate(go) => {
                    if go.await.is_err() {
                        break;
                    }
                }
            }
        }
        stream.shutdown().await
    }

    /// One event-stream frame with string headers and a JSON payload.
    fn frame(headers: &[(&str, &str)], payload: serde_json::Value) -> Vec<u8> {
        let mut message = EventMessage::new(payload.to_string().into_bytes());
        for (name, value) in headers {
            message = message.add_header(Header::new(
                name.to_string(),
                HeaderValue::String(value.to_string().into()),
            ));
        }
        let mut out = Vec::new();
        write_message_to(&message, &mut out).unwrap();
        out
    }

    fn event(kind: &str, payload: serde_json::Value) -> Vec<u8> {
        frame(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload,
        )
    }

    fn delta(text: &str) -> Vec<u8> {
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": text}, "p": "abcd"}),
        )
    }

    fn exception_frame(kind: &str, message: &str) -> Vec<u8> {
        frame(
            &[
                (":exception-type", kind),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            json!({ "message": message }),
        )
    }

    fn start() -> Vec<u8> {
        event("messageStart", json!({"role": "assistant", "p": "ab"}))
    }

    /// What follows the last delta of a complete answer, without usage.
    fn stop() -> Vec<Vec<u8>> {
        vec![
            event("contentBlockStop", json!({"contentBlockIndex": 0})),
            event("messageStop", json!({"stopReason": "end_turn"})),
        ]
    }

    fn metadata() -> Vec<u8> {
        event(
            "metadata",
            json!({
                "usage": {"inputTokens": 410, "outputTokens": 17, "totalTokens": 427},
                "metrics": {"latencyMs": 300},
                "p": "abcdef"
            }),
        )
    }

    /// A whole answer of these deltas, a frame per write.
    fn answer(deltas: &[&str]) -> Vec<Vec<u8>> {
        let mut frames = vec![start()];
        frames.extend(deltas.iter().map(|d| delta(d)));
        frames.extend(stop());
        frames.push(metadata());
        frames
    }

    fn question(sources: &[crate::chat::Source]) -> ChatRequest<'_> {
        ChatRequest {
            question: "What is the capital of France?",
            history: &[],
            sources,
            max_tokens: 256,
        }
    }

    /// Every piece until the stream ends.
    async fn pieces(chat: &BedrockChat) -> Vec<Result<Piece, ChatError>> {
        let sources = capitals();
        let req = question(&sources);
        tokio::time::timeout(Duration::from_secs(10), chat.stream(&req).collect())
            .await
            .expect("the stream ends")
    }

    fn texts(pieces: &[Result<Piece, ChatError>]) -> Vec<&str> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Ok(Piece::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_signed_converse_stream_yields_each_delta_then_the_usage() {
        let deltas = ["Paris is ", "the capital [", "1", "] of France", " [7]."];
        let server = StreamServer::start(vec![Script::frames(answer(&deltas))]).await;
        let chat = chat_at(&server.url, Duration::from_secs(5));
        let pieces = pieces(&chat).await;

        assert_eq!(texts(&pieces), deltas, "a piece per delta, in order");
        assert_eq!(
            pieces.last().unwrap().as_ref().unwrap(),
            &Piece::Usage(Usage {
                prompt_tokens: 410,
                completion_tokens: 17
            }),
            "usage from metadata, last"
        );
        // Through the filter the streaming routes use, the split marker
        // resolves and the one naming no source goes.
        let mut filter = MarkerFilter::new(&[1, 2]);
        let mut shown: String = deltas.iter().map(|d| filter.push(d)).collect();
        shown.push_str(&filter.finish());
        assert_eq!(shown, "Paris is the capital [1] of France.");
        assert_eq!(filter.cited(), [1]);

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.path,
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
        );
        assert_eq!(r.header("accept"), Some(stream::EVENT_STREAM));
        assert_eq!(r.header("x-amz-security-token"), Some("session-token"));
        assert_eq!(
            r.header("authorization").unwrap(),
            expected_authorization(r, &server.url, credentials(), "eu-west-1"),
            "the signature must cover what was sent"
        );
        let body = r.json();
        assert_eq!(
            body["inferenceConfig"],
            json!({"maxTokens": 256, "temperature": 0.0})
        );
        let sources = capitals();
        let req = question(&sources);
        let prompt = Prompt::new(&req);
        let messages = prompt.alternating();
        assert_eq!(
            body,
            serde_json::to_value(Request::new(&prompt, &messages, 256)).unwrap(),
            "the body Converse gets"
        );
    }

    #[tokio::test]
    async fn frames_split_across_writes_are_reassembled() {
        let (a, b, c) = (delta("Paris is "), delta("the capital "), delta("[1]."));
        // Mid-payload, mid-header (the prelude is 12 bytes), mid-prelude.
        let (a1, a2) = a.split_at(a.len() - 9);
        let (b1, b2) = b.split_at(20);
        let (c1, c2) = c.split_at(5);
        let mut steps = vec![Step::Write(start())];
        for (first, second) in [(a1, a2), (b1, b2), (c1, c2)] {
            steps.push(Step::Write(first.to_vec()));
            steps.push(Step::Pause(Duration::from_millis(20)));
            steps.push(Step::Write(second.to_vec()));
        }
        // Several frames in one write, too.
        steps.push(Step::Write(stop().concat()));
        steps.push(Step::Write(metadata()));
        let server = StreamServer::start(vec![Script::stream(steps)]).await;
        let pieces = pieces(&chat_at(&server.url, Duration::from_secs(5))).await;
        assert_eq!(texts(&pieces), ["Paris is ", "the capital ", "[1]."]);
        assert!(
            matches!(pieces.last(), Some(Ok(Piece::Usage(_)))),
            "{pieces:?}"
        );
    }

    #[tokio::test]
    async fn the_first_text_arrives_before_the_rest_is_sent() {
        let (go, wait) = tokio::sync::oneshot::channel();
        let mut steps = vec![Step::Write(start()), Step::Write(delta("Paris "))];
        steps.push(Step::Gate(wait));
        steps.extend(
            answer(&["is the capital [1]."])[1..]
                .iter()
                .cloned()
                .map(Step::Write),
        );
        let server = StreamServer::start(vec![Script::stream(steps)]).await;
        let chat = chat_at(&server.url, Duration::from_secs(10));
        let sources = capitals();
        let req = question(&sources);
        let mut stream = chat.stream(&req);

        let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the first delta comes while the server still holds the rest");
        assert_eq!(first.unwrap().unwrap(), Piece::Text("Paris ".into()));
        go.send(()).unwrap();
        let rest: Vec<_> = stream.collect().await;
        assert_eq!(texts(&rest), ["is the capital [1]."]);
        assert!(matches!(rest.last(), Some(Ok(Piece::Usage(_)))), "{rest:?}");
    }

    #[tokio::test]
    async fn throttling_before_the_stream_starts_is_retried() {
        let body =
            json!({"message": "Too many requests, please wait before trying again."}).to_string();
        let throttled = Script {
            status: 429,
            headers: vec![
                ("Content-Type", "application/json".into()),
                (
                    "x-amzn-ErrorType",
                    "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
                        .into(),
                ),
                ("Content-Length", body.len().to_string()),
            ],
            steps: vec![Step::Write(body.into_bytes())],
        };
        let server =
            StreamServer::start(vec![throttled, Script::frames(answer(&["Paris [1]."]))]).await;
        let pieces = pieces(&chat_at(&server.url, Duration::from_secs(5))).await;
        assert_eq!(texts(&pieces), ["Paris [1]."]);
        assert!(pieces.iter().all(Result::is_ok), "{pieces:?}");
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].body, requests[1].body, "the same request again");
        assert_eq!(
            requests[1].header("authorization").unwrap(),
            expected_authorization(&requests[1], &server.url, credentials(), "eu-west-1"),
            "signed afresh"
        );
    }

    #[tokio::test]
    async fn an_exception_mid_stream_ends_it_with_an_error_after_the_text() {
        for (kind, retryable) in [
            ("throttlingException", true),
            ("modelStreamErrorException", true),
            ("validationException", false),
        ] {
            let frames = vec![
                start(),
                delta("Paris is "),
                exception_frame(kind, "Something went wrong."),
            ];
            let server = StreamServer::start(vec![Script::frames(frames)]).await;
            let pieces = pieces(&chat_at(&server.url, Duration::from_secs(5))).await;
            assert_eq!(pieces.len(), 2, "{kind}: {pieces:?}");
            assert_eq!(
                pieces[0].as_ref().unwrap(),
                &Piece::Text("Paris is ".into())
            );
            let err = pieces[1].as_ref().unwrap_err();
            assert_eq!(err.is_retryable(), retryable, "{kind}: {err}");
            let message = err.to_string();
            assert!(
                message.contains(kind) && message.contains("Something went wrong."),
                "{message}"
            );
            assert_eq!(
                server.requests().len(),
                1,
                "a started stream is not retried"
            );
        }
    }

    #[tokio::test]
    async fn broken_streams_are_errors_never_short_answers() {
        let mut corrupt = delta("the capital");
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff; // the message checksum
        let cut = delta("the capital");
        let cases = [
            (vec![start(), delta("Paris is "), corrupt], "unreadable"),
            (
                vec![start(), delta("Paris is "), cut[..cut.len() - 3].to_vec()],
                "inside a frame",
            ),
            (
                vec![start(), delta("Paris is "), cut[..12].to_vec()],
                "inside a frame",
            ),
            (vec![start(), delta("Paris is ")], "before messageStop"),
        ];
        for (frames, why) in cases {
            let server = StreamServer::start(vec![Script::frames(frames)]).await;
            let pieces = pieces(&chat_at(&server.url, Duration::from_secs(5))).await;
            assert_eq!(texts(&pieces), ["Paris is "], "{why}");
            assert_eq!(pieces.len(), 2, "{why}: {pieces:?}");
            let err = pieces[1].as_ref().unwrap_err();
            assert!(err.to_string().contains(why), "{why}: {err}");
        }
    }

    #[tokio::test]
    async fn usage_is_counted_when_the_stream_reports_none() {
        let mut frames = vec![start(), delta("Paris is "), delta("the capital [1].")];
        frames.extend(stop());
        let server = StreamServer::start(vec![Script::frames(frames)]).await;
        let pieces = pieces(&chat_at(&server.url, Duration::from_secs(5))).await;
        let sources = capitals();
        assert_eq!(
            pieces.last().unwrap().as_ref().unwrap(),
            &Piece::Usage(Usage {
                prompt_tokens: crate::chat::estimate_prompt_tokens(&question(&sources)),
                completion_tokens: token_count::count("Paris is the capital [1].") as u64,
            })
        );
    }

    #[tokio::test]
    async fn a_stalled_stream_times_out_as_unavailable() {
        let (_go, wait) = tokio::sync::oneshot::channel::<()>();
        let steps = vec![
            Step::Write(start()),
            Step::Write(delta("Paris ")),
            Step::Gate(wait),
        ];
        let server = StreamServer::start(vec![Script::stream(steps)]).await;
        let started = std::time::Instant::now();
        let pieces = pieces(&chat_at(&server.url, Duration::from_millis(400))).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(texts(&pieces), ["Paris "]);
        let err = pieces.last().unwrap().as_ref().unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(server.requests().len(), 1);
    }

    fn label_schema() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": ["invoice", "contract", "other"]}
            },
            "required": ["label"],
            "additionalProperties": false
        })
    }

    async fn classify(
        chat: &BedrockChat,
        schema: &serde_json::Value,
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
    async fn structured_forces_a_signed_tool_call_and_returns_its_input() {
        let server = TestServer::start(|_, _| {
            Reply::json(
                200,
                json!({
                    "output": {"message": {"role": "assistant", "content": [
                        {"text": "Recording it."},
                        {"toolUse": {"toolUseId": "t0", "name": "other_tool", "input": {"label": "contract"}}},
                        {"toolUse": {"toolUseId": "t1", "name": "document_label", "input": {"label": "invoice"}}}
                    ]}},
                    "stopReason": "tool_use",
                    "usage": {"inputTokens": 90, "outputTokens": 11, "totalTokens": 101}
                }),
            )
        })
        .await;
        let schema = label_schema();
        let response = classify(&chat(&server), &schema).await.unwrap();
        assert_eq!(
            response.value,
            json!({"label": "invoice"}),
            "the input of the named tool's call"
        );
        assert_eq!(
            response.usage,
            Usage {
                prompt_tokens: 90,
                completion_tokens: 11
            }
        );

        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.path,
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
        assert_eq!(r.header("x-amz-security-token"), Some("session-token"));
        assert_eq!(
            r.header("authorization").unwrap(),
            expected_authorization(r, &server.url(), credentials(), "eu-west-1"),
            "the signature must cover what was sent"
        );
        assert_eq!(
            r.json(),
            json!({
                "system": [{"text": "Classify the document."}],
                "messages": [{"role": "user", "content": [{"text": "Invoice no. 42, due in 30 days."}]}],
                "inferenceConfig": {"maxTokens": 50, "temperature": 0.0},
                "toolConfig": {
                    "tools": [{"toolSpec": {
                        "name": "document_label",
                        "description": "Record the result.",
                        "inputSchema": {"json": schema}
                    }}],
                    "toolChoice": {"tool": {"name": "document_label"}}
                }
            })
        );
    }

    #[tokio::test]
    async fn structured_usage_is_estimated_when_the_response_has_none() {
        let server = TestServer::start(|_, _| {
            Reply::json(
                200,
                json!({
                    "output": {"message": {"role": "assistant", "content": [
                        {"toolUse": {"toolUseId": "t1", "name": "document_label", "input": {"label": "other"}}}
                    ]}},
                    "stopReason": "tool_use"
                }),
            )
        })
        .await;
        let schema = label_schema();
        let response = classify(&chat(&server), &schema).await.unwrap();
        assert_eq!(response.value, json!({"label": "other"}));
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
                completion_tokens: token_count::count(r#"{"label":"other"}"#) as u64,
            }
        );
    }

    #[tokio::test]
    async fn structured_reply_with_only_text_fails_naming_the_stop_reason() {
        let server = TestServer::start(|_, _| {
            Reply::json(
                200,
                json!({
                    "output": {"message": {"role": "assistant", "content": [
                        {"text": "{\"label\": \"invoice\"}"}
                    ]}},
                    "stopReason": "max_tokens",
                    "usage": {"inputTokens": 90, "outputTokens": 50}
                }),
            )
        })
        .await;
        let schema = label_schema();
        let err = classify(&chat(&server), &schema).await.unwrap_err();
        assert!(
            matches!(&err, ChatError::Failed(m) if m.contains("max_tokens") && m.contains("document_label")),
            "{err}"
        );
        assert!(!err.is_retryable());
        assert_eq!(server.requests().len(), 1, "not retried");
    }

    #[test]
    fn configuration() {
        let mut c = config(ChatProvider::Bedrock);
        assert!(BedrockChat::from_config(&c, &sdk()).is_err(), "no model");
        c.model = Some("us.amazon.nova-micro-v1:0".into());
        let chat = BedrockChat::from_config(&c, &sdk()).unwrap();
        assert_eq!(
            chat.bedrock.endpoint,
            "https://bedrock-runtime.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            chat.bedrock.path,
            "/model/us.amazon.nova-micro-v1%3A0/converse"
        );

        let aws = sdk()
            .to_builder()
            .endpoint_url("http://localhost:4566")
            .build();
        let chat = BedrockChat::from_config(&c, &aws).unwrap();
        assert_eq!(chat.bedrock.endpoint, "http://localhost:4566");

        c.model = Some(
            "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude".into(),
        );
        let chat = BedrockChat::from_config(&c, &sdk()).unwrap();
        assert_eq!(
            chat.bedrock.path,
            "/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A123456789012%3Ainference-profile%2Feu.anthropic.claude/converse"
        );

        let no_credentials = SdkConfig::builder()
            .region(Region::new("us-east-1"))
            .build();
        assert!(BedrockChat::from_config(&c, &no_credentials).is_err());
    }
}

#[cfg(test)]
mod generate_tests {
    use aws_config::{Region, SdkConfig};
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use serde_json::json;

    use super::*;
    use crate::chat::GenerateRequest;
    use crate::chat::tests::config;
    use crate::config::ChatProvider;
    use crate::test_server::{Reply, TestServer};

    fn chat(server: &TestServer) -> BedrockChat {
        let sdk = SdkConfig::builder()
            .region(Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "test",
            )))
            .build();
        let mut c = config(ChatProvider::Bedrock);
        c.model = Some("amazon.nova-micro-v1:0".into());
        c.base_url = Some(server.url());
        BedrockChat::from_config(&c, &sdk).unwrap()
    }

    #[tokio::test]
    async fn generation_sends_system_and_prompt_to_the_chosen_model() {
        let server = TestServer::start(|_, _| {
            Reply::json(
                200,
                json!({
                    "output": {"message": {"role": "assistant", "content": [{"text": "A [1] summary."}]}},
                    "stopReason": "end_turn",
                    "usage": {"inputTokens": 52, "outputTokens": 6}
                }),
            )
        })
        .await;
        let chat = chat(&server);
        let mut req = GenerateRequest {
            system: "Summarize.",
            prompt: "Some text.",
            max_tokens: 40,
            model: None,
        };
        let response = chat.generate(&req).await.unwrap();
        assert_eq!(response.answer, "A [1] summary.", "markers are text here");
        assert!(response.cited.is_empty());
        assert_eq!(
            response.usage,
            Usage {
                prompt_tokens: 52,
                completion_tokens: 6
            }
        );
        req.model = Some("us.anthropic.claude-3-haiku");
        chat.generate(&req).await.unwrap();

        let requests = server.requests();
        assert_eq!(requests[0].path, "/model/amazon.nova-micro-v1%3A0/converse");
        assert_eq!(
            requests[1].path,
            "/model/us.anthropic.claude-3-haiku/converse"
        );
        let body = requests[0].json();
        assert_eq!(body["system"], json!([{"text": "Summarize."}]));
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": [{"text": "Some text."}]}])
        );
        assert_eq!(body["inferenceConfig"]["maxTokens"], 40);
        assert!(requests[1].header("authorization").is_some(), "signed");
    }
}
