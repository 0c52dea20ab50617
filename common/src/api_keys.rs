//! Workspace API keys: created by owners and admins, shown once, stored
//! as a keyed hash, limited to scopes. Not built yet.

use crate::State;
use crate::caller::Caller;
use crate::error::{ApiError, Result};

/// What every key starts with, so a bearer value is recognised as a key.
pub const PREFIX: &str = "rwk_";

/// The caller a key speaks for; 401 for anything but a live key.
pub async fn authenticate(_state: &State, _key: &str) -> Result<Caller> {
    Err(ApiError::Unauthorized(
        "API keys are not supported yet".into(),
    ))
}
