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
from curator.errors import CorpusError, CuratorError


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
        except OSError as exc:
            # --out on a file, a read-only or vanished folder, a full disk: the user's to fix,
            # so one line; -vv shows the traceback for a developer.
            if ctx.params.get("verbose", 0) >= 2:
                raise
            click.echo(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
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
    for source_id, why in sorted(report.excluded.items()):
        click.echo(f"left out {source_id}: {why}")
    _print_ingest(report.sources)
    _print_index(report.index)
    _print_caption(report.caption)
    _print_shards(report.shard, out)


def _key_values(pairs: tuple[str, ...], flag: str) -> dict:
    """``KEY=VALUE`` options; VALUE is parsed as JSON when it parses (lists, numbers), else kept as text."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{flag} expects KEY=VALUE, got '{pair}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@main.command()
@click.option("--source", "source_id", metavar="ID", help="Source card id (see `curator sources list`).")
@click.option(
    "--adapter",
    "adapter_name",
    metavar="NAME",
    help="Run a generic adapter without a card (class_folders, label_csv, image_text, image_report, ...).",
)
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
@click.option(
    "--id",
    "adhoc_id",
    metavar="ID",
    help="With --adapter: source id (default: <adapter>_<hash of the root path>, never the folder name, "
    "which may identify a patient).",
)
@click.option("--name", help="With --adapter: dataset name.")
@click.option("--modality", help="With --adapter: default modality (e.g. X-ray, CT, MRI).")
@click.option("--anatomy", help="With --adapter: default anatomy (e.g. chest).")
@click.option("--department", help="With --adapter: clinical department (e.g. radiology).")
@click.option("--license", "license_", metavar="SPDX", help="With --adapter: SPDX id or LicenseRef-… .")
@click.option("--access", type=click.Choice(["open", "credentialed", "on-request"]), help="With --adapter.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="With --adapter: adapter parameter.")
@click.option("--image", "image", multiple=True, metavar="KEY=VALUE", help="With --adapter: image policy field.")
@QUIET
def ingest(
    source_id, adapter_name, root, out, registry, seed, adhoc_id, name, modality, anatomy, department, license_,
    access, params, image, quiet,
) -> None:  # fmt: skip
    """Index one source into a corpus: images, annotations, rejects.

    Give a card with --source, or run a generic adapter with --adapter and the
    card's fields as options (unset licence/access default to
    LicenseRef-unspecified / on-request). --param values are JSON or text.

    \b
    Example:
      curator ingest --source demo_chexpert --root data/demo/chexpert --out shards/demo
      curator ingest --adapter class_folders --root data/kaggle_xray --out shards/x \\
          --modality X-ray --anatomy chest --license CC-BY-4.0 --access open --param 'levels=["split","label"]'
    """
    import tempfile

    from curator.config import IngestSettings
    from curator.registry import adhoc_card, find_card
    from curator.stages.ingest import ingest_source
    from curator.storage import Corpus

    if bool(source_id) == bool(adapter_name):
        raise click.UsageError("give exactly one of --source ID or --adapter NAME")
    settings = IngestSettings(seed=seed)
    if source_id:
        card, path = find_card(source_id, registry)
        result = ingest_source(Corpus(out), card, path, root, settings, progress=not quiet)
    else:
        card = adhoc_card(
            adapter_name,
            root,
            source_id=adhoc_id,
            name=name,
            modality=modality,
            anatomy=anatomy,
            department=department,
            license=license_,
            access=access,
            params=_key_values(params, "--param"),
            image=_key_values(image, "--image"),
        )
        with tempfile.TemporaryDirectory() as tmp:
            # the card's exact content is what the ingest fingerprint hashes
            path = Path(tmp) / f"{card.id}.json"
            path.write_text(card.model_dump_json(indent=2))
            result = ingest_source(Corpus(out), card, path, root, settings, progress=not quiet)
    _print_ingest([result])


@main.command()
@OUT
@RECIPE
@click.option("--dry-run", is_flag=True, help="Print triplets, planned calls and estimated tokens; call nothing.")
@QUIET
def caption(out: str, recipe_path: Path | None, dry_run: bool, quiet: bool) -> None:
    """Write captions for label-only images, per unique (label, anatomy, modality) triplet.

    Settings come from the recipe's [caption] table, or defaults without one. With
    OPENAI_BASE_URL (or caption.base_url) set, an LLM at that OpenAI-compatible
    endpoint writes them (key from OPENAI_API_KEY, model from caption.model or
    CURATOR_LLM_MODEL); without it, the offline templates do. Answers are cached in
    the corpus: a re-run calls nothing, a killed run resumes.

    \b
    Example:
      curator caption --out shards/demo --recipe recipes/demo.toml --dry-run
      OPENAI_BASE_URL=http://localhost:8000/v1 CURATOR_LLM_MODEL=qwen2.5-7b-instruct \\
        curator caption --out shards/demo --recipe recipes/demo.toml
    """
    from curator.config import CaptionSettings, load_recipe
    from curator.stages.caption import plan_captions, run_caption
    from curator.storage import Corpus

    settings = load_recipe(recipe_path).caption if recipe_path else CaptionSettings()
    corpus = Corpus(out)
    plan = plan_captions(corpus, settings, resolve_model=not dry_run)
    _print_caption_plan(plan, dry_run)
    if not dry_run:
        _print_caption(run_caption(corpus, settings, progress=not quiet, plan=plan))


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
    if not paths:
        raise CuratorError(f"no cards (*.toml) in {registry or 'the registry'}")
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
    from curator.storage import Corpus

    recipe = load_recipe(recipe_path) if recipe_path else None
    corpus = Corpus(out)
    if not corpus.table_parts("images"):
        raise CorpusError(f"{out} has no ingested source: run `curator ingest` (or `curator build`) first")
    _print_index(
        run_index(
            corpus,
            recipe.duplicates if recipe else DuplicateSettings(),
            recipe.holdout if recipe else HoldoutSettings(),
        )
    )


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
    """Write a corpus card (HTML and Markdown, PNG charts): sources, modalities, splits, captions, rejects, leakage.

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
    click.echo(f"corpus card: {card.html}\n             {card.markdown}\ncharts:      {len(card.charts)} PNG in {dest}")


