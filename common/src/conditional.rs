//! Conditional requests (RFC 9110 §13): `If-Match` and `If-None-Match`
//! against a resource's entity tag.
//!
//! Hand-written because the grammar is small and exact here matters: the
//! `headers` crate accepts any comma-split text and would bring five crates
//! into every function for two headers. Entity tags are compared as RFC 9110
//! §8.8.3.2 says: strong comparison for `If-Match`, weak for `If-None-Match`.

use http::HeaderMap;
use http::header::{HeaderName, IF_MATCH, IF_NONE_MATCH};

use crate::error::{ApiError, Result};

/// One entity tag from a header: its opaque value without quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    pub weak: bool,
    pub opaque: String,
}

/// A parsed `If-Match` / `If-None-Match` field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagCondition {
    /// `*`: any current representation.
    Any,
    Tags(Vec<EntityTag>),
}

impl TagCondition {
    /// Parses `"*"` or a comma-separated list of entity tags (empty list
    /// elements allowed, as for every `#rule`); `None` if malformed.
    pub fn parse(value: &str) -> Option<Self> {
        if value.trim() == "*" {
            return Some(Self::Any);
        }
        let mut tags = Vec::new();
        let mut rest = value;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            let weak = rest.starts_with("W/");
            if weak {
                rest = &rest[2..];
            }
            let body = rest.strip_prefix('"')?;
            let end = body.find('"')?;
            let opaque = &body[..end];
            // etagc = %x21 / %x23-7E / obs-text
            if !opaque
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
            {
                return None;
            }
            tags.push(EntityTag {
                weak,
                opaque: opaque.to_owned(),
            });
            rest = body[end + 1..].trim_start_matches([' ', '\t']);
            if !(rest.is_empty() || rest.starts_with(',')) {
                return None;
            }
        }
        if tags.is_empty() {
            return None;
        }
        Some(Self::Tags(tags))
    }

    /// `If-Match` semantics: strong comparison; `*` needs a current representation.
    fn matches_strong(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (_, None) => false,
            (Self::Any, Some(_)) => true,
            (Self::Tags(tags), Some(current)) => {
                tags.iter().any(|t| !t.weak && t.opaque == current)
            }
        }
    }

    /// `If-None-Match` semantics: weak comparison.
    fn matches_weak(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (_, None) => false,
            (Self::Any, Some(_)) => true,
            (Self::Tags(tags), Some(current)) => tags.iter().any(|t| t.opaque == current),
        }
    }
}

/// The conditions a request carries. Our entity tags are always strong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub if_match: Option<TagCondition>,
    pub if_none_match: Option<TagCondition>,
}

