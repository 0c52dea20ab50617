//! Any OpenAI-compatible embeddings endpoint (OpenAI, Azure-style proxies,
//! vLLM, llama.cpp, text-embeddings-inference, Ollama's `/v1`, LiteLLM…).

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{EmbedError, Embedder, l2_normalize};
use crate::config::{EmbeddingConfig, Secret};
use crate::transport::{RetryPolicy, http_client};

/// `POST {base_url}/embeddings` with `{"model", "input": [...]}`.
///
/// Guarantees: vectors come back in input order (the response is sorted by
/// `index`, which must cover every input exactly once), each exactly
/// `dimensions` long (a model returning another length is
/// [`EmbedError::Failed`], naming both numbers) and re-normalized to unit
/// length. Texts are sent in sequential requests of at most `max_batch()`.
/// 408, 429, 5xx, timeouts and connection errors are retried up to
/// `max_retries` times with exponential backoff and jitter, or after the
/// server's `Retry-After` (seconds, capped at 20 s); other 4xx answers
/// fail at once with the server's message. Empty strings are rejected
/// before any request (OpenAI answers 400 to them).
#[derive(Debug)]
pub struct OpenAiEmbedder {
    client: reqwest::Client,
    url: String,
    model: String,
    /// Model for questions, when it differs.
    query_model: Option<String>,
    api_key: Option<Secret>,
    dimensions: usize,
    batch: usize,
    send_dimensions: bool,
    retry: RetryPolicy,
}

impl OpenAiEmbedder {
    /// Most inputs one request may carry (OpenAI's limit).
    pub const MAX_BATCH_CAP: usize = 2048;

    /// From the embedding configuration: `base_url` (e.g.
    /// `http://127.0.0.1:8080/v1`, trailing slash allowed) and `model` are
    /// required; `api_key` becomes a bearer token; the batch is
    /// `batch_size` capped at [`Self::MAX_BATCH_CAP`]; `timeout` bounds each
    /// request.
    ///
    /// The `dimensions` request field is sent only to OpenAI's
    /// `text-embedding-3-*` models, which can shorten their vectors; other
    /// servers often reject it. Override with [`Self::send_dimensions`].
    pub fn from_config(config: &EmbeddingConfig) -> anyhow::Result<Self> {
        let base = config
            .base_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("the openai embedding provider needs EMBEDDING_BASE_URL")
            })?;
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "EMBEDDING_BASE_URL must be an http(s) URL, got {base:?}"
        );
        let model = config
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("the openai embedding provider needs EMBEDDING_MODEL")
            })?;
        anyhow::ensure!(
            config.dimensions > 0,
            "EMBEDDING_DIMENSIONS must be positive"
        );
        anyhow::ensure!(
            !config.timeout.is_zero(),
            "EMBEDDING_TIMEOUT_SECONDS must be positive"
        );
        Ok(Self {
            client: http_client(config.timeout)?,
            url: format!("{}/embeddings", base.trim_end_matches('/')),
            model: model.to_owned(),
            query_model: config
                .query_model
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty() && *m != model)
                .map(str::to_owned),
            api_key: config.api_key.clone().filter(|k| !k.expose().is_empty()),
            dimensions: config.dimensions,
            batch: config.batch_size.clamp(1, Self::MAX_BATCH_CAP),
            send_dimensions: model.starts_with("text-embedding-3"),
            retry: RetryPolicy::new(config.max_retries),
        })
    }

    /// Whether requests carry `"dimensions": <configured dimensions>`, for
    /// servers that can shorten vectors (Matryoshka models).
    pub fn send_dimensions(mut self, send: bool) -> Self {
        self.send_dimensions = send;
        self
    }

    async fn embed_batch(
        &self,
        texts: &[String],
        model: &str,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let request = Request {
            model,
            input: texts,
            dimensions: self.send_dimensions.then_some(self.dimensions),
        };
        let response: Response = self
            .retry
            .post_json(
                "openai embeddings",
                &self.client,
                &self.url,
                self.api_key.as_ref(),
                &request,
            )
            .await?;
        self.check(response, texts.len())
    }

    /// Orders by `index` and validates count, coverage, length and norm.
    fn check(&self, response: Response, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let failed = |m: String| Err(EmbedError::Failed(format!("openai embeddings: {m}")));
        if response.data.len() != expected {
            return failed(format!(
                "sent {expected} inputs but got {} embeddings back",
                response.data.len()
            ));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; expected];
        for item in response.data {
            if item.embedding.len() != self.dimensions {
                return failed(format!(
                    "model {} returned {}-dimensional vectors but EMBEDDING_DIMENSIONS is {}",
                    self.model,
                    item.embedding.len(),
                    self.dimensions
                ));
            }
            let Some(slot) = out.get_mut(item.index) else {
                return failed(format!("embedding index {} out of range", item.index));
            };
            if slot.is_some() {
                return failed(format!("embedding index {} returned twice", item.index));
            }
            let mut vector = item.embedding;
            if !l2_normalize(&mut vector) {
                return failed(format!(
                    "the vector for input {} is zero or not finite",
                    item.index
                ));
            }
            *slot = Some(vector);
        }
        // Count matched and no index repeated, so every slot is filled.
        Ok(out.into_iter().flatten().collect())
    }
}

