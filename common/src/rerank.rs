//! Reranking: a cross-encoder reorders the top fused candidates by how
//! well each answers the question. One trait, three contracts:
//!
//! - [`CohereRerank`]: Cohere's `/rerank` (`{model, query, documents,
//!   top_n}` → `{results: [{index, relevance_score}]}`), which llama.cpp's
//!   server, Infinity and Cohere itself speak;
//! - [`TeiRerank`]: Text Embeddings Inference's `/rerank` (`{query,
//!   texts}` → `[{index, score}]`);
//! - [`BedrockRerank`]: Bedrock's `Rerank` (bedrock-agent-runtime), SigV4.
//!
//! A reranker that fails or times out never fails the question: the
//! caller keeps the fused order and says so in `timings`.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use crate::config::{RerankConfig, RerankProvider, Secret};
use crate::transport::{ProviderError, RetryPolicy, http_client};

/// Why a reranking was not done (the fused order stands).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RerankError(pub String);

impl From<ProviderError> for RerankError {
    fn from(e: ProviderError) -> Self {
        Self(e.message)
    }
}

/// Candidates reranked, best first: `(index into the given documents,
/// relevance score)`.
pub type Ranking = Vec<(usize, f64)>;

pub trait Reranker: Send + Sync {
    fn name(&self) -> &str;
    /// `documents` ordered by relevance to `query` (every index once).
    fn rerank<'a>(
        &'a self,
        query: &'a str,
        documents: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Ranking, RerankError>>;
}

/// The configured reranker, if any. `aws` is needed for Bedrock only.
pub fn build(
    config: &RerankConfig,
    aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Option<Arc<dyn Reranker>>> {
    anyhow::ensure!(
        !config.timeout.is_zero(),
        "RERANK_TIMEOUT_MS must be positive"
    );
    // The caller bounds the call with RERANK_TIMEOUT_MS (and reports a
    // timeout as such); the client's own bound only backs it up.
    let timeout = config.timeout * 2;
    let url = |path: &str| -> anyhow::Result<String> {
        let base = config
            .base_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| anyhow::anyhow!("the reranker needs RERANK_BASE_URL"))?;
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "RERANK_BASE_URL must be an http(s) URL, got {base:?}"
        );
        Ok(format!("{}{path}", base.trim_end_matches('/')))
    };
    let model = || config.model.clone().filter(|m| !m.trim().is_empty());
    Ok(match config.provider {
        RerankProvider::None => None,
        RerankProvider::Cohere => Some(Arc::new(CohereRerank {
            client: http_client(timeout)?,
            url: url("/rerank")?,
            model: model(),
            api_key: config.api_key.clone().filter(|k| !k.expose().is_empty()),
        })),
        RerankProvider::Tei => Some(Arc::new(TeiRerank {
            client: http_client(timeout)?,
            url: url("/rerank")?,
            api_key: config.api_key.clone().filter(|k| !k.expose().is_empty()),
        })),
        RerankProvider::Bedrock => {
            let aws = aws.ok_or_else(|| {
                anyhow::anyhow!("the bedrock reranker needs the AWS SDK configuration")
            })?;
            let model = model().ok_or_else(|| {
                anyhow::anyhow!("the bedrock reranker needs RERANK_MODEL (e.g. amazon.rerank-v1:0)")
            })?;
            Some(Arc::new(BedrockRerank::new(config, aws, model)?))
        }
    })
}

/// Checks a provider's answer: every index given once and in range, in
/// the provider's order (best first); indices it left out follow in the
/// fused order, so nothing retrieved is lost.
fn complete(mut ranked: Vec<(usize, f64)>, n: usize) -> Result<Ranking, RerankError> {
    let mut seen = vec![false; n];
    for (index, _) in &ranked {
        if *index >= n || std::mem::replace(&mut seen[*index], true) {
            return Err(RerankError(format!(
                "reranker: index {index} out of range or repeated"
            )));
        }
    }
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.extend(
        seen.iter()
            .enumerate()
            .filter(|(_, s)| !**s)
            .map(|(i, _)| (i, f64::NEG_INFINITY)),
    );
    Ok(ranked)
}

