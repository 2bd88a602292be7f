"""`distill publish`: a filtered dataset or a trained student to the Hugging Face Hub, with a card (distill.cards).

Every upload is staged first: a folder holding exactly what goes up (the data files or model files, hard-linked
where the file system allows, and README.md), so `--dry-run --stage-dir D` shows the upload byte for byte. Then
one `create_commit` carries the whole folder: one commit per upload (`upload_folder` may split a large folder
into several commits when hf_xet is installed). With --overwrite the same commit deletes the remote files that
are not in the folder, so a dataset with fewer shards than before never keeps stale shards that `data/*.parquet`
would still load.

Safety:
- Repositories are created private; --public makes them public. The visibility of an existing repo is left as it is.
- An existing repository, or an existing branch given with --revision, is never written without --overwrite
  (a new branch of an existing repository is not an overwrite).
- The token comes only from huggingface_hub's own lookup (HF_TOKEN, then the login cache); we never pass one.
  It is scrubbed from every error we surface, and the staged text files are checked for it before upload.
- Only files inside the folder go up: a file that resolves outside it (a symbolic link to a key, /etc/passwd, or
  a linked subfolder), or that has a hard link outside it, is refused by name, dry runs included. Cards never carry
  a URL's credentials (distill.secrets.scrub).
"""

import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from distill.cards import dataset_card, model_card, read_eval_summary
from distill.config import PublishConfig
from distill.errors import DistillError, MissingDependency
from distill.io import check_not_input, data_files, write_text_atomic
from distill.models import cache_dir
from distill.secrets import known_tokens, scrub

# The files of a model folder that make a loadable model; everything else (training_args.bin, which pickles the
# TrainingArguments and can hold a hub token, optimizer states, checkpoints, logs) stays home.
MODEL_FILES = (
    "config.json", "generation_config.json", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
    "chat_template.jinja", "chat_template.json",
)  # fmt: skip
MODEL_WEIGHTS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json")
MODEL_SUBFOLDERS = ("final", "model", "final_model")  # where a training output may keep its final model
TEXT_SUFFIXES = {".md", ".json", ".yaml", ".yml", ".txt", ".jinja", ".model"}


# --------------------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------------------


def publish_dataset(folder: str | Path, repo_id: str, config: PublishConfig | None = None, api: Any = None) -> dict:
    """Stage a `distill filter` (or generate, or mix) output with its card and upload it in one commit."""
    config = config or PublishConfig()
    for name in ("eval_summary", "base_model"):
        if getattr(config, name) is not None:
            raise DistillError(f"`{name}` applies to `distill publish model` only")
    folder = Path(folder)
    _check_stage_dir(config, folder)
    files, rows = _dataset_files(folder)
    _refuse_links_out(folder, [*files, folder / "stats.json", folder / "config.resolved.yaml"])
    _refuse_hard_links_out(folder, files)

    def stage(target: Path) -> None:
        (target / "data").mkdir(parents=True)
        for path in files:
            _link_or_copy(path, target / "data" / path.name)
        card = dataset_card(folder, repo_id, rows, config.license)
        (target / "README.md").write_text(card, encoding="utf-8")

    message = config.commit_message or f"Upload dataset ({rows} rows) with distill"
    return _publish("dataset", repo_id, config, stage, message, api, extra={"rows": rows})


