"""`distill train` on the tiny in-process Llama: full fine-tuning, LoRA, resume, masks, templates, bad input."""

import json
import math
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from distill.config import TrainConfig
from distill.errors import DistillError
from distill.schema import filter_schema
from distill.train.cli import train_command
from distill.train.sft import choose_precision, run_train, sft_arguments
from distill.train.templates import CHATML, PROBE, check_template, resolve_template, without_generation_markers

QUESTION = "Calculate {i} + 3. Please reason step by step, and put your final answer within \\boxed{{}}."
ANSWER = "<think>\ntwo plus three is five\n</think>\n\nThe answer is \\boxed{{5}}."
# DeepSeek's R1-Distill trick, in ChatML tokens the tiny tokenizer has: keep only the text after </think>.
THINK_DROPPING = (
    "{% for message in messages %}{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ content }}<|im_end|>\n{% endfor %}"
)
FAST = ["--max-length", "64", "--no-gradient-checkpointing", "-q"]  # seconds per run on 2 cores


def conversations(n: int) -> list[list[dict]]:
    return [
        [{"role": "user", "content": QUESTION.format(i=i)}, {"role": "assistant", "content": ANSWER.format()}]
        for i in range(n)
    ]


def write_filter_output(folder, n: int = 8, messages: list[list[dict]] | None = None):
    """A `distill filter` output folder: data/*.parquet with the filter schema's `messages` column."""
    (folder / "data").mkdir(parents=True)
    schema = pa.schema([filter_schema([]).field("messages")])
    table = pa.Table.from_pylist([{"messages": m} for m in messages or conversations(n)], schema=schema)
    pq.write_table(table, folder / "data" / "train-00000-of-00001.parquet")
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_filter_output(tmp_path_factory.mktemp("filtered"))


def config(data_dir, tiny_model, out, **changes) -> TrainConfig:
    base = dict(
        data=[str(data_dir)],
        student=tiny_model,
        out=str(out),
        max_length=64,
        max_steps=2,
        gradient_checkpointing=False,
        quiet=True,
        trl={"save_steps": 2},
    )
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def full_run(data_dir, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "out"
    started = time.perf_counter()
    trainer, metrics = run_train(config(data_dir, tiny_model, out, max_steps=3, learning_rate=1e-2))
    print(f"full fine-tune, 3 steps: {time.perf_counter() - started:.1f} s")
    return trainer, metrics, out


@pytest.fixture(scope="module")
def lora_run(data_dir, tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "out"
    trainer, metrics = run_train(config(data_dir, tiny_model, out, lora=True, lora_r=4, packing=True))
    return trainer, metrics, out


def test_full_finetune_changes_weights_and_loss_is_finite(full_run, tiny_model):
    trainer, metrics, out = full_run
    before = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).state_dict()
    after = trainer.model.state_dict()
    changed = [name for name, value in after.items() if not torch.equal(value.cpu(), before[name])]
    assert len(changed) > len(after) // 2
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["final_loss"])
    assert metrics["global_step"] == 3


