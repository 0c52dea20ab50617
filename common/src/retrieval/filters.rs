//! Metadata filters: a small Mongo-like language over a document's
//! `metadata` (jsonb), compiled to SQL with every value bound.
//!
//! ```json
//! {"$and": [{"year": {"$gte": 2020}}, {"$or": [{"tag": {"$in": ["a", "b"]}}, {"draft": {"$exists": false}}]}]}
//! ```
//! A field maps to a condition object (`$eq $ne $in $nin $gt $gte $lt
//! $lte $exists`, several meaning all of them) or to a plain value
//! (`$eq`); several fields in one object must all hold. Dotted names
//! reach into nested objects (`"author.name"`). A missing field matches
//! `$ne`, `$nin` and `$exists: false` only. `$gt`-family operators compare
//! numbers with numbers and strings with strings (ISO dates order
//! correctly); a value of another type never matches.
//!
//! An empty object `{}` and an empty `$and: []` hold no condition and match
//! every document (so does an `$or` with such an alternative); an empty
//! `$or: []`, which nothing could satisfy, is refused as a mistake.

use serde_json::Value;
use sqlx::Postgres;
use sqlx::QueryBuilder;

use crate::error::{ApiError, Result};

/// Limits that keep a filter's SQL small.
const MAX_CONDITIONS: usize = 50;
const MAX_DEPTH: usize = 6;
const MAX_LIST: usize = 100;
const MAX_FIELD_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Field {
        path: Vec<String>,
        op: Op,
        value: Value,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    In,
    Nin,
    Gt,
    Gte,
    Lt,
    Lte,
    Exists,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "$eq" => Op::Eq,
            "$ne" => Op::Ne,
            "$in" => Op::In,
            "$nin" => Op::Nin,
            "$gt" => Op::Gt,
            "$gte" => Op::Gte,
            "$lt" => Op::Lt,
            "$lte" => Op::Lte,
            "$exists" => Op::Exists,
            _ => return None,
        })
    }
}

const FIELD: &str = "filters.metadata";

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable(FIELD, detail)
}

/// Parses a filter object; 422 naming what is wrong. `None`: the filter
/// holds no condition (`{}`, `$and: []`) and every document matches.
pub fn parse(value: &Value) -> Result<Option<Condition>> {
    let mut count = 0;
    parse_object(value, 0, &mut count)
}

/// All of `parts`; `None` when there are none.
fn all_of(mut parts: Vec<Condition>) -> Option<Condition> {
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Condition::And(parts)),
    }
}

fn parse_object(value: &Value, depth: usize, count: &mut usize) -> Result<Option<Condition>> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("filters nest deeper than {MAX_DEPTH} levels")));
    }
    let Value::Object(map) = value else {
        return Err(bad("a filter must be a JSON object"));
    };
    let mut all = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = value else {
                    return Err(bad(format!("{key} takes an array of filters")));
                };
                if items.is_empty() && key == "$or" {
                    return Err(bad(
                        "$or needs at least one filter (with none, nothing could match)",
                    ));
                }
                // Every item is parsed, so a bad one is refused even
                // where another makes the whole `$or` match everything.
                let parts = items
                    .iter()
                    .map(|item| parse_object(item, depth + 1, count))
                    .collect::<Result<Vec<_>>>()?;
                if key == "$and" {
                    all.extend(parts.into_iter().flatten());
                } else if parts.iter().all(Option::is_some) {
                    let mut parts: Vec<Condition> = parts.into_iter().flatten().collect();
                    all.push(if parts.len() == 1 {
                        parts.pop().expect("one part")
                    } else {
                        Condition::Or(parts)
                    });
                }
                // else: one alternative matches everything, so the `$or` does.
            }
            op if op.starts_with('$') => {
                return Err(bad(format!(
                    "{op} is not a logical operator here ($and, $or); comparisons go under a field name"
                )));
            }
            field => all.extend(parse_field(field, value, count)?),
        }
    }
    Ok(all_of(all))
}