pub struct CohereRerank {
    client: reqwest::Client,
    url: String,
    model: Option<String>,
    api_key: Option<Secret>,
}

#[derive(Deserialize)]
struct CohereResponse {
    results: Vec<CohereResult>,
}

#[derive(Deserialize)]
struct CohereResult {
    index: usize,
    relevance_score: f64,
}

impl Reranker for CohereRerank {
    fn name(&self) -> &str {
        self.model.as_deref().unwrap_or("rerank")
    }

    fn rerank<'a>(
        &'a self,
        query: &'a str,
        documents: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Ranking, RerankError>> {
        Box::pin(async move {
            let mut body = serde_json::json!({
                "query": query, "documents": documents, "top_n": documents.len()
            });
            if let Some(model) = &self.model {
                body["model"] = model.as_str().into();
            }
            // No retry: a slow reranker costs the question its time budget.
            let response: CohereResponse = RetryPolicy::new(0)
                .post_json(
                    "rerank",
                    &self.client,
                    &self.url,
                    self.api_key.as_ref(),
                    &body,
                )
                .await?;
            complete(
                response
                    .results
                    .into_iter()
                    .map(|r| (r.index, r.relevance_score))
                    .collect(),
                documents.len(),
            )
        })
    }
}

pub struct TeiRerank {
    client: reqwest::Client,
    url: String,
    api_key: Option<Secret>,
}

#[derive(Deserialize)]
struct TeiResult {
    index: usize,
    score: f64,
}

impl Reranker for TeiRerank {
    fn name(&self) -> &str {
        "tei"
    }

    fn rerank<'a>(
        &'a self,
        query: &'a str,
        documents: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Ranking, RerankError>> {
        Box::pin(async move {
            let body = serde_json::json!({ "query": query, "texts": documents, "truncate": true });
            let response: Vec<TeiResult> = RetryPolicy::new(0)
                .post_json(
                    "rerank",
                    &self.client,
                    &self.url,
                    self.api_key.as_ref(),
                    &body,
                )
                .await?;
            complete(
                response.into_iter().map(|r| (r.index, r.score)).collect(),
                documents.len(),
            )
        })
    }
}

/// Bedrock's `Rerank` (bedrock-agent-runtime) with a reranking model
/// (`amazon.rerank-v1:0`, `cohere.rerank-v3-5:0`).
pub struct BedrockRerank {
    client: reqwest::Client,
    signer: crate::transport::SigV4Signer,
    url: String,
    model: String,
    model_arn: String,
}

