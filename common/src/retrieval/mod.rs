//! Retrieval: the chunks of one workspace that best answer a question,
//! by meaning (pgvector cosine distance), by words (BM25 over Postgres
//! full-text vectors), or both fused.
//!
//! - **Semantic.** A workspace with at most
//!   [`QueryConfig::exact_search_max_chunks`] chunks is searched exactly:
//!   every vector compared, so small tenants get full recall (a shared HNSW
//!   index post-filters by workspace and would return too few rows for
//!   them). Larger workspaces go through the HNSW index with pgvector's
//!   iterative scan (`relaxed_order`), which keeps scanning until enough
//!   rows of this workspace (and filter) are found; results are re-sorted
//!   by exact distance.
//! - **Keyword.** Okapi BM25 computed in SQL: the question's lexemes
//!   (English stemming, stop words dropped) OR-ed against the chunks'
//!   `tsv`; document frequencies and average chunk length from the
//!   workspace itself, term frequencies from `term_counts`. Unfiltered
//!   searches run in the `search_keyword` database function, which may use
//!   the GIN index (RLS forbids it to ordinary queries, `@@` not being
//!   leakproof) and checks the workspace itself; filtered ones run the same
//!   scoring under RLS. `ts_rank` ignores document frequency and scores
//!   clearly worse.
//! - **Hybrid.** Each leg's candidate scores are min-max normalised and
//!   combined with a weight on the semantic leg ([`Search::semantic_weight`],
//!   from `HYBRID_SEMANTIC_WEIGHT` or the embedder's default). Measured on
//!   SciFact (train): with the local hashed embedder, whose semantic leg is
//!   weak (nDCG@10 0.46 against BM25's 0.70), reciprocal rank fusion gave
//!   0.60, below keyword alone, and weight 0.2 gives 0.70; with a real small
//!   model (e5-small) weight 0.5 and RRF tie (0.855/0.857) above both legs.
//!   One weight per embedder keeps hybrid at or above its best leg.
//!
//! Every statement filters on `workspace_id`, inside a transaction whose
//! RLS context is the same workspace.

pub mod filters;

use std::collections::HashMap;

use pgvector::Vector;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder, Transaction};

use crate::config::QueryConfig;
use crate::error::{ApiError, Result};
use crate::ids::{ChunkId, DocumentId, WorkspaceId};
pub use filters::Condition;

/// BM25 parameters (Robertson/Lucene defaults; `search_keyword` in the
/// database uses the same).
pub const BM25_K1: f64 = 1.2;
pub const BM25_B: f64 = 0.75;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Hybrid,
    Semantic,
    Keyword,
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
            Some(value) => Some(filters::parse(value)?),
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

/// The best `top_k` chunks for `search`, best first.
pub async fn search(
    tx: &mut Transaction<'static, Postgres>,
    config: &QueryConfig,
    dimensions: usize,
    search: &Search<'_>,
) -> Result<Vec<Hit>> {
    let depth = match search.mode {
        Mode::Hybrid => candidates(search.top_k),
        _ => search.top_k as i64,
    };
    let semantic = match (search.mode, search.embedding) {
        (Mode::Keyword, _) => Vec::new(),
        (_, Some(embedding)) => semantic(tx, config, dimensions, search, embedding, depth).await?,
        (_, None) => {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "semantic search without an embedding"
            )));
        }
    };
    let keyword = match search.mode {
        Mode::Semantic => Vec::new(),
        _ => keyword(tx, search, depth).await?,
    };
    let ranked = match search.mode {
        Mode::Semantic => semantic,
        Mode::Keyword => keyword,
        Mode::Hybrid => fuse(&semantic, &keyword, search.semantic_weight, search.top_k),
    };
    details(tx, search.workspace, ranked).await
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

/// Chunks of the workspace, up to `limit`: how many there are, capped.
const COUNT_SQL: &str =
    "SELECT count(*) FROM (SELECT 1 FROM chunks WHERE workspace_id = $1 LIMIT $2) s";

