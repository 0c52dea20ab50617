-- Classification: schemes (named sets of fields a document is sorted by)
-- and jobs that run one over a set of documents through the ingest
-- queue, with a result per document and field.
CREATE TABLE classification_schemes (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id           uuid NOT NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    instructions text NOT NULL DEFAULT '' CHECK (length(instructions) <= 8000),
    -- [{name, kind, description, values: [{value, description}], required}]
    fields       jsonb NOT NULL,
    -- 'default': embeddings and keywords, no network; 'model': the
    -- configured chat model with structured output.
    classifier   text NOT NULL DEFAULT 'default' CHECK (classifier IN ('default', 'model')),
    created_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    PRIMARY KEY (workspace_id, id)
);
CREATE UNIQUE INDEX classification_schemes_name_idx
    ON classification_schemes (workspace_id, lower(name)) WHERE deleted_at IS NULL;

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('import', 'export', 'classify'));
-- Classify: the documents the job will look at when it was started, and
-- those it classified (refused ones count as `failed`).
ALTER TABLE jobs ADD COLUMN total bigint;
ALTER TABLE jobs ADD COLUMN classified bigint NOT NULL DEFAULT 0;

-- One value per document and field of a classify job.
CREATE TABLE classification_results (
    workspace_id uuid NOT NULL,
    job_id       uuid NOT NULL,
    document_id  uuid NOT NULL,
    field        text NOT NULL,
    value        jsonb NOT NULL,
    confidence   real CHECK (confidence BETWEEN 0 AND 1),
    model        text NOT NULL,
    -- The chunks the value rests on.
    chunk_ids    uuid[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, job_id, document_id, field),
    FOREIGN KEY (workspace_id, job_id) REFERENCES jobs (workspace_id, id) ON DELETE CASCADE
);
-- Pages of a job's documents walk one field's rows in document order,
-- checking the value where a filter asks (no btree on the value itself:
-- a list of labels can outgrow an index row).
CREATE INDEX classification_results_field_idx
    ON classification_results (workspace_id, job_id, field, document_id);

-- The documents a classify job could not classify, with the reason.
CREATE TABLE classification_failures (
    workspace_id uuid NOT NULL,
    job_id       uuid NOT NULL,
    document_id  uuid NOT NULL,
    reason       text NOT NULL,
    PRIMARY KEY (workspace_id, job_id, document_id),
    FOREIGN KEY (workspace_id, job_id) REFERENCES jobs (workspace_id, id) ON DELETE CASCADE
);

ALTER TABLE token_reservations DROP CONSTRAINT token_reservations_purpose_check;
ALTER TABLE token_reservations ADD CONSTRAINT token_reservations_purpose_check
    CHECK (purpose IN ('query', 'chat', 'summarize', 'qa', 'mindmap', 'generate', 'classify'));

ALTER TABLE classification_schemes ENABLE ROW LEVEL SECURITY;
ALTER TABLE classification_schemes FORCE ROW LEVEL SECURITY;
CREATE POLICY classification_schemes_tenant ON classification_schemes
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());

ALTER TABLE classification_results ENABLE ROW LEVEL SECURITY;
ALTER TABLE classification_results FORCE ROW LEVEL SECURITY;
CREATE POLICY classification_results_tenant ON classification_results
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());

ALTER TABLE classification_failures ENABLE ROW LEVEL SECURITY;
ALTER TABLE classification_failures FORCE ROW LEVEL SECURITY;
CREATE POLICY classification_failures_tenant ON classification_failures
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());
