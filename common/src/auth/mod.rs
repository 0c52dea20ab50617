//! Sign-up, login, rotating refresh tokens, logout, and resolving the caller
//! of a request from its bearer token.

pub mod jwt;
pub mod passwords;
mod sessions;
pub mod throttle;
mod users;

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::config::Config;
use crate::error::{ApiError, Result};
use crate::ids::UserId;
use crate::rate_limit;
use jwt::{Principal, TokenSigner, TokenVerifier};
pub use users::UserProfile;

/// Credentials for sign-up and login.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

/// What sign-up, login and refresh return.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// `POST /auth/signup`: credentials and an optional display name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Signup {
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `PATCH /auth/me`: `display_name` a string to set, `null` to clear.
/// Outer `None`: the field was absent, which is refused rather than taken
/// as `null` (an empty body must not wipe the name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileChanges {
    #[serde(default, deserialize_with = "present")]
    pub display_name: Option<Option<String>>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `DELETE /auth/me`: the current password of a built-in account; external
/// accounts have none and send `{}` (their valid bearer token is the proof).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountDeletion {
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshRequest {
    pub refresh_token: String,
}

// Defined below the workspaces, which take it, so they need not import auth.
pub use crate::caller::Caller;

/// Issues and checks credentials. Built once per container.
pub struct Auth {
    signer: TokenSigner,
    verifier: TokenVerifier,
    password_min_length: usize,
    refresh_ttl: std::time::Duration,
    /// Sign-ups per source IP.
    signup_limit: rate_limit::Rule,
    login_limits: crate::config::LoginLimits,
    /// issuer + subject → local user id; the mapping never changes once made.
    external_users: Mutex<HashMap<(String, String), UserId>>,
}

