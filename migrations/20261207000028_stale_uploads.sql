-- Uploaded documents stored but whose object's notification was lost.
--
-- An upload's document is ingested when S3's notification of its object
-- arrives. An import line naming a file copies the file to the
-- document's key and ingests it in the same invocation; if that
-- invocation dies after committing the document, and the copy's
-- notification was handled before the commit (finding no document), the
-- document would stay pending for ever. The scheduled `ingest-requeue`
-- function finds pending uploads through this function, asks S3 whether
-- their object exists, and queues a notification for those that do; the
-- worker skips what is already ingested. Documents whose object was
-- never put (a client that never uploaded) are found too and left alone;
-- only the last day's are looked at, so they cannot crowd out the rest.
--
-- Ids and keys only, of every workspace: owned by ragway_search, like
-- stale_pending_documents (see the requeue migration).
GRANT SELECT (s3_key) ON documents TO ragway_search;

CREATE FUNCTION stale_pending_uploads(p_older_than interval, p_limit integer)
RETURNS TABLE (workspace_id uuid, document_id uuid, s3_key text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT d.workspace_id, d.id, d.s3_key FROM documents d
    WHERE d.status = 'pending' AND d.deleted_at IS NULL AND d.source = 'upload'
      AND d.s3_key IS NOT NULL
      AND d.updated_at < now() - p_older_than
      AND d.updated_at > now() - p_older_than - interval '1 day'
    ORDER BY d.updated_at
    LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION stale_pending_uploads(interval, integer) FROM PUBLIC;
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION stale_pending_uploads(interval, integer) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION stale_pending_uploads(interval, integer) TO %I', app);
    RESET ROLE;
END
$$;
