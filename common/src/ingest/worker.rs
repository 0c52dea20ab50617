//! The ingest worker's engine: one SQS batch of S3 ObjectCreated events
//! (uploads) and `ragway.document.changed` messages (inline documents and
//! edits) becomes stored chunks.
//!
//! Per batch ([`ingest_batch`]): claim the documents its records ask for
//! (unknown keys, test events and deleted documents are acknowledged and
//! logged; what is already ingested is skipped; documents of a deleted
//! workspace are failed and their uploaded objects removed), read each one's bytes,
//! extract and chunk them in a child process ([`super::extractor`]),
//! embed, and replace the documents' chunks several per transaction. A
//! problem with the file fails the document with a readable error and is
//! acknowledged; a problem with our dependencies (database, S3, embedding
//! provider) returns the record for redelivery, and after maxReceiveCount
//! SQS moves it to the DLQ.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use extraction::isolate;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::events::{CreatedObject, QueueMessage};
use super::extractor::{Extracted, Extractors};
use super::store::{self, Ingest, Ingested, Made, NewChunk, Target};
use crate::embed::EmbedError;
use crate::ids::{DocumentId, WorkspaceId};
use crate::state::State;
use crate::storage::Bucket;

/// One record of an SQS batch, as the engine reads it.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    /// `ApproximateReceiveCount`: this delivery's number.
    pub receives: u32,
    pub body: String,
}

/// After this many receives SQS moves a message to the DLQ (template.yaml
/// maxReceiveCount); the last attempt also marks the document failed.
pub const MAX_RECEIVES: u32 = 5;

/// A failure worth retrying: the record goes back to the queue.
#[derive(Debug)]
struct Retry(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Retry {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

/// Why a claimed document was not tried: the invocation's time ran short
/// ([`START_RESERVE`]).
#[derive(Debug)]
struct NotStarted {
    left: std::time::Duration,
}

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not started: {:.1} s of the invocation were left, under the {} s a document may need",
            self.left.as_secs_f64(),
            START_RESERVE.as_secs()
        )
    }
}

impl std::error::Error for NotStarted {}

/// What happened to one document of a record, for the log.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ingested { chunks: usize },
    Skipped(&'static str),
    Failed(String),
}

/// What a record asks of one document.
enum Work {
    Inline,
    Upload(CreatedObject),
}

/// One document a record asks to ingest.
struct Job {
    /// Its record's place in the batch.
    record: usize,
    workspace: WorkspaceId,
    document: DocumentId,
    work: Work,
}

impl Job {
    fn ingest(&self) -> Ingest<'_> {
        match &self.work {
            Work::Inline => Ingest::Inline,
            Work::Upload(object) => Ingest::Upload {
                key: &object.key,
                sequencer: object.sequencer.as_deref(),
                etag: object.etag.as_deref(),
            },
        }
    }
}

/// One record of the batch and what became of it.
struct Record {
    id: String,
    receives: u32,
    /// What was decided without a document (test events, foreign keys),
    /// then each document's outcome.
    outcomes: Vec<Outcome>,
    /// Why it must be redelivered, if it must: a document's failure
    /// rather than [`NotStarted`] when it has both, so a `NotStarted`
    /// here means no document of it was tried and it can be queued again
    /// as it is ([`queue_again`]).
    retry: Option<Retry>,
    /// Its message body, to queue it again.
    body: String,
}

/// What a job came to: an outcome, or a retry of its record.
type JobResult = Result<Outcome, Retry>;