impl BedrockRerank {
    fn new(
        config: &RerankConfig,
        aws: &aws_config::SdkConfig,
        model: String,
    ) -> anyhow::Result<Self> {
        let signer =
            crate::transport::SigV4Signer::from_sdk(aws, "bedrock", "the bedrock reranker")?;
        let region = signer.region().to_owned();
        let base = config
            .base_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("https://bedrock-agent-runtime.{region}.amazonaws.com"));
        let model_arn = if model.starts_with("arn:") {
            model.clone()
        } else {
            format!("arn:aws:bedrock:{region}::foundation-model/{model}")
        };
        Ok(Self {
            client: http_client(config.timeout * 2)?,
            signer,
            url: format!("{base}/rerank"),
            model,
            model_arn,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockResponse {
    results: Vec<BedrockResult>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockResult {
    index: usize,
    relevance_score: f64,
}

impl Reranker for BedrockRerank {
    fn name(&self) -> &str {
        &self.model
    }

    fn rerank<'a>(
        &'a self,
        query: &'a str,
        documents: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Ranking, RerankError>> {
        Box::pin(async move {
            let sources: Vec<serde_json::Value> = documents
                .iter()
                .map(|text| {
                    serde_json::json!({
                        "type": "INLINE",
                        "inlineDocumentSource": { "type": "TEXT", "textDocument": { "text": text } }
                    })
                })
                .collect();
            let body = serde_json::json!({
                "queries": [{ "type": "TEXT", "textQuery": { "text": query } }],
                "sources": sources,
                "rerankingConfiguration": {
                    "type": "BEDROCK_RERANKING_MODEL",
                    "bedrockRerankingConfiguration": {
                        "numberOfResults": documents.len(),
                        "modelConfiguration": { "modelArn": self.model_arn }
                    }
                }
            });
            let bytes =
                serde_json::to_vec(&body).map_err(|e| RerankError(format!("rerank: {e}")))?;
            let response: BedrockResponse = RetryPolicy::new(0)
                .run("bedrock rerank", || async {
                    let request = self
                        .signer
                        .post_json(&self.client, &self.url, &bytes)
                        .await?;
                    crate::transport::send_json(request).await
                })
                .await?;
            complete(
                response
                    .results
                    .into_iter()
                    .map(|r| (r.index, r.relevance_score))
                    .collect(),
                documents.len(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_config::{Region, SdkConfig};
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use serde_json::json;

    use super::*;
    use crate::test_server::{Reply, TestServer};
    use crate::transport::tests::expected_authorization;

    const KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    #[tokio::test]
    async fn bedrock_rerank_is_signed_and_its_order_wins() {
        let server = TestServer::start(|_, _| {
            // Bedrock's answer: best first, and it may leave some out.
            Reply::json(
                200,
                json!({ "results": [
                    { "index": 2, "relevanceScore": 0.93 },
                    { "index": 0, "relevanceScore": 0.41 }
                ] }),
            )
        })
        .await;
        let config = RerankConfig {
            provider: RerankProvider::Bedrock,
            base_url: Some(server.url()),
            model: Some("amazon.rerank-v1:0".into()),
            api_key: None,
            timeout: Duration::from_secs(5),
            candidates: 50,
            default_on: false,
        };
        let credentials = Credentials::new(KEY_ID, SECRET, None, None, "test");
        let aws = SdkConfig::builder()
            .region(Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(credentials.clone()))
            .build();
        let reranker = build(&config, Some(&aws)).unwrap().unwrap();
        let ranking = reranker
            .rerank("Which river?", &["Paris", "Berlin", "The Seine"])
            .await
            .unwrap();
        let order: Vec<usize> = ranking.iter().map(|r| r.0).collect();
        assert_eq!(order, [2, 0, 1], "the one left out follows");
        assert_eq!(ranking[0].1, 0.93);

        let request = &server.requests()[0];
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/rerank")
        );
        let sources: Vec<serde_json::Value> = ["Paris", "Berlin", "The Seine"]
            .iter()
            .map(|text| {
                json!({
                    "type": "INLINE",
                    "inlineDocumentSource": { "type": "TEXT", "textDocument": { "text": text } }
                })
            })
            .collect();
        assert_eq!(
            request.json(),
            json!({
                "queries": [{ "type": "TEXT", "textQuery": { "text": "Which river?" } }],
                "sources": sources,
                "rerankingConfiguration": {
                    "type": "BEDROCK_RERANKING_MODEL",
                    "bedrockRerankingConfiguration": {
                        "numberOfResults": 3,
                        "modelConfiguration": {
                            "modelArn": "arn:aws:bedrock:eu-west-1::foundation-model/amazon.rerank-v1:0"
                        }
                    }
                }
            })
        );
        assert_eq!(
            request.header("authorization").unwrap(),
            expected_authorization(request, &server.url(), credentials, "eu-west-1"),
            "the signature covers what was sent"
        );
    }

    #[test]
    fn a_ranking_keeps_every_candidate_once() {
        let ranked = complete(vec![(2, 0.1), (0, 0.9)], 4).unwrap();
        let order: Vec<usize> = ranked.iter().map(|r| r.0).collect();
        assert_eq!(order, [0, 2, 1, 3]);
        assert!(complete(vec![(4, 0.1)], 4).is_err());
        assert!(complete(vec![(1, 0.1), (1, 0.2)], 4).is_err());
    }
}
