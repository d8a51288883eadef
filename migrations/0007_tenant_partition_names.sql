-- Names derived from tenant ids never collide. 0006 named a partition "<table>$<tenant>" and its key
-- "<partition>_pkey" (cut at 58 characters by the swap): tenants "acme" and "acme_pkey" wanted one name for
-- a partition and an index, two tenants sharing their first 47 characters one name for two indexes, and a
-- multibyte tenant an index name that PostgreSQL cut back to its partition's name. Now each kind of name
-- has a shape no other kind (nor a module table, nor its key) can take:
--   partition  <table>$<tenant>         one '$': tables hold none, nor do the tenants file's ids
--   its key    <table>$<tenant>$pkey    two '$'
--   digests    <table, cut>#<md5>[$pkey] where the id is not of the tenants file's characters or the
--                                        name would pass 63 bytes; '#' is in no other name.

CREATE OR REPLACE FUNCTION conduit_tenant_partition_name(parent text, tenant text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
RETURN CASE WHEN tenant ~ '^[A-Za-z0-9_.-]+$' AND octet_length(parent || '$' || tenant) <= 63
            THEN parent || '$' || tenant
            ELSE left(parent, 30) || '#' || md5(parent || '$' || tenant) END;

CREATE FUNCTION conduit_tenant_key_name(parent text, tenant text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
RETURN CASE WHEN tenant ~ '^[A-Za-z0-9_.-]+$' AND octet_length(parent || '$' || tenant || '$pkey') <= 63
            THEN parent || '$' || tenant || '$pkey'
            ELSE left(parent, 25) || '#' || md5(parent || '$' || tenant) || '$pkey' END;

-- Give `rel` (a table of `tenant`'s rows of `parent`, keyed) and its primary key their canonical names.
CREATE FUNCTION conduit_name_tenant_partition(parent text, tenant text, rel regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text := conduit_tenant_partition_name(parent, tenant);
    key_name text := conduit_tenant_key_name(parent, tenant);
    key regclass := (SELECT indexrelid::regclass FROM pg_index WHERE indrelid = rel AND indisprimary);
BEGIN
    IF (SELECT relname FROM pg_class WHERE oid = rel) <> name THEN
        EXECUTE format('ALTER TABLE %s RENAME TO %I', rel, name);
    END IF;
    IF (SELECT relname FROM pg_class WHERE oid = key) <> key_name THEN
        EXECUTE format('ALTER INDEX %s RENAME TO %I', key, key_name);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION conduit_add_tenant_partition(parent text, tenant text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text := conduit_tenant_partition_name(parent, tenant);
BEGIN
    PERFORM conduit_new_tenant_table(parent, tenant, name);
    PERFORM conduit_add_parent_key(parent, name);
    PERFORM conduit_name_tenant_partition(parent, tenant, to_regclass(quote_ident(name)));
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES IN (%L)', parent, name, tenant);
END $$;

-- The partitions 0006 and the imports since made: every one renamed out of the way first, then named.
DO $$
DECLARE
    p record;
    tenant text;
BEGIN
    FOR p IN SELECT i.inhrelid::regclass AS rel, k.indexrelid::regclass AS key
             FROM pg_inherits i JOIN pg_class parent ON parent.oid = i.inhparent
             JOIN pg_index k ON k.indrelid = i.inhrelid AND k.indisprimary
             WHERE parent.relkind = 'p' AND parent.relnamespace = current_schema()::regnamespace LOOP
        EXECUTE format('ALTER TABLE %s RENAME TO %I', p.rel, 'conduit_rename_' || p.rel::oid);
        EXECUTE format('ALTER INDEX %s RENAME TO %I', p.key, 'conduit_rename_' || p.rel::oid || '_key');
    END LOOP;
    FOR p IN SELECT i.inhrelid::regclass AS rel, parent.relname AS parent,
                    pg_get_expr(c.relpartbound, c.oid) AS bound
             FROM pg_inherits i JOIN pg_class parent ON parent.oid = i.inhparent JOIN pg_class c ON c.oid = i.inhrelid
             WHERE parent.relkind = 'p' AND parent.relnamespace = current_schema()::regnamespace LOOP
        -- The bound as PostgreSQL prints it, FOR VALUES IN ('<literal>'): its literal read back.
        EXECUTE 'SELECT ' || substring(p.bound FROM '^FOR VALUES IN \((.*)\)$') INTO STRICT tenant;
        PERFORM conduit_name_tenant_partition(p.parent, tenant, p.rel);
    END LOOP;
END $$;
