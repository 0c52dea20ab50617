-- Query and chat: daily token budgets with reservations, chat sessions
-- and their messages.

-- One row per workspace and UTC day. A reservation adds to tokens_reserved
-- only while used + reserved + amount stays within the workspace's
-- daily_token_limit (one conditional UPDATE); committing moves the
-- reservation to tokens_used with the provider's real count; releasing
-- gives it back.
--
-- No row-level security on the two budget tables: they hold counters, not
-- tenant content, every statement on them filters on workspace_id, and the
-- scheduled sweeper must release expired reservations of every workspace
-- (like rate_limits, which has none either).
CREATE TABLE workspace_daily_usage (
    workspace_id    uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    day             date NOT NULL,
    tokens_used     bigint NOT NULL DEFAULT 0 CHECK (tokens_used >= 0),
    tokens_reserved bigint NOT NULL DEFAULT 0 CHECK (tokens_reserved >= 0),
    requests        integer NOT NULL DEFAULT 0 CHECK (requests >= 0),
    PRIMARY KEY (workspace_id, day)
);

-- Every reservation, and once settled what it really cost: the usage log.
CREATE TABLE token_reservations (
    id                uuid PRIMARY KEY,
    workspace_id      uuid NOT NULL,
    day               date NOT NULL,
    user_id           uuid REFERENCES users (id) ON DELETE SET NULL,
    purpose           text NOT NULL CHECK (purpose IN ('query', 'chat')),
    amount            bigint NOT NULL CHECK (amount > 0),
    state             text NOT NULL DEFAULT 'reserved'
                      CHECK (state IN ('reserved', 'committed', 'released', 'expired')),
    prompt_tokens     bigint,
    completion_tokens bigint,
    model             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    settled_at        timestamptz,
    FOREIGN KEY (workspace_id, day) REFERENCES workspace_daily_usage (workspace_id, day) ON DELETE CASCADE
);
-- The sweeper's work list: open reservations by expiry.
CREATE INDEX token_reservations_open_idx ON token_reservations (expires_at) WHERE state = 'reserved';

-- Chat sessions belong to one user in one workspace.
CREATE TABLE chat_sessions (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id           uuid NOT NULL,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX chat_sessions_user_idx ON chat_sessions (workspace_id, user_id, updated_at DESC, id DESC);

-- Both turns of every exchange; assistant turns keep their citations.
CREATE TABLE chat_messages (
    workspace_id uuid NOT NULL,
    session_id   uuid NOT NULL,
    id           uuid NOT NULL,
    role         text NOT NULL CHECK (role IN ('user', 'assistant')),
    content      text NOT NULL,
    citations    jsonb NOT NULL DEFAULT '[]',
    usage        jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, session_id, id),
    FOREIGN KEY (workspace_id, session_id) REFERENCES chat_sessions (workspace_id, id) ON DELETE CASCADE
);

-- A session and its messages are visible to their own user only, inside
-- their workspace.
ALTER TABLE chat_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY chat_sessions_owner ON chat_sessions
    USING (workspace_id = app_workspace_id() AND user_id = app_user_id())
    WITH CHECK (workspace_id = app_workspace_id() AND user_id = app_user_id());

ALTER TABLE chat_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE chat_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY chat_messages_owner ON chat_messages
    USING (workspace_id = app_workspace_id()
           AND EXISTS (SELECT 1 FROM chat_sessions s
                       WHERE s.workspace_id = chat_messages.workspace_id
                         AND s.id = chat_messages.session_id))
    WITH CHECK (workspace_id = app_workspace_id()
           AND EXISTS (SELECT 1 FROM chat_sessions s
                       WHERE s.workspace_id = chat_messages.workspace_id
                         AND s.id = chat_messages.session_id));

-- Keep embeddings inside the row (MAIN: compressed or moved out only as a
-- last resort; content and tsv are moved out first). An exact scan then
-- reads each vector from the heap page it already has instead of a TOAST
-- lookup per row: about half the cost of a small workspace's search.
ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE MAIN;
