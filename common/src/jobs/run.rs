//! Jobs' steps, run by the ingest worker from the ingest queue.
//!
//! Each step does a bounded piece of work (an import: up to
//! [`STEP_LINES`] lines or [`STEP_BYTES`] of the file; an export: one
//! multipart part) and commits it together with the job's progress, on
//! condition that the job is still where the step started
//! (`next_offset`). A redelivered or duplicated step therefore finds the
//! job moved on and changes nothing; then it only queues the next step
//! again if the job has not moved for [`STALL_AFTER`] (the step that
//! moved it crashed before queueing its successor).
//!
//! An import's documents are created pending and ingested by the
//! document engine ([`worker::ingest_batch`]) in the same invocation,
//! several per transaction, without a queue message each; a document it
//! could not finish goes to the queue as usual, and one whose invocation
//! died stays pending until `ingest-requeue` queues it.

use std::collections::HashSet;

use sqlx::{Postgres, Transaction};

use super::lines::{
    self, ExportChunk, ExportClassification, ExportFile, ExportLine, ExportScheme,
    ExportSchemeBody, ExportVersion, Parsed,
};
use super::{MAX_FAILURES_KEPT, Status, send_next};
use crate::db::tenant_tx;
use crate::documents::Source;
use crate::ids::{DocumentId, JobId, UserId, WorkspaceId};
use crate::ingest::events::{DocumentChanged, JobStep};
use crate::ingest::worker::{self, Message};
use crate::state::State;

/// Bytes of an import's file one step reads.
pub const STEP_BYTES: u64 = 8 << 20;
/// Most lines one import step takes.
pub const STEP_LINES: usize = 1_000;
/// Bytes of JSONL an export step gathers before writing them as one
/// part (S3 wants every part but the last to be at least 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Documents an export reads per query.
const EXPORT_PAGE: i64 = 200;
/// A job that has not moved for this long while a stale step of it
/// arrives is resumed by that step.
const STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// The job as a step needs it.
#[derive(sqlx::FromRow)]
struct Current {
    kind: super::Kind,
    status: Status,
    created_by: Option<UserId>,
    options: sqlx::types::Json<serde_json::Value>,
    object_key: String,
    next_offset: i64,
    next_line: i64,
    cursor_id: Option<DocumentId>,
    upload_id: Option<String>,
    parts: sqlx::types::Json<Vec<(i32, String)>>,
    failed: i64,
    lines_read: i64,
    bytes: i64,
    stalled: bool,
    workspace_deleted: bool,
}

async fn current(state: &State, step: &JobStep) -> anyhow::Result<Option<Current>> {
    let mut tx = tenant_tx(&state.db, None, Some(step.workspace_id)).await?;
    let found = sqlx::query_as(
        "SELECT j.kind, j.status, j.created_by, j.options, j.object_key, j.next_offset,
                j.next_line, j.cursor_id, j.upload_id, j.parts, j.failed, j.lines_read, j.bytes,
                j.updated_at < now() - make_interval(secs => $3) AS stalled,
                w.deleted_at IS NOT NULL AS workspace_deleted
         FROM jobs j JOIN workspaces w ON w.id = j.workspace_id
         WHERE j.workspace_id = $1 AND j.id = $2",
    )
    .bind(step.workspace_id)
    .bind(step.job_id)
    .bind(STALL_AFTER.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(found)
}

/// One batch of the ingest queue: its documents through the document
/// engine, then its job steps one after another; the ids of the messages
/// to deliver again.
pub async fn ingest_queue_batch(state: &State, messages: Vec<Message>) -> Vec<String> {
    let (steps, documents): (Vec<_>, Vec<_>) = messages
        .into_iter()
        .map(|m| (JobStep::from_message(&m.body), m))
        .partition(|(step, _)| step.is_some());
    let documents = documents.into_iter().map(|(_, m)| m).collect();
    let mut again = worker::ingest_batch(state, documents).await;
    for (step, message) in steps {
        let Some(step) = step else { continue };
        if let Err(error) = run_step(state, step, message.receives).await {
            tracing::warn!(message_id = %message.id, error = format!("{error:#}"),
                "job step failed; SQS will deliver it again");
            again.push(message.id);
        }
    }
    again
}

/// Runs one step. `Err`: our dependencies failed, and the message is to
/// be delivered again; `receives` is its delivery count, and the last
/// one fails the job with the reason.
pub async fn run_step(state: &State, step: JobStep, receives: u32) -> anyhow::Result<()> {
    let result = step_once(state, &step).await;
    if let Err(error) = &result
        && receives >= worker::MAX_RECEIVES
    {
        let reason = format!("the job failed {receives} times; last error: {error:#}");
        fail(state, &step, &reason).await?;
        return Ok(());
    }
    result
}

async fn step_once(state: &State, step: &JobStep) -> anyhow::Result<()> {
    let Some(job) = current(state, step).await? else {
        tracing::info!(job = %step.job_id, "job step for a job that is gone");
        return Ok(());
    };
    if job.status.finished() {
        return Ok(());
    }
    if job.workspace_deleted {
        return fail(state, step, "the workspace was deleted").await;
    }
    if job.next_offset != step.offset {
        if job.stalled && job.next_offset > step.offset {
            tracing::warn!(job = %step.job_id, "job stalled; queueing its next step again");
            send_next(state, step, job.next_offset).await?;
        }
        return Ok(());
    }
    match job.kind {
        super::Kind::Import => import_step(state, step, job).await,
        super::Kind::Export => export_step(state, step, job).await,
        super::Kind::Classify => {
            let at = crate::jobs::classify::run::At {
                options: job.options.0,
                cursor: job.cursor_id,
                created_by: job.created_by,
            };
            match crate::jobs::classify::run::step(state, step, at).await? {
                Some(reason) => fail(state, step, &reason).await,
                None => Ok(()),
            }
        }
    }
}

async fn fail(state: &State, step: &JobStep, reason: &str) -> anyhow::Result<()> {
    let mut tx = tenant_tx(&state.db, None, Some(step.workspace_id)).await?;
    sqlx::query(
        "UPDATE jobs SET status = 'failed', error = $3, finished_at = now(), updated_at = now()
         WHERE workspace_id = $1 AND id = $2
           AND status NOT IN ('succeeded', 'failed', 'cancelled')",
    )
    .bind(step.workspace_id)
    .bind(step.job_id)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One line as an import step found it.
enum Taken {
    Parsed(Box<Parsed>),
    File(lines::FileLine),
    Scheme(crate::jobs::classify::NewScheme),
    Failed(String),
}

/// Numbered non-blank lines, the bytes they span, the next line's number.
type Lines<'a> = (Vec<(i64, &'a [u8])>, usize, i64);

