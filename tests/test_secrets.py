"""Secrets (benchmarks/checks/secrets.py): with HF_TOKEN and OPENAI_API_KEY set to markers, no command writes or
prints them: not in output files, log lines, cards, or error messages (401/403, retries, DISTILL_DEBUG=1)."""

import gzip
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.checks import secrets as check


def test_the_scanner_finds_a_marker_in_every_form(tmp_path):
    markers = check.new_markers()
    wanted = check.needles(markers)
    hf, key = markers["HF_TOKEN"], markers["OPENAI_API_KEY"]
    # Parquet, compressed and dictionary-encoded: found through the decoded rows whatever the bytes look like.
    pq.write_table(pa.table({"error": [f"Bearer {key}"] * 50 + ["ok"]}), tmp_path / "a.parquet", compression="zstd")
    with zipfile.ZipFile(tmp_path / "training_args.bin", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", f"hub_token={hf}" * 20)
    (tmp_path / "log.gz").write_bytes(gzip.compress(f"token {hf}".encode() * 20))
    (tmp_path / "card.md").write_text(f"masked: hf_***{hf[-20:]}")  # the key's random core alone still counts
    (tmp_path / "clean.json").write_text(json.dumps({"api_key_env": "OPENAI_API_KEY", "token": "hf_***"}))
    leaks = check.scan_tree([tmp_path], wanted)
    assert {Path(p).name: m for p, m in leaks.items()} == {
        "a.parquet": {"OPENAI_API_KEY"},
        "training_args.bin": {"HF_TOKEN"},
        "log.gz": {"HF_TOKEN"},
        "card.md": {"HF_TOKEN"},
    }


def test_a_leaking_command_is_reported(tmp_path):
    rig = check.Rig(tmp_path, quick=True)
    rig.setup(model=False)
    rig.cli("a clean command", ["--help"], [])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "config.yaml").write_text(f"token: {rig.markers['HF_TOKEN']}\n")
    rig.cli("writes the token", ["--help"], [tmp_path / "out"])
    assert [o.ok for o in rig.outcomes] == [True, False]
    assert rig.outcomes[1].note == "LEAK: HF_TOKEN in out/config.yaml"


def test_commands_on_the_openai_engine_leak_nothing(tmp_path):
    """generate (ok, 500/429/drop echoing the key with retries, 401, 403 under DISTILL_DEBUG=1), stats, filter with the
    judge on the openai engine (ok and 401), report, mix, publish dataset (dry run, a dead Hub, a Hub echoing the
    token)."""
    rig = check.Rig(tmp_path, quick=True)
    rig.setup(model=False)
    try:
        check.server_commands(rig)
    finally:
        rig.close()
    rig.everything()
    bad = [f"{o.case}: {o.note}" for o in rig.outcomes if not o.ok]
    assert bad == [], "\n".join(bad)
    assert len(rig.outcomes) == 14
    # The key was really in use: the server got it in the Authorization header, the one place it may go.
    key = rig.markers["OPENAI_API_KEY"]
    assert rig.ok_server.headers and all(h.get("Authorization") == f"Bearer {key}" for h in rig.ok_server.headers)
    # The echoed key reached the error rows' path and was redacted there.
    errors = [e for f in sorted((tmp_path / "gen-flaky" / "data").glob("*.parquet"))
              for e in pq.read_table(f).column("error").to_pylist() if e]  # fmt: skip
    # (the 429s wait their turn instead of becoming error rows: the 500 and the dropped connections remain)
    assert len(errors) == 2 and sum("Bearer ***" in e for e in errors) == 1, errors


@pytest.mark.slow
def test_every_command_leaks_nothing(tmp_path):
    """The whole check, as the reliability run does it: the model commands too (generate on the tiny model, train,
    eval, publish model, run). About 8 minutes on 2 busy cores."""
    outcomes = check.run(tmp_path, quick=True)
    bad = [f"{o.case}: {o.note}" for o in outcomes if not o.ok]
    assert bad == [], "\n".join(bad)
    assert len(outcomes) == 21
