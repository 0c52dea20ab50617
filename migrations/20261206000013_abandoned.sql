-- Documents whose ingestion stopped without an end.
--
-- A worker that crashes or runs out of time leaves its documents
-- `processing` under a lease (processing_until, ten minutes). SQS
-- redelivers the message after its visibility timeout (twelve minutes)
-- and the next claim takes the lapsed lease; but after maxReceiveCount
-- the message moves to the DLQ, and the document would stay `processing`
-- for ever. The scheduled `ingest-requeue` function finds documents whose
-- lease lapsed long before (past any redelivery) through this function
-- and fails them with a reason. A later redrive of the DLQ can still
-- ingest them: a claim takes failed documents.
--
-- Ids only, of every workspace: owned by ragway_search, like
-- stale_pending_documents (see the requeue migration).
GRANT SELECT (processing_until, attempts) ON documents TO ragway_search;
CREATE INDEX documents_processing_idx ON documents (processing_until)
    WHERE status = 'processing' AND deleted_at IS NULL;

CREATE FUNCTION abandoned_documents(p_older_than interval, p_limit integer)
RETURNS TABLE (workspace_id uuid, document_id uuid, attempts integer)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT d.workspace_id, d.id, d.attempts FROM documents d
    WHERE d.status = 'processing' AND d.deleted_at IS NULL
      AND d.processing_until < now() - p_older_than
    ORDER BY d.processing_until
    LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION abandoned_documents(interval, integer) FROM PUBLIC;
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION abandoned_documents(interval, integer) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION abandoned_documents(interval, integer) TO %I', app);
    RESET ROLE;
END
$$;
