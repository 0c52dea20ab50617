-- Chat widgets embedded in other sites. The id is public (it sits in the
-- page's script tag); a visitor chats with a short-lived embed token
-- bound to the widget, its workspace and the page's origin, acting for
-- the widget's creator with a chat-only grant.
CREATE TABLE widgets (
    id              uuid PRIMARY KEY,
    workspace_id    uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- Visitors act for this user: removing the account removes its widgets.
    created_by      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Exact origins (scheme://host[:port]), checked by the application.
    allowed_origins text[] NOT NULL DEFAULT '{}',
    greeting        text NOT NULL DEFAULT '' CHECK (length(greeting) <= 1000),
    theme_color     text NOT NULL DEFAULT '#2563eb' CHECK (theme_color ~ '^#[0-9a-f]{6}$'),
    -- Chat messages per visitor per hour.
    visitor_messages_per_hour integer NOT NULL DEFAULT 30
                    CHECK (visitor_messages_per_hour BETWEEN 1 AND 10000),
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX widgets_workspace_idx ON widgets (workspace_id, created_at, id);

-- The widget an embed-token request names, set for that lookup only.
CREATE FUNCTION app_widget_id() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting('app.widget_id', true), '')::uuid $$;

-- The visitor a tenant transaction acts for; NULL for everyone else.
CREATE FUNCTION app_visitor_id() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting('app.visitor_id', true), '')::uuid $$;

-- Managed in their workspace's context; readable by id alone when an
-- embed-token request names it (the id is public, the row holds nothing
-- a visitor's page does not show).
ALTER TABLE widgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE widgets FORCE ROW LEVEL SECURITY;
CREATE POLICY widgets_tenant ON widgets
    USING (workspace_id = app_workspace_id() OR id = app_widget_id())
    WITH CHECK (workspace_id = app_workspace_id());

-- A visitor's sessions carry its id (the default, so inserts need not
-- name it); a session is visible only to the same visitor, or, with no
-- visitor set, only to members: members never see visitors' sessions,
-- visitors never see each other's or members'.
ALTER TABLE chat_sessions ADD COLUMN visitor_id uuid DEFAULT app_visitor_id();
DROP POLICY chat_sessions_owner ON chat_sessions;
CREATE POLICY chat_sessions_owner ON chat_sessions
    USING (workspace_id = app_workspace_id() AND user_id = app_user_id()
           AND visitor_id IS NOT DISTINCT FROM app_visitor_id())
    WITH CHECK (workspace_id = app_workspace_id() AND user_id = app_user_id()
                AND visitor_id IS NOT DISTINCT FROM app_visitor_id());
