-- Which way a run's rows went in: "fast" (PostgreSQL parsed the CSV in COPY) or
-- "careful: <why the fast path gave up>" (parsed and checked row by row in the worker).
ALTER TABLE import_runs ADD COLUMN parse_path text;
