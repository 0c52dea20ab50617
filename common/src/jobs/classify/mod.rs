//! Classification: schemes per workspace (named fields a document is
//! sorted by) and classify jobs that run one over a set of documents
//! through the ingest queue, leaving a value per document and field.
//!
//! A member defines a scheme once and runs it over all documents, some
//! ids or a metadata filter; the worker's steps ([`run`], feature
//! `worker`) classify a page of documents each with the scheme's
//! classifier ([`classifier`]): the default one needs no network (label
//! descriptions against the document's chunks by embedding similarity
//! and keywords), the `model` one asks the configured chat model for
//! structured output. A value that does not fit its field is refused, the
//! document counted failed with the reason, and nothing of it stored.

/// The columns of [`Scheme`] (a macro: sqlx takes only literal SQL).
macro_rules! scheme_columns {
    () => {
        "id, workspace_id, name, instructions, fields, classifier, created_by, created_at, \
         deleted_at"
    };
}

#[cfg(feature = "worker")]
pub mod classifier;
pub mod results;
#[cfg(feature = "worker")]
pub mod run;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};

use crate::error::{ApiError, Result};
use crate::ids::{DocumentId, JobId, SchemeId, UserId, WorkspaceId};
use crate::jobs::{self, Job};
use crate::retrieval::filters::{self, Condition};
use crate::state::State;
use crate::workspaces::Access;

/// Most fields one scheme has.
const MAX_FIELDS: usize = 20;
/// Most allowed values of a label field.
const MAX_LABELS: usize = 100;
/// Most document ids one run names.
pub const MAX_DOCUMENT_IDS: usize = 10_000;
/// Longest text value stored.
pub const MAX_TEXT_CHARS: usize = 500;

/// What a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FieldKind {
    /// One of `values`.
    SingleLabel,
    /// Any of `values` (a list, possibly empty).
    MultiLabel,
    Number,
    /// Free text, at most 500 characters.
    Text,
    Boolean,
}

/// One allowed value of a label field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Label {
    pub value: String,
    /// What the label means: what the default classifier compares the
    /// documents with, and what a model is told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One field of a scheme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Field {
    /// `[a-z][a-z0-9_]*`, at most 64 characters, unique in the scheme.
    pub name: String,
    pub kind: FieldKind,
    #[serde(default)]
    pub description: String,
    /// The allowed values of a label field (none for other kinds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Label>,
    /// A required field must get a value (not null, for a multiple label
    /// not empty); otherwise the document is refused.
    #[serde(default)]
    pub required: bool,
}

/// How a scheme's documents are classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ClassifierKind {
    /// No network: label descriptions against the document's chunks by
    /// embedding similarity and shared keywords.
    #[default]
    Default,
    /// The deployment's chat model (OpenAI-compatible or Bedrock) with
    /// structured output; its tokens are charged to the daily budget.
    Model,
}

/// `POST /workspaces/{id}/schemes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewScheme {
    pub name: String,
    /// What a model is told about the whole scheme.
    #[serde(default)]
    pub instructions: String,
    pub fields: Vec<Field>,
    #[serde(default)]
    pub classifier: ClassifierKind,
}

/// A scheme as stored and shown.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Scheme {
    pub id: SchemeId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub instructions: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Field>))]
    pub fields: Json<Vec<Field>>,
    pub classifier: ClassifierKind,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// `POST /workspaces/{id}/schemes/{scheme_id}/jobs`: which documents. No
/// ids and no filter: every document of the workspace.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewRun {
    #[serde(default)]
    pub document_ids: Option<Vec<DocumentId>>,
    /// A metadata filter, as in queries.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub filter: Option<Value>,
    /// Only documents created after this time.
    #[serde(default)]
    pub created_after: Option<DateTime<Utc>>,
}

/// The documents a classify job looks at, as stored in its options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Selection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_ids: Option<Vec<DocumentId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_after: Option<DateTime<Utc>>,
}

/// A classify job's options.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOptions {
    pub scheme_id: SchemeId,
    #[serde(flatten)]
    pub selection: Selection,
    /// The job whose failed documents this one runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<JobId>,
}

impl Selection {
    /// Appends the selection's conditions over `documents d`.
    pub fn push_sql(&self, sql: &mut QueryBuilder<Postgres>) -> Result<()> {
        if let Some(ids) = &self.document_ids {
            sql.push(" AND d.id = ANY(")
                .push_bind(ids.clone())
                .push(")");
        }
        if let Some(after) = self.created_after {
            sql.push(" AND d.created_at > ").push_bind(after);
        }
        if let Some(condition) = self.condition()? {
            sql.push(" AND ");
            filters::push_sql(sql, "d.metadata", &condition);
        }
        Ok(())
    }

