"""`distill run RECIPE`: the whole pipeline from one YAML recipe.

A recipe has one section per stage, run in this order: generate, filter, mix, train, eval, publish. `generate`,
`filter` and `train` take one mapping, or a list of mappings each with a `name` (several sources, e.g. R1's
reasoning and general splits; SFT then on-policy distillation, each train stage starting from the student of the
one before); `mix` combines filter outputs by ratio. Paths default to `<out>/<stage>[/<name>]` and each
stage reads the previous one's output, so a recipe only says what differs. Every stage has a completion marker
(generate/filter/mix: stats.json, train: train_results.json, eval: summary.json, publish: publish.json): a
complete stage is skipped, an incomplete one resumed, which is what makes an interrupted run cheap to restart.
"""

import dataclasses
import importlib.util
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from distill.config import (
    PROMPT_SOURCE_KEYS,
    EvalConfig,
    FilterConfig,
    GenerateConfig,
    MixConfig,
    PublishConfig,
    TrainConfig,
)
from distill.errors import DistillError, near_hint, shown
from distill.filter.dataset.mix import mix_ratio
from distill.filter.report import write_report
from distill.filter.run import run_filter
from distill.filter.verifiers.registry import check_options, verifier_class
from distill.generate.run import run_generate
from distill.hub import publish_dataset, publish_model
from distill.io import check_not_input, local_paths, write_json_atomic
from distill.recipe import STAGES
from distill.rl.grpo import last_checkpoint, rl_config, run_rl
from distill.settings import build_config, dump_config
from distill.train.eval import format_table, run_eval
from distill.train.opd import run_opd
from distill.train.sft import run_train

# Where an `rl` section runs: before generate (the RL'd model is the teacher of rejection sampling, as in R1) or
# after train (RL on the distilled student, as DeepScaleR did).
RL_POSITIONS = ("before-generate", "after-train")
TOP_KEYS = ("out", "description", *STAGES)


@dataclass(slots=True)
class Step:
    """One stage run: its config object, where it writes, and whether that output is already complete."""

    stage: str
    name: str
    config: object
    out: Path
    complete: bool = False
    partial: bool = False  # output exists but is not complete: the run resumes it
    # A complete output's settings in which the recipe now differs ("key old -> new")
    changed: list[str] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return self.stage if self.name == "default" else f"{self.stage}:{self.name}"


def _entries(section, stage: str) -> list[tuple[str, dict]]:
    if section is None:
        return []
    if isinstance(section, dict):
        name = _entry_name(section.get("name", "default"), stage)
        return [(name, {k: v for k, v in section.items() if k != "name"})]
    if isinstance(section, list):
        entries = []
        for entry in section:
            if not isinstance(entry, dict) or "name" not in entry:
                raise DistillError(f"each entry of the `{stage}` list needs a `name`")
            entries.append((_entry_name(entry["name"], stage), {k: v for k, v in entry.items() if k != "name"}))
        names = [n for n, _ in entries]
        if len(set(names)) != len(names):
            raise DistillError(f"the `{stage}` entries repeat a name: {', '.join(names)}")
        return entries
    raise DistillError(f"section `{stage}` must be a mapping or a list of mappings")


def _entry_name(name, stage: str) -> str:
    # A name is a folder under <out>/<stage>/: it must stay inside it, and be text (`1` or `true` are not).
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\") or not name.isprintable():
        raise DistillError(
            f"`{stage}` entry name `{shown(name)}` is not a folder name: use printable text without / or \\, e.g. math"
        )
    return name


def _section(recipe: dict, stage: str, where: str) -> dict | None:
    """A single-mapping section (mix, train, eval, publish); None when absent or left empty."""
    section = recipe.get(stage)
    if section is not None and not isinstance(section, dict):
        raise DistillError(f"section `{stage}` of {where} must be a mapping of keys to values")
    return section


