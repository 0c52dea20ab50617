//! Classify steps, run by the ingest worker from the ingest queue.
//!
//! Each step takes the next page of the job's documents (by id, after
//! the last one done), classifies the ready ones with the scheme's
//! classifier, fits every value to its field, and commits the results,
//! the refusals and the job's progress together on condition that the
//! job is still at the step's offset: a redelivered or doubled step
//! changes nothing twice. A document not ready (still ingesting, or
//! failed) is refused with its status, so a retry can take it later.
//!
//! A model classifier's tokens are reserved from the workspace's daily
//! budget before each document and committed with the provider's usage
//! after; when the budget is spent, the job fails with that reason and
//! keeps what it classified.

use futures::StreamExt;
use serde_json::Value;
use sqlx::QueryBuilder;
use sqlx::types::Json;

use super::classifier::{self, Chunk, Classified, ClassifyError, Document};
use super::{RunOptions, Scheme};
use crate::budget::{self, Purpose};
use crate::db::tenant_tx;
use crate::error::ApiError;
use crate::ids::{ChunkId, DocumentId, UserId};
use crate::ingest::events::JobStep;
use crate::state::State;

/// Documents one step takes with the default classifier.
const STEP_DOCUMENTS: i64 = 100;
/// … and with a model, a few at a time.
const MODEL_STEP_DOCUMENTS: i64 = 16;
const MODEL_CONCURRENCY: usize = 4;
/// How long a model's budget reservation may stay unsettled.
const RESERVATION_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// The job as a classify step needs it.
pub(crate) struct At {
    pub options: Value,
    pub cursor: Option<DocumentId>,
    pub created_by: Option<UserId>,
}

/// What a step decided for one document.
enum Outcome {
    Classified(Vec<Stored>),
    Refused(String),
}

struct Stored {
    field: String,
    value: Value,
    confidence: Option<f32>,
    chunk_ids: Vec<ChunkId>,
}

#[derive(sqlx::FromRow)]
struct Candidate {
    id: DocumentId,
    title: String,
    status: String,
}

#[derive(sqlx::FromRow)]
struct ChunkRow {
    document_id: DocumentId,
    id: ChunkId,
    content: String,
    embedding: Option<Vec<f32>>,
}

/// Why the step stops the job.
enum Stop {
    Failed(String),
    Retry(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Retry(e)
    }
}

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Stop::Retry(e.into())
    }
}

/// Runs one classify step. `Ok(Some(reason))`: the job is to fail with
/// it; `Ok(None)`: done (the caller queues nothing: this step does).
pub(crate) async fn step(state: &State, step: &JobStep, at: At) -> anyhow::Result<Option<String>> {
    match run(state, step, at).await {
        Ok(()) => Ok(None),
        Err(Stop::Failed(reason)) => Ok(Some(reason)),
        Err(Stop::Retry(e)) => Err(e),
    }
}

