//! Which workspaces' vectors live in HNSW indexes, and the vector indexes
//! of their own for the largest.
//!
//! Small workspaces are searched exactly (see
//! `QueryConfig::exact_search_max_chunks`): full recall, and no HNSW
//! insert for their chunks. The scheduled `ingest-indexer` function flags
//! a workspace `vector_indexed` once it has more chunks than that (and
//! unflags it below half, or once deleted); a flagged workspace's chunks
//! are in the shared HNSW index (its predicate is `chunks.vector_indexed`,
//! which the insert trigger copies from the workspace), and retrieval
//! takes the index path for it. Flipping the flag holds the workspace's
//! vector-flag lock (`db::VECTOR_FLAG_LOCK`) exclusively, every chunk
//! insert holds it shared, so a flagged workspace never has a chunk
//! outside the index.
//!
//! The shared index still post-filters: for a workspace that is a small
//! share of it, pgvector's iterative scan must walk past many other
//! tenants' vectors, ten times slower than through a partial index
//! holding that workspace alone (README, Measuring). So the largest `QueryConfig::dedicated_indexes_max` flagged
//! workspaces also get a partial HNSW index of their own, built with
//! `CREATE INDEX CONCURRENTLY` (ingestion goes on meanwhile) and dropped
//! when the workspace is unflagged or falls out of that number.
//!
//! The number is capped because every partial index costs each insert a
//! predicate check and each plan a predicate proof; the catalog is the
//! registry (an index that failed half-way is invalid there and is
//! rebuilt), so nothing else can disagree with it.
//!
//! Once a workspace's own index is valid, its `vector_own` flag keeps its
//! new chunks out of the shared index (one HNSW insert a chunk, not two);
//! before that index is dropped while the workspace stays flagged, the
//! chunks written meanwhile go into the shared index and the flag is
//! cleared (migration 20261123000010). Retrieval never searches a
//! `vector_own` workspace through the shared index.
//!
//! Each run also stores every flagged workspace's chunk count and mean
//! chunk length for keyword search (BM25's N and avgdl), so a question
//! to a large workspace does not count them, and, when its size has moved
//! by a tenth, how many chunks hold each lexeme (its document
//! frequencies), so a question reads only the matches that can rank
//! (`retrieval::keyword`).

use std::time::{Duration, Instant};

use sqlx::{Connection, PgPool};

use crate::db::{VECTOR_FLAG_LOCK, tenant_tx_on};
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
    /// Workspaces whose vectors moved into the HNSW indexes, and out.
    pub indexed: Vec<WorkspaceId>,
    pub unindexed: Vec<WorkspaceId>,
    /// Their own indexes built and dropped.
    pub created: Vec<String>,
    pub dropped: Vec<String>,
    /// Workspaces whose lexemes were counted (again) for keyword search.
    pub counted: Vec<WorkspaceId>,
    /// Wanted but left for the next run (time budget spent).
    pub pending: usize,
    /// Another run held the lock; this one did nothing.
    pub busy: bool,
}

/// Advisory lock key: one maintenance run at a time across containers.
const LOCK_KEY: i64 = 0x7261_6777_6179_7663; // "ragwayvc"

/// Brings the flags and the dedicated indexes in line with the workspaces'
/// sizes: flags and builds what is missing (largest workspace first) while
/// `budget` lasts, unflags and drops what is no longer wanted. A live
/// workspace qualifies with more than `min_chunks` chunks and stays down
/// to half that; the largest `max_indexes` of those get their own index,
/// built with `ef_construction` (one built with another is rebuilt).
pub async fn maintain(
    db: &PgPool,
    dimensions: usize,
    ef_construction: u32,
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
        ef_construction,
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
    ef_construction: u32,
    min_chunks: u32,
    max_indexes: u32,
    budget: Duration,
    started: Instant,
) -> Result<Maintenance> {
    let keep_from = i64::from((min_chunks / 2).max(1));
    let sizes: Vec<(WorkspaceId, i64, bool)> = sqlx::query_as(
        "SELECT workspace_id, chunks, vector_indexed FROM workspace_vector_sizes($1)",
    )
    .bind(keep_from as i32)
    .fetch_all(&mut *conn)
    .await?;
    let mut report = Maintenance::default();
    // Largest first (the function's order).
    let mut wanted = Vec::new();
    for (workspace, chunks, flagged) in sizes {
        let want = chunks > i64::from(min_chunks) || (flagged && chunks >= keep_from);
        if want && !flagged {
            if started.elapsed() >= budget {
                report.pending += 1;
                continue;
            }
            set_indexed(conn, workspace, true).await?;
            tracing::info!(%workspace, chunks, "workspace vectors indexed");
            report.indexed.push(workspace);
        } else if !want && flagged {
            set_indexed(conn, workspace, false).await?;
            tracing::info!(%workspace, chunks, "workspace vectors searched exactly again");
            report.unindexed.push(workspace);
        }
        if want {
            store_keyword_stats(conn, workspace).await?;
            // Out of time, the frequencies are left a run older.
            if started.elapsed() < budget && store_term_counts(conn, workspace).await? {
                report.counted.push(workspace);
            }
            wanted.push(workspace);
        }
    }
    let flagged = wanted.clone();
    wanted.truncate(usize::try_from(max_indexes).unwrap_or(usize::MAX));

    // Valid, and built with this `ef_construction`.
    let existing: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, i.indisvalid AND i.indisready, \
                coalesce($1 = ANY (c.reloptions), false) \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = 'chunks'::regclass AND c.relname LIKE 'chunks\\_vec\\_%'",
    )
    .bind(format!("ef_construction={ef_construction}"))
    .fetch_all(&mut *conn)
    .await?;
    // The graph in memory while it is built (the default 64 MB spills a
    // 30,000-vector graph to disk, several times slower); reset below.
    sqlx::raw_sql("SET maintenance_work_mem = '512MB'")
        .execute(&mut *conn)
        .await?;
    let reconciled = reconcile(
        conn,
        &wanted,
        &flagged,
        existing,
        (dimensions, ef_construction),
        (budget, started),
        &mut report,
    )
    .await;
    sqlx::raw_sql("RESET maintenance_work_mem")
        .execute(&mut *conn)
        .await?;
    reconciled.map(|()| report)
}

