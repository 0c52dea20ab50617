//! The one API error type, rendered as RFC 9457 (ex-7807) `application/problem+json`.

use std::time::Duration;

use http::StatusCode;
use serde::Serialize;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Every way a request can fail. Client errors carry a detail that is safe to
/// show; `Internal` keeps its cause for the logs and shows a generic detail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Also the answer for ids that exist but belong to someone else.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A body (`field` None) or one field of it over its size limit.
    #[error("{} is larger than {limit} bytes", field.as_deref().unwrap_or("request body"))]
    PayloadTooLarge { limit: usize, field: Option<String> },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{detail}")]
    Unprocessable {
        detail: String,
        field: Option<String>,
    },
    /// A conditional write sent without `If-Match` (RFC 6585 428).
    #[error("{0}")]
    PreconditionRequired(String),
    /// `If-Match` / `If-None-Match` did not hold. Carries the server's
    /// current copy (and its entity tag) so the client can merge.
    #[error("{detail}")]
    PreconditionFailed {
        detail: String,
        current: Option<Box<serde_json::Value>>,
        etag: Option<String>,
    },
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after: Duration,
    },
    /// An upstream provider (embeddings, answer model) refused the request
    /// outright: retrying the same request will not help.
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// The error with its whole cause chain, for logs (the `Display` of
    /// `Internal` is the generic detail clients see).
    pub fn chain(&self) -> String {
        match self {
            Self::Internal(cause) => format!("internal error: {cause:#}"),
            other => other.to_string(),
        }
    }

    pub fn unprocessable(field: &str, detail: impl Into<String>) -> Self {
        Self::Unprocessable {
            detail: detail.into(),
            field: Some(field.to_owned()),
        }
    }

    pub fn too_large(field: &str, limit: usize) -> Self {
        Self::PayloadTooLarge {
            limit,
            field: Some(field.to_owned()),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem document for this error; `instance` is the request id.
    pub fn problem(&self, instance: Option<&str>) -> Problem {
        let status = self.status();
        let slug = match self {
            Self::Unprocessable { .. } => "validation-error",
            Self::TooManyRequests { .. } => "rate-limited",
            _ => status.canonical_reason().unwrap_or("error"),
        };
        Problem {
            kind: format!(
                "https://ragway.dev/problems/{}",
                slug.to_lowercase().replace(' ', "-")
            ),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            instance: instance.map(str::to_owned),
            field: match self {
                Self::Unprocessable { field, .. } | Self::PayloadTooLarge { field, .. } => {
                    field.clone()
                }
                _ => None,
            },
            current: match self {
                Self::PreconditionFailed { current, .. } => current.as_deref().cloned(),
                _ => None,
            },
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            // Pool exhausted or database down: the client may retry.
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => {
                tracing::error!(error = %e, "database unavailable");
                Self::ServiceUnavailable("the database is unavailable, retry shortly".into())
            }
            _ => Self::Internal(anyhow::Error::new(e).context("database query failed")),
        }
    }
}

/// RFC 9457 problem details.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The request field at fault, for validation and size problems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The server's current copy, for 412 Precondition Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_get_the_whole_cause_chain() {
        let err = ApiError::Internal(
            anyhow::anyhow!("connection refused").context("building the HNSW index"),
        );
        assert_eq!(
            err.chain(),
            "internal error: building the HNSW index: connection refused"
        );
        assert_eq!(err.to_string(), "internal error");
        assert_eq!(ApiError::BadGateway("no".into()).chain(), "no");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::Internal(anyhow::anyhow!("password=hunter2 in connection string"));
        let problem = err.problem(Some("req-1"));
        assert_eq!(problem.status, 500);
        assert_eq!(problem.detail, "internal error");
        assert_eq!(problem.instance.as_deref(), Some("req-1"));
    }

    #[test]
    fn validation_problem_names_the_field() {
        let problem = ApiError::unprocessable("email", "not an email address").problem(None);
        assert_eq!(problem.status, 422);
        assert_eq!(problem.field.as_deref(), Some("email"));
        assert_eq!(problem.kind, "https://ragway.dev/problems/validation-error");
    }
}
