//! Retrieval: the chunks of one workspace that best answer a question,
//! by meaning (pgvector cosine distance), by words (BM25 over Postgres
//! full-text vectors), or both fused.
//!
//! - **Semantic.** A workspace is searched exactly (every vector
//!   compared: full recall, where a shared HNSW index post-filters by
//!   workspace and returns too few rows for small tenants) unless the
//!   `ingest-indexer` schedule has flagged it `vector_indexed` for having
//!   more than [`QueryConfig::exact_search_max_chunks`] chunks
//!   ([`indexes`]). A flagged workspace goes through its own partial HNSW
//!   index when it has one, else through the shared index of flagged
//!   chunks, with pgvector's iterative scan (`relaxed_order`), which keeps
//!   scanning until enough rows of this workspace (and filter) are found;
//!   results are re-sorted by exact distance.
//! - **Keyword.** Okapi BM25 over the chunks' full-text terms
//!   ([`keyword`]): the question's lexemes (English stemming, stop words
//!   dropped) OR-ed, read through the `(workspace_id, tsv)` GIN index,
//!   scored here; in a large workspace only the lexemes whose matches can
//!   still rank are read (MaxScore).
//! - **Hybrid.** Each leg's candidate scores are min-max normalised and
//!   combined with a weight on the semantic leg ([`Search::semantic_weight`],
//!   from `HYBRID_SEMANTIC_WEIGHT` or the embedder's default). With a weak
//!   semantic leg (the local hashed embedder), reciprocal rank fusion
//!   ranks below keyword alone and a low weight does not; with a real
//!   model, an even weight and RRF tie above both legs (SciFact, README:
//!   Measuring). One weight per embedder keeps hybrid at or above its
//!   best leg.
//!
//! Every statement filters on `workspace_id`, inside a transaction whose
//! RLS context is the same workspace.

pub mod filters;
pub mod indexes;
pub mod keyword;

use std::collections::HashMap;

use pgvector::Vector;
use serde::{Deserialize, Serialize};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Transaction};

use crate::config::QueryConfig;
use crate::error::{ApiError, Result};
use crate::ids::{ChunkId, DocumentId, WorkspaceId};
pub use filters::Condition;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hybrid,
    Semantic,
    Keyword,
}

impl Mode {
    /// The name clients use (and metrics carry).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Semantic => "semantic",
            Mode::Keyword => "keyword",
        }
    }
}

/// Which documents may answer.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub document_ids: Vec<DocumentId>,
    pub metadata: Option<Condition>,
}

/// The request's `filters` member as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiltersIn {
    #[serde(default)]
    pub document_ids: Vec<DocumentId>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

/// Most document ids one filter may name.
const MAX_DOCUMENT_IDS: usize = 100;

impl Filters {
    pub fn parse(input: Option<FiltersIn>) -> Result<Self> {
        let Some(input) = input else {
            return Ok(Self::default());
        };
        if input.document_ids.len() > MAX_DOCUMENT_IDS {
            return Err(ApiError::unprocessable(
                "filters.document_ids",
                format!("at most {MAX_DOCUMENT_IDS} document ids"),
            ));
        }
        let metadata = match &input.metadata {
            None | Some(serde_json::Value::Null) => None,
            Some(value) => filters::parse(value)?,
        };
        Ok(Self {
            document_ids: input.document_ids,
            metadata,
        })
    }

    /// ` AND …` restricting chunk alias `c` to matching documents.
    fn push_sql(&self, builder: &mut QueryBuilder<Postgres>) {
        if !self.document_ids.is_empty() {
            builder.push(" AND c.document_id = ANY(");
            builder.push_bind(self.document_ids.iter().map(|d| d.0).collect::<Vec<_>>());
            builder.push(")");
        }
        if let Some(condition) = &self.metadata {
            builder.push(
                " AND EXISTS (SELECT 1 FROM documents d \
                 WHERE d.workspace_id = c.workspace_id AND d.id = c.document_id AND ",
            );
            filters::push_sql(builder, "d.metadata", condition);
            builder.push(")");
        }
    }
}

/// One search.
pub struct Search<'a> {
    pub workspace: WorkspaceId,
    /// The words to match (the question, with conversation context for chat).
    pub text: &'a str,
    /// The question's embedding; needed unless the mode is keyword.
    pub embedding: Option<&'a [f32]>,
    pub mode: Mode,
    pub top_k: usize,
    pub filters: &'a Filters,
    /// Share of the semantic leg in hybrid scores (0..=1).
    pub semantic_weight: f64,
}

