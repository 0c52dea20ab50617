//! Embeddings: turning chunks and questions into vectors, through one
//! trait with three providers:
//!
//! - [`LocalEmbedder`]: deterministic hashed word and character n-grams,
//!   no network, no model files (the default);
//! - [`OpenAiEmbedder`]: any OpenAI-compatible `/embeddings` endpoint;
//! - [`BedrockEmbedder`]: Amazon Titan Text Embeddings v2 on Bedrock,
//!   signed with SigV4.
//!
//! Whatever the provider, [`Embedder::embed`] returns one L2-normalized,
//! finite, non-zero vector of exactly [`Embedder::dimensions`] floats per
//! input text, in input order, and accepts any number of texts (providers
//! split them into batches of at most [`Embedder::max_batch`] themselves).
//! Vectors never being zero keeps pgvector's cosine distance defined.

use std::sync::Arc;

use anyhow::Context;
use futures::future::BoxFuture;

use crate::config::{EmbeddingConfig, EmbeddingProvider};

mod bedrock;
mod local;
mod openai;

pub use bedrock::BedrockEmbedder;
pub use local::LocalEmbedder;
pub use openai::OpenAiEmbedder;

/// Why an embedding request failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// Worth retrying later (429, 5xx, timeouts, connection errors). The
    /// providers have already retried `max_retries` times when they return it.
    #[error("embedding provider unavailable: {0}")]
    Unavailable(String),
    /// Retrying will not help (bad request, auth, wrong dimensions).
    #[error("embedding failed: {0}")]
    Failed(String),
}

impl From<crate::transport::ProviderError> for EmbedError {
    fn from(e: crate::transport::ProviderError) -> Self {
        if e.retryable {
            EmbedError::Unavailable(e.message)
        } else {
            EmbedError::Failed(e.message)
        }
    }
}

impl EmbedError {
    /// Whether the caller may retry the same texts later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, EmbedError::Unavailable(_))
    }
}

/// Any embedding model. Vectors are L2-normalized, `dimensions()` long,
/// one per input text, in order.
pub trait Embedder: Send + Sync {
    /// Length of every vector `embed` returns.
    fn dimensions(&self) -> usize;
    /// Whether embedding stays in this process (no network call), so a
    /// caller may hold a database transaction across it.
    fn in_process(&self) -> bool {
        false
    }
    /// Most texts one provider request takes. `embed` accepts more (it
    /// splits them itself); callers may use it to size their own batches.
    fn max_batch(&self) -> usize;
    /// One unit-length vector of `dimensions()` finite floats per text, in
    /// the order of `texts`. Either every text gets its vector or the call
    /// fails as a whole.
    fn embed<'a>(&'a self, texts: &'a [String])
    -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>>;
    /// The vector of a question. Asymmetric models embed questions and
    /// passages differently; by default a question is embedded like a
    /// passage.
    fn embed_query<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, EmbedError>> {
        Box::pin(async move {
            let texts = [text.to_owned()];
            self.embed(&texts)
                .await?
                .pop()
                .ok_or_else(|| EmbedError::Failed("no vector for the question".into()))
        })
    }
    /// The vectors of several questions (e.g. a scheme's labels), as
    /// `embed_query` gives them. By default one `embed_query` after
    /// another; providers that batch questions override it.
    fn embed_queries<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(texts.len());
            for text in texts {
                out.push(self.embed_query(text).await?);
            }
            Ok(out)
        })
    }
}

/// The configured provider. `aws` is needed for Bedrock only (region,
/// credentials and the `AWS_ENDPOINT_URL` override come from it).
///
/// Fails on configuration a provider cannot work with (zero dimensions, an
/// OpenAI provider without base URL or model, Bedrock without AWS
/// configuration, region or credentials, a zero timeout).
pub fn build(
    config: &EmbeddingConfig,
    aws: Option<&aws_config::SdkConfig>,
) -> anyhow::Result<Arc<dyn Embedder>> {
    anyhow::ensure!(
        config.dimensions > 0,
        "EMBEDDING_DIMENSIONS must be positive"
    );
    Ok(match config.provider {
        EmbeddingProvider::Local => Arc::new(LocalEmbedder::new(config.dimensions)),
        EmbeddingProvider::OpenAi => Arc::new(OpenAiEmbedder::from_config(config)?),
        EmbeddingProvider::Bedrock => {
            let aws =
                aws.context("the bedrock embedding provider needs the AWS SDK configuration")?;
            Arc::new(BedrockEmbedder::from_config(config, aws)?)
        }
    })
}

/// Scales `v` to unit length in place. Returns `false`, leaving `v`
/// untouched, when it cannot be normalized (all zeros, or not finite).
pub(crate) fn l2_normalize(v: &mut [f32]) -> bool {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if !(norm.is_finite() && norm > 1e-12) {
        return false;
    }
    for x in v.iter_mut() {
        *x = (f64::from(*x) / norm) as f32;
    }
    true
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Secret;

    pub(crate) fn config(provider: EmbeddingProvider, dimensions: usize) -> EmbeddingConfig {
        EmbeddingConfig {
            query_model: None,
            provider,
            dimensions,
            model: None,
            base_url: None,
            api_key: None,
            batch_size: 64,
            timeout: Duration::from_secs(5),
            max_retries: 3,
        }
    }

    #[test]
    fn normalize_rejects_zero_and_nan() {
        let mut zero = vec![0.0f32; 4];
        assert!(!l2_normalize(&mut zero));
        let mut nan = vec![1.0, f32::NAN];
        assert!(!l2_normalize(&mut nan));
        let mut v = vec![3.0, 4.0];
        assert!(l2_normalize(&mut v));
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }

    #[tokio::test]
    async fn build_local_by_default() {
        let embedder = build(&config(EmbeddingProvider::Local, 384), None).unwrap();
        assert_eq!(embedder.dimensions(), 384);
        let out = embedder.embed(&["hello world".to_owned()]).await.unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 384);
    }

    #[test]
    fn build_rejects_incomplete_configuration() {
        let mut openai = config(EmbeddingProvider::OpenAi, 384);
        assert!(build(&openai, None).is_err(), "no base url or model");
        openai.base_url = Some("http://127.0.0.1:9/v1".into());
        openai.model = Some("m".into());
        openai.api_key = Some(Secret::new("k"));
        assert!(build(&openai, None).is_ok());

        let bedrock = config(EmbeddingProvider::Bedrock, 256);
        let err = build(&bedrock, None).err().unwrap().to_string();
        assert!(err.contains("AWS"), "{err}");
        let no_region = aws_config::SdkConfig::builder().build();
        assert!(build(&bedrock, Some(&no_region)).is_err());

        assert!(build(&config(EmbeddingProvider::Local, 0), None).is_err());
    }
}
