//! Access tokens: short-lived JWTs we issue (EdDSA, or RS256/ES256 for
//! API Gateway's JWT authorizers), and the verifier that
//! accepts ours and those of configured external issuers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::config::{Config, ExternalIssuer};
use crate::error::ApiError;
use crate::ids::UserId;

/// Clock skew tolerated on `exp`/`nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// Claims of the access tokens we issue.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: UserId,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Who a verified token speaks for, before mapping to a local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// One of our own users (the `sub` of a token we signed).
    Local { user_id: UserId },
    /// A user of an external issuer, identified by issuer + subject.
    External {
        issuer: String,
        subject: String,
        email: Option<String>,
    },
}

/// Signs our access tokens and publishes the keys that verify them.
pub struct TokenSigner {
    issuer: String,
    audience: String,
    kid: String,
    alg: Algorithm,
    ttl: Duration,
    /// None in functions that only verify (no `JWT_SIGNING_KEY`).
    key: Option<EncodingKey>,
    jwks: JwkSet,
}

impl TokenSigner {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let alg = own_algorithm(&config.jwt_algorithm)?;
        let (key, mut current) = match (&config.jwt_signing_key, &config.jwt_public_key) {
            (Some(signing), _) => {
                let key = encoding_key(alg, signing.expose()).map_err(|e| {
                    anyhow::anyhow!("JWT_SIGNING_KEY is not a {alg:?} private PEM key: {e}")
                })?;
                let current = Jwk::from_encoding_key(&key, alg).map_err(|e| {
                    anyhow::anyhow!("JWT_SIGNING_KEY: cannot derive public key: {e}")
                })?;
                (Some(key), current)
            }
            (None, Some(public)) => {
                let decoding = decoding_key(alg, public).map_err(|e| {
                    anyhow::anyhow!("JWT_PUBLIC_KEY is not a {alg:?} public PEM: {e}")
                })?;
                (None, Jwk::from_decoding_key(&decoding, Some(alg))?)
            }
            (None, None) => anyhow::bail!("neither JWT_SIGNING_KEY nor JWT_PUBLIC_KEY is set"),
        };
        current.common.key_id = Some(config.jwt_key_id.clone());
        current.common.public_key_use = Some(PublicKeyUse::Signature);
        let mut keys = vec![current];
        for previous in &config.jwt_previous_keys {
            let previous_alg = match &previous.alg {
                Some(name) => own_algorithm(name)
                    .map_err(|e| anyhow::anyhow!("JWT_PREVIOUS_KEYS: key {}: {e}", previous.kid))?,
                None => alg,
            };
            let decoding = decoding_key(previous_alg, &previous.public_key).map_err(|e| {
                anyhow::anyhow!(
                    "JWT_PREVIOUS_KEYS: key {} is not a {previous_alg:?} public PEM: {e}",
                    previous.kid
                )
            })?;
            let mut jwk = Jwk::from_decoding_key(&decoding, Some(previous_alg))?;
            jwk.common.key_id = Some(previous.kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            keys.push(jwk);
        }
        Ok(Self {
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            kid: config.jwt_key_id.clone(),
            alg,
            ttl: config.access_token_ttl,
            key,
            jwks: JwkSet { keys },
        })
    }

