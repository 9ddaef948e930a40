"""`curator build` and `curator demo-data`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from curator.cli import main, summaries
from curator.cli.options import OUT, QUIET, RECIPE, executor_options, open_executor


@main.command("demo-data")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Rewrite even if the folder is complete.")
def demo_data(out: Path, force: bool) -> None:
    """Write the demo sample sources (deterministic, a few MB, nothing downloaded).

    \b
    Example:
      curator demo-data data/demo
    """
    from curator.demo import make_demo_sources

    roots = make_demo_sources(out, force=force)
    for name, root in roots.items():
        files = sum(1 for p in root.rglob("*") if p.is_file())
        click.echo(f"{name:<14} {files:>4} files  {root}")


@main.command()
@RECIPE
@OUT
@executor_options
@QUIET
@click.option("--replace", is_flag=True, help="Rebuild a corpus that another recipe built, discarding it.")
def build(
    recipe_path: Path | None,
    out: str,
    workers: int | None,
    executor_name: str,
    ray_address: str | None,
    quiet: bool,
    replace: bool,
) -> None:
    """Run every stage of a recipe: ingest each source, caption, shard.

    Re-running with the same inputs skips finished work and changes nothing.

    \b
    Example:
      curator build --recipe recipes/demo.toml --out shards/demo
      curator build --recipe recipes/demo.toml --out shards/demo --executor ray --ray-address 10.0.0.5:6379
      AWS_ENDPOINT_URL=http://127.0.0.1:9000 curator build --recipe recipes/demo.toml --out s3://bucket/demo
    """
    from curator.config import load_recipe
    from curator.stages.build import run_build

    if recipe_path is None:
        raise click.UsageError("--recipe is required")
    recipe = load_recipe(recipe_path)
    with open_executor(executor_name, workers, ray_address) as executor:
        report = run_build(recipe, out, progress=not quiet, executor=executor, replace=replace)
    for source_id, why in sorted(report.excluded.items()):
        click.echo(f"left out {source_id}: {why}")
    summaries.print_ingest(report.sources)
    if report.failed:
        click.echo("build stopped after ingest: index, caption and shard run once every unit is in")
        sys.exit(1)
    summaries.print_index(report.index)
    summaries.print_caption(report.caption)
    if report.instruct is not None:
        summaries.print_instruct(report.instruct)
    summaries.print_shards(report.shard, out)
