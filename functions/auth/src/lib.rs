//! Built-in accounts: sign-up, login, refresh, logout, whoami, profile
//! changes, account deletion, and the JWKS
//! that verifies our access tokens.

use common::http::{json, json_body, json_private, no_content, respond, source_ip};
use common::lambda::Function;
use common::lambda_http::http::StatusCode;
use common::lambda_http::{Body, Request, Response};
use common::state::State;

pub const FUNCTIONS: &[Function] = &[
    common::http_function!("auth-signup", signup),
    common::http_function!("auth-login", login),
    common::http_function!("auth-refresh", refresh),
    common::http_function!("auth-logout", logout),
    common::http_function!("auth-me", me),
    common::http_function!("auth-update", update),
    common::http_function!("auth-delete", delete),
    common::http_function!("auth-jwks", jwks),
    common::http_function!("auth-openid", openid_configuration),
];

/// `POST /auth/signup` → 201 with a token pair.
pub async fn signup(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let credentials = json_body(&req, state.config.max_request_bytes)?;
        let tokens = state
            .auth
            .signup(&state.db, credentials, &source_ip(&req))
            .await?;
        json_private(StatusCode::CREATED, &tokens)
    })
    .await
}

/// `POST /auth/login` → 200 with a token pair, 401 for bad credentials.
pub async fn login(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let credentials = json_body(&req, state.config.max_request_bytes)?;
        let tokens = state
            .auth
            .login(&state.db, credentials, &source_ip(&req))
            .await?;
        json_private(StatusCode::OK, &tokens)
    })
    .await
}

/// `POST /auth/refresh` → a new pair; the presented refresh token is spent.
pub async fn refresh(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let request = json_body(&req, state.config.max_request_bytes)?;
        let tokens = state.auth.refresh(&state.db, request).await?;
        json_private(StatusCode::OK, &tokens)
    })
    .await
}

/// `POST /auth/logout` → 204; the refresh token's session is revoked.
pub async fn logout(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let request = json_body(&req, state.config.max_request_bytes)?;
        state.auth.logout(&state.db, request).await?;
        Ok(no_content())
    })
    .await
}

/// `GET /auth/me` → the caller's account.
pub async fn me(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let profile = state.auth.profile(&state.db, caller).await?;
        json_private(StatusCode::OK, &profile)
    })
    .await
}

/// `PATCH /auth/me` → the caller's account with its new display name.
pub async fn update(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let changes = json_body(&req, state.config.max_request_bytes)?;
        let profile = state
            .auth
            .update_profile(&state.db, caller, changes)
            .await?;
        json_private(StatusCode::OK, &profile)
    })
    .await
}

/// `DELETE /auth/me` → 204; the account, its owned workspaces and its
/// sessions are gone, and its tokens are refused from now on.
pub async fn delete(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let caller = state.caller(&req).await?;
        let request = json_body(&req, state.config.max_request_bytes)?;
        state
            .auth
            .delete_account(&state.db, caller, request)
            .await?;
        Ok(no_content())
    })
    .await
}

/// `GET /.well-known/jwks.json` → current and previous public keys.
pub async fn jwks(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let mut response = json(StatusCode::OK, state.auth.signer().jwks())?;
        response.headers_mut().insert(
            common::lambda_http::http::header::CACHE_CONTROL,
            common::lambda_http::http::HeaderValue::from_static("public, max-age=300"),
        );
        Ok(response)
    })
    .await
}

/// `GET /.well-known/openid-configuration`: the discovery document API
/// Gateway's JWT authorizer reads to find our keys.
pub async fn openid_configuration(state: &State, req: Request) -> Response<Body> {
    respond(&req, async {
        let host = req
            .headers()
            .get(common::lambda_http::http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let document = state.auth.signer().discovery(host);
        let mut response = json(StatusCode::OK, &document)?;
        response.headers_mut().insert(
            common::lambda_http::http::header::CACHE_CONTROL,
            common::lambda_http::http::HeaderValue::from_static("public, max-age=300"),
        );
        Ok(response)
    })
    .await
}
