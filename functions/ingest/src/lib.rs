//! The ingest queue consumer: S3 ObjectCreated events for uploads and
//! `ragway.document.changed` messages for inline documents and edits.
//!
//! Per record: find the document (unknown keys, test events and deleted
//! documents are acknowledged and logged), skip what is already ingested,
//! read the bytes, check them against what was declared, extract, chunk,
//! embed, and replace the document's chunks in one transaction. A problem
//! with the file fails the document with a readable error and is
//! acknowledged; a problem with our dependencies (database, S3, embedding
//! provider) reports the record in `batchItemFailures`, so SQS redelivers
//! it, and after maxReceiveCount moves it to the DLQ.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::State;
use common::aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use common::documents::{Source, Status};
use common::embed::EmbedError;
use common::futures::StreamExt;
use common::ids::{DocumentId, WorkspaceId};
use common::ingest::events::{CreatedObject, DocumentChanged, QueueMessage};
use common::ingest::store::{self, Made, NewChunk, Target};
use common::lambda::Function;
use ingestion::chunk::{ChunkSpec, Chunker};
use ingestion::extract::{self, Format};
use sha2::{Digest, Sha256};

pub const FUNCTIONS: &[Function] = &[
    common::sqs_function!("ingest-worker", worker),
    common::schedule_function!("ingest-indexer", indexer),
    common::schedule_function!("ingest-requeue", requeue),
];

/// Documents pending this long after their last write were never queued.
const REQUEUE_AFTER: std::time::Duration = std::time::Duration::from_secs(300);
/// Most documents one requeue run sends.
const REQUEUE_BATCH: i32 = 1_000;

/// Scheduled: queues again the inline documents whose change message was
/// never sent (the queue failed after the document was stored).
pub async fn requeue(state: &State, _event: serde_json::Value) -> common::Result<()> {
    let queued = common::ingest::requeue_stale(state, REQUEUE_AFTER, REQUEUE_BATCH)
        .await
        .map_err(common::ApiError::Internal)?;
    if queued > 0 {
        tracing::warn!(queued, "documents stored but never queued, queued again");
    }
    Ok(())
}

/// The indexer starts no index build after this long (a build already
/// under way finishes; the function's timeout is 15 minutes).
const INDEXER_BUDGET: std::time::Duration = std::time::Duration::from_secs(300);

/// Scheduled: moves workspaces above the exact-search size into the HNSW
/// indexes and those below half of it out, builds the largest ones' own
/// vector indexes and drops those no longer wanted
/// (`common::retrieval::indexes`).
pub async fn indexer(state: &State, _event: serde_json::Value) -> common::Result<()> {
    let query = &state.config.query;
    let report = common::retrieval::indexes::maintain(
        &state.db,
        state.config.embedding.dimensions,
        query.exact_search_max_chunks,
        query.dedicated_indexes_max,
        INDEXER_BUDGET,
    )
    .await?;
    tracing::info!(
        indexed = ?report.indexed,
        unindexed = ?report.unindexed,
        created = ?report.created,
        dropped = ?report.dropped,
        pending = report.pending,
        busy = report.busy,
        "vector indexes maintained"
    );
    Ok(())
}

/// After this many receives SQS moves a message to the DLQ (template.yaml
/// maxReceiveCount); the last attempt also marks the document failed.
const MAX_RECEIVES: u32 = 5;

