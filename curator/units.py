"""Units of work: skip what is done, run the rest on an executor, commit each one. Once, for every stage.

A stage plans its work as deterministic :class:`Unit` objects (ingest: a source x
a batch of files; shard: one shard), whose boundaries never depend on the worker
count. ``work(unit)`` runs anywhere (this process, a pool worker, a Ray node),
writes the unit's outputs under temporary names and commits them atomically,
and returns a small JSON-able stats dict. Back in the driver, ``run_units``
writes the unit's completion marker (its fingerprint and stats) only after
``work`` returned, so a killed run leaves no marker and the unit is redone; a
re-run whose fingerprint matches skips it. A unit that raises, or whose worker
dies, fails alone: it has no marker, its error is reported, the next run retries it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from curator.executors import Executor, Prepare, UnitFailure
from curator.storage import Corpus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    stage: str
    id: str  # stable and file-name safe: the marker is _markers/<stage>/<id>.json
    fingerprint: str  # changes whenever the unit's inputs, settings or code change
    payload: Any = None  # what ``work`` needs; picklable
    weight: int = 1  # for progress (files in the unit)


@dataclass
class UnitRun:
    stats: dict[str, dict] = field(default_factory=dict)  # unit id -> stats, done now or before
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # unit id -> one-line error

    @property
    def ran(self) -> int:
        return len(self.stats) - len(self.skipped)


def is_done(corpus: Corpus, unit: Unit) -> dict | None:
    """The unit's marker when it matches the unit's fingerprint, else None."""
    marker = corpus.marker(unit.stage, unit.id)
    return marker if marker and marker.get("fingerprint") == unit.fingerprint else None


def run_units(
    corpus: Corpus,
    units: Sequence[Unit],
    work: Callable[[Unit], dict],
    executor: Executor,
    *,
    outputs_exist: Callable[[Unit], bool] | None = None,
    desc: str = "units",
    progress: bool = True,
    prepare: Prepare | None = None,
) -> UnitRun:
    """Run every unit not already done; write each unit's marker once its work returned.

    ``prepare`` runs once in each worker process before its first unit (see ``Prepare``).
    """
    run = UnitRun()
    todo: list[Unit] = []
    for unit in units:
        marker = is_done(corpus, unit)
        if marker is not None and (outputs_exist is None or outputs_exist(unit)):
            run.stats[unit.id] = marker.get("stats", {})
            run.skipped.append(unit.id)
        else:
            corpus.clear_marker(unit.stage, unit.id)
            todo.append(unit)
    if not todo:
        return run
    weight = (lambda u: u.weight) if any(u.weight != 1 for u in todo) else None
    for i, result in executor.map(work, todo, desc=desc, progress=progress, weight=weight, prepare=prepare):
        unit = todo[i]
        if isinstance(result, UnitFailure):
            log.error("%s unit %s failed: %s", unit.stage, unit.id, result.error)
            run.failed[unit.id] = result.error
            continue
        corpus.set_marker(unit.stage, unit.id, {"fingerprint": unit.fingerprint, "stats": result})
        run.stats[unit.id] = result
    return run


def stale_markers(corpus: Corpus, stage: str, planned: set[str], prefix: str = "") -> list[str]:
    """Unit ids with a marker under ``stage`` (and ``prefix``) that the current plan no longer has."""
    ids = [p.rsplit("/", 1)[-1].removesuffix(".json") for p in corpus.ls(f"_markers/{stage}") if p.endswith(".json")]
    return sorted(i for i in ids if i.startswith(prefix) and i not in planned)
