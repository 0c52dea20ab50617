//! What the remote model providers (embeddings, chat) share: sending a
//! JSON request and sorting failures into retryable and fatal (here),
//! retrying with backoff ([`retry`]), signing with SigV4 ([`sigv4`]) and
//! calling Bedrock runtime models ([`bedrock`]).

mod bedrock;
mod retry;
mod sigv4;

use std::time::Duration;

use serde::de::DeserializeOwned;

pub(crate) use bedrock::*;
pub(crate) use retry::RetryPolicy;
pub(crate) use sigv4::SigV4Signer;

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
    let response = send_ok(request).await?;
    let body = response.bytes().await.map_err(transport_error)?;
    serde_json::from_slice(&body).map_err(|e| {
        AttemptError::Fatal(format!(
            "unexpected response body ({e}): {}",
            truncate(&String::from_utf8_lossy(&body))
        ))
    })
}

/// Sends `request`; a success status is returned with its body unread (a
/// stream's), any other is classified as [`send_json`] describes.
pub(crate) async fn send_ok(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, AttemptError> {
    let response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
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
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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

#[cfg(test)]
pub(crate) mod tests {
    use std::time::SystemTime;

    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;

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
