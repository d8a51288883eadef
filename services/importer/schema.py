"""Module tables in PostgreSQL: the DDL a definition asks for, and the start-up check that they agree.

The worker refuses to start when a table is missing, lacks a column, has a
column of another type, a different primary key, or a NOT NULL column the
definition does not require: each problem is one line naming the module and
the column, so the fix (a migration, or the YAML) is obvious.
"""

from __future__ import annotations

import asyncpg

from shared.modules import SQL_TYPES, TENANT_COLUMN, Catalogue, ModuleDef
from shared.tenants import ConfigError


class SchemaMismatch(ConfigError):
    """The database and the module definitions disagree; the message lists every difference.

    A configuration error like a bad tenants file: ``conduit importer`` prints it and exits.
    """


def quote(identifier: str) -> str:
    """A SQL identifier, always quoted (definitions only allow safe names, quoting keeps keywords harmless)."""
    return '"' + identifier.replace('"', '""') + '"'


TENANT_DEFAULT = "current_setting('conduit.tenant_id'::text)"


def create_table_sql(module: ModuleDef) -> str:
    """The ``CREATE TABLE`` for a module: tenant_id first, then the columns, keyed on (tenant_id, *key).

    Partitioned by tenant (migrations/0006, 0009); the importer adds the partitions.

    tenant_id defaults to the session's ``conduit.tenant_id``, so a first load can COPY straight into the table.
    """
    lines = [f"    {TENANT_COLUMN} text NOT NULL DEFAULT current_setting('conduit.tenant_id')"]
    for column in module.columns:
        not_null = " NOT NULL" if module.is_required(column) else ""
        lines.append(f"    {quote(column.name)} {column.type}{not_null}")
    key = ", ".join([TENANT_COLUMN, *(quote(k) for k in module.key)])
    lines.append(f"    PRIMARY KEY ({key})")
    comment = module.description.replace("'", "''")
    body = ",\n".join(lines)
    # An import swaps the tenant's partition for a new table (services/importer/swap.py).
    ddl = f"CREATE TABLE {quote(module.table_name)} (\n{body}\n) PARTITION BY LIST ({TENANT_COLUMN});\n"
    if comment:
        ddl += f"COMMENT ON TABLE {quote(module.table_name)} IS 'Module {module.name}: {comment}';\n"
    return ddl


_COLUMNS = """
SELECT t.name AS table_name, a.attname AS column_name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS default_value
FROM unnest($1::text[]) AS t(name)
JOIN pg_attribute a ON a.attrelid = to_regclass(quote_ident(t.name)) AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
ORDER BY t.name, a.attnum
"""
_PRIMARY_KEYS = """
SELECT t.name AS table_name, array_agg(a.attname::text ORDER BY k.ord) AS key
FROM unnest($1::text[]) AS t(name)
JOIN pg_index i ON i.indrelid = to_regclass(quote_ident(t.name)) AND i.indisprimary
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
GROUP BY t.name
"""
LEDGER_TABLES = ("import_runs", "import_rejects")


async def check_schema(conn: asyncpg.Connection, modules: Catalogue) -> None:
    """Raise :class:`SchemaMismatch` listing every way the database differs from the definitions."""
    tables = [m.table_name for m in modules]
    columns: dict[str, dict[str, tuple[str, bool]]] = {}
    defaults: dict[str, str | None] = {}
    for row in await conn.fetch(_COLUMNS, [*tables, *LEDGER_TABLES]):
        columns.setdefault(row["table_name"], {})[row["column_name"]] = (row["type"], row["attnotnull"])
        if row["column_name"] == TENANT_COLUMN:
            defaults[row["table_name"]] = row["default_value"]
    keys = {row["table_name"]: list(row["key"]) for row in await conn.fetch(_PRIMARY_KEYS, tables)}
    problems = [f"table {t} does not exist (run `conduit migrate`)" for t in LEDGER_TABLES if t not in columns]
    for module in modules:
        problems.extend(_module_problems(module, columns.get(module.table_name), keys.get(module.table_name)))
        if module.table_name in defaults and defaults[module.table_name] != TENANT_DEFAULT:
            problems.append(
                f"module {module.name!r} (table {module.table_name}): column {TENANT_COLUMN!r} must default to "
                "current_setting('conduit.tenant_id')"
            )
    if problems:
        raise SchemaMismatch(
            "the database does not match the module definitions:\n" + "\n".join(f"  {p}" for p in problems)
        )


def _module_problems(module: ModuleDef, actual: dict[str, tuple[str, bool]] | None, key: list[str] | None) -> list[str]:
    where = f"module {module.name!r} (table {module.table_name})"
    if actual is None:
        return [f"{where}: the table does not exist (a migration must create it; `conduit imports ddl {module.name}`)"]
    problems = []
    expected = {TENANT_COLUMN: ("text", True)} | {
        c.name: (SQL_TYPES[c.type], module.is_required(c)) for c in module.columns
    }
    for name, (sql_type, required) in expected.items():
        if name not in actual:
            problems.append(f"{where}: column {name!r} is missing from the table")
            continue
        db_type, not_null = actual[name]
        # Exactly the type, without a modifier: the importer casts to the definition's type (``::numeric``), so a
        # numeric(12,2) column rounded each value after the comparison (an unchanged file counted every row
        # changed) and refused a value after every check (the run failed where it rejects the row).
        if db_type != sql_type:
            problems.append(f"{where}: column {name!r} is {db_type} in the database but {sql_type} in the definition")
        if not_null and not required:
            problems.append(f"{where}: column {name!r} is NOT NULL in the database but not required in the definition")
    for name in sorted(actual.keys() - expected.keys()):
        problems.append(f"{where}: column {name!r} is in the table but not in the definition")
    wanted = [TENANT_COLUMN, *module.key]
    if key != wanted:
        problems.append(
            f"{where}: primary key is ({', '.join(key or [])}) but the definition needs ({', '.join(wanted)})"
        )
    return problems