    /// The algorithm our tokens are signed with now.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Our issuer (`iss` of every token we sign).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The OpenID discovery document: enough for API Gateway's JWT
    /// authorizer (issuer, key set, algorithm). The key set lives under
    /// the issuer when the issuer is a URL (as the authorizer requires),
    /// else under the host the request came to.
    pub fn discovery(&self, host: Option<&str>) -> serde_json::Value {
        let base = if self.issuer.starts_with("https://") || self.issuer.starts_with("http://") {
            self.issuer.trim_end_matches('/').to_owned()
        } else {
            format!("https://{}", host.unwrap_or("localhost"))
        };
        serde_json::json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "token_endpoint": format!("{base}/auth/login"),
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [format!("{:?}", self.alg)],
            "token_endpoint_auth_methods_supported": ["none"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "email"],
        })
    }

    /// The public keys, current first: what `/.well-known/jwks.json` serves.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A signed access token for `user`, with `kid` in its header.
    pub fn issue(&self, user: UserId, email: Option<&str>) -> Result<String, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = AccessClaims {
            sub: user,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.ttl.as_secs(),
            email: email.map(str::to_owned),
        };
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let key = self.key.as_ref().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "this function has no JWT_SIGNING_KEY: only sign-up, login and refresh issue tokens"
            ))
        })?;
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("signing access token")))
    }
}

impl TokenSigner {
    /// Signs `claims` with the current key (`kid` in the header): for
    /// tokens of another kind than access tokens, told apart by their own
    /// audience (see [`TokenVerifier::verify_own`]).
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, ApiError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        let key = self.key.as_ref().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("this function has no JWT_SIGNING_KEY"))
        })?;
        jsonwebtoken::encode(&header, claims, key)
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("signing a token")))
    }
}

/// Verifies bearer tokens: ours (EdDSA, current or previous key) and those
/// of external issuers (JWKS or HS256 secret, each with its own algorithm
/// allow-list and required audience).
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    /// kid → key and the one algorithm it verifies.
    own_keys: HashMap<String, (DecodingKey, Algorithm)>,
    external: HashMap<String, ExternalVerifier>,
}

struct ExternalVerifier {
    config: ExternalIssuer,
    algorithms: Vec<Algorithm>,
    keys: KeySource,
}

enum KeySource {
    Secret(DecodingKey),
    Jwks(JwksCache),
}

impl TokenVerifier {
    pub fn from_config(
        config: &Config,
        signer: &TokenSigner,
        http: reqwest::Client,
    ) -> anyhow::Result<Self> {
        let mut own_keys = HashMap::new();
        for jwk in &signer.jwks().keys {
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                .ok_or_else(|| anyhow::anyhow!("own key {kid} names no signing algorithm"))?;
            own_keys.insert(kid, (DecodingKey::from_jwk(jwk)?, alg));
        }
        let mut external = HashMap::new();
        for issuer in &config.external_issuers {
            let keys = match (&issuer.hs256_secret, &issuer.jwks_url) {
                (Some(secret), _) => {
                    KeySource::Secret(DecodingKey::from_secret(secret.expose().as_bytes()))
                }
                (None, Some(url)) => KeySource::Jwks(JwksCache::new(
                    url.clone(),
                    http.clone(),
                    config.jwks_cache_ttl,
                    config.jwks_min_refetch_interval,
                )),
                (None, None) => {
                    anyhow::bail!("AUTH_EXTERNAL_ISSUERS: {} has no key source", issuer.issuer)
                }
            };
            let algorithms = allowed_algorithms(issuer)?;
            external.insert(
                issuer.issuer.clone(),
                ExternalVerifier {
                    config: issuer.clone(),
                    algorithms,
                    keys,
                },
            );
        }
        Ok(Self {
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            own_keys,
            external,
        })
    }