    fn condition(&self) -> Result<Option<Condition>> {
        match &self.filter {
            Some(filter) => filters::parse(filter),
            None => Ok(None),
        }
    }
}

fn bad(field: &str, detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable(field, detail)
}

fn check_text(field: &str, text: &str, max: usize) -> Result<()> {
    if text.chars().count() > max {
        return Err(bad(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    Ok(())
}

/// Checks a new scheme and returns it trimmed.
pub fn check(mut new: NewScheme) -> Result<NewScheme> {
    new.name = new.name.trim().to_owned();
    if new.name.is_empty() || new.name.chars().count() > 200 {
        return Err(bad("name", "name must be 1 to 200 characters"));
    }
    check_text("instructions", &new.instructions, 8_000)?;
    if new.fields.is_empty() || new.fields.len() > MAX_FIELDS {
        return Err(bad(
            "fields",
            format!("a scheme has 1 to {MAX_FIELDS} fields"),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, field) in new.fields.iter_mut().enumerate() {
        let at = format!("fields[{i}]");
        let valid_name = field.name.len() <= 64
            && field.name.starts_with(|c: char| c.is_ascii_lowercase())
            && field
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_name {
            return Err(bad(
                &format!("{at}.name"),
                "a field's name is a lowercase letter, then lowercase letters, digits or _ (at most 64)",
            ));
        }
        if !names.insert(field.name.clone()) {
            return Err(bad(
                &format!("{at}.name"),
                format!("two fields are named {}", field.name),
            ));
        }
        field.description = field.description.trim().to_owned();
        check_text(&format!("{at}.description"), &field.description, 1_000)?;
        let labels = matches!(field.kind, FieldKind::SingleLabel | FieldKind::MultiLabel);
        if !labels && !field.values.is_empty() {
            return Err(bad(
                &format!("{at}.values"),
                "only label fields have values",
            ));
        }
        if labels {
            if field.values.len() < 2 || field.values.len() > MAX_LABELS {
                return Err(bad(
                    &format!("{at}.values"),
                    format!("a label field has 2 to {MAX_LABELS} values"),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for (j, label) in field.values.iter_mut().enumerate() {
                label.value = label.value.trim().to_owned();
                if label.value.is_empty() || label.value.chars().count() > 100 {
                    return Err(bad(
                        &format!("{at}.values[{j}].value"),
                        "a value is 1 to 100 characters",
                    ));
                }
                if !seen.insert(label.value.to_lowercase()) {
                    return Err(bad(
                        &format!("{at}.values[{j}].value"),
                        format!("{} is listed twice", label.value),
                    ));
                }
                if let Some(description) = &mut label.description {
                    *description = description.trim().to_owned();
                    check_text(&format!("{at}.values[{j}].description"), description, 1_000)?;
                }
            }
        }
    }
    Ok(new)
}

impl Field {
    /// The value as stored when `value` fits the field: labels in their
    /// scheme spelling (matched without regard to case), a multiple label
    /// without repeats. `Err`: why it does not fit.
    pub fn fit(&self, value: &Value) -> std::result::Result<Value, String> {
        let name = &self.name;
        let empty = match value {
            Value::Null => true,
            Value::Array(items) => items.is_empty() && self.kind == FieldKind::MultiLabel,
            _ => false,
        };
        if empty {
            if self.required {
                return Err(format!("{name}: a value is required"));
            }
            return Ok(if self.kind == FieldKind::MultiLabel {
                Value::Array(Vec::new())
            } else {
                Value::Null
            });
        }
        let label = |v: &Value| -> std::result::Result<Value, String> {
            let text = v
                .as_str()
                .ok_or_else(|| format!("{name}: {v} is not a label"))?;
            self.values
                .iter()
                .find(|l| l.value.eq_ignore_ascii_case(text.trim()))
                .map(|l| Value::String(l.value.clone()))
                .ok_or_else(|| format!("{name}: {text:?} is not one of its values"))
        };
        match self.kind {
            FieldKind::SingleLabel => label(value),
            FieldKind::MultiLabel => {
                let items = value
                    .as_array()
                    .ok_or_else(|| format!("{name}: {value} is not a list of labels"))?;
                let mut out: Vec<Value> = Vec::new();
                for item in items {
                    let fitted = label(item)?;
                    if !out.contains(&fitted) {
                        out.push(fitted);
                    }
                }
                Ok(Value::Array(out))
            }
            FieldKind::Number => match value.as_f64() {
                Some(n) if n.is_finite() => Ok(value.clone()),
                _ => Err(format!("{name}: {value} is not a number")),
            },
            FieldKind::Boolean => match value {
                Value::Bool(_) => Ok(value.clone()),
                _ => Err(format!("{name}: {value} is not true or false")),
            },
            FieldKind::Text => match value.as_str() {
                Some(text) if text.chars().count() <= MAX_TEXT_CHARS => Ok(value.clone()),
                Some(_) => Err(format!(
                    "{name}: the text is longer than {MAX_TEXT_CHARS} characters"
                )),
                None => Err(format!("{name}: {value} is not text")),
            },
        }
    }

    /// The JSON Schema of the field's value (null allowed, so a model can
    /// say it cannot tell; [`Self::fit`] then applies `required`).
    pub fn value_schema(&self) -> Value {
        let labels: Vec<Value> = self
            .values
            .iter()
            .map(|l| Value::String(l.value.clone()))
            .collect();
        match self.kind {
            FieldKind::SingleLabel => {
                let mut choices = labels;
                choices.push(Value::Null);
                serde_json::json!({ "type": ["string", "null"], "enum": choices })
            }
            // Bounded, so a grammar-constrained model cannot run on to its
            // token limit repeating itself (seen with llama.cpp).
            FieldKind::MultiLabel => serde_json::json!({
                "type": "array",
                "maxItems": labels.len(),
                "items": { "type": "string", "enum": labels }
            }),
            FieldKind::Number => serde_json::json!({ "type": ["number", "null"] }),
            // A pattern, not maxLength: OpenAI's strict mode refuses
            // maxLength, and takes pattern, as llama.cpp's grammar does.
            FieldKind::Text => serde_json::json!({
                "type": ["string", "null"],
                "pattern": format!("^.{{0,{MAX_TEXT_CHARS}}}$")
            }),
            FieldKind::Boolean => serde_json::json!({ "type": ["boolean", "null"] }),
        }
    }
}

/// Creates a scheme; any member may. A live scheme of the same name
/// (regardless of case) is 409.
pub async fn create(mut access: Access, new: NewScheme) -> Result<Scheme> {
    let new = check(new)?;
    let scheme: Option<Scheme> = sqlx::query_as(concat!(
        "INSERT INTO classification_schemes
             (workspace_id, id, name, instructions, fields, classifier, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (workspace_id, lower(name)) WHERE deleted_at IS NULL DO NOTHING
         RETURNING ",
        scheme_columns!()
    ))
    .bind(access.workspace)
    .bind(SchemeId::new())
    .bind(&new.name)
    .bind(&new.instructions)
    .bind(Json(&new.fields))
    .bind(new.classifier)
    .bind(access.caller)
    .fetch_optional(&mut *access.tx)
    .await?;
    let scheme = scheme
        .ok_or_else(|| ApiError::Conflict(format!("a scheme named {:?} exists", new.name)))?;
    crate::workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "scheme.created",
        None,
        serde_json::json!({ "scheme_id": scheme.id, "name": scheme.name }),
    )
    .await?;
    access.commit().await?;
    Ok(scheme)
}

/// The workspace's live schemes, by name.
pub async fn list(mut access: Access) -> Result<Vec<Scheme>> {
    let schemes = sqlx::query_as(concat!(
        "SELECT ",
        scheme_columns!(),
        " FROM classification_schemes
         WHERE workspace_id = $1 AND deleted_at IS NULL ORDER BY lower(name) LIMIT 1000"
    ))
    .bind(access.workspace)
    .fetch_all(&mut *access.tx)
    .await?;
    access.commit().await?;
    Ok(schemes)
}

/// A scheme; `deleted`: also a deleted one (its jobs' results still name
/// its fields).
pub async fn load(access: &mut Access, id: SchemeId, deleted: bool) -> Result<Scheme> {
    sqlx::query_as(concat!(
        "SELECT ",
        scheme_columns!(),
        " FROM classification_schemes
         WHERE workspace_id = $1 AND id = $2 AND ($3 OR deleted_at IS NULL)"
    ))
    .bind(access.workspace)
    .bind(id)
    .bind(deleted)
    .fetch_optional(&mut *access.tx)
    .await?
    .ok_or_else(|| ApiError::not_found("scheme"))
}

pub async fn get(mut access: Access, id: SchemeId) -> Result<Scheme> {
    let scheme = load(&mut access, id, false).await?;
    access.commit().await?;
    Ok(scheme)
}

/// Deletes a scheme (its creator or an owner/admin): it can no longer be
/// run; its jobs and their results stay.
pub async fn delete(mut access: Access, id: SchemeId) -> Result<()> {
    let scheme = load(&mut access, id, false).await?;
    access.require(
        scheme.created_by == Some(access.caller) || access.role.manages_members(),
        "delete another member's scheme",
    )?;
    sqlx::query(
        "UPDATE classification_schemes SET deleted_at = now()
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(access.workspace)
    .bind(id)
    .execute(&mut *access.tx)
    .await?;
    crate::workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        "scheme.deleted",
        None,
        serde_json::json!({ "scheme_id": id }),
    )
    .await?;
    access.commit().await
}

/// Starts a classify job of a scheme over the selected documents and
/// queues its first step: 202 the job, with `total` the number of
/// documents selected now.
pub async fn start(state: &State, mut access: Access, id: SchemeId, run: NewRun) -> Result<Job> {
    let scheme = load(&mut access, id, false).await?;
    if scheme.classifier == ClassifierKind::Model
        && state.config.chat.provider == crate::config::ChatProvider::Extractive
    {
        return Err(ApiError::Conflict(
            "this scheme classifies with a model, and the deployment has no chat model \
             (CHAT_PROVIDER is extractive)"
                .into(),
        ));
    }
    if let Some(ids) = &run.document_ids
        && (ids.is_empty() || ids.len() > MAX_DOCUMENT_IDS)
    {
        return Err(bad(
            "document_ids",
            format!("document_ids names 1 to {MAX_DOCUMENT_IDS} documents"),
        ));
    }
    let selection = Selection {
        document_ids: run.document_ids,
        filter: run.filter,
        created_after: run.created_after,
    };
    // A bad filter is refused here, not in the worker.
    selection.condition().map_err(|e| match e {
        ApiError::Unprocessable { detail, .. } => bad("filter", detail),
        other => other,
    })?;
    let options = RunOptions {
        scheme_id: scheme.id,
        selection,
        retry_of: None,
    };
    create_job(state, access, options, "classification.started").await
}

async fn create_job(
    state: &State,
    mut access: Access,
    options: RunOptions,
    action: &str,
) -> Result<Job> {
    let mut count = QueryBuilder::new("SELECT count(*) FROM documents d WHERE d.workspace_id = ");
    count
        .push_bind(access.workspace)
        .push(" AND d.deleted_at IS NULL");
    options.selection.push_sql(&mut count)?;
    let total: i64 = count
        .build_query_scalar()
        .fetch_one(&mut *access.tx)
        .await?;
    let id = JobId::new();
    let object_key = format!("workspaces/{}/classifications/{id}", access.workspace);
    let options = serde_json::to_value(&options).expect("options serialize");
    jobs::insert_queued(
        &mut access,
        id,
        jobs::Kind::Classify,
        &options,
        &object_key,
        Some(total),
        0,
    )
    .await?;
    crate::workspaces::audit(
        &mut access.tx,
        access.workspace,
        access.caller,
        action,
        None,
        serde_json::json!({ "job_id": id, "options": options }),
    )
    .await?;
    jobs::queue_first(state, access, id, 0).await
}

/// Runs a finished classify job's failed documents again, as a new job
/// with the same scheme: 202 that job. 409 while the job runs, or when
/// none failed.
pub async fn retry(state: &State, mut access: Access, id: JobId) -> Result<Job> {
    let (kind, status, options): (jobs::Kind, jobs::Status, Json<Value>) = sqlx::query_as(
        "SELECT kind, status, options FROM jobs WHERE workspace_id = $1 AND id = $2",
    )
    .bind(access.workspace)
    .bind(id)
    .fetch_optional(&mut *access.tx)
    .await?
    .ok_or_else(|| ApiError::not_found("job"))?;
    if kind != jobs::Kind::Classify {
        return Err(ApiError::Conflict("only classify jobs are retried".into()));
    }
    if !status.finished() {
        return Err(ApiError::Conflict("the job has not finished".into()));
    }
    let old: RunOptions = serde_json::from_value(options.0)
        .map_err(|e| anyhow::anyhow!("a classify job's options: {e}"))?;
    load(&mut access, old.scheme_id, false).await?;
    let failed: Vec<DocumentId> = sqlx::query_scalar(
        "SELECT f.document_id FROM classification_failures f
         JOIN documents d ON d.workspace_id = f.workspace_id AND d.id = f.document_id
         WHERE f.workspace_id = $1 AND f.job_id = $2 AND d.deleted_at IS NULL
         ORDER BY f.document_id LIMIT $3",
    )
    .bind(access.workspace)
    .bind(id)
    .bind(MAX_DOCUMENT_IDS as i64)
    .fetch_all(&mut *access.tx)
    .await?;
    if failed.is_empty() {
        return Err(ApiError::Conflict("no document of the job failed".into()));
    }
    let options = RunOptions {
        scheme_id: old.scheme_id,
        selection: Selection {
            document_ids: Some(failed),
            ..Selection::default()
        },
        retry_of: Some(id),
    };
    create_job(state, access, options, "classification.retried").await
}
