"""`distill filter --backend ray`: the local backend's rows, verdicts and stats.json, and shard-level resume.

One Ray for the module (2 CPUs, as CI has), started here; the CLI runs in this process and joins it.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from test_filter import row, write_generate
from test_filter_resume import ROWS

import distill.filter.ray_backend as ray_backend
from distill.cli import main

ray = pytest.importorskip("ray")

MODES = {
    "plain": [],
    "dedupe": ["--dedupe", "near", "--dedupe-threshold", "0.5"],
    "max-per-prompt": ["--max-per-prompt", "1"],
    "select-best": ["--select", "best"],
}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """24 rows (right and wrong answers, an error, a near-duplicate prompt) in 4 shards, one empty, and a benchmark
    that one prompt copies: every drop reason the local backend knows, spread over the shards."""
    root = tmp_path_factory.mktemp("inputs")
    copied = "Find the sum of all positive divisors of the number twelve."
    rows = ROWS + [row(24, copied, "<think>\nsum\n</think>\n\nSo \\boxed{28}.", "28", prompt_id="p24")]
    folders = [write_generate(root / f"gen{part}", rows[part * 9 : (part + 1) * 9]) for part in range(3)]
    folders.append(write_generate(root / "gen3", []))
    bench = root / "aime.jsonl"
    bench.write_text(json.dumps({"problem": "find the sum of all positive divisors of the number twelve"}) + "\n")
    return [str(f) for f in folders], str(bench)


def args(inputs, out, mode, backend="local", extra=()):
    folders, bench = inputs
    # math.workers=0: math-verify in-process (a pool's start-up would dominate these tiny runs)
    return ["filter", *folders, "--out", str(out), "--verifiers", "math,format", "--option", "math.workers=0", "-q",
            "--batch-size", "4", "--decontaminate", bench, "--backend", backend, *MODES[mode], *extra]  # fmt: skip


def outcome(out):
    """Every row of data/ and rejected/ (all columns, by id) and the exact text of stats.json."""

    def rows(folder):
        files = sorted((out / folder).glob("*.parquet"))
        return sorted((r for f in files for r in pq.read_table(f).to_pylist()), key=lambda r: r["id"])

    return rows("data"), rows("rejected"), (out / "stats.json").read_text()


def invoke(argv):
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def expected(inputs, tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    results = {}
    for mode in MODES:
        invoke(args(inputs, root / mode, mode))
        results[mode] = outcome(root / mode)
    return results


@pytest.mark.parametrize("mode", MODES)
def test_ray_backend_writes_what_the_local_backend_writes(cluster, inputs, expected, tmp_path, mode):
    out = tmp_path / "ray"
    invoke(args(inputs, out, mode, "ray"))
    kept, rejected, stats = outcome(out)
    assert (kept, rejected, stats) == expected[mode]
    reasons = {r["filter_reason"] for r in rejected}
    assert {"generate_error", "contaminated", "math_wrong_answer"} <= reasons
    assert (mode == "dedupe") == ("duplicate_near" in reasons)
    assert (mode in ("max-per-prompt", "select-best")) == ("not_selected" in reasons)
    # one file per input shard under its own name, and a commit marker per shard
    names = {p.name for p in (out / "rejected").glob("*.parquet")}
    assert "rejected-00000-of-00004.parquet" in names and "rejected-00003-of-00004.parquet" not in names
    assert sorted(p.name for p in (out / ".shards").glob("shard-*.json")) == [f"shard-{i:05d}.json" for i in range(4)]
    assert not (out / ".staging").exists()


def test_stages_group_cheap_rules_with_a_neighbour():
    groups = ray_backend.stage_groups
    assert groups(["math", "format"], {}) == [["math", "format"]]
    assert groups(["format", "language", "math", "code", "length"], {}) == [["format", "language", "math"],
                                                                            ["code", "length"]]  # fmt: skip
    assert groups(["format", "language"], {}) == [["format", "language"]]
    # a cheap rule the user gave its own budget keeps its own stage
    assert groups(["math", "format", "language"], {"format": {"max_actors": 1}}) == [["math"], ["format", "language"]]


def test_one_stage_per_verifier_writes_the_same(cluster, inputs, expected, tmp_path):
    """format and math each in a stage of their own (the cascade's state travels between them as columns)."""
    config = tmp_path / "stages.yaml"
    config.write_text("ray_stages: {format: {max_actors: 1}, math: {max_actors: 1}}\n")
    out = tmp_path / "ray"
    invoke(args(inputs, out, "dedupe", "ray", extra=["--config", str(config), "--verifiers", "format,math"]))
    local_out = tmp_path / "local"
    invoke(args(inputs, local_out, "dedupe", extra=["--verifiers", "format,math"]))
    assert outcome(out) == outcome(local_out)
    assert ray_backend.stage_groups(["format", "math"], {"format": {}, "math": {}}) == [["format"], ["math"]]


def test_imported_lists_and_unchecked_rows_match_the_local_backend(cluster, tmp_path):
    """A list column exploded into one row per sample and rows no answer check applies to (counted in stats.json
    as `unchecked`): the same rows and stats on both backends."""
    records = [
        {"q": "What is 1 + 1?", "r": ["wrong: \\boxed{1}", "right: \\boxed{2}"], "g": "2", "domain": None},
        {"q": "Say hello.", "r": ["Hello there."], "g": None, "domain": "general"},
    ]
    source = tmp_path / "imported.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    flags = ["--verifiers", "math,format", "--option", "math.workers=0", "--option", "format.require_think=false"]
    flags += ["--map", "problem=q", "--map", "completion=r", "--map", "gold=g", "-q"]
    for backend in ("local", "ray"):
        invoke(["filter", str(source), "--out", str(tmp_path / backend), "--backend", backend, *flags])
    local, ray_out = outcome(tmp_path / "local"), outcome(tmp_path / "ray")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "origin"} for r in rows]  # noqa: E731
    assert (strip(ray_out[0]), strip(ray_out[1])) == (strip(local[0]), strip(local[1]))
    assert json.loads(ray_out[2]) == json.loads(local[2])
    assert json.loads(local[2])["unchecked"] == {"rows": 1, "by_domain": {"general": 1}}
    assert sorted(r["sample_index"] for r in local[0] + local[1] if r["domain"] == "math") == [0, 1]


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs."""


@pytest.mark.slow  # ~110 s on 2 loaded cores: five Ray runs and five resumes
@pytest.mark.parametrize("mode", ["select-best"])
def test_killed_before_each_marker_resumes_to_the_same_output(cluster, inputs, expected, tmp_path, monkeypatch, mode):
    save = ray_backend._save_json
    markers = 4 + (mode == "select-best")  # one per shard, and one for the selection
    for kill_at in range(1, markers + 1):
        calls = {"n": 0}

        def dying(path, value, kill_at=kill_at, calls=calls):
            if path.name != ray_backend.RECORD:
                calls["n"] += 1
                if calls["n"] == kill_at:  # the shard's files are written, its marker is not
                    raise Killed
            save(path, value)

        out = tmp_path / f"killed{kill_at}"
        monkeypatch.setattr(ray_backend, "_save_json", dying)
        with pytest.raises(Killed):
            CliRunner().invoke(main, args(inputs, out, mode, "ray"), catch_exceptions=False)
        assert not (out / "stats.json").exists()
        monkeypatch.setattr(ray_backend, "_save_json", save)
        invoke(args(inputs, out, mode, "ray", ["--resume"]))
        assert outcome(out) == expected[mode], f"killed before marker {kill_at}"


@pytest.mark.slow  # ~70 s on 2 loaded cores
def test_sigkill_mid_run_then_resume_gives_the_same_output(cluster, tmp_path):
    """A real SIGKILL of a `distill filter --backend ray` process (joined to this Ray) after some shards committed."""
    from benchmarks.synth import write_generate_output

    source = tmp_path / "gen"
    write_generate_output(source, 1200, samples=4, seed=3, rows_per_file=30)  # 40 shards
    common = ["filter", str(source), "--verifiers", "math,format", "--option", "math.workers=0", "--dedupe", "exact",
              "--batch-size", "16", "-q"]  # fmt: skip
    invoke([*common, "--out", str(tmp_path / "local")])
    out = tmp_path / "ray"
    process = subprocess.Popen(
        [sys.executable, "-m", "distill", *common, "--out", str(out), "--backend", "ray", "--ray-address", cluster],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if len(list((out / ".shards").glob("shard-*.json"))) >= 3:
            break
        time.sleep(0.002)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]  # finished before the kill: too fast
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = len(list((out / ".shards").glob("shard-*.json")))
    assert 3 <= done < 40 and not (out / "stats.json").exists()
    invoke([*common, "--out", str(out), "--backend", "ray", "--resume"])
    assert outcome(out) == outcome(tmp_path / "local")


def test_missing_ray_names_the_extra(inputs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    result = CliRunner().invoke(main, args(inputs, tmp_path / "out", "plain", "ray"))
    assert result.exit_code == 1
    assert "pip install 'distill[ray]'" in result.output and len(result.output.strip().splitlines()) == 1


def test_backends_refuse_to_resume_each_others_output(cluster, inputs, tmp_path):
    out = tmp_path / "out"
    invoke(args(inputs, out, "plain", "ray"))
    (out / "stats.json").unlink()
    result = CliRunner().invoke(main, args(inputs, out, "plain", "local", ["--resume"]))
    assert result.exit_code == 1 and "--backend ray" in result.output
    result = CliRunner().invoke(main, args(inputs, out, "plain", "rya"))
    assert result.exit_code == 1 and "did you mean `ray`" in result.output


@pytest.mark.slow  # four real `distill filter` processes, two starting their own Ray: ~60 s
def test_benchmark_items_compare_backends_on_identical_outputs(tmp_path):
    from benchmarks import ray_filter

    items, summary = ray_filter.compare(200, 600, 1, tmp_path)
    walls = summary["walls"]
    # at these sizes run-to-run noise can outweigh 400 rows, so the per-row lines are tested apart (below)
    assert len(items) == 4 and items[2]["unit"] == "rows/s" and items[3]["unit"] == "s"
    end_to_end = items[0]
    assert end_to_end["baseline"] == pytest.approx(200 / walls["200"]["local"][0], rel=1e-3)
    # measure() raises when the outputs differ; both outputs are there to compare
    assert ray_filter._ids(tmp_path / "filter-ray-600-0") == ray_filter._ids(tmp_path / "filter-local-600-0")


def test_per_row_rate_and_start_up_from_two_sizes():
    from benchmarks import ray_filter

    # local: 5 s fixed + 1 ms a row; ray: 17 s fixed + 1.25 ms a row
    med = {1000: {"local": 6.0, "ray": 18.25}, 5000: {"local": 10.0, "ray": 23.25}}
    (rate, start_up), slope, fixed = ray_filter.per_row_items(1000, 5000, med, "label")
    assert slope == pytest.approx({"local": 1000.0, "ray": 800.0})
    assert fixed == pytest.approx({"local": 5.0, "ray": 17.0})
    assert rate["ours"] == pytest.approx(800) and rate["ratio"] == pytest.approx(0.8) and rate["met"] is True
    assert start_up["unit"] == "s" and start_up["met"] is None

    # a larger run that was not slower (noise at tiny sizes) gives no rate at all, and says why
    med[5000]["ray"] = 18.0
    lines, slope, fixed = ray_filter.per_row_items(1000, 5000, med, "label")
    assert slope == {} and fixed == {} and all(line["met"] is None for line in lines)
    assert all("not measurable" in line["name"] and line["ours"] != line["ours"] for line in lines)  # NaN