def publish_model(folder: str | Path, repo_id: str, config: PublishConfig | None = None, api: Any = None) -> dict:
    """Stage a trained model (full weights or a LoRA adapter) with its card and upload it in one commit."""
    config = config or PublishConfig()
    folder = Path(folder)
    _check_stage_dir(config, folder)
    model_dir = find_model_dir(folder)
    files = _model_files(model_dir)
    card_inputs = [model_dir / name for name in ("adapter_config.json", "train_results.json")]
    _refuse_links_out(folder, [*files, *card_inputs, folder / "config.resolved.yaml"])
    _refuse_hard_links_out(folder, [*files, *card_inputs])
    summary = read_eval_summary(config.eval_summary) if config.eval_summary else None

    def stage(target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            _link_or_copy(path, target / path.name)
        card = model_card(folder, model_dir, repo_id, config, summary)
        (target / "README.md").write_text(card, encoding="utf-8")

    message = config.commit_message or "Upload model with distill"
    return _publish("model", repo_id, config, stage, message, api)


# --------------------------------------------------------------------------------------------------------------
# Staging and upload
# --------------------------------------------------------------------------------------------------------------


def _check_stage_dir(config: PublishConfig, folder: Path) -> None:
    """The staged copy may not be, hold or lie inside the folder it copies (a dry run would write into it)."""
    if config.stage_dir:
        check_not_input(config.stage_dir, [folder], flag="--stage-dir")


def _publish(kind: str, repo_id: str, config: PublishConfig, stage, message: str, api: Any, extra=None) -> dict:
    _check_repo_id(repo_id)
    result = {"repo_id": repo_id, "repo_type": kind, "private": config.private, "revision": config.revision}
    result.update(extra or {})
    result["url"] = f"https://huggingface.co/{'datasets/' if kind == 'dataset' else ''}{repo_id}"
    if config.stage_dir:
        target = Path(config.stage_dir)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise DistillError(f"--stage-dir {target} is not an empty folder: give a new or empty one")
        _remember_stage(target)
        stage(target)
        return _upload(kind, repo_id, config, target, message, api, result)
    with tempfile.TemporaryDirectory(prefix="distill-publish-") as tmp:
        stage(Path(tmp) / "stage")
        return _upload(kind, repo_id, config, Path(tmp) / "stage", message, api, result)


def _upload(kind: str, repo_id: str, config: PublishConfig, folder: Path, message: str, api: Any, result: dict):
    _check_no_token_inside(folder)
    staged = sorted(p for p in folder.rglob("*") if p.is_file())
    result["files"] = [p.relative_to(folder).as_posix() for p in staged]
    result["bytes"] = sum(p.stat().st_size for p in staged)
    result["stage_dir"] = config.stage_dir
    if config.dry_run:
        result["dry_run"] = True
        result["card"] = (folder / "README.md").read_text(encoding="utf-8")
        return result
    if api is None:
        api = _hf_api()
    exists = _hub(api.repo_exists, repo_id, repo_type=kind)
    if config.revision:
        conflict = exists and _hub(api.revision_exists, repo_id, config.revision, repo_type=kind)
        what = f"branch `{config.revision}` of {kind} repo {repo_id}"
    else:
        conflict, what = exists, f"{kind} repo {repo_id}"
    if conflict and not config.overwrite:
        raise DistillError(f"{what} already exists on the Hub: pass --overwrite to replace its files")
    if not exists:
        _hub(api.create_repo, repo_id, repo_type=kind, private=config.private)
    if config.revision and not conflict:
        _hub(api.create_branch, repo_id, branch=config.revision, repo_type=kind, exist_ok=True)

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete  # only when the hub is used

    operations: list = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in result["files"]
    ]
    if conflict:  # an overwrite: the repo ends up holding exactly the staged files (and its .gitattributes)
        remote = _hub(api.list_repo_files, repo_id, repo_type=kind, revision=config.revision)
        keep = set(result["files"]) | {".gitattributes"}
        operations += [CommitOperationDelete(path_in_repo=name) for name in remote if name not in keep]
    info = _hub(
        api.create_commit, repo_id, operations, commit_message=message, repo_type=kind, revision=config.revision
    )
    result["commit_url"] = getattr(info, "commit_url", None)
    result["dry_run"] = False
    return result


def _hf_api():
    try:
        from huggingface_hub import HfApi, get_token  # only when the hub is used
    except ImportError as exc:
        raise MissingDependency("huggingface_hub", "pip install huggingface_hub") from exc
    if not _hub(get_token):
        raise DistillError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    return HfApi()  # no token argument: huggingface_hub finds it itself, and it never passes through our code


def _hub(call, *args, **kwargs):
    """A Hub call whose failure becomes one line without any token in it."""
    try:
        return call(*args, **kwargs)
    except DistillError:
        raise
    except Exception as exc:  # noqa: BLE001 - HTTP, validation and connection errors all end up here
        text = str(exc).strip().splitlines()
        detail = text[0] if text else ""
        raise DistillError(scrub(f"Hugging Face Hub: {type(exc).__name__}: {detail}".rstrip(": "))) from None


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import validate_repo_id  # only when the hub is used

    try:
        validate_repo_id(repo_id)
    except Exception as exc:  # noqa: BLE001 - HFValidationError
        raise DistillError(f"bad repo id `{repo_id}`: {str(exc).splitlines()[0]}") from None


def _check_no_token_inside(folder: Path) -> None:
    tokens = known_tokens()
    if not tokens:
        return
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in TEXT_SUFFIXES and path.stat().st_size < 50_000_000:
            text = path.read_text(encoding="utf-8", errors="replace")
            if any(t in text for t in tokens):
                raise DistillError(f"refusing to publish: {path.name} contains your Hugging Face token")


