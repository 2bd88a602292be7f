"""distill rl: verdicts map to rewards (None stays None, weights applied); a few GRPO steps on the tiny model
change the weights, write rewards.jsonl and report.html; --resume continues from the last checkpoint."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill.errors import DistillError
from distill.rl.grpo import RlConfig, run_rl
from distill.rl.rewards import RewardSpec, make_reward_function, parse_reward, weighted_reward


def test_verdicts_map_to_rewards_and_none_stays_none():
    math_reward = make_reward_function(RewardSpec("math", 1.0, {"workers": 0}))
    completions = [
        [{"role": "assistant", "content": "<think>2+2</think> \\boxed{4}"}],
        [{"role": "assistant", "content": "<think>2+2</think> \\boxed{5}"}],
        [{"role": "assistant", "content": "<think>?</think> \\boxed{4}"}],
    ]
    rewards = math_reward(prompts=[None] * 3, completions=completions, gold=["4", "4", None], domain=["math"] * 3)
    assert rewards == [1.0, 0.0, None]  # no gold: could not check -> TRL's no-reward, not 0
    assert math_reward.__name__ == "math"


def test_format_reward_marks_truncated_completion():
    fmt = make_reward_function(RewardSpec("format"), max_completion_length=3, eos_token_id=99)
    text = [[{"role": "assistant", "content": "<think>a</think> \\boxed{1}"}]]
    full = fmt(prompts=[None], completions=text, completion_ids=[[1, 2, 3]], domain=["math"])
    ended = fmt(prompts=[None], completions=text, completion_ids=[[1, 2, 99]], domain=["math"])
    assert full == [0.0] and ended == [1.0]


def test_weights_apply_and_none_drops_out():
    assert weighted_reward([1.0, 1.0], [1.0, 0.2]) == pytest.approx(1.2)
    assert weighted_reward([None, 1.0], [1.0, 0.2]) == pytest.approx(0.2)
    assert weighted_reward([None, None], [1.0, 0.2]) is None
    assert parse_reward("format=0.2").weight == 0.2 and parse_reward("math").weight == 1.0
    with pytest.raises(DistillError, match="did you mean `math`"):
        parse_reward("maths=1")
    with pytest.raises(DistillError, match="must be a number"):
        parse_reward("math=high")


def _config(tiny_model, prompts_file, out, **kw):
    base = dict(
        source=str(prompts_file),
        model=tiny_model,
        out=str(out),
        rewards=[
            RewardSpec("math", 1.0, {"extraction": "lenient", "workers": 0}),
            RewardSpec("length", 0.5),
            # Word-level repetition varies between random completions, so groups have a non-zero advantage.
            RewardSpec("repetition", 1.0, {"n": 1, "max_ratio": 0.2}),
        ],
        num_generations=4,
        max_completion_length=12,
        max_steps=2,
        save_steps=2,
        learning_rate=1e-2,
        num_prompts=4,
    )
    base.update(kw)
    return RlConfig(**base)


def test_grpo_steps_change_weights_log_rewards_and_resume(tiny_model, prompts_file, tmp_path):
    out = tmp_path / "rl"
    run_rl(_config(tiny_model, prompts_file, out))
    before = load_file(f"{tiny_model}/model.safetensors")
    after = load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(line) for line in (out / "rewards.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    keys = {"reward", "reward_math", "reward_length", "reward_repetition", "pass_rate", "completion_length", "kl"}
    assert keys <= set(rows[0])
    assert rows[0]["reward_length"] == 1.0  # no length bounds: every completion passes
    assert rows[0]["completion_length"] > 0
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert (out / "checkpoint-2").is_dir()

    with pytest.raises(DistillError, match="--resume"):
        run_rl(_config(tiny_model, prompts_file, out))
    run_rl(_config(tiny_model, prompts_file, out, max_steps=4, resume=True))
    rows = [json.loads(line) for line in (out / "rewards.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # continued from step 2, not started over
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def test_out_never_is_or_lies_inside_an_input(tiny_model, prompts_file, tmp_path):
    # --overwrite would otherwise delete the policy's own folder or the prompts.
    for out in (tiny_model, f"{tiny_model}/rl", prompts_file.parent):
        with pytest.raises(DistillError, match="never writes into its inputs"):
            run_rl(_config(tiny_model, prompts_file, out, overwrite=True))
    assert (Path(tiny_model) / "model.safetensors").exists() and prompts_file.exists()


def test_cli_help_and_errors(tmp_path, prompts_file):
    from click.testing import CliRunner

    from distill.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["rl", "--help"])
    assert result.exit_code == 0 and "--num-generations" in result.output and "--reward" in result.output
    result = runner.invoke(main, ["rl", str(prompts_file), "--out", str(tmp_path / "o"), "--reward", "maths=1"])
    assert result.exit_code == 1 and "did you mean `math`" in result.output
    result = runner.invoke(
        main, ["rl", str(prompts_file), "--out", str(tmp_path / "o"), "--loss-type", "ppo", "--max-steps", "1"]
    )
    assert result.exit_code == 1 and "unknown loss type `ppo`" in result.output
    assert not (tmp_path / "o" / "rewards.jsonl").exists()


def test_cli_trains_with_reward_options(tiny_model, prompts_file, tmp_path):
    from click.testing import CliRunner

    from distill.cli import main

    out = tmp_path / "cli-rl"
    args = ["rl", str(prompts_file), "--model", tiny_model, "--out", str(out), "--num-prompts", "2", "-G", "2"]
    args += ["--max-steps", "1", "--max-completion-length", "4", "--reward", "math=1", "--reward", "format=0.2"]
    args += ["--reward-option", "math.workers=0", "--trl", "logging_steps=1", "--prompt-template", "Q: {problem}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(str(out))
    row = json.loads((out / "rewards.jsonl").read_text().splitlines()[0])
    assert row["reward_format"] == 0.0  # 4 tokens of a random model: no <think>, cut off
    resolved = (out / "config.resolved.yaml").read_text()
    assert "workers: 0" in resolved and "weight: 0.2" in resolved
    assert "prompt_template: 'Q: {problem}'" in resolved  # the shared prompt-source flags reach the config
    result = CliRunner().invoke(main, ["rl", str(prompts_file), "--source", str(prompts_file), "--out", str(out)])
    assert result.exit_code != 0 and "PROMPTS or --source" in result.output


def _rl_recipe(tiny_model, prompts_file, tmp_path, **extra) -> dict:
    rl = {
        "source": str(prompts_file),
        "model": tiny_model,
        "num_prompts": 2,
        "num_generations": 2,
        "max_steps": 1,
        "max_completion_length": 4,
        "rewards": {"math": {"weight": 1.0, "workers": 0}, "format": 0.2},
    }
    return {"out": str(tmp_path / "run"), "rl": rl, **extra}


def test_recipe_rl_before_generate_makes_the_rl_output_the_teacher(tiny_model, prompts_file, tmp_path):
    from distill.pipeline import plan, run_steps, select

    generate = {"source": str(prompts_file), "num_prompts": 2, "max_tokens": 4, "prefill_think": False}
    recipe = _rl_recipe(tiny_model, prompts_file, tmp_path, generate=generate)
    steps = plan(recipe)
    assert [s.stage for s in steps] == ["rl", "generate"]
    rl_out = steps[0].out
    assert steps[1].config.model == str(rl_out)
    assert steps[0].config.rewards[1].weight == 0.2
    run_steps(steps, select(steps, None, None), lambda line: None)
    rows = [json.loads(line) for line in (rl_out / "rewards.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    import pyarrow.parquet as pq

    table = pq.read_table(next((steps[1].out / "data").glob("*.parquet")))
    assert set(table.column("teacher").to_pylist()) == {str(rl_out)}
    # A rerun skips the finished rl step.
    again = plan(recipe)
    assert again[0].complete


def test_recipe_rl_after_train_starts_from_the_student_and_is_evaluated(tiny_model, prompts_file, tmp_path):
    from distill.pipeline import plan, select

    recipe = _rl_recipe(
        tiny_model,
        prompts_file,
        tmp_path,
        train={"student": tiny_model, "data": [str(tmp_path / "data")]},
        eval={"source": str(prompts_file)},
    )
    recipe["rl"].pop("model")
    steps = plan(recipe)
    assert [s.stage for s in steps] == ["train", "rl", "eval"]
    assert steps[1].config.model == str(steps[0].out)
    assert steps[2].config.models == [tiny_model, str(steps[0].out), str(steps[1].out)]
    assert [s.stage for s in select(steps, "rl", "rl")] == ["rl"]
    recipe["rl"]["position"] = "before-train"
    with pytest.raises(DistillError, match="rl.position must be one of"):
        plan(recipe)
    recipe["rl"]["positon"] = recipe["rl"].pop("position")
    with pytest.raises(DistillError, match="did you mean `position`"):
        plan(recipe)


def test_cpu_logprobs_match_trls_tiled_head(tiny_model):
    """On CPU the policy's log-probabilities and entropies come from the model's own head (faster there than TRL's
    tiles): same values and same gradients, padding zeroed as TRL does it."""
    import contextlib
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM
    from trl import GRPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    from distill.rl.grpo import cpu_grpo_trainer_class

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    accelerator = SimpleNamespace(autocast=contextlib.nullcontext, is_main_process=True)
    trainer = SimpleNamespace(temperature=0.7, accelerator=accelerator)
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded prompt
    mask[1, -2:] = 0  # a completion that ended early
    results = {}
    for name, method in (("ours", cpu_grpo_trainer_class()._get_per_token_logps_and_entropies),
                         ("trl", GRPOTrainer._get_per_token_logps_and_entropies)):  # fmt: skip
        model.zero_grad()
        logps, entropy, _ = method(trainer, model, ids, mask, 5, batch_size=2, compute_entropy=True)
        (logps.sum() + entropy.sum()).backward()
        results[name] = (logps.detach(), entropy.detach(), model.lm_head.weight.grad.clone())
    assert results["ours"][0].shape == (3, 5) and bool((results["ours"][0][1, -2:] == 0).all())
    for ours, theirs in zip(results["ours"], results["trl"], strict=True):
        assert torch.allclose(ours, theirs, atol=1e-5)
    assert results["ours"][0].abs().sum() > 0
