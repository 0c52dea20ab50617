//! Amazon Titan Text Embeddings v2 on Bedrock, called over plain HTTPS with
//! a SigV4 signature (`aws-sigv4`), without the Bedrock SDK crate.

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use super::{EmbedError, Embedder, l2_normalize};
use crate::config::EmbeddingConfig;
use crate::transport::BedrockModel;

/// `POST {endpoint}/model/{modelId}/invoke` with
/// `{"inputText", "dimensions", "normalize": true}`, one request per text
/// (Titan v2 embeds a single input), at most [`Self::CONCURRENCY`] in
/// flight, signed with SigV4 using the SDK configuration's credentials
/// (cached until five minutes before they expire).
///
/// The endpoint is, in order: the configuration's `base_url`, the SDK
/// configuration's endpoint override (`AWS_ENDPOINT_URL`, as the AWS SDKs
/// would use it), else `https://bedrock-runtime.{region}.amazonaws.com`.
///
/// Guarantees: input order, exactly `dimensions` floats per vector (else
/// [`EmbedError::Failed`]), unit length. Throttling (429), 408 and 5xx,
/// timeouts and connection errors are retried like the OpenAI provider
/// does; the first text that fails for good fails the whole call and
/// cancels the requests in flight. Empty strings are rejected before any
/// request (Titan requires at least one character).
pub struct BedrockEmbedder {
    /// `/model/{encoded model id}/invoke`.
    bedrock: BedrockModel,
    model: String,
    dimensions: usize,
    batch: usize,
}

impl std::fmt::Debug for BedrockEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BedrockEmbedder")
            .field("endpoint", &self.bedrock.endpoint)
            .field("model", &self.model)
            .field("region", &self.bedrock.region())
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

impl BedrockEmbedder {
    /// Requests in flight at once per `embed` call.
    pub const CONCURRENCY: usize = 8;
    /// Titan Text Embeddings v2, the default model.
    pub const DEFAULT_MODEL: &str = "amazon.titan-embed-text-v2:0";
    /// Output sizes Titan v2 offers.
    pub const DIMENSIONS: [usize; 3] = [256, 512, 1024];

    /// From the embedding configuration (`model` defaults to
    /// [`Self::DEFAULT_MODEL`]; `dimensions` must be 256, 512 or 1024) and the
    /// SDK configuration, which must have a region and a credentials
    /// provider.
    pub fn from_config(
        config: &EmbeddingConfig,
        aws: &aws_config::SdkConfig,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            Self::DIMENSIONS.contains(&config.dimensions),
            "Titan Text Embeddings v2 gives 256, 512 or 1024 dimensions, not {}",
            config.dimensions
        );
        anyhow::ensure!(
            !config.timeout.is_zero(),
            "EMBEDDING_TIMEOUT_SECONDS must be positive"
        );
        let model = config
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or(Self::DEFAULT_MODEL)
            .to_owned();
        let bedrock = BedrockModel::from_sdk(
            aws,
            config.base_url.as_deref(),
            &model,
            "invoke",
            config.timeout,
            config.max_retries,
            "the bedrock embedding provider",
        )?;
        Ok(Self {
            bedrock,
            model,
            dimensions: config.dimensions,
            batch: config.batch_size.clamp(1, 2048),
        })
    }

    async fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let request = Request {
            input_text: text,
            dimensions: self.dimensions,
            normalize: true,
        };
        let response: Response = self
            .bedrock
            .post_json("bedrock embeddings", &request)
            .await?;
        let mut vector = response.embedding;
        if vector.len() != self.dimensions {
            return Err(EmbedError::Failed(format!(
                "bedrock embeddings: model {} returned {}-dimensional vectors but EMBEDDING_DIMENSIONS is {}",
                self.model,
                vector.len(),
                self.dimensions
            )));
        }
        if !l2_normalize(&mut vector) {
            return Err(EmbedError::Failed(
                "bedrock embeddings: the returned vector is zero or not finite".into(),
            ));
        }
        Ok(vector)
    }
}

