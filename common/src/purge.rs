//! What a deleted workspace leaves behind, removed: its uploaded files and
//! its chunks.
//!
//! Deleting a workspace only marks it ([`crate::workspaces::delete`]).
//! The scheduled `workspaces-purge` function runs [`purge_deleted`]: per
//! deleted workspace, oldest deletion first, every object under its key
//! prefix (a listing and one DeleteObjects call per batch), then its chunks
//! (a batch per transaction, in the workspace's own context). Every batch
//! lists or selects what is still there, so a run that stops anywhere (its
//! time spent, an error) leaves nothing half-done and the next run goes on
//! from there. A workspace is marked purged (`purged_at`) by the first run
//! that finds nothing of either left once the settle time has passed since
//! its deletion: until then an upload URL signed before the deletion may
//! still store a file. Such a file's notification reaches the ingest
//! worker, which removes it at once (`ingest::worker`); the purge's next
//! listing is the backstop.
//!
//! The workspace's other rows are kept: README, "Deleting a workspace".

use std::time::Duration;

use sqlx::PgPool;

use crate::ids::WorkspaceId;
use crate::storage::{Bucket, workspace_prefix};

/// Chunks deleted per transaction: each transaction stays short, so the
/// indexer (which waits for the workspace's vector-flag lock) and the
/// database's other work are not held up by a large workspace.
const CHUNK_BATCH: i64 = 2_000;

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purge {
    /// Deleted workspaces looked at.
    pub workspaces: usize,
    /// Files removed from the bucket.
    pub files: usize,
    /// Chunks deleted.
    pub chunks: u64,
    /// Workspaces marked purged: nothing left, nor to come.
    pub purged: Vec<WorkspaceId>,
    /// The run stopped before it was through ([`purge_deleted`]'s `stop`).
    pub stopped: bool,
}

/// A deleted workspace is marked purged only this long after its
/// deletion: an upload URL signed just before it is valid for up to
/// `UPLOAD_URL_TTL_SECONDS` (at most 15 minutes), and a large file's PUT
/// may take a while longer to complete.
const SETTLE: Duration = Duration::from_secs(3600);
/// Most deleted workspaces one run looks at.
const WORKSPACES_PER_RUN: i32 = 1_000;
/// No batch starts with less than this left of the invocation.
const RESERVE: Duration = Duration::from_secs(30);

/// One scheduled run: [`purge_deleted`] with the service's settings,
/// stopping while the invocation still has [`RESERVE`] left.
pub async fn run(state: &crate::state::State) -> anyhow::Result<Purge> {
    let bucket = state.bucket().await?;
    let out_of_time = || crate::deadline::remaining_time().is_some_and(|left| left < RESERVE);
    purge_deleted(&state.db, bucket, SETTLE, WORKSPACES_PER_RUN, out_of_time).await
}

/// Removes the files and chunks of deleted workspaces not yet purged, at
/// most `limit` workspaces, oldest deletion first, and marks purged those
/// deleted more than `settle` ago of which nothing is left. `stop` is
/// asked before each batch; once it answers true the run ends there
/// (the scheduled function's time is short), and the next one resumes.
pub async fn purge_deleted(
    db: &PgPool,
    bucket: Bucket<'_>,
    settle: Duration,
    limit: i32,
    mut stop: impl FnMut() -> bool,
) -> anyhow::Result<Purge> {
    let settle =
        sqlx::postgres::types::PgInterval::try_from(settle).map_err(|e| anyhow::anyhow!("{e}"))?;
    let deleted: Vec<WorkspaceId> =
        sqlx::query_scalar("SELECT workspace_id FROM workspaces_to_purge($1)")
            .bind(limit)
            .fetch_all(db)
            .await?;
    let mut report = Purge::default();
    for workspace in deleted {
        report.workspaces += 1;
        let prefix = workspace_prefix(workspace);
        loop {
            if stop() {
                report.stopped = true;
                return Ok(report);
            }
            match bucket.delete_batch(&prefix).await? {
                0 => break,
                n => report.files += n,
            }
        }
        loop {
            if stop() {
                report.stopped = true;
                return Ok(report);
            }
            match delete_chunks(db, workspace).await? {
                0 => break,
                n => report.chunks += n,
            }
        }
        if mark_purged(db, workspace, &settle).await? {
            report.purged.push(workspace);
        }
    }
    Ok(report)
}

/// Deletes up to [`CHUNK_BATCH`] chunks of `workspace`, if it is deleted;
/// how many. Holds the workspace's vector-flag lock shared, as chunk
/// writers do, so the indexer never flips the flags of these rows at the
/// same time.
async fn delete_chunks(db: &PgPool, workspace: WorkspaceId) -> Result<u64, sqlx::Error> {
    let mut tx = crate::db::chunk_writer_tx(db, workspace).await?;
    let deleted = sqlx::query(
        "DELETE FROM chunks WHERE workspace_id = $1
           AND id IN (SELECT id FROM chunks WHERE workspace_id = $1 LIMIT $2)
           AND EXISTS (SELECT 1 FROM workspaces w WHERE w.id = $1 AND w.deleted_at IS NOT NULL)",
    )
    .bind(workspace)
    .bind(CHUNK_BATCH)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// Marks `workspace` purged if it was deleted more than `settle` ago;
/// whether it did.
async fn mark_purged(
    db: &PgPool,
    workspace: WorkspaceId,
    settle: &sqlx::postgres::types::PgInterval,
) -> Result<bool, sqlx::Error> {
    let mut tx = crate::db::tenant_tx(db, None, Some(workspace)).await?;
    let marked = sqlx::query(
        "UPDATE workspaces SET purged_at = now()
         WHERE id = $1 AND purged_at IS NULL AND deleted_at < now() - $2",
    )
    .bind(workspace)
    .bind(settle)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(marked == 1)
}
