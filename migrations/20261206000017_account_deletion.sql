-- Accounts: an optional display name, and deletion by the account's owner.
-- A deleted account keeps its row (marked `deleted_at`): workspaces.owner_id
-- has no ON DELETE action and a soft-deleted workspace still points at its
-- owner until `workspaces-purge` removes it; documents' created_by etc. stay
-- valid. Its email is freed for a new sign-up.
ALTER TABLE users
    ADD COLUMN display_name text
        CHECK (display_name = btrim(display_name) AND char_length(display_name) BETWEEN 1 AND 100),
    ADD COLUMN deleted_at timestamptz;

DROP INDEX users_local_email_key;
CREATE UNIQUE INDEX users_local_email_key ON users (email)
    WHERE issuer IS NULL AND deleted_at IS NULL;