/// Handles one SQS batch; returns the ids of the records SQS must deliver
/// again (the handler's `batchItemFailures`).
///
/// The batch is worked so the database sees a few statements per batch
/// instead of several per document:
/// 1. the documents the records ask for are claimed, one statement per
///    workspace;
/// 2. each claimed document is read, checked, extracted, chunked and
///    embedded, several at once, unless the invocation's time has run
///    short ([`START_RESERVE`]);
/// 3. meanwhile the prepared ones are stored, several documents per
///    transaction (one workspace each); if one fails, its documents one
///    transaction each, so one bad document never holds back the rest
///    ([`prepare_and_store`]).
pub async fn ingest_batch(state: &State, messages: Vec<Message>) -> Vec<String> {
    let mut jobs = Vec::new();
    let mut records: Vec<Record> = messages
        .into_iter()
        .enumerate()
        .map(|(i, message)| read_record(message, i, &mut jobs))
        .collect();
    let mut results: Vec<Option<JobResult>> = jobs.iter().map(|_| None).collect();

    let claims = claim_jobs(state, &jobs).await;
    let mut claimed = Vec::new();
    let mut leased = vec![false; jobs.len()];
    let mut refused = Vec::new();
    for (i, claim) in claims.into_iter().enumerate() {
        if let Ok(Some(claim)) = &claim
            && claim.workspace_deleted
        {
            refused.push(i);
            continue;
        }
        match claim.map(|c| claimed_target(c, jobs[i].ingest())) {
            Ok(Ok(target)) => {
                leased[i] = true;
                claimed.push((i, target));
            }
            Ok(Err(skipped)) => results[i] = Some(Ok(skipped)),
            Err(retry) => results[i] = Some(Err(retry)),
        }
    }
    for (i, result) in refuse(state, &jobs, refused).await {
        results[i] = Some(result);
    }

    prepare_and_store(state, &jobs, claimed, &mut results).await;

    // Per workspace and whether the document was tried: leases to give back.
    let mut release: HashMap<(WorkspaceId, bool), Vec<DocumentId>> = HashMap::new();
    let mut not_started = Vec::new();
    for (i, (result, leased)) in results.into_iter().zip(leased).enumerate() {
        let job = &jobs[i];
        let record = &mut records[job.record];
        match result {
            Some(Ok(outcome)) => record.outcomes.push(outcome),
            Some(Err(retry)) => {
                let started = !retry.0.is::<NotStarted>();
                if started && record.receives >= MAX_RECEIVES {
                    give_up(state, job.workspace, job.document, &retry).await;
                } else if leased {
                    release
                        .entry((job.workspace, started))
                        .or_default()
                        .push(job.document);
                }
                if !started {
                    not_started.push(i);
                }
                if started || record.retry.is_none() {
                    record.retry = Some(retry);
                }
            }
            None => {
                record.retry = Some(Retry(anyhow::anyhow!(
                    "document {} was left unhandled",
                    job.document
                )))
            }
        }
    }
    for ((ws, started), documents) in release {
        // If this fails too, the leases lapse after ten minutes, before
        // SQS redelivers (visibility timeout: twelve).
        if let Err(error) = store::release(&state.db, ws, &documents, started).await {
            tracing::warn!(%error, "could not give back the leases of failed documents");
        }
    }
    queue_again(state, &mut records).await;
    for i in not_started {
        let job = &jobs[i];
        let record = &records[job.record];
        if let Some(retry) = record
            .retry
            .as_ref()
            .filter(|_| record.receives >= MAX_RECEIVES)
        {
            give_up(state, job.workspace, job.document, retry).await;
        }
    }
    emit_metrics(&records);
    records.into_iter().filter_map(report).collect()
}

/// Sends the records none of whose documents was started in time
/// ([`NotStarted`]) to the queue again as new messages, and acknowledges
/// them: they come back at once, not after the visibility timeout, and a
/// batch that ran short does not count against their maxReceiveCount.
/// Those SQS does not take stay failures of the batch.
async fn queue_again(state: &State, records: &mut [Record]) {
    let deferred: Vec<usize> = (0..records.len())
        .filter(|&r| {
            records[r]
                .retry
                .as_ref()
                .is_some_and(|retry| retry.0.is::<NotStarted>())
        })
        .collect();
    if deferred.is_empty() {
        return;
    }
    let bodies: Vec<String> = deferred.iter().map(|&r| records[r].body.clone()).collect();
    let sent = async { state.ingest_queue().await?.send_all(&bodies).await };
    let sent = sent.await.unwrap_or_else(|error| {
        tracing::warn!(
            error = format!("{error:#}"),
            "could not queue unstarted records again"
        );
        vec![false; bodies.len()]
    });
    for (r, sent) in deferred.into_iter().zip(sent) {
        if sent {
            let record = &mut records[r];
            record.retry = None;
            record
                .outcomes
                .push(Outcome::Skipped("not started in time; queued again"));
        }
    }
}

