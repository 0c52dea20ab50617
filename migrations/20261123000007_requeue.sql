-- Inline documents stored but never queued for ingestion.
--
-- Creating or replacing an inline document stores it as `pending`, then
-- sends its change message to the ingest queue. If that send fails (SQS
-- unreachable, the function killed in between), the document would stay
-- pending for ever. The scheduled `ingest-requeue` function finds such
-- documents through this function and queues them again; the worker
-- skips what is already ingested, so a message sent twice changes
-- nothing twice. Uploads are not included: their message is S3's
-- notification of the object, sent once the object exists.
--
-- Ids and versions only, of every workspace: owned by ragway_search (see
-- the keyword_search migration), which a policy lets read documents.
GRANT SELECT (workspace_id, id, version, source, status, updated_at, deleted_at) ON documents TO ragway_search;
CREATE POLICY documents_requeue ON documents FOR SELECT TO ragway_search USING (true);
CREATE INDEX documents_pending_idx ON documents (updated_at) WHERE status = 'pending' AND deleted_at IS NULL;

CREATE FUNCTION stale_pending_documents(p_older_than interval, p_limit integer)
RETURNS TABLE (workspace_id uuid, document_id uuid, version integer)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT d.workspace_id, d.id, d.version FROM documents d
    WHERE d.status = 'pending' AND d.deleted_at IS NULL AND d.source = 'inline'
      AND d.updated_at < now() - p_older_than
    ORDER BY d.updated_at
    LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION stale_pending_documents(interval, integer) FROM PUBLIC;
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION stale_pending_documents(interval, integer) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION stale_pending_documents(interval, integer) TO %I', app);
    RESET ROLE;
END
$$;