fn parse_field(field: &str, value: &Value, count: &mut usize) -> Result<Vec<Condition>> {
    let path: Vec<String> = field.split('.').map(str::to_owned).collect();
    if field.chars().count() > MAX_FIELD_CHARS
        || path.iter().any(|p| p.is_empty())
        || field.contains('\0')
    {
        return Err(bad(format!("{field:?} is not a valid field name")));
    }
    let ops: Vec<(Op, &Value)> = match value {
        Value::Object(map) if map.keys().any(|k| k.starts_with('$')) => map
            .iter()
            .map(|(k, v)| {
                Op::parse(k).map(|op| (op, v)).ok_or_else(|| {
                    bad(format!(
                        "{k} is not an operator ($eq $ne $in $nin $gt $gte $lt $lte $exists)"
                    ))
                })
            })
            .collect::<Result<_>>()?,
        other => vec![(Op::Eq, other)],
    };
    let mut out = Vec::with_capacity(ops.len());
    for (op, value) in ops {
        *count += 1;
        if *count > MAX_CONDITIONS {
            return Err(bad(format!("at most {MAX_CONDITIONS} conditions")));
        }
        check_value(field, op, value)?;
        out.push(Condition::Field {
            path: path.clone(),
            op,
            value: value.clone(),
        });
    }
    Ok(out)
}