/// Prepares the claimed documents, [`RECORD_CONCURRENCY`] at once, and
/// stores them as they come: whatever is prepared goes into the next
/// transaction (at least [`STORE_MIN`] documents, or the rest), at most
/// [`STORE_CONCURRENCY`] transactions at once, while the others are
/// still being read and embedded. The worker's CPU and the database's
/// then work at the same time, and a transaction carries several
/// documents.
async fn prepare_and_store(
    state: &State,
    jobs: &[Job],
    claimed: Vec<(usize, Target)>,
    results: &mut [Option<JobResult>],
) {
    let mut prepared = futures::stream::iter(claimed)
        .map(|(i, target)| async move {
            if let Some(left) = crate::deadline::remaining_time()
                && left < START_RESERVE
            {
                return (i, Err(Err(Retry(NotStarted { left }.into()))));
            }
            (i, prepare_job(state, &jobs[i], &target).await)
        })
        .buffer_unordered(RECORD_CONCURRENCY);
    let mut stores = futures::stream::FuturesUnordered::new();
    let mut pending: Vec<(usize, Ingested)> = Vec::new();
    let mut exhausted = false;
    loop {
        let full = pending
            .iter()
            .map(|(_, doc)| doc.chunks.len())
            .sum::<usize>()
            >= PENDING_CHUNKS;
        if !pending.is_empty()
            && stores.len() < STORE_CONCURRENCY
            && (exhausted || full || pending.len() >= STORE_MIN)
        {
            stores.push(store_jobs(state, jobs, std::mem::take(&mut pending)));
        }
        if exhausted && pending.is_empty() && stores.is_empty() {
            return;
        }
        // While the stores are busy and enough is waiting for them, nothing
        // more is prepared (its chunks would only wait in memory). Past the
        // store above, `pending` is either empty or as it was.
        let room = !full || pending.is_empty();
        tokio::select! {
            next = prepared.next(), if !exhausted && room => match next {
                Some((i, Ok(ingested))) => pending.push((i, ingested)),
                Some((i, Err(done))) => results[i] = Some(done),
                None => exhausted = true,
            },
            Some(stored) = stores.next(), if !stores.is_empty() => {
                for (i, result) in stored {
                    results[i] = Some(result);
                }
            }
        }
    }
}

/// No document of a batch starts once less than this is left of the
/// invocation (template.yaml: Timeout 120). Its lease and attempt are
/// given back and its record queued again ([`queue_again`]), so what was
/// stored is acknowledged instead of the whole batch timing out and
/// coming back after the visibility timeout.
const START_RESERVE: std::time::Duration = std::time::Duration::from_secs(30);

/// Fewest prepared documents a transaction waits for (unless none are
/// left to prepare). Fewer per transaction cost Postgres more CPU per
/// document (`infra/bench/ingest.sh`), and a whole batch in one
/// transaction keeps the cores idle while it is prepared.
const STORE_MIN: usize = 4;
/// Prepared chunks (text and embedding, a few KB each) that wait for a
/// store before more documents are prepared: bounds the worker's memory
/// whatever the batch size, when the database is slower than preparing.
const PENDING_CHUNKS: usize = 2_048;
/// Store transactions of one batch at once (two connections insert into
/// the HNSW index side by side).
const STORE_CONCURRENCY: usize = 2;

/// What a batch came to, as metrics: chunks stored, documents failed (the
/// file's fault) and records to redeliver (our dependencies').
fn emit_metrics(records: &[Record]) {
    use crate::metrics::{Unit, emit};
    let outcomes = records.iter().flat_map(|r| &r.outcomes);
    let (mut chunks, mut failed) = (0usize, 0usize);
    for outcome in outcomes {
        match outcome {
            Outcome::Ingested { chunks: n } => chunks += n,
            Outcome::Failed(_) => failed += 1,
            Outcome::Skipped(_) => {}
        }
    }
    let retried = records.iter().filter(|r| r.retry.is_some()).count();
    emit(
        &[
            ("ChunksIngested", Unit::Count, chunks as f64),
            ("DocumentsFailed", Unit::Count, failed as f64),
            ("RecordsRetried", Unit::Count, retried as f64),
        ],
        &[],
    );
}

