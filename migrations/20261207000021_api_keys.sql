-- Workspace API keys. A key acts for its creator inside one workspace,
-- limited to its scopes (common::caller::Scopes bits). The key is shown
-- once; only its public id (for the lookup and the masked listing) and an
-- HMAC-SHA256 of the whole key under a server pepper are stored.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- The key acts for this user: removing the account removes its keys.
    created_by   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    public_id    text NOT NULL UNIQUE CHECK (public_id ~ '^[0-9A-Za-z]{12}$'),
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    scopes       smallint NOT NULL CHECK (scopes > 0 AND scopes < 16),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    revoked_by   uuid REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX api_keys_workspace_idx ON api_keys (workspace_id, created_at, id);
-- Revoking a leaving member's keys finds them by creator.
CREATE INDEX api_keys_creator_idx ON api_keys (created_by, workspace_id) WHERE revoked_at IS NULL;

-- Managed (created, listed, revoked) only in their workspace's context,
-- after the membership check.
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY api_keys_tenant ON api_keys
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());

-- A request carrying a key names no workspace the app could scope a
-- transaction to before the key is known. So the lookup runs in one
-- SECURITY DEFINER function owned by ragway_search (see the
-- keyword_search migration), which a policy lets read and touch keys: it
-- returns the one live key with this public id (workspace and creator not
-- deleted, not revoked, not expired), with its stored hash for the
-- caller's constant-time comparison, and stamps last_used_at at most once
-- a minute, only when the presented hash matches. One round trip.
GRANT SELECT, UPDATE (last_used_at) ON api_keys TO ragway_search;
CREATE POLICY api_keys_lookup ON api_keys TO ragway_search USING (true);
GRANT SELECT (id, deleted_at) ON users TO ragway_search;

CREATE FUNCTION api_key_lookup(p_public_id text, p_secret_hash bytea)
RETURNS TABLE (id uuid, workspace_id uuid, created_by uuid, scopes smallint, secret_hash bytea)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    WITH k AS (
        SELECT k.id, k.workspace_id, k.created_by, k.scopes, k.secret_hash
        FROM api_keys k
        JOIN workspaces w ON w.id = k.workspace_id AND w.deleted_at IS NULL
        JOIN users u ON u.id = k.created_by AND u.deleted_at IS NULL
        WHERE k.public_id = p_public_id AND k.revoked_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > now())
    ), touched AS (
        UPDATE api_keys t SET last_used_at = now()
        FROM k
        WHERE t.id = k.id AND k.secret_hash = p_secret_hash
          AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
        RETURNING t.id
    )
    SELECT k.id, k.workspace_id, k.created_by, k.scopes, k.secret_hash FROM k
$$;
REVOKE ALL ON FUNCTION api_key_lookup(text, bytea) FROM PUBLIC;
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION api_key_lookup(text, bytea) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION api_key_lookup(text, bytea) TO %I', app);
    RESET ROLE;
END
$$;

-- What a key spent: reservations made under a key carry it (the tenant
-- transaction's app.api_key_id, set by common::db for a key's requests),
-- so usage can be broken down by key. No foreign key: the usage log
-- outlives a deleted key, as it does a deleted user.
CREATE FUNCTION app_api_key_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.api_key_id', true), '')::uuid $$;
ALTER TABLE token_reservations ADD COLUMN api_key_id uuid DEFAULT app_api_key_id();
CREATE INDEX token_reservations_key_idx ON token_reservations (workspace_id, day, api_key_id)
    WHERE api_key_id IS NOT NULL;

-- The audit log, newest first per workspace, for GET .../audit.
CREATE INDEX audit_log_workspace_id_idx ON audit_log (workspace_id, id DESC);