    /// Verifies `token` completely (signature, algorithm, issuer, audience,
    /// expiry, not-before) and says whom it speaks for. Every failure is the
    /// same 401 to the client; the reason goes to the log.
    pub async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        self.verify_inner(token).await.map_err(|reason| {
            tracing::info!(%reason, "rejected bearer token");
            ApiError::Unauthorized("invalid or expired access token".into())
        })
    }

    /// Verifies one of our own tokens of another kind: our issuer, our
    /// keys, exactly `audience` (never the access tokens' own), and not
    /// expired longer than `expired_grace` ago (zero: not expired). The
    /// reason for a refusal is for the log only.
    pub fn verify_own<C: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
        expired_grace: Duration,
    ) -> Result<C, String> {
        if audience == self.audience {
            return Err("an access token's audience".into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        let kid = header.kid.as_deref().ok_or("token without kid")?;
        let (key, alg) = self
            .own_keys
            .get(kid)
            .ok_or_else(|| format!("unknown kid {kid}"))?;
        if header.alg != *alg {
            return Err(format!(
                "algorithm {:?} not allowed for key {kid}",
                header.alg
            ));
        }
        let mut validation = validation(*alg, &self.issuer, audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS + expired_grace.as_secs();
        jsonwebtoken::decode::<C>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| e.to_string())
    }

    async fn verify_inner(&self, token: &str) -> Result<Principal, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        // The issuer only selects which keys and rules apply; the claims are
        // trusted only after the signature check below.
        let issuer = unverified_issuer(token)?;
        if issuer == self.issuer {
            let kid = header.kid.as_deref().ok_or("own token without kid")?;
            let (key, alg) = self
                .own_keys
                .get(kid)
                .ok_or_else(|| format!("unknown kid {kid}"))?;
            // Each key verifies the one algorithm it was made for: no
            // algorithm confusion between an RSA and an EdDSA key.
            if header.alg != *alg {
                return Err(format!(
                    "algorithm {:?} not allowed for own key {kid}",
                    header.alg
                ));
            }
            let mut validation = validation(*alg, &self.issuer, &self.audience);
            validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
            let data = jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
                .map_err(|e| e.to_string())?;
            return Ok(Principal::Local {
                user_id: data.claims.sub,
            });
        }
        let external = self
            .external
            .get(&issuer)
            .ok_or_else(|| format!("untrusted issuer {issuer}"))?;
        if !external.algorithms.contains(&header.alg) {
            return Err(format!(
                "algorithm {:?} not allowed for {issuer}",
                header.alg
            ));
        }
        let key = match &external.keys {
            KeySource::Secret(key) => key.clone(),
            KeySource::Jwks(cache) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or("token without kid for a JWKS issuer")?;
                cache.key(kid).await?
            }
        };
        let mut validation = validation(
            header.alg,
            &external.config.issuer,
            &external.config.audience,
        );
        validation.algorithms = external.algorithms.clone();
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<ExternalClaims>(token, &key, &validation)
            .map_err(|e| e.to_string())?;
        // Claims become database text: refuse what Postgres would reject
        // (NUL) or what is no identifier, rather than fail with a 500.
        let printable =
            |s: &str| !s.is_empty() && s.len() <= 255 && !s.chars().any(char::is_control);
        if !printable(&data.claims.sub) {
            return Err("sub is empty, too long or has control characters".into());
        }
        Ok(Principal::External {
            issuer,
            subject: data.claims.sub,
            email: data
                .claims
                .email
                .filter(|e| printable(e))
                .map(|e| e.to_lowercase()),
        })
    }
}

/// The algorithms our own tokens may be signed with.
pub fn own_algorithm(name: &str) -> anyhow::Result<Algorithm> {
    match name {
        "EdDSA" => Ok(Algorithm::EdDSA),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => anyhow::bail!("JWT_ALGORITHM {other:?} is not EdDSA, RS256 or ES256"),
    }
}

fn encoding_key(alg: Algorithm, pem: &str) -> jsonwebtoken::errors::Result<EncodingKey> {
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        _ => EncodingKey::from_ed_pem(pem.as_bytes()),
    }
}

fn decoding_key(alg: Algorithm, pem: &str) -> jsonwebtoken::errors::Result<DecodingKey> {
    match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
        _ => DecodingKey::from_ed_pem(pem.as_bytes()),
    }
}

#[derive(Deserialize)]
struct ExternalClaims {
    sub: String,
    #[serde(default)]
    email: Option<String>,
}

fn validation(alg: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECS;
    validation
}

