//! Bedrock runtime models: the endpoint, the model path, and signed JSON
//! POSTs with retries, shared by the Bedrock chat and embedding providers.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;

use super::{
    ProviderError, RetryPolicy, SigV4Signer, encode_json, http_client, send_json, send_ok,
};

/// SigV4 signing name of the Bedrock runtime.
pub(crate) const BEDROCK_SIGNING_NAME: &str = "bedrock";
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

impl BedrockModel {
    /// [`Self::post_json`] to the same action of another `model` on the
    /// same endpoint (the AI proxy's allow-listed model choice).
    pub async fn post_json_for<T: DeserializeOwned>(
        &self,
        what: &str,
        model: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ProviderError> {
        let action = self.path.rsplit('/').next().unwrap_or("converse");
        let body = encode_json(what, body)?;
        let url = format!("{}{}", self.endpoint, bedrock_model_path(model, action));
        self.retry
            .run(what, || async {
                send_json(self.signer.post_json(&self.client, &url, &body).await?).await
            })
            .await
    }
}

impl BedrockModel {
    /// POSTs `body` as JSON to another `action` of this model
    /// (`converse-stream`), asking for `accept`, signed and retried as
    /// [`Self::post_json`] until a success status, which is returned with
    /// its body unread: only getting that far is retried, never a stream
    /// that broke off midway.
    pub async fn post_for_stream(
        &self,
        what: &str,
        action: &str,
        accept: &str,
        body: &impl serde::Serialize,
    ) -> Result<reqwest::Response, ProviderError> {
        let body = encode_json(what, body)?;
        let model = self.path.rsplit_once('/').map_or("", |(model, _)| model);
        let url = format!("{}{model}/{action}", self.endpoint);
        self.retry
            .run(what, || async {
                send_ok(self.signer.post(&self.client, &url, &body, accept).await?).await
            })
            .await
    }
}