def plan(recipe: dict, recipe_path: str = "the recipe") -> list[Step]:
    """Every step with its resolved config, validated before anything runs."""
    check_keys_top(recipe, recipe_path)
    if not isinstance(recipe.get("out") or "", str):
        raise DistillError(f"`out` in {recipe_path} must be a folder path, got `{shown(recipe['out'])}`")
    root = Path(recipe.get("out") or "runs/" + Path(recipe_path).stem)
    mix_section, eval_section, publish_section = (
        _section(recipe, stage, recipe_path) for stage in ("mix", "eval", "publish")
    )
    trains = _entries(recipe.get("train"), "train")
    train_section = trains[0][1] if trains else None
    steps: list[Step] = []
    rl_section = _section(recipe, "rl", recipe_path)
    rl_position = None
    if rl_section is not None:
        rl_section = dict(rl_section)
        rl_position = rl_section.pop("position", "after-train" if train_section is not None else "before-generate")
        if rl_position not in RL_POSITIONS:
            raise DistillError(f"rl.position must be one of {', '.join(RL_POSITIONS)}, got `{shown(rl_position)}`")
        if rl_position == "after-train" and train_section is None:
            raise DistillError("rl.position after-train needs a train section: add one or use before-generate")
    rl_step = None
    if rl_position == "before-generate":
        rl_step = _rl_step(rl_section, root, None, recipe_path)
        steps.append(rl_step)

    generates = _entries(recipe.get("generate"), "generate")
    gen_outs = {}
    for name, section in generates:
        out = root / "generate" / (name if len(generates) > 1 else "")
        if rl_step is not None and "model" not in section:  # the RL'd model is the teacher
            section = {**section, "model": str(rl_step.out)}
        config = build_config(
            GenerateConfig, {"out": str(out), "quiet": True, **section}, {}, f"{recipe_path}: generate"
        )
        config.validate()
        _check_source(config.source, f"generate {name}")
        _check_engine(config.engine, f"generate {name}")
        gen_outs[name] = config.out
        steps.append(Step("generate", name, config, Path(config.out)))

    filters = _entries(recipe.get("filter"), "filter")
    filter_outs = {}
    for name, section in filters:
        out = root / "filter" / (name if len(filters) > 1 else "")
        section = dict(section)
        inputs = section.pop("inputs", None)
        if inputs is None:  # a filter named like a generate entry reads it; a lone filter reads everything
            inputs = [gen_outs[name]] if name in gen_outs else list(gen_outs.values())
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            raise DistillError(
                f"filter {name}: `inputs` must be a generate entry's name or a folder, or a list of them"
            )
        inputs = [gen_outs.get(i, i) for i in inputs]
        if not inputs:
            raise DistillError(f"filter {name} has no inputs: add a generate section or `inputs:`")
        config = build_config(
            FilterConfig, {"out": str(out), "quiet": True, **section, "inputs": inputs}, {}, f"{recipe_path}: filter"
        )
        config.validate()
        _check_verifiers(config.verifiers, f"filter {name}")
        filter_outs[name] = config.out
        steps.append(Step("filter", name, config, Path(config.out)))

    dataset_dirs = list(filter_outs.values())
    if mix_section is not None:
        mix = build_config(MixConfig, {"out": str(root / "mix"), **mix_section}, {}, f"{recipe_path}: mix")
        mix.validate(list(filter_outs))
        steps.append(Step("mix", "default", mix, Path(mix.out)))
        dataset_dirs = [mix.out]

    train_out = None
    train_outs: list[tuple[str, str]] = []  # (entry name, output) in order: each may start from the one before
    for name, section in trains:
        defaults = {"out": str(root / "train" / (name if len(trains) > 1 else "")), "quiet": True}
        if section.get("method", "sft") != "opd":  # opd samples its own data from `prompts`
            defaults["data"] = dataset_dirs
        if train_out is not None:  # a later stage trains on from the earlier one's student (SFT, then OPD)
            defaults["student"] = train_out
        config = build_config(TrainConfig, {**defaults, **section}, {}, f"{recipe_path}: train {name}")
        config.validate()
        if config.method == "opd":
            _check_source(config.prompts["source"], f"train {name}")
        train_out = config.out
        train_outs.append((name, train_out))
        steps.append(Step("train", name, config, Path(config.out)))
    if rl_position == "after-train":
        rl_step = _rl_step(rl_section, root, train_out, recipe_path)
        steps.append(rl_step)

    if eval_section is not None:
        section = dict(eval_section)
        teacher = section.pop("teacher", None)  # a model to score beside the student: the gain's ceiling
        if teacher is not None and not isinstance(teacher, str):
            raise DistillError(f"eval.teacher in {recipe_path} must be a model name or folder, got `{shown(teacher)}`")
        if "models" not in section:  # the student before and after training (and RL), and the teacher when named
            student = train_section.get("student") if train_out else None
            if len(train_outs) > 1:  # base, then each train stage's student, each compared with the one before
                section["models"] = [student, *(out for _, out in train_outs)]
                labels = ["before", *(name for name, _ in train_outs)]
                section.setdefault("labels", labels)
                section.setdefault("gain_of", [list(pair) for pair in zip(labels, labels[1:], strict=False)])
            elif train_out:
                section["models"] = [student, train_out]
                section.setdefault("labels", ["before", "after"])
                section.setdefault("gain_of", ["before", "after"])
                if rl_position == "after-train":
                    section["models"].append(str(rl_step.out))
                    section["labels"] = [*section["labels"], "rl"]
            elif rl_step is not None:  # RL alone: the policy before and after
                section["models"] = [rl_step.config.model, str(rl_step.out)]
                section.setdefault("labels", ["before", "after"])
                section.setdefault("gain_of", ["before", "after"])
            else:
                section["models"] = [student]
                section.setdefault("labels", ["model"])
            if teacher is not None:
                section["models"].insert(0, teacher)
                section["labels"] = ["teacher", *section["labels"]]
        if "exclude" not in section:  # held out means held out: no problem a stage trained on is scored
            section["exclude"] = training_sources(steps)
        config = build_config(
            EvalConfig, {"out": str(root / "eval"), "quiet": True, **section}, {}, f"{recipe_path}: eval"
        )
        config.validate()
        _check_source(config.source, "eval")
        _check_engine(config.engine, "eval")
        steps.append(Step("eval", "default", config, Path(config.out)))

    if publish_section is not None:
        config = build_config(PublishConfig, publish_section, {}, f"{recipe_path}: publish")
        if config.model and not train_out:
            raise DistillError("publish.model needs a train section")
        if config.dataset and not dataset_dirs:
            raise DistillError("publish.dataset needs a filter section")
        steps.append(Step("publish", "default", config, root / "publish"))

    if not steps:
        raise DistillError(f"{recipe_path} has no stage: add a generate, filter, train, eval or publish section")
    _check_outputs(steps)
    for step in steps:
        if step.out.exists() and not step.out.is_dir():
            raise DistillError(f"{step.label}: its output {step.out} is a file, not a folder: choose another `out`")
        step.complete = is_complete(step)
        step.partial = not step.complete and step.out.exists() and any(step.out.iterdir())
        step.changed = changed_settings(step) if step.complete else []
    return steps


