"""Ingest: plan -> work -> commit, for one source or every source of a build at once.

- **plan** (:mod:`.plan`, in the driver): walk each source's layout, learn every
  identifier (a header pass through the executor), cut the items into units.
- **work** (:mod:`.work`, on the executor): each unit reads, normalises and
  encodes its items and writes blobs and one part per table,
  ``index/<table>/part-<source>-<NNNNNN>.parquet``, each committed atomically.
- **commit** (here, in the driver, through :func:`curator.units.run_units`): a
  unit's marker ``_markers/ingest/<source>/<unit>.json`` is written once its work
  returned; when every unit of a source is done, the source's ``sources`` row and
  its marker ``_markers/ingest/<source>.json`` (fingerprint, summed stats, units).

A re-run whose source fingerprint (card, root, settings, code) matches a complete
source skips it without walking it; otherwise it re-plans and redoes only units
without a matching marker. A unit that fails (an exception, a worker killed by a
segfault or the OOM killer) fails alone: the others commit, it is reported with
its error, its source gets no marker, and the next run retries it. Parts and
markers of units the plan no longer has are removed before any unit runs, so
tables read by glob never hold rows twice.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from curator import __version__
from curator.adapters.base import Stats
from curator.blobs import blob_path, remove_pack
from curator.config import IngestSettings
from curator.errors import CuratorError
from curator.executors import Executor, Prepare, make_executor
from curator.registry import SourceCard
from curator.stages.ingest.plan import SourcePlan, plan_source, unit_parts_exist, unit_stage
from curator.stages.ingest.work import UNIT_TABLES, ingest_unit, prepare_worker
from curator.storage import Corpus
from curator.units import run_units, stale_markers

__all__ = [
    "TABLES",
    "SourceResult",
    "blob_path",
    "drop_source",
    "ingest_source",
    "ingest_sources",
    "ingested_sources",
    "source_row",
]

log = logging.getLogger(__name__)

TABLES = (*UNIT_TABLES, "sources")


@dataclass
class SourceResult:
    source_id: str
    stats: Stats
    skipped: bool
    seconds: float
    units: int = 0  # units planned (0 for a skipped source)
    units_skipped: int = 0  # done by an earlier run and kept
    failed: dict[str, str] = field(default_factory=dict)  # unit id -> one-line error
    root_used: str = "."  # the folder below --root the card read (its archive's top folder), else "."

    @property
    def ok(self) -> bool:
        return not self.failed


def source_row(card: SourceCard, sha: str) -> dict:
    return {
        "source_id": card.id,
        "name": card.name,
        "version": card.version,
        "homepage": card.homepage,
        "license": card.license,
        "access": card.access,
        "citation": card.citation,
        "modality": card.modality,
        "anatomy": card.anatomy,
        "department": card.department,
        "languages": card.languages,
        "adapter": card.adapter.name,
        "card_sha256": sha,
    }


def ingest_sources(
    corpus: Corpus,
    sources: list[tuple[SourceCard, Path, str | Path]],
    settings: IngestSettings,
    executor: Executor,
    progress: bool = True,
) -> list[SourceResult]:
    """Ingest ``(card, card_path, root)`` sources; the units of all of them share the executor at once."""
    start = time.monotonic()
    # an output that cannot be written is the user's to fix: one error here, not a failure per unit
    corpus.fs.makedirs(corpus.path("_markers", "ingest"), exist_ok=True)
    # what every worker imports once; plan_source starts the workers with it before its walk
    prepare = Prepare(prepare_worker, (tuple(sorted({card.adapter.name for card, _, _ in sources})),))
    plans = [
        plan_source(corpus, card, path, root, settings, executor, progress, prepare) for card, path, root in sources
    ]
    todo = [p for p in plans if p.skipped is None and not p.failed]
    for plan in todo:
        corpus.clear_marker("ingest", plan.card.id)
        _remove_stale(corpus, plan)
    run = run_units(
        corpus,
        [u for p in todo for u in p.units],
        ingest_unit,
        executor,
        outputs_exist=lambda u: unit_parts_exist(corpus, u.id),
        desc="ingest",
        progress=progress,
        prepare=prepare,
    )
    seconds = time.monotonic() - start
    return [_commit(corpus, plan, run, seconds) for plan in plans]


def ingest_source(
    corpus: Corpus,
    card: SourceCard,
    card_path: Path,
    root: str | Path,
    settings: IngestSettings,
    progress: bool = True,
    executor: Executor | None = None,
) -> SourceResult:
    """One source (``curator ingest``); without an executor, serially in this process."""
    if executor is not None:
        return ingest_sources(corpus, [(card, card_path, root)], settings, executor, progress)[0]
    with make_executor("serial") as serial:
        return ingest_sources(corpus, [(card, card_path, root)], settings, serial, progress)[0]


def _commit(corpus: Corpus, plan: SourcePlan, run, seconds: float) -> SourceResult:
    source_id = plan.card.id
    if plan.skipped is not None:
        return SourceResult(source_id, plan.skipped, skipped=True, seconds=0.0, root_used=plan.root_used)
    ids = [u.id for u in plan.units]
    stats = Stats()
    stats.add(plan.walk)
    for uid in ids:
        if uid in run.stats:
            stats.add(Stats.from_dict(run.stats[uid]))
    failed = dict(plan.failed) | {uid: run.failed[uid] for uid in ids if uid in run.failed}
    result = SourceResult(
        source_id,
        stats,
        skipped=False,
        seconds=seconds,
        units=len(ids),
        units_skipped=sum(1 for uid in ids if uid in set(run.skipped)),
        failed=failed,
        root_used=plan.root_used,
    )
    if failed:
        log.error("source '%s': %d of %d unit(s) failed; re-run to retry them", source_id, len(failed), len(ids))
        return result
    if stats.seen == 0:
        # an empty or wrong folder is a user's mistake, not an empty dataset: nothing is written for it
        raise CuratorError(
            f"source '{source_id}': no input found under {plan.root}; is --root the folder the dataset unpacked to?"
        )
    corpus.write_table("sources", source_id, [source_row(plan.card, plan.card_sha256)])
    if plan.root_used != ".":
        log.info("source '%s': read %s/ below the given root %s", source_id, plan.root_used, plan.root)
    corpus.set_marker(
        "ingest",
        source_id,
        {
            "fingerprint": plan.fingerprint,
            "stats": stats.as_dict(),
            "units": ids,
            "root_sha256": hashlib.sha256(str(plan.root.resolve()).encode()).hexdigest(),
            "curator": __version__,
        },
    )
    log.info(
        "ingested %s: %d seen, %d images, %d rejected in %d unit(s)",
        source_id,
        stats.seen,
        stats.images,
        stats.rejected,
        len(ids),
    )
    return result


def _unit_parts(corpus: Corpus, table: str, source_id: str) -> dict[str, str]:
    """A source's unit parts in one table: unit id -> full path (the older single part counts, as id '')."""
    pattern = re.compile(rf"part-{re.escape(source_id)}(-\d{{6}})?\.parquet")
    found = {}
    for path in corpus.table_parts(table):
        m = pattern.fullmatch(path.rsplit("/", 1)[-1])
        if m:
            found[f"{source_id}{m.group(1)}" if m.group(1) else ""] = path
    return found


