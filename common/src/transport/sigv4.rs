//! SigV4 signing of JSON POSTs with an SDK configuration's credentials.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use super::AttemptError;

/// Credentials this close to expiry are refreshed before use.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

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
        self.post(client, url, body, "application/json").await
    }

    /// [`Self::post_json`] asking for an answer of type `accept` (an
    /// event stream).
    pub async fn post(
        &self,
        client: &reqwest::Client,
        url: &str,
        body: &[u8],
        accept: &str,
    ) -> Result<reqwest::RequestBuilder, AttemptError> {
        let credentials = self.credentials().await?;
        let headers = [("content-type", "application/json"), ("accept", accept)];
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