impl Auth {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let signer = TokenSigner::from_config(config)?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(3))
            .build()?;
        let verifier = TokenVerifier::from_config(config, &signer, http)?;
        Ok(Self {
            signer,
            verifier,
            password_min_length: config.password_min_length,
            refresh_ttl: config.refresh_token_ttl,
            signup_limit: rate_limit::Rule {
                limit: config.auth_rate_limit_per_ip,
                window: config.auth_rate_limit_window,
            },
            login_limits: config.login_limits,
            external_users: Mutex::new(HashMap::new()),
        })
    }

    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// Resolves the caller from an `Authorization: Bearer` value (401 problem
    /// on anything but a fully valid token). External users get a local id
    /// on first sight.
    pub async fn caller(&self, db: &PgPool, authorization: Option<&str>) -> Result<Caller> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        let caller = self.principal_caller(db, token).await?;
        // One indexed lookup per request: a deleted account's unexpired
        // tokens must stop working at once, not at their expiry.
        if users::is_deleted(db, caller.user_id).await? {
            return Err(ApiError::Unauthorized(
                "the account no longer exists".into(),
            ));
        }
        Ok(caller)
    }

    async fn principal_caller(&self, db: &PgPool, token: &str) -> Result<Caller> {
        match self.verifier.verify(token).await? {
            Principal::Local { user_id } => Ok(Caller::member(user_id)),
            Principal::External {
                issuer,
                subject,
                email,
            } => {
                let key = (issuer, subject);
                let cached = self
                    .external_users
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&key).copied());
                let user_id = match cached {
                    Some(id) => id,
                    None => {
                        let id =
                            users::upsert_external(db, &key.0, &key.1, email.as_deref()).await?;
                        if let Ok(mut map) = self.external_users.lock() {
                            map.insert(key, id);
                        }
                        id
                    }
                };
                Ok(Caller::member(user_id))
            }
        }
    }

    /// Creates a built-in account and signs it in.
    #[tracing::instrument(skip_all)]
    pub async fn signup(
        &self,
        db: &PgPool,
        credentials: Signup,
        source_ip: &str,
    ) -> Result<TokenPair> {
        let email = users::normalize_email(&credentials.email)?;
        let display_name = credentials
            .display_name
            .as_deref()
            .map(users::check_display_name)
            .transpose()?;
        // Per source only: a per-email limit would let anyone hold up
        // someone else's sign-up.
        let source = throttle::source_of(source_ip);
        rate_limit::hit(db, &format!("signup:ip:{source}"), self.signup_limit).await?;
        passwords::check_policy(&credentials.password, &email, self.password_min_length)?;
        let hash = passwords::hash(credentials.password).await?;
        let user_id = users::create_local(db, &email, &hash, display_name.as_deref()).await?;
        tracing::info!(%user_id, "account created");
        // The account works without it; its first login makes it known.
        if let Err(error) = throttle::remember_source(db, user_id, source_ip).await {
            tracing::warn!(%error, "remembering the sign-up's source failed");
        }
        self.start_session(db, user_id, &email).await
    }

    /// Checks credentials; unknown email and wrong password give the same
    /// answer after the same work. Failures hold up further attempts
    /// ([`throttle`]): 429 with `Retry-After` while they wait.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        db: &PgPool,
        credentials: Credentials,
        source_ip: &str,
    ) -> Result<TokenPair> {
        let refused = || ApiError::Unauthorized("invalid email or password".into());
        let email = users::normalize_email(&credentials.email).map_err(|_| refused())?;
        let attempt = throttle::begin(db, &self.login_limits, &email, source_ip).await?;
        // An error here leaves the attempt pending until its mark lapses.
        let user = self
            .check_password(db, &email, credentials.password)
            .await?;
        match user {
            Some(user_id) => {
                attempt.succeeded(db, user_id).await?;
                self.start_session(db, user_id, &email).await
            }
            None => {
                attempt.failed(db).await?;
                Err(refused())
            }
        }
    }

    /// The account whose password this is, if any.
    async fn check_password(
        &self,
        db: &PgPool,
        email: &str,
        password: String,
    ) -> Result<Option<UserId>> {
        if password.len() > passwords::MAX_PASSWORD_BYTES {
            return Ok(None);
        }
        let account = users::find_local_by_email(db, email).await?;
        let (user_id, stored) = match account {
            Some((id, hash)) => (Some(id), Some(hash)),
            None => (None, None),
        };
        let valid = passwords::verify(password, stored).await?;
        Ok(user_id.filter(|_| valid))
    }

    /// Rotates a refresh token: the presented one is spent, a new pair is
    /// issued. Presenting a spent token revokes its whole family.
    pub async fn refresh(&self, db: &PgPool, request: RefreshRequest) -> Result<TokenPair> {
        let (user_id, refresh_token) =
            sessions::rotate(db, &request.refresh_token, self.refresh_ttl).await?;
        let email = users::profile(db, user_id).await?.and_then(|p| p.email);
        self.pair(user_id, email.as_deref(), refresh_token)
    }

    /// Ends the session the refresh token belongs to (its whole family).
    /// Idempotent: an unknown or already revoked token is not an error.
    pub async fn logout(&self, db: &PgPool, request: RefreshRequest) -> Result<()> {
        sessions::revoke_family_of(db, &request.refresh_token).await
    }

    pub async fn profile(&self, db: &PgPool, caller: Caller) -> Result<UserProfile> {
        users::profile(db, caller.user_id)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the account no longer exists".into()))
    }

    /// Sets or clears the caller's display name; returns the new profile.
    pub async fn update_profile(
        &self,
        db: &PgPool,
        caller: Caller,
        changes: ProfileChanges,
    ) -> Result<UserProfile> {
        let name = changes
            .display_name
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "display_name",
                    "give display_name: a string, or null to clear it",
                )
            })?
            .as_deref()
            .map(users::check_display_name)
            .transpose()?;
        if !users::set_display_name(db, caller.user_id, name.as_deref()).await? {
            return Err(ApiError::Unauthorized(
                "the account no longer exists".into(),
            ));
        }
        self.profile(db, caller).await
    }

    /// Deletes the caller's account in one transaction: its owned workspaces
    /// are soft-deleted (purged later like any deleted workspace), its
    /// memberships removed, its refresh tokens revoked, and its row marked
    /// deleted so [`Auth::caller`] refuses its access tokens from now on.
    #[tracing::instrument(skip_all)]
    pub async fn delete_account(
        &self,
        db: &PgPool,
        caller: Caller,
        request: AccountDeletion,
    ) -> Result<()> {
        let gone = || ApiError::Unauthorized("the account no longer exists".into());
        let (issuer, stored) = users::credentials_of(db, caller.user_id)
            .await?
            .ok_or_else(gone)?;
        if issuer.is_none() {
            // Same refusal as a wrong login password, after the same work;
            // 403, not 401: the bearer token itself is fine.
            let password = request.password.unwrap_or_default();
            let valid = password.len() <= passwords::MAX_PASSWORD_BYTES
                && passwords::verify(password, stored).await?;
            if !valid {
                return Err(ApiError::Forbidden("invalid password".into()));
            }
        } else if request.password.is_some() {
            return Err(ApiError::unprocessable(
                "password",
                "accounts of an external issuer have no password here; send {}",
            ));
        }
        let mut tx = crate::db::tenant_tx(db, Some(caller.user_id), None).await?;
        let closed = crate::workspaces::close_for_deleted_account(&mut tx, caller.user_id).await?;
        if !users::mark_deleted(&mut tx, caller.user_id).await? {
            return Err(gone());
        }
        tx.commit().await?;
        tracing::info!(user_id = %caller.user_id, workspaces = closed.len(), "account deleted");
        Ok(())
    }

    async fn start_session(&self, db: &PgPool, user_id: UserId, email: &str) -> Result<TokenPair> {
        let refresh_token = sessions::start(db, user_id, self.refresh_ttl).await?;
        self.pair(user_id, Some(email), refresh_token)
    }

    fn pair(
        &self,
        user_id: UserId,
        email: Option<&str>,
        refresh_token: String,
    ) -> Result<TokenPair> {
        Ok(TokenPair {
            access_token: self.signer.issue(user_id, email)?,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: self.signer.ttl().as_secs(),
        })
    }
}

pub use sessions::{digest as token_digest, secret_token};
pub use users::{check_display_name, normalize_email};

/// How a user is named to others: display name, else email.
pub async fn user_label(db: impl sqlx::PgExecutor<'_>, id: UserId) -> Result<Option<String>> {
    users::label(db, id).await
}
