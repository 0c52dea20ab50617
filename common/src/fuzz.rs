//! What the property tests share: a bounded configuration and generators
//! of the input a hostile client sends. The properties themselves sit
//! beside the code they test (filters, cursors, entity tags, bodies).

use proptest::prelude::*;
use serde_json::Value;

use crate::error::ApiError;

/// 256 cases a property (a few seconds for all of them), and no failure
/// files: a failing case is printed, never written into the tree.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The field a client error names, if it is one that names a field.
pub fn field(error: &ApiError) -> Option<&str> {
    match error {
        ApiError::Unprocessable { field, .. } | ApiError::PayloadTooLarge { field, .. } => {
            field.as_deref()
        }
        _ => None,
    }
}

/// Text of the kinds that break parsers: operators and the words our
/// bodies use, dotted and empty names, NUL and other controls, quotes,
/// backslashes, non-ASCII, and anything at all.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "$and",
            "$or",
            "$eq",
            "$ne",
            "$in",
            "$nin",
            "$gt",
            "$gte",
            "$lt",
            "$lte",
            "$exists",
            "$regex",
            "$",
            "a",
            "a.b",
            "a..b",
            ".",
            "tag",
            "year",
            "title",
            "content",
            "metadata",
            "name",
            "\u{0}",
            "a\u{0}b",
            "\\u0000",
            "\"",
            "W/\"x\"",
            "*",
            "null",
            "0000-01-01T00:00:00Z",
            "+275760-09-13T00:00:00Z",
            "\u{feff}",
            "\u{202e}",
            "💩",
        ])
        .prop_map(str::to_owned),
        "[a-z$.\\\\\"\u{0}\u{1} ]{0,12}",
        any::<String>().prop_map(|s| s.chars().take(40).collect()),
    ]
}

/// Any JSON value up to 5 levels and a few dozen nodes, built from
/// [`text`] keys and strings and extreme numbers.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop::sample::select(vec![0i64, -1, 1, i64::MIN, i64::MAX, 2024]).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A valid configuration with the defaults, for validators that read
/// their limits from it.
pub fn app_config() -> crate::config::Config {
    let vars = [
        ("DATABASE_URL", "postgres://u:p@localhost/db"),
        ("JWT_ISSUER", "https://api.example.com"),
        ("JWT_KEY_ID", "k1"),
        (
            "JWT_SIGNING_KEY",
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    crate::config::Config::from_map(&vars).expect("a valid test configuration")
}

/// JSON bodies shaped like our requests: objects whose members are the
/// names our bodies use (and others), holding any value; or any JSON.
pub fn body() -> impl Strategy<Value = Value> {
    let member = prop_oneof![
        prop::sample::select(vec![
            "title",
            "content",
            "content_type",
            "metadata",
            "id",
            "name",
            "daily_token_limit",
            "email",
            "user_id",
            "role",
            "filename",
            "size",
            "question",
            "message",
            "session_id",
            "top_k",
            "mode",
            "filters",
            "answer",
            "max_tokens",
            "document_ids",
            "password",
            "refresh_token",
            "label",
        ])
        .prop_map(str::to_owned),
        text(),
    ];
    prop_oneof![
        prop::collection::vec((member, json()), 0..7)
            .prop_map(|members| Value::Object(members.into_iter().collect())),
        json(),
    ]
}
