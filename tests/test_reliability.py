"""benchmarks/reliability.py: one table whose last line is `rows lost: N`, and a check that breaks is a failure."""

import json
import sys

from benchmarks import reliability
from benchmarks.checks import Outcome


def test_table_sums_and_ends_with_rows_lost():
    outcomes = [
        Outcome("crash", "generate", 5, 5, note="5 kills landed"),
        Outcome("crash", "filter", 5, 5, rows_lost=2),
        Outcome("secrets", "filter", 1, 0, note="marker in stderr"),
    ]
    table = reliability.format_table(outcomes)
    lines = table.splitlines()
    assert lines[-1] == "rows lost: 2"
    assert "crashes survived: 10 of 10" in table and "secrets leaked: 1" in table
    assert "checks failed: 2 of 3" in table
    assert sum("FAILED" in line for line in lines) == 2


def test_a_broken_check_is_a_failed_line_not_a_crash(tmp_path, monkeypatch):
    module = type(sys)("benchmarks.checks.fuzz")
    module.run = lambda work, quick: 1 / 0
    monkeypatch.setitem(sys.modules, "benchmarks.checks.fuzz", module)
    out = tmp_path / "r.json"
    status = reliability.main(["--quick", "--only", "fuzz", "--work", str(tmp_path), "--json", str(out)])
    result = json.loads(out.read_text())
    assert status == 1 and not result["outcomes"][0]["ok"]
    assert "ZeroDivisionError" in result["outcomes"][0]["note"]


def test_issue_11_classes_are_wired_in():
    from benchmarks.checks import hardening

    assert "hardening" in reliability.CHECKS
    assert set(hardening.PARTS) == {"1", "6", "7", "8", "9", "11", "12"}


def test_a_hardening_part_that_breaks_is_a_failed_line(tmp_path, monkeypatch):
    from benchmarks.checks import hardening

    monkeypatch.setitem(hardening.PARTS, "12", lambda work, quick: 1 / 0)
    outcomes = hardening.run(tmp_path, quick=True, only=("12",))
    assert [(o.case, o.ok) for o in outcomes] == [("12 the check itself", False)]
    assert "ZeroDivisionError" in outcomes[0].note


def test_issue_26_classes_are_wired_in():
    from benchmarks.checks import attacks, round3

    assert "round3" in reliability.CHECKS and "round3" in reliability.SUMMARY
    assert set(round3.PARTS) == {"6", "7", "9", "10", "11", "12", "13"}
    sandbox_rows = {
        "THP pages pinned by vmsplice",
        "tmpfs inode flood",
        "AF_VSOCK and other socket families",
        "memory across a process tree",
        "loop asserts, patched helpers",
        "colliding hashes in the results",
    }
    assert sandbox_rows <= {a.name for a in attacks.ATTACKS}


def test_a_round3_part_that_breaks_is_a_failed_line(tmp_path, monkeypatch):
    from benchmarks.checks import round3

    monkeypatch.setitem(round3.PARTS, "13", lambda work, quick: 1 / 0)
    outcomes = round3.run(tmp_path, quick=True, only=("13",))
    assert [(o.case, o.ok) for o in outcomes] == [("13 the check itself", False)]


def test_round3_links_and_input_rows_in_the_suite(tmp_path):
    """The cheap rows of issue 26 run here too: a regression shows the day it happens."""
    from benchmarks.checks import round3

    outcomes = round3.run(tmp_path, quick=True, only=("6", "7"))
    assert len(outcomes) == 3 and all(o.ok for o in outcomes), [o.note for o in outcomes]
