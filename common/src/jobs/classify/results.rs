//! A classify job's results: per document, each field's value with its
//! confidence, model and the chunks it rests on; filtered by a field's
//! value, paged by document, rendered as JSON or CSV.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;

use super::{FieldKind, RunOptions, Scheme, load};
use crate::error::{ApiError, Result};
use crate::ids::{ChunkId, DocumentId, JobId};
use crate::jobs;
use crate::pagination::{Page, encode};
use crate::workspaces::Access;

/// A page stops growing past about this many bytes of values, whatever
/// its `limit`: a Lambda response holds at most 6 MB.
const PAGE_BYTES: usize = 4 << 20;

/// What to list.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only documents whose `field` has `value` (a multiple label: among
    /// its labels).
    pub field: Option<String>,
    pub value: Option<String>,
    pub limit: usize,
    pub after: Option<DocumentId>,
}

/// One field's result.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldResult {
    /// A label, a list of labels, a number, text, a boolean, or null.
    pub value: Value,
    pub confidence: Option<f32>,
    pub model: String,
    pub chunk_ids: Vec<ChunkId>,
}

/// One document's results.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DocumentResult {
    pub document_id: DocumentId,
    /// `None`: the document has been deleted since.
    pub title: Option<String>,
    pub values: BTreeMap<String, FieldResult>,
}

/// A page of a job's results and the scheme they follow.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Results {
    pub job_id: JobId,
    pub scheme: Scheme,
    pub items: Vec<DocumentResult>,
    pub next_cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    document_id: DocumentId,
    field: String,
    value: Json<Value>,
    confidence: Option<f32>,
    model: String,
    chunk_ids: Vec<ChunkId>,
}

/// The JSON a filter's text means for the field: a label in its scheme
/// spelling, a number, `true`/`false`, or the text itself.
fn wanted(scheme: &Scheme, field: &str, value: &str) -> Result<Value> {
    let Some(def) = scheme.fields.iter().find(|f| f.name == field) else {
        return Err(ApiError::unprocessable(
            "field",
            format!("the scheme has no field {field:?}"),
        ));
    };
    let refuse = |why: &str| Err(ApiError::unprocessable("value", why.to_owned()));
    match def.kind {
        FieldKind::SingleLabel | FieldKind::MultiLabel => {
            match def
                .values
                .iter()
                .find(|l| l.value.eq_ignore_ascii_case(value.trim()))
            {
                Some(label) => Ok(Value::String(label.value.clone())),
                None => refuse("value is not one of the field's labels"),
            }
        }
        FieldKind::Number => match value.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(serde_json::json!(n)),
            _ => refuse("value is not a number"),
        },
        FieldKind::Boolean => match value.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => refuse("value is true or false"),
        },
        FieldKind::Text => Ok(Value::String(value.to_owned())),
    }
}

