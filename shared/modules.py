"""The module catalogue: which data modules the third party exports and how each lands in PostgreSQL.

A module is declared once, as data, in ``shared/modules/<name>.yaml``: its target
table, its columns with their types, which are required, the natural key, and
the CSV header of a column where it differs from the column's name. The importer
reads the whole definition; the scheduler only needs :meth:`Catalogue.names`.

Adding a module is one YAML file here plus one SQL migration creating its table
(``conduit imports ddl NAME`` prints it); the importer refuses to start when the
two disagree. Anything wrong in a definition stops the process with one message
naming the file, the module and the key.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.tenants import ConfigError
from shared.yaml_file import YamlDocument, read_yaml

# Column and table names go into SQL unquoted-safe: lower case identifiers, never a keyword clash
# we have to think about (every identifier is quoted in generated SQL anyway).
IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"
# Module names appear in URLs, Redis keys, job ids and metric labels like tenant names do.
MODULE_NAME = r"^[a-z][a-z0-9_]{0,62}$"
DEFINITIONS_ENV = "CONDUIT_MODULES_DIR"
# Beside a module's columns in the importer's staging tables: the row's number and line, an ignored field.
_IMPORTER_COLUMNS = ("_n", "_line")
PACKAGED = Path(__file__).resolve().with_name("modules")

ColumnType = Literal["text", "integer", "bigint", "numeric", "boolean", "date", "timestamptz", "jsonb"]
MissingRows = Literal["keep", "delete"]

SQL_TYPES: dict[str, str] = {
    "text": "text",
    "integer": "integer",
    "bigint": "bigint",
    "numeric": "numeric",
    "boolean": "boolean",
    "date": "date",
    "timestamptz": "timestamp with time zone",
    "jsonb": "jsonb",
}
"""Each column type and the name ``information_schema.columns.data_type`` gives it."""

# Every module table starts with this column; definitions may not use the name.
TENANT_COLUMN = "tenant_id"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Strict):
    """One column of a module: its name in the table, its type, and its CSV header if different."""

    name: str = Field(pattern=IDENTIFIER)
    type: ColumnType
    # A required column must be in the file's header and never empty in a row.
    required: bool = False
    header: str | None = Field(default=None, min_length=1)

    @property
    def csv_header(self) -> str:
        return self.header or self.name


class ModuleDef(_Strict):
    """A data module: where its rows go and how a file of it is checked."""

    name: str = Field(pattern=MODULE_NAME)
    description: str = ""
    table: str | None = Field(default=None, pattern=IDENTIFIER)
    columns: list[Column] = Field(min_length=1)
    # The natural key; the table's primary key is (tenant_id, *key).
    key: list[str] = Field(min_length=1)
    # Python codec name of the file; a UTF-8 byte order mark is accepted whatever this says.
    encoding: str = "utf-8"
    # More rejected rows than this fraction of the rows read fails the run, which then imports nothing.
    reject_threshold: float = Field(default=0.01, ge=0, le=1)
    # What a full export's missing rows mean: keep them (the default) or delete them.
    missing_rows: MissingRows = "keep"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None

    @model_validator(mode="after")
    def _consistent(self) -> ModuleDef:
        names = [c.name for c in self.columns]
        if TENANT_COLUMN in names:
            raise ValueError(f"column name {TENANT_COLUMN!r} is reserved for the tenant")
        for name in names:
            if name in _IMPORTER_COLUMNS or re.fullmatch(r"_ignored_[0-9]+", name):
                raise ValueError(f"column name {name!r} is reserved: the importer's staging tables use it")
        for label, values in (("column name", names), ("CSV header", [c.csv_header for c in self.columns])):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"duplicate {label}(s): {', '.join(dupes)}")
        unknown = [k for k in self.key if k not in names]
        if unknown:
            raise ValueError(f"key column(s) not among the columns: {', '.join(unknown)}")
        if len(set(self.key)) != len(self.key):
            raise ValueError("key lists a column twice")
        return self

    @property
    def table_name(self) -> str:
        return self.table or self.name

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def is_required(self, column: Column) -> bool:
        """Key columns are required whether or not the definition says so."""
        return column.required or column.name in self.key


class Catalogue:
    """Every module definition, by name, in a stable order."""

    def __init__(self, modules: list[ModuleDef], source: Path | None = None) -> None:
        self.source = source
        self._modules = {m.name: m for m in sorted(modules, key=lambda m: m.name)}

    def names(self) -> list[str]:
        return list(self._modules)

    def get(self, name: str) -> ModuleDef:
        """The definition of ``name``; ``KeyError`` names the module when there is none."""
        try:
            return self._modules[name]
        except KeyError:
            raise KeyError(f"unknown module {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._modules

    def __iter__(self) -> Iterator[ModuleDef]:
        return iter(self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)


def load_catalogue(directory: Path) -> Catalogue:
    """Read and check every ``*.yaml`` in ``directory``, or raise :class:`ConfigError` naming each problem."""
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise ConfigError(f"{directory}: no module definitions (*.yaml)")
    modules, problems = [], []
    for path in paths:
        try:
            module = _load_one(path)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        modules.append(module)
    _check_unique(modules, problems)
    if problems:
        raise ConfigError("invalid module definitions\n" + "\n".join(f"  {p}" for p in problems))
    return Catalogue(modules, directory)


def _load_one(path: Path) -> ModuleDef:
    document = read_yaml(path, "the module definition")
    try:
        module = ModuleDef.model_validate(document.data)
    except ValidationError as exc:
        details = "; ".join(
            f"key {'.'.join(str(p) for p in e['loc']) or '(top level)'!r}{_at(document, e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"{path}: {details}") from None
    if module.name != path.stem:
        raise ConfigError(f"{path}: module {module.name!r} must live in {module.name}.yaml")
    return module


def _at(document: YamlDocument, loc: tuple[str | int, ...]) -> str:
    line = document.position(loc)
    return f" ({line})" if line else ""


def _check_unique(modules: list[ModuleDef], problems: list[str]) -> None:
    tables: dict[str, str] = {}
    for module in modules:
        other = tables.setdefault(module.table_name, module.name)
        if other != module.name:
            problems.append(f"modules {other!r} and {module.name!r} both write table {module.table_name!r}")


def catalogue(directory: Path | None = None) -> Catalogue:
    """The module catalogue: ``directory``, else ``$CONDUIT_MODULES_DIR``, else the definitions shipped here."""
    chosen = directory or Path(os.environ.get(DEFINITIONS_ENV) or PACKAGED)
    return _cached(chosen.resolve())


@lru_cache(maxsize=8)
def _cached(directory: Path) -> Catalogue:
    return load_catalogue(directory)
