"""`distill publish dataset|model`: the click commands. They parse flags, build a PublishConfig and publish."""

import click

from distill.cards import print_license_warning
from distill.cli_utils import _fail_cleanly, section_and_flags
from distill.config import PublishConfig
from distill.hub import publish_dataset, publish_model
from distill.settings import build_config

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group("publish", context_settings=CONTEXT)
def publish_group():
    """Upload a dataset or a model to the Hugging Face Hub with a card (private unless --public).

    The token comes from HF_TOKEN or `hf auth login`; it is never printed or written.
    """


def _common_options(func):
    """The options both subcommands share, in the order --help shows them."""
    options = [
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            help="YAML with publish settings (a flat mapping or a recipe with a `publish:` section).",
        ),
        click.option(
            "--public/--private", "public", default=None, help="Visibility of a new repo.  [default: private]"
        ),
        click.option(
            "--overwrite", is_flag=True, default=None, help="Replace the files of an existing repo or branch."
        ),
        click.option("--revision", help="Branch to commit to (created when missing).  [default: main]"),
        click.option("--commit-message", help="Message of the commit."),
        click.option(
            "--license",
            help="License identifier for the card (e.g. mit, apache-2.0).  [default: other: the teacher's or base "
            "model's terms apply]",
        ),
        click.option("--dry-run", is_flag=True, default=None, help="Stage the folder and the card; upload nothing."),
        click.option(
            "--stage-dir",
            type=click.Path(file_okay=False),
            help="Keep the staged folder here (new or empty): exactly what is (or would be) uploaded.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _build_config(ctx, config_file, public, flags):
    recipe, overrides = section_and_flags(ctx, config_file, "publish", flags)
    if public is not None:
        overrides["private"] = not public
    return build_config(PublishConfig, recipe, overrides, where=config_file or "the recipe")


def _report(result: dict) -> None:
    size = f"{len(result['files'])} files, {result['bytes'] / 1e6:.1f} MB"
    if result["dry_run"]:
        where = result["stage_dir"] or "(not kept: pass --stage-dir to keep it)"
        click.echo(f"dry run: nothing uploaded. {result['url']} would get {size}, staged in {where}:")
        for name in result["files"]:
            click.echo(f"  {name}")
        if not result["stage_dir"]:
            click.echo("\n" + result["card"])
        return
    visibility = "private" if result["private"] else "public"
    click.echo(f"published {size} to {result['url']} ({visibility}): {result.get('commit_url') or 'committed'}")


def _publish(kind: str, ctx, folder: str, repo_id: str, config_file: str | None, public: bool | None, flags: dict):
    """The shared body of `publish dataset` and `publish model`."""
    config = _build_config(ctx, config_file, public, flags)
    print_license_warning(config.license)
    publish = publish_dataset if kind == "dataset" else publish_model
    _report(publish(folder, repo_id, config))


@publish_group.command("dataset", context_settings=CONTEXT)
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("repo_id")
@_common_options
@click.pass_context
@_fail_cleanly
def dataset(ctx, folder, repo_id, config_file, public, **flags):
    """Upload a `distill filter` output FOLDER (data/*.parquet + card) to the dataset repo REPO_ID."""
    _publish("dataset", ctx, folder, repo_id, config_file, public, flags)


@publish_group.command("model", context_settings=CONTEXT)
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("repo_id")
@_common_options
@click.option("--eval-summary", type=click.Path(dir_okay=False), help="A `distill eval` summary.json for the card.")
@click.option("--dataset", help="Dataset repo id the model was trained on, for the card.")
@click.option("--base-model", help="Base model for the card.  [default: the training config's student]")
@click.pass_context
@_fail_cleanly
def model(ctx, folder, repo_id, config_file, public, **flags):
    """Upload a trained model or LoRA adapter FOLDER (weights, tokenizer + card) to the model repo REPO_ID."""
    _publish("model", ctx, folder, repo_id, config_file, public, flags)