def step_inputs(step: Step, steps: list[Step]) -> list:
    """The paths a step reads: its output may be, hold or lie inside none of them."""
    config = step.config
    if step.stage == "generate":
        return local_paths([config.source, config.model])
    if step.stage == "filter":
        return [*config.inputs, *config.decontaminate]
    if step.stage == "mix":
        return [s.out for s in steps if s.stage == "filter" and s.name in config.ratio]
    if step.stage == "train":
        teacher = config.teacher.get("model") if isinstance(config.teacher, dict) else config.teacher
        return [*config.data, *local_paths([config.student, teacher, config.prompts.get("source")])]
    if step.stage == "eval":
        return local_paths([*config.models, config.source, *(e for e in config.exclude if isinstance(e, str))])
    return [s.out for s in steps if s.stage in ("filter", "mix", "train")]  # publish


def training_sources(steps: list[Step]) -> list:
    """What the recipe's models trained on, for eval's `exclude`: the generate outputs (their prompts are the SFT
    and KD data's), and the prompt sources of RL and on-policy distillation."""

    sources: list = []
    for step in steps:
        if step.stage == "generate":
            sources.append(str(step.out))
        elif step.stage == "rl":
            sources.append({key: getattr(step.config, key) for key in PROMPT_SOURCE_KEYS})
        elif step.stage == "train" and step.config.method == "opd":
            sources.append(dict(step.config.prompts))
    return sources


def _check_outputs(steps: list[Step]) -> None:
    """Before any stage runs: no stage writes into what it reads, and no two stages share a folder."""
    for step in steps:
        inputs = step_inputs(step, steps)
        check_not_input(step.out, inputs, flag=f"{step.label}: out")
        if step.stage == "publish" and step.config.stage_dir:
            check_not_input(step.config.stage_dir, inputs, flag="publish: stage_dir")
    for i, step in enumerate(steps):
        for other in steps[:i]:
            try:
                check_not_input(step.out, [other.out])
            except DistillError:
                raise DistillError(
                    f"{step.label} and {other.label} would both write into {other.out}: give each its own `out`"
                ) from None