/// A retrieved chunk with what a citation shows.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Hit {
    pub chunk_id: ChunkId,
    pub document_id: DocumentId,
    pub title: String,
    pub ordinal: i32,
    pub page: Option<i32>,
    pub heading: Option<String>,
    pub content: String,
    pub token_count: i32,
    #[sqlx(default)]
    pub score: f64,
}

/// How deep each leg looks before fusion.
pub fn candidates(top_k: usize) -> i64 {
    (top_k * 5).clamp(50, 250) as i64
}

/// The best `top_k` chunks for `search`, best first, read in `tx`. A
/// hybrid search of a workspace searched through an HNSW index (a large
/// one: both legs take milliseconds there) runs its keyword leg
/// concurrently with the semantic one, on a second connection of `db` in
/// the same workspace context, when the pool has one idle
/// ([`side_connection`]); otherwise the legs run one after the other in
/// `tx`.
pub async fn search(
    tx: &mut Transaction<'static, Postgres>,
    db: &PgPool,
    config: &QueryConfig,
    dimensions: usize,
    search: &Search<'_>,
) -> Result<Vec<Hit>> {
    let depth = match search.mode {
        Mode::Hybrid => candidates(search.top_k),
        _ => search.top_k as i64,
    };
    if search.mode == Mode::Keyword {
        let ranked = keyword(tx, search, depth).await?;
        return details(tx, search.workspace, ranked).await;
    }
    let embedding = search.embedding.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("semantic search without an embedding"))
    })?;
    let path = vector_path(tx, config, dimensions, search, depth).await?;
    let ranked = if search.mode == Mode::Semantic {
        semantic(tx, path, dimensions, search, embedding, depth).await?
    } else {
        let side = if path.indexed {
            side_connection(db)
        } else {
            None
        };
        let (semantic, keyword) = match side {
            Some(side) => {
                hybrid_legs_aside(tx, side, path, dimensions, search, embedding, depth).await?
            }
            None => (
                semantic(tx, path, dimensions, search, embedding, depth).await?,
                keyword(tx, search, depth).await?,
            ),
        };
        fuse(&semantic, &keyword, search.semantic_weight, search.top_k)
    };
    details(tx, search.workspace, ranked).await
}

/// Both legs of a hybrid search at once: semantic in `tx`, keyword on
/// `side`. If the keyword leg fails there (a connection the server closed
/// while it sat idle, say), it runs in `tx` instead.
async fn hybrid_legs_aside(
    tx: &mut Transaction<'static, Postgres>,
    side: PoolConnection<Postgres>,
    path: VectorPath,
    dimensions: usize,
    search: &Search<'_>,
    embedding: &[f32],
    depth: i64,
) -> Result<(Vec<(ChunkId, f64)>, Vec<(ChunkId, f64)>)> {
    let (semantic, aside) = tokio::join!(
        semantic(tx, path, dimensions, search, embedding, depth),
        keyword_aside(side, search, depth)
    );
    let semantic = semantic?;
    let keyword = match aside {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = ?e, "keyword search on a second connection failed");
            keyword(tx, search, depth).await?
        }
    };
    Ok((semantic, keyword))
}

/// An idle connection of `db` for a concurrent search leg, if there is one.
/// If not, and the pool may grow, one is opened in the background for the
/// next search: a Lambda container's pool otherwise holds one connection,
/// and opening one inline would cost more than the leg it saves. So only
/// containers that search large workspaces hold a second connection
/// (`DATABASE_MAX_CONNECTIONS=1` forbids it).
fn side_connection(db: &PgPool) -> Option<PoolConnection<Postgres>> {
    if let Some(conn) = db.try_acquire() {
        return Some(conn);
    }
    if db.size() < db.options().get_max_connections() {
        let db = db.clone();
        tokio::spawn(async move {
            // Returned to the pool idle when dropped.
            if let Err(e) = db.acquire().await {
                tracing::debug!(error = %e, "opening a second connection failed");
            }
        });
    }
    None
}

/// The keyword leg in a transaction of its own on `conn`, in the search's
/// workspace context (its membership was checked in the caller's
/// transaction, which stays open meanwhile).
async fn keyword_aside(
    mut conn: PoolConnection<Postgres>,
    search: &Search<'_>,
    depth: i64,
) -> Result<Vec<(ChunkId, f64)>> {
    let mut tx = crate::db::tenant_tx_on(&mut conn, None, Some(search.workspace)).await?;
    let found = keyword(&mut tx, search, depth).await?;
    tx.commit().await?;
    Ok(found)
}

