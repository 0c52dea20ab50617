//! What the remote model providers (embeddings, chat) share: sending a
//! JSON request, sorting failures into retryable and fatal, retrying with
//! backoff, and signing Bedrock runtime requests with SigV4.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;

/// Longest server error message quoted in a [`ProviderError`].
const MAX_MESSAGE_CHARS: usize = 300;

/// How a provider call failed once its retries were spent; each provider
/// module turns it into its own public error type.
#[derive(Debug)]
pub(crate) struct ProviderError {
    /// Worth trying again later (throttling, 5xx, timeouts).
    pub retryable: bool,
    pub message: String,
}

/// How one attempt failed.
#[derive(Debug)]
pub(crate) enum AttemptError {
    /// 408, 429, 5xx, timeouts, connection errors: try again, after
    /// `retry_after` if the server said so.
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Anything else: retrying will not help.
    Fatal(String),
}

/// Exponential backoff with jitter, honouring `Retry-After`.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry; doubles with each retry.
    pub base: Duration,
    /// Longest computed backoff.
    pub max_backoff: Duration,
    /// Longest wait a `Retry-After` header may impose.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub fn new(max_retries: u32) -> Self {
        Self {
            max_retries,
            base: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(20),
        }
    }

    /// The wait before retry number `retry` (0-based): the server's
    /// `Retry-After` (capped) when given, else `base · 2^retry` capped at
    /// `max_backoff`, jittered to between half and all of it.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_retry_after);
        }
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        exp.mul_f64(0.5 + 0.5 * rand::random::<f64>())
    }

    /// Runs `attempt` until it succeeds, fails fatally, or `max_retries`
    /// retries are spent. `what` prefixes error messages and logs.
    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let mut retries = 0u32;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(AttemptError::Fatal(message)) => {
                    return Err(ProviderError {
                        retryable: false,
                        message: format!("{what}: {message}"),
                    });
                }
                Err(AttemptError::Retry {
                    message,
                    retry_after,
                }) => {
                    if retries >= self.max_retries {
                        return Err(ProviderError {
                            retryable: true,
                            message: format!(
                                "{what}: {message} (gave up after {} attempts)",
                                retries + 1
                            ),
                        });
                    }
                    let delay = self.delay(retries, retry_after);
                    tracing::warn!(
                        provider = what,
                        error = %message,
                        retry = retries + 1,
                        delay_ms = delay.as_millis() as u64,
                        "provider request failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
            }
        }
    }

    /// POSTs `body` as JSON to `url` (bearer `api_key` when given), with
    /// this policy's retries, and parses the answer as `T`. `what` names
    /// the call in errors and logs.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        what: &str,
        client: &reqwest::Client,
        url: &str,
        api_key: Option<&crate::config::Secret>,
        body: &impl serde::Serialize,
    ) -> Result<T, ProviderError> {
        let body = encode_json(what, body)?;
        self.run(what, || {
            let mut request = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            if let Some(key) = api_key {
                request = request.bearer_auth(key.expose());
            }
            send_json::<T>(request)
        })
        .await
    }
}

/// `body` as JSON bytes; a body that cannot be encoded is not retried.
fn encode_json(what: &str, body: &impl serde::Serialize) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(body).map_err(|e| ProviderError {
        retryable: false,
        message: format!("{what}: encoding the request: {e}"),
    })
}

/// Sends `request` and parses a successful response as JSON `T`.
///
/// 408, 429 and 5xx answers, timeouts and connection failures are
/// [`AttemptError::Retry`]; other statuses and unparsable success bodies
/// are [`AttemptError::Fatal`], quoting the server's message.
pub(crate) async fn send_json<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<T, AttemptError> {
    let response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    if status.is_success() {
        let body = response.bytes().await.map_err(transport_error)?;
        return serde_json::from_slice(&body).map_err(|e| {
            AttemptError::Fatal(format!(
                "unexpected response body ({e}): {}",
                truncate(&String::from_utf8_lossy(&body))
            ))
        });
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    // Bedrock names the error kind in a header: "ThrottlingException:http://...".
    let kind = response
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).to_owned());
    let body = response.bytes().await.unwrap_or_default();
    let mut message = format!("HTTP {status}");
    if let Some(kind) = kind.filter(|k| !k.is_empty()) {
        message.push_str(&format!(" {kind}"));
    }
    let detail = server_message(&body);
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail);
    }
    if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
        Err(AttemptError::Retry {
            message,
            retry_after,
        })
    } else {
        Err(AttemptError::Fatal(message))
    }
}

/// `Retry-After` as delay-seconds (an HTTP date is ignored: the backoff
/// applies instead).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// Transport failures are worth retrying, except a request that could not
/// be built at all.
fn transport_error(e: reqwest::Error) -> AttemptError {
    let message = error_chain(&e);
    if e.is_builder() {
        AttemptError::Fatal(message)
    } else {
        AttemptError::Retry {
            message,
            retry_after: None,
        }
    }
}

