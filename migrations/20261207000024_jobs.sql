-- Workspace jobs: bulk import of a JSONL file and export of a workspace
-- to one. A job runs through the ingest queue in bounded steps; each step
-- commits its work and the job's progress together, guarded by the offset
-- it started from, so a redelivered or duplicated step changes nothing
-- twice and a crash leaves the job resumable from its last step.
CREATE TABLE jobs (
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id            uuid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('import', 'export')),
    status        text NOT NULL
                  CHECK (status IN ('awaiting_upload', 'queued', 'running', 'succeeded',
                                    'failed', 'cancelled')),
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    -- What was asked: import {size, filename}; export {include_chunks}.
    options       jsonb NOT NULL DEFAULT '{}',
    -- The JSONL object: the import's source or the export's result.
    object_key    text NOT NULL,
    -- Where the next step starts: an import's byte offset, an export's
    -- part number; and the 1-based line (import) there.
    next_offset   bigint NOT NULL DEFAULT 0 CHECK (next_offset >= 0),
    next_line     bigint NOT NULL DEFAULT 1,
    -- Export: the last document written, and the multipart upload.
    cursor_id     uuid,
    upload_id     text,
    parts         jsonb NOT NULL DEFAULT '[]',
    lines_read    bigint NOT NULL DEFAULT 0,
    created       bigint NOT NULL DEFAULT 0,
    skipped       bigint NOT NULL DEFAULT 0,
    failed        bigint NOT NULL DEFAULT 0,
    exported      bigint NOT NULL DEFAULT 0,
    bytes         bigint NOT NULL DEFAULT 0,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX jobs_list_idx ON jobs (workspace_id, id DESC);

-- The lines an import could not take, with their reasons (the first
-- thousand of a job; `jobs.failed` counts them all).
CREATE TABLE job_failures (
    workspace_id uuid NOT NULL,
    job_id       uuid NOT NULL,
    line         bigint NOT NULL,
    client_id    text,
    reason       text NOT NULL,
    PRIMARY KEY (workspace_id, job_id, line),
    FOREIGN KEY (workspace_id, job_id) REFERENCES jobs (workspace_id, id) ON DELETE CASCADE
);

-- An imported document remembers the client's id (unique among the live
-- documents of a workspace: a line sent again is a duplicate) and the
-- job that made it (its progress counts the job's documents by status).
ALTER TABLE documents ADD COLUMN client_id text CHECK (length(client_id) BETWEEN 1 AND 256);
ALTER TABLE documents ADD COLUMN job_id uuid;
CREATE UNIQUE INDEX documents_client_id_idx ON documents (workspace_id, client_id)
    WHERE client_id IS NOT NULL AND deleted_at IS NULL;
CREATE INDEX documents_job_idx ON documents (workspace_id, job_id, status)
    WHERE job_id IS NOT NULL;
-- A line without a client id is a duplicate of a live document with the
-- same entity tag (title, type, metadata and content alike).
CREATE INDEX documents_etag_idx ON documents (workspace_id, etag) WHERE deleted_at IS NULL;

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY jobs_tenant ON jobs
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());

ALTER TABLE job_failures ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_failures FORCE ROW LEVEL SECURITY;
CREATE POLICY job_failures_tenant ON job_failures
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());