async fn semantic(
    tx: &mut Transaction<'static, Postgres>,
    config: &QueryConfig,
    dimensions: usize,
    search: &Search<'_>,
    embedding: &[f32],
    limit: i64,
) -> Result<Vec<(ChunkId, f64)>> {
    let threshold = i64::from(config.exact_search_max_chunks);
    let (count,): (i64,) = sqlx::query_as(COUNT_SQL)
        .bind(search.workspace)
        .bind(threshold + 1)
        .fetch_one(&mut **tx)
        .await?;
    let vector = Vector::from(embedding.to_vec());
    let exact = count <= threshold;
    if !exact {
        // Iterative index scans keep going until `limit` rows pass the
        // workspace and filter conditions (up to hnsw.max_scan_tuples).
        sqlx::query(
            "SELECT set_config('hnsw.ef_search', $1, true), \
                    set_config('hnsw.iterative_scan', 'relaxed_order', true)",
        )
        .bind(
            config
                .hnsw_ef_search
                .max(limit.min(1000) as u32)
                .to_string(),
        )
        .execute(&mut **tx)
        .await?;
    }
    // The HNSW index is on `embedding::vector(N)` for rows whose length is
    // N (see db::ensure_vector_index): the index path must use exactly that
    // expression and predicate; the exact path uses the bare column so the
    // planner cannot pick the index.
    let distance = if exact {
        "c.embedding <=> ".to_owned()
    } else {
        format!("c.embedding::vector({dimensions}) <=> ")
    };
    let mut b = QueryBuilder::<Postgres>::new("SELECT id, distance FROM (SELECT c.id, ");
    b.push(&distance);
    b.push_bind(vector.clone());
    b.push(" AS distance FROM chunks c WHERE c.workspace_id = ");
    b.push_bind(search.workspace);
    b.push(format!(" AND vector_dims(c.embedding) = {dimensions}"));
    search.filters.push_sql(&mut b);
    b.push(" ORDER BY ");
    b.push(&distance);
    b.push_bind(vector);
    b.push(" LIMIT ");
    b.push_bind(limit);
    b.push(") s ORDER BY distance, id");
    let rows: Vec<(ChunkId, f64)> = b.build_query_as().fetch_all(&mut **tx).await?;
    Ok(rows.into_iter().map(|(id, d)| (id, 1.0 - d)).collect())
}

/// BM25 over the workspace's chunks with filters, under RLS: the same
/// scoring as the `search_keyword` database function (migration
/// 20261123000005), which serves unfiltered searches through the
/// full-text index; metadata filters are SQL built per request, so
/// filtered searches read the workspace's chunks here instead.
fn filtered_keyword_sql(builder: &mut QueryBuilder<Postgres>, search: &Search<'_>, limit: i64) {
    builder.push(
        "WITH terms AS (
            SELECT array_agg(l) AS lexemes,
                   string_agg('''' || replace(replace(l, '\\', '\\\\'), '''', '''''') || '''', ' | ')::tsquery AS query
            FROM unnest(tsvector_to_array(to_tsvector('english', ",
    );
    builder.push_bind(search.text.to_owned());
    builder.push(
        "))) AS l
        ), matched AS MATERIALIZED (
            SELECT c.id, c.document_id, c.workspace_id, c.token_count, c.term_counts
            FROM chunks c, terms
            WHERE c.workspace_id = ",
    );
    builder.push_bind(search.workspace);
    builder.push(
        " AND c.tsv @@ terms.query
        ), stats AS (
            SELECT count(*)::float8 AS n, greatest(avg(token_count), 1)::float8 AS avgdl
            FROM chunks WHERE workspace_id = ",
    );
    builder.push_bind(search.workspace);
    builder.push(format!(
        "), df AS (
            SELECT l AS lexeme, count(*)::float8 AS df
            FROM matched m, terms, unnest(terms.lexemes) AS l
            WHERE m.term_counts ? l
            GROUP BY l
        )
        SELECT c.id, sum(ln(1 + (s.n - df.df + 0.5) / (df.df + 0.5))
                         * tf.tf * {k1p1} / (tf.tf + {k1} * (1 - {b} + {b} * c.token_count / s.avgdl)))::float8 AS score
        FROM matched c
        CROSS JOIN stats s
        JOIN df ON c.term_counts ? df.lexeme
        CROSS JOIN LATERAL (SELECT (c.term_counts ->> df.lexeme)::float8 AS tf) tf
        WHERE true",
        k1p1 = BM25_K1 + 1.0,
        k1 = BM25_K1,
        b = BM25_B,
    ));
    search.filters.push_sql(builder);
    builder.push(" GROUP BY c.id ORDER BY score DESC, c.id LIMIT ");
    builder.push_bind(limit);
}

async fn keyword(
    tx: &mut Transaction<'static, Postgres>,
    search: &Search<'_>,
    limit: i64,
) -> Result<Vec<(ChunkId, f64)>> {
    if search.filters.document_ids.is_empty() && search.filters.metadata.is_none() {
        return Ok(
            sqlx::query_as("SELECT chunk_id, score FROM search_keyword($1, $2, $3)")
                .bind(search.workspace)
                .bind(search.text)
                .bind(limit as i32)
                .fetch_all(&mut **tx)
                .await?,
        );
    }
    let mut b = QueryBuilder::<Postgres>::new("");
    filtered_keyword_sql(&mut b, search, limit);
    Ok(b.build_query_as().fetch_all(&mut **tx).await?)
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
    let rows: Vec<Hit> = sqlx::query_as(
        "SELECT c.id AS chunk_id, c.document_id, d.title, c.ordinal, c.page, c.heading,
                c.content, c.token_count
         FROM chunks c JOIN documents d ON d.workspace_id = c.workspace_id AND d.id = c.document_id
         WHERE c.workspace_id = $1 AND c.id = ANY($2)",
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
