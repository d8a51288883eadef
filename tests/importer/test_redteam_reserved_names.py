"""A module column may not take a name the importer's own tables use beside the module's columns.

The staging table has ``_n`` and ``_line`` after the file's columns, and the fast path's staging names the
file's ignored fields ``_ignored_<i>``: a column so named made every careful import of the module fail with
"column specified more than once", or staged an ignored field into it. A definition naming one is refused
when the catalogue loads, naming the column.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.modules import ModuleDef, catalogue

CURRENCIES = catalogue().get("currencies")


def _with_column(name: str) -> dict[str, object]:
    data = CURRENCIES.model_dump()
    data["columns"] = [*data["columns"], {"name": name, "type": "text"}]
    return data


@given(name=st.one_of(st.sampled_from(["_n", "_line", "tenant_id"]), st.integers(0, 999).map("_ignored_{}".format)))
def test_a_column_named_as_the_importers_own_is_refused_by_name(name: str) -> None:
    with pytest.raises(ValidationError, match=f"column name '{name}' is reserved"):
        ModuleDef.model_validate(_with_column(name))


@given(name=st.sampled_from(["_nn", "n", "line", "_lines", "_ignored", "ignored_0", "_ignored_x"]))
def test_names_near_them_are_fine(name: str) -> None:
    assert ModuleDef.model_validate(_with_column(name)).columns[-1].name == name
