-- A workspace with a vector index of its own no longer puts its new
-- chunks into the shared HNSW index as well.
--
-- The largest workspaces are searched through their own partial index
-- (common::retrieval::indexes), yet every chunk they gained also went into
-- the shared index, which they never search: two HNSW inserts a chunk, for
-- the very workspaces that ingest the most (an HNSW insert is most of a
-- chunk's cost in Postgres: ingest bench, 426 to 450 chunks/s into an
-- indexed workspace against 704 to 786 into one searched exactly).
--
-- `workspaces.vector_own`, set by the ingest-indexer once the workspace's
-- own index is built and valid, keeps new chunks out of the shared index
-- (`chunks.vector_indexed` false). Chunks already there stay: moving them
-- out would rewrite every one of them, and they cost the shared index
-- nothing but space until the workspace leaves it. Before the own index is
-- dropped, the indexer clears the flag and puts the chunks written
-- meanwhile into the shared index (under the flag lock, as when flagging a
-- workspace), so a flagged workspace without an own index has all its
-- chunks in the shared index. Retrieval searches a workspace flagged
-- `vector_own` whose own index is missing exactly, never through the
-- shared index.
ALTER TABLE workspaces ADD COLUMN vector_own boolean NOT NULL DEFAULT false;

-- As in migration 8, with the workspace's own index taken into account.
CREATE OR REPLACE FUNCTION chunks_before_write() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    NEW.tsv := to_tsvector('english', coalesce(NEW.heading, '') || ' ' || NEW.content);
    NEW.term_counts := tsvector_term_counts(NEW.tsv);
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_advisory_xact_lock_shared(1919383145, hashtext(NEW.workspace_id::text));
        -- Visible exactly when the insert passes RLS (same workspace).
        NEW.vector_indexed := coalesce(
            (SELECT w.vector_indexed AND NOT w.vector_own
             FROM workspaces w WHERE w.id = NEW.workspace_id), false);
    END IF;
    RETURN NEW;
END
$$;