/// An error and its sources, joined: reqwest's own message rarely says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// The human part of an error body: OpenAI's `error.message`, a string
/// `error`, Bedrock's `message`, FastAPI's `detail`, else the raw body;
/// truncated.
fn server_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed = serde_json::from_str::<serde_json::Value>(&text).ok();
    let field = parsed.as_ref().and_then(|v| {
        [
            v.pointer("/error/message"),
            v.get("error"),
            v.get("message"),
            v.get("Message"),
            v.get("detail"),
        ]
        .into_iter()
        .flatten()
        .find_map(|f| f.as_str().map(str::to_owned))
    });
    truncate(field.as_deref().unwrap_or(text.trim()))
}

/// At most [`MAX_MESSAGE_CHARS`] characters, marked when cut.
pub(crate) fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// An HTTP client whose requests time out after `timeout` (connecting
/// after at most 10 s of it).
pub(crate) fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    anyhow::ensure!(!timeout.is_zero(), "the request timeout must be positive");
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()?)
}

// ---------------------------------------------------------------- Bedrock

/// SigV4 signing name of the Bedrock runtime.
pub(crate) const BEDROCK_SIGNING_NAME: &str = "bedrock";
/// Credentials this close to expiry are refreshed before use.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// Everything but RFC 3986 unreserved characters is escaped in the model
/// id path segment (`:` in `v2:0`, `/` in inference-profile ARNs), as the
/// AWS SDKs do.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The Bedrock runtime endpoint, in order: `base_url`, the SDK
/// configuration's endpoint override (`AWS_ENDPOINT_URL`, as the AWS SDKs
/// would use it), else `https://bedrock-runtime.{region}.amazonaws.com`.
/// No trailing slash.
pub(crate) fn bedrock_endpoint(
    base_url: Option<&str>,
    aws: &aws_config::SdkConfig,
    region: &str,
) -> anyhow::Result<String> {
    let endpoint = base_url
        .or(aws.endpoint_url())
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
    anyhow::ensure!(
        endpoint.starts_with("http://") || endpoint.starts_with("https://"),
        "the Bedrock endpoint must be an http(s) URL, got {endpoint:?}"
    );
    Ok(endpoint)
}

/// `/model/{model id, percent-encoded}/{action}`.
pub(crate) fn bedrock_model_path(model: &str, action: &str) -> String {
    format!(
        "/model/{}/{action}",
        utf8_percent_encode(model, PATH_SEGMENT)
    )
}

/// One Bedrock model action (`/model/{id}/converse`, `.../invoke`) on the
/// runtime endpoint, called with signed JSON POSTs and retries: what the
/// Bedrock chat and embedding providers share.
#[derive(Debug)]
pub(crate) struct BedrockModel {
    client: reqwest::Client,
    /// The runtime endpoint, no trailing slash.
    pub endpoint: String,
    /// `/model/{encoded model id}/{action}`.
    pub path: String,
    signer: SigV4Signer,
    pub retry: RetryPolicy,
}

impl BedrockModel {
    /// `model`'s `action` on `base_url`, else the SDK configuration's
    /// endpoint, else the region's runtime endpoint; signed with the SDK
    /// configuration's region and credentials; each request bounded by
    /// `timeout`. `provider` names the caller in configuration errors.
    pub fn from_sdk(
        aws: &aws_config::SdkConfig,
        base_url: Option<&str>,
        model: &str,
        action: &str,
        timeout: Duration,
        max_retries: u32,
        provider: &str,
    ) -> anyhow::Result<Self> {
        let signer = SigV4Signer::from_sdk(aws, BEDROCK_SIGNING_NAME, provider)?;
        Ok(Self {
            client: http_client(timeout)?,
            endpoint: bedrock_endpoint(base_url, aws, signer.region())?,
            path: bedrock_model_path(model, action),
            signer,
            retry: RetryPolicy::new(max_retries),
        })
    }

    pub fn region(&self) -> &str {
        self.signer.region()
    }

    /// POSTs `body` as JSON, signed afresh for every attempt, with this
    /// model's retries, and parses the answer as `T`. `what` names the
    /// call in errors and logs.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        what: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ProviderError> {
        let body = encode_json(what, body)?;
        let url = format!("{}{}", self.endpoint, self.path);
        self.retry
            .run(what, || async {
                send_json(self.signer.post_json(&self.client, &url, &body).await?).await
            })
            .await
    }
}

/// Signs JSON POSTs with SigV4 using an SDK configuration's region,
/// credentials (cached until five minutes before they expire) and clock.
pub(crate) struct SigV4Signer {
    region: String,
    service: &'static str,
    credentials: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<Credentials>>,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
}