/// The lines of `window` (bytes of the file from the step's offset) one
/// step takes: (line number, line) for each non-blank line, and how many
/// bytes and lines they span. `at_end`: the window reaches the file's end.
/// `None`: the window holds no whole line (it is longer than the window).
fn split_lines(window: &[u8], first_line: i64, at_end: bool) -> Option<Lines<'_>> {
    let mut lines = Vec::new();
    let (mut pos, mut number) = (0usize, first_line);
    while lines.len() < STEP_LINES && pos < window.len() {
        let end = match window[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => pos + i,
            None if at_end => window.len(),
            None => break,
        };
        let mut line = &window[pos..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines.push((number, line));
        }
        number += 1;
        pos = (end + 1).min(window.len());
    }
    if pos == 0 && !window.is_empty() {
        return None;
    }
    Some((lines, pos, number))
}

async fn import_step(state: &State, step: &JobStep, job: Current) -> anyhow::Result<()> {
    let size = job
        .options
        .get("size")
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let bucket = state.bucket().await?;
    let offset = step.offset.max(0) as u64;
    // A step takes STEP_LINES lines: read about what they span by the
    // lines so far, not a whole STEP_BYTES window, and the whole window
    // only when that holds no whole line.
    let mut want = window_for(job.bytes, job.lines_read);
    let (window, at_end) = loop {
        let Some(window) = bucket.read_range(&job.object_key, offset, want).await? else {
            return fail(state, step, "the import file is gone").await;
        };
        let at_end = offset + window.len() as u64 >= size as u64 || (window.len() as u64) < want;
        if at_end || want >= STEP_BYTES || window.contains(&b'\n') {
            break (window, at_end);
        }
        want = STEP_BYTES;
    };
    let (taken, consumed, next_line) = match split_lines(&window, job.next_line, at_end) {
        Some((lines, consumed, next_line)) => {
            let limits = &state.config.documents;
            let taken: Vec<(i64, Taken)> = lines
                .into_iter()
                .map(|(n, line)| {
                    (
                        n,
                        match lines::parse_line(line, limits) {
                            Ok(lines::Line::Document(parsed)) => Taken::Parsed(parsed),
                            Ok(lines::Line::File(file)) => Taken::File(file),
                            Ok(lines::Line::Scheme(scheme)) => Taken::Scheme(scheme),
                            Err(reason) => Taken::Failed(reason),
                        },
                    )
                })
                .collect();
            (taken, consumed as u64, next_line)
        }
        None => {
            // One line longer than a step reads: refused, and the step
            // ends after it.
            let end = line_end(&bucket, &job.object_key, offset, size as u64).await?;
            let reason = format!("the line is longer than {} MiB", STEP_BYTES >> 20);
            (
                vec![(job.next_line, Taken::Failed(reason))],
                end - offset,
                job.next_line + 1,
            )
        }
    };
    drop(window);
    let taken = resolve_files(state, &bucket, step, &job, taken).await?;
    let next_offset = step.offset + consumed as i64;
    let finished = next_offset >= size;
    let Some((created, files)) =
        store_lines(state, step, &job, taken, next_offset, next_line, finished).await?
    else {
        return Ok(());
    };
    ingest(state, step.workspace_id, created, files).await;
    if !finished {
        send_next(state, step, next_offset).await?;
    }
    Ok(())
}

