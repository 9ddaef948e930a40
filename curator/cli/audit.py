"""Audit and index commands: trace, index, query, verify, report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from curator.cli import main, summaries
from curator.cli.options import OUT, QUIET, RECIPE
from curator.errors import CorpusError


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


@main.command()
@OUT
@RECIPE
def index(out: str, recipe_path: Path | None) -> None:
    """Merge ingested images into samples: duplicates, splits, hold-out benchmarks.

    Settings come from the recipe's [duplicates] and [holdout] tables, or defaults.

    \b
    Example:
      curator index --out shards/demo --recipe recipes/demo.toml
    """
    from curator.config import DuplicateSettings, HoldoutSettings, load_recipe
    from curator.stages.index import run_index
    from curator.storage import Corpus, writer_lock

    recipe = load_recipe(recipe_path) if recipe_path else None
    corpus = Corpus(out)
    if not corpus.table_parts("images"):
        raise CorpusError(f"{out} has no ingested source: run `curator ingest` (or `curator build`) first")
    with writer_lock(corpus, "index"):
        result = run_index(
            corpus,
            recipe.duplicates if recipe else DuplicateSettings(),
            recipe.holdout if recipe else HoldoutSettings(),
        )
    summaries.print_index(result)


@main.command()
@click.argument("sql")
@OUT
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Aligned table, CSV, or JSON Lines.",
)
@click.option("--output", type=click.Path(path_type=Path), metavar="FILE", help="Write here instead of stdout.")
@click.option("--limit", type=int, default=200, show_default=True, help="Rows printed in table format.")
def query(sql: str, out: str, fmt: str, output: Path | None, limit: int) -> None:
    """Run SQL (DuckDB) over the index tables.

    Tables: sources, images, annotations, captions, rejects, shards, samples,
    members, duplicates, leakage. A sample is one distinct image; members maps each
    source's image row (images.sample_id) to it.

    \b
    Example:
      curator query "SELECT modality, count(*) AS n FROM samples WHERE status = 'keep' GROUP BY 1" --out shards/demo
      curator query "SELECT src.license, count(DISTINCT mb.sample_id) AS samples
                     FROM members mb JOIN sources src USING (source_id) GROUP BY 1" --out shards/demo
      curator query "SELECT * FROM rejects" --out shards/demo --format csv --output rejects.csv
    """
    from curator.audit.query import query_to
    from curator.storage import Corpus

    n = query_to(Corpus(out), sql, fmt, output, sys.stdout, None if fmt != "table" else limit)
    if output is not None:
        click.echo(f"{n} row{'' if n == 1 else 's'} written to {output}", err=True)


@main.command()
@OUT
@RECIPE
@click.option(
    "--root",
    "roots",
    multiple=True,
    metavar="SOURCE=DIR",
    help="Re-hash this source's original files (repeatable). --recipe gives every source's root.",
)
@QUIET
def verify(out: str, recipe_path: Path | None, roots: tuple[str, ...], quiet: bool) -> None:
    """Check shards against the manifest, the manifest against the index, and optionally the originals.

    Also checks what training readers open (each split's wids index, manifest.json,
    classes.json and .cls values, no stray .tar) and every kept sample's blob.
    Lists every difference and exits 1 if there is any.

    \b
    Example:
      curator verify --out shards/demo
      curator verify --out shards/demo --recipe recipes/demo.toml
      curator verify --out shards/demo --root demo_chexpert=data/demo/chexpert/CheXpert-v1.0-small
    """
    from curator.audit.verify import format_verify
    from curator.audit.verify import verify as do_verify
    from curator.config import load_recipe
    from curator.stages.ingest import ingested_sources
    from curator.storage import Corpus

    corpus = Corpus(out)
    originals: dict[str, Path] = {}
    if recipe_path:  # sources the recipe's [select] left out were never ingested: nothing to re-hash
        ingested = set(ingested_sources(corpus))
        originals.update({s.id: Path(s.root) for s in load_recipe(recipe_path).sources if s.id in ingested})
    for spec in roots:
        source_id, sep, root = spec.partition("=")
        if not sep or not source_id or not root:
            raise click.BadParameter(f"'{spec}' is not SOURCE=DIR", param_hint="--root")
        originals[source_id] = Path(root)
    result = do_verify(corpus, originals, progress=not quiet)
    click.echo(format_verify(result))
    if not result.ok:
        sys.exit(1)


@main.command()
@OUT
@click.option(
    "--to",
    "dest",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Where to write the card (default: DIR/report inside a local corpus).",
)
def report(out: str, dest: Path | None) -> None:
    """Write a corpus card: one self-contained index.html (inline SVG charts, thumbnails) and README.md.

    Source x split and modality x split, label balance per source, thumbnails per
    source, image sizes and bit depths, caption provenance and validation, mixture
    shares after weights, licences, rejects, duplicates, leakage, build provenance.

    \b
    Example:
      curator report --out shards/demo
      curator report --out s3://bucket/corpus --to reports/corpus
    """
    from curator.audit.report import write_report
    from curator.storage import Corpus

    corpus = Corpus(out)
    if dest is None:
        if corpus.protocol not in ("file", "local"):
            raise click.UsageError("--to is required for a corpus on object storage")
        dest = Path(corpus.root) / "report"
    card = write_report(corpus, dest)
    click.echo(
        f"corpus card: {card.html} (self-contained: {len(card.charts)} charts, {card.thumbnails} thumbnails inline)\n"
        f"             {card.markdown} (charts as SVG files beside it)"
    )


@main.command()
@OUT
@RECIPE
@click.option(
    "--per-source",
    type=click.IntRange(min=1),
    metavar="N",
    help="Texts scored per source (default: the recipe's audit.per_source, 30).",
)
@click.option("--seed", type=int, help="Seed of the sample (default: the recipe's audit.seed, else its seed).")
@QUIET
def audit(out: str, recipe_path: Path | None, per_source: int | None, seed: int | None, quiet: bool) -> None:
    """Score a seeded sample of each source's texts with the LLM against the images' metadata.

    Per source, N training texts (instruction entries, else captions and reports) are
    scored 1-5 on the rubric in prompts/audit/ against each image's labels, modality
    and anatomy; scores and reasons go to the audit_scores table (curator query,
    curator report). The endpoint is the caption stage's: the recipe's [caption] table
    (--recipe, else the recipe the corpus was built with), else OPENAI_BASE_URL,
    CURATOR_LLM_MODEL and OPENAI_API_KEY. Answers are cached in the corpus: a re-run
    calls nothing, a killed run resumes.

    \b
    Example:
      OPENAI_BASE_URL=http://localhost:8000/v1 curator audit --out shards/demo --per-source 30
      curator query "SELECT source_id, avg(score) FROM audit_scores GROUP BY 1" --out shards/demo
    """
    from curator.audit.scores import format_summary, run_audit
    from curator.config import AuditSettings, CaptionSettings, load_recipe
    from curator.provenance import RECIPE_FILE, stored_recipe
    from curator.storage import Corpus, writer_lock
    from curator.tables import connect

    corpus = Corpus(out)
    if not corpus.table_parts("samples"):
        raise CorpusError(f"{out} has no index: run `curator build` (or ingest and index) first")
    recipe = load_recipe(recipe_path) if recipe_path else stored_recipe(corpus)
    if recipe and not recipe_path:
        click.echo(f"recipe: '{recipe.name}', the one this corpus was built with ({RECIPE_FILE})", err=True)
    settings = recipe.audit if recipe else AuditSettings()
    updates = {k: v for k, v in {"per_source": per_source, "seed": seed}.items() if v is not None}
    settings = settings.model_copy(update=updates)
    with writer_lock(corpus, "audit"):
        result = run_audit(corpus, settings, recipe.caption if recipe else CaptionSettings(), progress=not quiet)
    click.echo(format_summary(result, connect(corpus, ["audit_scores"])))
