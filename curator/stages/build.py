"""Build: every stage of a recipe in order, ingest -> caption -> shard, with one report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from curator.config import Recipe
from curator.registry import find_card
from curator.stages.caption import CaptionResult, run_caption
from curator.stages.ingest import SourceResult, drop_source, ingest_source, ingested_sources
from curator.stages.shard import ShardResult, run_shard
from curator.storage import Corpus

log = logging.getLogger(__name__)


@dataclass
class BuildReport:
    sources: list[SourceResult]
    caption: CaptionResult
    shard: ShardResult


def run_build(recipe: Recipe, out: str, progress: bool = True) -> BuildReport:
    corpus = Corpus(out)
    registry = Path(recipe.registry) if recipe.registry else None
    cards = [(src, *find_card(src.id, registry)) for src in recipe.sources]  # fail early on a bad card
    wanted = {src.id for src in recipe.sources}
    for stale in ingested_sources(corpus):
        if stale not in wanted:
            log.warning("dropping source '%s' from %s: the recipe no longer lists it", stale, out)
            drop_source(corpus, stale)
    settings = recipe.ingest_settings()
    results = [ingest_source(corpus, card, path, src.root, settings, progress) for src, card, path in cards]
    caption = run_caption(corpus, recipe.caption)
    shard = run_shard(corpus, recipe.shard, recipe.name, progress)
    return BuildReport(results, caption, shard)
