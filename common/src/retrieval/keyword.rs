//! The keyword leg: Okapi BM25 over the chunks' full-text terms.
//!
//! The `keyword_terms` database function gives the question's lexemes
//! (English stemming, stop words dropped) and BM25's workspace statistics;
//! `search_keyword` reads the chunks matching some of them, with the
//! counts of all of them, through the `(workspace_id, tsv)` GIN index (RLS
//! forbids ordinary queries that index, `@@` not being leakproof; both
//! functions check the workspace themselves, migrations 20261123000005 and
//! 20261123000011). Scores are computed here; filters are applied by
//! document afterwards. `ts_rank` ignores document frequency and scores
//! clearly worse.
//!
//! **Reading less (MaxScore).** Reading a match costs a heap visit and a
//! term-count lookup, and a question of common words matches a fifth of a
//! large workspace. For a workspace the `ingest-indexer` has counted
//! lexemes for (the flagged ones, [`super::indexes`]), document
//! frequencies come from those counts, so a lexeme's upper bound
//! (`idf · (k1 + 1)`, what any count of it can add to a score) is known
//! before reading. The rarest lexemes' matches are read first, until they
//! are at least `limit`; the `limit`-th best score among them is a floor
//! the final `limit` all reach. A chunk holding only lexemes whose bounds
//! sum below that floor cannot rank, so the commonest lexemes, while their
//! bounds sum below it, are never read; the others are. The ranking is the
//! one a read of every match gives, with the same frequencies.
//! Lexemes the indexer has not counted (new since) are always read, and
//! counted over their matches, as every lexeme of a smaller workspace is.

use std::collections::HashSet;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::{Filters, Search, filters};
use crate::error::Result;
use crate::ids::{ChunkId, DocumentId, WorkspaceId};

/// BM25 parameters (Robertson/Lucene defaults).
pub const BM25_K1: f64 = 1.2;
pub const BM25_B: f64 = 0.75;

/// Most matches one read returns. A question matching more chunks than
/// this (of one workspace) is scored over the first ones, and a warning is
/// logged.
const MAX_MATCHES: i32 = 100_000;

/// A chunk matching at least one of the lexemes read, as `search_keyword`
/// returns it.
#[derive(Debug, Clone)]
pub struct KeywordMatch {
    pub chunk_id: ChunkId,
    pub document_id: DocumentId,
    /// The chunk's length in tokens.
    pub token_count: i32,
    /// How often each of the question's lexemes occurs in the chunk
    /// (`None`: not at all); the question's lexeme order in every match.
    pub tf: Vec<Option<i32>>,
}

/// BM25 scoring for one question in one workspace.
#[derive(Debug, Clone)]
pub struct Bm25 {
    idf: Vec<f64>,
    avgdl: f64,
}

impl Bm25 {
    /// `n` chunks of mean length `avgdl`, and each lexeme's document
    /// frequency (capped at `n`).
    pub fn new(n: i64, avgdl: f64, df: impl IntoIterator<Item = i64>) -> Self {
        let n = n.max(0) as f64;
        let idf = df
            .into_iter()
            .map(|d| {
                let d = (d.max(0) as f64).min(n);
                (1.0 + (n - d + 0.5) / (d + 0.5)).ln()
            })
            .collect();
        Self {
            idf,
            avgdl: avgdl.max(1.0),
        }
    }

    /// What a match's score is.
    pub fn score(&self, m: &KeywordMatch) -> f64 {
        let norm = BM25_K1 * (1.0 - BM25_B + BM25_B * f64::from(m.token_count) / self.avgdl);
        m.tf.iter()
            .zip(&self.idf)
            .filter_map(|(tf, idf)| {
                tf.map(|tf| {
                    let tf = f64::from(tf);
                    idf * tf * (BM25_K1 + 1.0) / (tf + norm)
                })
            })
            .sum()
    }

    /// More than lexeme `i` adds to any chunk's score.
    pub fn bound(&self, i: usize) -> f64 {
        self.idf[i] * (BM25_K1 + 1.0)
    }

    /// The best `limit` of the `matches` that `keep` accepts, best first;
    /// ties by chunk id.
    pub fn top(
        &self,
        matches: &[KeywordMatch],
        keep: impl Fn(&KeywordMatch) -> bool,
        limit: usize,
    ) -> Vec<(ChunkId, f64)> {
        let mut scored: Vec<(ChunkId, f64)> = matches
            .iter()
            .filter(|m| keep(m))
            .map(|m| (m.chunk_id, self.score(m)))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.0.cmp(&b.0.0)));
        scored.truncate(limit);
        scored
    }
}

