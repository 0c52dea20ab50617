-- Only the vectors that are searched through it in the shared HNSW index,
-- and the full-text terms computed once per chunk.
--
-- 1. Workspaces up to VECTOR_EXACT_SEARCH_MAX_CHUNKS chunks are searched
--    exactly (every vector compared: full recall, where a shared HNSW
--    index post-filters and loses results). Their vectors in the shared
--    index were pure cost: every chunk insert paid an HNSW insert (0.7 ms
--    of Postgres time, more than everything else in the row together), and
--    the index the large workspaces search was mostly other tenants'.
--    `workspaces.vector_indexed`, set by the scheduled ingest-indexer for
--    workspaces above the threshold (common::retrieval::indexes), now
--    chooses the search path, and `chunks.vector_indexed`, copied from it
--    when a chunk is inserted, is the shared index's predicate.
--
--    A flagged workspace never has an unflagged chunk: the indexer flags a
--    workspace's chunks, then the workspace and any chunk that came
--    meanwhile, holding an exclusive transaction lock on the workspace's
--    flag; every chunk insert takes that lock shared and reads the flag
--    after it (the trigger is VOLATILE: a fresh snapshot per statement).
--    Until the indexer has run, a workspace is searched exactly: slower,
--    never incomplete.
-- 2. `tsv` and `term_counts` were two generated columns, each running
--    to_tsvector (0.12 ms for a 1,400-character chunk). A trigger now runs
--    it once.
ALTER TABLE workspaces ADD COLUMN vector_indexed boolean NOT NULL DEFAULT false;
ALTER TABLE chunks ADD COLUMN vector_indexed boolean NOT NULL DEFAULT false;

ALTER TABLE chunks ALTER COLUMN tsv DROP EXPRESSION;
ALTER TABLE chunks ALTER COLUMN term_counts DROP EXPRESSION;

-- The lock is (1919383145, hashtext(workspace id)): common::db::VECTOR_FLAG_LOCK.
CREATE FUNCTION chunks_before_write() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    NEW.tsv := to_tsvector('english', coalesce(NEW.heading, '') || ' ' || NEW.content);
    NEW.term_counts := tsvector_term_counts(NEW.tsv);
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_advisory_xact_lock_shared(1919383145, hashtext(NEW.workspace_id::text));
        -- Visible exactly when the insert passes RLS (same workspace).
        NEW.vector_indexed := coalesce(
            (SELECT w.vector_indexed FROM workspaces w WHERE w.id = NEW.workspace_id), false);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER chunks_before_write BEFORE INSERT OR UPDATE OF content, heading ON chunks
    FOR EACH ROW EXECUTE FUNCTION chunks_before_write();

-- The shared index moves to a predicate on the flag (common::db::
-- ensure_vector_index builds `chunks_shared_hnsw_<dims>`; with nothing
-- flagged yet it is empty, so building it takes no time).
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = 'chunks'::regclass AND c.relname LIKE 'chunks\_embedding\_hnsw\_%'
    LOOP
        EXECUTE format('DROP INDEX %I', r.relname);
    END LOOP;
END
$$;

-- Live workspaces with at least `p_min` chunks, and every flagged one
-- (`chunks` 0 when it has fewer than `p_min` or is soft-deleted), largest
-- first: ids, counts and flags only, for the indexer, across workspaces.
GRANT SELECT (id, vector_indexed, deleted_at) ON workspaces TO ragway_search;
GRANT SELECT (workspace_id, user_id) ON workspace_members TO ragway_search;
CREATE POLICY workspaces_indexer ON workspaces FOR SELECT TO ragway_search USING (true);
DROP FUNCTION workspace_chunk_counts(integer, integer);
CREATE FUNCTION workspace_vector_sizes(p_min integer)
RETURNS TABLE (workspace_id uuid, chunks bigint, vector_indexed boolean)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    WITH sized AS (
        SELECT c.workspace_id, count(*) AS chunks FROM chunks c
        GROUP BY c.workspace_id HAVING count(*) >= p_min
    )
    SELECT w.id, CASE WHEN w.deleted_at IS NULL THEN coalesce(s.chunks, 0) ELSE 0 END AS chunks,
           w.vector_indexed
    FROM workspaces w LEFT JOIN sized s ON s.workspace_id = w.id
    WHERE (s.workspace_id IS NOT NULL AND w.deleted_at IS NULL) OR w.vector_indexed
    ORDER BY 2 DESC, 1
$$;
REVOKE ALL ON FUNCTION workspace_vector_sizes(integer) FROM PUBLIC;
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION workspace_vector_sizes(integer) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION workspace_vector_sizes(integer) TO %I', app);
    RESET ROLE;
END
$$;