/// Logs what became of a record; its id when it must be redelivered.
fn report(record: Record) -> Option<String> {
    let Record {
        id,
        receives,
        outcomes,
        retry,
        ..
    } = record;
    for outcome in outcomes {
        tracing::info!(message_id = %id, ?outcome, "ingest record handled");
    }
    let Retry(error) = retry?;
    tracing::warn!(message_id = %id, receives, error = format!("{error:#}"),
        "ingest record failed; SQS will redeliver it");
    Some(id)
}

/// Documents of one batch read, extracted and embedded at once (each
/// holds its file and text in memory meanwhile).
const RECORD_CONCURRENCY: usize = 4;

/// A record's message, and the documents it asks for appended to `jobs`.
fn read_record(message: Message, index: usize, jobs: &mut Vec<Job>) -> Record {
    let mut record = Record {
        id: message.id,
        receives: message.receives,
        outcomes: Vec::new(),
        retry: None,
        body: message.body,
    };
    let mut job = |workspace, document, work| {
        jobs.push(Job {
            record: index,
            workspace,
            document,
            work,
        })
    };
    match QueueMessage::parse(&record.body) {
        Err(error) => record.retry = Some(Retry(anyhow::anyhow!("unreadable message: {error}"))),
        Ok(QueueMessage::TestEvent) => record.outcomes.push(Outcome::Skipped("S3 test event")),
        Ok(QueueMessage::JobStep(_)) => {
            record.retry = Some(Retry(anyhow::anyhow!(
                "a job step reached the document engine; the jobs runner takes it"
            )))
        }
        Ok(QueueMessage::DocumentChanged(changed)) => {
            job(changed.workspace_id, changed.document_id, Work::Inline)
        }
        Ok(QueueMessage::ObjectsCreated(objects)) => {
            for object in objects {
                match (object.workspace_id, object.document_id.map(DocumentId)) {
                    (Some(ws), Some(doc)) => job(ws, doc, Work::Upload(object)),
                    _ => record.outcomes.push(Outcome::Skipped(
                        "key outside workspaces/{id}/documents/{id}/",
                    )),
                }
            }
        }
    }
    record
}

/// Claims every job's document: one statement per workspace, the
/// workspaces at once. A failed claim retries its jobs.
async fn claim_jobs(state: &State, jobs: &[Job]) -> Vec<Result<Option<store::Claim>, Retry>> {
    let by_workspace = by_workspace(jobs, (0..jobs.len()).map(|i| (i, ())));
    let groups =
        futures::future::join_all(by_workspace.into_iter().map(|(ws, members)| async move {
            let members: Vec<usize> = members.into_iter().map(|(i, ())| i).collect();
            let wanted: Vec<_> = members
                .iter()
                .map(|&i| (jobs[i].document, jobs[i].ingest()))
                .collect();
            let claims = store::claim_all(&state.db, ws, &wanted).await;
            (members, claims)
        }))
        .await;
    let mut claims: Vec<Result<Option<store::Claim>, Retry>> =
        jobs.iter().map(|_| Ok(None)).collect();
    for (members, found) in groups {
        match found {
            Ok(found) => {
                for (i, claim) in members.into_iter().zip(found) {
                    claims[i] = Ok(claim);
                }
            }
            Err(error) => {
                for i in members {
                    claims[i] = Err(Retry(anyhow::anyhow!("claiming documents: {error}")));
                }
            }
        }
    }
    claims
}