# -- summaries ----------------------------------------------------------------------
def _print_ingest(results) -> None:
    click.echo("ingest")
    w = max([20, *(len(r.source_id) for r in results)])
    click.echo(f"  {'source':<{w}} {'seen':>6} {'indexed':>8} {'images':>7} {'rejected':>9}  rejects by reason")
    total = [0, 0, 0, 0]
    for r in results:
        s = r.stats
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(s.rejects.items())) or "-"
        note = "  (unchanged, skipped)" if r.skipped else ""
        click.echo(
            f"  {r.source_id:<{w}} {s.seen:>6} {s.indexed_items:>8} {s.images:>7} {s.rejected:>9}  {reasons}{note}"
        )
        for i, v in enumerate((s.seen, s.indexed_items, s.images, s.rejected)):
            total[i] += v
    if len(results) > 1:
        click.echo(f"  {'total':<{w}} {total[0]:>6} {total[1]:>8} {total[2]:>7} {total[3]:>9}")


def _print_caption_plan(plan, dry_run: bool) -> None:
    click.echo("caption plan")
    if plan.generator == "template":
        click.echo("  generator   template (offline; no LLM endpoint configured)")
    else:
        click.echo(
            f"  generator   llm: model {plan.model or '(asked of the endpoint at run time)'} at {plan.endpoint.host}"
        )
    images = sum(plan.images.values())
    click.echo(
        f"  {images} label-only images, {len(plan.triplets)} unique triplets x {len(plan.languages)} languages "
        f"({', '.join(plan.languages)}) = {plan.planned} calls planned"
    )
    if plan.generator == "llm":
        cached = "unknown (model not set)" if plan.cached is None else str(plan.cached)
        to_call = "?" if plan.to_call is None else str(plan.to_call)
        cost = f", estimated cost {plan.est_cost:.4f}" if plan.est_cost is not None else ""
        click.echo(
            f"  cached {cached}, to call {to_call}; estimated tokens {plan.est_prompt_tokens:,} prompt + "
            f"{plan.est_completion_tokens:,} completion (before retries){cost}"
        )
    if dry_run:
        click.echo(f"  {'triplet_id':<16}  {'images':>6}  label | anatomy | modality")
        for t in plan.triplets:
            click.echo(f"  {t.id:<16}  {plan.images[t]:>6}  {t.label or '-'} | {t.anatomy} | {t.modality}")
        click.echo("  dry run: nothing called, nothing written")


def _print_index(r) -> None:
    note = "  (unchanged, skipped)" if r.skipped else ""
    click.echo(f"index\n  {r.images} images -> {r.samples} samples, {r.kept} kept{note}")
    click.echo(
        f"  exact duplicates merged: {r.exact_same_source} within a source, {r.exact_cross_source} across sources "
        f"({r.merged_samples} samples hold several sources)"
    )
    action = "dropped" if r.near_dropped else "flagged"
    click.echo(
        f"  near-duplicates: {r.near_pairs} {action}"
        + (f" ({r.near_cross_split} across splits)" if r.near_cross_split else "")
    )
    click.echo(
        f"  splits: {r.split_conflicts} samples with disagreeing members, {r.split_moved} moved to the stricter split"
    )
    click.echo(f"  hold-out benchmarks: {r.held_out} samples excluded, {r.leak_flagged} near matches flagged")


def _print_caption(result) -> None:
    gens = ", ".join(f"{k}={v}" for k, v in sorted(result.by_generator.items())) or "none"
    checks = ", ".join(f"{k}={v}" for k, v in sorted(result.by_validation.items())) or "-"
    note = "  (unchanged, skipped)" if result.skipped else ""
    click.echo(
        f"caption\n  {result.triplets} unique triplets, {result.captions} captions by generator: {gens}; "
        f"validation: {checks}{note}"
    )
    if result.generator == "llm":
        cost = f", cost {result.cost:.4f}" if result.cost is not None else ""
        click.echo(
            f"  llm {result.model} at {result.endpoint}: {result.jobs} jobs, {result.cached_jobs} cached, "
            f"{result.failed_jobs} failed; {result.requests} requests ({result.retries} retries); "
            f"tokens {result.prompt_tokens:,} prompt + {result.completion_tokens:,} completion{cost}"
        )
    if "template" in result.by_generator:
        if result.generator == "llm":
            click.echo("  note: generator=template captions stand in where the LLM gave no usable caption")
        else:
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
