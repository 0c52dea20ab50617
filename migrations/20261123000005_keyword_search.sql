-- Keyword search that can use the full-text index under row-level security.
--
-- RLS keeps every query on chunks inside the caller's workspace, but it
-- also stops Postgres from using `tsv @@ query` as an index condition: the
-- operator is not LEAKPROOF, so it may only run after the policy's
-- filter, and every chunk of the workspace is read and detoasted (420 ms
-- for a 27,000-chunk workspace, against 24 ms through the GIN index).
--
-- So keyword ranking runs in one SECURITY DEFINER function owned by a
-- NOLOGIN role that a policy exempts from the tenant filter. The function
-- enforces the tenant rule itself: it returns nothing unless its
-- workspace argument is the transaction's RLS workspace
-- (app_workspace_id(), set only after the membership check), and it reads
-- only that workspace's rows. The app role does not inherit the search
-- role (INHERIT FALSE), so the exemption applies inside the function only.
--
-- Creating the role needs CREATEROLE (the local stack grants it to the
-- app role; on RDS run the migrations as a role that has it, or create
-- ragway_search beforehand).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ragway_search') THEN
        CREATE ROLE ragway_search NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    -- Another database of the same cluster created it at the same moment.
    NULL;
END
$$;
DO $$
BEGIN
    -- SET lets the migrating role hand the function to ragway_search;
    -- no INHERIT, so the policy below never applies to the app role.
    EXECUTE format('GRANT ragway_search TO %I WITH INHERIT FALSE, SET TRUE', current_user);
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

GRANT SELECT ON chunks TO ragway_search;
CREATE POLICY chunks_keyword_search ON chunks FOR SELECT TO ragway_search USING (true);

-- Term frequencies per chunk ({lexeme: count}), for BM25 without unpacking
-- whole tsvectors at query time. Same text as `tsv`. Kept in the row
-- (MAIN, with a row target of half a page, so the embedding stays inline
-- too and content and tsv move out first): read from TOAST, the term
-- lookups of a 3,800-match search cost three times as much.
CREATE FUNCTION tsvector_term_counts(v tsvector) RETURNS jsonb
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT coalesce(jsonb_object_agg(lexeme, cardinality(positions)), '{}'::jsonb) FROM unnest(v) $$;
ALTER TABLE chunks ADD COLUMN term_counts jsonb
    GENERATED ALWAYS AS (tsvector_term_counts(to_tsvector('english', coalesce(heading, '') || ' ' || content))) STORED;
ALTER TABLE chunks ALTER COLUMN term_counts SET STORAGE MAIN;
ALTER TABLE chunks SET (toast_tuple_target = 4080);

-- Chunk count and average length per workspace (BM25's N and avgdl) from
-- the index alone.
CREATE INDEX chunks_workspace_tokens_idx ON chunks (workspace_id) INCLUDE (token_count);

-- Okapi BM25 (k1 1.2, b 0.75) over the workspace's chunks: the lexemes of
-- `p_text` (English stemming, stop words dropped) OR-ed, document
-- frequencies and average length from the workspace, term frequencies from
-- term_counts. Best `p_limit` chunks first.
CREATE FUNCTION search_keyword(p_workspace uuid, p_text text, p_limit integer)
RETURNS TABLE (chunk_id uuid, score double precision)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    WITH terms AS (
        SELECT array_agg(l) AS lexemes,
               string_agg('''' || replace(replace(l, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery AS query
        FROM unnest(tsvector_to_array(to_tsvector('english', p_text))) AS l
    ), matched AS MATERIALIZED (
        -- tf[i]: the count of lexeme i in the chunk (NULL when absent),
        -- looked up once per chunk.
        SELECT c.id, c.token_count,
               ARRAY(SELECT (x.j ->> l)::float8 FROM (SELECT c.term_counts AS j) x, unnest(terms.lexemes) AS l) AS tf
        FROM chunks c, terms
        WHERE p_workspace = app_workspace_id() AND c.workspace_id = p_workspace
          AND c.tsv @@ terms.query
    ), stats AS (
        SELECT count(*)::float8 AS n, greatest(avg(token_count), 1)::float8 AS avgdl
        FROM chunks WHERE p_workspace = app_workspace_id() AND workspace_id = p_workspace
    ), idf AS (
        SELECT array_agg(ln(1 + (s.n - d.df + 0.5) / (d.df + 0.5)) ORDER BY d.i) AS idf
        FROM stats s,
             (SELECT i, count(*) FILTER (WHERE m.tf[i] IS NOT NULL)::float8 AS df
              FROM matched m, terms, generate_subscripts(terms.lexemes, 1) AS i
              GROUP BY i) d
    )
    SELECT m.id, sum(idf.idf[i] * m.tf[i] * 2.2
                     / (m.tf[i] + 1.2 * (0.25 + 0.75 * m.token_count / s.avgdl)))::float8
    FROM matched m CROSS JOIN stats s CROSS JOIN idf, generate_subscripts(m.tf, 1) AS i
    WHERE m.tf[i] IS NOT NULL
    GROUP BY m.id
    ORDER BY 2 DESC, 1
    LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION search_keyword(uuid, text, integer) FROM PUBLIC;
-- A new owner needs CREATE on the schema at the moment of the change only.
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION search_keyword(uuid, text, integer) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
-- Only the app role (the one migrating) may call it; the owner grants that.
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION search_keyword(uuid, text, integer) TO %I', app);
    RESET ROLE;
END
$$;
