"""`curator export llava`."""

from __future__ import annotations

import click

from curator.cli.export import export
from curator.cli.options import OUT, QUIET


@export.command("llava")
@OUT
@click.option("--to", "to", required=True, metavar="DIR", help="Export folder: a local path or an fsspec URL.")
@click.option(
    "--image-root",
    metavar="DIR",
    help="Do not copy images: name the corpus blobs below DIR (where the corpus is, or is mounted). "
    "Only for a corpus with one blob file per image (built before blob packs); a packed corpus is refused.",
)
@click.option(
    "--per",
    type=click.Choice(["image", "entry"]),
    default="image",
    show_default=True,
    help="One record per image and language (all its tasks as turns), or one per entry.",
)
@click.option("--split", "splits", multiple=True, help="Only this split (repeatable; default: every split).")
@click.option("--language", "languages", multiple=True, help="Only this language (repeatable).")
@QUIET
def llava(out: str, to: str, image_root: str | None, per: str, splits, languages, quiet: bool) -> None:
    """Write LLaVA / xtuner JSON, InternVL JSONL and an InternVL meta file from the instructions table.

    \b
    Example:
      curator export llava --out shards/demo --to exports/demo-llava
      curator export llava --out s3://bucket/demo --to s3://bucket/demo-llava
    """
    from curator.exports.llava import export_llava
    from curator.storage import Corpus

    result = export_llava(Corpus(out), to, image_root, per, tuple(splits), tuple(languages), progress=not quiet)
    counts = ", ".join(f"{k}={v}" for k, v in result.records.items()) or "none"
    click.echo(f"export llava\n  {result.entries} entries in records by split: {counts}; {result.images} images copied")
    click.echo(f"  {', '.join(result.files)}\n  written to {result.to}")
