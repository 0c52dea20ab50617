-- Foundation: users, sessions, workspaces, memberships, rate limits,
-- and the row-level-security context used by every tenant table.

-- Installed by the stack script as superuser (in template1, so every new
-- database has it); this is a no-op there and documents the dependency.
CREATE EXTENSION IF NOT EXISTS vector;

-- The per-transaction RLS context (set by common::db::tenant_tx with
-- set_config(..., true)). Unset or empty means "nobody": NULL matches no row.
CREATE FUNCTION app_user_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.user_id', true), '')::uuid $$;

CREATE FUNCTION app_workspace_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('app.workspace_id', true), '')::uuid $$;

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Built-in accounts: issuer NULL, email unique (stored lower-case),
    -- password_hash argon2id. External accounts: issuer + subject unique.
    email         text CHECK (email = lower(email)),
    password_hash text,
    issuer        text,
    subject       text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((issuer IS NULL AND email IS NOT NULL AND password_hash IS NOT NULL AND subject IS NULL)
        OR (issuer IS NOT NULL AND subject IS NOT NULL AND password_hash IS NULL))
);
CREATE UNIQUE INDEX users_local_email_key ON users (email) WHERE issuer IS NULL;
CREATE UNIQUE INDEX users_external_subject_key ON users (issuer, subject) WHERE issuer IS NOT NULL;

-- Rotating refresh tokens. Each login starts a family; each refresh marks
-- the presented token used and issues the next one in the same family.
-- Presenting a used token again revokes the whole family (theft detection).
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   uuid NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

CREATE TABLE workspaces (
    id                uuid PRIMARY KEY,
    owner_id          uuid NOT NULL REFERENCES users (id),
    name              text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    daily_token_limit bigint NOT NULL CHECK (daily_token_limit >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);

CREATE TABLE workspace_members (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    added_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user_idx ON workspace_members (user_id, workspace_id);
CREATE UNIQUE INDEX workspace_members_one_owner ON workspace_members (workspace_id) WHERE role = 'owner';

-- Row-level security: the second wall behind the explicit workspace_id
-- filters. FORCE makes it apply to the table owner too (the app role owns
-- the tables); only superusers bypass it, and the app never connects as one.
-- A membership row is visible to its own user (to list "my workspaces") and
-- to transactions scoped to its workspace; the app scopes a transaction to a
-- workspace only after checking membership (common::workspaces::Access).
ALTER TABLE workspace_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspace_members FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_members_tenant ON workspace_members
    USING (workspace_id = app_workspace_id() OR user_id = app_user_id())
    WITH CHECK (workspace_id = app_workspace_id());

ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY workspaces_tenant ON workspaces
    USING (id = app_workspace_id()
           OR id IN (SELECT m.workspace_id FROM workspace_members m WHERE m.user_id = app_user_id()))
    WITH CHECK (id = app_workspace_id());

-- Fixed-window counters for rate limits (login, signup; later query/chat).
CREATE TABLE rate_limits (
    key          text NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX rate_limits_window_idx ON rate_limits (window_start);

-- Who did what, for security-relevant changes (membership, deletion).
CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid,
    actor_id     uuid,
    action       text NOT NULL,
    subject_id   uuid,
    details      jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_workspace_idx ON audit_log (workspace_id, created_at);