/// Weighted fusion: each list's scores are min-max normalised to 0..=1
/// (a chunk missing from a list scores 0 there), then combined as
/// `weight · semantic + (1 − weight) · keyword`. Ties keep the order of
/// first appearance (semantic list first).
pub fn fuse(
    semantic: &[(ChunkId, f64)],
    keyword: &[(ChunkId, f64)],
    weight: f64,
    top_k: usize,
) -> Vec<(ChunkId, f64)> {
    let mut scores: HashMap<ChunkId, (f64, usize)> = HashMap::new();
    let mut seen = 0;
    for (list, share) in [(semantic, weight), (keyword, 1.0 - weight)] {
        let (min, max) = list
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, s)| {
                (lo.min(*s), hi.max(*s))
            });
        for (id, score) in list {
            let normalised = if max > min {
                (score - min) / (max - min)
            } else {
                1.0
            };
            let entry = scores.entry(*id).or_insert_with(|| {
                seen += 1;
                (0.0, seen)
            });
            entry.0 += share * normalised;
        }
    }
    let mut fused: Vec<_> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
    fused.truncate(top_k);
    fused
        .into_iter()
        .map(|(id, (score, _))| (id, score))
        .collect()
}

/// Whether the workspace's vectors are indexed (`vector_indexed`, see
/// [`indexes`]), whether its new chunks go to its own index alone
/// (`vector_own`), and whether it has a vector index of its own named `$2`.
/// Sets the transaction's HNSW scan options too (`$3`: ef_search), in the
/// same round trip; the exact path uses no index, so they cost it nothing.
/// Iterative scans keep going until enough rows pass the workspace and
/// filter conditions (up to hnsw.max_scan_tuples).
const PATH_SQL: &str = "SELECT \
     coalesce(w.vector_indexed, false), coalesce(w.vector_own, false), \
     EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE c.relname = $2 AND i.indrelid = 'chunks'::regclass \
               AND i.indisvalid AND i.indisready), \
     set_config('hnsw.ef_search', $3, true), \
     set_config('hnsw.iterative_scan', 'relaxed_order', true) \
     FROM (SELECT) one LEFT JOIN workspaces w ON w.id = $1";

/// How the semantic leg searches a workspace.
#[derive(Debug, Clone, Copy)]
struct VectorPath {
    /// Through an HNSW index (else an exact scan).
    indexed: bool,
    /// Through the workspace's own index (else the shared one).
    dedicated: bool,
}

/// The workspace's [`VectorPath`] ([`PATH_SQL`]), with the scan options
/// for `limit` rows of `search`'s mode set in `tx`.
async fn vector_path(
    tx: &mut Transaction<'static, Postgres>,
    config: &QueryConfig,
    dimensions: usize,
    search: &Search<'_>,
    limit: i64,
) -> Result<VectorPath> {
    let ef_search = match search.mode {
        Mode::Semantic => config.hnsw_ef_search_semantic,
        _ => config.hnsw_ef_search,
    };
    let ef_search = ef_search.max(limit.min(1000) as u32);
    let (indexed, own, dedicated, _, _): (bool, bool, bool, String, String) =
        sqlx::query_as(PATH_SQL)
            .bind(search.workspace)
            .bind(indexes::index_name(search.workspace, dimensions))
            .bind(ef_search.to_string())
            .fetch_one(&mut **tx)
            .await?;
    Ok(VectorPath {
        // Some of a `vector_own` workspace's chunks are in its own index
        // alone: without that index (being rebuilt, say), the exact scan.
        indexed: indexed && (dedicated || !own),
        dedicated,
    })
}

