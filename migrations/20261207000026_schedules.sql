-- Recurring tasks: a workspace schedules a job (a classification scheme
-- over the documents added since its last run, or an export) every so
-- many minutes (at least an hour) or by a cron expression (UTC). The
-- scheduled `schedules-dispatch` function starts the due ones as their
-- creator, recording each run, and resumes jobs that stalled.
CREATE TABLE schedules (
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    id            uuid NOT NULL,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    action        text NOT NULL CHECK (action IN ('classify', 'export')),
    -- classify: {scheme_id, only_new}; export: {include_chunks}.
    options       jsonb NOT NULL DEFAULT '{}',
    every_minutes integer CHECK (every_minutes BETWEEN 60 AND 525600),
    cron          text CHECK (length(cron) <= 200),
    CHECK ((every_minutes IS NULL) <> (cron IS NULL)),
    paused        boolean NOT NULL DEFAULT false,
    next_run_at   timestamptz NOT NULL,
    last_run_at   timestamptz,
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE NOT paused;

-- Each run: the job it started, or why it could not.
CREATE TABLE schedule_runs (
    workspace_id uuid NOT NULL,
    schedule_id  uuid NOT NULL,
    id           uuid NOT NULL,
    -- The time the run was due (one run per due time).
    due_at       timestamptz NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL CHECK (status IN ('pending', 'started', 'failed')),
    job_id       uuid,
    error        text,
    PRIMARY KEY (workspace_id, schedule_id, id),
    UNIQUE (workspace_id, schedule_id, due_at),
    FOREIGN KEY (workspace_id, schedule_id) REFERENCES schedules (workspace_id, id) ON DELETE CASCADE
);

ALTER TABLE schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedules FORCE ROW LEVEL SECURITY;
CREATE POLICY schedules_tenant ON schedules
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());

ALTER TABLE schedule_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedule_runs FORCE ROW LEVEL SECURITY;
CREATE POLICY schedule_runs_tenant ON schedule_runs
    USING (workspace_id = app_workspace_id())
    WITH CHECK (workspace_id = app_workspace_id());

-- The dispatcher finds due schedules and stalled jobs of every workspace
-- through these functions, owned by ragway_search (see the
-- keyword_search migration), which policies let read ids and times only;
-- it then acts on each in a transaction scoped to its workspace.
GRANT SELECT (workspace_id, id, paused, next_run_at) ON schedules TO ragway_search;
CREATE POLICY schedules_dispatch ON schedules FOR SELECT TO ragway_search USING (true);
GRANT SELECT (workspace_id, id, status, next_offset, updated_at) ON jobs TO ragway_search;
CREATE POLICY jobs_sweep ON jobs FOR SELECT TO ragway_search USING (true);
CREATE INDEX jobs_unfinished_idx ON jobs (updated_at) WHERE status IN ('queued', 'running');

CREATE FUNCTION due_schedules(p_limit integer)
RETURNS TABLE (workspace_id uuid, schedule_id uuid, next_run_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT s.workspace_id, s.id, s.next_run_at FROM schedules s
    JOIN workspaces w ON w.id = s.workspace_id AND w.deleted_at IS NULL
    WHERE NOT s.paused AND s.next_run_at <= now()
    ORDER BY s.next_run_at
    LIMIT p_limit
$$;

CREATE FUNCTION stalled_jobs(p_older_than interval, p_limit integer)
RETURNS TABLE (workspace_id uuid, job_id uuid, next_offset bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
    SELECT j.workspace_id, j.id, j.next_offset FROM jobs j
    WHERE j.status IN ('queued', 'running') AND j.updated_at < now() - p_older_than
    ORDER BY j.updated_at
    LIMIT p_limit
$$;

REVOKE ALL ON FUNCTION due_schedules(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION stalled_jobs(interval, integer) FROM PUBLIC;
GRANT CREATE ON SCHEMA public TO ragway_search;
ALTER FUNCTION due_schedules(integer) OWNER TO ragway_search;
ALTER FUNCTION stalled_jobs(interval, integer) OWNER TO ragway_search;
REVOKE CREATE ON SCHEMA public FROM ragway_search;
DO $$
DECLARE
    app text := current_user;
BEGIN
    SET LOCAL ROLE ragway_search;
    EXECUTE format('GRANT EXECUTE ON FUNCTION due_schedules(integer) TO %I', app);
    EXECUTE format('GRANT EXECUTE ON FUNCTION stalled_jobs(interval, integer) TO %I', app);
    RESET ROLE;
END
$$;