fn check_value(field: &str, op: Op, value: &Value) -> Result<()> {
    match op {
        Op::In | Op::Nin => match value {
            Value::Array(items) if items.len() <= MAX_LIST => Ok(()),
            Value::Array(_) => Err(bad(format!("{field}: at most {MAX_LIST} values in a list"))),
            _ => Err(bad(format!("{field}: $in and $nin take an array"))),
        },
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => match value {
            Value::Number(_) | Value::String(_) => Ok(()),
            _ => Err(bad(format!(
                "{field}: $gt, $gte, $lt and $lte compare numbers or strings"
            ))),
        },
        Op::Exists => match value {
            Value::Bool(_) => Ok(()),
            _ => Err(bad(format!("{field}: $exists takes true or false"))),
        },
        Op::Eq | Op::Ne => Ok(()),
    }
    .and_then(|()| {
        if contains_nul(value) {
            Err(bad(format!("{field}: values may not contain NUL")))
        } else {
            Ok(())
        }
    })
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// Appends the condition as SQL over `{metadata}` (a jsonb expression),
/// binding every path and value.
pub fn push_sql(builder: &mut QueryBuilder<Postgres>, metadata: &str, condition: &Condition) {
    match condition {
        // `parse` never builds these, but `()` would be a syntax error.
        Condition::And(parts) if parts.is_empty() => {
            builder.push("TRUE");
        }
        Condition::Or(parts) if parts.is_empty() => {
            builder.push("FALSE");
        }
        Condition::And(parts) | Condition::Or(parts) => {
            let joiner = if matches!(condition, Condition::And(_)) {
                " AND "
            } else {
                " OR "
            };
            builder.push("(");
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    builder.push(joiner);
                }
                push_sql(builder, metadata, part);
            }
            builder.push(")");
        }
        Condition::Field { path, op, value } => {
            let field = |builder: &mut QueryBuilder<Postgres>| {
                builder.push(format!("({metadata} #> "));
                builder.push_bind(path.clone());
                builder.push(")");
            };
            let json = |builder: &mut QueryBuilder<Postgres>, value: &Value| {
                builder.push_bind(sqlx::types::Json(value.clone()));
                builder.push("::jsonb");
            };
            builder.push("(");
            match op {
                Op::Eq => {
                    field(builder);
                    builder.push(" = ");
                    json(builder, value);
                }
                Op::Ne => {
                    field(builder);
                    builder.push(" IS DISTINCT FROM ");
                    json(builder, value);
                }
                Op::In | Op::Nin => {
                    if *op == Op::Nin {
                        builder.push("NOT ");
                    }
                    builder.push("EXISTS (SELECT 1 FROM jsonb_array_elements(");
                    json(builder, value);
                    builder.push(") AS e(v) WHERE e.v = ");
                    field(builder);
                    builder.push(")");
                }
                Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                    let sign = match op {
                        Op::Gt => " > ",
                        Op::Gte => " >= ",
                        Op::Lt => " < ",
                        _ => " <= ",
                    };
                    builder.push("jsonb_typeof");
                    field(builder);
                    builder.push(" = ");
                    builder.push_bind(if value.is_number() {
                        "number"
                    } else {
                        "string"
                    });
                    builder.push(" AND ");
                    field(builder);
                    builder.push(sign);
                    json(builder, value);
                }
                Op::Exists => {
                    field(builder);
                    builder.push(if value.as_bool() == Some(true) {
                        " IS NOT NULL"
                    } else {
                        " IS NULL"
                    });
                }
            }
            builder.push(")");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(path: &str, op: Op, value: Value) -> Condition {
        Condition::Field {
            path: path.split('.').map(str::to_owned).collect(),
            op,
            value,
        }
    }

    #[test]
    fn plain_values_are_equality_and_fields_combine_with_and() {
        let c = parse(&json!({"tag": "a", "year": {"$gte": 2020, "$lt": 2025}}))
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            Condition::And(vec![
                field("tag", Op::Eq, json!("a")),
                field("year", Op::Gte, json!(2020)),
                field("year", Op::Lt, json!(2025)),
            ])
        );
    }

    #[test]
    fn logical_operators_nest() {
        let c = parse(&json!({"$or": [{"a.b": 1}, {"$and": [{"c": {"$exists": true}}]}]}))
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            Condition::Or(vec![
                field("a.b", Op::Eq, json!(1)),
                field("c", Op::Exists, json!(true)),
            ])
        );
    }

    #[test]
    fn bad_filters_are_refused_with_a_reason() {
        for (filter, words) in [
            (json!([1]), "JSON object"),
            (json!({"$xor": []}), "logical operator"),
            (json!({"a": {"$regex": "x"}}), "not an operator"),
            (json!({"a": {"$in": 3}}), "take an array"),
            (json!({"a": {"$gt": true}}), "numbers or strings"),
            (json!({"a": {"$exists": 1}}), "true or false"),
            (json!({"$or": []}), "at least one"),
            (json!({"$and": [{"$or": []}]}), "at least one"),
            (
                json!({"$or": [{}, {"a": {"$regex": "x"}}]}),
                "not an operator",
            ),
            (json!({"a..b": 1}), "valid field name"),
            (json!({"a": "x\u{0}"}), "NUL"),
        ] {
            let err = parse(&filter).unwrap_err().to_string();
            assert!(err.contains(words), "{filter}: {err}");
        }
        let deep = (0..10).fold(json!({"a": 1}), |inner, _| json!({"$and": [inner]}));
        assert!(parse(&deep).unwrap_err().to_string().contains("deeper"));
        let many: serde_json::Map<String, Value> =
            (0..51).map(|i| (format!("f{i}"), json!(i))).collect();
        assert!(
            parse(&Value::Object(many))
                .unwrap_err()
                .to_string()
                .contains("at most")
        );
    }

    #[test]
    fn sql_binds_every_value() {
        let c = parse(&json!({"$or": [{"tag": {"$in": ["a'; DROP"]}}, {"n": {"$gt": 1}}]}))
            .unwrap()
            .unwrap();
        let mut b = QueryBuilder::<Postgres>::new("");
        push_sql(&mut b, "d.metadata", &c);
        let sql = b.sql().as_str().to_owned();
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(sql.contains("EXISTS") && sql.contains(" > "), "{sql}");
    }

    #[test]
    fn empty_filters_hold_no_condition() {
        for filter in [
            json!({}),
            json!({"$and": []}),
            json!({"$and": [{}]}),
            json!({"$or": [{}, {}]}),
            json!({"$or": [{"a": 1}, {}]}),
            json!({"$and": [{"$or": [{}]}, {"$and": [{}, {}]}]}),
        ] {
            assert_eq!(parse(&filter).unwrap(), None, "{filter}");
        }
        // What is left once the empty parts are gone.
        assert_eq!(
            parse(&json!({"$and": [{}, {"a": 1}], "$or": [{"b": 2}, {"$and": []}]})).unwrap(),
            Some(field("a", Op::Eq, json!(1)))
        );
        assert_eq!(
            parse(&json!({"$or": [{"a": 1}, {"$and": [{}, {"b": 2}]}]})).unwrap(),
            Some(Condition::Or(vec![
                field("a", Op::Eq, json!(1)),
                field("b", Op::Eq, json!(2)),
            ]))
        );
    }

    #[test]
    fn empty_combinations_render_as_constants_not_empty_parentheses() {
        for (condition, sql) in [
            (Condition::And(vec![]), "TRUE"),
            (Condition::Or(vec![]), "FALSE"),
            (
                Condition::Or(vec![Condition::And(vec![]), Condition::Or(vec![])]),
                "(TRUE OR FALSE)",
            ),
        ] {
            let mut b = QueryBuilder::<Postgres>::new("");
            push_sql(&mut b, "d.metadata", &condition);
            assert_eq!(b.sql().as_str(), sql);
        }
    }

    mod properties {
        use super::*;
        use crate::fuzz;
        use proptest::prelude::*;

        /// Filters shaped like real ones more often than pure noise is.
        fn filter() -> impl Strategy<Value = Value> {
            let condition = prop_oneof![
                fuzz::json(),
                (fuzz::text(), fuzz::json()).prop_map(|(op, v)| json!({ op: v })),
            ];
            let leaf = (fuzz::text(), condition).prop_map(|(field, c)| json!({ field: c }));
            prop_oneof![
                fuzz::json(),
                leaf.prop_recursive(4, 24, 4, |inner| {
                    (
                        prop::sample::select(vec!["$and", "$or"]),
                        prop::collection::vec(prop_oneof![inner, Just(json!({}))], 0..4),
                    )
                        .prop_map(|(op, items)| json!({ op: items }))
                }),
            ]
        }

        proptest! {
            #![proptest_config(fuzz::config())]

            /// Never a panic; an error names filters.metadata; whatever
            /// parses renders as SQL Postgres can read (no `()`, balanced).
            #[test]
            fn any_json_parses_or_is_refused_naming_the_field(value in filter()) {
                match parse(&value) {
                    Ok(Some(condition)) => {
                        let mut b = QueryBuilder::<Postgres>::new("");
                        push_sql(&mut b, "d.metadata", &condition);
                        let sql = b.sql().as_str().to_owned();
                        prop_assert!(!sql.contains("()"), "{sql}");
                        let depth = sql.chars().try_fold(0i32, |d, c| {
                            let d = d + match c { '(' => 1, ')' => -1, _ => 0 };
                            (d >= 0).then_some(d)
                        });
                        prop_assert_eq!(depth, Some(0), "{}", sql);
                    }
                    Ok(None) => {}
                    Err(error) => {
                        prop_assert_eq!(error.status(), 422);
                        prop_assert_eq!(fuzz::field(&error), Some(FIELD));
                    }
                }
            }

            /// An alternative without conditions makes any valid `$or` match
            /// everything; `$and` with it means the same as without it.
            #[test]
            fn empty_parts_change_nothing_but_what_they_should(value in filter()) {
                if let Ok(alone) = parse(&value) {
                    // One level deeper, which may pass the nesting limit.
                    let deeper = |e: ApiError| e.to_string().contains("deeper");
                    match parse(&json!({ "$or": [value.clone(), {}] })) {
                        Ok(any) => prop_assert_eq!(any, None),
                        Err(e) => prop_assert!(deeper(e)),
                    }
                    match parse(&json!({ "$and": [value, {}] })) {
                        Ok(same) => prop_assert_eq!(same, alone),
                        Err(e) => prop_assert!(deeper(e)),
                    }
                }
            }
        }
    }
}
