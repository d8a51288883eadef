"""Hypothesis strategies for hostile CSV exports of the ``transactions`` module, built from the grammar's edges.

Fields are made of pieces that readers disagree on (quotes, ``\\.``, backslashes,
CR/LF, NUL, a byte order mark, spaces around quotes, fields past the field limit,
typed values at their limits) and written quoted, bare, or half quoted; records
end in LF, CRLF or CR, mixed or not, with blank lines, ``\\.`` lines and a final
line end or none. The result is bytes: some files are valid, many are not, and
every path must give the same answer either way.
"""

from __future__ import annotations

from hypothesis import strategies as st

# (name in the header, values that fit, values at or past the type's edges)
COLUMNS: dict[str, tuple[list[str], list[str]]] = {
    "Transaction ID": (["1", "2", "3", "4", "5"], ["9223372036854775807", "-0", " 6", "7 ", "x", "1.5", ""]),
    "account_code": (["acc", "A-1"], ["", " "]),
    "description": (["plain", "comma, inside"], []),
    "quantity": (["0", "-3", "2147483647"], ["2147483648", "1e3", "٣", "+4"]),
    "amount": (["1.50", "-0.01", "1e3"], ["NaN", "1,5", "abc"]),
    "vat_rate": (["0.2", ""], ["Infinity", "."]),
    "reconciled": (["true", "f", "yes", "0"], ["maybe", "TRUE "]),
    "value_date": (["2024-05-01", "2000-02-29"], ["2023-02-29", "5874898-01-01", "24-05-01", "epoch"]),
    "booked_at": (["2024-05-01T10:00:00Z", "2024-05-01 10:00:00+02"], ["2024-13-01T00:00:00Z", "allballs"]),
    "memo": (["note"], []),
}
REQUIRED = ["Transaction ID", "account_code", "amount", "value_date"]
OPTIONAL = [c for c in COLUMNS if c not in REQUIRED]
# Text pieces that CSV readers have been seen to read differently.
PIECES = [
    "a", "b", " ", '"', '""', ",", "\\", "\\.", "\n", "\r", "\r\n", "\x00", "\ufeff", "é", "5\" screen",
]  # fmt: skip
LINE_ENDS = ["\n", "\r\n", "\r"]
# Values of a column the module does not know (ignored, but the field limit holds there too).
EXTRA = ["", "zz", "q q", "y" * 41]
WRITTEN = ["spaced", "trailing", "unescaped", "bare"]


@st.composite
def header(draw: st.DrawFn) -> list[str]:
    optional = draw(st.lists(st.sampled_from(OPTIONAL), unique=True, max_size=3))
    names = REQUIRED + optional
    if draw(st.integers(0, 4)) == 0:
        names.append("Unknown extra")
    return draw(st.permutations(names))


@st.composite
def _value(draw: st.DrawFn, name: str, hostile: int) -> str:
    """Mostly values that fit; at the file's level of hostility (0-3), edge values and hostile text."""
    good, edge = COLUMNS[name]
    roll = draw(st.integers(0, 9))
    if roll < 7 - 2 * hostile:
        return draw(st.sampled_from(good))
    if roll < 8 - hostile and edge:
        return draw(st.sampled_from(edge))
    if draw(st.integers(0, 9)) == 0:
        return draw(long_value())
    return draw(st.lists(st.sampled_from(PIECES), max_size=3).map("".join))


@st.composite
def long_value(draw: st.DrawFn) -> str:
    """About the field limit the tests set (40 characters): in bytes, in characters, across lines, typed."""
    piece = draw(st.sampled_from(["x", "é", "€", "ab\r\n", "a\n", "0", '""', "é\r"]))
    chars = draw(st.integers(35, 45))
    value = (piece * chars)[:chars]
    return value + "1" if piece == "0" else value  # leading zeros: a number that fits its type, too long


def _written(value: str, how: str) -> str:
    quoted = '"' + value.replace('"', '""') + '"'
    return {
        "bare": value,
        "quoted": quoted,
        "spaced": " " + quoted,
        "trailing": quoted + "x",
        "unescaped": '"' + value + '"',
    }[how]


@st.composite
def record(draw: st.DrawFn, names: list[str], hostile: int) -> str:
    fields = []
    for name in names:
        value = draw(_value(name, hostile)) if name != "Unknown extra" else draw(st.sampled_from(EXTRA))
        roll = draw(st.integers(0, 19))
        how = "bare" if roll < 12 else "quoted" if roll < 20 - hostile else draw(st.sampled_from(WRITTEN))
        if how == "bare" and any(c in value for c in ',"\r\n') and draw(st.integers(0, 3)) > hostile:
            how = "quoted"  # a careful writer quotes what needs it
        fields.append(_written(value, how))
    if draw(st.integers(0, 19)) < hostile:
        fields = fields[:-1] if draw(st.booleans()) else [*fields, "more"]  # ragged
    return ",".join(fields)


@st.composite
def csv_file(draw: st.DrawFn) -> bytes:
    """A whole export: BOM or not, header, records with their line ends, oddities between them."""
    names = draw(header())
    hostile = draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))
    style = draw(st.sampled_from(LINE_ENDS))
    mixed = draw(st.integers(0, 9)) < hostile
    lines = [",".join(names)]
    for _ in range(draw(st.integers(1, 6))):
        extra = draw(st.integers(0, 29))
        if extra < hostile:
            lines.append("")  # a blank line
        elif extra < 2 * hostile:
            lines.append("\\.")
        lines.append(draw(record(names, hostile)))
    ends = [draw(st.sampled_from(LINE_ENDS)) if mixed else style for _ in lines]
    body = "".join(line + end for line, end in zip(lines, ends, strict=True))
    if not draw(st.booleans()):
        body = body[: -len(ends[-1])]  # no line end after the last record
    if draw(st.integers(0, 5)) == 0:
        body = "\ufeff" + body
    data = body.encode()
    if draw(st.integers(0, 99)) < hostile:
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + b"\xff" + data[cut:]  # not UTF-8
    return data
