"""The parts of `python benchmarks/reliability.py`, one module per threat (issue 6).

Each module has `run(work: Path, quick: bool) -> list[Outcome]`: it does its work under `work` (a fresh
temporary folder) and reports one Outcome per line of the table. `quick` is the CI-sized version. The fast
parts are also run by tests in `tests/`, so CI sees a regression the day it happens.
"""

from dataclasses import dataclass


@dataclass(slots=True)
class Outcome:
    """One line of the reliability table."""

    check: str  # the part: "crash", "faults", "fuzz", "attacks", "judge", "secrets"
    case: str  # what was tried: "generate", "500 + 429 + drop at 20%", "prompt readers", "fork bomb", ...
    tried: int  # events: kills, faults injected, inputs fuzzed, attacks run, commands run with markers
    survived: int  # of those, how many were handled as they must be (recovered, contained, no leak)
    rows_lost: int = 0  # samples missing or duplicated against the reference run; must be 0
    note: str = ""  # the figures behind it: success rate, added latency, sway rate, leaks found

    @property
    def ok(self) -> bool:
        return self.survived == self.tried and self.rows_lost == 0
