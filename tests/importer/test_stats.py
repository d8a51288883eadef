"""The run's record: the path renders to the ``parse_path`` text earlier rows and the console hold."""

from __future__ import annotations

import pytest

from services.importer.errors import BadExport, TooManyRejects
from services.importer.stats import ImportPath, Merged, PathTaken, RunRecord, Tally


@pytest.mark.parametrize(
    ("taken", "text"),
    [
        (PathTaken(ImportPath.FIRST_LOAD), "first load"),
        (PathTaken(ImportPath.FAST), "fast"),
        (PathTaken(ImportPath.FIRST_LOAD, requoted=3), "first load (3 records re-quoted for COPY)"),
        (PathTaken(ImportPath.FAST, requoted=1), "fast (1 records re-quoted for COPY)"),
        (PathTaken(ImportPath.CAREFUL, why="COPY cannot read cp437"), "careful: COPY cannot read cp437"),
        (PathTaken(ImportPath.CAREFUL, why="x" * 400), "careful: " + "x" * 291),
    ],
)
def test_the_path_renders_as_the_ledger_has_always_stored_it(taken: PathTaken, text: str) -> None:
    assert str(taken) == text


def test_a_failed_run_records_how_far_it_got_and_a_threshold_failure_its_rejects() -> None:
    record = RunRecord(received=Tally(10), csv=Tally(7), read=Tally(5), merged=Merged(4, 3, 2, 1))
    record.path = PathTaken(ImportPath.CAREFUL, why="COPY: bad")

    assert record.outcome(BadExport("malformed_csv", "line 3")).rows_rejected == 1
    outcome = record.outcome(TooManyRejects("too_many_rejects", "9 of 5", rejected=9))
    assert (outcome.rows_read, outcome.rows_rejected, outcome.bytes_received, outcome.bytes_csv) == (5, 9, 10, 7)
    assert outcome.parse_path == "careful: COPY: bad"

    record.restart()  # the fast path gave up: the careful path counts the file afresh, the download stays
    again = record.outcome()
    counts = (again.rows_read, again.rows_rejected, again.rows_changed, again.bytes_csv, again.bytes_received)
    assert counts == (0, 0, 0, 0, 10)
