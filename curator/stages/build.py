"""Build: every stage of a recipe in order, ingest -> index -> caption -> shard, with one report."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from curator.config import Recipe, SelectSettings
from curator.errors import RecipeError
from curator.registry import SourceCard, find_card
from curator.stages.caption import CaptionResult, run_caption
from curator.stages.index import IndexResult, run_index
from curator.stages.ingest import SourceResult, drop_source, ingest_source, ingested_sources
from curator.stages.shard import ShardResult, run_shard
from curator.storage import Corpus, check_parts, claim_for_recipe, writer_lock

log = logging.getLogger(__name__)


@dataclass
class BuildReport:
    sources: list[SourceResult]
    caption: CaptionResult
    shard: ShardResult
    index: IndexResult = field(default_factory=IndexResult)
    excluded: dict[str, str] = field(default_factory=dict)  # source id -> why the recipe's [select] left it out


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


def run_build(recipe: Recipe, out: str, progress: bool = True, replace: bool = False) -> BuildReport:
    corpus = Corpus(out)
    with writer_lock(corpus, f"build {recipe.name}"):
        claim_for_recipe(corpus, recipe.name, replace)
        check_parts(corpus)
        report = _build(corpus, recipe, out, progress)
    return report  # releasing the lock wrote the seal


def _build(corpus: Corpus, recipe: Recipe, out: str, progress: bool) -> BuildReport:
    registry = Path(recipe.registry) if recipe.registry else None
    cards = [(src, *find_card(src.id, registry)) for src in recipe.sources]  # fail early on a bad card
    excluded = {card.id: why for _, card, _ in cards if (why := exclusion(card, recipe.select))}
    for source_id, why in excluded.items():
        log.info("source '%s' left out: %s", source_id, why)
    cards = [c for c in cards if c[1].id not in excluded]
    if not cards:
        raise RecipeError(f"recipe '{recipe.name}': [select] leaves out every source")
    wanted = {card.id for _, card, _ in cards}
    for stale in ingested_sources(corpus):
        if stale not in wanted:
            log.warning("dropping source '%s' from %s: the recipe no longer takes it", stale, out)
            drop_source(corpus, stale)
    settings = recipe.ingest_settings()
    results = [ingest_source(corpus, card, path, src.root, settings, progress) for src, card, path in cards]
    index = run_index(corpus, recipe.duplicates, recipe.holdout)
    caption = run_caption(corpus, recipe.caption, progress=progress)
    shard = run_shard(corpus, recipe.shard, recipe.name, progress)
    return BuildReport(results, caption, shard, index, excluded)