/// Bytes an import step reads: STEP_LINES lines at the file's average
/// line length so far, with a quarter to spare, within 256 KiB and
/// STEP_BYTES; all of STEP_BYTES for the first step.
fn window_for(bytes: i64, lines: i64) -> u64 {
    if lines <= 0 || bytes <= 0 {
        return STEP_BYTES;
    }
    let average = (bytes / lines) as u64 + 1;
    (average * STEP_LINES as u64 * 5 / 4).clamp(256 << 10, STEP_BYTES)
}

/// Where the line starting at `offset` ends (past its newline), read a
/// step's bytes at a time.
async fn line_end(
    bucket: &crate::storage::Bucket<'_>,
    key: &str,
    offset: u64,
    size: u64,
) -> anyhow::Result<u64> {
    let mut at = offset + STEP_BYTES;
    while at < size {
        let Some(window) = bucket.read_range(key, at, STEP_BYTES).await? else {
            anyhow::bail!("the import file went away");
        };
        if let Some(i) = window.iter().position(|&b| b == b'\n') {
            return Ok(at + i as u64 + 1);
        }
        if window.is_empty() {
            break;
        }
        at += window.len() as u64;
    }
    Ok(size)
}

/// Stores a step's lines and the job's progress in one transaction, if
/// the job is still where the step started; the documents created, or
/// `None` when another delivery got there first (or the job was
/// cancelled meanwhile).
async fn store_lines(
    state: &State,
    step: &JobStep,
    job: &Current,
    taken: Vec<(i64, Taken)>,
    next_offset: i64,
    next_line: i64,
    finished: bool,
) -> anyhow::Result<Option<(Vec<(DocumentId, i32)>, Vec<CopiedFile>)>> {
    let ws = step.workspace_id;
    let mut tx = tenant_tx(&state.db, None, Some(ws)).await?;
    let moved = sqlx::query(
        "UPDATE jobs SET status = 'running', started_at = coalesce(started_at, now()),
                next_offset = $4, next_line = $5, bytes = $4, updated_at = now()
         WHERE workspace_id = $1 AND id = $2 AND next_offset = $3
           AND status IN ('awaiting_upload', 'queued', 'running')",
    )
    .bind(ws)
    .bind(step.job_id)
    .bind(step.offset)
    .bind(next_offset)
    .bind(next_line)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 0 {
        return Ok(None);
    }
    let read = taken.len() as i64;
    let mut failures: Vec<(i64, Option<String>, String)> = Vec::new();
    let mut parsed = Vec::new();
    let mut schemes = Vec::new();
    for (line, t) in taken {
        match t {
            Taken::Parsed(p) => parsed.push((line, *p)),
            Taken::Scheme(scheme) => schemes.push(scheme),
            Taken::Failed(reason) => failures.push((line, None, reason)),
            Taken::File(_) => unreachable!("files are resolved before they are stored"),
        }
    }
    let (mut fresh, duplicates) = without_duplicates(&mut tx, ws, parsed).await?;
    // Files are copied to their documents' keys before the documents
    // exist: a delivery of the copy's notification that comes first is
    // skipped, and the step ingests them itself after the commit.
    let files = copy_files(state, &mut fresh).await?;
    let created = insert_documents(&mut tx, ws, step.job_id, job.created_by, &fresh).await?;
    let new_schemes = insert_schemes(&mut tx, ws, job.created_by, &schemes).await?;
    let skipped =
        duplicates + (fresh.len() - created.len()) as i64 + (schemes.len() as i64 - new_schemes);
    let failed = failures.len() as i64;
    let room = (MAX_FAILURES_KEPT - job.failed).max(0) as usize;
    failures.truncate(room);
    if !failures.is_empty() {
        let (numbers, rest): (Vec<i64>, Vec<(Option<String>, String)>) =
            failures.into_iter().map(|(n, c, r)| (n, (c, r))).unzip();
        let (clients, reasons): (Vec<Option<String>>, Vec<String>) = rest.into_iter().unzip();
        sqlx::query(
            "INSERT INTO job_failures (workspace_id, job_id, line, client_id, reason)
             SELECT $1, $2, * FROM unnest($3::int8[], $4::text[], $5::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(ws)
        .bind(step.job_id)
        .bind(numbers)
        .bind(clients)
        .bind(reasons)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE jobs SET lines_read = lines_read + $3, created = created + $4,
                skipped = skipped + $5, failed = failed + $6,
                status = CASE WHEN $7 THEN 'succeeded' ELSE status END,
                finished_at = CASE WHEN $7 THEN now() ELSE finished_at END
         WHERE workspace_id = $1 AND id = $2",
    )
    .bind(ws)
    .bind(step.job_id)
    .bind(read)
    .bind(created.len() as i64 + new_schemes)
    .bind(skipped)
    .bind(failed)
    .bind(finished)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let files = files
        .into_iter()
        .filter(|f| created.iter().any(|(id, _)| *id == f.id))
        .collect();
    Ok(Some((created, files)))
}

/// A declared file copied to its document's key.
struct CopiedFile {
    id: DocumentId,
    key: String,
    size: i64,
    etag: Option<String>,
}

/// Lines naming a file become documents of it, once the file is found
/// among the import's declared files and in the bucket with its declared
/// size; otherwise they fail with the reason.
async fn resolve_files(
    state: &State,
    bucket: &crate::storage::Bucket<'_>,
    step: &JobStep,
    job: &Current,
    taken: Vec<(i64, Taken)>,
) -> anyhow::Result<Vec<(i64, Taken)>> {
    if !taken.iter().any(|(_, t)| matches!(t, Taken::File(_))) {
        return Ok(taken);
    }
    let declared: Vec<super::ImportFile> = job
        .options
        .get("files")
        .map(|f| serde_json::from_value(f.clone()))
        .transpose()?
        .unwrap_or_default();
    let mut out = Vec::with_capacity(taken.len());
    for (line, t) in taken {
        let Taken::File(file) = t else {
            out.push((line, t));
            continue;
        };
        let Some(n) = declared.iter().position(|d| d.name == file.name) else {
            let reason = format!("file: {:?} is not one of the import's files", file.name);
            out.push((line, Taken::Failed(reason)));
            continue;
        };
        let found = &declared[n];
        let source = super::import_file_key(step.workspace_id, step.job_id, n);
        let reason = match bucket.size(&source).await? {
            None => Some(format!(
                "file: {:?} was not uploaded (PUT the files before the JSONL file)",
                file.name
            )),
            Some(size) if size != found.size => Some(format!(
                "file: {:?} is {size} bytes, not the {} declared",
                file.name, found.size
            )),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            out.push((line, Taken::Failed(reason)));
            continue;
        }
        let body = match crate::documents::upload_state(
            &file.title,
            &found.content_type,
            found.size,
            file.metadata,
            &state.config.documents,
        ) {
            Ok(body) => body,
            Err(e) => {
                out.push((line, Taken::Failed(e.to_string())));
                continue;
            }
        };
        // The same line of the same job is the same document: a step
        // delivered again copies to the same key.
        let id = {
            use sha2::Digest;
            let digest = sha2::Sha256::new()
                .chain_update(step.job_id.0.as_bytes())
                .chain_update(line.to_be_bytes())
                .finalize();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            DocumentId(uuid::Builder::from_random_bytes(bytes).into_uuid())
        };
        let key = format!(
            "{}{}",
            crate::storage::document_prefix(step.workspace_id, id),
            crate::uploads::safe_file_name(&file.name)
        );
        out.push((
            line,
            Taken::Parsed(Box::new(Parsed {
                client_id: file.client_id,
                history: vec![lines::HistoryRow {
                    kind: crate::documents::VersionKind::Create,
                    label: None,
                    restored_from: None,
                    body: body.clone(),
                    created_at: None,
                }],
                current: body,
                file: Some(lines::PlacedFile {
                    id,
                    key,
                    name: file.name,
                    source,
                    etag: None,
                }),
            })),
        ));
    }
    Ok(out)
}

/// Copies the files of `fresh` lines to their documents' keys.
async fn copy_files(state: &State, fresh: &mut [Parsed]) -> anyhow::Result<Vec<CopiedFile>> {
    let mut copied = Vec::new();
    if !fresh.iter().any(|p| p.file.is_some()) {
        return Ok(copied);
    }
    let bucket = state.bucket().await?;
    for p in fresh.iter_mut() {
        let size = p.current.size;
        let Some(file) = p.file.as_mut() else {
            continue;
        };
        file.etag = bucket
            .copy(&file.source, &file.key)
            .await?
            .map(|e| e.trim_matches('"').to_owned());
        copied.push(CopiedFile {
            id: file.id,
            key: file.key.clone(),
            size,
            etag: file.etag.clone(),
        });
    }
    Ok(copied)
}

/// Creates the schemes of scheme lines, skipping those whose name a live
/// scheme has; how many were created.
async fn insert_schemes(
    tx: &mut Transaction<'static, Postgres>,
    ws: WorkspaceId,
    creator: Option<UserId>,
    schemes: &[crate::jobs::classify::NewScheme],
) -> anyhow::Result<i64> {
    let mut created = 0;
    for scheme in schemes {
        created += sqlx::query(
            "INSERT INTO classification_schemes
                 (workspace_id, id, name, instructions, fields, classifier, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (workspace_id, lower(name)) WHERE deleted_at IS NULL DO NOTHING",
        )
        .bind(ws)
        .bind(crate::ids::SchemeId::new())
        .bind(&scheme.name)
        .bind(&scheme.instructions)
        .bind(sqlx::types::Json(&scheme.fields))
        .bind(scheme.classifier)
        .bind(creator)
        .execute(&mut **tx)
        .await?
        .rows_affected() as i64;
    }
    Ok(created)
}

/// The parsed lines that are not duplicates (of a live document, or of an
/// earlier line of the step), and how many were.
async fn without_duplicates(
    tx: &mut Transaction<'static, Postgres>,
    ws: WorkspaceId,
    parsed: Vec<(i64, Parsed)>,
) -> anyhow::Result<(Vec<Parsed>, i64)> {
    let clients: Vec<&str> = parsed
        .iter()
        .filter_map(|(_, p)| p.client_id.as_deref())
        .collect();
    // A file's entity tag does not cover its bytes: only a client id
    // makes a line naming a file a duplicate.
    let etags: Vec<&str> = parsed
        .iter()
        .filter(|(_, p)| p.client_id.is_none() && p.file.is_none())
        .map(|(_, p)| p.current.etag.as_str())
        .collect();
    // An export names documents without a client id by their own id: a
    // line of it imported back into its workspace is a duplicate too.
    let as_ids: Vec<uuid::Uuid> = clients.iter().filter_map(|c| c.parse().ok()).collect();
    let existing: Vec<(Option<String>, DocumentId, String)> = sqlx::query_as(
        "SELECT client_id, id, etag FROM documents
         WHERE workspace_id = $1 AND deleted_at IS NULL
           AND (client_id = ANY($2) OR etag = ANY($3) OR id = ANY($4))",
    )
    .bind(ws)
    .bind(&clients)
    .bind(&etags)
    .bind(&as_ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut seen_clients: HashSet<String> = existing
        .iter()
        .flat_map(|(c, id, _)| c.iter().cloned().chain([id.to_string()]))
        .collect();
    let mut seen_etags: HashSet<String> = existing.into_iter().map(|(_, _, e)| e).collect();
    let (mut fresh, mut duplicates) = (Vec::new(), 0);
    for (_, p) in parsed {
        let new = match &p.client_id {
            Some(id) => seen_clients.insert(id.clone()),
            None if p.file.is_some() => true,
            None => seen_etags.insert(p.current.etag.clone()),
        };
        if new {
            fresh.push(p);
        } else {
            duplicates += 1;
        }
    }
    Ok((fresh, duplicates))
}

/// Inserts the documents and their versions; those inserted (a client id
/// taken meanwhile by another writer is skipped), with their versions.
async fn insert_documents(
    tx: &mut Transaction<'static, Postgres>,
    ws: WorkspaceId,
    job: JobId,
    author: Option<UserId>,
    fresh: &[Parsed],
) -> anyhow::Result<Vec<(DocumentId, i32)>> {
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<DocumentId> = fresh
        .iter()
        .map(|p| p.file.as_ref().map_or_else(DocumentId::new, |f| f.id))
        .collect();
    let mut d = DocColumns::default();
    let mut h = HistoryColumns::default();
    for (id, p) in ids.iter().zip(fresh) {
        let b = &p.current;
        d.title.push(b.title.as_str());
        d.content.push(b.content.as_deref());
        d.content_type.push(b.content_type.as_str());
        d.size.push(b.size);
        d.sha.push(b.content_sha256.as_str());
        d.etag.push(b.etag.as_str());
        d.version.push(p.history.len() as i32);
        d.metadata.push(b.metadata.to_string());
        d.client_id.push(p.client_id.as_deref());
        d.s3_key.push(p.file.as_ref().map(|f| f.key.as_str()));
        d.file_name.push(p.file.as_ref().map(|f| f.name.as_str()));
        for (n, row) in p.history.iter().enumerate() {
            h.document.push(*id);
            h.version.push(n as i32 + 1);
            h.kind.push(match row.kind {
                crate::documents::VersionKind::Create => "create",
                crate::documents::VersionKind::Update => "update",
                crate::documents::VersionKind::Snapshot => "snapshot",
                crate::documents::VersionKind::Restore => "restore",
            });
            h.label.push(row.label.as_deref());
            h.restored_from.push(row.restored_from);
            h.title.push(row.body.title.as_str());
            h.content.push(row.body.content.as_deref());
            h.content_type.push(row.body.content_type.as_str());
            h.size.push(row.body.size);
            h.sha.push(row.body.content_sha256.as_str());
            h.etag.push(row.body.etag.as_str());
            h.metadata.push(row.body.metadata.to_string());
            h.created_at.push(row.created_at);
        }
    }
    let inserted: Vec<(DocumentId, i32)> = sqlx::query_as(
        "WITH d AS (
            INSERT INTO documents (workspace_id, id, title, source, content, content_type, size,
                                   content_sha256, etag, version, metadata, created_by,
                                   updated_by, client_id, job_id, s3_key, file_name)
            SELECT $1, t.id, t.title,
                   CASE WHEN t.s3_key IS NULL THEN 'inline' ELSE 'upload' END,
                   t.content, t.content_type, t.size, t.sha, t.etag,
                   t.version, t.metadata::jsonb, $12, $12, t.client_id, $13, t.s3_key, t.file_name
            FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[],
                        $8::text[], $9::int4[], $10::text[], $11::text[], $27::text[], $28::text[])
                 AS t(id, title, content, content_type, size, sha, etag, version, metadata,
                      client_id, s3_key, file_name)
            ON CONFLICT DO NOTHING
            RETURNING id, version
         ), v AS (
            INSERT INTO document_versions (workspace_id, document_id, version, kind, label,
                 restored_from, title, content, content_type, size, content_sha256, etag,
                 metadata, created_by, created_at)
            SELECT $1, h.id, h.version, h.kind, h.label, h.restored_from, h.title, h.content,
                   h.content_type, h.size, h.sha, h.etag, h.metadata::jsonb, $12,
                   coalesce(h.created_at, now())
            FROM unnest($14::uuid[], $15::int4[], $16::text[], $17::text[], $18::int4[],
                        $19::text[], $20::text[], $21::text[], $22::int8[], $23::text[],
                        $24::text[], $25::text[], $26::timestamptz[])
                 AS h(id, version, kind, label, restored_from, title, content, content_type,
                      size, sha, etag, metadata, created_at)
            WHERE h.id IN (SELECT id FROM d)
         )
         SELECT id, version FROM d",
    )
    .bind(ws)
    .bind(&ids)
    .bind(&d.title)
    .bind(&d.content)
    .bind(&d.content_type)
    .bind(&d.size)
    .bind(&d.sha)
    .bind(&d.etag)
    .bind(&d.version)
    .bind(&d.metadata)
    .bind(&d.client_id)
    .bind(author)
    .bind(job)
    .bind(&h.document)
    .bind(&h.version)
    .bind(&h.kind)
    .bind(&h.label)
    .bind(&h.restored_from)
    .bind(&h.title)
    .bind(&h.content)
    .bind(&h.content_type)
    .bind(&h.size)
    .bind(&h.sha)
    .bind(&h.etag)
    .bind(&h.metadata)
    .bind(&h.created_at)
    .bind(&d.s3_key)
    .bind(&d.file_name)
    .fetch_all(&mut **tx)
    .await?;
    Ok(inserted)
}

#[derive(Default)]
struct DocColumns<'a> {
    title: Vec<&'a str>,
    content: Vec<Option<&'a str>>,
    content_type: Vec<&'a str>,
    size: Vec<i64>,
    sha: Vec<&'a str>,
    etag: Vec<&'a str>,
    version: Vec<i32>,
    metadata: Vec<String>,
    client_id: Vec<Option<&'a str>>,
    s3_key: Vec<Option<&'a str>>,
    file_name: Vec<Option<&'a str>>,
}

#[derive(Default)]
struct HistoryColumns<'a> {
    document: Vec<DocumentId>,
    version: Vec<i32>,
    kind: Vec<&'static str>,
    label: Vec<Option<&'a str>>,
    restored_from: Vec<Option<i32>>,
    title: Vec<&'a str>,
    content: Vec<Option<&'a str>>,
    content_type: Vec<&'a str>,
    size: Vec<i64>,
    sha: Vec<&'a str>,
    etag: Vec<&'a str>,
    metadata: Vec<String>,
    created_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
}

