"""The ``curator`` command: a thin layer over the library.

Library code raises CuratorError (and kin) for user mistakes; this module turns
them into one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from curator import __version__
from curator.errors import CuratorError


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


class CuratorGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CuratorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=CuratorGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="curator")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Build a traceable medical image-text corpus: ingest -> index -> caption -> shard.

    \b
    Example:
      curator demo-data data/demo
      curator build --recipe recipes/demo.toml --out shards/demo
      curator trace demo_chexpert-0123456789abcdef --out shards/demo
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


OUT = click.option(
    "--out",
    "out",
    required=True,
    metavar="DIR",
    help="Corpus directory: a local path or any fsspec URL (s3://bucket/prefix; credentials and endpoint from "
    "AWS_* variables or fsspec config).",
)
RECIPE = click.option(
    "--recipe", "recipe_path", type=click.Path(path_type=Path), metavar="FILE", help="Build recipe (TOML)."
)
QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")


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
@QUIET
def build(recipe_path: Path | None, out: str, quiet: bool) -> None:
    """Run every stage of a recipe: ingest each source, caption, shard.

    Re-running with the same inputs skips finished work and changes nothing.

    \b
    Example:
      curator build --recipe recipes/demo.toml --out shards/demo
      AWS_ENDPOINT_URL=http://127.0.0.1:9000 curator build --recipe recipes/demo.toml --out s3://bucket/demo
    """
    from curator.config import load_recipe
    from curator.stages.build import run_build

    if recipe_path is None:
        raise click.UsageError("--recipe is required")
    recipe = load_recipe(recipe_path)
    report = run_build(recipe, out, progress=not quiet)
    _print_ingest(report.sources)
    _print_caption(report.caption)
    _print_shards(report.shard, out)


@main.command()
@click.option("--source", "source_id", required=True, metavar="ID", help="Source card id (see `curator sources list`).")
@click.option(
    "--root",
    required=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="The dataset folder as downloaded and unpacked.",
)
@OUT
@click.option("--registry", type=click.Path(path_type=Path), metavar="DIR", help="Folder of source cards.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for split assignment.")
@QUIET
def ingest(source_id: str, root: Path, out: str, registry: Path | None, seed: int, quiet: bool) -> None:
    """Index one source into a corpus: images, annotations, rejects.

    \b
    Example:
      curator ingest --source demo_chexpert --root data/demo/chexpert --out shards/demo
    """
    from curator.config import IngestSettings
    from curator.registry import find_card
    from curator.stages.ingest import ingest_source
    from curator.storage import Corpus

    card, path = find_card(source_id, registry)
    result = ingest_source(Corpus(out), card, path, root, IngestSettings(seed=seed), progress=not quiet)
    _print_ingest([result])


@main.command()
@OUT
@RECIPE
def caption(out: str, recipe_path: Path | None) -> None:
    """Write captions for label-only images, per unique (label, anatomy, modality) triplet.

    Settings come from the recipe's [caption] table, or defaults without one.

    \b
    Example:
      curator caption --out shards/demo --recipe recipes/demo.toml
    """
    from curator.config import CaptionSettings, load_recipe
    from curator.stages.caption import run_caption
    from curator.storage import Corpus

    settings = load_recipe(recipe_path).caption if recipe_path else CaptionSettings()
    _print_caption(run_caption(Corpus(out), settings))


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
@click.option("--threads", type=int, default=4, show_default=True, help="Shards written at once (same output).")
@QUIET
def shard(
    out: str,
    recipe_path: Path | None,
    name: str | None,
    max_bytes: str | None,
    max_samples: int | None,
    multiple_of: int | None,
    no_verify: bool,
    threads: int,
    quiet: bool,
) -> None:
    """Write WebDataset tar shards, a manifest, classes.json and wids shard indexes.

    Named mixtures and per-source weights come from the recipe's [shard] table.
    A re-run keeps shards that still hash to their marker and rewrites the rest.

    \b
    Example:
      curator shard --out shards/demo --recipe recipes/demo.toml
      curator shard --out s3://bucket/demo --recipe recipes/demo.toml --multiple-of 64
    """
    from pydantic import ValidationError

    from curator.config import ShardSettings, load_recipe
    from curator.stages.shard import run_shard
    from curator.storage import Corpus

    recipe = load_recipe(recipe_path) if recipe_path else None
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
    result = run_shard(Corpus(out), settings, name, progress=not quiet, verify=not no_verify, threads=threads)
    _print_shards(result, out)


@main.group()
def sources() -> None:
    """List and validate source cards.

    \b
    Example:
      curator sources list
      curator sources validate
    """


@sources.command("list")
@click.option("--registry", type=click.Path(path_type=Path), metavar="DIR", help="Folder of source cards.")
def sources_list(registry: Path | None) -> None:
    """Show every card as a table: id, licence, access, modality, adapter.

    \b
    Example:
      curator sources list
    """
    from curator.registry import load_registry

    cards = load_registry(registry)
    rows = [("ID", "LICENCE", "ACCESS", "MODALITY", "ANATOMY", "ADAPTER", "NAME")]
    rows += [(c.id, c.license, c.access, c.modality, c.anatomy, c.adapter.name, c.name) for c in cards.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])


@sources.command("validate")
@click.argument("cards", nargs=-1, type=click.Path(path_type=Path))
@click.option("--registry", type=click.Path(path_type=Path), metavar="DIR", help="Folder of source cards.")
def sources_validate(cards: tuple[Path, ...], registry: Path | None) -> None:
    """Validate cards (all in the registry, or the files given); exit 1 if any is invalid.

    \b
    Example:
      curator sources validate
      curator sources validate source_registry/demo_chexpert.toml
    """
    from curator.registry import card_paths, load_card

    paths = list(cards) or card_paths(registry)
    bad = 0
    for path in paths:
        try:
            card = load_card(path)
            click.echo(f"ok       {card.id}")
        except CuratorError as exc:
            bad += 1
            click.echo(f"invalid  {exc}")
    if bad:
        raise CuratorError(f"{bad} of {len(paths)} card(s) invalid")


@main.command()
@click.argument("sample_id")
@OUT
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def trace(sample_id: str, out: str, as_json: bool) -> None:
    """Show where a sample came from: source card, original file, adapter, captions, shard.

    SAMPLE_ID is a sample id or SHARD_URL#KEY.

    \b
    Example:
      curator trace demo_chexpert-0123456789abcdef --out shards/demo
      curator trace demo_dicom-0123456789abcdef --out shards/demo --json
    """
    from curator.audit.trace import format_trace
    from curator.audit.trace import trace as do_trace
    from curator.storage import Corpus

    result = do_trace(Corpus(out), sample_id)
    click.echo(json.dumps(result, indent=2, ensure_ascii=False, default=str) if as_json else format_trace(result))


# -- summaries ----------------------------------------------------------------------
def _print_ingest(results) -> None:
    click.echo("ingest")
    click.echo(f"  {'source':<20} {'seen':>6} {'indexed':>8} {'images':>7} {'rejected':>9}  rejects by reason")
    total = [0, 0, 0, 0]
    for r in results:
        s = r.stats
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(s.rejects.items())) or "-"
        note = "  (unchanged, skipped)" if r.skipped else ""
        click.echo(
            f"  {r.source_id:<20} {s.seen:>6} {s.indexed_items:>8} {s.images:>7} {s.rejected:>9}  {reasons}{note}"
        )
        for i, v in enumerate((s.seen, s.indexed_items, s.images, s.rejected)):
            total[i] += v
    if len(results) > 1:
        click.echo(f"  {'total':<20} {total[0]:>6} {total[1]:>8} {total[2]:>7} {total[3]:>9}")


def _print_caption(result) -> None:
    gens = ", ".join(f"{k}={v}" for k, v in sorted(result.by_generator.items())) or "none"
    checks = ", ".join(f"{k}={v}" for k, v in sorted(result.by_validation.items())) or "-"
    note = "  (unchanged, skipped)" if result.skipped else ""
    click.echo(
        f"caption\n  {result.triplets} unique triplets, {result.captions} captions by generator: {gens}; "
        f"validation: {checks}{note}"
    )
    if "template" in result.by_generator:
        click.echo("  note: generator=template is the offline generator (no LLM endpoint configured)")


def _print_shards(result, out: str) -> None:
    total = sum(s.bytes for s in result.shards)
    note = "  (unchanged, skipped)" if result.skipped else ""
    kept = sum(s.kept for s in result.shards) if not result.skipped else 0
    resumed = f", {kept} kept from an earlier run (verified)" if kept else ""
    click.echo(f"shard\n  {result.samples} samples in {len(result.shards)} shards, {_human(total)}{note}{resumed}")
    for s in result.shards:
        click.echo(f"  {s.url:<40} {s.nsamples:>5} samples  {_human(s.bytes):>10}")
    if result.classes:
        click.echo(f"  {len(result.classes)} classes for .cls (shards/classes.json)")
    click.echo(f"  written to {out}")
