//! What the two remote providers share: sending a JSON request, sorting
//! failures into retryable and fatal, and retrying with backoff.

use std::future::Future;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::EmbedError;

/// Longest server error message quoted in an [`EmbedError`].
const MAX_MESSAGE_CHARS: usize = 300;

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
    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, EmbedError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let mut retries = 0u32;
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(AttemptError::Fatal(message)) => {
                    return Err(EmbedError::Failed(format!("{what}: {message}")));
                }
                Err(AttemptError::Retry {
                    message,
                    retry_after,
                }) => {
                    if retries >= self.max_retries {
                        return Err(EmbedError::Unavailable(format!(
                            "{what}: {message} (gave up after {} attempts)",
                            retries + 1
                        )));
                    }
                    let delay = self.delay(retries, retry_after);
                    tracing::warn!(
                        provider = what,
                        error = %message,
                        retry = retries + 1,
                        delay_ms = delay.as_millis() as u64,
                        "embedding request failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