def _remove_stale(corpus: Corpus, plan: SourcePlan) -> None:
    """Parts and markers of the source's units that this plan does not have (fewer items, another unit size)."""
    planned = {u.id for u in plan.units}
    for uid in stale_markers(corpus, plan.stage, planned):
        corpus.clear_marker(plan.stage, uid)
    for table in UNIT_TABLES:
        for uid, path in _unit_parts(corpus, table, plan.card.id).items():
            if uid not in planned:
                corpus.fs.rm(path)
                remove_pack(corpus, uid)


def drop_source(corpus: Corpus, source_id: str) -> None:
    """Remove a source's parts and markers (a recipe no longer lists it)."""
    for table in UNIT_TABLES:
        for uid, path in _unit_parts(corpus, table, source_id).items():
            corpus.fs.rm(path)
            remove_pack(corpus, uid)
    corpus.remove_table_part("sources", source_id)
    stage = unit_stage(source_id)
    for uid in stale_markers(corpus, stage, set()):
        corpus.clear_marker(stage, uid)
    corpus.clear_marker("ingest", source_id)


def ingested_sources(corpus: Corpus) -> list[str]:
    return sorted(
        p.rsplit("/", 1)[-1].removesuffix(".json") for p in corpus.ls("_markers/ingest") if p.endswith(".json")
    )
