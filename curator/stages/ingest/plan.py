"""Ingest plan: walk a source's layout, learn every identifier, cut the items into units.

The plan runs in the driver. It walks ``adapter.items()`` once (reading no file),
parses the header of every file a DICOM reader would open once (a header pass on
the executor's workers, in batches, results applied in item order: identifiers,
series, slice position and the digest the unit's read reuses, see
:class:`curator.readers.dicom.DicomHeader`), and cuts the items into units of
``settings.unit_items``. Boundaries depend only on the items and that setting,
never on the worker count; items naming one image (``rows_repeat`` layouts) fall
in one unit, so the image is one sample with all its rows' annotations.

The plan holds the source's items in memory while its units are cut (a few
hundred bytes an item); rows, pixels and blobs live only in the workers, one unit
at a time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from curator import __version__, phi
from curator.adapters.base import Adapter, Item, Stats, short_hash
from curator.config import IngestSettings
from curator.errors import CuratorError
from curator.executors import Executor, Prepare, UnitFailure
from curator.registry import SourceCard, adapter_class, card_sha256
from curator.stages.ingest.work import UNIT_TABLES, UnitWork, scan_headers
from curator.storage import Corpus
from curator.units import Unit

# Files per header-pass task: a header parse is ~0.5 ms, so a task is at most a few tenths of a
# second, and a source's pass is cut into at least 4 tasks a worker so every worker shares it.
HEADER_BATCH = 512
# Fewer files than this are parsed in the driver: a pool round trip costs more than they do.
HEADER_MIN_PARALLEL = 16


@dataclass
class SourcePlan:
    card: SourceCard
    root: Path
    card_sha256: str
    fingerprint: str
    units: list[Unit] = field(default_factory=list)
    skipped: Stats | None = None  # the stats of a finished, unchanged source (nothing to plan)
    # What the walk counted in the driver (files skipped, split conflicts): added to the
    # source's stats once at its commit, never per unit.
    walk: Stats = field(default_factory=Stats)
    root_used: str = "."  # the folder below --root the card read (its archive's top folder), else "."
    failed: dict[str, str] = field(default_factory=dict)  # a header pass that failed: no unit may run

    @property
    def stage(self) -> str:
        return unit_stage(self.card.id)


def unit_stage(source_id: str) -> str:
    """Units' markers live beside the source's own: ``_markers/ingest/<source>/<unit>.json``."""
    return f"ingest/{source_id}"


def unit_id(source_id: str, n: int) -> str:
    # six digits keep parts sorting in plan order up to a million units a source
    return f"{source_id}-{n:06d}"


def source_fingerprint(card: SourceCard, card_sha: str, root: Path, settings: IngestSettings, adapter: Adapter) -> str:
    # the card as used (overrides from a recipe or --param included), not only its file
    return short_hash(
        card_sha, card.model_dump_json(), root.resolve(), settings.fingerprint(), __version__, adapter.name,
        adapter.version, n=32,
    )  # fmt: skip


def unit_parts_exist(corpus: Corpus, uid: str) -> bool:
    return all(corpus.exists(f"index/{t}/part-{uid}.parquet") for t in UNIT_TABLES)


def plan_source(
    corpus: Corpus,
    card: SourceCard,
    card_path: Path,
    root: str | Path,
    settings: IngestSettings,
    executor: Executor,
    progress: bool = True,
    prepare: Prepare | None = None,
) -> SourcePlan:
    root = Path(root)
    if not root.is_dir():
        raise CuratorError(f"source '{card.id}': root folder not found: {root}")
    adapter = adapter_class(card.adapter.name)(card, root)
    sha = card_sha256(card_path)
    plan = SourcePlan(card, root, sha, source_fingerprint(card, sha, root, settings, adapter))
    plan.root_used = adapter.root_used
    marker = corpus.marker("ingest", card.id)
    if (
        marker
        and marker.get("fingerprint") == plan.fingerprint
        and corpus.exists(f"index/sources/part-{card.id}.parquet")
        and all(unit_parts_exist(corpus, u) for u in marker.get("units", []))
    ):
        plan.skipped = Stats.from_dict(marker["stats"])
        return plan

    if prepare is not None:
        # the workers spawn and import while this process walks (once an executor: a no-op
        # re-run, every source skipped, starts none)
        executor.start(prepare)
    items = list(adapter._items())
    adapter._account(plan.walk)
    key = settings.patient_key()
    headers: dict = {}  # path -> DicomHeader, filled in item order as the pass returns
    failure: list[str] = []
    # learning consumes the header pass as it returns, batch by batch in item order, so the
    # driver learns while the workers parse the next batches (it was a serial step after the pass)
    adapter.learn(new_values(_header_pass(adapter, items, executor, progress, prepare, headers, failure)), key)
    if failure:
        plan.failed[f"{card.id}-headers"] = failure[0]
        return plan
    adapter.headers_seen(items, headers)
    identifiers = adapter.identifiers
    if card.identifiers_in_paths:
        # keyed layouts: the way back from a sample to its file stays on this machine, outside the corpus
        phi.save_lookup(corpus.url, card.id, adapter.path_lookup(items))
    # The learned set is part of every unit's fingerprint (a new file naming a patient
    # changes how every path of that patient is redacted) as a keyed hash: never the values.
    learned = hmac.new(key, repr(sorted(identifiers.items())).encode(), hashlib.sha256).hexdigest()[:32]
    for n, batch in enumerate(cut(items, settings.unit_items, adapter.rows_repeat)):
        uid = unit_id(card.id, n)
        # only what the unit's reads need: digests and keyed fields, not every identifier of the header
        known = {i.path: h.for_read() for i in batch if (h := headers.get(i.path)) is not None}
        plan.units.append(
            Unit(
                stage=plan.stage,
                id=uid,
                fingerprint=short_hash(plan.fingerprint, learned, repr(batch), n=32),
                payload=UnitWork(corpus.url, card, str(root), settings, identifiers, batch, key, known),
                weight=len(batch),
            )
        )
    return plan


# identifier kinds whose tag is the patient's (phi.Redactor.learn); every other kind's tag is its own
_PATIENT_KINDS = frozenset({"names", "patient_id", "patient_name"})


def new_values(identities: Iterable[dict]) -> Iterator[dict]:
    """Each identity with only the identifier values no earlier one had, for learning in the driver.

    The slices of a series repeat their patient, study, dates and institution in every
    header, and learning a value a second time with the same tag changes nothing
    (``phi.Redactor`` keeps a form's first non-date tag), so learning each value once
    is the same redactor at a fraction of the driver's time (it was most of it).
    tests/test_ingest_read_once.py checks that both learn the same state.
    """
    seen: set[tuple] = set()
    for identity in identities:
        patient = identity.get("patient")
        out = {k: v for k, v in identity.items() if k not in ("identifiers", "names")}
        groups = {**identity.get("identifiers", {}), **({"names": identity["names"]} if "names" in identity else {})}
        fresh: dict[str, list] = {}
        for kind, values in groups.items():
            owner = patient if kind in _PATIENT_KINDS else None
            for value in values:
                if (owner, kind, value) not in seen:
                    seen.add((owner, kind, value))
                    fresh.setdefault(kind, []).append(value)
        names = fresh.pop("names", None)
        out["identifiers"] = fresh
        if names:
            out["names"] = names
        yield out


def cut(items: list[Item], per_unit: int, rows_repeat: bool) -> list[list[Item]]:
    """Consecutive batches of ``per_unit`` items; for ``rows_repeat`` layouts, of ``per_unit`` distinct images.

    Every row naming an image goes to the unit of the image's first row, in the
    rows' own order, so one worker sees all of an image's annotations.
    """
    if not rows_repeat:
        return [items[i : i + per_unit] for i in range(0, len(items), per_unit)]
    unit_of: dict[str, int] = {}
    batches: list[list[Item]] = []
    for item in items:
        n = unit_of.setdefault(item.uri, len(unit_of) // per_unit)
        if n == len(batches):
            batches.append([])
        batches[n].append(item)
    return batches


def _header_pass(
    adapter: Adapter,
    items: list[Item],
    executor: Executor,
    progress: bool,
    prepare: Prepare | None,
    headers: dict,
    failure: list[str],
) -> Iterator[dict]:
    """Every DICOM file's header, parsed once, on the executor's workers: yields each identity in item order.

    Each header lands in ``headers`` (path -> DicomHeader) before its identity is yielded. A
    failed batch stops the pass and leaves its one-line error in ``failure``.
    """
    paths = list(dict.fromkeys(adapter.identity_paths(items)))  # a table may name one file in several rows
    if len(paths) < HEADER_MIN_PARALLEL or executor.name == "serial":
        for path, header in zip(paths, scan_headers(paths), strict=True):
            headers[path] = header
            yield header.identity
        return
    size = max(HEADER_MIN_PARALLEL, min(HEADER_BATCH, -(-len(paths) // (4 * executor.workers))))
    batches = [paths[i : i + size] for i in range(0, len(paths), size)]
    returned: dict[int, list] = {}  # batches back before an earlier one, held until it is
    following = 0
    for i, result in executor.map(
        scan_headers, batches, desc=f"headers {adapter.card.id}", progress=progress, weight=len, prepare=prepare
    ):
        if isinstance(result, UnitFailure):
            # no path in the message: until the pass is complete nothing can be redacted from one
            failure.append(f"header pass, batch {i + 1} of {len(batches)}: {result.error}")
            return
        returned[i] = result
        while following in returned:
            for path, header in zip(batches[following], returned.pop(following), strict=True):
                headers[path] = header
                yield header.identity
            following += 1
