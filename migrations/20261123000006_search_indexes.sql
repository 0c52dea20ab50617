-- Faster keyword search, and what dedicated vector indexes need.
--
-- 1. The full-text index leads with the workspace (btree_gin: trusted, on
--    RDS). A GIN index on `tsv` alone returns every tenant's matches for a
--    term, and Postgres then intersects them with the workspace (a
--    200,000-chunk table: 27,857 entries read for a five-word question to
--    keep the 19 of a 120-chunk workspace, 5.6 ms; 0.7 ms with the
--    workspace in the index), and the cost grew with the whole table.
-- 2. search_keyword() now returns the matches with their term counts and
--    the workspace's chunk count and mean length; BM25 is scored in Rust
--    (common::retrieval::bm25), once, for filtered and unfiltered searches
--    alike. Aggregating in SQL cost three times the index and heap work.
--    The planner prices `tsv @@ query` as a cheap filter, not the
--    detoasting it costs per row, and so prefers reading the whole
--    workspace (by a scan or the btree) once a question matches much of
--    it: 40 ms for 3,117 matches of a 6,182-chunk workspace, against 4 ms
--    through the GIN index. The function plans its match query with
--    sequential and plain index scans off and operators priced 20 times
--    higher, so the GIN bitmap wins.
-- 3. workspace_chunk_counts() lets the index maintainer find the workspaces
--    big enough for a vector index of their own (see
--    common::retrieval::indexes) without reading any tenant's rows.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX chunks_workspace_tsv_idx ON chunks USING gin (workspace_id, tsv);
DROP INDEX chunks_tsv_idx;

DROP FUNCTION search_keyword(uuid, text, integer);

-- The chunks of `p_workspace` matching any lexeme of `p_text` (English
-- stemming, stop words dropped), each with `tf[i]`, the count of lexeme i
-- in the chunk (NULL when absent), and the workspace's chunk count `n` and
-- mean token count `avgdl`. Nothing unless `p_workspace` is the
-- transaction's RLS workspace. At most `p_limit` matches (BM25 needs them
-- all for its document frequencies; the caller says when a page is full).
--
-- Dynamic SQL so the term lookups are written out (`ARRAY[(term_counts
-- ->> 'a')::int, ...]`): a sub-select per chunk cost 2.5 times as much.
CREATE FUNCTION search_keyword(p_workspace uuid, p_text text, p_limit integer)
RETURNS TABLE (chunk_id uuid, document_id uuid, token_count integer, tf integer[],
               n bigint, avgdl double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET enable_seqscan = off
SET enable_indexscan = on
SET cpu_operator_cost = 0.0025
AS $$
DECLARE
    lexemes text[] := tsvector_to_array(to_tsvector('english', p_text));
    matches tsquery;
    chunks_n bigint;
    mean_length float8;
BEGIN
    IF p_workspace IS DISTINCT FROM app_workspace_id() OR cardinality(lexemes) = 0 THEN
        RETURN;
    END IF;
    -- An index-only scan of chunks_workspace_tokens_idx.
    SELECT count(*), greatest(avg(c.token_count), 1)::float8 INTO chunks_n, mean_length
    FROM chunks c WHERE c.workspace_id = p_workspace;
    matches := (SELECT string_agg('''' || replace(replace(l, '\', '\\'), '''', '''''') || '''', ' | ')
                FROM unnest(lexemes) AS l)::tsquery;
    -- The GIN bitmap from here (the SET clauses above restore these on
    -- return). `term_counts || '{}'` detoasts (and decompresses) the
    -- counts once per chunk rather than once per lookup.
    PERFORM set_config('enable_indexscan', 'off', true),
            set_config('cpu_operator_cost', '0.05', true);
    RETURN QUERY EXECUTE format(
        'SELECT c.id, c.document_id, c.token_count, ARRAY[%s], $3, $4
         FROM chunks c CROSS JOIN LATERAL (SELECT c.term_counts || ''{}''::jsonb AS j OFFSET 0) x
         WHERE c.workspace_id = $1 AND c.tsv @@ $2 LIMIT $5',
        (SELECT string_agg(format('(x.j ->> %L)::integer', l), ', ') FROM unnest(lexemes) AS l))
    USING p_workspace, matches, chunks_n, mean_length, p_limit;
END
$$;
REVOKE ALL ON FUNCTION search_keyword(uuid, text, integer) FROM PUBLIC;

-- Workspaces with at least `p_min` chunks, largest first, at most
-- `p_limit`: ids and counts only. (A soft-deleted workspace keeps its
-- chunks, and so its index, until they are purged.)
CREATE FUNCTION workspace_chunk_counts(p_min integer, p_limit integer)
RETURNS TABLE (workspace_id uuid, chunks bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT c.workspace_id, count(*) FROM chunks c
    GROUP BY c.workspace_id HAVING count(*) >= p_min
    ORDER BY 2 DESC, 1 LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION workspace_chunk_counts(integer, integer) FROM PUBLIC;

-- As in the keyword_search migration: ragway_search owns both, and grants
-- the migrating (app) role EXECUTE.
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION search_keyword(uuid, text, integer) OWNER TO ragway_search;
ALTER FUNCTION workspace_chunk_counts(integer, integer) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION search_keyword(uuid, text, integer) TO %I', app);
    EXECUTE format('GRANT EXECUTE ON FUNCTION workspace_chunk_counts(integer, integer) TO %I', app);
    RESET ROLE;
END
$$;
