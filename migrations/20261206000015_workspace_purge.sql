-- What a deleted workspace leaves behind is removed.
--
-- Deleting a workspace only marks it (deleted_at): from then on nobody
-- reaches it, but its uploaded files stayed in S3 and its chunks (the
-- embeddings and full-text terms, most of its bytes) in Postgres for
-- ever. The scheduled `workspaces-purge` function (common::purge) now
-- removes both, in batches, and sets `purged_at` once nothing of either
-- is left and no upload signed before the deletion can still arrive.
-- Until then every run looks at the workspace again, so a run cut short
-- by its time resumes where the next one lists.
--
-- The purge runs in no workspace's context, so it finds the workspaces
-- through a function owned by ragway_search, like abandoned_documents
-- (see the requeue and abandoned migrations): ids only, of deleted
-- workspaces. Everything it removes it removes in that workspace's own
-- context, under the tenant policies.
ALTER TABLE workspaces ADD COLUMN purged_at timestamptz;
CREATE INDEX workspaces_purge_idx ON workspaces (deleted_at, id)
    WHERE deleted_at IS NOT NULL AND purged_at IS NULL;

GRANT SELECT (purged_at) ON workspaces TO ragway_search;

CREATE FUNCTION workspaces_to_purge(p_limit integer)
RETURNS TABLE (workspace_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT w.id FROM workspaces w
    WHERE w.deleted_at IS NOT NULL AND w.purged_at IS NULL
    ORDER BY w.deleted_at, w.id
    LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION workspaces_to_purge(integer) FROM PUBLIC;
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION workspaces_to_purge(integer) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION workspaces_to_purge(integer) TO %I', app);
    RESET ROLE;
END
$$;
