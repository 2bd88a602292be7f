"""`distill generate` end to end on a tiny in-process Llama with the transformers engine (seconds, offline)."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import run_cli

from distill.cli import main
from distill.schema import GENERATE_SCHEMA


def generate(*args, expect=0):
    result = CliRunner().invoke(main, ["generate", *args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def rows(out):
    return pq.read_table(out / "data").to_pylist()


def base_args(tiny_model, source, out, *extra):
    return ["--model", tiny_model, "--source", str(source), "--out", str(out), "--max-tokens", "8", "-q", *extra]


def test_writes_every_column_with_the_explicit_schema(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out"
    result = generate(*base_args(tiny_model, prompts_file, out, "-n", "2"))
    assert "wrote 12 samples for 6 prompts" in result.output
    table = pq.read_table(out / "data")
    assert table.schema.remove_metadata() == GENERATE_SCHEMA
    got = table.to_pylist()
    assert len(got) == 12 and len({r["id"] for r in got}) == 12
    assert sorted((r["prompt_id"], r["sample_index"]) for r in got) == [(f"p{i}", k) for i in range(6) for k in (0, 1)]
    for r in got:
        assert r["error"] is None and r["teacher"] == tiny_model and r["domain"] == "math"
        assert r["finish_reason"] in ("stop", "length") and r["truncated"] == (r["finish_reason"] == "length")
        assert r["completion_tokens"] <= 8 and r["prompt_tokens"] > 0
        assert json.loads(r["sampling"]) == {
            "temperature": 0.6,
            "top_p": 0.95,
            "max_tokens": 8,
            "stop": [],
            "prefill": "",
        }
        assert r["gold"] == str(2 * int(r["prompt_id"][1:]))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples"] == 12 and stats["prompts"] == 6 and stats["errors"] == 0
    assert stats["completion_tokens"] == sum(r["completion_tokens"] for r in got)
    assert "tokens_per_second" in stats
    resolved = (out / "config.resolved.yaml").read_text()
    assert "num_samples: 2" in resolved and "max_tokens: 8" in resolved


def test_folder_loads_with_datasets(tiny_model, prompts_file, tmp_path):
    import datasets

    out = tmp_path / "out"
    generate(*base_args(tiny_model, prompts_file, out, "-n", "2", "--rows-per-file", "5"))
    assert len(list((out / "data").glob("*.parquet"))) == 3
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert ds.num_rows == 12 and "reasoning" in ds.column_names


def test_ids_are_stable_across_runs_and_change_with_sampling(tiny_model, prompts_file, tmp_path):
    generate(*base_args(tiny_model, prompts_file, tmp_path / "a"))
    generate(*base_args(tiny_model, prompts_file, tmp_path / "b"))
    generate(*base_args(tiny_model, prompts_file, tmp_path / "c", "--temperature", "1.0"))
    ids = {name: {r["id"] for r in rows(tmp_path / name)} for name in "abc"}
    assert ids["a"] == ids["b"]
    assert not ids["a"] & ids["c"]


def test_existing_output_needs_resume_or_overwrite(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out"
    generate(*base_args(tiny_model, prompts_file, out))
    result = generate(*base_args(tiny_model, prompts_file, out), expect=1)
    assert result.output.strip() == f"Error: output folder {out} already holds samples: pass --resume or --overwrite"
    generate(*base_args(tiny_model, prompts_file, out, "--overwrite", "-n", "2"))
    assert len(rows(out)) == 12


def test_overwrite_refuses_a_folder_distill_did_not_write(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    result = generate(*base_args(tiny_model, prompts_file, out, "--overwrite"), expect=1)
    assert "refusing to overwrite" in result.output and (out / "thesis.tex").exists()


def test_resume_completes_only_missing_samples(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out"
    generate(*base_args(tiny_model, prompts_file, out, "-n", "2", "--rows-per-file", "4"))
    before = {r["id"]: r["completion"] for r in rows(out)}
    files = sorted((out / "data").glob("*.parquet"))
    lost = {r["id"] for r in pq.read_table(files[1]).to_pylist()}
    files[1].unlink()
    (out / "stats.json").unlink()
    result = generate(*base_args(tiny_model, prompts_file, out, "-n", "2", "--rows-per-file", "4", "--resume"))
    after = rows(out)
    assert len(after) == 12 and {r["id"] for r in after} == set(before)
    kept = [r for r in after if r["id"] not in lost]
    assert all(before[r["id"]] == r["completion"] for r in kept)  # finished rows were not regenerated
    assert json.loads((out / "stats.json").read_text())["generated_this_run"] == len(lost) == 4
    assert "wrote 12 samples" in result.output
    # More samples per prompt later: resume adds sample indices 2 and 3 only.
    generate(*base_args(tiny_model, prompts_file, out, "-n", "4", "--resume"))
    assert len(rows(out)) == 24


def test_resume_of_a_complete_folder_starts_no_engine(tiny_model, prompts_file, tmp_path, monkeypatch):
    # eval --resume re-runs generate for every model; a vLLM engine start costs a minute or more per model
    import distill.generate.run as run

    out = tmp_path / "out"
    generate(*base_args(tiny_model, prompts_file, out))
    before = rows(out)
    built = []
    real = run.make_engine
    monkeypatch.setattr(run, "make_engine", lambda config: built.append(config) or real(config))
    result = generate(*base_args(tiny_model, prompts_file, out, "--resume"))
    assert built == [] and rows(out) == before and "wrote 6 samples for 6 prompts" in result.output
    stats = json.loads((out / "stats.json").read_text())
    assert stats["generated_this_run"] == 0 and stats["samples"] == 6
    # a missing sample goes through the engine; another sampling is refused before any engine loads; and
    # --retry-errors with no failed row has nothing to redo (the engine loads for the first missing sample only)
    generate(*base_args(tiny_model, prompts_file, out, "--resume", "-n", "2", "--no-cache"))
    assert len(built) == 1 and len(rows(out)) == 12
    result = generate(
        *base_args(tiny_model, prompts_file, out, "--resume", "-n", "2", "--temperature", "1.0"), expect=1
    )
    assert "cannot resume" in result.output
    generate(*base_args(tiny_model, prompts_file, out, "--resume", "-n", "2", "--retry-errors"))
    assert len(built) == 1 and len(rows(out)) == 12


def test_resume_refuses_other_sampling(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out"
    generate(*base_args(tiny_model, prompts_file, out))
    result = generate(*base_args(tiny_model, prompts_file, out, "--resume", "--temperature", "1.0"), expect=1)
    assert "cannot resume" in result.output and "sampling" in result.output


def test_too_long_prompt_is_an_error_row_and_retry_errors_regenerates(tiny_model, tmp_path):
    source = tmp_path / "p.jsonl"
    source.write_text(
        json.dumps({"id": "long", "problem": "sea " * 600})
        + "\n"
        + json.dumps({"id": "short", "problem": "sea"})
        + "\n"
    )
    out = tmp_path / "out"
    generate(*base_args(tiny_model, source, out))
    by_id = {r["prompt_id"]: r for r in rows(out)}
    assert by_id["long"]["error"].startswith("context_length:") and by_id["long"]["completion"] is None
    assert by_id["short"]["error"] is None
    stats = json.loads((out / "stats.json").read_text())
    assert stats["errors_by_kind"] == {"context_length": 1}
    # A plain resume keeps the failed row; --retry-errors tries it again (it fails again: still too long).
    generate(*base_args(tiny_model, source, out, "--resume"))
    assert json.loads((out / "stats.json").read_text())["generated_this_run"] == 0
    generate(*base_args(tiny_model, source, out, "--resume", "--retry-errors"))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["generated_this_run"] == 1 and stats["samples"] == 2 and stats["duplicate_ids"] == 0


def test_prefill_and_stop_strings(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out"
    generate(*base_args(tiny_model, prompts_file, out, "--prefill-think", "--temperature", "0"))
    for r in rows(out):
        assert r["completion"].startswith("<think>\n")
        assert json.loads(r["sampling"])["prefill"] == "<think>\n"
        if "</think>" not in r["completion"]:
            assert r["answer"] == ""  # an unclosed think block is all reasoning


def test_shards_write_disjoint_files_and_stats_validates(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "out"
    for i in range(3):
        generate(*base_args(tiny_model, prompts_file, out, "-n", "2", "--num-shards", "3", "--shard-index", str(i)))
        assert (out / "stats.json").exists() == (i == 2)  # complete only when every shard is done
    got = rows(out)
    assert len(got) == 12 and len({r["id"] for r in got}) == 12
    prefixes = {f.name[:20] for f in (out / "data").glob("*.parquet")}
    assert prefixes <= {f"train-0000{i}-of-00003" for i in range(3)}
    result = CliRunner().invoke(main, ["stats", str(out)])
    assert result.exit_code == 0, result.output
    assert "samples: 12" in result.output and "duplicate_ids: 0" in result.output
    # Damage: a duplicated file and an unreadable one.
    first = sorted((out / "data").glob("*.parquet"))[0]
    (out / "data" / "train-00009-of-00010-part-00000.parquet").write_bytes(first.read_bytes())
    (out / "data" / "train-00009-of-00010-part-00001.parquet").write_bytes(b"not parquet")
    result = CliRunner().invoke(main, ["stats", str(out)])
    assert result.exit_code == 1
    assert "duplicate ids" in result.output and "unreadable" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "missing.jsonl"], "source not found: missing.jsonl"),
        (["--engine", "tgi"], "unknown engine `tgi`: choose one of transformers, vllm, openai"),
        (["--domain", "poetry"], "unknown domain `poetry`"),
        (["--model", "/no/such/model"], "cannot load model `/no/such/model`"),
        (["--prompt-column", "nope"], "column `nope` not found"),
    ],
)
def test_bad_input_exits_1_and_never_marks_output_complete(tiny_model, prompts_file, tmp_path, args, message):
    out = tmp_path / "out"
    argv = base_args(tiny_model, prompts_file, out)
    for flag, value in zip(args[::2], args[1::2], strict=True):
        argv[argv.index(flag) + 1] = value if flag in argv else argv.extend([flag, value]) or value
    result = CliRunner().invoke(main, ["generate", *argv])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (out / "stats.json").exists()
    assert "Traceback" not in result.output


def test_malformed_jsonl_names_the_line(tiny_model, tmp_path):
    source = tmp_path / "p.jsonl"
    source.write_text('{"problem": "a"}\n{"problem": "b"\n')
    result = CliRunner().invoke(main, ["generate", *base_args(tiny_model, source, tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {source}:2: not valid JSON (Expecting ',' delimiter at column 16)"
    assert not (tmp_path / "out").exists()


def test_config_file_and_flag_precedence(tiny_model, prompts_file, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"generate:\n  source: {prompts_file}\n  model: {tiny_model}\n  num_samples: 3\n"
        f"  max_tokens: 4\n  quiet: true\n"
    )
    out = tmp_path / "out"
    generate("--config", str(recipe), "--out", str(out), "-n", "1")
    got = rows(out)
    assert len(got) == 6 and json.loads(got[0]["sampling"])["max_tokens"] == 4
    recipe.write_text("generate:\n  sorce: x\n")
    result = CliRunner().invoke(main, ["generate", "--config", str(recipe), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 1 and "did you mean `source`" in result.output


def test_progress_bar_on_stderr_and_quiet(tiny_model, prompts_file, tmp_path):
    args = ["--model", tiny_model, "--source", str(prompts_file), "--max-tokens", "4"]
    loud = run_cli("generate", *args, "--out", str(tmp_path / "a"))
    assert loud.returncode == 0, loud.stderr
    assert "sample/s" in loud.stderr or "s/sample" in loud.stderr
    assert "tok/s" in loud.stderr and "wrote 6 samples" in loud.stdout
    quiet = run_cli("generate", *args, "--out", str(tmp_path / "b"), "-q")
    assert "tok/s]" not in quiet.stderr and "wrote 6 samples" in quiet.stdout


@pytest.mark.parametrize("command", [[], ["generate"], ["stats"]])
def test_help(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def _many_prompts(tmp_path, n=40):
    source = tmp_path / "many.jsonl"
    source.write_text("".join(json.dumps({"id": f"q{i}", "problem": f"Calculate {i} + 3."}) + "\n" for i in range(n)))
    return source


def _kill_midway(argv, out, sig):
    """Start a run, wait until some files are written, then send `sig`."""
    # Ctrl-C's SIGINT at its default in the child: a shell that starts the test suite in the background (`cmd &`
    # without job control) ignores SIGINT, and the child would inherit that and finish with 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "data").glob("train-*.parquet"))) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted: " + proc.stderr.read()[-500:]
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_resumes_to_the_same_ids(tiny_model, tmp_path, sig):
    source = _many_prompts(tmp_path)
    common = [
        "--model",
        tiny_model,
        "--source",
        str(source),
        "-n",
        "2",
        "--max-tokens",
        "64",
        "--batch-size",
        "1",
        "--rows-per-file",
        "2",
        "-q",
        "--temperature",
        "1.0",
        "--no-cache",  # the second run must generate, not find the first's answers
    ]
    whole = tmp_path / "whole"
    assert run_cli("generate", *common, "--out", str(whole)).returncode == 0
    out = tmp_path / "cut"
    proc = _kill_midway(["generate", *common, "--out", str(out)], out, sig)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "rerun with --resume" in proc.stderr.read()
    partial = rows(out)
    assert 0 < len(partial) < 80 and not (out / "stats.json").exists()
    assert run_cli("generate", *common, "--out", str(out)).returncode == 1  # still needs --resume
    resumed = run_cli("generate", *common, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    got = rows(out)
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in rows(whole))
    assert len(got) == len({r["id"] for r in got}) == 80
    assert not list((out / "data").glob(".*.tmp"))
    check = run_cli("stats", str(out))
    assert check.returncode == 0 and "complete: True" in check.stdout


def test_help_imports_no_heavy_library():
    """`distill --help` stays fast: torch, vllm and transformers are imported only by the commands that run."""
    code = "import sys, distill.cli; print(sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_no_think_answers_without_chain_of_thought(tiny_model, prompts_file, tmp_path):
    from distill.filter.cascade import to_messages

    out = tmp_path / "out"
    generate(*base_args(tiny_model, prompts_file, out, "--no-think"))
    for r in rows(out):
        assert r["completion"].startswith("<think>\n\n</think>\n\n")
        assert r["reasoning"] == "" and json.loads(r["sampling"])["prefill"] == "<think>\n\n</think>\n\n"
        # For SFT such a row teaches a direct answer: no think block in the assistant turn.
        assert to_messages(r)[-1] == {"role": "assistant", "content": r["answer"]}
    result = generate(*base_args(tiny_model, prompts_file, tmp_path / "o2", "--no-think", "--prefill-think"), expect=1)
    assert "contradict" in result.output
