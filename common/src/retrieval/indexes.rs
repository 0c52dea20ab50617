//! Vector indexes of their own for the largest workspaces.
//!
//! The shared HNSW index holds every tenant's chunks. For a workspace that
//! is a small share of the table, pgvector's iterative scan must walk past
//! many other tenants' vectors before it has enough of this one's: 38 ms
//! for a 26,718-chunk workspace in a 200,000-chunk table, against 3.5 ms
//! through a partial index holding that workspace alone. Small workspaces
//! are searched exactly (see `QueryConfig::exact_search_max_chunks`); the
//! largest `QueryConfig::dedicated_indexes_max` above that size get a
//! partial HNSW index, built by the scheduled `ingest-indexer` function
//! with `CREATE INDEX CONCURRENTLY` (ingestion goes on meanwhile) and
//! dropped when the workspace is gone or has shrunk to half the size.
//!
//! The number is capped because every partial index costs each insert a
//! predicate check and each plan a predicate proof; the catalog is the
//! registry (an index that failed half-way is invalid there and is
//! rebuilt), so nothing else can disagree with it.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgPool};

use crate::error::Result;
use crate::ids::WorkspaceId;

/// The index of `workspace`'s vectors of `dimensions`.
pub fn index_name(workspace: WorkspaceId, dimensions: usize) -> String {
    format!("chunks_vec_{}_{dimensions}", workspace.0.simple())
}

/// `(workspace, dimensions)` of an index named by [`index_name`].
fn parse_index_name(name: &str) -> Option<(WorkspaceId, usize)> {
    let rest = name.strip_prefix("chunks_vec_")?;
    let (hex, dimensions) = rest.split_once('_')?;
    Some((
        WorkspaceId(uuid::Uuid::try_parse(hex).ok()?),
        dimensions.parse().ok()?,
    ))
}

/// What one maintenance run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
    /// Wanted but left for the next run (time budget spent).
    pub pending: usize,
    /// Another run held the lock; this one did nothing.
    pub busy: bool,
}

/// Advisory lock key: one maintenance run at a time across containers.
const LOCK_KEY: i64 = 0x7261_6777_6179_7663; // "ragwayvc"

/// Brings the dedicated indexes in line with the workspaces' sizes: builds
/// the missing ones (largest workspace first) while `budget` lasts, drops
/// those no longer wanted. A workspace qualifies with more than
/// `min_chunks` chunks and keeps its index down to half that.
pub async fn maintain(
    db: &PgPool,
    dimensions: usize,
    min_chunks: u32,
    max_indexes: u32,
    budget: Duration,
) -> Result<Maintenance> {
    let started = Instant::now();
    let mut conn = db.acquire().await?;
    let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(Maintenance {
            busy: true,
            ..Maintenance::default()
        });
    }
    let result = maintain_locked(
        &mut conn,
        dimensions,
        min_chunks,
        max_indexes,
        budget,
        started,
    )
    .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        // A connection that may still hold the lock never goes back to the pool.
        conn.detach().close().await.ok();
    }
    result
}

async fn maintain_locked(
    conn: &mut sqlx::PgConnection,
    dimensions: usize,
    min_chunks: u32,
    max_indexes: u32,
    budget: Duration,
    started: Instant,
) -> Result<Maintenance> {
    let keep_from = i32::try_from((min_chunks / 2).max(1)).unwrap_or(i32::MAX);
    let sizes: Vec<(WorkspaceId, i64)> =
        sqlx::query_as("SELECT workspace_id, chunks FROM workspace_chunk_counts($1, $2)")
            .bind(keep_from)
            .bind(i32::try_from(max_indexes).unwrap_or(i32::MAX))
            .fetch_all(&mut *conn)
            .await?;
    let existing: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, i.indisvalid AND i.indisready FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = 'chunks'::regclass AND c.relname LIKE 'chunks\\_vec\\_%'",
    )
    .fetch_all(&mut *conn)
    .await?;

    // The graph in memory while it is built (the default 64 MB spills a
    // 30,000-vector graph to disk, several times slower); reset below.
    sqlx::raw_sql("SET maintenance_work_mem = '512MB'")
        .execute(&mut *conn)
        .await?;
    let report = reconcile(
        conn, &sizes, existing, dimensions, min_chunks, budget, started,
    )
    .await;
    sqlx::raw_sql("RESET maintenance_work_mem")
        .execute(&mut *conn)
        .await?;
    report
}

async fn reconcile(
    conn: &mut sqlx::PgConnection,
    sizes: &[(WorkspaceId, i64)],
    existing: Vec<(String, bool)>,
    dimensions: usize,
    min_chunks: u32,
    budget: Duration,
    started: Instant,
) -> Result<Maintenance> {
    let mut report = Maintenance::default();
    let mut have = std::collections::HashSet::new();
    for (name, valid) in existing {
        let keep = valid
            && parse_index_name(&name).is_some_and(|(workspace, dims)| {
                dims == dimensions && sizes.iter().any(|(w, _)| *w == workspace)
            });
        if keep {
            have.insert(name);
        } else {
            // Gone, shrunk, of another dimension, or a build that failed.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {name}"
            )))
            .execute(&mut *conn)
            .await?;
            report.dropped.push(name);
        }
    }
    for (workspace, chunks) in sizes {
        let name = index_name(*workspace, dimensions);
        if *chunks <= i64::from(min_chunks) || have.contains(&name) {
            continue;
        }
        if started.elapsed() >= budget {
            report.pending += 1;
            continue;
        }
        // The uuid and dimension are ours, formatted, never user text.
        sqlx::raw_sql(sqlx::AssertSqlSafe(crate::db::vector_index_sql(
            &name,
            dimensions,
            Some(*workspace),
        )))
        .execute(&mut *conn)
        .await?;
        tracing::info!(index = %name, chunks, "dedicated vector index built");
        report.created.push(name);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_fit_postgres_and_parse_back() {
        let ws = WorkspaceId(uuid::Uuid::now_v7());
        let name = index_name(ws, 1536);
        assert!(name.len() <= 63, "{name} is longer than NAMEDATALEN");
        assert_eq!(parse_index_name(&name), Some((ws, 1536)));
        assert_eq!(parse_index_name("chunks_embedding_hnsw_384"), None);
        assert_eq!(parse_index_name("chunks_vec_nothex_384"), None);
    }
}