/// Document frequencies counted over `matches` (every match of each
/// lexeme), for `lexemes` of them.
fn counted_df(matches: &[KeywordMatch], lexemes: usize) -> Vec<i64> {
    let mut df = vec![0_i64; lexemes];
    for m in matches {
        for (d, tf) in df.iter_mut().zip(&m.tf) {
            *d += i64::from(tf.is_some());
        }
    }
    df
}

/// The lexemes to read first, in a workspace with stored counts: every
/// one without a count, and the rarest counted ones until their counts add
/// up to `limit`. `None`: nothing is known, read them all at once.
fn first_read(stored: &[Option<i64>], limit: usize) -> Option<Vec<usize>> {
    if stored.iter().all(Option::is_none) {
        return None;
    }
    let mut first: Vec<usize> = (0..stored.len()).filter(|&i| stored[i].is_none()).collect();
    let mut counted: Vec<(i64, usize)> = stored
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|d| (d, i)))
        .collect();
    counted.sort_unstable();
    let mut total = 0_i64;
    for (d, i) in counted {
        if total >= limit as i64 {
            break;
        }
        first.push(i);
        total += d;
    }
    Some(first)
}

/// The lexemes still to read once the first ones are read and the
/// `limit`-th best score among their kept matches is `floor`: all of
/// `unread` but the commonest, taken while their bounds sum below `floor`
/// (a chunk holding only those cannot reach it).
fn second_read(scorer: &Bm25, unread: &[usize], floor: Option<f64>) -> Vec<usize> {
    let Some(floor) = floor else {
        return unread.to_vec();
    };
    let mut by_bound = unread.to_vec();
    by_bound.sort_by(|&a, &b| scorer.bound(a).total_cmp(&scorer.bound(b)));
    let mut skipped = 0.0;
    let mut rest = Vec::new();
    for i in by_bound {
        if rest.is_empty() && skipped + scorer.bound(i) < floor {
            skipped += scorer.bound(i);
        } else {
            rest.push(i);
        }
    }
    rest
}

/// The `limit`-th best score of `matches` that `keep` accepts, if there
/// are that many.
fn floor(
    scorer: &Bm25,
    matches: &[KeywordMatch],
    keep: &impl Fn(&KeywordMatch) -> bool,
    limit: usize,
) -> Option<f64> {
    if limit == 0 {
        return None;
    }
    let mut scores: Vec<f64> = matches
        .iter()
        .filter(|m| keep(m))
        .map(|m| scorer.score(m))
        .collect();
    if scores.len() < limit {
        return None;
    }
    let (_, nth, _) = scores.select_nth_unstable_by(limit - 1, |a, b| b.total_cmp(a));
    Some(*nth)
}

/// A keyword ranking and what it took.
#[derive(Debug, Clone, Default)]
pub struct Ranking {
    /// Best first.
    pub ranked: Vec<(ChunkId, f64)>,
    /// Matches read from the database (a chunk read twice counts twice).
    pub read: usize,
}

/// The best `limit` chunks of the search's workspace for its words.
pub async fn rank(conn: &mut PgConnection, search: &Search<'_>, limit: usize) -> Result<Ranking> {
    if limit == 0 {
        return Ok(Ranking::default());
    }
    let rows = sqlx::query_as::<_, (String, Option<i32>, i64, f64)>(
        "SELECT lexeme, chunks, n, avgdl FROM keyword_terms($1, $2)",
    )
    .bind(search.workspace)
    .bind(search.text)
    .fetch_all(&mut *conn)
    .await?;
    let Some(&(_, _, n, avgdl)) = rows.first() else {
        return Ok(Ranking::default());
    };
    let lexemes: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let stored: Vec<Option<i64>> = rows.iter().map(|r| r.1.map(i64::from)).collect();
    let mut gate = Gate::new(search.workspace, search.filters);

    let Some(first) = first_read(&stored, limit) else {
        // Nothing counted: every match, frequencies over them.
        let matches = read(conn, search.workspace, &lexemes, &lexemes).await?;
        let scorer = Bm25::new(n, avgdl, counted_df(&matches, lexemes.len()));
        gate.admit(conn, &matches).await?;
        let ranked = scorer.top(&matches, |m| gate.keeps(m), limit);
        return Ok(Ranking {
            ranked,
            read: matches.len(),
        });
    };
    let named = |of: &[usize]| of.iter().map(|&i| lexemes[i]).collect::<Vec<_>>();
    let mut matches = read(conn, search.workspace, &lexemes, &named(&first)).await?;
    let mut read_count = matches.len();
    // Uncounted lexemes are all in the first read, with all their matches.
    let counted = counted_df(&matches, lexemes.len());
    let df = stored.iter().zip(counted).map(|(s, c)| s.unwrap_or(c));
    let scorer = Bm25::new(n, avgdl, df);
    gate.admit(conn, &matches).await?;
    let unread: Vec<usize> = (0..lexemes.len()).filter(|i| !first.contains(i)).collect();
    let rest = if unread.is_empty() {
        unread
    } else {
        let at_least = floor(&scorer, &matches, &|m| gate.keeps(m), limit);
        second_read(&scorer, &unread, at_least)
    };
    if !rest.is_empty() {
        let seen: HashSet<ChunkId> = matches.iter().map(|m| m.chunk_id).collect();
        let more = read(conn, search.workspace, &lexemes, &named(&rest)).await?;
        read_count += more.len();
        let new: Vec<KeywordMatch> = more
            .into_iter()
            .filter(|m| !seen.contains(&m.chunk_id))
            .collect();
        gate.admit(conn, &new).await?;
        matches.extend(new);
    }
    Ok(Ranking {
        ranked: scorer.top(&matches, |m| gate.keeps(m), limit),
        read: read_count,
    })
}