def test_output_folder_has_model_tokenizer_config_metrics(full_run):
    _, _, out = full_run
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
        assert (out / name).exists(), name
    assert (out / "config.resolved.yaml").exists()
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_rows"] == 8 and results["global_step"] == 3
    assert (out / "trainer_state.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.use_cache  # back on for inference


def test_fp32_on_cpu(full_run):
    trainer, _, _ = full_run
    assert trainer.args.bf16 is False and trainer.args.fp16 is False
    assert next(trainer.model.parameters()).dtype == torch.float32
    # and the choice itself, for both kinds of device (no GPU needed to check the GPU branch)
    assert choose_precision("auto", on_gpu=False, gpu_has_bf16=False) == ("float32", False, False)
    assert choose_precision("auto", on_gpu=True, gpu_has_bf16=True) == ("bfloat16", True, False)
    assert choose_precision("auto", on_gpu=True, gpu_has_bf16=False) == ("float32", False, True)


def test_assistant_only_loss_masks_the_prompt(full_run, tiny_model):
    trainer, _, _ = full_run
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    row = trainer.train_dataset[0]
    messages = conversations(1)[0]
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=True, add_generation_prompt=True, return_dict=True)
    n_prompt = len(prompt["input_ids"])
    assert row["input_ids"][:n_prompt] == prompt["input_ids"]
    assert all(label == -100 for label in row["labels"][:n_prompt])  # user turn (and the assistant header)
    assistant = [(t, label) for t, label in zip(row["input_ids"][n_prompt:], row["labels"][n_prompt:], strict=True)]
    assert assistant and all(t == label for t, label in assistant)  # the answer, <think> and <|im_end|> trained
    assert row["labels"][len(row["labels"]) - 1] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_lora_changes_only_the_adapter(lora_run, tiny_model):
    trainer, metrics, out = lora_run
    before = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).state_dict()
    adapters_changed = 0
    for name, value in trainer.model.named_parameters():
        if "lora_" in name:
            # lora_B starts at zero; any change means the adapter trained
            adapters_changed += not torch.all(value == 0).item() if "lora_B" in name else 0
            continue
        base_name = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(value.detach().cpu(), before[base_name]), name
    assert adapters_changed > 0
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    assert not (out / "model.safetensors").exists()
    assert (out / "tokenizer.json").exists() and (out / "generation_config.json").exists()
    assert math.isfinite(metrics["train_loss"])
    assert trainer.args.packing and trainer.padding_free  # bfd packing runs padding-free, here on sdpa


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_cpu_loss_head_trains_as_trls_tiled_head(data_dir, tiny_model, tmp_path, monkeypatch, packing):
    """On CPU the model's own head replaces TRL's tiled one (faster there): same losses, same weights, same
    token counts and accuracy, with the assistant-only mask and with padding-free packing."""
    from distill.train import sft

    runs = {}
    for name, limit in (("own head", sft.LOGITS_BYTES), ("tiled", 0)):  # a limit of 0 sends every batch to TRL's
        monkeypatch.setattr(sft, "LOGITS_BYTES", limit)
        out = tmp_path / name.replace(" ", "-")
        trainer, _ = run_train(config(data_dir, tiny_model, out, max_steps=3, learning_rate=1e-2, packing=packing))
        runs[name] = trainer
    history = {name: [e for e in t.state.log_history if "loss" in e] for name, t in runs.items()}
    assert len(history["own head"]) == 3
    for ours, theirs in zip(history["own head"], history["tiled"], strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
        assert ours["num_tokens"] == theirs["num_tokens"]
        assert ours["mean_token_accuracy"] == pytest.approx(theirs["mean_token_accuracy"])
        assert "entropy" in theirs and "entropy" not in ours  # which path ran
    ours, theirs = runs["own head"].model.state_dict(), runs["tiled"].model.state_dict()
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-4) for k in ours)
    assert not torch.equal(ours["lm_head.weight"], AutoModelForCausalLM.from_pretrained(tiny_model).lm_head.weight)


def test_length_grouped_batches_cut_padding_and_keep_every_row(tiny_model, tmp_path):
    """Default batching groups rows of similar length (the proof's traces: 24% padding in random batches of 4,
    4% grouped); --no-group-by-length gives random batches. Either way an epoch sees every row once."""
    rows = []
    for i in range(128):  # four lengths, interleaved so that random batches mix them
        words = " ".join(["step"] * (4 + 40 * (i % 4)))
        rows.append([{"role": "user", "content": f"Calculate {i} + 3."}, {"role": "assistant", "content": words}])
    data = write_filter_output(tmp_path / "data", messages=rows)

    padding, seen = {}, {}
    for grouped in (True, False):
        out = tmp_path / f"grouped-{grouped}"
        trainer, _ = run_train(config(data, tiny_model, out, max_length=256, batch_size=4, group_by_length=grouped))
        masks = [batch["attention_mask"] for batch in trainer.get_train_dataloader()]
        padding[grouped] = 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
        seen[grouped] = sorted(int(row.sum()) for m in masks for row in m)
    assert seen[True] == seen[False] and len(seen[True]) == 128  # the same rows, each once
    assert padding[True] < 0.1 and padding[False] > 0.25  # seed 42: 8% and 35%


