//! The HTTP edge shared by every route: turning results into responses,
//! parsing bodies and path parameters into typed values or 4xx problems.

use std::future::Future;
use std::str::FromStr;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Result};

/// The API Gateway request id (also the `instance` of problems).
pub fn request_id(req: &Request) -> Option<&str> {
    match req.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.as_deref(),
        _ => None,
    }
}

/// The client's address as API Gateway saw it.
pub fn source_ip(req: &Request) -> String {
    match req.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.http.source_ip.clone(),
        _ => None,
    }
    .unwrap_or_else(|| "unknown".to_owned())
}

/// Awaits a handler body and renders its outcome: the response, or a
/// problem+json document whose `instance` is the request id. Server errors
/// log their whole cause chain; clients see a generic detail.
pub async fn respond<F>(req: &Request, outcome: F) -> Response<Body>
where
    F: Future<Output = Result<Response<Body>>>,
{
    match outcome.await {
        Ok(response) => response,
        Err(error) => problem_response(&error, request_id(req)),
    }
}

/// A problem+json response for `error`.
pub fn problem_response(error: &ApiError, request_id: Option<&str>) -> Response<Body> {
    let status = error.status();
    if status.is_server_error() {
        tracing::error!(error = ?anyhow_chain(error), request_id, "request failed");
    } else {
        tracing::info!(status = status.as_u16(), detail = %error, "request refused");
    }
    let body = serde_json::to_vec(&error.problem(request_id)).unwrap_or_default();
    let mut response = Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/problem+json")
        .header(CACHE_CONTROL, "no-store");
    match error {
        ApiError::TooManyRequests { retry_after, .. } => {
            response = response.header(RETRY_AFTER, retry_after.as_secs().max(1));
        }
        ApiError::Unauthorized(_) => {
            response = response.header(http::header::WWW_AUTHENTICATE, "Bearer");
        }
        ApiError::PreconditionFailed {
            etag: Some(etag), ..
        } => {
            response = response.header(http::header::ETAG, crate::conditional::quote(etag));
        }
        _ => {}
    }
    response
        .body(Body::from(body))
        .expect("static headers are valid")
}

fn anyhow_chain(error: &ApiError) -> String {
    match error {
        ApiError::Internal(inner) => format!("{inner:#}"),
        other => other.to_string(),
    }
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Response<Body>> {
    let body =
        serde_json::to_vec(value).map_err(|e| anyhow::anyhow!("serializing response: {e}"))?;
    Ok(Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("static headers are valid"))
}

/// A JSON response that must not be cached (tokens, private data).
pub fn json_private<T: Serialize>(status: StatusCode, value: &T) -> Result<Response<Body>> {
    let mut response = json(status, value)?;
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub fn no_content() -> Response<Body> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .expect("static response is valid")
}

/// Parses a JSON body into `T`: 415 for another media type, 413 past
/// `max_bytes`, 400 for malformed JSON, 422 naming the field for a wrong shape.
pub fn json_body<T: DeserializeOwned>(req: &Request, max_bytes: usize) -> Result<T> {
    if let Some(content_type) = req.headers().get(CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(
                "request body must be application/json".into(),
            ));
        }
    }
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > max_bytes {
        return Err(ApiError::PayloadTooLarge {
            limit: max_bytes,
            field: None,
        });
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "request body is empty; a JSON object is required".into(),
        ));
    }
    // Syntax first, so malformed JSON is a 400 even where its first part
    // would already fail the typed parse.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    if let Some(field) = nul_member(bytes) {
        return Err(ApiError::Unprocessable {
            detail: format!("{field}: text must not contain NUL characters (U+0000)"),
            field: Some(field),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { "body".to_owned() } else { path };
                ApiError::Unprocessable {
                    detail: format!("{field}: {inner}"),
                    field: Some(field),
                }
            }
            _ => ApiError::BadRequest(format!("malformed JSON: {inner}")),
        }
    })?;
    Ok(value)
}

/// Where a JSON body holds U+0000, which no Postgres text or jsonb column
/// can store: the path of the first string holding one (of the object,
/// for a key), spelt as `serde_path_to_error` spells paths. Every body
/// goes through here, so no member can carry one into SQL.
fn nul_member(bytes: &[u8]) -> Option<String> {
    // Valid JSON can only write NUL as the escape `\u0000`: a scan for it
    // first, the parse only when one is there.
    let escaped = bytes.windows(6).enumerate().any(|(at, window)| {
        window == b"\\u0000"
            && bytes[..at]
                .iter()
                .rev()
                .take_while(|&&b| b == b'\\')
                .count()
                % 2
                == 0
    });
    if !escaped {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let mut path = Vec::new();
    nul_path(&value, &mut path).then(|| {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path.concat().trim_start_matches('.').to_owned()
        }
    })
}

