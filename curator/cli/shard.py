"""`curator shard`."""

from __future__ import annotations

from pathlib import Path

import click

from curator.cli import main, summaries
from curator.cli.options import OUT, QUIET, RECIPE, executor_options, open_executor
from curator.errors import CuratorError


@main.command()
@OUT
@RECIPE
@click.option("--name", default=None, help="Shard name prefix (default: the recipe's name, else 'corpus').")
@click.option("--max-bytes", default=None, metavar="SIZE", help="Target shard size, e.g. 512MiB (overrides recipe).")
@click.option("--max-samples", type=int, default=None, metavar="N", help="Samples per shard at most.")
@click.option(
    "--multiple-of",
    type=int,
    default=None,
    metavar="N",
    help="Shard count per split a multiple of N (nodes x GPUs x workers), balanced sample counts.",
)
@click.option("--no-verify", is_flag=True, help="Keep earlier shards whose marker and size match, without re-hashing.")
@executor_options
@QUIET
def shard(
    out: str,
    recipe_path: Path | None,
    name: str | None,
    max_bytes: str | None,
    max_samples: int | None,
    multiple_of: int | None,
    no_verify: bool,
    workers: int | None,
    executor_name: str,
    ray_address: str | None,
    quiet: bool,
) -> None:
    """Write WebDataset tar shards, a manifest, classes.json and wids shard indexes.

    Named mixtures and per-source weights come from the recipe's [shard] table: --recipe,
    else the recipe the corpus was built with (its recipe.json), else defaults.
    A re-run keeps shards that still hash to their marker and rewrites the rest.

    \b
    Example:
      curator shard --out shards/demo --recipe recipes/demo.toml
      curator shard --out s3://bucket/demo --recipe recipes/demo.toml --multiple-of 64
      curator shard --out shards/demo --workers 2 --executor local
    """
    from pydantic import ValidationError

    from curator.config import ShardSettings, load_recipe
    from curator.provenance import RECIPE_FILE, stored_recipe
    from curator.stages.index import require_current_index
    from curator.stages.shard import run_shard
    from curator.storage import Corpus, writer_lock

    corpus = Corpus(out)
    require_current_index(corpus)  # before the lock, which would make a folder for a corpus that is not there
    recipe = load_recipe(recipe_path) if recipe_path else stored_recipe(corpus)
    if recipe and not recipe_path:
        click.echo(f"recipe: '{recipe.name}', the one this corpus was built with ({RECIPE_FILE})", err=True)
    settings = recipe.shard if recipe else ShardSettings()
    overrides = {"max_bytes": max_bytes, "max_samples": max_samples, "multiple_of": multiple_of}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        try:
            settings = ShardSettings.model_validate({**settings.model_dump(), **overrides})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise CuratorError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None
    name = name or (recipe.name if recipe else "corpus")
    with writer_lock(corpus, "shard"), open_executor(executor_name, workers, ray_address) as executor:
        result = run_shard(
            corpus,
            settings,
            name,
            progress=not quiet,
            verify=not no_verify,
            executor=executor,
            instruct=recipe.instruct if recipe else None,
        )
    summaries.print_shards(result, out)
