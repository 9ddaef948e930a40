"""Build: every stage of a recipe in order, ingest -> index -> caption -> instruct -> shard, with one report."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import pyarrow as pa

from curator.blobs import blob_ext, blob_path
from curator.config import Recipe, SelectSettings
from curator.errors import RecipeError
from curator.executors import Executor, make_executor
from curator.provenance import claim_for_recipe, save_recipe, utc_now, write_build_record
from curator.registry import SourceCard, find_card, override_card
from curator.stages.caption import CaptionResult, run_caption
from curator.stages.index import IndexResult, run_index
from curator.stages.ingest import SourceResult, drop_source, ingest_sources, ingested_sources
from curator.stages.instruct import InstructResult, drop_instructions, run_instruct
from curator.stages.shard import ShardResult, run_shard
from curator.storage import Corpus, check_parts, writer_lock
from curator.tables import connect

log = logging.getLogger(__name__)


@dataclass
class BuildReport:
    sources: list[SourceResult]
    caption: CaptionResult | None  # None when an ingest unit failed: later stages wait for a complete ingest
    shard: ShardResult | None
    index: IndexResult | None = field(default_factory=IndexResult)
    excluded: dict[str, str] = field(default_factory=dict)  # source id -> why the recipe's [select] left it out
    instruct: InstructResult | None = None  # None: the recipe has no [instruct] table

    @property
    def failed(self) -> dict[str, str]:
        """Every ingest unit that failed (unit id -> error), across sources."""
        return {uid: err for r in self.sources for uid, err in r.failed.items()}


def exclusion(card: SourceCard, select: SelectSettings) -> str | None:
    """Why ``select`` leaves a source out, or None when it is in."""
    if select.licenses and not any(fnmatchcase(card.license, p) for p in select.licenses):
        return f"licence {card.license} matches none of select.licenses"
    for pattern in select.exclude_licenses:
        if fnmatchcase(card.license, pattern):
            return f"licence {card.license} matches select.exclude_licenses '{pattern}'"
    if select.access and card.access not in select.access:
        return f"access {card.access} is not in select.access"
    if card.access in select.exclude_access:
        return f"access {card.access} is in select.exclude_access"
    return None


def source_blobs(corpus: Corpus, source_id: str) -> dict[str, str]:
    """{image_sha256: blob path} of one source's images (bounded by the source, not the corpus)."""
    con = connect(corpus, ["images"])
    found = con.execute(
        "SELECT DISTINCT image_sha256, image_format FROM images WHERE source_id = ?", [source_id]
    ).fetchall()
    return {sha: blob_path(sha, blob_ext(fmt)) for sha, fmt in found if sha}


def drop_unreferenced_blobs(corpus: Corpus, blobs: dict[str, str]) -> int:
    """Remove those of ``blobs`` that no image row names any more (an image another source holds stays).

    A dropped source's blobs would otherwise stay in the corpus, and `verify` would
    rightly call each an orphan.
    """
    if not blobs:
        return 0
    con = connect(corpus, ["images"])
    con.register("dropped", pa.table({"sha": sorted(blobs)}))
    sql = "SELECT DISTINCT d.sha FROM dropped d JOIN images i ON i.image_sha256 = d.sha"
    kept = {sha for (sha,) in con.execute(sql).fetchall()}
    gone = sorted(rel for sha, rel in blobs.items() if sha not in kept)
    for rel in gone:
        corpus.remove(rel)
    return len(gone)


def run_build(
    recipe: Recipe, out: str, progress: bool = True, executor: Executor | None = None, replace: bool = False
) -> BuildReport:
    """Every stage; ``executor`` runs the per-unit work (default: serially in this process).

    When an ingest unit fails the build stops after ingest: indexing a source with a
    unit missing would write tables that the re-run (which retries the unit) replaces.
    """
    if executor is None:
        with make_executor("serial") as serial:
            return run_build(recipe, out, progress, serial, replace)
    started_at = utc_now()
    corpus = Corpus(out)
    with writer_lock(corpus, f"build {recipe.name}"):
        claim_for_recipe(corpus, recipe, replace)
        check_parts(corpus)
        return _build(corpus, recipe, out, progress, executor, started_at)  # releasing the lock writes the seal


def _build(
    corpus: Corpus, recipe: Recipe, out: str, progress: bool, executor: Executor, started_at: str
) -> BuildReport:
    registry = Path(recipe.registry) if recipe.registry else None
    cards = []
    for src in recipe.sources:  # fail early on a bad card or override
        card, path = find_card(src.id, registry)
        cards.append((src, override_card(card, src.params, src.image, f"recipe source '{src.id}'"), path))
    excluded = {card.id: why for _, card, _ in cards if (why := exclusion(card, recipe.select))}
    for source_id, why in excluded.items():
        log.info("source '%s' left out: %s", source_id, why)
    cards = [c for c in cards if c[1].id not in excluded]
    if not cards:
        raise RecipeError(f"recipe '{recipe.name}': [select] leaves out every source")
    save_recipe(corpus, recipe)  # first: a later `curator caption`/`shard` without --recipe uses it
    wanted = {card.id for _, card, _ in cards}
    for stale in ingested_sources(corpus):
        if stale not in wanted:
            log.warning("dropping source '%s' from %s: the recipe no longer takes it", stale, out)
            blobs = source_blobs(corpus, stale)  # before its parts go
            drop_source(corpus, stale)
            drop_unreferenced_blobs(corpus, blobs)
    settings = recipe.ingest_settings()
    results = ingest_sources(
        corpus, [(card, path, src.root) for src, card, path in cards], settings, executor, progress
    )
    if any(r.failed for r in results):
        return BuildReport(results, None, None, None, excluded)
    index = run_index(corpus, recipe.duplicates, recipe.holdout)
    caption = run_caption(corpus, recipe.caption, progress=progress)
    instruct = run_instruct(corpus, recipe.instruct, progress, llm=recipe.caption) if recipe.instruct else None
    if instruct is None:
        drop_instructions(corpus)  # a table an earlier recipe asked for must not reach this build's shards
    shard = run_shard(corpus, recipe.shard, recipe.name, progress, executor=executor, instruct=recipe.instruct)
    write_build_record(corpus, recipe, started_at)  # shards/build.json: outside the tars, which stay reproducible
    return BuildReport(results, caption, shard, index, excluded, instruct)