async fn run(state: &State, step: &JobStep, at: At) -> Result<(), Stop> {
    let ws = step.workspace_id;
    let options: RunOptions = serde_json::from_value(at.options)
        .map_err(|e| Stop::Failed(format!("the job's options are unreadable: {e}")))?;
    let mut tx = tenant_tx(&state.db, None, Some(ws)).await?;
    let scheme: Option<Scheme> = sqlx::query_as(concat!(
        "SELECT ",
        scheme_columns!(),
        " FROM classification_schemes WHERE workspace_id = $1 AND id = $2"
    ))
    .bind(ws)
    .bind(options.scheme_id)
    .fetch_optional(&mut *tx)
    .await?;
    let scheme = match scheme {
        Some(s) if s.deleted_at.is_none() => s,
        _ => return Err(Stop::Failed("the scheme was deleted".into())),
    };
    let model = scheme.classifier == super::ClassifierKind::Model;
    let page = if model {
        MODEL_STEP_DOCUMENTS
    } else {
        STEP_DOCUMENTS
    };
    let mut select = QueryBuilder::new(
        "SELECT d.id, d.title, d.status::text AS status FROM documents d WHERE d.workspace_id = ",
    );
    select.push_bind(ws).push(" AND d.deleted_at IS NULL");
    if let Some(cursor) = at.cursor {
        select.push(" AND d.id > ").push_bind(cursor);
    }
    options
        .selection
        .push_sql(&mut select)
        .map_err(|e| Stop::Failed(format!("the job's filter: {e}")))?;
    select.push(" ORDER BY d.id LIMIT ").push_bind(page);
    let candidates: Vec<Candidate> = select.build_query_as().fetch_all(&mut *tx).await?;
    let ready: Vec<DocumentId> = candidates
        .iter()
        .filter(|c| c.status == "ready")
        .map(|c| c.id)
        .collect();
    let mut chunks: Vec<ChunkRow> = sqlx::query_as(
        "SELECT document_id, id, content, embedding::real[] AS embedding
         FROM chunks WHERE workspace_id = $1 AND document_id = ANY($2)
         ORDER BY document_id DESC, ordinal DESC",
    )
    .bind(ws)
    .bind(&ready)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let exhausted = (candidates.len() as i64) < page;
    let last = candidates.last().map(|c| c.id);

    let mut documents = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        // Popped from the back: chunks are sorted descending.
        let mut own = Vec::new();
        while chunks.last().is_some_and(|c| c.document_id < candidate.id) {
            chunks.pop();
        }
        while chunks.last().is_some_and(|c| c.document_id == candidate.id) {
            let row = chunks.pop().expect("checked");
            own.push(Chunk {
                id: row.id,
                text: row.content,
                embedding: row.embedding.unwrap_or_default(),
            });
        }
        documents.push((
            candidate.id,
            candidate.status,
            Document {
                title: candidate.title,
                chunks: own,
            },
        ));
    }

    let mut stop = None;
    let mut outcomes: Vec<(DocumentId, Outcome)> = Vec::with_capacity(documents.len());
    if !documents.is_empty() {
        let classifier = classifier::for_scheme(state, scheme.clone()).await?;
        let model_name = classifier.model().to_owned();
        let classifier = &*classifier;
        let scheme = &scheme;
        let creator = at.created_by;
        let decided: Vec<(DocumentId, Result<Outcome, Stop>)> = futures::stream::iter(documents)
            .map(|(id, status, doc)| async move {
                if status != "ready" {
                    let reason = format!("the document is not ready (status {status})");
                    return (id, Ok(Outcome::Refused(reason)));
                }
                (
                    id,
                    decide(state, step, scheme, classifier, creator, &doc).await,
                )
            })
            .buffered(if model { MODEL_CONCURRENCY } else { 1 })
            .collect()
            .await;
        for (id, outcome) in decided {
            match outcome {
                Ok(outcome) => outcomes.push((id, outcome)),
                // The first document the job cannot go on with ends the
                // step there: what came before it is kept.
                Err(e) => {
                    stop = Some(e);
                    break;
                }
            }
        }
        if outcomes.is_empty()
            && let Some(stop) = stop
        {
            return Err(stop);
        }
        let cursor = outcomes.last().map(|(id, _)| *id);
        let moved = store(state, step, &model_name, &outcomes, cursor).await?;
        if !moved {
            return Ok(());
        }
        match stop {
            Some(Stop::Failed(reason)) => return Err(Stop::Failed(reason)),
            // What was done is kept; the next step starts at the document
            // that could not be classified (and SQS retries that one).
            Some(Stop::Retry(error)) => {
                tracing::warn!(error = format!("{error:#}"), "classify step cut short");
                crate::jobs::send_next(state, step, step.offset + 1).await?;
                return Ok(());
            }
            None => {}
        }
    }
    if exhausted {
        let mut tx = tenant_tx(&state.db, None, Some(ws)).await?;
        sqlx::query(
            "UPDATE jobs SET status = 'succeeded', started_at = coalesce(started_at, now()),
                    finished_at = now(), updated_at = now()
             WHERE workspace_id = $1 AND id = $2 AND next_offset = $3
               AND status IN ('queued', 'running')",
        )
        .bind(ws)
        .bind(step.job_id)
        .bind(step.offset + i64::from(last.is_some()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(());
    }
    crate::jobs::send_next(state, step, step.offset + 1).await?;
    Ok(())
}

/// One ready document: budget reserved (a model), classified, every
/// value fitted to its field. `Err`: the job cannot go on (the budget is
/// spent, the provider is down).
async fn decide(
    state: &State,
    step: &JobStep,
    scheme: &Scheme,
    classifier: &dyn classifier::Classifier,
    creator: Option<UserId>,
    doc: &Document,
) -> Result<Outcome, Stop> {
    let estimate = classifier.estimate_tokens(doc);
    let reservation = if estimate > 0 {
        let Some(user) = creator else {
            return Err(Stop::Failed(
                "the member who started the job has left; start it again".into(),
            ));
        };
        let mut tx = tenant_tx(&state.db, Some(user), Some(step.workspace_id)).await?;
        let reserved = budget::reserve(
            &mut tx,
            step.workspace_id,
            user,
            Purpose::Classify,
            estimate,
            RESERVATION_TTL,
        )
        .await;
        match reserved {
            Ok(r) => {
                tx.commit().await?;
                Some(r)
            }
            Err(ApiError::TooManyRequests { detail, .. }) => return Err(Stop::Failed(detail)),
            Err(e) => return Err(Stop::Retry(anyhow::anyhow!("{e}"))),
        }
    } else {
        None
    };
    let result = classifier.classify(doc).await;
    if let Some(reservation) = &reservation {
        let settled = match &result {
            Ok(Classified { usage, .. }) => {
                budget::commit(
                    &state.db,
                    reservation,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    classifier.model(),
                )
                .await
            }
            Err(_) => budget::release(&state.db, reservation).await,
        };
        settled.map_err(|e| Stop::Retry(anyhow::anyhow!("{e}")))?;
    }
    match result {
        Ok(classified) => Ok(fit(scheme, classified)),
        Err(ClassifyError::Refused(reason)) => Ok(Outcome::Refused(reason)),
        Err(ClassifyError::Unavailable(reason)) => Err(Stop::Retry(anyhow::anyhow!(
            "classifier unavailable: {reason}"
        ))),
    }
}

/// The decisions as stored, when every field of the scheme has exactly
/// one that fits it; otherwise the document is refused with the reason.
fn fit(scheme: &Scheme, classified: Classified) -> Outcome {
    let mut stored = Vec::with_capacity(scheme.fields.len());
    for field in scheme.fields.iter() {
        let Some(decision) = classified.decisions.iter().find(|d| d.field == field.name) else {
            return Outcome::Refused(format!("no value for {}", field.name));
        };
        match field.fit(&decision.value) {
            Ok(value) => stored.push(Stored {
                field: field.name.clone(),
                value,
                confidence: decision.confidence,
                chunk_ids: decision.chunk_ids.clone(),
            }),
            Err(why) => {
                return Outcome::Refused(format!("the output does not fit the scheme: {why}"));
            }
        }
    }
    Outcome::Classified(stored)
}

/// Commits the step's results and refusals with the job's progress, if
/// the job is still at the step's offset. `false`: another delivery of
/// the step got there first (or the job was cancelled), nothing stored.
async fn store(
    state: &State,
    step: &JobStep,
    model: &str,
    outcomes: &[(DocumentId, Outcome)],
    cursor: Option<DocumentId>,
) -> anyhow::Result<bool> {
    let ws = step.workspace_id;
    let mut tx = tenant_tx(&state.db, None, Some(ws)).await?;
    let (mut classified, mut failed) = (0i64, 0i64);
    let (mut docs, mut fields, mut values, mut confidences, mut chunk_ids) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut refused, mut reasons) = (Vec::new(), Vec::new());
    for (id, outcome) in outcomes {
        match outcome {
            Outcome::Classified(stored) => {
                classified += 1;
                for s in stored {
                    docs.push(*id);
                    fields.push(s.field.clone());
                    values.push(Json(s.value.clone()));
                    confidences.push(s.confidence);
                    // An array of arrays must be rectangular: uuid lists
                    // travel as text.
                    chunk_ids.push(
                        s.chunk_ids
                            .iter()
                            .map(ChunkId::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                }
            }
            Outcome::Refused(reason) => {
                failed += 1;
                refused.push(*id);
                reasons.push(reason.clone());
            }
        }
    }
    let moved = sqlx::query(
        "UPDATE jobs SET status = 'running', started_at = coalesce(started_at, now()),
                next_offset = next_offset + 1, cursor_id = coalesce($4, cursor_id),
                classified = classified + $5, failed = failed + $6, updated_at = now()
         WHERE workspace_id = $1 AND id = $2 AND next_offset = $3
           AND status IN ('queued', 'running')",
    )
    .bind(ws)
    .bind(step.job_id)
    .bind(step.offset)
    .bind(cursor)
    .bind(classified)
    .bind(failed)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO classification_results
             (workspace_id, job_id, document_id, field, value, confidence, model, chunk_ids)
         SELECT $1, $2, d, f, v, c, $3,
                coalesce(string_to_array(nullif(ch, ''), ',')::uuid[], '{}')
         FROM unnest($4::uuid[], $5::text[], $6::jsonb[], $7::real[], $8::text[])
              AS t(d, f, v, c, ch)
         ON CONFLICT DO NOTHING",
    )
    .bind(ws)
    .bind(step.job_id)
    .bind(model)
    .bind(&docs)
    .bind(&fields)
    .bind(&values)
    .bind(&confidences)
    .bind(&chunk_ids)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO classification_failures (workspace_id, job_id, document_id, reason)
         SELECT $1, $2, d, r FROM unnest($3::uuid[], $4::text[]) AS t(d, r)
         ON CONFLICT DO NOTHING",
    )
    .bind(ws)
    .bind(step.job_id)
    .bind(&refused)
    .bind(&reasons)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
