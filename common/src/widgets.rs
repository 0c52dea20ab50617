//! Chat widgets embedded in other sites, and the short-lived embed tokens
//! their visitors chat with. Not built yet.

use crate::State;
use crate::caller::Caller;
use crate::error::{ApiError, Result};

/// What every embed token starts with.
pub const PREFIX: &str = "rwe_";

/// The visitor an embed token speaks for; 401 for anything but a live token.
pub async fn authenticate(_state: &State, _token: &str) -> Result<Caller> {
    Err(ApiError::Unauthorized(
        "embed tokens are not supported yet".into(),
    ))
}