/// Ingests the documents a step created through the document engine;
/// those it could not finish go to the queue, and if that fails too,
/// stay pending for `ingest-requeue` (a file's, through its object).
async fn ingest(
    state: &State,
    ws: WorkspaceId,
    created: Vec<(DocumentId, i32)>,
    files: Vec<CopiedFile>,
) {
    if created.is_empty() {
        return;
    }
    let bucket = state.config.bucket_name.clone().unwrap_or_default();
    let messages: Vec<Message> = created
        .iter()
        .enumerate()
        .map(|(i, (document, version))| Message {
            id: i.to_string(),
            receives: 1,
            body: match files.iter().find(|f| f.id == *document) {
                // A file is ingested as S3's notification of its copy
                // would have it (which, arriving later, finds it done).
                Some(file) => crate::ingest::events::object_created(
                    &bucket,
                    &file.key,
                    file.size,
                    file.etag.as_deref(),
                ),
                None => DocumentChanged {
                    workspace_id: ws,
                    document_id: *document,
                    version: *version,
                }
                .to_message(),
            },
        })
        .collect();
    let bodies: Vec<String> = messages.iter().map(|m| m.body.clone()).collect();
    let again = worker::ingest_batch(state, messages).await;
    if again.is_empty() {
        return;
    }
    let again: Vec<String> = again
        .iter()
        .filter_map(|id| id.parse::<usize>().ok())
        .filter_map(|i| bodies.get(i).cloned())
        .collect();
    let sent = async { state.ingest_queue().await?.send_all(&again).await };
    if let Err(error) = sent.await {
        tracing::warn!(
            error = format!("{error:#}"),
            documents = again.len(),
            "imported documents left pending; ingest-requeue will queue them"
        );
    }
}