impl Embedder for BedrockEmbedder {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn max_batch(&self) -> usize {
        self.batch
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            if let Some(i) = texts.iter().position(|t| t.is_empty()) {
                return Err(EmbedError::Failed(format!(
                    "bedrock embeddings: input {i} is empty"
                )));
            }
            // Indices rather than `texts.iter()`: a closure taking `&String`
            // trips the compiler's `Send` check of the boxed future.
            let mut results = stream::iter(0..texts.len())
                .map(|i| self.embed_one(&texts[i]))
                .buffered(Self::CONCURRENCY);
            let mut out = Vec::with_capacity(texts.len());
            while let Some(vector) = results.next().await {
                out.push(vector?);
            }
            Ok(out)
        })
    }

    // Titan embeds a question as a passage (embed_query's default), so
    // several go out concurrently, as passages do.
    fn embed_queries<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        self.embed(texts)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    input_text: &'a str,
    dimensions: usize,
    normalize: bool,
}

#[derive(Deserialize)]
struct Response {
    embedding: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use aws_config::{Region, SdkConfig};
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use serde_json::json;

    use super::*;
    use crate::config::EmbeddingProvider;
    use crate::embed::tests::config;
    use crate::test_server::{Recorded, Reply, TestServer};
    use crate::transport::tests::expected_authorization;

    const KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn sdk(session_token: Option<&str>) -> SdkConfig {
        let credentials = Credentials::new(
            KEY_ID,
            SECRET,
            session_token.map(str::to_owned),
            None,
            "test",
        );
        SdkConfig::builder()
            .region(Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build()
    }

    fn embedder(server: &TestServer, dims: usize) -> BedrockEmbedder {
        let mut c = config(EmbeddingProvider::Bedrock, dims);
        c.base_url = Some(format!("{}/", server.url()));
        let mut e = BedrockEmbedder::from_config(&c, &sdk(Some("session-token"))).unwrap();
        e.bedrock.retry.base = Duration::from_millis(5);
        e
    }

    /// Titan-like answer: a non-normalized vector whose peak position
    /// encodes the input "t{k}", so order can be checked.
    fn titan(request: &Recorded) -> Reply {
        let body = request.json();
        let text = body["inputText"].as_str().unwrap();
        let dims = body["dimensions"].as_u64().unwrap() as usize;
        let k: usize = text.trim_start_matches('t').parse().unwrap();
        let mut v = vec![0.5f32; dims];
        v[k % dims] = 10.0;
        Reply::json(200, json!({"embedding": v, "inputTextTokenCount": 2}))
    }

    #[tokio::test]
    async fn signs_requests_and_keeps_order() {
        let server = TestServer::start(|req, _| titan(req)).await;
        let e = embedder(&server, 256);
        let texts: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        let out = e.embed(&texts).await.unwrap();
        assert_eq!(out.len(), 20);
        for (k, v) in out.iter().enumerate() {
            assert_eq!(v.len(), 256);
            let peak = (0..256).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
            assert_eq!(peak, k, "vector {k} out of order");
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }

        let requests = server.requests();
        assert_eq!(requests.len(), 20, "one request per text");
        let mut seen: Vec<String> = requests
            .iter()
            .map(|r| r.json()["inputText"].as_str().unwrap().to_owned())
            .collect();
        seen.sort();
        let mut want = texts.clone();
        want.sort();
        assert_eq!(seen, want);

        let r = &requests[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
        let body = r.json();
        assert_eq!(body["dimensions"], json!(256));
        assert_eq!(body["normalize"], json!(true));
        assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-amz-security-token"), Some("session-token"));
        let date = r.header("x-amz-date").unwrap();
        assert_eq!(date.len(), 16, "{date}");
        let authorization = r.header("authorization").unwrap();
        assert!(authorization.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={KEY_ID}/{}/eu-west-1/bedrock/aws4_request, SignedHeaders=",
            &date[..8]
        )), "{authorization}");
        assert!(authorization.contains("host"), "{authorization}");
        assert!(authorization.contains("x-amz-date"), "{authorization}");
        for r in &requests {
            assert_eq!(
                r.header("authorization").unwrap(),
                expected_authorization(
                    r,
                    &server.url(),
                    Credentials::new(KEY_ID, SECRET, Some("session-token".into()), None, "t"),
                    "eu-west-1"
                ),
                "the signature must cover what was sent"
            );
        }
    }