fn nul_path(value: &serde_json::Value, path: &mut Vec<String>) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
            path.push(format!("[{i}]"));
            nul_path(item, path) || {
                path.pop();
                false
            }
        }),
        Value::Object(map) => map.iter().any(|(key, item)| {
            if key.contains('\0') {
                return true;
            }
            path.push(format!(".{key}"));
            nul_path(item, path) || {
                path.pop();
                false
            }
        }),
        _ => false,
    }
}

/// A typed path parameter; 400 naming the parameter when it does not parse.
pub fn path_param<T: FromStr>(req: &Request, name: &str) -> Result<T> {
    let params = req.path_parameters();
    let raw = params
        .first(name)
        .ok_or_else(|| ApiError::BadRequest(format!("missing path parameter {name}")))?;
    parse_param(name, raw)
}

/// The path parameters of a request to a function URL, which routes
/// nothing: `pattern` (template.yaml's spelling, `{name}` segments) must
/// match the request's method and path, else 404 as API Gateway would
/// answer.
pub fn routed(req: &Request, method: &str, pattern: &str) -> Result<Vec<(String, String)>> {
    let no_route = || ApiError::NotFound("no such route".into());
    if req.method().as_str() != method {
        return Err(no_route());
    }
    let path = req.uri().path();
    let mut params = Vec::new();
    let mut parts = path.trim_matches('/').split('/');
    for expected in pattern.trim_matches('/').split('/') {
        let part = parts.next().ok_or_else(no_route)?;
        match expected.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) if !part.is_empty() => {
                let value = percent_encoding::percent_decode_str(part)
                    .decode_utf8()
                    .map_err(|_| no_route())?;
                params.push((name.to_owned(), value.into_owned()));
            }
            Some(_) => return Err(no_route()),
            None if part == expected => {}
            None => return Err(no_route()),
        }
    }
    if parts.next().is_some() {
        return Err(no_route());
    }
    Ok(params)
}

/// A typed parameter of [`routed`]'s result; 400 as [`path_param`].
pub fn routed_param<T: FromStr>(params: &[(String, String)], name: &str) -> Result<T> {
    let raw = params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| ApiError::BadRequest(format!("missing path parameter {name}")))?;
    parse_param(name, raw)
}

fn parse_param<T: FromStr>(name: &str, raw: &str) -> Result<T> {
    raw.parse().map_err(|_| {
        let shown: String = raw.chars().take(64).collect();
        ApiError::BadRequest(format!(
            "path parameter {name} is not a valid id: {shown:?}"
        ))
    })
}