/// An export's documents after `cursor`, as lines, until a part's worth.
async fn export_lines(
    state: &State,
    ws: WorkspaceId,
    cursor: Option<DocumentId>,
    include_chunks: bool,
) -> anyhow::Result<(Vec<u8>, i64, Option<DocumentId>, bool)> {
    #[derive(sqlx::FromRow)]
    struct Doc {
        id: DocumentId,
        client_id: Option<String>,
        title: String,
        source: Source,
        content_type: String,
        content: Option<String>,
        file_name: Option<String>,
        size: i64,
        metadata: sqlx::types::Json<serde_json::Value>,
        status: crate::documents::Status,
        version: i32,
        created_at: chrono::DateTime<chrono::Utc>,
        updated_at: chrono::DateTime<chrono::Utc>,
    }
    let (mut out, mut count, mut last) = (Vec::new(), 0i64, cursor);
    if cursor.is_none() {
        // The first part starts with the live schemes, which an import
        // creates before the documents.
        let mut tx = tenant_tx(&state.db, None, Some(ws)).await?;
        let schemes: Vec<ExportSchemeBody> = sqlx::query_as(
            "SELECT name, instructions, fields, classifier FROM classification_schemes
             WHERE workspace_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
        )
        .bind(ws)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for scheme in schemes {
            serde_json::to_writer(&mut out, &ExportScheme { scheme })?;
            out.push(b'\n');
        }
    }
    loop {
        let mut tx = tenant_tx(&state.db, None, Some(ws)).await?;
        let docs: Vec<Doc> = sqlx::query_as(
            "SELECT id, client_id, title, source, content_type, content, file_name, size,
                    metadata, status, version, created_at, updated_at
             FROM documents
             WHERE workspace_id = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR id > $2)
             ORDER BY id LIMIT $3",
        )
        .bind(ws)
        .bind(last)
        .bind(EXPORT_PAGE)
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<DocumentId> = docs.iter().map(|d| d.id).collect();
        let mut versions: Vec<ExportVersion> = sqlx::query_as(
            "SELECT document_id, version, kind, label, restored_from, title, content,
                    content_type, metadata, created_at
             FROM document_versions WHERE workspace_id = $1 AND document_id = ANY($2)
             ORDER BY document_id DESC, version DESC",
        )
        .bind(ws)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut chunks: Vec<ExportChunk> = if include_chunks {
            sqlx::query_as(
                "SELECT document_id, ordinal, content, token_count, page, heading,
                        embedding::real[] AS embedding
                 FROM chunks WHERE workspace_id = $1 AND document_id = ANY($2)
                 ORDER BY document_id DESC, ordinal DESC",
            )
            .bind(ws)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
        } else {
            Vec::new()
        };
        // Each document's latest value per field of a live scheme.
        let mut classifications: Vec<ExportClassification> = sqlx::query_as(
            "SELECT * FROM (
                 SELECT DISTINCT ON (r.document_id, s.id, r.field)
                        r.document_id, s.name AS scheme, r.field, r.value, r.confidence,
                        r.model, r.created_at AS classified_at, s.created_at AS scheme_at
                 FROM classification_results r
                 JOIN jobs j ON j.workspace_id = r.workspace_id AND j.id = r.job_id
                 JOIN classification_schemes s ON s.workspace_id = r.workspace_id
                      AND s.id = (j.options->>'scheme_id')::uuid AND s.deleted_at IS NULL
                 WHERE r.workspace_id = $1 AND r.document_id = ANY($2)
                 ORDER BY r.document_id, s.id, r.field, r.created_at DESC
             ) latest
             ORDER BY document_id DESC, scheme_at DESC, scheme DESC, field DESC",
        )
        .bind(ws)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let exhausted = (docs.len() as i64) < EXPORT_PAGE;
        // Popped from the back: both lists are sorted descending.
        for doc in docs {
            let mut own = Vec::new();
            while versions.last().is_some_and(|v| v.document_id < doc.id) {
                versions.pop();
            }
            while versions.last().is_some_and(|v| v.document_id == doc.id) {
                own.extend(versions.pop());
            }
            let mut own_chunks = Vec::new();
            while chunks.last().is_some_and(|c| c.document_id < doc.id) {
                chunks.pop();
            }
            while chunks.last().is_some_and(|c| c.document_id == doc.id) {
                own_chunks.extend(chunks.pop());
            }
            let mut own_classifications = Vec::new();
            while classifications
                .last()
                .is_some_and(|c| c.document_id < doc.id)
            {
                classifications.pop();
            }
            while classifications
                .last()
                .is_some_and(|c| c.document_id == doc.id)
            {
                own_classifications.extend(classifications.pop());
            }
            let line = ExportLine {
                id: doc.id,
                client_id: doc.client_id.unwrap_or_else(|| doc.id.to_string()),
                title: doc.title,
                source: doc.source,
                content_type: doc.content_type,
                file: (doc.source == Source::Upload).then_some(ExportFile {
                    name: doc.file_name,
                    size: doc.size,
                }),
                content: doc.content,
                metadata: doc.metadata.0,
                status: doc.status,
                version: doc.version,
                created_at: doc.created_at,
                updated_at: doc.updated_at,
                versions: own,
                chunks: include_chunks.then_some(own_chunks),
                classifications: own_classifications,
            };
            serde_json::to_writer(&mut out, &line)?;
            out.push(b'\n');
            count += 1;
            last = Some(doc.id);
            if out.len() >= PART_BYTES {
                // The rest of this page is read again by the next step.
                return Ok((out, count, last, false));
            }
        }
        if exhausted {
            return Ok((out, count, last, true));
        }
    }
}