/// Stores the prepared documents: one transaction per workspace, the
/// workspaces at once; if one fails, its documents one transaction each.
async fn store_jobs(
    state: &State,
    jobs: &[Job],
    ready: Vec<(usize, Ingested)>,
) -> Vec<(usize, JobResult)> {
    let groups = futures::future::join_all(by_workspace(jobs, ready).into_iter().map(
        |(ws, group)| async move {
            let (members, documents): (Vec<usize>, Vec<Ingested>) = group.into_iter().unzip();
            let error = match store::replace_all(&state.db, ws, &documents).await {
                Ok(stored) if stored.workspace_deleted => {
                    return refuse(state, jobs, members).await;
                }
                Ok(stored) => {
                    return members
                        .into_iter()
                        .zip(stored.documents.into_iter().zip(&documents))
                        .map(|(i, (stored, doc))| (i, stored_outcome(stored, doc)))
                        .collect();
                }
                Err(error) => error,
            };
            if let [one] = members.as_slice() {
                return vec![(*one, store_failed(state, ws, &documents[0], error).await)];
            }
            tracing::warn!(%error, documents = documents.len(),
                "storing a batch's chunks failed; storing them one by one");
            let mut results = Vec::new();
            for (i, doc) in members.into_iter().zip(&documents) {
                let one = store::replace_all(&state.db, ws, std::slice::from_ref(doc)).await;
                match one {
                    Ok(stored) if stored.workspace_deleted => {
                        results.extend(refuse(state, jobs, vec![i]).await);
                    }
                    Ok(stored) => {
                        let stored = stored.documents.first() == Some(&true);
                        results.push((i, stored_outcome(stored, doc)));
                    }
                    Err(error) => results.push((i, store_failed(state, ws, doc, error).await)),
                }
            }
            results
        },
    ))
    .await;
    groups.into_iter().flatten().collect()
}

/// Why a document of a deleted workspace failed.
pub const WORKSPACE_DELETED: &str =
    "the workspace was deleted: nothing of it is ingested any more, and its file was removed";

/// Refuses the jobs of deleted workspaces (a claim or a store found the
/// workspace deleted): their documents fail with [`WORKSPACE_DELETED`]
/// and the uploaded objects their records name are removed, so a file
/// PUT after the deletion, with a URL signed before it, is neither
/// ingested nor kept. The record is acknowledged; a failure of the
/// database or S3 retries it (refusing again changes nothing twice).
async fn refuse(state: &State, jobs: &[Job], refused: Vec<usize>) -> Vec<(usize, JobResult)> {
    let groups = by_workspace(jobs, refused.into_iter().map(|i| (i, ())));
    let mut results = Vec::new();
    for (ws, members) in groups {
        let members: Vec<usize> = members.into_iter().map(|(i, ())| i).collect();
        let documents: Vec<DocumentId> = members.iter().map(|&i| jobs[i].document).collect();
        tracing::warn!(workspace = %ws, documents = documents.len(),
            "documents of a deleted workspace refused");
        if let Err(error) = store::fail_refused(&state.db, ws, &documents, WORKSPACE_DELETED).await
        {
            let error = anyhow::Error::from(error);
            results.extend(
                members
                    .into_iter()
                    .map(|i| (i, Err(Retry(anyhow::anyhow!("refusing: {error:#}"))))),
            );
            continue;
        }
        for i in members {
            let removed = match &jobs[i].work {
                Work::Inline => Ok(()),
                Work::Upload(object) => remove_refused(state, ws, object).await,
            };
            results.push((
                i,
                match removed {
                    Ok(()) => Ok(Outcome::Skipped(
                        "the workspace was deleted; the document failed, its file is removed",
                    )),
                    Err(error) => Err(Retry(error)),
                },
            ));
        }
    }
    results
}

/// Removes an uploaded object of deleted workspace `workspace`; only ever
/// one under that workspace's own prefix (where the key named it).
async fn remove_refused(
    state: &State,
    workspace: WorkspaceId,
    object: &CreatedObject,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        object
            .key
            .starts_with(&crate::storage::workspace_prefix(workspace)),
        "{} is not a file of workspace {workspace}",
        object.key
    );
    let name = state
        .config
        .bucket_name
        .as_deref()
        .unwrap_or(&object.bucket);
    Bucket::new(state.s3().await, name)
        .delete(&object.key)
        .await
}

/// One document the database would not store: failed for good when it
/// refused the data itself ([`store::refused_data`]), else retried.
async fn store_failed(
    state: &State,
    workspace: WorkspaceId,
    doc: &Ingested,
    error: store::StoreError,
) -> JobResult {
    let Some(reason) = store::refused_data(&error) else {
        return Err(Retry::from(error));
    };
    tracing::warn!(document = %doc.document, %reason, "the database refused a document");
    match store::mark_failed(&state.db, workspace, doc.document, &reason).await {
        Ok(()) => Ok(Outcome::Failed(reason)),
        Err(error) => Err(Retry::from(error)),
    }
}