fn allowed_algorithms(issuer: &ExternalIssuer) -> anyhow::Result<Vec<Algorithm>> {
    if issuer.algorithms.is_empty() {
        return Ok(vec![if issuer.hs256_secret.is_some() {
            Algorithm::HS256
        } else {
            Algorithm::RS256
        }]);
    }
    let symmetric = issuer.hs256_secret.is_some();
    issuer
        .algorithms
        .iter()
        .map(|name| {
            let alg: Algorithm = name
                .parse()
                .map_err(|_| anyhow::anyhow!("AUTH_EXTERNAL_ISSUERS: unknown algorithm {name}"))?;
            // A secret-keyed issuer takes only HMAC, a JWKS issuer only
            // asymmetric algorithms: the classic HS/RS confusion is impossible.
            let is_hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
            anyhow::ensure!(
                is_hmac == symmetric,
                "AUTH_EXTERNAL_ISSUERS: algorithm {name} does not fit the key source of {}",
                issuer.issuer
            );
            Ok(alg)
        })
        .collect()
}

/// Reads `iss` from the payload without verifying it, to pick the key source.
fn unverified_issuer(token: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1).ok_or("not a JWS")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "payload is not base64url")?;
    let claims: Iss = serde_json::from_slice(&bytes).map_err(|_| "payload is not a JSON object")?;
    claims.iss.ok_or_else(|| "no iss claim".into())
}

/// An issuer's JWKS, cached for `ttl`; an unknown `kid` triggers a refetch,
/// at most once per `min_refetch` so garbage tokens cannot hammer the IdP.
pub struct JwksCache {
    url: String,
    http: reqwest::Client,
    ttl: Duration,
    min_refetch: Duration,
    state: RwLock<JwksState>,
    fetch_lock: Mutex<()>,
}

#[derive(Default)]
struct JwksState {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

impl JwksCache {
    pub fn new(url: String, http: reqwest::Client, ttl: Duration, min_refetch: Duration) -> Self {
        Self {
            url,
            http,
            ttl,
            min_refetch,
            state: RwLock::new(JwksState::default()),
            fetch_lock: Mutex::new(()),
        }
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, String> {
        {
            let state = self.state.read().await;
            let fresh = state.fetched_at.is_some_and(|t| t.elapsed() < self.ttl);
            if let Some(key) = state.keys.get(kid).filter(|_| fresh) {
                return Ok(key.clone());
            }
        }
        let _one_fetch_at_a_time = self.fetch_lock.lock().await;
        {
            // Another task may have fetched while we waited, or fetched too recently.
            let state = self.state.read().await;
            let fresh = state.fetched_at.is_some_and(|t| t.elapsed() < self.ttl);
            if let Some(key) = state.keys.get(kid).filter(|_| fresh) {
                return Ok(key.clone());
            }
            if state
                .attempted_at
                .is_some_and(|t| t.elapsed() < self.min_refetch)
            {
                return state
                    .keys
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| format!("unknown kid {kid} (JWKS refetch rate-limited)"));
            }
        }
        self.state.write().await.attempted_at = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                let mut state = self.state.write().await;
                state.keys = keys;
                state.fetched_at = Some(Instant::now());
                state
                    .keys
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| format!("unknown kid {kid}"))
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed");
                // Keep serving the keys we had: an IdP hiccup must not log everyone out.
                self.state
                    .read()
                    .await
                    .keys
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| format!("unknown kid {kid}; JWKS unavailable"))
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, DecodingKey>> {
        let set: JwkSet = self
            .http
            .get(&self.url)
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), true) = (&jwk.common.key_id, jwk.is_supported()) else {
                continue;
            };
            // Keys published for encryption only are not signature keys.
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            // Symmetric keys never verify an asymmetric issuer's tokens.
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                continue;
            }
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid.clone(), key);
                }
                Err(e) => tracing::warn!(%kid, error = %e, "skipping unusable JWK"),
            }
        }
        Ok(keys)
    }
}
