//! CloudWatch metrics in the embedded metric format: one JSON line on
//! stdout per event, which Lambda's log pipeline turns into metrics (no
//! client, no network call). Written only inside Lambda
//! (`AWS_LAMBDA_FUNCTION_NAME` set); elsewhere they would only be noise.

use std::time::{SystemTime, UNIX_EPOCH};

/// The namespace every ragway metric is in.
pub const NAMESPACE: &str = "ragway";

/// A CloudWatch unit.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// A refused request (429), by why: `budget`, `rate_limit` or `login`.
pub fn throttled(reason: &str) {
    emit(&[("Throttled", Unit::Count, 1.0)], &[("Reason", reason)]);
}

/// Writes `metrics` (name, unit, value) with `dimensions` (name, value),
/// when running in Lambda.
pub fn emit(metrics: &[(&str, Unit, f64)], dimensions: &[(&str, &str)]) {
    static IN_LAMBDA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let in_lambda =
        *IN_LAMBDA.get_or_init(|| std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some());
    if !in_lambda || metrics.is_empty() {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    println!("{}", line(now, metrics, dimensions));
}

/// One EMF document (see the CloudWatch embedded metric format
/// specification): metadata under `_aws`, values and dimensions at the
/// top level.
fn line(timestamp_ms: u64, metrics: &[(&str, Unit, f64)], dimensions: &[(&str, &str)]) -> String {
    let mut doc = serde_json::Map::new();
    let definitions: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(name, unit, _)| serde_json::json!({ "Name": name, "Unit": unit.name() }))
        .collect();
    let names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    doc.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [names],
                "Metrics": definitions,
            }],
        }),
    );
    for (name, value) in dimensions {
        doc.insert((*name).into(), (*value).into());
    }
    for (name, _, value) in metrics {
        doc.insert((*name).into(), (*value).into());
    }
    serde_json::Value::Object(doc).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_embedded_metric_format_documents() {
        let text = line(
            1_700_000_000_000,
            &[("RetrievalLatency", Unit::Milliseconds, 12.5)],
            &[("Mode", "hybrid")],
        );
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let aws = &doc["_aws"];
        assert_eq!(aws["Timestamp"], 1_700_000_000_000u64);
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "ragway");
        assert_eq!(directive["Dimensions"], serde_json::json!([["Mode"]]));
        assert_eq!(
            directive["Metrics"],
            serde_json::json!([{ "Name": "RetrievalLatency", "Unit": "Milliseconds" }])
        );
        assert_eq!(doc["Mode"], "hybrid");
        assert_eq!(doc["RetrievalLatency"], 12.5);
        assert!(!text.contains('\n'), "one line");
    }
}