/// Moves `workspace`'s vectors into the HNSW indexes (`on`: its chunks
/// into the shared one) or out of them (and out of its own index's care).
async fn set_indexed(
    conn: &mut sqlx::PgConnection,
    workspace: WorkspaceId,
    on: bool,
) -> Result<()> {
    let then = if on {
        "UPDATE workspaces SET vector_indexed = true WHERE id = $1"
    } else {
        "WITH terms AS (DELETE FROM workspace_terms WHERE workspace_id = $1) \
         UPDATE workspaces SET vector_indexed = false, vector_own = false, \
                               search_terms_chunks = NULL WHERE id = $1"
    };
    flag_chunks(conn, workspace, on, then).await
}

/// Puts the chunks `workspace` gained while it had an index of its own
/// (which went there alone) into the shared index, and clears its
/// `vector_own`, before that index is dropped: a flagged workspace
/// without an own index is searched through the shared one.
async fn share(conn: &mut sqlx::PgConnection, workspace: WorkspaceId) -> Result<()> {
    let then = "UPDATE workspaces SET vector_own = false WHERE id = $1";
    flag_chunks(conn, workspace, true, then).await
}

/// Sets `workspace`'s `vector_own` once its own index is built and valid:
/// its new chunks go there alone, not into the shared index as well. No
/// lock: a chunk inserted meanwhile into both indexes is merely indexed
/// twice.
async fn set_own(conn: &mut sqlx::PgConnection, workspace: WorkspaceId) -> Result<()> {
    let sql = "UPDATE workspaces SET vector_own = true WHERE id = $1 AND NOT vector_own";
    in_workspace(conn, workspace, sql).await
}