/// A page of a classify job's results. 404: no such job; 409: the job
/// does not classify.
pub async fn list(mut access: Access, job: JobId, filter: Filter) -> Result<Results> {
    let found: Option<(jobs::Kind, Json<Value>)> =
        sqlx::query_as("SELECT kind, options FROM jobs WHERE workspace_id = $1 AND id = $2")
            .bind(access.workspace)
            .bind(job)
            .fetch_optional(&mut *access.tx)
            .await?;
    let (kind, options) = found.ok_or_else(|| ApiError::not_found("job"))?;
    if kind != jobs::Kind::Classify {
        return Err(ApiError::Conflict("the job does not classify".into()));
    }
    let options: RunOptions = serde_json::from_value(options.0)
        .map_err(|e| anyhow::anyhow!("a classify job's options: {e}"))?;
    let scheme = load(&mut access, options.scheme_id, true).await?;
    let matching = match (&filter.field, &filter.value) {
        (Some(field), Some(value)) => Some((field.clone(), wanted(&scheme, field, value)?)),
        (None, None) => None,
        _ => {
            return Err(ApiError::unprocessable(
                "value",
                "field and value go together",
            ));
        }
    };
    // A classified document has a row for every field: a page walks one
    // field's rows (the filtered one, or the first) in document order.
    let (field, value) = match matching {
        Some((field, value)) => (field, Some(value)),
        None => (
            scheme
                .fields
                .first()
                .map(|f| f.name.clone())
                .unwrap_or_default(),
            None,
        ),
    };
    let ids: Vec<DocumentId> = sqlx::query_scalar(
        "SELECT document_id FROM classification_results
         WHERE workspace_id = $1 AND job_id = $2 AND field = $3
           AND ($4::uuid IS NULL OR document_id > $4)
           AND ($5::jsonb IS NULL OR value = $5
                OR (jsonb_typeof(value) = 'array' AND value @> jsonb_build_array($5)))
         ORDER BY document_id LIMIT $6",
    )
    .bind(access.workspace)
    .bind(job)
    .bind(&field)
    .bind(filter.after)
    .bind(value.map(Json))
    .bind(filter.limit as i64 + 1)
    .fetch_all(&mut *access.tx)
    .await?;
    let more = ids.len() > filter.limit;
    let ids = &ids[..ids.len().min(filter.limit)];
    // Titles apart from the values: a join to documents, planned before
    // the job's rows have statistics, scanned the workspace's documents
    // once per value.
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT document_id, field, value, confidence, model, chunk_ids
         FROM classification_results
         WHERE workspace_id = $1 AND job_id = $2 AND document_id = ANY($3)
         ORDER BY document_id, field",
    )
    .bind(access.workspace)
    .bind(job)
    .bind(ids)
    .fetch_all(&mut *access.tx)
    .await?;
    let titles: std::collections::HashMap<DocumentId, String> = sqlx::query_as(
        "SELECT id, title FROM documents
         WHERE workspace_id = $1 AND id = ANY($2) AND deleted_at IS NULL",
    )
    .bind(access.workspace)
    .bind(ids)
    .fetch_all(&mut *access.tx)
    .await?
    .into_iter()
    .collect();
    access.commit().await?;

    let mut items: Vec<DocumentResult> = Vec::new();
    let mut bytes = 0usize;
    let mut cut = false;
    for row in rows {
        if items
            .last()
            .is_none_or(|d| d.document_id != row.document_id)
        {
            if bytes > PAGE_BYTES {
                cut = true;
                break;
            }
            let title = titles.get(&row.document_id).cloned();
            bytes += title.as_ref().map_or(0, String::len);
            items.push(DocumentResult {
                document_id: row.document_id,
                title,
                values: BTreeMap::new(),
            });
        }
        bytes += row.value.0.to_string().len() + 80;
        let document = items.last_mut().expect("pushed above");
        document.values.insert(
            row.field,
            FieldResult {
                value: row.value.0,
                confidence: row.confidence,
                model: row.model,
                chunk_ids: row.chunk_ids,
            },
        );
    }
    let next_cursor = if more || cut {
        items.last().map(|d| encode(&d.document_id))
    } else {
        None
    };
    Ok(Results {
        job_id: job,
        scheme,
        items,
        next_cursor,
    })
}

impl Results {
    /// The page as a [`Page`] of documents (the JSON the route answers).
    pub fn page(self) -> Page<DocumentResult> {
        Page {
            items: self.items,
            next_cursor: self.next_cursor,
        }
    }

    /// The page as CSV: `document_id`, `title`, then for each field of
    /// the scheme in order its value (labels of a multiple label joined
    /// by `; `, empty for null) and `<field>_confidence`.
    pub fn csv(&self) -> Result<Vec<u8>> {
        let mut out = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["document_id".to_owned(), "title".to_owned()];
        for field in self.scheme.fields.iter() {
            header.push(field.name.clone());
            header.push(format!("{}_confidence", field.name));
        }
        out.write_record(&header).map_err(anyhow::Error::from)?;
        for document in &self.items {
            let mut record = vec![
                document.document_id.to_string(),
                document.title.clone().unwrap_or_default(),
            ];
            for field in self.scheme.fields.iter() {
                let result = document.values.get(&field.name);
                record.push(result.map(|r| cell(&r.value)).unwrap_or_default());
                record.push(
                    result
                        .and_then(|r| r.confidence)
                        .map(|c| format!("{c:.3}"))
                        .unwrap_or_default(),
                );
            }
            out.write_record(&record).map_err(anyhow::Error::from)?;
        }
        Ok(out.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?)
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_flatten_labels_and_leave_null_empty() {
        assert_eq!(cell(&serde_json::json!(["a", "b c"])), "a; b c");
        assert_eq!(cell(&Value::Null), "");
        assert_eq!(cell(&serde_json::json!(2.5)), "2.5");
        assert_eq!(cell(&serde_json::json!(true)), "true");
    }
}
