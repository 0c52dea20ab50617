//! Who is calling: a request's credential (a user's bearer token, a
//! workspace API key or a widget visitor's embed token) resolved to a
//! [`Caller`]. It sits above the state and the credential stores it reads,
//! so they need not know of each other.

use crate::caller::{Caller, Grant, Use};
use crate::http::Credential;
use crate::state::State;

impl State {
    /// The signed-in user calling `req`: 401 without a valid credential,
    /// 403 for an API key or embed token (routes that take those say so
    /// through [`State::caller_for`]).
    pub async fn caller(&self, req: &lambda_http::Request) -> crate::Result<Caller> {
        let caller = self.any_caller(req).await?;
        if caller.grant.is_some() {
            return Err(crate::ApiError::Forbidden(
                "this route needs a signed-in user, not an API key or embed token".into(),
            ));
        }
        Ok(caller)
    }

    /// The caller of a route that does `what`: a signed-in user, or a key
    /// or visitor whose grant permits it (403 otherwise).
    pub async fn caller_for(&self, req: &lambda_http::Request, what: Use) -> crate::Result<Caller> {
        let caller = self.any_caller(req).await?;
        if !caller.permits(what) {
            return Err(crate::ApiError::Forbidden(match caller.grant {
                Some(Grant::Visitor { .. }) => "an embed token is good for chat only".into(),
                _ => format!("the API key's scopes do not cover {what:?}"),
            }));
        }
        Ok(caller)
    }

    async fn any_caller(&self, req: &lambda_http::Request) -> crate::Result<Caller> {
        let caller = match crate::http::credential(req) {
            Some(Credential::ApiKey(key)) => crate::api_keys::authenticate(self, key).await?,
            Some(Credential::EmbedToken(token)) => {
                crate::widgets::authenticate(self, token, req).await?
            }
            // `Auth::caller` takes the header as sent ("Bearer ...").
            Some(Credential::Bearer(_)) => {
                self.auth
                    .caller(&self.db, crate::http::authorization(req))
                    .await?
            }
            None => return Err(crate::ApiError::Unauthorized("missing bearer token".into())),
        };
        crate::access_log::note_user(caller.user_id);
        Ok(caller)
    }
}
