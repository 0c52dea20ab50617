//! What a function builds once per container and every invocation shares.

use sqlx::PgPool;
use tokio::sync::OnceCell;

use crate::auth::Auth;
use crate::config::Config;
use crate::queue::Queue;
use crate::storage::Bucket;

/// Config, a lazily connected pool, the token signer/verifier, and AWS
/// clients created on first use (a function that never touches S3 never
/// pays for building its client).
pub struct State {
    pub config: Config,
    pub db: PgPool,
    pub auth: Auth,
    aws: OnceCell<aws_config::SdkConfig>,
    s3: OnceCell<aws_sdk_s3::Client>,
    sqs: OnceCell<aws_sdk_sqs::Client>,
    embedder: OnceCell<std::sync::Arc<dyn crate::embed::Embedder>>,
    chat_model: OnceCell<std::sync::Arc<dyn crate::chat::ChatModel>>,
    mailer: OnceCell<std::sync::Arc<dyn crate::mail::Mailer>>,
    reranker: OnceCell<Option<std::sync::Arc<dyn crate::rerank::Reranker>>>,
}

impl State {
    /// Builds the state without any network I/O. Must run inside a Tokio runtime.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let db = crate::db::lazy_pool(&config)?;
        Self::with_pool(config, db)
    }

    /// State over an existing pool (tests with a database of their own).
    pub fn with_pool(config: Config, db: PgPool) -> anyhow::Result<Self> {
        let auth = Auth::from_config(&config)?;
        Ok(Self {
            config,
            db,
            auth,
            aws: OnceCell::new(),
            s3: OnceCell::new(),
            sqs: OnceCell::new(),
            embedder: OnceCell::new(),
            chat_model: OnceCell::new(),
            mailer: OnceCell::new(),
            reranker: OnceCell::new(),
        })
    }

    async fn aws(&self) -> &aws_config::SdkConfig {
        self.aws
            .get_or_init(|| sdk_config(self.config.aws_endpoint_url.as_deref()))
            .await
    }

    /// The S3 client; path-style addressing when an endpoint override is set
    /// (local emulators do not resolve bucket subdomains).
    pub async fn s3(&self) -> &aws_sdk_s3::Client {
        self.s3
            .get_or_init(|| async {
                let config = aws_sdk_s3::config::Builder::from(self.aws().await)
                    .force_path_style(self.config.aws_endpoint_url.is_some())
                    .build();
                aws_sdk_s3::Client::from_conf(config)
            })
            .await
    }

    /// The configured embedding provider, built on first use.
    pub async fn embedder(&self) -> anyhow::Result<&std::sync::Arc<dyn crate::embed::Embedder>> {
        self.embedder
            .get_or_try_init(|| async {
                let aws = match self.config.embedding.provider {
                    crate::config::EmbeddingProvider::Bedrock => Some(self.aws().await),
                    _ => None,
                };
                crate::embed::build(&self.config.embedding, aws)
            })
            .await
    }

    /// The configured answer model, built on first use.
    pub async fn chat_model(&self) -> anyhow::Result<&std::sync::Arc<dyn crate::chat::ChatModel>> {
        self.chat_model
            .get_or_try_init(|| async {
                let aws = match self.config.chat.provider {
                    crate::config::ChatProvider::Bedrock => Some(self.aws().await),
                    _ => None,
                };
                crate::chat::build(&self.config.chat, aws)
            })
            .await
    }

    /// The configured reranker (None: `RERANK_PROVIDER=none`), built on first use.
    pub async fn reranker(
        &self,
    ) -> anyhow::Result<Option<&std::sync::Arc<dyn crate::rerank::Reranker>>> {
        let built = self
            .reranker
            .get_or_try_init(|| async {
                let aws = match self.config.rerank.provider {
                    crate::config::RerankProvider::Bedrock => Some(self.aws().await),
                    _ => None,
                };
                crate::rerank::build(&self.config.rerank, aws)
            })
            .await?;
        Ok(built.as_ref())
    }

    /// The configured mail provider, built on first use.
    pub async fn mailer(&self) -> anyhow::Result<&std::sync::Arc<dyn crate::mail::Mailer>> {
        self.mailer
            .get_or_try_init(|| async {
                let aws = match self.config.invitations.mail_provider {
                    crate::config::MailProvider::Ses => Some(self.aws().await),
                    crate::config::MailProvider::Log => None,
                };
                crate::mail::build(&self.config.invitations, aws)
            })
            .await
    }

    pub async fn sqs(&self) -> &aws_sdk_sqs::Client {
        self.sqs
            .get_or_init(|| async { aws_sdk_sqs::Client::new(self.aws().await) })
            .await
    }

    /// The upload bucket (`BUCKET_NAME`).
    pub async fn bucket(&self) -> anyhow::Result<Bucket<'_>> {
        let Some(name) = &self.config.bucket_name else {
            anyhow::bail!("BUCKET_NAME is not set");
        };
        Ok(Bucket::new(self.s3().await, name))
    }

    /// The ingest queue (`INGEST_QUEUE_URL`).
    pub async fn ingest_queue(&self) -> anyhow::Result<Queue<'_>> {
        let Some(url) = &self.config.ingest_queue_url else {
            anyhow::bail!("INGEST_QUEUE_URL is not set");
        };
        Ok(Queue::new(self.sqs().await, url))
    }
}

/// The SDK's configuration from the environment, with the endpoint
/// override of local emulators.
pub(crate) async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}
