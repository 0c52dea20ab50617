-- Membership by invitation: adding someone by email creates an invitation
-- (answered the same whether the address has an account or not); the
-- invitee accepts with the token mailed to them, or declines; an owner or
-- admin revokes it. Only the token's SHA-256 is stored.
CREATE TABLE workspace_invitations (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- The name as the invitation (and its email) gave it: the invitee is
    -- not a member, so row-level security hides the workspace row itself.
    workspace_name text NOT NULL,
    email        text NOT NULL CHECK (email = lower(email)),
    role         text NOT NULL CHECK (role IN ('admin', 'member')),
    token_hash   bytea NOT NULL UNIQUE,
    invited_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    -- 'pending' past expires_at reads as expired; inviting the address
    -- again renews the row.
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'accepted', 'declined', 'revoked')),
    responded_at timestamptz,
    responded_by uuid REFERENCES users (id) ON DELETE SET NULL
);
-- One open invitation per workspace and address.
CREATE UNIQUE INDEX workspace_invitations_open_key
    ON workspace_invitations (workspace_id, email) WHERE status = 'pending';
CREATE INDEX workspace_invitations_email_idx
    ON workspace_invitations (email) WHERE status = 'pending';
CREATE INDEX workspace_invitations_workspace_idx
    ON workspace_invitations (workspace_id, created_at, id);

-- Visible in its workspace's context (owners and admins manage it there)
-- and to the live account whose email it is addressed to (to list, accept
-- or decline its own); written only in the workspace's context. Deleting
-- a workspace revokes its open invitations.
ALTER TABLE workspace_invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspace_invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_invitations_tenant ON workspace_invitations
    USING (workspace_id = app_workspace_id()
           OR email = (SELECT u.email FROM users u
                       WHERE u.id = app_user_id() AND u.deleted_at IS NULL))
    WITH CHECK (workspace_id = app_workspace_id());