/// `items` (each a job's index and something of it) grouped by the job's
/// workspace: each workspace is claimed and stored in its own transactions.
fn by_workspace<T>(
    jobs: &[Job],
    items: impl IntoIterator<Item = (usize, T)>,
) -> HashMap<WorkspaceId, Vec<(usize, T)>> {
    let mut groups: HashMap<WorkspaceId, Vec<(usize, T)>> = HashMap::new();
    for (i, item) in items {
        groups.entry(jobs[i].workspace).or_default().push((i, item));
    }
    groups
}

fn stored_outcome(stored: bool, doc: &Ingested) -> JobResult {
    Ok(if stored {
        Outcome::Ingested {
            chunks: doc.chunks.len(),
        }
    } else {
        Outcome::Skipped("the document changed meanwhile; a newer message carries it")
    })
}

/// The message's last delivery failed too: say so on the document (it
/// goes to the DLQ; a redrive after the cause is fixed ingests it).
async fn give_up(state: &State, workspace: WorkspaceId, document: DocumentId, retry: &Retry) {
    let reason = format!(
        "ingestion failed {MAX_RECEIVES} times; last error: {:#}",
        retry.0
    );
    if let Err(error) = store::mark_failed(&state.db, workspace, document, &reason).await {
        tracing::error!(%error, %document, "could not mark the document failed");
    }
}

/// Extraction pools by (executable, memory limit): built once per
/// container; keyed so tests with other settings coexist.
type ExtractorCache = Mutex<Option<HashMap<(std::path::PathBuf, u64), Arc<Extractors>>>>;

fn extractors(state: &State) -> Result<Arc<Extractors>, Retry> {
    static EXTRACTORS: ExtractorCache = Mutex::new(None);
    let key = Extractors::key(&state.config.ingest)?;
    let mut cache = EXTRACTORS
        .lock()
        .map_err(|_| anyhow::anyhow!("extractor cache poisoned"))?;
    let pools = cache.get_or_insert_with(HashMap::new);
    if let Some(pool) = pools.get(&key) {
        return Ok(pool.clone());
    }
    let pool = Arc::new(Extractors::new(key.clone()));
    pools.insert(key, pool.clone());
    Ok(pool)
}

/// Wall-clock time an extraction may take beyond its CPU budget (the
/// children of a batch share the cores).
const EXTRACT_WALL_FACTOR: u32 = 4;
/// What an extraction leaves of the invocation for storing its chunks.
const EXTRACT_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What preparing a document's bytes came to.
enum Prepared {
    /// Its chunks with their embeddings, to store.
    Chunks(Vec<NewChunk>),
    /// The file cannot be ingested: the document fails with this reason.
    Failed(String),
    /// Our dependencies failed: the record is delivered again.
    Retry(Retry),
}

