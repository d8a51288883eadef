-- The importer's ledger: one row per attempt at importing one module's export for one tenant and day,
-- and the rows it rejected. Module tables come in later migrations.

CREATE TABLE import_runs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       text NOT NULL,
    module          text NOT NULL,
    export_date     date NOT NULL,
    -- 1, 2, 3... per (tenant, module, export date), across retries and reruns.
    attempt         integer NOT NULL,
    -- The arq job that ran (or will run) this attempt.
    job_id          text,
    status          text NOT NULL
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'partially_rejected')),
    -- A failed attempt that arq will try again (a transient failure within the attempt budget).
    will_retry      boolean NOT NULL DEFAULT false,
    rows_read       bigint NOT NULL DEFAULT 0,
    rows_imported   bigint NOT NULL DEFAULT 0,
    rows_rejected   bigint NOT NULL DEFAULT 0,
    -- Rows whose natural key came again later in the same file (the last one wins).
    rows_duplicate  bigint NOT NULL DEFAULT 0,
    -- Rows inserted or changed by the merge (unchanged rows are not rewritten).
    rows_changed    bigint NOT NULL DEFAULT 0,
    -- Rows removed because they disappeared from a full export (modules with missing_rows: delete).
    rows_deleted    bigint NOT NULL DEFAULT 0,
    bytes_received  bigint NOT NULL DEFAULT 0,
    bytes_csv       bigint NOT NULL DEFAULT 0,
    -- Seconds per pipeline stage: {"fetch": .., "copy": .., "merge": ..}.
    stage_seconds   jsonb NOT NULL DEFAULT '{}',
    -- CSV columns the module does not define (ignored, reported).
    ignored_columns text[] NOT NULL DEFAULT '{}',
    error_class     text,
    error_message   text,
    worker_id       text,
    queued_at       timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    UNIQUE (tenant_id, module, export_date, attempt)
);
CREATE INDEX import_runs_status ON import_runs (status, tenant_id, module, export_date);
CREATE INDEX import_runs_export_date ON import_runs (export_date);

CREATE TABLE import_rejects (
    run_id      bigint NOT NULL REFERENCES import_runs (id) ON DELETE CASCADE,
    -- The line of the CSV file on which the rejected record starts (the header is line 1).
    line        bigint NOT NULL,
    column_name text,
    reason      text NOT NULL,
    -- The record as read (re-quoted as CSV), capped.
    raw         text
);
CREATE INDEX import_rejects_run ON import_rejects (run_id, line);

-- Sorting out the rows of a staged file that cannot be stored. The importer first merges a whole file
-- with one INSERT ... SELECT of casts (the fast path); only when that fails does it call this, batch by
-- batch, and PostgreSQL's own casts decide what is valid, so the two paths never disagree.
--
-- Copies staged rows lo <= _n < hi into `typed`, casting with `casts`; a range that fails is split in
-- two until the bad rows are single, and those go to `rejects`. Returns how many rows were rejected,
-- stopping early once more than `budget` were found (the run fails anyway).
CREATE FUNCTION import_cast_rows(
    stage text, typed text, rejects text, cols text[], casts text[], required boolean[],
    lo bigint, hi bigint, budget bigint
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    found bigint;
    mid bigint;
BEGIN
    IF lo >= hi THEN
        RETURN 0;
    END IF;
    BEGIN
        EXECUTE format('INSERT INTO %I SELECT _n, _line, %s FROM %I WHERE _n >= $1 AND _n < $2',
                       typed, array_to_string(casts, ', '), stage)
            USING lo, hi;
        RETURN 0;
    EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded THEN
        NULL;  -- some row in the range cannot be stored: split the range
    END;
    IF hi - lo = 1 THEN
        PERFORM import_reject_row(stage, rejects, cols, casts, required, lo);
        RETURN 1;
    END IF;
    mid := lo + (hi - lo) / 2;
    found := import_cast_rows(stage, typed, rejects, cols, casts, required, lo, mid, budget);
    IF found > budget THEN
        RETURN found;
    END IF;
    RETURN found + import_cast_rows(stage, typed, rejects, cols, casts, required, mid, hi, budget - found);
END
$$;

-- Records why one staged row cannot be stored: the first column that is empty but required, or whose
-- cast fails (with PostgreSQL's message).
CREATE FUNCTION import_reject_row(
    stage text, rejects text, cols text[], casts text[], required boolean[], n bigint
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    value text;
    bad_column text;
    why text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(cols, 1), 0) LOOP
        EXECUTE format('SELECT %I FROM %I WHERE _n = $1', cols[i], stage) INTO value USING n;
        IF required[i] AND coalesce(value, '') = '' THEN
            bad_column := cols[i];
            why := 'required value is empty';
            EXIT;
        END IF;
        BEGIN
            EXECUTE format('SELECT (%s)::text FROM %I WHERE _n = $1', casts[i], stage) INTO value USING n;
        EXCEPTION WHEN OTHERS THEN
            bad_column := cols[i];
            why := SQLERRM;
            EXIT;
        END;
    END LOOP;
    EXECUTE format('INSERT INTO %I (_n, _line, column_name, reason) SELECT _n, _line, $2, $3 FROM %I WHERE _n = $1',
                   rejects, stage)
        USING n, bad_column, coalesce(why, 'the row cannot be stored');
END
$$;
