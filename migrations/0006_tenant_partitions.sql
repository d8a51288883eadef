-- Full-snapshot modules (missing_rows: delete) are partitioned by tenant: LIST (tenant_id), one partition
-- per tenant. A daily import then COPYs the export into a new table and swaps it in for the tenant's
-- partition in its transaction (services/importer/swap.py): no MERGE, no dead rows left behind, other
-- tenants' partitions untouched, and readers see the old rows or the new ones.

-- The name a tenant's partition gets: "<table>$<tenant>", or a digest where that would pass 63 bytes.
CREATE FUNCTION conduit_tenant_partition_name(parent text, tenant text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
RETURN CASE WHEN octet_length(parent || '$' || tenant) <= 63 THEN parent || '$' || tenant
            ELSE left(parent, 30) || '$' || md5(parent || '$' || tenant) END;

-- A new, empty table shaped as `parent`, holding only `tenant`'s rows (a CHECK, so that ATTACH need not
-- scan it), not keyed and not attached yet: the importer fills it, keys it and attaches it. Its columns are
-- read from the catalog rather than by LIKE, which would lock `parent` until the import commits: another
-- tenant's swap (it needs ACCESS EXCLUSIVE on `parent`) would wait for this whole import, or deadlock with it.
CREATE FUNCTION conduit_new_tenant_table(parent text, tenant text, name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cols text;
BEGIN
    SELECT string_agg(
               format('%I %s%s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                      CASE WHEN a.attcollation <> t.typcollation
                           THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END,
                      CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
                      CASE WHEN d.adbin IS NOT NULL THEN ' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid) ELSE '' END),
               ', ' ORDER BY a.attnum) INTO STRICT cols
    FROM pg_attribute a
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = to_regclass(quote_ident(parent)) AND a.attnum > 0 AND NOT a.attisdropped;
    EXECUTE format('CREATE TABLE %I (%s, CONSTRAINT %I CHECK (tenant_id = %L))', name, cols, 'tenant', tenant);
END $$;

-- The primary key `parent` has, on `name` (built after the rows are in: one sort instead of a b-tree insert
-- per row; ATTACH then adopts it as the parent's index's partition).
CREATE FUNCTION conduit_add_parent_key(parent text, name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cols text;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord) INTO STRICT cols
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = to_regclass(quote_ident(parent)) AND i.indisprimary;
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (%s)', name, cols);
END $$;

-- An empty partition for `tenant` under its canonical name (the careful path's MERGE needs one).
CREATE FUNCTION conduit_add_tenant_partition(parent text, tenant text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text := conduit_tenant_partition_name(parent, tenant);
BEGIN
    PERFORM conduit_new_tenant_table(parent, tenant, name);
    PERFORM conduit_add_parent_key(parent, name);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES IN (%L)', parent, name, tenant);
END $$;

-- Turn a plain module table into one partitioned by tenant, rows, comment and grants kept.
CREATE FUNCTION conduit_partition_by_tenant(parent text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    old text := left(parent, 40) || '$unpartitioned';
    cols text;
    tenant text;
    g record;
    note text := obj_description(to_regclass(quote_ident(parent)), 'pg_class');
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord) INTO STRICT cols
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = to_regclass(quote_ident(parent)) AND i.indisprimary;
    EXECUTE format('ALTER TABLE %I RENAME TO %I', parent, old);
    EXECUTE format('ALTER TABLE %I RENAME CONSTRAINT %I TO %I', old, parent || '_pkey', old || '_pkey');
    EXECUTE format(
        'CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMMENTS '
        'INCLUDING COMPRESSION) PARTITION BY LIST (tenant_id)', parent, old);
    EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (%s)', parent, cols);
    EXECUTE format('COMMENT ON TABLE %I IS %L', parent, note);
    FOR g IN SELECT a.privilege_type, a.grantee, a.is_grantable
                 FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
                 WHERE c.oid = to_regclass(quote_ident(old)) AND a.grantee <> c.relowner LOOP
        EXECUTE format('GRANT %s ON %I TO %s%s', g.privilege_type, parent,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(g.grantee)) END,
                       CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    FOR tenant IN EXECUTE format('SELECT DISTINCT tenant_id FROM %I', old) LOOP
        PERFORM conduit_add_tenant_partition(parent, tenant);
    END LOOP;
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', parent, old);
    EXECUTE format('DROP TABLE %I', old);
END $$;

SELECT conduit_partition_by_tenant('cost_centers');
SELECT conduit_partition_by_tenant('currencies');
SELECT conduit_partition_by_tenant('departments');
SELECT conduit_partition_by_tenant('locations');
SELECT conduit_partition_by_tenant('price_lists');
SELECT conduit_partition_by_tenant('product_categories');
SELECT conduit_partition_by_tenant('stock_levels');
SELECT conduit_partition_by_tenant('tax_rates');
SELECT conduit_partition_by_tenant('warehouses');
