//! Input cleaning for documents: a title, inline content and metadata as
//! a client sent them become a validated [`Body`] (trimmed, within
//! `DOCUMENT_MAX_*`, no NUL characters Postgres cannot store) with its
//! content hash and entity tag; what is at fault is named in the 422's
//! `field`.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::DocumentLimits;
use crate::error::{ApiError, Result};

/// Validated content and its hashes.
#[derive(Clone)]
pub(crate) struct Body {
    pub(crate) title: String,
    pub(crate) content: Option<String>,
    pub(crate) content_type: String,
    pub(crate) size: i64,
    pub(crate) metadata: Value,
    pub(crate) content_sha256: String,
    pub(crate) etag: String,
}

/// The first state of an uploaded document: title and metadata checked,
/// content unknown until the file arrives (empty content hash).
pub(crate) fn upload_state(
    title: &str,
    content_type: &str,
    size: i64,
    metadata: Option<Value>,
    limits: &DocumentLimits,
) -> Result<Body> {
    Ok(Body::new(
        clean_title(title, limits)?,
        None,
        content_type.to_owned(),
        size,
        clean_metadata(metadata, limits)?,
        String::new(),
    ))
}

const INLINE_TYPES: &[&str] = &["text/plain", "text/markdown", "application/json"];

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn clean_title(title: &str, limits: &DocumentLimits) -> Result<String> {
    let title = title.trim();
    if title.is_empty() {
        return Err(ApiError::unprocessable("title", "title must not be empty"));
    }
    if title.chars().count() > limits.title_chars {
        return Err(ApiError::unprocessable(
            "title",
            format!("title must be at most {} characters", limits.title_chars),
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "title",
            "title must not contain control characters",
        ));
    }
    Ok(title.to_owned())
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether any key or string in `value` holds NUL (jsonb cannot store it).
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

pub(super) fn clean_metadata(metadata: Option<Value>, limits: &DocumentLimits) -> Result<Value> {
    let metadata = metadata.unwrap_or_else(|| Value::Object(Default::default()));
    let Value::Object(map) = &metadata else {
        return Err(ApiError::unprocessable(
            "metadata",
            "metadata must be a JSON object",
        ));
    };
    if map.keys().any(|k| k.is_empty() || k.chars().count() > 128) {
        return Err(ApiError::unprocessable(
            "metadata",
            "metadata keys must be 1 to 128 characters",
        ));
    }
    if has_nul(&metadata) {
        return Err(ApiError::unprocessable(
            "metadata",
            "metadata must not contain NUL characters",
        ));
    }
    if serde_json::to_vec(&metadata).map_or(0, |v| v.len()) > limits.metadata_bytes {
        return Err(ApiError::too_large("metadata", limits.metadata_bytes));
    }
    if depth(&metadata) > limits.metadata_depth {
        return Err(ApiError::unprocessable(
            "metadata",
            format!(
                "metadata may nest at most {} levels deep",
                limits.metadata_depth
            ),
        ));
    }
    Ok(metadata)
}

/// Inline content: a string in one of [`INLINE_TYPES`], or any JSON value.
fn clean_content(
    content: Value,
    content_type: Option<&str>,
    limits: &DocumentLimits,
) -> Result<(String, String)> {
    let declared = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    if let Some(ct) = &declared
        && !INLINE_TYPES.contains(&ct.as_str())
    {
        return Err(ApiError::unprocessable(
            "content_type",
            format!(
                "inline documents are {}; upload other formats",
                INLINE_TYPES.join(", ")
            ),
        ));
    }
    let (text, content_type) = match content {
        Value::String(text) => {
            let ct = declared.unwrap_or_else(|| "text/plain".to_owned());
            if ct == "application/json" {
                let parsed = serde_json::from_str::<Value>(&text).map_err(|_| {
                    ApiError::unprocessable(
                        "content",
                        "content is declared application/json but is not valid JSON",
                    )
                })?;
                // Stored escaped it fits, but its extracted text would not.
                if has_nul(&parsed) {
                    return Err(nul_content());
                }
            }
            (text, ct)
        }
        Value::Null => {
            return Err(ApiError::unprocessable(
                "content",
                "content must be text or a JSON value",
            ));
        }
        value => {
            if declared
                .as_deref()
                .is_some_and(|ct| ct != "application/json")
            {
                return Err(ApiError::unprocessable(
                    "content_type",
                    "structured content is application/json",
                ));
            }
            if has_nul(&value) {
                return Err(nul_content());
            }
            let text = serde_json::to_string(&value)
                .map_err(|e| anyhow::anyhow!("serializing content: {e}"))?;
            (text, "application/json".to_owned())
        }
    };
    if text.len() > limits.content_bytes {
        return Err(ApiError::too_large("content", limits.content_bytes));
    }
    if text.contains('\0') {
        // Postgres text cannot hold NUL.
        return Err(nul_content());
    }
    Ok((text, content_type))
}

/// Content holding U+0000, raw or (in JSON) escaped: neither the content
/// column nor the chunks extracted from it could store it.
fn nul_content() -> ApiError {
    ApiError::unprocessable("content", "content must not contain NUL characters")
}

impl Body {
    pub(super) fn new(
        title: String,
        content: Option<String>,
        content_type: String,
        size: i64,
        metadata: Value,
        content_sha256: String,
    ) -> Self {
        let meta = serde_json::to_vec(&metadata).unwrap_or_default();
        let etag = sha256_hex(&[
            title.as_bytes(),
            content_type.as_bytes(),
            &meta,
            content_sha256.as_bytes(),
        ]);
        Self {
            title,
            content,
            content_type,
            size,
            metadata,
            content_sha256,
            etag,
        }
    }

    pub(crate) fn inline(
        title: &str,
        content: Value,
        content_type: Option<&str>,
        metadata: Option<Value>,
        limits: &DocumentLimits,
    ) -> Result<Self> {
        let title = clean_title(title, limits)?;
        let (text, content_type) = clean_content(content, content_type, limits)?;
        let metadata = clean_metadata(metadata, limits)?;
        let sha = sha256_hex(&[text.as_bytes()]);
        let size = text.len() as i64;
        Ok(Self::new(
            title,
            Some(text),
            content_type,
            size,
            metadata,
            sha,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DocumentLimits {
        DocumentLimits {
            content_bytes: 100,
            title_chars: 10,
            metadata_bytes: 64,
            metadata_depth: 2,
        }
    }

    #[test]
    fn etag_covers_title_type_metadata_and_content() {
        let base = Body::inline("t", "hello".into(), None, None, &limits()).unwrap();
        let same =
            Body::inline(" t ", "hello".into(), Some("text/plain"), None, &limits()).unwrap();
        assert_eq!(base.etag, same.etag);
        for other in [
            Body::inline("u", "hello".into(), None, None, &limits()),
            Body::inline("t", "hello!".into(), None, None, &limits()),
            Body::inline("t", "hello".into(), Some("text/markdown"), None, &limits()),
            Body::inline(
                "t",
                "hello".into(),
                None,
                Some(serde_json::json!({"a": 1})),
                &limits(),
            ),
        ] {
            assert_ne!(other.unwrap().etag, base.etag);
        }
        assert_eq!(base.etag.len(), 64);
    }

    #[test]
    fn limits_name_their_field() {
        let field = |r: Result<Body>| match r {
            Err(ApiError::Unprocessable { field, .. }) => (422, field.unwrap()),
            Err(ApiError::PayloadTooLarge { field, .. }) => (413, field.unwrap()),
            other => panic!("expected a problem, got {:?}", other.map(|b| b.etag)),
        };
        let l = limits();
        assert_eq!(
            field(Body::inline("", "x".into(), None, None, &l)),
            (422, "title".into())
        );
        assert_eq!(
            field(Body::inline("12345678901", "x".into(), None, None, &l)),
            (422, "title".into())
        );
        assert_eq!(
            field(Body::inline("t", "x".repeat(101).into(), None, None, &l)),
            (413, "content".into())
        );
        assert_eq!(
            field(Body::inline("t", "x".into(), Some("image/png"), None, &l)),
            (422, "content_type".into())
        );
        assert_eq!(
            field(Body::inline(
                "t",
                "{".into(),
                Some("application/json"),
                None,
                &l
            )),
            (422, "content".into())
        );
        assert_eq!(
            field(Body::inline("t", Value::Null, None, None, &l)),
            (422, "content".into())
        );
        let deep = serde_json::json!({"a": {"b": {"c": 1}}});
        assert_eq!(
            field(Body::inline("t", "x".into(), None, Some(deep), &l)),
            (422, "metadata".into())
        );
        let big = serde_json::json!({"a": "y".repeat(100)});
        assert_eq!(
            field(Body::inline("t", "x".into(), None, Some(big), &l)),
            (413, "metadata".into())
        );
        assert_eq!(
            field(Body::inline(
                "t",
                "x".into(),
                None,
                Some(serde_json::json!([1])),
                &l
            )),
            (422, "metadata".into())
        );
        let nul = serde_json::json!({"a": ["ok", "bad\u{0}"]});
        assert_eq!(
            field(Body::inline("t", "x".into(), None, Some(nul.clone()), &l)),
            (422, "metadata".into())
        );
        // In content: raw, in a JSON value, escaped in JSON text.
        for (content, content_type) in [
            (Value::from("a\u{0}b"), None),
            (nul, None),
            (Value::from(r#"{"k": "\u0000"}"#), Some("application/json")),
        ] {
            assert_eq!(
                field(Body::inline("t", content, content_type, None, &l)),
                (422, "content".into())
            );
        }
        // Escaped NUL in text that is not JSON is just those six characters.
        assert!(Body::inline("t", r#"{"k": "\u0000"}"#.into(), None, None, &l).is_ok());
    }

    #[test]
    fn structured_content_is_stored_as_json() {
        let body = Body::inline(
            "t",
            serde_json::json!({"b": 1, "a": [true]}),
            None,
            None,
            &limits(),
        )
        .unwrap();
        assert_eq!(body.content_type, "application/json");
        assert_eq!(body.content.as_deref(), Some(r#"{"a":[true],"b":1}"#));
    }

    mod properties {
        use super::*;
        use crate::fuzz;
        use proptest::prelude::*;

        fn content_type() -> impl Strategy<Value = Option<String>> {
            prop::option::of(prop_oneof![
                prop::sample::select(vec![
                    "text/plain",
                    "application/json",
                    "text/markdown; charset=utf-8",
                    "TEXT/HTML",
                    "image/png",
                    "",
                    ";",
                ])
                .prop_map(str::to_owned),
                fuzz::text(),
            ])
        }

        proptest! {
            #![proptest_config(fuzz::config())]

            /// Any inline document: stored as checked, or refused naming one
            /// of its own members; what is stored holds no NUL anywhere and
            /// keeps to the limits.
            #[test]
            fn any_inline_document_is_stored_clean_or_refused_naming_its_field(
                title in fuzz::text(),
                content in fuzz::json(),
                content_type in content_type(),
                metadata in prop::option::of(fuzz::json()),
            ) {
                let l = limits();
                match Body::inline(&title, content, content_type.as_deref(), metadata, &l) {
                    Ok(body) => {
                        let text = body.content.unwrap();
                        prop_assert!(!body.title.is_empty() && !body.title.contains('\0'));
                        prop_assert!(!text.contains('\0') && text.len() <= l.content_bytes);
                        prop_assert!(!has_nul(&body.metadata) && body.metadata.is_object());
                        if body.content_type == "application/json" {
                            let parsed: Value = serde_json::from_str(&text).unwrap();
                            prop_assert!(!has_nul(&parsed));
                        }
                    }
                    Err(error) => {
                        let field = fuzz::field(&error);
                        prop_assert!(
                            matches!(field, Some("title" | "content" | "content_type" | "metadata")),
                            "{error:?}"
                        );
                    }
                }
            }
        }
    }
}
