-- Documents: the workspace's sources, their append-only version history,
-- their chunks (filled by ingestion), and the change log that sync reads.

-- Title search in the document list (`?query=`) uses trigram indexes, so
-- ILIKE '%term%' stays fast in workspaces with 100k documents.
-- pg_trgm is a trusted extension: the database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Keyed by (workspace_id, id): every access names the workspace, every
-- index leads with it, and the planner has no tenant-blind index to walk
-- (a primary key on id alone lets it scan the whole table newest-first and
-- filter other tenants out, which is slow exactly when a tenant is small).
-- Ids are unique within a workspace; clients may choose them offline.
CREATE TABLE documents (
    workspace_id   uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id             uuid NOT NULL,
    title          text NOT NULL,
    source         text NOT NULL CHECK (source IN ('inline', 'upload')),
    -- Inline documents keep their text here; uploads keep it in S3 (s3_key).
    content        text,
    content_type   text NOT NULL,
    size           bigint NOT NULL CHECK (size >= 0),
    s3_key         text,
    -- SHA-256 (hex) of the content alone: lets ingestion skip unchanged text.
    content_sha256 text NOT NULL,
    -- The strong entity tag: SHA-256 (hex) of the whole representation
    -- (title, content type, metadata, content), so a title-only edit bumps it.
    etag           text NOT NULL,
    version        integer NOT NULL CHECK (version >= 1),
    metadata       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'processing', 'ready', 'failed')),
    error          text,
    attempts       integer NOT NULL DEFAULT 0,
    created_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    updated_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz,
    -- The transaction that last wrote the row (set by trigger). Sync cursors
    -- are Postgres snapshots: a change is new to a reader exactly when its
    -- transaction was not visible in the reader's previous snapshot, which
    -- stays correct when transactions commit out of order (a sequence
    -- number would not: a lower number can commit after a higher one).
    change_xid     xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (workspace_id, id)
);

-- List pages: newest first by id (UUIDv7), keyset on the immutable id.
CREATE INDEX documents_list_idx ON documents (workspace_id, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX documents_status_idx ON documents (workspace_id, status, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX documents_title_trgm_idx ON documents USING gin (title gin_trgm_ops) WHERE deleted_at IS NULL;
-- Sync pages: changes in transaction order.
CREATE INDEX documents_sync_idx ON documents (workspace_id, change_xid, id);

CREATE FUNCTION documents_touch() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_xid := pg_current_xact_id();
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER documents_touch BEFORE INSERT OR UPDATE ON documents
    FOR EACH ROW EXECUTE FUNCTION documents_touch();

-- Every state a document has had, one row per version; never updated.
CREATE TABLE document_versions (
    workspace_id   uuid NOT NULL,
    document_id    uuid NOT NULL,
    version        integer NOT NULL CHECK (version >= 1),
    -- create | update | snapshot | restore
    kind           text NOT NULL CHECK (kind IN ('create', 'update', 'snapshot', 'restore')),
    label          text,
    restored_from  integer,
    title          text NOT NULL,
    content        text,
    content_type   text NOT NULL,
    size           bigint NOT NULL,
    s3_key         text,
    content_sha256 text NOT NULL,
    etag           text NOT NULL,
    metadata       jsonb NOT NULL,
    created_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, document_id, version),
    FOREIGN KEY (workspace_id, document_id) REFERENCES documents (workspace_id, id) ON DELETE CASCADE
);

CREATE FUNCTION document_versions_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'document_versions is append-only';
END $$;

CREATE TRIGGER document_versions_append_only BEFORE UPDATE ON document_versions
    FOR EACH ROW EXECUTE FUNCTION document_versions_append_only();

-- Chunks of ready documents. Ingestion replaces a document's chunks in one
-- transaction and adds the embedding and full-text columns with its indexes.
CREATE TABLE chunks (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL,
    document_id  uuid NOT NULL,
    ordinal      integer NOT NULL CHECK (ordinal >= 0),
    content      text NOT NULL,
    token_count  integer NOT NULL CHECK (token_count >= 0),
    -- Where the chunk came from, for citations: page number and/or heading path.
    page         integer,
    heading      text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, document_id, ordinal),
    FOREIGN KEY (workspace_id, document_id) REFERENCES documents (workspace_id, id) ON DELETE CASCADE
);

ALTER TABLE documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE documents FORCE ROW LEVEL SECURITY;
CREATE POLICY documents_tenant ON documents
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());

ALTER TABLE document_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE document_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY document_versions_tenant ON document_versions
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());

ALTER TABLE chunks ENABLE ROW LEVEL SECURITY;
ALTER TABLE chunks FORCE ROW LEVEL SECURITY;
CREATE POLICY chunks_tenant ON chunks
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());
