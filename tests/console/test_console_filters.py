"""The imports page's query string: any input is either a filter or a BadFilter naming the parameter, and links
made from a filter read back as the same filter (generated inputs, hypothesis; deterministic)."""

from __future__ import annotations

import datetime as dt

from hypothesis import example, given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from services.console.filters import KNOWN, STATUSES, BadFilter, ImportFilters, decode_cursor, encode_cursor, parse

MAX = 200
names = st.one_of(st.sampled_from(sorted(KNOWN)), st.text(min_size=1, max_size=8))
values = st.one_of(
    st.text(max_size=250),
    st.sampled_from([*STATUSES, "asc", "desc", "id", "export_date", "2024-05-01", "2024-13-40", "\x00", "<script>"]),
)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(st.lists(st.tuples(names, values), max_size=6))
@example([("tenant", "a"), ("tenant", "b")])
@example([("after", "W1tdLDFd")])
@example([("from", "2024-05-02"), ("to", "2024-05-01")])
def test_any_query_is_a_filter_or_a_clear_refusal(pairs: list[tuple[str, str]]) -> None:
    try:
        filters = parse(MultiDict(pairs), MAX)
    except BadFilter as exc:
        message = str(exc)
        assert message and any(name in message for name in [*KNOWN, "filter", "status", "sort", "dir"])
        return
    assert isinstance(filters, ImportFilters)
    for text in (filters.tenant, filters.module, filters.path, filters.q):
        assert text is None or (0 < len(text) <= MAX and "\x00" not in text)


filters_strategy = st.builds(
    ImportFilters,
    tenant=st.none() | st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=30)
    .map(str.strip).filter(bool),
    module=st.none() | st.sampled_from(["users", "invoices", "a&b=c"]),
    status=st.none() | st.sampled_from(STATUSES),
    date_from=st.none() | st.dates(dt.date(2000, 1, 1), dt.date(2030, 1, 1)),
    path=st.none() | st.sampled_from(["fast", "careful", "first load"]),
    q=st.none() | st.sampled_from(["gateway", "a b", "ü%20"]),
    sort=st.sampled_from(["id", "export_date"]),
    descending=st.booleans(),
)  # fmt: skip


@settings(derandomize=True, max_examples=100, deadline=None)
@given(filters_strategy, st.integers(1, 2**62))
def test_a_link_reads_back_as_the_same_filter(filters: ImportFilters, last_id: int) -> None:
    after = (dt.date(2024, 5, 1) if filters.sort == "export_date" else last_id, last_id)
    query = filters.query(after=after)
    from urllib.parse import parse_qsl

    again = parse(MultiDict(parse_qsl(query, keep_blank_values=True)), MAX)
    assert again == ImportFilters(**{**filters.__dict__, "after": after})


@settings(derandomize=True, max_examples=100, deadline=None)
@given(st.text(max_size=60))
@example("")
@example("bm90LWEtY3Vyc29y")
def test_a_cursor_that_was_not_made_here_is_refused(raw: str) -> None:
    for sort in ("id", "export_date"):
        try:
            value, last = decode_cursor(raw, sort)
        except BadFilter as exc:
            assert "cursor" in str(exc)
        else:
            assert encode_cursor((value, last)) == raw.rstrip("=") or isinstance(last, int)