impl Preconditions {
    /// Reads both headers (several field lines combine as one list); 400 if malformed.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self> {
        Ok(Self {
            if_match: field(headers, IF_MATCH)?,
            if_none_match: field(headers, IF_NONE_MATCH)?,
        })
    }

    /// 428 unless the request says which version it updates.
    pub fn require_if_match(&self) -> Result<()> {
        if self.if_match.is_none() {
            return Err(ApiError::PreconditionRequired(
                "this update requires an If-Match header with the document's ETag \
                 (from GET), so concurrent edits are never lost"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether a state-changing request may proceed against the resource
    /// whose current tag is `current` (`None`: it does not exist).
    /// RFC 9110 §13.2.2 steps 1 and 3; false means 412.
    pub fn allow_write(&self, current: Option<&str>) -> bool {
        if let Some(condition) = &self.if_match
            && !condition.matches_strong(current)
        {
            return false;
        }
        if let Some(condition) = &self.if_none_match
            && condition.matches_weak(current)
        {
            return false;
        }
        true
    }

    /// Whether a GET answers 304 Not Modified (§13.2.2 step 3 for GET).
    /// `If-Match` on a GET is checked by [`Self::allow_read`].
    pub fn not_modified(&self, current: &str) -> bool {
        self.if_none_match
            .as_ref()
            .is_some_and(|c| c.matches_weak(Some(current)))
    }

    /// `If-Match` on a GET: false means 412.
    pub fn allow_read(&self, current: &str) -> bool {
        self.if_match
            .as_ref()
            .is_none_or(|c| c.matches_strong(Some(current)))
    }
}

fn field(headers: &HeaderMap, name: HeaderName) -> Result<Option<TagCondition>> {
    let mut values = headers.get_all(&name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let mut joined = String::new();
    for value in values {
        let text = value.to_str().map_err(|_| malformed(&name))?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(text);
    }
    TagCondition::parse(&joined)
        .map(Some)
        .ok_or_else(|| malformed(&name))
}

fn malformed(name: &HeaderName) -> ApiError {
    ApiError::BadRequest(format!(
        "{name} must be \"*\" or a list of entity tags like \"abc\" or W/\"abc\""
    ))
}

/// The strong entity tag for an opaque value, as sent in `ETag`.
pub fn quote(opaque: &str) -> String {
    format!("\"{opaque}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(if_match: Option<&str>, if_none_match: Option<&str>) -> Preconditions {
        let mut headers = HeaderMap::new();
        if let Some(v) = if_match {
            headers.insert(IF_MATCH, v.parse().unwrap());
        }
        if let Some(v) = if_none_match {
            headers.insert(IF_NONE_MATCH, v.parse().unwrap());
        }
        Preconditions::from_headers(&headers).unwrap()
    }

    #[test]
    fn lists_parse_with_weak_tags_spaces_and_empty_elements() {
        assert_eq!(
            TagCondition::parse(r#" "a", W/"b" ,, "c,d""#),
            Some(TagCondition::Tags(vec![
                EntityTag {
                    weak: false,
                    opaque: "a".into()
                },
                EntityTag {
                    weak: true,
                    opaque: "b".into()
                },
                EntityTag {
                    weak: false,
                    opaque: "c,d".into()
                },
            ]))
        );
        assert_eq!(TagCondition::parse(" * "), Some(TagCondition::Any));
        assert_eq!(TagCondition::parse(r#""""#).map(|_| ()), Some(()));
    }

    #[test]
    fn malformed_lists_are_refused() {
        for bad in [
            "abc",
            r#""abc"#,
            r#""a" "b""#,
            r#"w/"a""#,
            "",
            ",",
            r#""a"x"#,
            "*, \"a\"",
        ] {
            assert_eq!(TagCondition::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        assert!(pre(Some(r#""abc""#), None).allow_write(Some("abc")));
        assert!(pre(Some(r#""x", "abc""#), None).allow_write(Some("abc")));
        assert!(!pre(Some(r#"W/"abc""#), None).allow_write(Some("abc")));
        assert!(!pre(Some(r#""abd""#), None).allow_write(Some("abc")));
        assert!(pre(Some("*"), None).allow_write(Some("abc")));
        assert!(!pre(Some("*"), None).allow_write(None));
        assert!(!pre(Some(r#""abc""#), None).allow_write(None));
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        assert!(pre(None, Some(r#"W/"abc""#)).not_modified("abc"));
        assert!(pre(None, Some(r#""x", "abc""#)).not_modified("abc"));
        assert!(pre(None, Some("*")).not_modified("abc"));
        assert!(!pre(None, Some(r#""abd""#)).not_modified("abc"));
        assert!(!pre(None, None).not_modified("abc"));
        // On writes a matching If-None-Match fails the request.
        assert!(!pre(None, Some("*")).allow_write(Some("abc")));
        assert!(pre(None, Some("*")).allow_write(None));
    }

    #[test]
    fn several_field_lines_form_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(IF_MATCH, r#""a""#.parse().unwrap());
        headers.append(IF_MATCH, r#""b""#.parse().unwrap());
        let pre = Preconditions::from_headers(&headers).unwrap();
        assert!(pre.allow_write(Some("b")));
        assert!(pre.require_if_match().is_ok());
        assert!(Preconditions::default().require_if_match().is_err());
    }
    mod properties {
        use super::*;
        use crate::fuzz;
        use proptest::prelude::*;

        /// An opaque tag of etagc characters (ASCII and some non-ASCII).
        fn opaque() -> impl Strategy<Value = String> {
            "[!#-~\u{80}-\u{ff}é💩]{0,16}"
        }

        fn header_text() -> impl Strategy<Value = String> {
            prop_oneof![
                fuzz::text(),
                "[W/\\\\\",* \\t!a-z]{0,24}",
                prop::collection::vec((any::<bool>(), opaque(), "[ ,\\t]{0,3}"), 0..4).prop_map(
                    |tags| {
                        tags.into_iter()
                            .map(|(weak, o, sep)| {
                                format!("{}\"{o}\"{sep}", if weak { "W/" } else { "" })
                            })
                            .collect()
                    }
                ),
            ]
        }

        proptest! {
            #![proptest_config(fuzz::config())]

            /// Any header text: no panic; what parses is `*` or a non-empty
            /// list of tags whose opaque parts hold no quote.
            #[test]
            fn any_header_text_parses_or_is_refused(text in header_text()) {
                match TagCondition::parse(&text) {
                    Some(TagCondition::Tags(tags)) => {
                        prop_assert!(!tags.is_empty());
                        prop_assert!(tags.iter().all(|t| !t.opaque.contains('"')));
                    }
                    Some(TagCondition::Any) => prop_assert_eq!(text.trim(), "*"),
                    None => {}
                }
                // Through real headers (those `http` accepts): a 400 at worst.
                if let Ok(value) = http::HeaderValue::from_str(&text) {
                    let mut headers = HeaderMap::new();
                    headers.insert(IF_MATCH, value.clone());
                    headers.append(IF_NONE_MATCH, value);
                    if let Err(error) = Preconditions::from_headers(&headers) {
                        prop_assert_eq!(error.status(), 400);
                    }
                }
            }

            /// Tags written as the RFC spells them come back as they were.
            #[test]
            fn written_tag_lists_round_trip(
                tags in prop::collection::vec((any::<bool>(), opaque()), 1..5),
                separator in prop::sample::select(vec![",", ", ", " ,\t", ",,"]),
            ) {
                let written: Vec<String> = tags
                    .iter()
                    .map(|(weak, o)| format!("{}{}", if *weak { "W/" } else { "" }, quote(o)))
                    .collect();
                let expected: Vec<EntityTag> = tags
                    .into_iter()
                    .map(|(weak, opaque)| EntityTag { weak, opaque })
                    .collect();
                prop_assert_eq!(
                    TagCondition::parse(&written.join(separator)),
                    Some(TagCondition::Tags(expected))
                );
            }
        }
    }
}