impl std::fmt::Debug for SigV4Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4Signer")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl SigV4Signer {
    /// Fails when `aws` has no region or no credentials provider; `provider`
    /// names the caller in that message ("the bedrock chat provider").
    pub fn from_sdk(
        aws: &aws_config::SdkConfig,
        service: &'static str,
        provider: &str,
    ) -> anyhow::Result<Self> {
        let region = aws
            .region()
            .map(|r| r.as_ref().to_owned())
            .ok_or_else(|| anyhow::anyhow!("{provider} needs an AWS region (AWS_REGION)"))?;
        let credentials = aws
            .credentials_provider()
            .ok_or_else(|| anyhow::anyhow!("{provider} needs AWS credentials"))?;
        let clock: Arc<dyn Fn() -> SystemTime + Send + Sync> = match aws.time_source() {
            Some(source) => Arc::new(move || source.now()),
            None => Arc::new(SystemTime::now),
        };
        Ok(Self {
            region,
            service,
            credentials,
            cached: tokio::sync::Mutex::new(None),
            clock,
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Current credentials, from the cache unless they are about to expire.
    async fn credentials(&self) -> Result<Credentials, AttemptError> {
        let mut cached = self.cached.lock().await;
        let now = (self.clock)();
        if let Some(c) = cached.as_ref() {
            let fresh = c
                .expiry()
                .is_none_or(|expiry| expiry > now + REFRESH_BEFORE_EXPIRY);
            if fresh {
                return Ok(c.clone());
            }
        }
        let fresh = self
            .credentials
            .provide_credentials()
            .await
            .map_err(credentials_error)?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// `POST url` with a JSON `body`, signed and dated now.
    pub async fn post_json(
        &self,
        client: &reqwest::Client,
        url: &str,
        body: &[u8],
    ) -> Result<reqwest::RequestBuilder, AttemptError> {
        let credentials = self.credentials().await?;
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ];
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service)
            .time((self.clock)())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| AttemptError::Fatal(format!("signing parameters: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| AttemptError::Fatal(format!("signing {url}: {e}")))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| AttemptError::Fatal(format!("signing {url}: {e}")))?
            .into_parts();
        let mut request = client.post(url).body(body.to_vec());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        for (name, value) in instructions.headers() {
            request = request.header(name, value);
        }
        Ok(request)
    }
}

/// Missing or misconfigured credentials will not fix themselves; provider
/// hiccups (IMDS, STS timeouts) might.
fn credentials_error(e: CredentialsError) -> AttemptError {
    let message = format!("loading AWS credentials: {e}");
    match e {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            AttemptError::Fatal(message)
        }
        _ => AttemptError::Retry {
            message,
            retry_after: None,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_server::Recorded;

    /// Recomputes the SigV4 signature (service "bedrock") from what went
    /// over the wire.
    pub(crate) fn expected_authorization(
        request: &Recorded,
        host_url: &str,
        credentials: Credentials,
        region: &str,
    ) -> String {
        let authorization = request.header("authorization").unwrap();
        let signed: Vec<&str> = authorization
            .split("SignedHeaders=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .split(';')
            .collect();
        let headers: Vec<(&str, &str)> = signed
            .iter()
            .map(|name| (*name, request.header(name).unwrap()))
            .collect();
        let time = parse_amz_date(request.header("x-amz-date").unwrap());
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("bedrock")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let url = format!("{host_url}{}", request.path);
        let signable = SignableRequest::new(
            &request.method,
            url.as_str(),
            headers.into_iter(),
            SignableBody::Bytes(&request.body),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions
            .headers()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .unwrap()
            .1
            .to_owned()
    }

    /// `20240102T030405Z` → that instant.
    fn parse_amz_date(s: &str) -> SystemTime {
        let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
        let (y, m, d) = (n(0..4), n(4..6), n(6..8));
        let (hh, mm, ss) = (n(9..11), n(11..13), n(13..15));
        // Days from civil (Howard Hinnant).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    }

    #[test]
    fn amz_date_parser() {
        assert_eq!(
            parse_amz_date("19700102T000001Z"),
            SystemTime::UNIX_EPOCH + Duration::from_secs(86_401)
        );
        assert_eq!(
            parse_amz_date("20240301T000000Z")
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_709_251_200
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::new(5);
        for retry in 0..30 {
            let d = policy.delay(retry, None);
            let full = policy
                .base
                .saturating_mul(1 << retry.min(20))
                .min(policy.max_backoff);
            assert!(
                d >= full / 2 && d <= full,
                "retry {retry}: {d:?} vs {full:?}"
            );
        }
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(3600))),
            policy.max_retry_after
        );
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn server_messages_are_extracted_and_truncated() {
        assert_eq!(
            server_message(br#"{"error":{"message":"bad model","type":"x"}}"#),
            "bad model"
        );
        assert_eq!(server_message(br#"{"message":"Too many"}"#), "Too many");
        assert_eq!(server_message(br#"{"error":"nope"}"#), "nope");
        assert_eq!(server_message(b" plain text \n"), "plain text");
        let long = "é".repeat(1000);
        let cut = server_message(long.as_bytes());
        assert_eq!(cut.chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
