"""`curator export hf`: Parquet with an Image feature and a dataset card, for Hugging Face `datasets`."""

from __future__ import annotations

import click

from curator.cli.export import export
from curator.cli.options import OUT, QUIET


@export.command("hf")
@OUT
@click.option(
    "--to", "to", required=True, metavar="DIR", help="Export folder: a local path or any fsspec URL (s3://...)."
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in DIR (its data/*.parquet and README.md).")
@QUIET
def hf(out: str, to: str, overwrite: bool, quiet: bool) -> None:
    """Write Parquet per split and a dataset card that `datasets.load_dataset(DIR)` reads as is.

    One row per kept sample: the image (an Image feature), its provenance, labels,
    texts and validated captions, typed. The card's YAML front matter lists the
    splits' data files and the features, so no `features=` argument is needed, in
    normal or streaming mode.

    \b
    Example:
      curator export hf --out shards/demo --to exports/demo-hf
      python -c "import datasets; print(datasets.load_dataset('exports/demo-hf'))"
    """
    from curator.exports.hf import export_hf
    from curator.storage import Corpus

    result = export_hf(Corpus(out), to, overwrite=overwrite, progress=not quiet)
    click.echo(f"export hf: {result.to}")
    for split, n in result.splits.items():
        click.echo(f"  {split:<6} {n:>8} samples")
    click.echo(f"  {len(result.files)} Parquet files, {result.bytes} bytes, card {result.to}/README.md")
