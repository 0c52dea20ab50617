//! Keyset pagination: opaque cursors and page sizes from the query string.
//!
//! A cursor is the base64url JSON of the last key a page ended on. Clients
//! must treat it as opaque; we only promise that it is URL-safe.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lambda_http::{Request, RequestExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Result};

/// One page of a list and the cursor of the next, if there is one.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows (the extra row only says
    /// that another page exists); `key` gives the cursor of the last item.
    pub fn from_rows<K: Serialize>(mut rows: Vec<T>, limit: usize, key: impl Fn(&T) -> K) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|last| encode(&key(last)))
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }
}

pub fn encode<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("cursor keys serialize"))
}

/// Decodes a cursor; 422 naming the parameter when it is not one of ours.
pub fn decode<K: DeserializeOwned>(cursor: &str, param: &str) -> Result<K> {
    URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::unprocessable(
                param,
                format!("{param} is not a cursor this API returned; start again without it"),
            )
        })
}

/// A query-string parameter, if present and not empty.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name).map(str::to_owned))
        .filter(|v| !v.is_empty())
}

/// `?limit=` within `1..=max`, `default` when absent; 422 otherwise.
pub fn limit(req: &Request, default: usize, max: usize) -> Result<usize> {
    match query_param(req, "limit") {
        None => Ok(default),
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::unprocessable("limit", format!("limit must be between 1 and {max}"))
            }),
    }
}

/// The decoded `?cursor=`, if any.
pub fn cursor<K: DeserializeOwned>(req: &Request) -> Result<Option<K>> {
    query_param(req, "cursor")
        .map(|c| decode(&c, "cursor"))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let key = (42_i64, "abc".to_owned());
        let cursor = encode(&key);
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(decode::<(i64, String)>(&cursor, "cursor").unwrap(), key);
        let err = decode::<(i64, String)>("not-a-cursor!", "cursor").unwrap_err();
        assert_eq!(err.status(), 422);
        let other = encode(&"just a string");
        assert!(decode::<(i64, String)>(&other, "cursor").is_err());
    }

    #[test]
    fn pages_keep_limit_rows_and_point_past_the_last() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(
            decode::<i32>(page.next_cursor.as_deref().unwrap(), "c").unwrap(),
            2
        );
        let last = Page::from_rows(vec![1, 2], 2, |n| *n);
        assert_eq!(last.next_cursor, None);
    }
}
