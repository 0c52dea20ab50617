//! The Postgres pool and tenant-scoped transactions.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};

use crate::config::Config;
use crate::ids::{UserId, WorkspaceId};

/// Migrations embedded in every binary that needs them (the migrate tool, tests).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool that connects on first use, so a cold start never waits for the
/// database and a function that does not touch it never opens a connection.
pub fn lazy_pool(config: &Config) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(config.database_url.expose())
        .map_err(|e| anyhow::anyhow!("DATABASE_URL is not a valid connection string: {e}"))?
        .application_name("ragway");
    Ok(PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        // Lambda freezes containers; drop idle connections before RDS Proxy does.
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(options))
}

/// The years every Postgres date and timestamp can hold (dates go back to
/// 4713 BC, timestamps forward to 294276 AD; chrono parses far beyond
/// both): input outside them is a 422, never a failed query.
pub const POSTGRES_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Transaction advisory lock class guarding a workspace's
/// `vector_indexed` flag: `(VECTOR_FLAG_LOCK, hashtext(workspace id))`,
/// taken shared by every chunk insert (the `chunks_before_write` trigger)
/// and exclusively by the indexer when it flips the flag.
pub const VECTOR_FLAG_LOCK: i32 = 1_919_383_145;

/// Appended to a BEGIN: the transaction's statements take their generic
/// plans. For the ingest statements, which bound what they read by the
/// batch's ids (`id = ANY($2)`), so the values do not change the plan;
/// their array parameters kept Postgres planning every call afresh (0.4
/// ms a store, as much a claim).
pub const GENERIC_PLANS: &str = "SET LOCAL plan_cache_mode = force_generic_plan";

/// A tenant transaction for writing `workspace`'s chunks, with
/// [`GENERIC_PLANS`]: holds the workspace's vector-flag lock shared from
/// the start, so the indexer can never wait on rows this transaction
/// changed while it waits for the lock (the insert trigger takes it
/// again, a no-op then). Same round trip as the BEGIN.
pub async fn chunk_writer_tx(
    pool: &PgPool,
    workspace: WorkspaceId,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(sqlx::AssertSqlSafe(format!(
        "{}; {GENERIC_PLANS}; \
         SELECT pg_advisory_xact_lock_shared({VECTOR_FLAG_LOCK}, hashtext('{}'))",
        begin_statement(None, Some(workspace)),
        workspace.0
    )))
    .await
}

/// Opens a transaction with the row-level-security context set: policies on
/// tenant tables see `app.user_id` and `app.workspace_id` for this transaction
/// only (`set_config(..., true)`), so a pooled connection never leaks them.
pub async fn tenant_tx(
    pool: &PgPool,
    user: Option<UserId>,
    workspace: Option<WorkspaceId>,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(sqlx::AssertSqlSafe(begin_statement(user, workspace)))
        .await
}

/// [`tenant_tx`] for a request made with an API key (`key`): also sets
/// `app.api_key_id`, which the usage log records for what the request
/// spends (`app_api_key_id()`). Still one round trip.
pub async fn keyed_tenant_tx(
    pool: &PgPool,
    user: Option<UserId>,
    workspace: Option<WorkspaceId>,
    key: Option<uuid::Uuid>,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut sql = begin_statement(user, workspace);
    if let Some(key) = key {
        // A typed UUID: safe to format, as in `begin_statement`.
        sql.push_str(&format!(", set_config('app.api_key_id', '{key}', true)"));
    }
    pool.begin_with(sqlx::AssertSqlSafe(sql)).await
}

/// [`tenant_tx`] on a connection already held (the indexer's locked
/// session, a second pool connection).
pub async fn tenant_tx_on(
    conn: &mut sqlx::PgConnection,
    user: Option<UserId>,
    workspace: Option<WorkspaceId>,
) -> Result<Transaction<'_, Postgres>, sqlx::Error> {
    use sqlx::Connection;
    conn.begin_with(sqlx::AssertSqlSafe(begin_statement(user, workspace)))
        .await
}

