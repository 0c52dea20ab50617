-- Share links: read-only links to one object of a workspace (a document
-- or a chat session; job results later, as another target_kind) that
-- anyone holding the token may open without signing in, until the link
-- expires or is revoked. Only the token's SHA-256 is stored.
CREATE TABLE share_links (
    id             uuid PRIMARY KEY,
    workspace_id   uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- The link shows what its creator sees: removing the account removes
    -- its links.
    created_by     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    target_kind    text NOT NULL CHECK (target_kind IN ('document', 'chat_session')),
    target_id      uuid NOT NULL,
    token_hash     bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL CHECK (expires_at > created_at),
    revoked_at     timestamptz,
    revoked_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    last_viewed_at timestamptz,
    view_count     bigint NOT NULL DEFAULT 0
);
CREATE INDEX share_links_workspace_idx ON share_links (workspace_id, created_at, id);

-- Managed (created, listed, revoked) and counted only in their
-- workspace's context, after the membership check.
ALTER TABLE share_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE share_links FORCE ROW LEVEL SECURITY;
CREATE POLICY share_links_tenant ON share_links
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());

-- GET /share/{token} names no workspace the app could scope a transaction
-- to before the link is known. So, as for API keys, the lookup runs in one
-- SECURITY DEFINER function owned by ragway_search, which a policy lets
-- read links: it returns the one live link with this token hash (not
-- revoked, not expired, workspace and creator not deleted). The app then
-- reads the target in a transaction scoped to the link's workspace and
-- creator, as the creator would see it.
GRANT SELECT ON share_links TO ragway_search;
CREATE POLICY share_links_lookup ON share_links FOR SELECT TO ragway_search USING (true);

CREATE FUNCTION share_link_lookup(p_token_hash bytea)
RETURNS TABLE (id uuid, workspace_id uuid, created_by uuid, target_kind text, target_id uuid,
               created_at timestamptz, expires_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT s.id, s.workspace_id, s.created_by, s.target_kind, s.target_id, s.created_at,
           s.expires_at
    FROM share_links s
    JOIN workspaces w ON w.id = s.workspace_id AND w.deleted_at IS NULL
    JOIN users u ON u.id = s.created_by AND u.deleted_at IS NULL
    WHERE s.token_hash = p_token_hash AND s.revoked_at IS NULL AND s.expires_at > now()
$$;
REVOKE ALL ON FUNCTION share_link_lookup(bytea) FROM PUBLIC;
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION share_link_lookup(bytea) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION share_link_lookup(bytea) TO %I', app);
    RESET ROLE;
END
$$;
