-- Why one value cannot be read as a type (PostgreSQL's own message), or NULL if it can. The careful path
-- sorts out the rows it held back as doubtful with it, a column at a time, where import_reject_row tried
-- each row in a subtransaction of its own and then each of its values.
CREATE FUNCTION import_cast_error(value text, kind text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT $1::%s', kind) USING value;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLERRM;
END
$$;
