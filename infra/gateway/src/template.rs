//! Reads the functions and their events from template.yaml, the single
//! source of truth for routes.

use std::path::Path;

use anyhow::{Context, bail};
use serde_norway::Value;

/// A function declared in the template.
#[derive(Debug, Clone)]
pub struct TemplateFunction {
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary`: the `<resource>-<action>` binary.
    pub binary: String,
    pub code_uri: String,
    /// `Timeout` in seconds: its own, else `Globals.Function.Timeout`.
    pub timeout: Option<u64>,
    pub events: Vec<TemplateEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateEvent {
    Http {
        method: String,
        path: String,
    },
    /// An SQS event source; `queue` is the logical id of the queue resource.
    Sqs {
        queue: String,
        batch_size: usize,
    },
    Schedule {
        expression: String,
    },
    /// A function URL in response-streaming mode; it routes nothing, so
    /// the handler carries its own method and path.
    StreamingUrl,
}

pub fn load(path: &Path) -> anyhow::Result<Vec<TemplateFunction>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text)
}

/// Strips CloudFormation short-form tags (`!Ref X` → `X`, `!GetAtt A.B` → `A.B`).
fn untag(value: &Value) -> &Value {
    match value {
        Value::Tagged(tagged) => untag(&tagged.value),
        other => other,
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value.map(untag)? {
        Value::String(s) => Some(s.clone()),
        Value::Sequence(seq) => seq.first().and_then(|v| text(Some(v))),
        Value::Mapping(map) => {
            // Long form: {"Fn::GetAtt": [X, Arn]} or {"Ref": X}.
            map.iter().next().and_then(|(_, v)| text(Some(v)))
        }
        _ => None,
    }
}

pub fn parse(yaml: &str) -> anyhow::Result<Vec<TemplateFunction>> {
    let doc: Value = serde_norway::from_str(yaml).context("template.yaml is not valid YAML")?;
    let resources = doc
        .get("Resources")
        .and_then(Value::as_mapping)
        .context("template.yaml has no Resources")?;
    let global_timeout = doc
        .get("Globals")
        .and_then(|g| g.get("Function"))
        .and_then(|f| f.get("Timeout"))
        .and_then(Value::as_u64);
    let mut functions = Vec::new();
    for (id, resource) in resources {
        if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
            continue;
        }
        let logical_id = id.as_str().unwrap_or_default().to_owned();
        let binary = resource
            .get("Metadata")
            .and_then(|m| m.get("BuildProperties"))
            .and_then(|b| b.get("Binary"))
            .and_then(Value::as_str)
            .with_context(|| format!("{logical_id}: no Metadata.BuildProperties.Binary"))?
            .to_owned();
        let properties = resource.get("Properties");
        let code_uri = text(properties.and_then(|p| p.get("CodeUri"))).unwrap_or_default();
        let mut events = Vec::new();
        if let Some(map) = properties
            .and_then(|p| p.get("Events"))
            .and_then(Value::as_mapping)
        {
            for (name, event) in map {
                let props = event.get("Properties");
                let get = |key: &str| text(props.and_then(|p| p.get(key)));
                match event.get("Type").and_then(Value::as_str) {
                    Some("HttpApi") => events.push(TemplateEvent::Http {
                        method: get("Method")
                            .context("HttpApi event without Method")?
                            .to_uppercase(),
                        path: get("Path").context("HttpApi event without Path")?,
                    }),
                    Some("SQS") => events.push(TemplateEvent::Sqs {
                        queue: get("Queue")
                            .context("SQS event without Queue")?
                            .split('.')
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                        batch_size: props
                            .and_then(|p| p.get("BatchSize"))
                            .and_then(Value::as_u64)
                            .unwrap_or(10) as usize,
                    }),
                    Some("Schedule" | "ScheduleV2") => events.push(TemplateEvent::Schedule {
                        expression: get("Schedule")
                            .or_else(|| get("ScheduleExpression"))
                            .context("Schedule event without expression")?,
                    }),
                    other => bail!("{logical_id}: event {name:?} has unsupported type {other:?}"),
                }
            }
        }
        if let Some(url) = properties.and_then(|p| p.get("FunctionUrlConfig")) {
            let mode = text(url.get("InvokeMode")).unwrap_or_default();
            if mode != "RESPONSE_STREAM" {
                bail!("{logical_id}: only RESPONSE_STREAM function URLs are served locally");
            }
            events.push(TemplateEvent::StreamingUrl);
        }
        let timeout = properties
            .and_then(|p| p.get("Timeout"))
            .and_then(Value::as_u64)
            .or(global_timeout);
        functions.push(TemplateFunction {
            logical_id,
            binary,
            code_uri,
            timeout,
            events,
        });
    }
    Ok(functions)
}

/// [`cors`] of the template at `path`, its allowed origins replaced by
/// `CORS_ALLOWED_ORIGINS` (comma-separated, as the `CorsAllowedOrigins`
/// parameter of a deployment) when that is set.
pub fn load_cors(path: &Path) -> anyhow::Result<Option<crate::cors::Cors>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut cors = cors(&text)?;
    if let (Some(cors), Ok(origins)) = (&mut cors, std::env::var("CORS_ALLOWED_ORIGINS")) {
        cors.allow_origins = origins
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
    }
    Ok(cors)
}

/// The `CorsConfiguration` of the template's HTTP API, `!Ref`s to
/// parameters resolved to their defaults (a `CommaDelimitedList` split at
/// commas); None when the API has none.
pub fn cors(yaml: &str) -> anyhow::Result<Option<crate::cors::Cors>> {
    let doc: Value = serde_norway::from_str(yaml).context("template.yaml is not valid YAML")?;
    let resources = doc
        .get("Resources")
        .and_then(Value::as_mapping)
        .context("template.yaml has no Resources")?;
    let Some(api) = resources
        .values()
        .find(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::HttpApi"))
    else {
        return Ok(None);
    };
    let Some(config) = api
        .get("Properties")
        .and_then(|p| p.get("CorsConfiguration"))
    else {
        return Ok(None);
    };
    let parameters = doc.get("Parameters");
    let list = |key: &str| -> anyhow::Result<Vec<String>> {
        let Some(value) = config.get(key) else {
            return Ok(Vec::new());
        };
        match value {
            Value::Tagged(tagged) if tagged.tag == "Ref" => {
                let name = tagged.value.as_str().unwrap_or_default();
                let parameter = parameters
                    .and_then(|p| p.get(name))
                    .with_context(|| format!("CorsConfiguration.{key}: no parameter {name}"))?;
                let default = text(parameter.get("Default")).unwrap_or_default();
                Ok(default
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect())
            }
            Value::Sequence(items) => Ok(items.iter().filter_map(|v| text(Some(v))).collect()),
            other => bail!("CorsConfiguration.{key}: unsupported value {other:?}"),
        }
    };
    Ok(Some(crate::cors::Cors {
        allow_origins: list("AllowOrigins")?,
        allow_methods: list("AllowMethods")?,
        allow_headers: list("AllowHeaders")?,
        expose_headers: list("ExposeHeaders")?,
        max_age: config.get("MaxAge").and_then(Value::as_u64),
    }))
}