def check_keys_top(recipe: dict, where: str) -> None:
    for key in recipe:
        if key not in TOP_KEYS:
            hint = near_hint(key, TOP_KEYS) if isinstance(key, str) else ""
            raise DistillError(f"unknown section `{shown(key)}` in {where}{hint}")


def _check_source(source: str, where: str) -> None:
    if source.startswith("reasoning-gym:"):
        if importlib.util.find_spec("reasoning_gym") is None:
            raise DistillError(f"{where}: reasoning-gym is not installed: run `pip install reasoning-gym`")
        return
    path = Path(source)
    if (path.suffix or source.startswith((".", "/"))) and not path.exists():
        raise DistillError(
            f"{where}: source not found: {source} (a relative path is read from the recipe's folder, then the working "
            "directory)"
        )


def _check_engine(engine: str, where: str) -> None:
    needs = {
        "vllm": ("vllm", 'pip install "distill[vllm]"'),
        "openai": ("aiohttp", "pip install aiohttp"),
        "openai-batch": ("urllib", "a Python with urllib"),  # the standard library's client: nothing to install
        "transformers": ("transformers", 'pip install "distill[train]"'),
    }
    module, install = needs[engine]
    if importlib.util.find_spec(module) is None:
        raise DistillError(f"{where}: engine `{engine}` needs {module}, which is not installed: run `{install}`")


def _check_verifiers(verifiers: dict, where: str) -> None:
    for name, options in verifiers.items():
        try:
            check_options(verifier_class(name), name, options, extra=("domains",))
        except DistillError as exc:
            raise DistillError(f"{where}: {exc}") from None


MARKERS = {
    "generate": "stats.json",
    "filter": "stats.json",
    "mix": "stats.json",
    "train": "train_results.json",
    "rl": "report.html",
    "eval": "summary.json",
    "publish": "publish.json",
}


def is_complete(step: Step) -> bool:
    return (step.out / MARKERS[step.stage]).exists()


# How a stage was run, not what it computes: a change in these is no change of its output
_RUN_ONLY = {"resume", "overwrite", "quiet", "num_shards", "shard_index", "flush_seconds"}