async fn semantic(
    tx: &mut Transaction<'static, Postgres>,
    path: VectorPath,
    dimensions: usize,
    search: &Search<'_>,
    embedding: &[f32],
    limit: i64,
) -> Result<Vec<(ChunkId, f64)>> {
    let VectorPath { indexed, dedicated } = path;
    let vector = Vector::from(embedding.to_vec());
    let exact = !indexed;
    // The HNSW indexes are on `embedding::vector(N)` for rows whose length
    // is N (see db::ensure_vector_index): the index path must use exactly
    // that expression and predicate; the exact path uses the bare column so
    // the planner cannot pick an index.
    let distance = if exact {
        "c.embedding <=> ".to_owned()
    } else {
        format!("c.{} <=> ", crate::db::indexed_embedding(dimensions))
    };
    let mut b = QueryBuilder::<Postgres>::new("SELECT id, distance FROM (SELECT c.id, ");
    b.push(&distance);
    b.push_bind(vector.clone());
    b.push(" AS distance FROM chunks c WHERE c.workspace_id = ");
    if dedicated && !exact {
        // The workspace's own index is partial on its id: the planner can
        // only use it with the id written into the statement. A uuid we
        // format, never user text.
        b.push(format!("'{}'::uuid", search.workspace.0));
    } else {
        b.push_bind(search.workspace);
    }
    b.push(format!(" AND vector_dims(c.embedding) = {dimensions}"));
    if indexed && !dedicated {
        // The shared index's predicate (every chunk of a flagged workspace has it).
        b.push(" AND c.vector_indexed");
    }
    search.filters.push_sql(&mut b);
    b.push(" ORDER BY ");
    b.push(&distance);
    b.push_bind(vector);
    b.push(" LIMIT ");
    b.push_bind(limit);
    b.push(") s ORDER BY distance, id");
    // Statements naming a workspace are not worth a prepared statement each.
    let rows: Vec<(ChunkId, f64)> = b
        .build_query_as()
        .persistent(!dedicated || exact)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows.into_iter().map(|(id, d)| (id, 1.0 - d)).collect())
}

/// The keyword leg's best `limit` chunks ([`keyword::rank`]).
async fn keyword(
    conn: &mut PgConnection,
    search: &Search<'_>,
    limit: i64,
) -> Result<Vec<(ChunkId, f64)>> {
    let limit = usize::try_from(limit).unwrap_or(0);
    Ok(keyword::rank(conn, search, limit).await?.ranked)
}

/// The chunks of `ranked`, in its order, with their documents' titles.
async fn details(
    tx: &mut Transaction<'static, Postgres>,
    workspace: WorkspaceId,
    ranked: Vec<(ChunkId, f64)>,
) -> Result<Vec<Hit>> {
    if ranked.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<uuid::Uuid> = ranked.iter().map(|(id, _)| id.0).collect();
    // One primary-key lookup per id, however the plan is cached: as a
    // plain join, the generic plan Postgres switches to after five runs
    // priced a workspace at its average size and read every chunk of a
    // large one to return ten. OFFSET 0 keeps the lookup a subquery of
    // its own.
    let rows: Vec<Hit> = sqlx::query_as(
        "SELECT c.id AS chunk_id, c.document_id, d.title, c.ordinal, c.page, c.heading,
                c.content, c.token_count
         FROM unnest($2::uuid[]) AS r(id)
         CROSS JOIN LATERAL (
             SELECT c.id, c.workspace_id, c.document_id, c.ordinal, c.page, c.heading, c.content,
                    c.token_count
             FROM chunks c WHERE c.id = r.id AND c.workspace_id = $1 OFFSET 0) c
         JOIN documents d ON d.workspace_id = c.workspace_id AND d.id = c.document_id",
    )
    .bind(workspace)
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut by_id: HashMap<ChunkId, Hit> = rows.into_iter().map(|h| (h.chunk_id, h)).collect();
    Ok(ranked
        .into_iter()
        .filter_map(|(id, score)| {
            by_id.remove(&id).map(|mut hit| {
                hit.score = score;
                hit
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> ChunkId {
        ChunkId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn fusion_weighs_the_legs_and_keeps_single_leg_hits() {
        let semantic = vec![(id(1), 0.9), (id(2), 0.8), (id(3), 0.5)];
        let keyword = vec![(id(3), 12.0), (id(4), 11.0), (id(1), 2.0)];
        let order = |w: f64| -> Vec<ChunkId> {
            fuse(&semantic, &keyword, w, 10)
                .into_iter()
                .map(|(i, _)| i)
                .collect()
        };
        // Equal weights: 1 = 0.5 + 0; 3 = 0 + 0.5; 2 = 0.5·0.75; 4 = 0.5·0.9.
        assert_eq!(order(0.5), vec![id(1), id(3), id(4), id(2)]);
        // All weight on one leg reproduces that leg's order first.
        assert_eq!(order(1.0)[..3], [id(1), id(2), id(3)]);
        assert_eq!(order(0.0)[..3], [id(3), id(4), id(1)]);
        assert_eq!(fuse(&semantic, &keyword, 0.5, 2).len(), 2);
        // One-element lists normalise to 1, not NaN.
        let single = fuse(&[(id(7), 0.3)], &[], 0.5, 5);
        assert_eq!(single, vec![(id(7), 0.5)]);
    }

    #[test]
    fn candidate_depth_is_bounded() {
        assert_eq!(candidates(1), 50);
        assert_eq!(candidates(20), 100);
        assert_eq!(candidates(50), 250);
    }
}