async fn export_step(state: &State, step: &JobStep, job: Current) -> anyhow::Result<()> {
    let ws = step.workspace_id;
    let include_chunks = job
        .options
        .get("include_chunks")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let (bytes, count, last, exhausted) =
        export_lines(state, ws, job.cursor_id, include_chunks).await?;
    let bucket = state.bucket().await?;
    let part = step.offset as i32;
    let mut parts = job.parts.0.clone();
    let mut upload_id = job.upload_id.clone();
    let written = bytes.len() as i64;
    if !bytes.is_empty() {
        let id = match &upload_id {
            Some(id) => id.clone(),
            None => {
                let id = bucket
                    .start_multipart(&job.object_key, super::JSONL_TYPE)
                    .await?;
                upload_id = Some(id.clone());
                id
            }
        };
        let etag = bucket
            .upload_part(&job.object_key, &id, part, bytes)
            .await?;
        parts.retain(|(n, _)| *n != part);
        parts.push((part, etag));
    }
    let mut tx = tenant_tx(&state.db, None, Some(ws)).await?;
    let moved = sqlx::query(
        "UPDATE jobs SET status = 'running', started_at = coalesce(started_at, now()),
                next_offset = $4, cursor_id = $5, upload_id = $6, parts = $7,
                exported = exported + $8, bytes = bytes + $9, updated_at = now()
         WHERE workspace_id = $1 AND id = $2 AND next_offset = $3
           AND status IN ('queued', 'running')",
    )
    .bind(ws)
    .bind(step.job_id)
    .bind(step.offset)
    .bind(if written > 0 {
        step.offset + 1
    } else {
        step.offset
    })
    .bind(last)
    .bind(&upload_id)
    .bind(sqlx::types::Json(&parts))
    .bind(count)
    .bind(written)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if moved == 0 {
        return Ok(());
    }
    if !exhausted {
        return send_next(state, step, step.offset + 1).await;
    }
    match &upload_id {
        Some(id) => {
            if let Err(error) = bucket.complete_multipart(&job.object_key, id, &parts).await {
                // Completed by an earlier delivery: the object is there.
                if bucket.size(&job.object_key).await?.is_none() {
                    return Err(error);
                }
            }
        }
        None => {
            bucket
                .put(&job.object_key, Vec::new(), super::JSONL_TYPE)
                .await?
        }
    }
    let mut tx = tenant_tx(&state.db, None, Some(ws)).await?;
    sqlx::query(
        "UPDATE jobs SET status = 'succeeded', finished_at = now(), updated_at = now()
         WHERE workspace_id = $1 AND id = $2 AND status = 'running'",
    )
    .bind(ws)
    .bind(step.job_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_what_their_lines_span() {
        assert_eq!(window_for(0, 0), STEP_BYTES);
        // 200-byte lines: 1,000 of them and a quarter, not 8 MiB.
        assert_eq!(window_for(200_000, 1_000), 256 << 10);
        assert_eq!(window_for(2_000_000, 1_000), 2_001 * 1_000 * 5 / 4);
        assert_eq!(window_for(80_000_000, 1_000), STEP_BYTES);
    }

    #[test]
    fn steps_take_whole_lines_and_count_blank_ones() {
        let window = b"{\"a\":1}\n\n  \r\n{\"b\":2}\r\n{\"c\"";
        let (lines, consumed, next) = split_lines(window, 10, false).unwrap();
        assert_eq!(
            lines,
            vec![(10, &b"{\"a\":1}"[..]), (13, &b"{\"b\":2}"[..])]
        );
        assert_eq!(
            consumed,
            window.len() - 4,
            "the cut line waits for the next step"
        );
        assert_eq!(next, 14);
        let (lines, consumed, _) = split_lines(window, 1, true).unwrap();
        assert_eq!(lines.len(), 3, "at the end the last line needs no newline");
        assert_eq!(consumed, window.len());
        assert!(split_lines(b"{\"no newline\"", 1, false).is_none());
    }
}
