-- Keyword search in a large workspace reads only the matches that can
-- rank (MaxScore), from per-workspace document frequencies.
--
-- BM25 needs, for every chunk matching a question, the counts of the
-- question's lexemes in it: a heap visit and a term_counts lookup per
-- match (about 2.5 us). A question of common words matches a fifth of a
-- large workspace (5,436 of 26,718 chunks in the retrieval bench: 15 ms).
-- Yet a chunk that matches only the commonest lexemes cannot rank: its
-- score is below the sum of those lexemes' upper bounds (idf * (k1 + 1)).
--
-- 1. `workspace_terms` holds, for every workspace flagged
--    `vector_indexed` (above the exact-search size), how many chunks hold
--    each lexeme. The ingest-indexer rebuilds it when the workspace's
--    chunk count has moved by a tenth since (`search_terms_chunks`: the
--    count it was built at), like BM25's N and avgdl (migration 9).
-- 2. keyword_terms() returns a question's lexemes with those frequencies
--    and the workspace's N and avgdl; search_keyword() now reads the
--    matches of the lexemes it is given (p_match), with the counts of all
--    the question's (p_lexemes). The caller (common::retrieval::keyword)
--    reads the rarest lexemes' matches first, takes the score a match must
--    beat from them, then reads only the lexemes whose matches can beat it.
CREATE TABLE workspace_terms (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    lexeme text NOT NULL,
    chunks integer NOT NULL CHECK (chunks > 0),
    PRIMARY KEY (workspace_id, lexeme)
);
ALTER TABLE workspace_terms ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspace_terms FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_terms_tenant ON workspace_terms
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());
-- Read inside keyword_terms() under the same tenant policy.
GRANT SELECT ON workspace_terms TO ragway_search;

ALTER TABLE workspaces
    ADD COLUMN search_terms_chunks bigint CHECK (search_terms_chunks >= 0);
GRANT SELECT (search_terms_chunks) ON workspaces TO ragway_search;

-- The lexemes of `p_text` (English stemming, stop words dropped), each
-- with the number of the workspace's chunks holding it when the indexer
-- last counted (`chunks`; NULL when it has not, or the lexeme was in none
-- then), and the workspace's chunk count `n` and mean token count
-- `avgdl`. Nothing unless `p_workspace` is the transaction's RLS
-- workspace.
CREATE FUNCTION keyword_terms(p_workspace uuid, p_text text)
RETURNS TABLE (lexeme text, chunks integer, n bigint, avgdl double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    lexemes text[] := tsvector_to_array(to_tsvector('english', p_text));
    chunks_n bigint;
    mean_length float8;
    counted boolean;
BEGIN
    IF p_workspace IS DISTINCT FROM app_workspace_id() OR cardinality(lexemes) = 0 THEN
        RETURN;
    END IF;
    SELECT w.search_chunks, w.search_mean_tokens, w.search_terms_chunks IS NOT NULL
    INTO chunks_n, mean_length, counted
    FROM workspaces w WHERE w.id = p_workspace AND w.vector_indexed;
    IF chunks_n IS NULL OR mean_length IS NULL THEN
        -- An index-only scan of chunks_workspace_tokens_idx.
        SELECT count(*), greatest(avg(c.token_count), 1)::float8 INTO chunks_n, mean_length
        FROM chunks c WHERE c.workspace_id = p_workspace;
        counted := false;
    END IF;
    -- One primary-key lookup per lexeme (as a join, the plan cached for
    -- the function read the whole table).
    RETURN QUERY
        SELECT u.l, CASE WHEN counted THEN
                   (SELECT t.chunks FROM workspace_terms t
                    WHERE t.workspace_id = p_workspace AND t.lexeme = u.l) END,
               chunks_n, mean_length
        FROM unnest(lexemes) WITH ORDINALITY AS u(l, i)
        ORDER BY u.i;
END
$$;

-- The chunks of `p_workspace` holding any of `p_match`, each with `tf[i]`,
-- the count of `p_lexemes[i]` in it (as text, NULL when absent), at most
-- `p_limit`. Nothing unless `p_workspace` is the transaction's RLS
-- workspace. As in migration 9 otherwise: dynamic SQL planned for its own
-- lexemes, through the GIN bitmap.
DROP FUNCTION search_keyword(uuid, text, integer);
CREATE FUNCTION search_keyword(p_workspace uuid, p_lexemes text[], p_match text[],
                               p_limit integer)
RETURNS TABLE (chunk_id uuid, document_id uuid, token_count integer, tf text[])
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
SET enable_seqscan = off
SET enable_indexscan = on
SET cpu_operator_cost = 0.0025
AS $$
DECLARE
    matches tsquery;
BEGIN
    IF p_workspace IS DISTINCT FROM app_workspace_id() OR coalesce(cardinality(p_match), 0) = 0 THEN
        RETURN;
    END IF;
    matches := (SELECT string_agg('''' || replace(replace(l, '\', '\\'), '''', '''''') || '''', ' | ')
                FROM unnest(p_match) AS l)::tsquery;
    PERFORM set_config('enable_indexscan', 'off', true),
            set_config('cpu_operator_cost', '0.05', true);
    RETURN QUERY EXECUTE
        'SELECT c.id, c.document_id, c.token_count, c.term_counts -> $3
         FROM chunks c WHERE c.workspace_id = $1 AND c.tsv @@ $2 LIMIT $4'
    USING p_workspace, matches, p_lexemes, p_limit;
END
$$;

REVOKE ALL ON FUNCTION keyword_terms(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION search_keyword(uuid, text[], text[], integer) FROM PUBLIC;
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION keyword_terms(uuid, text) OWNER TO ragway_search;
ALTER FUNCTION search_keyword(uuid, text[], text[], integer) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION keyword_terms(uuid, text) TO %I', app);
    EXECUTE format('GRANT EXECUTE ON FUNCTION search_keyword(uuid, text[], text[], integer) TO %I', app);
    RESET ROLE;
END
$$;
