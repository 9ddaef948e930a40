"""Build: every stage of a recipe in order, ingest -> index -> caption -> instruct -> shard, with one report."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from curator.config import Recipe, SelectSettings
from curator.errors import RecipeError
from curator.executors import Executor, make_executor
from curator.provenance import save_recipe, utc_now, write_build_record
from curator.registry import SourceCard, find_card, override_card
from curator.stages.caption import CaptionResult, run_caption
from curator.stages.index import IndexResult, run_index
from curator.stages.ingest import SourceResult, drop_source, ingest_sources, ingested_sources
from curator.stages.instruct import InstructResult, drop_instructions, run_instruct
from curator.stages.shard import ShardResult, run_shard
from curator.storage import Corpus, check_parts, claim_for_recipe, writer_lock

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
        claim_for_recipe(corpus, recipe.name, replace)
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
            drop_source(corpus, stale)
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
    shard = run_shard(corpus, recipe.shard, recipe.name, progress, executor=executor)
    write_build_record(corpus, recipe, started_at)  # shards/build.json: outside the tars, which stay reproducible
    return BuildReport(results, caption, shard, index, excluded, instruct)