/// Runs `sql` (`$1`: the workspace's id) in `workspace`'s context, in a
/// transaction of its own.
async fn in_workspace(
    conn: &mut sqlx::PgConnection,
    workspace: WorkspaceId,
    sql: &'static str,
) -> Result<()> {
    let mut tx = tenant_tx_on(conn, None, Some(workspace)).await?;
    sqlx::query(sql).bind(workspace).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Sets the shared-index flag of `workspace`'s chunks to `on` and runs
/// `then` on the workspace's row (`$1`: its id). When `on`, the bulk of
/// the chunks is flagged first, without the lock, so ingestion into the
/// workspace goes on; then, holding the flag lock exclusively (in-flight
/// chunk inserts finish first, later ones see the workspace as `then`
/// left it), `then` and any chunk that came meanwhile.
async fn flag_chunks(
    conn: &mut sqlx::PgConnection,
    workspace: WorkspaceId,
    on: bool,
    then: &'static str,
) -> Result<()> {
    let flag = || {
        sqlx::query(
            "UPDATE chunks SET vector_indexed = $2 WHERE workspace_id = $1 AND vector_indexed <> $2",
        )
        .bind(workspace)
        .bind(on)
    };
    if on {
        let mut tx = tenant_tx_on(conn, None, Some(workspace)).await?;
        flag().execute(&mut *tx).await?;
        tx.commit().await?;
    }
    let mut tx = tenant_tx_on(conn, None, Some(workspace)).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(VECTOR_FLAG_LOCK)
        .bind(workspace)
        .execute(&mut *tx)
        .await?;
    sqlx::query(then).bind(workspace).execute(&mut *tx).await?;
    flag().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Stores a flagged workspace's chunk count and mean chunk length, which
/// keyword search (BM25) reads instead of counting them per question
/// (migration 20261123000009); unflagging makes them unused. An
/// unchanged workspace is not written again.
async fn store_keyword_stats(conn: &mut sqlx::PgConnection, workspace: WorkspaceId) -> Result<()> {
    let sql = "UPDATE workspaces w SET search_chunks = s.n, search_mean_tokens = s.mean
         FROM (SELECT count(*) AS n, greatest(avg(c.token_count), 1)::float8 AS mean
               FROM chunks c WHERE c.workspace_id = $1) s
         WHERE w.id = $1
           AND (w.search_chunks, w.search_mean_tokens) IS DISTINCT FROM (s.n, s.mean)";
    in_workspace(conn, workspace, sql).await
}

/// Counts, for a flagged workspace, how many of its chunks hold each
/// lexeme: the document frequencies keyword search reads instead of
/// reading every match (migration 20261123000011, `retrieval::keyword`).
/// Only when never counted, or when the workspace's chunk count has moved
/// by more than a tenth since: a frequency a tenth off moves a score by a
/// few hundredths of its idf. Whether it counted.
async fn store_term_counts(conn: &mut sqlx::PgConnection, workspace: WorkspaceId) -> Result<bool> {
    let mut tx = tenant_tx_on(conn, None, Some(workspace)).await?;
    let due: Option<(i64,)> = sqlx::query_as(
        "SELECT search_chunks FROM workspaces WHERE id = $1 AND search_chunks IS NOT NULL
           AND (search_terms_chunks IS NULL
                OR abs(search_chunks - search_terms_chunks) * 10 > search_chunks)",
    )
    .bind(workspace)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((chunks,)) = due else {
        tx.commit().await?;
        return Ok(false);
    };
    sqlx::query("DELETE FROM workspace_terms WHERE workspace_id = $1")
        .bind(workspace)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO workspace_terms (workspace_id, lexeme, chunks)
         SELECT $1, t.key, count(*) FROM chunks c, each(c.term_counts) t
         WHERE c.workspace_id = $1 GROUP BY t.key",
    )
    .bind(workspace)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE workspaces SET search_terms_chunks = $2 WHERE id = $1")
        .bind(workspace)
        .bind(chunks)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// Drops the own indexes not `wanted` (or invalid, or of another
/// dimension), first putting the chunks of a workspace that stays
/// `flagged` back into the shared index; builds the missing wanted ones
/// while `budget` lasts, and rebuilds those built with another
/// `ef_construction` (in use until then); keeps the new chunks of every
/// workspace with a valid own index out of the shared one.
async fn reconcile(
    conn: &mut sqlx::PgConnection,
    wanted: &[WorkspaceId],
    flagged: &[WorkspaceId],
    existing: Vec<(String, bool, bool)>,
    (dimensions, ef_construction): (usize, u32),
    (budget, started): (Duration, Instant),
    report: &mut Maintenance,
) -> Result<()> {
    // Valid and wanted: name -> whether built with this ef_construction.
    let mut have = std::collections::HashMap::new();
    for (name, valid, current) in existing {
        let owner = parse_index_name(&name)
            .and_then(|(workspace, dims)| (dims == dimensions).then_some(workspace));
        if valid && owner.is_some_and(|w| wanted.contains(&w)) {
            have.insert(name, current);
        } else {
            // Gone, shrunk, of another dimension, or a build that failed.
            drop_own(conn, &name, owner.filter(|w| flagged.contains(w)), report).await?;
        }
    }
    for workspace in wanted {
        let name = index_name(*workspace, dimensions);
        let stale = match have.get(&name) {
            Some(true) => {
                set_own(conn, *workspace).await?;
                continue;
            }
            Some(false) => true,
            None => false,
        };
        if started.elapsed() >= budget {
            report.pending += 1;
            continue;
        }
        if stale {
            drop_own(conn, &name, Some(*workspace), report).await?;
        }
        // The uuid and dimension are ours, formatted, never user text.
        sqlx::raw_sql(sqlx::AssertSqlSafe(crate::db::vector_index_sql(
            &name,
            dimensions,
            ef_construction,
            Some(*workspace),
        )))
        .execute(&mut *conn)
        .await?;
        tracing::info!(index = %name, "dedicated vector index built");
        set_own(conn, *workspace).await?;
        report.created.push(name);
    }
    Ok(())
}

/// Drops the own index `name`, first putting the chunks of `flagged` (its
/// workspace, when that stays in the HNSW indexes) into the shared index.
async fn drop_own(
    conn: &mut sqlx::PgConnection,
    name: &str,
    flagged: Option<WorkspaceId>,
    report: &mut Maintenance,
) -> Result<()> {
    if let Some(workspace) = flagged {
        share(conn, workspace).await?;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP INDEX CONCURRENTLY IF EXISTS {name}"
    )))
    .execute(&mut *conn)
    .await?;
    report.dropped.push(name.to_owned());
    Ok(())
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