/// Bytes → chunks with embeddings, extracted and chunked in a child
/// process ([`super::extractor`]).
async fn prepare(state: &State, bytes: Bytes, target: &Target, upload: bool) -> Prepared {
    let ingest = &state.config.ingest;
    let max_chunks = target
        .max_document_chunks
        .and_then(|n| usize::try_from(n).ok())
        .map_or(ingest.document_max_chunks, |n| {
            n.min(ingest.document_max_chunks)
        });
    let cpu_seconds = ingest.extract_cpu_seconds(bytes.len());
    let request = isolate::Request {
        content_type: target.content_type.clone(),
        upload,
        max_tokens: ingest.chunk_tokens,
        overlap_tokens: ingest.chunk_overlap_tokens,
        max_chunks,
        max_text_bytes: ingest.extract_max_text_bytes,
        cpu_seconds,
        len: 0,
    };
    let backstop = std::time::Duration::from_secs(cpu_seconds) * EXTRACT_WALL_FACTOR;
    let left = crate::deadline::remaining_time().map(|left| left.saturating_sub(EXTRACT_MARGIN));
    let pool = match extractors(state) {
        Ok(pool) => pool,
        Err(retry) => return Prepared::Retry(retry),
    };
    let chunks = match pool.run(request, bytes, backstop, left).await {
        Extracted::Chunks(chunks) => chunks,
        Extracted::Failed(reason) => return Prepared::Failed(reason),
        Extracted::Retry(error) => return Prepared::Retry(Retry(error)),
    };
    let embedder = match state.embedder().await {
        Ok(embedder) => embedder,
        Err(error) => return Prepared::Retry(Retry(error)),
    };
    let texts: Vec<String> = chunks.iter().map(|c| c.embedding_text()).collect();
    let vectors = match embedder.embed(&texts).await {
        Ok(vectors) => vectors,
        Err(EmbedError::Failed(message)) => {
            return Prepared::Failed(format!("embedding failed: {message}"));
        }
        Err(error @ EmbedError::Unavailable(_)) => return Prepared::Retry(Retry(error.into())),
    };
    if vectors.len() != chunks.len() {
        return Prepared::Retry(Retry(anyhow::anyhow!(
            "the embedder returned {} vectors for {} chunks",
            vectors.len(),
            chunks.len()
        )));
    }
    Prepared::Chunks(
        chunks
            .into_iter()
            .zip(vectors)
            .map(|(chunk, embedding)| NewChunk {
                content: chunk.content,
                token_count: chunk.token_count,
                page: chunk.page,
                heading: chunk.heading,
                embedding,
            })
            .collect(),
    )
}

/// The document [`store::claim_all`] took for this delivery, or why it
/// was left alone ([`store::Claim::unclaimed_reason`]).
fn claimed_target(claim: Option<store::Claim>, ingest: Ingest<'_>) -> Result<Target, Outcome> {
    match claim {
        None => Err(Outcome::Skipped("no such document in this workspace")),
        Some(claim) if claim.claimed => Ok(claim.target),
        Some(claim) => Err(Outcome::Skipped(claim.unclaimed_reason(ingest))),
    }
}

/// A claimed document's chunks with their embeddings, or what became of
/// it instead: a file that cannot be ingested fails the document with
/// its reason; a problem with our dependencies retries the record.
async fn prepare_job(state: &State, job: &Job, target: &Target) -> Result<Ingested, JobResult> {
    let (made, prepared) = match &job.work {
        Work::Inline => {
            let text = target.content.as_deref().unwrap_or_default();
            let made = Made::Inline {
                content_sha256: target.content_sha256.clone(),
            };
            let bytes = Bytes::copy_from_slice(text.as_bytes());
            let prepared = prepare(state, bytes, target, false).await;
            (made, prepared)
        }
        Work::Upload(object) => read_upload(state, object, target).await?,
    };
    match prepared {
        Prepared::Chunks(chunks) => Ok(Ingested {
            document: job.document,
            made,
            chunks,
        }),
        Prepared::Failed(reason) => Err(
            match store::mark_failed(&state.db, job.workspace, job.document, &reason).await {
                Ok(()) => Ok(Outcome::Failed(reason)),
                Err(error) => Err(error.into()),
            },
        ),
        Prepared::Retry(retry) => Err(Err(retry)),
    }
}

/// An upload's object read and checked against what was declared, then
/// prepared; `Err` when there is nothing to store (the object is gone) or
/// the read must be retried.
async fn read_upload(
    state: &State,
    object: &CreatedObject,
    target: &Target,
) -> Result<(Made, Prepared), JobResult> {
    let name = state
        .config
        .bucket_name
        .as_deref()
        .unwrap_or(&object.bucket);
    let bucket = Bucket::new(state.s3().await, name);
    let got = match bucket.read(&object.key).await {
        Ok(Some(got)) => got,
        Ok(None) => {
            return Err(Ok(Outcome::Skipped(
                "the object is gone (deleted or replaced)",
            )));
        }
        Err(error) => return Err(Err(Retry(error))),
    };
    let etag = got.etag.or_else(|| object.etag.clone()).unwrap_or_default();
    let bytes = got.bytes;
    let made = Made::Upload {
        key: object.key.clone(),
        etag,
        sequencer: object.sequencer.clone(),
        size: bytes.len() as i64,
        content_sha256: format!("{:x}", Sha256::digest(&bytes)),
    };
    let prepared = if bytes.len() as i64 != target.size {
        Prepared::Failed(format!(
            "the uploaded file is {} bytes, but {} were declared",
            bytes.len(),
            target.size
        ))
    } else {
        prepare(state, bytes, target, true).await
    };
    Ok((made, prepared))
}

