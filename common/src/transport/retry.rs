//! Retries with exponential backoff and jitter, honouring `Retry-After`.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{AttemptError, ProviderError, encode_json, send_json};

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
            send_json::<T>(json_post(client, url, api_key, &body))
        })
        .await
    }

    /// As [`Self::post_json`], but returns the successful response with its
    /// body unread, for a streamed answer: only getting that far is
    /// retried, never a stream that broke off midway.
    pub async fn post_for_stream(
        &self,
        what: &str,
        client: &reqwest::Client,
        url: &str,
        api_key: Option<&crate::config::Secret>,
        body: &impl serde::Serialize,
    ) -> Result<reqwest::Response, ProviderError> {
        let body = encode_json(what, body)?;
        self.run(what, || {
            let request = json_post(client, url, api_key, &body)
                .header(reqwest::header::ACCEPT, "text/event-stream");
            super::send_ok(request)
        })
        .await
    }
}

/// A JSON POST of `body`, with `api_key` as its bearer token when given.
fn json_post(
    client: &reqwest::Client,
    url: &str,
    api_key: Option<&crate::config::Secret>,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec());
    match api_key {
        Some(key) => request.bearer_auth(key.expose()),
        None => request,
    }
}