impl Embedder for OpenAiEmbedder {
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
                    "openai embeddings: input {i} is empty"
                )));
            }
            let mut out = Vec::with_capacity(texts.len());
            for batch in texts.chunks(self.batch) {
                out.extend(self.embed_batch(batch, &self.model).await?);
            }
            Ok(out)
        })
    }

    fn embed_query<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, EmbedError>> {
        Box::pin(async move {
            if text.is_empty() {
                return Err(EmbedError::Failed(
                    "openai embeddings: the question is empty".into(),
                ));
            }
            let model = self.query_model.as_deref().unwrap_or(&self.model);
            self.embed_batch(&[text.to_owned()], model)
                .await?
                .pop()
                .ok_or_else(|| EmbedError::Failed("openai embeddings: no vector".into()))
        })
    }

    fn embed_queries<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            if let Some(i) = texts.iter().position(|t| t.is_empty()) {
                return Err(EmbedError::Failed(format!(
                    "openai embeddings: question {i} is empty"
                )));
            }
            let model = self.query_model.as_deref().unwrap_or(&self.model);
            let mut out = Vec::with_capacity(texts.len());
            for batch in texts.chunks(self.batch) {
                out.extend(self.embed_batch(batch, model).await?);
            }
            Ok(out)
        })
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::*;
    use crate::config::EmbeddingProvider;
    use crate::embed::tests::config;
    use crate::test_server::{Reply, TestServer};

    const DIMS: usize = 4;

    fn embedder(server: &TestServer, batch_size: usize) -> OpenAiEmbedder {
        let mut c = config(EmbeddingProvider::OpenAi, DIMS);
        c.base_url = Some(format!("{}/v1/", server.url()));
        c.model = Some("test-model".into());
        c.api_key = Some(Secret::new("sk-test"));
        c.batch_size = batch_size;
        c.max_retries = 3;
        let mut e = OpenAiEmbedder::from_config(&c).unwrap();
        e.retry.base = Duration::from_millis(5);
        e
    }

    /// The embedding for input "t{k}": 2.0 at position k % DIMS, 1.0 at the
    /// next one (so normalization is observable).
    fn vector_for(text: &str) -> Vec<f32> {
        let k: usize = text.trim_start_matches('t').parse().unwrap();
        let mut v = vec![0.0; DIMS];
        v[k % DIMS] = 2.0;
        v[(k + 1) % DIMS] += 1.0;
        v
    }

    /// Answers with one embedding per input, listed in reverse order.
    fn happy(body: &Value) -> Reply {
        let inputs = body["input"].as_array().unwrap();
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector_for(t.as_str().unwrap())}))
            .collect();
        Reply::json(
            200,
            json!({"object": "list", "data": data, "model": "test-model", "usage": {"prompt_tokens": 3, "total_tokens": 3}}),
        )
    }

    fn texts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    #[tokio::test]
    async fn happy_path_orders_by_index_and_batches() {
        let server = TestServer::start(|req, _| happy(&req.json())).await;
        let e = embedder(&server, 2);
        assert_eq!(e.max_batch(), 2);
        let inputs = texts(5);
        let out = e.embed(&inputs).await.unwrap();
        assert_eq!(out.len(), 5);
        for (text, v) in inputs.iter().zip(&out) {
            let mut want = vector_for(text);
            assert!(l2_normalize(&mut want));
            assert_eq!(v, &want, "{text}");
        }
        let requests = server.requests();
        assert_eq!(requests.len(), 3, "5 texts in batches of 2");
        let first = &requests[0];
        assert_eq!(first.method, "POST");
        assert_eq!(first.path, "/v1/embeddings");
        assert_eq!(first.header("authorization"), Some("Bearer sk-test"));
        assert_eq!(first.header("content-type"), Some("application/json"));
        assert_eq!(
            first.json(),
            json!({"model": "test-model", "input": ["t0", "t1"]})
        );
        assert_eq!(requests[2].json()["input"], json!(["t4"]));
    }

    #[tokio::test]
    async fn questions_use_the_query_model_when_one_is_set() {
        let server = TestServer::start(|req, _| happy(&req.json())).await;
        let plain = embedder(&server, 8);
        plain.embed_query("t1").await.unwrap();
        let mut c = config(EmbeddingProvider::OpenAi, DIMS);
        c.base_url = Some(server.url());
        c.model = Some("test-model".into());
        c.query_model = Some("test-model-query".into());
        let asymmetric = OpenAiEmbedder::from_config(&c).unwrap();
        let v = asymmetric.embed_query("t2").await.unwrap();
        assert_eq!(v.len(), DIMS);
        asymmetric.embed(&texts(1)).await.unwrap();
        let models: Vec<Value> = server
            .requests()
            .iter()
            .map(|r| r.json()["model"].clone())
            .collect();
        assert_eq!(
            models,
            [
                json!("test-model"),
                json!("test-model-query"),
                json!("test-model")
            ]
        );
    }

    #[tokio::test]
    async fn several_questions_go_in_batches_with_the_query_model() {
        let server = TestServer::start(|req, _| happy(&req.json())).await;
        let mut e = embedder(&server, 2);
        e.query_model = Some("test-model-query".into());
        let inputs = texts(3);
        let out = e.embed_queries(&inputs).await.unwrap();
        for (text, v) in inputs.iter().zip(&out) {
            assert_eq!(v, &e.embed_query(text).await.unwrap(), "{text}");
        }
        let requests = server.requests();
        assert_eq!(
            requests[0].json(),
            json!({"model": "test-model-query", "input": ["t0", "t1"]})
        );
        assert_eq!(
            requests[1].json(),
            json!({"model": "test-model-query", "input": ["t2"]})
        );
        assert_eq!(
            requests.len(),
            2 + 3,
            "two batches, then one call per question"
        );
        assert!(e.embed_queries(&["".to_owned()]).await.is_err());
        assert_eq!(
            server.requests().len(),
            5,
            "an empty question is refused before sending"
        );
    }

    #[tokio::test]
    async fn dimensions_field_only_when_enabled() {
        let server = TestServer::start(|req, _| happy(&req.json())).await;
        let e = embedder(&server, 8).send_dimensions(true);
        e.embed(&texts(1)).await.unwrap();
        assert_eq!(server.requests()[0].json()["dimensions"], json!(DIMS));
    }

    #[tokio::test]
    async fn retry_after_is_honoured_on_429() {
        let server = TestServer::start(|req, n| {
            if n == 0 {
                Reply::json(429, json!({"error": {"message": "Rate limit reached"}}))
                    .header("Retry-After", "1")
            } else {
                happy(&req.json())
            }
        })
        .await;
        let e = embedder(&server, 8);
        let start = Instant::now();
        let out = e.embed(&texts(2)).await.unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(server.requests().len(), 2, "retried once");
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "waited for Retry-After"
        );
    }

    #[tokio::test]
    async fn server_errors_are_retried() {
        let server = TestServer::start(|req, n| {
            if n < 2 {
                Reply::json(500, json!({"error": {"message": "boom"}}))
            } else {
                happy(&req.json())
            }
        })
        .await;
        let e = embedder(&server, 8);
        assert_eq!(e.embed(&texts(3)).await.unwrap().len(), 3);
        assert_eq!(server.requests().len(), 3);
    }

    #[tokio::test]
    async fn retries_run_out_as_unavailable() {
        let server = TestServer::start(|_, _| Reply::text(503, "overloaded")).await;
        let e = embedder(&server, 8);
        let err = e.embed(&texts(1)).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Unavailable(m) if m.contains("503") && m.contains("overloaded")),
            "{err}"
        );
        assert_eq!(server.requests().len(), 4, "1 attempt + 3 retries");
    }

    #[tokio::test]
    async fn client_errors_fail_without_retry() {
        let server = TestServer::start(|_, _| {
            Reply::json(
                400,
                json!({"error": {"message": "This model's maximum context length is 8192 tokens", "type": "invalid_request_error"}}),
            )
        })
        .await;
        let e = embedder(&server, 8);
        let err = e.embed(&texts(1)).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Failed(m) if m.contains("400") && m.contains("maximum context length")),
            "{err}"
        );
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn wrong_dimensions_fail() {
        let server = TestServer::start(|_, _| {
            Reply::json(
                200,
                json!({"data": [{"index": 0, "embedding": [0.1, 0.2, 0.3]}]}),
            )
        })
        .await;
        let e = embedder(&server, 8);
        let err = e.embed(&texts(1)).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Failed(m) if m.contains("returned 3-dimensional") && m.contains("EMBEDDING_DIMENSIONS is 4")),
            "{err}"
        );
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn malformed_responses_fail() {
        for body in [
            json!({"data": [{"index": 0, "embedding": [1.0, 0.0, 0.0, 0.0]}]}), // 1 of 2
            json!({"data": [{"index": 0, "embedding": [1.0, 0.0, 0.0, 0.0]}, {"index": 0, "embedding": [1.0, 0.0, 0.0, 0.0]}]}),
            json!({"data": [{"index": 0, "embedding": [1.0, 0.0, 0.0, 0.0]}, {"index": 5, "embedding": [1.0, 0.0, 0.0, 0.0]}]}),
            json!({"data": [{"index": 0, "embedding": [1.0, 0.0, 0.0, 0.0]}, {"index": 1, "embedding": [0.0, 0.0, 0.0, 0.0]}]}),
            json!({"unexpected": true}),
        ] {
            let server = TestServer::start(move |_, _| Reply::json(200, body.clone())).await;
            let err = embedder(&server, 8).embed(&texts(2)).await.unwrap_err();
            assert!(matches!(err, EmbedError::Failed(_)), "{err}");
        }
    }

    #[tokio::test]
    async fn empty_input_fails_before_any_request() {
        let server = TestServer::start(|req, _| happy(&req.json())).await;
        let e = embedder(&server, 8);
        let err = e.embed(&["t0".into(), String::new()]).await.unwrap_err();
        assert!(matches!(err, EmbedError::Failed(m) if m.contains("input 1 is empty")));
        assert!(server.requests().is_empty());
        assert!(e.embed(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn timeouts_and_refused_connections_are_unavailable() {
        let server =
            TestServer::start(|_, _| Reply::json(200, json!({})).delay(Duration::from_secs(5)))
                .await;
        let mut c = config(EmbeddingProvider::OpenAi, DIMS);
        c.base_url = Some(format!("{}/v1", server.url()));
        c.model = Some("m".into());
        c.timeout = Duration::from_millis(200);
        c.max_retries = 1;
        let mut e = OpenAiEmbedder::from_config(&c).unwrap();
        e.retry.base = Duration::from_millis(1);
        let err = e.embed(&texts(1)).await.unwrap_err();
        assert!(matches!(err, EmbedError::Unavailable(_)), "{err}");
        assert_eq!(server.requests().len(), 2);

        // A port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        c.base_url = Some(format!("http://127.0.0.1:{port}/v1"));
        let mut e = OpenAiEmbedder::from_config(&c).unwrap();
        e.retry.base = Duration::from_millis(1);
        let err = e.embed(&texts(1)).await.unwrap_err();
        assert!(matches!(err, EmbedError::Unavailable(_)), "{err}");
    }
}