def changed_settings(step: Step) -> list[str]:
    """The numbers and switches in which the recipe now differs from the settings a complete output was made with
    (its config.resolved.yaml), as "key old -> new". Text is left out: stages write resolved names there (a model
    alias's label, a chat template's name), which would read as changes that are none."""
    if not dataclasses.is_dataclass(step.config):
        return []
    try:
        stored = yaml.safe_load((step.out / "config.resolved.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(stored, dict):
        return []
    changed = []
    for field in dataclasses.fields(step.config):
        now, then = getattr(step.config, field.name), stored.get(field.name)
        if field.name in _RUN_ONLY or now is None or then is None or not _scalar(now) or not _scalar(then):
            continue
        same = now == then if isinstance(now, bool) or isinstance(then, bool) else math.isclose(now, then)
        if not same:
            changed.append(f"{field.name} {then} -> {now}")
    return changed


def _scalar(value) -> bool:
    return isinstance(value, (bool, int, float))


def select(steps: list[Step], start: str | None, until: str | None) -> list[Step]:
    for bound in (start, until):
        if bound is not None and bound not in STAGES:
            raise DistillError(f"unknown stage `{bound}`: use one of {', '.join(STAGES)}")
    # By the steps' own order: an `rl` step may sit before generate or after train.
    order = [s.stage for s in steps]
    first = order.index(start) if start in order else (0 if start is None else len(steps))
    last = len(order) - 1 - order[::-1].index(until) if until in order else (len(steps) - 1 if until is None else -1)
    return [s for i, s in enumerate(steps) if first <= i <= last]


def describe(steps: list[Step], chosen: list[Step]) -> str:
    lines = []
    for step in steps:
        if step not in chosen:
            status = "not selected (--from/--until)"
        elif step.complete:
            status = "complete: skip"
        elif step.partial:
            status = "incomplete: resume"
        else:
            status = "run"
        lines.append(f"{step.label:<18} {status:<30} {step.out}")
        if step in chosen and step.complete and step.changed:
            # Skipped all the same: a finished stage is never thrown away unasked (a training run costs hours)
            lines.append(
                f"{'':<18} warning: the recipe changed since this output was made ({', '.join(step.changed)}); it "
                f"is kept as it was. To redo the stage, run with another --out (generation replays from the response "
                f"cache) or remove {step.out}"
            )
    return "\n".join(lines)


def run_steps(steps: list[Step], chosen: list[Step], echo) -> None:
    dataset_dir = model_dir = None
    for step in steps:
        if step.stage in ("filter", "mix"):
            dataset_dir = step.out
        if step.stage == "train":
            model_dir = step.out
        if step not in chosen:
            continue
        if step.complete:
            echo(f"[{step.label}] complete, skipped: {step.out}")
            continue
        echo(f"[{step.label}] {'resuming' if step.partial else 'running'} -> {step.out}")
        if step.stage == "generate":
            step.config.resume = step.partial
            run_generate(step.config)
        elif step.stage == "filter":
            step.config.resume = step.partial
            stats = run_filter(step.config)
            echo(f"[{step.label}] kept {stats['kept']} of {stats['total']} rows; report: {write_report(step.out)}")
        elif step.stage == "mix":
            _run_mix(step, steps)
        elif step.stage == "train":
            step.config.resume = step.partial
            _run_train(step)
        elif step.stage == "eval":
            step.config.resume = step.partial
            summary = run_eval(step.config)
            echo(format_table(summary))
        elif step.stage == "rl":
            # An interrupted run continues from its last checkpoint; one without any starts over.
            step.config.resume = step.partial and last_checkpoint(step.out) is not None
            step.config.overwrite = step.partial and not step.config.resume
            run_rl(step.config)
            echo(f"[{step.label}] report: {step.out / 'report.html'}")
        elif step.stage == "publish":
            _run_publish(step, dataset_dir, model_dir, echo)
        echo(f"[{step.label}] done: {step.out}")


def _rl_step(section: dict, root: Path, policy: str | None, recipe_path: str) -> Step:
    """The rl step; after train its policy defaults to the trained student."""
    values = {"out": str(root / "rl"), **section}
    if policy is not None:
        values.setdefault("model", policy)
    config = rl_config(values)
    if not config.source:
        raise DistillError(f"{recipe_path}: rl needs `source` (prompts with gold answers or tests)")
    _check_source(config.source, "rl")
    return Step("rl", "default", config, Path(config.out))


def _run_train(step: Step) -> None:
    """In this process on one device; through `distill train` (which relaunches with `accelerate launch`) when
    the recipe names an accelerate config, so a multi-GPU recipe really uses its GPUs."""
    if step.config.method == "opd" and not step.config.accelerate_config:
        run_opd(step.config)
        return
    if not step.config.accelerate_config:
        run_train(step.config)
        return

    step.out.parent.mkdir(parents=True, exist_ok=True)
    resolved = step.out.parent / f".{step.out.name}.train.yaml"
    dump_config(step.config, resolved)
    status = subprocess.call([sys.executable, "-m", "distill", "train", "--config", str(resolved)])
    if status != 0:
        raise DistillError(f"training exited with status {status}: see its log above; rerun to resume")


def _run_mix(step: Step, steps: list[Step]) -> None:
    config: MixConfig = step.config
    folders = {s.name: s.out for s in steps if s.stage == "filter" and s.name in config.ratio}
    mix_ratio(config.ratio, folders, step.out, total=config.total, seed=config.seed, overwrite=True)


def _run_publish(step: Step, dataset_dir, model_dir, echo) -> None:
    config: PublishConfig = step.config
    done = {}
    stage_dir = config.stage_dir
    if config.dataset:  # the model-only settings stay with the model
        staged = dataclasses.replace(config, eval_summary=None, base_model=None)
        staged.stage_dir = f"{stage_dir}/dataset" if stage_dir else None
        done["dataset"] = publish_dataset(dataset_dir, config.dataset, staged)
    if config.model:
        staged = dataclasses.replace(config, stage_dir=f"{stage_dir}/model" if stage_dir else None)
        done["model"] = publish_model(model_dir, config.model, staged)
    step.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(done, step.out / "publish.json")