/// A failure worth retrying: the record goes back to the queue.
#[derive(Debug)]
struct Retry(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Retry {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

/// What happened to one record, for the log.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ingested { chunks: usize },
    Skipped(&'static str),
    Failed(String),
}

/// Handles one SQS batch; failed records are listed in `batchItemFailures`.
pub async fn worker(state: &State, event: SqsEvent) -> SqsBatchResponse {
    // Records are independent: overlap their S3 reads, CPU work and
    // database round trips (the pool bounds concurrent connections).
    let failures: Vec<BatchItemFailure> = common::futures::stream::iter(event.records)
        .map(|record| handle_record(state, record))
        .buffer_unordered(RECORD_CONCURRENCY)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

/// Records of one batch processed at once.
const RECORD_CONCURRENCY: usize = 4;

/// One record; `Some` when it must be redelivered.
async fn handle_record(state: &State, record: SqsMessage) -> Option<BatchItemFailure> {
    let id = record.message_id.clone().unwrap_or_default();
    let receives: u32 = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let body = record.body.as_deref().unwrap_or_default();
    let result = match QueueMessage::parse(body) {
        Err(error) => Err(Retry(anyhow::anyhow!("unreadable message: {error}"))),
        Ok(QueueMessage::TestEvent) => Ok(vec![Outcome::Skipped("S3 test event")]),
        Ok(QueueMessage::DocumentChanged(changed)) => {
            let result = ingest_inline(state, &changed).await;
            if let Err(retry) = &result
                && receives >= MAX_RECEIVES
            {
                give_up(
                    state,
                    Some(changed.workspace_id),
                    Some(changed.document_id),
                    retry,
                )
                .await;
            }
            result.map(|o| vec![o])
        }
        Ok(QueueMessage::ObjectsCreated(objects)) => {
            let mut outcomes = Vec::new();
            let mut result = Ok(());
            for object in &objects {
                match ingest_upload(state, object).await {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(retry) => {
                        if receives >= MAX_RECEIVES {
                            let doc = object.document_id.map(DocumentId);
                            give_up(state, object.workspace_id, doc, &retry).await;
                        }
                        result = Err(retry);
                    }
                }
            }
            result.map(|()| outcomes)
        }
    };
    match result {
        Ok(outcomes) => {
            for outcome in outcomes {
                tracing::info!(message_id = %id, ?outcome, "ingest record handled");
            }
            None
        }
        Err(Retry(error)) => {
            tracing::warn!(message_id = %id, receives, error = format!("{error:#}"),
                "ingest record failed; SQS will redeliver it");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            Some(failure)
        }
    }
}

/// The message's last delivery failed too: say so on the document (it
/// goes to the DLQ; a redrive after the cause is fixed ingests it).
async fn give_up(
    state: &State,
    workspace: Option<WorkspaceId>,
    document: Option<DocumentId>,
    retry: &Retry,
) {
    if let (Some(ws), Some(doc)) = (workspace, document) {
        let reason = format!(
            "ingestion failed {MAX_RECEIVES} times; last error: {:#}",
            retry.0
        );
        if let Err(error) = store::mark_failed(&state.db, ws, doc, &reason).await {
            tracing::error!(%error, document = %doc, "could not mark the document failed");
        }
    }
}

/// Chunkers by (max tokens, overlap): built once per container (loading
/// the tokenizer takes ~100 ms); keyed so tests with other sizes coexist.
type ChunkerCache = Mutex<Option<HashMap<(usize, usize), Arc<Chunker>>>>;

fn chunker(state: &State) -> Result<Arc<Chunker>, Retry> {
    static CHUNKERS: ChunkerCache = Mutex::new(None);
    let spec = (
        state.config.ingest.chunk_tokens,
        state.config.ingest.chunk_overlap_tokens,
    );
    let mut cache = CHUNKERS
        .lock()
        .map_err(|_| anyhow::anyhow!("chunker cache poisoned"))?;
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(chunker) = cache.get(&spec) {
        return Ok(chunker.clone());
    }
    let chunker = Arc::new(
        Chunker::new(ChunkSpec {
            max_tokens: spec.0,
            overlap_tokens: spec.1,
        })
        .map_err(|e| anyhow::anyhow!("building the chunker: {e}"))?,
    );
    cache.insert(spec, chunker.clone());
    Ok(chunker)
}

/// Text → chunks with embeddings; `Err(Ok(reason))` fails the document,
/// `Err(Err(retry))` retries the record.
async fn prepare(
    state: &State,
    bytes: &[u8],
    format: Format,
) -> Result<Vec<NewChunk>, Result<String, Retry>> {
    let sections = extract::extract(bytes, format).map_err(|e| Ok(e.to_string()))?;
    let chunker = chunker(state).map_err(Err)?;
    let chunks = chunker.chunk(&sections);
    let embedder = state.embedder().await.map_err(|e| Err(Retry(e)))?;
    let texts: Vec<String> = chunks.iter().map(|c| c.embedding_text()).collect();
    let vectors = embedder.embed(&texts).await.map_err(|e| match e {
        EmbedError::Unavailable(_) => Err(Retry(e.into())),
        EmbedError::Failed(message) => Ok(format!("embedding failed: {message}")),
    })?;
    if vectors.len() != chunks.len() {
        return Err(Err(Retry(anyhow::anyhow!(
            "the embedder returned {} vectors for {} chunks",
            vectors.len(),
            chunks.len()
        ))));
    }
    Ok(chunks
        .into_iter()
        .zip(vectors)
        .map(|(chunk, embedding)| NewChunk {
            content: chunk.content,
            token_count: chunk.token_count,
            page: chunk.page,
            heading: chunk.heading,
            embedding,
        })
        .collect())
}

/// Stores the chunks, or records why the document failed.
async fn finish(
    state: &State,
    ws: WorkspaceId,
    doc: DocumentId,
    prepared: Result<Vec<NewChunk>, Result<String, Retry>>,
    made: Made,
) -> Result<Outcome, Retry> {
    match prepared {
        Ok(chunks) => {
            let count = chunks.len();
            if store::replace_chunks(&state.db, ws, doc, &made, chunks).await? {
                Ok(Outcome::Ingested { chunks: count })
            } else {
                Ok(Outcome::Skipped(
                    "the document changed meanwhile; a newer message carries it",
                ))
            }
        }
        Err(Ok(reason)) => {
            store::mark_failed(&state.db, ws, doc, &reason).await?;
            Ok(Outcome::Failed(reason))
        }
        Err(Err(retry)) => Err(retry),
    }
}

fn is_live(target: &Option<Target>) -> Result<&Target, Outcome> {
    match target {
        None => Err(Outcome::Skipped("no such document in this workspace")),
        Some(t) if t.deleted => Err(Outcome::Skipped("the document was deleted")),
        Some(t) => Ok(t),
    }
}

async fn ingest_inline(state: &State, changed: &DocumentChanged) -> Result<Outcome, Retry> {
    let (ws, doc) = (changed.workspace_id, changed.document_id);
    let target = store::load(&state.db, ws, doc).await?;
    let target = match is_live(&target) {
        Ok(t) => t,
        Err(skipped) => return Ok(skipped),
    };
    if target.source != Source::Inline {
        return Ok(Outcome::Skipped("not an inline document"));
    }
    if target.status == Status::Ready
        && target.ingested_sha256.as_deref() == Some(target.content_sha256.as_str())
    {
        return Ok(Outcome::Skipped("this content is already ingested"));
    }
    if !store::claim(&state.db, ws, doc, None).await? {
        return Ok(Outcome::Skipped(
            "already ingested, or being ingested by another delivery",
        ));
    }
    let format = Format::from_content_type(&target.content_type).unwrap_or(Format::PlainText);
    let text = target.content.as_deref().unwrap_or_default();
    let prepared = prepare(state, text.as_bytes(), format).await;
    let made = Made::Inline {
        content_sha256: target.content_sha256.clone(),
    };
    finish(state, ws, doc, prepared, made).await
}

async fn ingest_upload(state: &State, object: &CreatedObject) -> Result<Outcome, Retry> {
    let (Some(ws), Some(doc)) = (object.workspace_id, object.document_id.map(DocumentId)) else {
        return Ok(Outcome::Skipped(
            "key outside workspaces/{id}/documents/{id}/",
        ));
    };
    let target = store::load(&state.db, ws, doc).await?;
    let target = match is_live(&target) {
        Ok(t) => t,
        Err(skipped) => return Ok(skipped),
    };
    if target.source != Source::Upload || target.s3_key.as_deref() != Some(object.key.as_str()) {
        return Ok(Outcome::Skipped("not this document's file"));
    }
    if let (Some(seen), Some(sequencer)) = (&target.object_sequencer, &object.sequencer)
        && store::sequencer_later(seen, sequencer)
    {
        return Ok(Outcome::Skipped(
            "a later write of this key was already ingested",
        ));
    }
    if target.status == Status::Ready && object.etag.is_some() && object.etag == target.object_etag
    {
        return Ok(Outcome::Skipped("this object is already ingested"));
    }
    if !store::claim(&state.db, ws, doc, object.etag.as_deref()).await? {
        return Ok(Outcome::Skipped(
            "already ingested, or being ingested by another delivery",
        ));
    }
    let bucket = state
        .config
        .bucket_name
        .clone()
        .unwrap_or_else(|| object.bucket.clone());
    let got = state
        .s3()
        .await
        .get_object()
        .bucket(&bucket)
        .key(&object.key)
        .send()
        .await;
    let got = match got {
        Ok(got) => got,
        Err(error) => {
            let service = error.as_service_error().map(|e| e.is_no_such_key());
            if service == Some(true) {
                return Ok(Outcome::Skipped("the object is gone (deleted or replaced)"));
            }
            return Err(Retry(anyhow::anyhow!(
                aws_sdk_s3::error::DisplayErrorContext(error)
            )));
        }
    };
    let etag = got
        .e_tag()
        .map(|e| e.trim_matches('"').to_owned())
        .or_else(|| object.etag.clone())
        .unwrap_or_default();
    let bytes = got
        .body
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the object: {e}"))?
        .into_bytes();
    let made = Made::Upload {
        key: object.key.clone(),
        etag,
        sequencer: object.sequencer.clone(),
        size: bytes.len() as i64,
        content_sha256: format!("{:x}", Sha256::digest(&bytes)),
    };
    let declared = Format::from_content_type(&target.content_type);
    let prepared = if bytes.len() as i64 != target.size {
        Err(Ok(format!(
            "the uploaded file is {} bytes, but {} were declared",
            bytes.len(),
            target.size
        )))
    } else if let Some(mismatch) = type_mismatch(&bytes, declared, &target.content_type) {
        Err(Ok(mismatch))
    } else {
        match declared {
            Some(format) => prepare(state, &bytes, format).await,
            None => Err(Ok(format!("{} files cannot be read", target.content_type))),
        }
    };
    finish(state, ws, doc, prepared, made).await
}

/// A readable reason when the bytes are evidently not the declared type
/// (a PDF declared as text, an image or spreadsheet declared as anything).
fn type_mismatch(bytes: &[u8], declared: Option<Format>, declared_type: &str) -> Option<String> {
    match extract::sniff(bytes) {
        Ok(None) => None,
        Ok(Some(real)) if Some(real) == declared => None,
        Ok(Some(real)) => Some(format!(
            "the file is {} but was declared {declared_type}",
            real.mime()
        )),
        Err(unsupported) => Some(format!("{unsupported} (declared {declared_type})")),
    }
}