#[cfg(test)]
mod tests {
    use super::super::events::DocumentChanged;
    use super::*;

    fn message(body: &str) -> Message {
        Message {
            id: "m".into(),
            receives: 1,
            body: body.into(),
        }
    }

    fn s3_event(keys: &[&str]) -> String {
        let records: Vec<serde_json::Value> = keys
            .iter()
            .map(|key| {
                serde_json::json!({
                    "eventName": "ObjectCreated:Put",
                    "s3": { "bucket": { "name": "b" },
                            "object": { "key": key, "size": 3, "eTag": "e", "sequencer": "0A" } }
                })
            })
            .collect();
        serde_json::json!({ "Records": records }).to_string()
    }

    #[test]
    fn records_become_jobs_or_outcomes_without_a_document() {
        let (ws, doc) = (WorkspaceId::new(), DocumentId::new());
        let changed = DocumentChanged {
            workspace_id: ws,
            document_id: doc,
            version: 2,
        }
        .to_message();
        let upload = format!("workspaces/{ws}/documents/{}/a.pdf", DocumentId::new());
        let mut jobs = Vec::new();
        let records: Vec<Record> = [
            message(&changed),
            message(r#"{"Event": "s3:TestEvent"}"#),
            message("not a message"),
            message(&s3_event(&[&upload, "elsewhere/x.txt"])),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, m)| read_record(m, i, &mut jobs))
        .collect();

        assert_eq!(jobs.len(), 2, "one inline job, one upload job");
        assert_eq!(
            (jobs[0].record, jobs[0].workspace, jobs[0].document),
            (0, ws, doc)
        );
        assert!(matches!(jobs[0].ingest(), Ingest::Inline));
        assert_eq!(jobs[1].record, 3);
        assert!(matches!(jobs[1].ingest(), Ingest::Upload { key, .. } if key == upload));

        assert_eq!(records[1].outcomes, [Outcome::Skipped("S3 test event")]);
        assert!(records[1].retry.is_none());
        let garbage = records[2]
            .retry
            .as_ref()
            .expect("an unreadable record is retried");
        assert!(format!("{:#}", garbage.0).contains("unreadable message"));
        assert_eq!(
            records[3].outcomes,
            [Outcome::Skipped(
                "key outside workspaces/{id}/documents/{id}/"
            )]
        );
    }

    #[test]
    fn only_records_to_redeliver_are_reported_and_not_started_is_told_apart() {
        let record = |retry: Option<Retry>| Record {
            id: "r".into(),
            receives: 1,
            outcomes: vec![Outcome::Ingested { chunks: 2 }],
            retry,
            body: String::new(),
        };
        assert_eq!(report(record(None)), None);
        assert_eq!(
            report(record(Some(Retry(anyhow::anyhow!("db down"))))),
            Some("r".to_owned())
        );
        let short = Retry(
            NotStarted {
                left: std::time::Duration::from_secs(3),
            }
            .into(),
        );
        assert!(short.0.is::<NotStarted>());
        assert!(!Retry(anyhow::anyhow!("db down")).0.is::<NotStarted>());
    }

    #[test]
    fn jobs_are_grouped_by_workspace() {
        let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
        let job = |workspace| Job {
            record: 0,
            workspace,
            document: DocumentId::new(),
            work: Work::Inline,
        };
        let jobs = [job(a), job(b), job(a)];
        let groups = by_workspace(&jobs, (0..3).map(|i| (i, i * 10)));
        assert_eq!(groups[&a], [(0, 0), (2, 20)]);
        assert_eq!(groups[&b], [(1, 10)]);
    }

    #[test]
    fn a_missing_or_taken_document_is_skipped_with_the_reason() {
        assert_eq!(
            claimed_target(None, Ingest::Inline).unwrap_err(),
            Outcome::Skipped("no such document in this workspace")
        );
    }
}
