-- The operations console: what it reads fast (the imports page, keyset-paginated newest first under any
-- filter), and what it writes (who did what).

CREATE INDEX import_runs_tenant_id ON import_runs (tenant_id, id);
CREATE INDEX import_runs_module_id ON import_runs (module, id);
CREATE INDEX import_runs_status_id ON import_runs (status, id);
CREATE INDEX import_runs_export_date_id ON import_runs (export_date, id);
CREATE INDEX import_runs_error_words ON import_runs USING gin (to_tsvector('simple', coalesce(error_message, '')));

CREATE TABLE console_audit (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    -- Who: the signed-in name (an OIDC email, or "token" for the static admin token).
    who     text NOT NULL,
    role    text NOT NULL,
    -- What: rerun, rerun_failed, cancel_job, pause, resume, refresh_token.
    action  text NOT NULL,
    target  text NOT NULL,
    -- What came of it: counts, the lines `conduit imports rerun` would print.
    outcome jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX console_audit_at ON console_audit (at);

-- The live board's "done and failed today" when the console starts.
CREATE INDEX import_runs_finished_at ON import_runs (finished_at);
