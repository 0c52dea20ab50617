//! Amazon Bedrock's Converse API, called over plain HTTPS with a SigV4
//! signature (`aws-sigv4`), without the Bedrock SDK crate.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::citations::resolve;
use super::prompt::Prompt;
use super::{ChatError, ChatModel, ChatRequest, ChatResponse, Role, Usage, check_request};
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
        let request = Request {
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
                max_tokens: req.max_tokens,
                temperature: 0.0,
            },
        };
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
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    system: [Text<'a>; 1],
    messages: Vec<Message<'a>>,
    inference_config: InferenceConfig,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_config::{Region, SdkConfig};
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use serde_json::json;

    use super::*;
    use crate::chat::Turn;
    use crate::chat::tests::{capitals, config};
    use crate::config::ChatProvider;
    use crate::test_server::{Reply, TestServer};
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
        let mut c = config(ChatProvider::Bedrock);
        c.model = Some(MODEL.into());
        c.base_url = Some(format!("{}/", server.url()));
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