/// The `Authorization` header, if any and readable.
pub fn authorization(req: &Request) -> Option<&str> {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// A request's credential, told apart by its form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// An access token (ours or an external issuer's).
    Bearer(&'a str),
    /// A workspace API key, in `X-API-Key` or as the bearer token.
    ApiKey(&'a str),
    /// A widget's embed token.
    EmbedToken(&'a str),
}

/// The credential `req` carries, if any. `X-API-Key` wins over
/// `Authorization`; a bearer value is told apart by its prefix.
pub fn credential(req: &Request) -> Option<Credential<'_>> {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(key) = header("x-api-key") {
        return Some(Credential::ApiKey(key));
    }
    let token = header("authorization")?;
    let token = token
        .strip_prefix("Bearer ")
        .or_else(|| token.strip_prefix("bearer "))?
        .trim();
    Some(if token.starts_with(crate::caller::API_KEY_PREFIX) {
        Credential::ApiKey(token)
    } else if token.starts_with(crate::caller::EMBED_TOKEN_PREFIX) {
        Credential::EmbedToken(token)
    } else {
        Credential::Bearer(token)
    })
}

/// Adds the strong `ETag` for `opaque` and asks caches to revalidate
/// (documents are private and change under concurrent edits).
pub fn with_etag(mut response: Response<Body>, opaque: &str) -> Response<Body> {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&crate::conditional::quote(opaque)) {
        headers.insert(http::header::ETAG, value);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    response
}

/// 304 Not Modified: no body, the current `ETag`.
pub fn not_modified(opaque: &str) -> Response<Body> {
    with_etag(
        Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::Empty)
            .expect("static response is valid"),
        opaque,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_members_are_found_by_their_path_and_escaped_backslashes_are_not_nul() {
        for (body, field) in [
            (r#"{"a": "x\u0000"}"#, Some("a")),
            (r#"{"a": {"b": [1, "\u0000"]}}"#, Some("a.b[1]")),
            (r#"{"a": {"k\u0000": 1}}"#, Some("a")),
            (r#"{"k\u0000": 1}"#, Some("body")),
            (r#""\u0000""#, Some("body")),
            (r#"["ok", "\u0000"]"#, Some("[1]")),
            (r#"{"a": "\\\u0000"}"#, Some("a")),
            (r#"{"a": "\\u0000"}"#, None),
            (r#"{"a": "\\\\u0000"}"#, None),
            (r#"{"a": "u0000 \u0001"}"#, None),
        ] {
            assert_eq!(nul_member(body.as_bytes()).as_deref(), field, "{body}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::fuzz;
    use proptest::prelude::*;

    fn request(bytes: Vec<u8>) -> Request {
        let mut req = Request::new(Body::from(bytes));
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        req
    }

    /// A body as bytes: hostile JSON, JSON cut short, or any bytes.
    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => fuzz::body().prop_map(|v| serde_json::to_vec(&v).unwrap()),
            1 => (fuzz::body(), any::<prop::sample::Index>()).prop_map(|(v, at)| {
                let mut bytes = serde_json::to_vec(&v).unwrap();
                bytes.truncate(at.index(bytes.len() + 1));
                bytes
            }),
            1 => prop::collection::vec(any::<u8>(), 0..48),
        ]
    }

    /// A refusal a client can act on: 4xx, and a 422 names its field.
    fn client_error(error: &ApiError) -> std::result::Result<(), TestCaseError> {
        prop_assert!(error.status().is_client_error(), "{error:?}");
        if error.status() == StatusCode::UNPROCESSABLE_ENTITY {
            prop_assert!(fuzz::field(error).is_some(), "{error:?}");
        }
        Ok(())
    }

    /// Parses `bytes` as a `T`; `Some` when it parsed.
    fn parsed<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<Option<T>, TestCaseError> {
        match json_body::<T>(&request(bytes.to_vec()), 1 << 20) {
            Ok(value) => Ok(Some(value)),
            Err(error) => client_error(&error).map(|()| None),
        }
    }

    fn holds_nul(value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(holds_nul),
            Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(fuzz::config())]

        /// Every request body type, then the checks that need no
        /// database: a value or a 4xx naming its field, never a panic.
        #[test]
        fn every_body_is_a_value_or_a_4xx_naming_the_field(bytes in bytes()) {
            let config = fuzz::app_config();
            if let Some(q) = parsed::<crate::answer::QueryIn>(&bytes)? {
                let checked = crate::answer::check_text("question", &q.question).and_then(|_| {
                    crate::answer::Options::parse(
                        &config.query, q.top_k, q.mode, q.filters, q.answer, q.max_tokens,
                    )
                });
                if let Err(error) = checked {
                    client_error(&error)?;
                }
            }
            if let Some(new) = parsed::<crate::uploads::NewUpload>(&bytes)? {
                let workspace = crate::ids::WorkspaceId::new();
                if let Err(error) = crate::uploads::plan(workspace, new, &config) {
                    client_error(&error)?;
                }
            }
            if let Some(c) = parsed::<crate::auth::Credentials>(&bytes)?
                && let Err(error) = crate::auth::passwords::check_policy(&c.password, &c.email, 10)
            {
                client_error(&error)?;
            }
            parsed::<crate::documents::NewDocument>(&bytes)?;
            parsed::<crate::documents::DocumentReplacement>(&bytes)?;
            parsed::<crate::workspaces::NewWorkspace>(&bytes)?;
            parsed::<crate::workspaces::WorkspaceChanges>(&bytes)?;
            if let Some(m) = parsed::<crate::invitations::MemberRequest>(&bytes)?
                && let Ok(new) = m.into_invitation()
                && let Err(error) = crate::auth::normalize_email(&new.email)
            {
                client_error(&error)?;
            }
            parsed::<crate::invitations::NewInvitation>(&bytes)?;
            parsed::<crate::invitations::Acceptance>(&bytes)?;
            parsed::<crate::auth::RefreshRequest>(&bytes)?;
            if let Some(p) = parsed::<crate::auth::ProfileChanges>(&bytes)?
                && let Some(Some(name)) = p.display_name
                && let Err(error) = crate::auth::check_display_name(&name)
            {
                client_error(&error)?;
            }
            parsed::<crate::auth::Signup>(&bytes)?;
            parsed::<crate::auth::AccountDeletion>(&bytes)?;
            parsed::<serde_json::Value>(&bytes)?;
        }

        /// No body that holds NUL gets through, whatever its type.
        #[test]
        fn bodies_holding_nul_are_refused_and_only_those(value in fuzz::body()) {
            let bytes = serde_json::to_vec(&value).unwrap();
            prop_assert_eq!(nul_member(&bytes).is_some(), holds_nul(&value));
            if holds_nul(&value) {
                let error = json_body::<serde_json::Value>(&request(bytes), 1 << 20).unwrap_err();
                prop_assert_eq!(error.status(), StatusCode::UNPROCESSABLE_ENTITY);
            }
        }

        #[test]
        fn nul_scan_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = nul_member(&bytes);
        }
    }
}
