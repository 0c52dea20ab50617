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
//! - **Hybrid.** Each leg's candidate scores become standard scores over
//!   its candidates, so a leg whose best stand out counts for more than one
//!   whose scores are bunched, and are combined with a weight on the
//!   semantic leg ([`Search::semantic_weight`], from
//!   `HYBRID_SEMANTIC_WEIGHT` or the embedder's default, chosen on
//!   SciFact's train split alone). A weighted sum still lets a weak leg's
//!   noise into every answer, and a weight that helps on average loses to
//!   the better leg alone on other questions. So [`fuse`] also asks
//!   whether the legs agree: when their best ten share fewer than three
//!   chunks, one has misread the question, and the leg trusted less (the
//!   lighter-weighted) sits that query out. Between equally trusted legs
//!   (an even weight, as for real models) both always count: dropping
//!   either would drop half the signal. Min-max scores, a dispersion gate
//!   and reciprocal rank fusion did no better under the same
//!   cross-validation (README: Measuring).
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// How many of each leg's best chunks [`fuse`] compares, and how many of
/// them the legs must share for both to count.
const AGREEMENT_DEPTH: usize = 10;
const AGREEMENT_MIN: usize = 3;

/// Weighted fusion of the two legs' candidates, best first. Each leg's
/// scores become standard scores over its own candidates (`(s − mean) /
/// sd`; a chunk the leg did not return gets the leg's lowest), so a leg
/// whose best stand far above the rest counts for more than one whose
/// scores are bunched; they are combined as `weight · semantic + (1 −
/// weight) · keyword`. A leg whose scores are all equal only marks its
/// chunks (1 against 0). When one leg weighs less and the legs' best ten
/// share fewer than three chunks, they disagree about what was asked: the
/// lighter leg sits the query out and the other's order stands, as it does
/// when a leg found nothing. At an even weight both legs always count.
/// Ties keep the order of first appearance (semantic list first). Scores
/// compare within one search only.
pub fn fuse(
    semantic: &[(ChunkId, f64)],
    keyword: &[(ChunkId, f64)],
    weight: f64,
    top_k: usize,
) -> Vec<(ChunkId, f64)> {
    let weight = if keyword.is_empty() {
        1.0
    } else if semantic.is_empty() {
        0.0
    } else if weight == 0.5 || legs_agree(semantic, keyword) {
        weight
    } else if weight > 0.5 {
        1.0
    } else {
        0.0
    };
    // Each candidate once, in order of first appearance, with its
    // standard score in each leg (None: not returned by that leg).
    let mut fused: Vec<(ChunkId, [Option<f64>; 2])> =
        Vec::with_capacity(semantic.len() + keyword.len());
    let mut position: HashMap<ChunkId, usize> = HashMap::with_capacity(fused.capacity());
    let mut floors = [0.0; 2];
    for (leg, list) in [semantic, keyword].into_iter().enumerate() {
        let (standard, floor) = standard_scores(list);
        floors[leg] = floor;
        for ((id, _), z) in list.iter().zip(standard) {
            let at = *position.entry(*id).or_insert_with(|| {
                fused.push((*id, [None, None]));
                fused.len() - 1
            });
            fused[at].1[leg] = Some(z);
        }
    }
    let mut fused: Vec<(ChunkId, f64)> = fused
        .into_iter()
        .map(|(id, [s, k])| {
            let s = s.unwrap_or(floors[0]);
            let k = k.unwrap_or(floors[1]);
            (id, weight * s + (1.0 - weight) * k)
        })
        .collect();
    // A stable sort: equal scores stay in order of first appearance.
    fused.sort_by(|a, b| b.1.total_cmp(&a.1));
    fused.truncate(top_k);
    fused
}