/// The matches of the `matching` lexemes, with the counts of all `lexemes`.
async fn read(
    conn: &mut PgConnection,
    workspace: WorkspaceId,
    lexemes: &[&str],
    matching: &[&str],
) -> Result<Vec<KeywordMatch>> {
    let rows = sqlx::query(
        "SELECT chunk_id, document_id, token_count, tf FROM search_keyword($1, $2, $3, $4)",
    )
    .bind(workspace)
    .bind(lexemes)
    .bind(matching)
    .bind(MAX_MATCHES)
    .fetch_all(&mut *conn)
    .await?;
    if rows.len() >= MAX_MATCHES as usize {
        tracing::warn!(
            workspace = %workspace.0,
            matches = rows.len(),
            "keyword search read its most matches; scores are over those only"
        );
    }
    Ok(rows
        .iter()
        .map(keyword_match)
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// A row of `search_keyword`. The term counts come as text (hstore values)
/// and are parsed here: casting them to integers in the function cost 15%
/// of its time.
fn keyword_match(row: &PgRow) -> std::result::Result<KeywordMatch, sqlx::Error> {
    let tf = row
        .try_get::<Vec<Option<String>>, _>("tf")?
        .into_iter()
        .map(|count| {
            count
                .map(|c| c.parse::<i32>())
                .transpose()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(KeywordMatch {
        chunk_id: row.try_get("chunk_id")?,
        document_id: row.try_get("document_id")?,
        token_count: row.try_get("token_count")?,
        tf,
    })
}

/// Which matches the search's filters let through, by document.
struct Gate<'a> {
    workspace: WorkspaceId,
    filters: &'a Filters,
    /// The documents seen so far that pass (when there are filters).
    allowed: HashSet<DocumentId>,
    /// The documents seen so far, passing or not (asked about once).
    seen: HashSet<DocumentId>,
}

impl<'a> Gate<'a> {
    fn new(workspace: WorkspaceId, filters: &'a Filters) -> Self {
        Self {
            workspace,
            filters,
            allowed: HashSet::new(),
            seen: HashSet::new(),
        }
    }

    fn open(&self) -> bool {
        self.filters.document_ids.is_empty() && self.filters.metadata.is_none()
    }

    fn keeps(&self, m: &KeywordMatch) -> bool {
        self.open() || self.allowed.contains(&m.document_id)
    }

    /// Learns which documents of `matches` pass.
    async fn admit(&mut self, conn: &mut PgConnection, matches: &[KeywordMatch]) -> Result<()> {
        if self.open() {
            return Ok(());
        }
        let mut documents: HashSet<DocumentId> = matches
            .iter()
            .map(|m| m.document_id)
            .filter(|d| self.seen.insert(*d))
            .collect();
        if !self.filters.document_ids.is_empty() {
            let named: HashSet<DocumentId> = self.filters.document_ids.iter().copied().collect();
            documents.retain(|d| named.contains(d));
        }
        if let Some(condition) = &self.filters.metadata {
            if documents.is_empty() {
                return Ok(());
            }
            let mut b = QueryBuilder::<Postgres>::new(
                "SELECT d.id FROM documents d WHERE d.workspace_id = ",
            );
            b.push_bind(self.workspace);
            b.push(" AND d.id = ANY(");
            b.push_bind(documents.iter().map(|d| d.0).collect::<Vec<_>>());
            b.push(") AND ");
            filters::push_sql(&mut b, "d.metadata", condition);
            let rows: Vec<(DocumentId,)> = b.build_query_as().fetch_all(&mut *conn).await?;
            self.allowed.extend(rows.into_iter().map(|(d,)| d));
        } else {
            self.allowed.extend(documents);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> ChunkId {
        ChunkId(uuid::Uuid::from_u128(n))
    }

    fn m(n: u128, dl: i32, tf: Vec<Option<i32>>) -> KeywordMatch {
        KeywordMatch {
            chunk_id: id(n),
            document_id: DocumentId(uuid::Uuid::from_u128(n)),
            token_count: dl,
            tf,
        }
    }

    #[test]
    fn bm25_scores_by_document_frequency_and_length() {
        let matches = vec![
            m(1, 10, vec![Some(1), None]),
            m(2, 20, vec![Some(2), Some(1)]),
        ];
        // n 4, avgdl 10, counted frequencies 2 and 1.
        let scorer = Bm25::new(4, 10.0, counted_df(&matches, 2));
        // idf: ln(1 + (4 - 2 + 0.5) / 2.5) = ln 2 and ln(1 + 3.5 / 1.5).
        let (idf0, idf1) = (2f64.ln(), (1.0 + 3.5 / 1.5f64).ln());
        // Chunk 1 has the mean length: norm 1.2; chunk 2 twice it: 1.2 · 1.75.
        let one = idf0 * 2.2 / 2.2;
        let two = idf0 * 2.0 * 2.2 / (2.0 + 2.1) + idf1 * 2.2 / (1.0 + 2.1);
        let ranked = scorer.top(&matches, |_| true, 10);
        assert_eq!(
            ranked.iter().map(|r| r.0).collect::<Vec<_>>(),
            [id(2), id(1)]
        );
        assert!((ranked[0].1 - two).abs() < 1e-12 && (ranked[1].1 - one).abs() < 1e-12);
        // A filter drops chunk 2 but not its share in the frequencies.
        let kept = scorer.top(&matches, |m| m.chunk_id == id(1), 10);
        assert_eq!(kept.len(), 1);
        assert!((kept[0].1 - one).abs() < 1e-12);
        assert_eq!(scorer.top(&matches, |_| true, 1).len(), 1);
        assert!(scorer.top(&[], |_| true, 5).is_empty());
        // A stored frequency above the chunk count (chunks deleted since
        // it was counted) still gives a positive idf.
        assert!(Bm25::new(4, 10.0, [9]).bound(0) > 0.0);
    }

    #[test]
    fn no_count_reaches_a_lexemes_bound() {
        let scorer = Bm25::new(100, 50.0, [3, 60]);
        for tf in [1, 5, 50, 255] {
            for dl in [1, 50, 500] {
                let only = |i: usize| {
                    let mut tf_of = vec![None, None];
                    tf_of[i] = Some(tf);
                    m(1, dl, tf_of)
                };
                assert!(scorer.score(&only(0)) < scorer.bound(0));
                assert!(scorer.score(&only(1)) < scorer.bound(1));
            }
        }
    }

    #[test]
    fn the_rarest_lexemes_are_read_first_and_uncounted_ones_always() {
        // Nothing counted: one read of everything.
        assert_eq!(first_read(&[None, None], 10), None);
        // Rarest first until their counts reach the limit.
        assert_eq!(
            first_read(&[Some(500), Some(4), Some(30), Some(9)], 10),
            Some(vec![1, 3])
        );
        assert_eq!(
            first_read(&[Some(500), Some(4), None, Some(9)], 50),
            Some(vec![2, 1, 3, 0])
        );
    }

    #[test]
    fn only_lexemes_whose_bounds_sum_below_the_floor_go_unread() {
        // Bounds rise with rarity: lexeme 0 the commonest.
        let scorer = Bm25::new(1000, 50.0, [800, 400, 100]);
        let (b0, b1, b2) = (scorer.bound(0), scorer.bound(1), scorer.bound(2));
        assert!(b0 < b1 && b1 < b2);
        let unread = [2, 0, 1];
        assert_eq!(second_read(&scorer, &unread, None), vec![2, 0, 1]);
        assert_eq!(second_read(&scorer, &unread, Some(b0)), vec![0, 1, 2]);
        assert_eq!(second_read(&scorer, &unread, Some(b0 + 1e-9)), vec![1, 2]);
        assert_eq!(second_read(&scorer, &unread, Some(b0 + b1 + 1e-9)), vec![2]);
        assert!(second_read(&scorer, &unread, Some(b0 + b1 + b2 + 1.0)).is_empty());
    }

    #[test]
    fn the_floor_is_the_limits_best_kept_score() {
        let matches = vec![
            m(1, 10, vec![Some(1)]),
            m(2, 10, vec![Some(3)]),
            m(3, 10, vec![Some(2)]),
        ];
        let scorer = Bm25::new(10, 10.0, [3]);
        let s = |i: usize| scorer.score(&matches[i]);
        assert_eq!(floor(&scorer, &matches, &|_| true, 2), Some(s(2)));
        assert_eq!(floor(&scorer, &matches, &|_| true, 3), Some(s(0)));
        assert_eq!(floor(&scorer, &matches, &|_| true, 4), None);
        let not_best = |x: &KeywordMatch| x.chunk_id != id(2);
        assert_eq!(floor(&scorer, &matches, &not_best, 1), Some(s(2)));
    }
}