def test_cpu_loss_skips_the_logits_of_the_shared_prompt(full_run):
    """The CPU path computes no logits for the leading prompt columns of a batch, and its loss is the full one."""
    trainer = full_run[0]
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"].clone()
    first = int((labels != -100).any(dim=0).nonzero()[0])
    assert first > 5  # the user turn is masked
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**{**batch, "labels": labels}, use_cache=False).loss
        loss, outputs = trainer.compute_loss(trainer.model, dict(batch), return_outputs=True)
    assert outputs.logits.size(1) == labels.size(1) - (first - 1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_packed_rows_do_not_attend_across_documents_on_sdpa(tiny_model):
    """Why packing is allowed without flash attention: transformers masks by position_ids (with use_cache off)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa", dtype=torch.float32)
    a, b = torch.tensor([[5, 6, 7, 8]]), torch.tensor([[9, 10, 11]])
    packed = model(
        input_ids=torch.cat([a, b], 1), position_ids=torch.tensor([[0, 1, 2, 3, 0, 1, 2]]), use_cache=False
    ).logits
    assert torch.allclose(packed[:, 4:], model(input_ids=b).logits, atol=1e-5)


def test_resume_continues_from_the_checkpoint(data_dir, tiny_model, tmp_path):
    out = tmp_path / "out"
    args = [str(data_dir), "--student", tiny_model, "--out", str(out), "--trl", "save_steps=2", *FAST]
    first = CliRunner().invoke(train_command, [*args, "--max-steps", "2"])
    assert first.exit_code == 0, first.output
    assert "trained 2 steps on 8 rows" in first.stdout and (out / "checkpoint-2").is_dir()
    again = CliRunner().invoke(train_command, [*args, "--max-steps", "4"])
    assert again.exit_code == 1 and "--resume" in again.output  # an existing output needs a decision
    second = CliRunner().invoke(train_command, [*args, "--max-steps", "4", "--resume"])
    assert second.exit_code == 0, second.output
    results = json.loads((out / "train_results.json").read_text())
    assert results["resumed_from_step"] == 2 and results["steps_this_run"] == 2 and results["global_step"] == 4
    state = json.loads((out / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [
        1,
        2,
        3,
        4,
    ]  # steps 1-2 came from the checkpoint
    assert (out / "checkpoint-4").is_dir()


# --- chat templates ---------------------------------------------------------------------------------------------


def test_template_check_refuses_think_dropping_and_accepts_the_fix(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    with pytest.raises(DistillError, match="drops the <think> block.*--chat-template think-preserving"):
        check_template(tokenizer, THINK_DROPPING, assistant_only_loss=False, student="s")
    template, name, end_of_turn = resolve_template("think-preserving", tokenizer)
    assert (template, name, end_of_turn) == (CHATML, "chatml", "<|im_end|>")  # the tokens the tokenizer has
    assert check_template(tokenizer, template, assistant_only_loss=True, student="s") == CHATML
    rendered = tokenizer.apply_chat_template(PROBE, tokenize=False, chat_template=CHATML)
    assert "<think>\nPROBE-REASONING\n</think>\n\nPROBE-ANSWER<|im_end|>" in rendered
    # saved without the training-only tags, rendering the same
    stripped = without_generation_markers(CHATML)
    assert "generation %}" not in stripped
    assert tokenizer.apply_chat_template(PROBE, tokenize=False, chat_template=stripped) == rendered


def test_deepseek_r1_distill_template_is_refused_and_fixed(tiny_model):
    """DeepSeek's own R1-Distill template (as TRL stores it), on a tokenizer that has DeepSeek's tokens."""
    from trl.chat_template_utils import deepseek_r1_distill_chat_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": ["<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"]}
    )
    tokenizer.chat_template = deepseek_r1_distill_chat_template
    with pytest.raises(DistillError, match="drops the <think> block.*think-preserving"):
        check_template(tokenizer, None, assistant_only_loss=True, student="deepseek-r1-distill")
    template, name, end_of_turn = resolve_template("think-preserving", tokenizer)
    assert name == "deepseek-r1" and end_of_turn == "<｜end▁of▁sentence｜>"
    check_template(tokenizer, template, assistant_only_loss=True, student="deepseek-r1-distill")
    rendered = tokenizer.apply_chat_template(PROBE, tokenize=False, chat_template=template)
    assert "<｜Assistant｜><think>\nPROBE-REASONING\n</think>\n\nPROBE-ANSWER<｜end▁of▁sentence｜>" in rendered
    masks = tokenizer.apply_chat_template(
        PROBE, chat_template=template, return_assistant_tokens_mask=True, return_dict=True
    )
    assert 0 < sum(masks["assistant_masks"]) < len(masks["input_ids"])  # the assistant turn, and only it


def test_template_without_generation_markers(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    plain = without_generation_markers(CHATML)
    with pytest.raises(
        DistillError, match="no \\{% generation %\\} markers.*think-preserving.*no-assistant-only-loss"
    ):
        check_template(tokenizer, plain, assistant_only_loss=True, student="s")
    assert check_template(tokenizer, plain, assistant_only_loss=False, student="s") == plain
    # a template TRL knows (Qwen2.5's) gets TRL's training variant: same rendering, markers added
    from trl.chat_template_utils import qwen2_5_chat_template, qwen2_5_training_chat_template

    patched = check_template(tokenizer, qwen2_5_chat_template, assistant_only_loss=True, student="s")
    assert patched == qwen2_5_training_chat_template
    with pytest.raises(DistillError, match="lacks"):
        resolve_template("llama3", tokenizer)
    with pytest.raises(DistillError, match="unknown --chat-template"):
        resolve_template("nope", tokenizer)


# --- command line: bad input is one line and exit 1 ----------------------------------------------------------


def invoke(*args):
    result = CliRunner().invoke(train_command, list(args))
    return result


def test_help():
    result = invoke("--help")
    assert result.exit_code == 0
    for flag in ("--student", "--lora", "--qlora", "--packing", "--chat-template", "--trl", "--accelerate-config"):
        assert flag in result.output


def one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_refuses_a_think_dropping_template_from_the_command_line(data_dir, tiny_model, tmp_path):
    path = tmp_path / "r1-distill.jinja"
    path.write_text(THINK_DROPPING)
    result = invoke(str(data_dir), "--student", tiny_model, "--out", str(tmp_path / "o"), "--chat-template", str(path))
    one_line_error(result, "drops the <think> block", "--chat-template think-preserving")
    assert not (tmp_path / "o").exists()  # refused before the output folder was touched


def test_no_messages_column(tiny_model, tmp_path):
    (tmp_path / "gen" / "data").mkdir(parents=True)
    pq.write_table(pa.table({"problem": ["q"], "completion": ["a"]}), tmp_path / "gen" / "data" / "train.parquet")
    result = invoke(str(tmp_path / "gen"), "--student", tiny_model, "--out", str(tmp_path / "o"))
    one_line_error(result, "no `messages` column", "distill filter")


def test_existing_output_folder(data_dir, tiny_model, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    args = [str(data_dir), "--student", tiny_model, "--out", str(tmp_path / "o")]
    one_line_error(invoke(*args), "already holds a training run", "--resume", "--overwrite")
    one_line_error(invoke(*args, "--overwrite"), "refusing to overwrite")  # not ours: never deleted
    assert (tmp_path / "o" / "notes.txt").exists()


def test_unknown_accelerate_config(data_dir, tiny_model, tmp_path):
    result = invoke(
        str(data_dir), "--student", tiny_model, "--out", str(tmp_path / "o"), "--accelerate-config", "zero9"
    )
    one_line_error(result, "unknown accelerate config `zero9`", "zero3")


def test_qlora_on_cpu_and_trl_keys(data_dir, tiny_model, tmp_path):
    args = [str(data_dir), "--student", tiny_model, "--out", str(tmp_path / "o")]
    one_line_error(invoke(*args, "--qlora"), "--qlora needs a CUDA GPU")
    one_line_error(invoke(*args, "--trl", "save_stepz=3"), "unknown TRL SFTConfig argument", "save_steps")
    one_line_error(invoke(*args, "--trl", "learning_rate=1"), "--learning-rate")
    one_line_error(invoke("--out", str(tmp_path / "o")), "no training data")


def test_recipe_yaml_and_trl_passthrough(data_dir, tiny_model, tmp_path):
    from distill.recipe import load_yaml
    from distill.settings import build_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"train:\n  student: {tiny_model}\n  lora: true\n  trl:\n    max_grad_norm: 0.2\n")
    loaded = load_yaml(recipe)["train"]
    cfg = build_config(TrainConfig, loaded, {"data": [str(data_dir)], "out": "o", "trl": {**loaded["trl"], "x": 1}})
    assert cfg.lora and cfg.trl == {"max_grad_norm": 0.2, "x": 1}
    args = sft_arguments(
        cfg, tmp_path, dtype="float32", bf16=False, fp16=False, attn="sdpa", end_of_turn=None, on_gpu=False
    )
    assert args["learning_rate"] == 2e-4 and args["bf16"] is False  # LoRA default rate; fp32 said explicitly
    assert args["lr_scheduler_type"] == "cosine_with_min_lr" and args["warmup_steps"] == 0.03
    assert args["num_train_epochs"] == 2.0
    with pytest.raises(DistillError, match="unknown key `lorra`.*did you mean `lora`"):
        build_config(TrainConfig, {"lorra": True}, {})


@pytest.mark.slow
def test_lora_on_embedded_smollm2(tmp_path, capsys):
    """LoRA on the real SmolLM2-135M-Instruct (fp32 on CPU), 2 steps at max_length 256; prints the step time."""
    from distill.models import embedded_model_dir

    student = str(embedded_model_dir())
    data = write_filter_output(tmp_path / "filtered", n=4)
    cfg = TrainConfig(
        data=[str(data)],
        student=student,
        out=str(tmp_path / "out"),
        chat_template="think-preserving",  # SmolLM2's own template has no {% generation %} markers
        lora=True,
        max_length=256,
        max_steps=2,
        gradient_checkpointing=False,  # as recipes/students/smollm2-135m.yaml: memory is no issue at 135M
        quiet=True,
    )
    trainer, metrics = run_train(cfg)
    assert trainer.args.bf16 is False
    assert math.isfinite(metrics["train_loss"]) and metrics["global_step"] == 2
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
    with capsys.disabled():
        print(f"\nSmolLM2-135M LoRA (fp32, CPU): {metrics['seconds_per_step']:.2f} s/step")