def _refuse_links_out(folder: Path, paths: list[Path]) -> None:
    """Refuse to publish when a file we would upload (or read into the card) resolves outside `folder`.

    A symbolic link (or a linked subfolder) can point anywhere: a model folder whose tokenizer.json led to
    ~/.ssh/id_rsa or /etc/passwd once staged that file for upload. Checked before staging, so a dry run refuses
    too; a link that stays inside the folder (to a checkpoint's weights, say) is fine.
    """
    root = folder.resolve()
    outside = [p for p in paths if p.exists() and not p.resolve().is_relative_to(root)]
    if outside:
        named = "; ".join(f"{p.relative_to(folder)} -> {p.resolve()}" for p in outside[:3])
        more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
        raise DistillError(
            f"refusing to publish {folder}: {named}{more} resolve{'s' if len(outside) == 1 else ''} outside it; "
            "copy the real files into the folder or remove the links"
        )


def _refuse_hard_links_out(folder: Path, paths: list[Path]) -> None:
    """Refuse a file we would upload that has a hard link outside `folder`: its name is inside, its bytes may be
    anyone's (a model folder's tokenizer.json hard-linked to a key file was staged and uploaded). A file's links
    are accounted for when the folder, and the --stage-dir folders publish made itself (which hold hard links to
    what they staged), hold as many names for it as its link count."""
    shared = [p for p in paths if p.is_file() and p.stat().st_nlink > 1]
    if not shared:
        return
    names = Counter()
    for root in [folder, *_known_stages()]:
        for base, _dirs, files in os.walk(root):
            for name in files:
                st = os.lstat(os.path.join(base, name))
                names[(st.st_dev, st.st_ino)] += 1
    outside = [p for p in shared if names[(p.stat().st_dev, p.stat().st_ino)] < p.stat().st_nlink]
    if outside:
        named = ", ".join(str(p.relative_to(folder)) for p in outside[:3])
        raise DistillError(
            f"refusing to publish {folder}: {named} {'has' if len(outside) == 1 else 'have'} hard links outside it "
            "(an earlier --stage-dir holds some: remove it); copy the files (cp --no-preserve=links) or remove the "
            "links"
        )


# The --stage-dir folders publish has made (one path a line, in distill's cache): the hard links they hold are ours.
STAGES_FILE = "publish-stages.txt"


def _remember_stage(target: Path) -> None:
    record = cache_dir() / STAGES_FILE
    record.parent.mkdir(parents=True, exist_ok=True)
    with open(record, "a", encoding="utf-8") as fh:
        fh.write(str(target.resolve()) + "\n")


def _known_stages() -> list[Path]:
    """The recorded stage folders that still exist (the others are dropped from the record)."""
    record = cache_dir() / STAGES_FILE
    try:
        lines = record.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    alive = [Path(line) for line in dict.fromkeys(lines) if line and Path(line).is_dir()]
    if len(alive) != len(lines):
        write_text_atomic("".join(f"{p}\n" for p in alive), record, durable=False)
    return alive


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # no copy of gigabytes of data; the staged file is never written to
    except OSError:
        shutil.copy2(source, target)


# --------------------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------------------


def _dataset_files(folder: Path) -> tuple[list[Path], int]:
    if not folder.is_dir():
        raise DistillError(f"dataset folder not found: {folder}")
    files = data_files(folder / "data")
    if not files:
        raise DistillError(f"no data/*.parquet in {folder}: pass a `distill filter` output folder")
    if not (folder / "stats.json").exists():
        raise DistillError(f"{folder} is incomplete (no stats.json): let its run finish before publishing")
    try:
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for damaged files
        raise DistillError(f"{folder}/data holds an unreadable Parquet file ({exc})") from None
    return files, rows


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


def find_model_dir(folder: Path) -> Path:
    """The folder with the final model: the training output itself, or its `final`/`model` subfolder."""
    if not folder.is_dir():
        raise DistillError(f"model folder not found: {folder}")
    for candidate in (folder, *(folder / name for name in MODEL_SUBFOLDERS)):
        if (candidate / "config.json").is_file() or (candidate / "adapter_config.json").is_file():
            return candidate
    raise DistillError(f"no model in {folder}: expected config.json or adapter_config.json (a saved model or adapter)")


def _model_files(model_dir: Path) -> list[Path]:
    files = [model_dir / name for name in MODEL_FILES if (model_dir / name).is_file()]
    weights = sorted({p for pattern in MODEL_WEIGHTS for p in model_dir.glob(pattern) if p.is_file()})
    if not any(p.suffix in (".safetensors", ".bin") for p in weights):
        raise DistillError(f"no weights in {model_dir}: expected *.safetensors (save the model before publishing)")
    return files + weights
