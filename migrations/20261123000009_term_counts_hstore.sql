-- Keyword search reads less per question: term counts as hstore (one
-- lookup call per matching chunk), and BM25's workspace statistics kept
-- for the large workspaces instead of counted per question.
--
-- 1. BM25 needs, for every chunk matching a question, how often each of
--    the question's lexemes occurs in it. As jsonb that took one `->>`
--    call per lexeme and chunk, after rebuilding each chunk's object once
--    (`|| '{}'`) so those calls did not detoast it again. hstore's
--    `h -> text[]` looks every lexeme up in one call. On SciFact's first
--    200 train questions (2,617 matches each on average, 6,182 chunks) the
--    function took 10.5 ms a question with jsonb and 8.5 ms with hstore
--    (the GIN bitmap and heap visits alone: 2.4 to 3.1 ms); returning the
--    counts as text rather than casting them, and the statistics of 2.,
--    bring it to 7.8 ms (9.8 ms before them in the same, slower, run).
--    The values are smaller (1.29 kB against 1.67 kB a chunk) and cheaper
--    to build (42 against 61 us a chunk), so ingestion gains a
--    little as well. hstore is a trusted extension (on RDS too); creating
--    it needs CREATE on the database, as btree_gin did.
CREATE EXTENSION IF NOT EXISTS hstore;

-- {lexeme => count} of a tsvector: how often each lexeme occurs (the
-- number of its positions; to_tsvector keeps up to 256). Same name as the
-- jsonb version it replaces, so the insert trigger (migration 8), which
-- calls it by name, needs no change.
DROP FUNCTION tsvector_term_counts(tsvector);
CREATE FUNCTION tsvector_term_counts(v tsvector) RETURNS hstore
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT coalesce(hstore(array_agg(lexeme), array_agg(cardinality(positions)::text)), ''::hstore)
          FROM unnest(v) $$;

-- Rewrites the table (and rebuilds its indexes) once. The column stays in
-- the row (MAIN), as migration 5 explains; one statement, so the rewrite
-- already stores it so (a new type brings its own default, EXTENDED, and
-- a rewrite under that moved half of SciFact's counts to TOAST, where each
-- lookup cost 1.5 us more).
ALTER TABLE chunks
    ALTER COLUMN term_counts TYPE hstore USING tsvector_term_counts(tsv),
    ALTER COLUMN term_counts SET STORAGE MAIN;

-- 2. BM25 needs the workspace's chunk count and mean chunk length. Counting
--    them per question reads the whole workspace's entries of
--    chunks_workspace_tokens_idx: 1 ms for 6,182 chunks, and it grows with
--    the workspace. For the workspaces above the exact-search size (the
--    flagged ones) the ingest-indexer now stores them on every run
--    (common::retrieval::indexes); at that size they move slowly, and a
--    count up to one run old changes scores by a rounding error. Smaller
--    workspaces are still counted per question.
ALTER TABLE workspaces
    ADD COLUMN search_chunks bigint CHECK (search_chunks >= 0),
    ADD COLUMN search_mean_tokens double precision CHECK (search_mean_tokens >= 1);
GRANT SELECT (search_chunks, search_mean_tokens) ON workspaces TO ragway_search;

-- As in migration 6, with the term counts in one call (`term_counts ->
-- lexemes` gives the counts in the lexemes' order, NULL where a lexeme is
-- absent; as text, which the caller parses: the cast to integer[] here
-- cost 1.8 ms of 12 for 3,736 matches) and the statistics of a flagged
-- workspace read from it. Still dynamic SQL, so every call is planned for its
-- own question (a generic plan does not know how many chunks match).
DROP FUNCTION search_keyword(uuid, text, integer);
CREATE FUNCTION search_keyword(p_workspace uuid, p_text text, p_limit integer)
RETURNS TABLE (chunk_id uuid, document_id uuid, token_count integer, tf text[],
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
    SELECT w.search_chunks, w.search_mean_tokens INTO chunks_n, mean_length
    FROM workspaces w WHERE w.id = p_workspace AND w.vector_indexed;
    IF chunks_n IS NULL OR mean_length IS NULL THEN
        -- An index-only scan of chunks_workspace_tokens_idx.
        SELECT count(*), greatest(avg(c.token_count), 1)::float8 INTO chunks_n, mean_length
        FROM chunks c WHERE c.workspace_id = p_workspace;
    END IF;
    matches := (SELECT string_agg('''' || replace(replace(l, '\', '\\'), '''', '''''') || '''', ' | ')
                FROM unnest(lexemes) AS l)::tsquery;
    -- The GIN bitmap from here (the SET clauses above restore these on
    -- return).
    PERFORM set_config('enable_indexscan', 'off', true),
            set_config('cpu_operator_cost', '0.05', true);
    RETURN QUERY EXECUTE
        'SELECT c.id, c.document_id, c.token_count, c.term_counts -> $6, $3, $4
         FROM chunks c WHERE c.workspace_id = $1 AND c.tsv @@ $2 LIMIT $5'
    USING p_workspace, matches, chunks_n, mean_length, p_limit, lexemes;
END
$$;
REVOKE ALL ON FUNCTION search_keyword(uuid, text, integer) FROM PUBLIC;
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION search_keyword(uuid, text, integer) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION search_keyword(uuid, text, integer) TO %I', app);
    RESET ROLE;
END
$$;