    #[tokio::test]
    async fn throttling_is_retried_and_validation_is_not() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let server = TestServer::start(move |req, _| {
            let text = req.json()["inputText"].as_str().unwrap().to_owned();
            if text == "t1" && counter.fetch_add(1, Ordering::SeqCst) == 0 {
                return Reply::json(
                    429,
                    json!({"message": "Too many requests, please wait before trying again."}),
                )
                .header(
                    "x-amzn-ErrorType",
                    "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
                );
            }
            titan(req)
        })
        .await;
        let e = embedder(&server, 512);
        let out = e.embed(&["t0".into(), "t1".into()]).await.unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].len(), 512);
        assert_eq!(server.requests().len(), 3, "t1 retried once");

        let server = TestServer::start(|_, _| {
            Reply::json(
                400,
                json!({"message": "Malformed input request: expected minLength: 1"}),
            )
            .header(
                "x-amzn-ErrorType",
                "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            )
        })
        .await;
        let e = embedder(&server, 256);
        let err = e.embed(&["t0".into()]).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Failed(m) if m.contains("ValidationException") && m.contains("Malformed input")),
            "{err}"
        );
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn wrong_dimensions_and_empty_text_fail() {
        let server = TestServer::start(|_, _| {
            Reply::json(
                200,
                json!({"embedding": vec![0.1f32; 1024], "inputTextTokenCount": 1}),
            )
        })
        .await;
        let e = embedder(&server, 256);
        let err = e.embed(&["t0".into()]).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Failed(m) if m.contains("1024-dimensional") && m.contains("is 256")),
            "{err}"
        );
        let err = e.embed(&["t0".into(), String::new()]).await.unwrap_err();
        assert!(matches!(err, EmbedError::Failed(m) if m.contains("input 1 is empty")));
        assert_eq!(server.requests().len(), 1);
    }

    #[test]
    fn configuration() {
        let c = config(EmbeddingProvider::Bedrock, 1024);
        let e = BedrockEmbedder::from_config(&c, &sdk(None)).unwrap();
        assert_eq!(
            e.bedrock.endpoint,
            "https://bedrock-runtime.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            e.bedrock.path,
            "/model/amazon.titan-embed-text-v2%3A0/invoke"
        );
        assert_eq!(e.dimensions(), 1024);

        // The SDK's endpoint override (AWS_ENDPOINT_URL) applies.
        let aws = sdk(None)
            .to_builder()
            .endpoint_url("http://localhost:4566")
            .build();
        let e = BedrockEmbedder::from_config(&c, &aws).unwrap();
        assert_eq!(e.bedrock.endpoint, "http://localhost:4566");

        let mut arn = c.clone();
        arn.model =
            Some("arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.amazon.titan".into());
        let e = BedrockEmbedder::from_config(&arn, &sdk(None)).unwrap();
        assert_eq!(
            e.bedrock.path,
            "/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A123456789012%3Ainference-profile%2Feu.amazon.titan/invoke"
        );

        let bad = config(EmbeddingProvider::Bedrock, 384);
        assert!(BedrockEmbedder::from_config(&bad, &sdk(None)).is_err());
        let no_credentials = SdkConfig::builder()
            .region(Region::new("us-east-1"))
            .build();
        assert!(BedrockEmbedder::from_config(&c, &no_credentials).is_err());
    }
}
