//! Keyset pagination: opaque cursors and page sizes from the query string.
//!
//! A cursor is the base64url JSON of the last key a page ended on. Clients
//! must treat it as opaque; we only promise that it is URL-safe.
//!
//! Decoding is strict: a cursor must be exactly what [`encode`] writes for
//! a key of the expected type (no other spelling of the same JSON, no
//! extra fields), and the key must be one the server could have written
//! ([`CursorKey::plausible`]: no negative position, no time Postgres
//! cannot hold). Anything else is refused before it reaches SQL.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lambda_http::{Request, RequestExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Result};

/// One page of a list and the cursor of the next, if there is one.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// Longest cursor accepted. Sync cursors, the longest we issue, hold two
/// snapshots whose in-progress lists grow with concurrent transactions;
/// a few KB in practice.
pub const MAX_CURSOR_CHARS: usize = 16 * 1024;

/// A key a cursor may hold.
pub trait CursorKey: Serialize + DeserializeOwned {
    /// Whether the server could have written this key; checked after
    /// decoding, so a forged value never reaches a query.
    fn plausible(&self) -> bool {
        true
    }
}

/// Positions (versions, ordinals) are never negative.
impl CursorKey for i32 {
    fn plausible(&self) -> bool {
        *self >= 0
    }
}

impl CursorKey for i64 {
    fn plausible(&self) -> bool {
        *self >= 0
    }
}

impl CursorKey for String {}

impl CursorKey for uuid::Uuid {}

// Here rather than in `ids`: the ids know nothing of cursors.
impl CursorKey for crate::ids::UserId {}
impl CursorKey for crate::ids::WorkspaceId {}
impl CursorKey for crate::ids::DocumentId {}
impl CursorKey for crate::ids::ChunkId {}
impl CursorKey for crate::ids::InvitationId {}
impl CursorKey for crate::ids::ShareLinkId {}
impl CursorKey for crate::ids::JobId {}

/// Times we wrote came from Postgres, so they are within the years it holds.
impl CursorKey for chrono::DateTime<chrono::Utc> {
    fn plausible(&self) -> bool {
        crate::db::POSTGRES_YEARS.contains(&chrono::Datelike::year(self))
    }
}

impl<A: CursorKey, B: CursorKey> CursorKey for (A, B) {
    fn plausible(&self) -> bool {
        self.0.plausible() && self.1.plausible()
    }
}

/// Decodes a cursor; 422 naming the parameter when it is not one of ours.
pub fn decode<K: CursorKey>(cursor: &str, param: &str) -> Result<K> {
    let cursor = cursor.trim();
    (cursor.len() <= MAX_CURSOR_CHARS)
        .then(|| URL_SAFE_NO_PAD.decode(cursor).ok())
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<K>(&bytes).ok())
        // Only the spelling `encode` gives: this refuses unknown fields,
        // other number formats, whitespace and escapes we never write.
        .filter(|key| key.plausible() && encode(key) == cursor)
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
pub fn cursor<K: CursorKey>(req: &Request) -> Result<Option<K>> {
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
    fn only_what_encode_writes_for_a_plausible_key_is_a_cursor() {
        let b64 = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let at = |year| {
            chrono::NaiveDate::from_ymd_opt(year, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
        };
        let id = uuid::Uuid::nil();
        assert!(
            decode::<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>(&encode(&(at(2024), id)), "c")
                .is_ok()
        );
        for year in [0, -1, 10_000, 200_000] {
            let forged = encode(&(at(year), id));
            let err = decode::<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>(&forged, "c");
            assert_eq!(err.unwrap_err().status(), 422, "{year}");
        }
        assert!(decode::<i32>(&encode(&-1), "c").is_err());
        assert_eq!(decode::<i32>(&encode(&7), "c").unwrap(), 7);
        // The same JSON values, spelt otherwise than `encode` spells them.
        for other in ["7 ", " 7", "7.0", "7e0", "07", "\"7\""] {
            assert!(decode::<i32>(&b64(other), "c").is_err(), "{other}");
        }
        assert!(decode::<String>(&b64("\"\\u0061\""), "c").is_err());
        assert!(decode::<i32>(&format!("{}=", encode(&7)), "c").is_err());
        assert!(decode::<String>(&encode(&"x".repeat(MAX_CURSOR_CHARS)), "c").is_err());
        assert_eq!(decode::<i32>(&format!(" {} ", encode(&7)), "c").unwrap(), 7);
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

    mod properties {
        use super::*;
        use crate::fuzz;
        use crate::ids::DocumentId;
        use chrono::{DateTime, Utc};
        use proptest::prelude::*;

        /// Cursor-looking text: base64 of hostile JSON, of JSON spelt
        /// otherwise, of bytes; or anything.
        fn cursor_text() -> impl Strategy<Value = String> {
            prop_oneof![
                fuzz::json().prop_map(|v| encode(&v)),
                fuzz::text().prop_map(|t| URL_SAFE_NO_PAD.encode(t)),
                prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
                "[A-Za-z0-9_=+/ -]{0,64}",
                fuzz::text(),
            ]
        }

        /// A time Postgres can hold, at microsecond precision as it stores them.
        fn stored_time() -> impl Strategy<Value = DateTime<Utc>> {
            let first = DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z").unwrap();
            let last = DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999Z").unwrap();
            (first.timestamp_micros()..=last.timestamp_micros())
                .prop_map(|us| DateTime::from_timestamp_micros(us).unwrap())
        }

        fn refused<K: CursorKey + std::fmt::Debug>(
            text: &str,
        ) -> std::result::Result<(), TestCaseError> {
            if let Err(error) = decode::<K>(text, "cursor") {
                prop_assert_eq!(error.status(), 422);
                prop_assert_eq!(fuzz::field(&error), Some("cursor"));
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(fuzz::config())]

            /// Every decoder: never a panic, a 422 naming `cursor` when
            /// refused, and what it accepts is what `encode` would write.
            #[test]
            fn any_text_is_a_cursor_or_a_422_naming_it(text in cursor_text()) {
                refused::<i32>(&text)?;
                refused::<DocumentId>(&text)?;
                refused::<uuid::Uuid>(&text)?;
                refused::<(DateTime<Utc>, uuid::Uuid)>(&text)?;
                if let Ok(key) = decode::<(DateTime<Utc>, uuid::Uuid)>(&text, "cursor") {
                    prop_assert_eq!(encode(&key), text.trim());
                    prop_assert!(crate::db::POSTGRES_YEARS.contains(&chrono::Datelike::year(&key.0)));
                }
                if let Ok(n) = decode::<i32>(&text, "cursor") {
                    prop_assert!(n >= 0);
                }
            }

            /// Every cursor the server issues comes back as its key.
            #[test]
            fn issued_cursors_round_trip(
                position in 0..=i32::MAX,
                id in any::<u128>(),
                at in stored_time(),
            ) {
                let id = uuid::Uuid::from_u128(id);
                prop_assert_eq!(decode::<i32>(&encode(&position), "cursor").unwrap(), position);
                prop_assert_eq!(decode::<DocumentId>(&encode(&DocumentId(id)), "cursor").unwrap(), DocumentId(id));
                prop_assert_eq!(decode::<uuid::Uuid>(&encode(&id), "cursor").unwrap(), id);
                let key = (at, id);
                prop_assert_eq!(decode::<(DateTime<Utc>, uuid::Uuid)>(&encode(&key), "cursor").unwrap(), key);
            }
        }
    }
}