/// The standard score of each of `list`'s scores over the list, and the
/// score of a chunk the list lacks (its lowest). A list of equal scores
/// (or of one) marks its members: 1, against 0 for the rest.
fn standard_scores(list: &[(ChunkId, f64)]) -> (Vec<f64>, f64) {
    let n = list.len() as f64;
    let (min, max) = list
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, s)| {
            (lo.min(*s), hi.max(*s))
        });
    if list.is_empty() || max <= min {
        return (vec![1.0; list.len()], 0.0);
    }
    let mean = list.iter().map(|(_, s)| s).sum::<f64>() / n;
    let sd = (list.iter().map(|(_, s)| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    let standard = list.iter().map(|(_, s)| (s - mean) / sd).collect();
    (standard, (min - mean) / sd)
}

/// Whether the legs' best [`AGREEMENT_DEPTH`] chunks share at least
/// [`AGREEMENT_MIN`].
fn legs_agree(semantic: &[(ChunkId, f64)], keyword: &[(ChunkId, f64)]) -> bool {
    let best = |list: &[(ChunkId, f64)]| -> Vec<ChunkId> {
        list.iter()
            .take(AGREEMENT_DEPTH)
            .map(|(id, _)| *id)
            .collect()
    };
    let semantic = best(semantic);
    best(keyword)
        .iter()
        .filter(|id| semantic.contains(id))
        .count()
        >= AGREEMENT_MIN
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

    fn ids(fused: &[(ChunkId, f64)]) -> Vec<ChunkId> {
        fused.iter().map(|(i, _)| *i).collect()
    }

    /// `n` chunks from `first` on, scored from `top` down by 1.
    fn ranked(first: u128, n: u128, top: f64) -> Vec<(ChunkId, f64)> {
        (0..n).map(|i| (id(first + i), top - i as f64)).collect()
    }

    #[test]
    fn agreeing_legs_are_weighed_and_single_leg_hits_kept() {
        // Three chunks (1, 2, 3) in both legs' best ten: the legs agree.
        let semantic = vec![(id(1), 0.9), (id(2), 0.8), (id(3), 0.5), (id(5), 0.4)];
        let keyword = vec![(id(3), 12.0), (id(4), 11.0), (id(1), 2.0), (id(2), 1.0)];
        let order = |w: f64| ids(&fuse(&semantic, &keyword, w, 10));
        // Standard scores: semantic 1.21, 0.73, −0.73, −1.21 (5, and 4's
        // floor); keyword 1.09, 0.90, −0.90, −1.09 (2, and 5's floor).
        assert_eq!(order(0.5), vec![id(3), id(1), id(4), id(2), id(5)]);
        // All weight on one leg reproduces that leg's order first; the
        // other leg's own hits follow, tied at the floor, in order of
        // appearance.
        assert_eq!(order(1.0), vec![id(1), id(2), id(3), id(5), id(4)]);
        assert_eq!(order(0.0), vec![id(3), id(4), id(1), id(2), id(5)]);
        assert_eq!(fuse(&semantic, &keyword, 0.5, 2).len(), 2);
    }

    #[test]
    fn legs_that_disagree_leave_the_heavier_legs_order() {
        // Best tens sharing two chunks (1 and 2): too few.
        let semantic: Vec<_> = (1..=10).map(|i| (id(i), 1.0 - 0.05 * i as f64)).collect();
        let mut keyword = ranked(11, 8, 10.0);
        keyword.extend([(id(1), 2.0), (id(2), 1.0)]);
        let semantic_ids: Vec<ChunkId> = semantic.iter().map(|(i, _)| *i).collect();
        let keyword_ids: Vec<ChunkId> = keyword.iter().map(|(i, _)| *i).collect();
        // Light semantic weight: keyword's order, then semantic's own hits.
        let light = ids(&fuse(&semantic, &keyword, 0.3, 20));
        assert_eq!(light[..10], keyword_ids[..]);
        assert_eq!(light[10..], semantic_ids[2..]);
        // Heavy: semantic's order, then keyword's own hits.
        let heavy = ids(&fuse(&semantic, &keyword, 0.7, 20));
        assert_eq!(heavy[..10], semantic_ids[..]);
        assert_eq!(heavy[10..], keyword_ids[..8]);
        // At an even weight neither leg is trusted less: both count.
        let even = ids(&fuse(&semantic, &keyword, 0.5, 20));
        assert_eq!(even[..3], [id(1), id(11), id(2)]);
        // A third shared chunk and the legs agree: semantic's best (1)
        // now rises above keyword chunks it was behind.
        keyword.push((id(3), 0.5));
        keyword.remove(7);
        let fused = ids(&fuse(&semantic, &keyword, 0.3, 20));
        let at = |order: &[ChunkId]| order.iter().position(|c| *c == id(1)).unwrap();
        let keyword_ids: Vec<ChunkId> = keyword.iter().map(|(i, _)| *i).collect();
        assert!(at(&fused) < at(&keyword_ids), "{fused:?}");
    }

    #[test]
    fn an_uninformative_leg_leaves_the_other_legs_order() {
        // Every chunk equally close in meaning: the words decide, at any weight.
        let flat = vec![(id(1), 0.3), (id(2), 0.3), (id(3), 0.3), (id(4), 0.3)];
        let keyword = vec![(id(4), 9.0), (id(2), 5.0), (id(3), 4.0), (id(1), 1.0)];
        for w in [0.2, 0.5, 0.9] {
            assert_eq!(
                ids(&fuse(&flat, &keyword, w, 10)),
                vec![id(4), id(2), id(3), id(1)]
            );
        }
        // A leg that found nothing: the other's order and scores alone,
        // at any weight.
        let semantic = vec![(id(7), 0.9), (id(8), 0.5), (id(9), 0.4)];
        let alone = fuse(&semantic, &[], 0.2, 5);
        assert_eq!(ids(&alone), vec![id(7), id(8), id(9)]);
        assert_eq!(alone, fuse(&semantic, &[], 1.0, 5));
        assert!((alone[0].1 - 1.3887).abs() < 1e-4, "{alone:?}");
        assert_eq!(
            ids(&fuse(&[], &keyword, 0.8, 5)),
            ids(&fuse(&flat, &keyword, 0.0, 5))
        );
        // A one-element list marks its chunk (1), not NaN.
        assert_eq!(fuse(&[(id(7), 0.3)], &[], 0.5, 5), vec![(id(7), 1.0)]);
    }

    #[test]
    fn ties_keep_the_order_of_first_appearance() {
        // 300 chunks, all tied: the semantic list's order, every time,
        // whatever order a hash map would hold them in.
        let semantic: Vec<_> = (0..300u128).map(|i| (id(i * 7919 % 1000), 0.5)).collect();
        let keyword: Vec<_> = semantic.iter().rev().map(|(i, _)| (*i, 3.0)).collect();
        let expected: Vec<ChunkId> = semantic.iter().map(|(i, _)| *i).collect();
        for _ in 0..20 {
            assert_eq!(ids(&fuse(&semantic, &keyword, 0.5, 300)), expected);
        }
    }

    #[test]
    fn candidate_depth_is_bounded() {
        assert_eq!(candidates(1), 50);
        assert_eq!(candidates(20), 100);
        assert_eq!(candidates(50), 250);
    }
}