/// [`tenant_tx`] for a widget visitor (`app.visitor_id`): chat sessions
/// are then those of that visitor only (and without one, members' only).
pub async fn visitor_tx(
    pool: &PgPool,
    user: Option<UserId>,
    workspace: Option<WorkspaceId>,
    visitor: Option<uuid::Uuid>,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(sqlx::AssertSqlSafe(visitor_begin_statement(
        user, workspace, visitor,
    )))
    .await
}

/// `BEGIN` and the RLS context in one simple query, one round trip instead
/// of two. Safe to format: both values are typed UUIDs (hex and dashes).
pub fn begin_statement(user: Option<UserId>, workspace: Option<WorkspaceId>) -> String {
    visitor_begin_statement(user, workspace, None)
}

fn visitor_begin_statement(
    user: Option<UserId>,
    workspace: Option<WorkspaceId>,
    visitor: Option<uuid::Uuid>,
) -> String {
    let text = |id: Option<uuid::Uuid>| id.map(|u| u.to_string()).unwrap_or_default();
    let mut statement = format!(
        "BEGIN; SELECT set_config('app.user_id', '{}', true), set_config('app.workspace_id', '{}', true)",
        text(user.map(|u| u.0)),
        text(workspace.map(|w| w.0)),
    );
    if let Some(visitor) = visitor {
        statement.push_str(&format!(
            ", set_config('app.visitor_id', '{visitor}', true)"
        ));
    }
    statement
}

/// Builds (if missing) the shared HNSW cosine index for `dimensions`-long
/// embeddings of the workspaces flagged `vector_indexed` (the large ones;
/// the others are searched exactly, see `retrieval::indexes`). Chunks
/// store `vector` without a fixed length so the model is configuration;
/// the index is partial on the length and casts to it, so vectors of
/// another length never break inserts. `ef_construction`: see
/// `QueryConfig::hnsw_ef_construction` (an existing index keeps its own).
pub async fn ensure_vector_index(
    db: impl sqlx::PgExecutor<'_>,
    dimensions: usize,
    ef_construction: u32,
) -> Result<(), sqlx::Error> {
    let sql = vector_index_sql(
        &shared_vector_index(dimensions),
        dimensions,
        ef_construction,
        None,
    );
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(db).await?;
    Ok(())
}

/// The name of the shared HNSW index for `dimensions`-long embeddings.
pub fn shared_vector_index(dimensions: usize) -> String {
    format!("chunks_shared_hnsw_{dimensions}")
}

/// The indexed expression: searches must order by exactly this (`<=>`)
/// for the planner to use an HNSW index.
pub fn indexed_embedding(dimensions: usize) -> String {
    format!("embedding::vector({dimensions})")
}

/// `CREATE INDEX IF NOT EXISTS` of an HNSW cosine index named `name` over
/// the `dimensions`-long embeddings: of one workspace's rows when
/// `workspace` is given, built concurrently then (the table stays
/// writable; run it outside a transaction); else of the flagged rows.
pub fn vector_index_sql(
    name: &str,
    dimensions: usize,
    ef_construction: u32,
    workspace: Option<crate::ids::WorkspaceId>,
) -> String {
    let (concurrently, only) = match workspace {
        Some(ws) => (
            "CONCURRENTLY ",
            format!("workspace_id = '{}'::uuid AND ", ws.0),
        ),
        None => ("", "vector_indexed AND ".to_owned()),
    };
    format!(
        "CREATE INDEX {concurrently}IF NOT EXISTS {name} ON chunks \
         USING hnsw (({}) vector_cosine_ops) WITH (ef_construction = {ef_construction}) \
         WHERE {only}vector_dims(embedding) = {dimensions}",
        indexed_embedding(dimensions)
    )
}
