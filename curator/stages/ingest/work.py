"""Ingest work: what runs on an executor's worker (this process, a pool worker, a Ray node).

Three picklable functions, nothing else: ``prepare_worker`` (once a process: the
imports and settings the other two need), ``scan_headers`` (the plan's header pass
over a batch of DICOM files: each header parsed once) and ``ingest_unit`` (read, normalise, encode,
write blobs and one part per table for one unit). A worker learns nothing: every
identifier arrives in the unit's payload, learned by the plan from every file of
the source, so a unit's rows never depend on which worker ran it or when.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass, field
from pathlib import Path

from curator.adapters.base import Item, Rejected, Stats
from curator.blobs import TABLE as BLOB_PACKS
from curator.blobs import PackWriter
from curator.config import IngestSettings
from curator.registry import SourceCard, adapter_class
from curator.storage import Corpus
from curator.units import Unit

# the tables a unit writes one part of (``sources`` is one row per source, written at its commit);
# ``blob_packs`` locates the images of the unit's pack (curator.blobs)
UNIT_TABLES = ("images", "annotations", "rejects", BLOB_PACKS)


@dataclass(frozen=True)
class UnitWork:
    """A unit's payload: everything a worker needs, nothing it must look up in the driver."""

    corpus_url: str
    card: SourceCard
    root: str
    settings: IngestSettings
    identifiers: dict[str, str]  # learned identifier forms -> tags (phi.Redactor.state); in memory only, never written
    items: list[Item]
    # The driver's patient key, in memory only: every worker must hash with the same key, and a
    # cluster node without CURATOR_PATIENT_KEY would otherwise fall back to the demo key silently.
    patient_key: bytes
    # The plan's parse of each DICOM item's header (path -> DicomHeader.for_read()): the unit's
    # reads parse only its digest and the pixel data
    headers: dict = field(default_factory=dict)


def scan_headers(paths: list[Path]) -> list:
    """The header pass for a batch of files (readers.dicom.DicomHeader each, no pixels), in the batch's order."""
    from curator.readers.dicom import scan_header

    return [scan_header(p) for p in paths]


def keep_freed_memory() -> None:
    """Stop glibc handing each slice's freed arrays back to the OS (once per process; Linux only).

    A CT slice makes a dozen 1 MB temporaries (float32 frame, window, quantise). Above
    glibc's mmap threshold each is mapped fresh and freed with munmap, so every slice
    page-faults its memory back in: measured, that was half the CPU time of reading a
    512x512 slice (2.9 -> 1.3 ms). A fixed 64 MiB mmap threshold and a 128 MiB trim
    threshold keep the memory in the heap for the next slice; a worker holds at most
    that much more, and the pool recycles workers anyway (TASKS_PER_CHILD).
    """
    global _malloc_tuned
    if _malloc_tuned or not sys.platform.startswith("linux"):
        return
    _malloc_tuned = True
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 * 1024**2)
    libc.mallopt(m_trim_threshold, 128 * 1024**2)


_malloc_tuned = False


def prepare_worker(adapters: tuple[str, ...] = ()) -> None:
    """What a process needs before its first unit, done once (``curator.executors.Prepare``).

    Measured on the CT bench, a worker's first unit took 0.4-1.7 s more than the next
    ones (192 slices on 2 workers: a third of the run): importing pyarrow's writer, the
    pandas that pyarrow imports on its first list-to-array conversion (whether or not
    the data is pandas'), libpng's codec module and the adapter. Done here, the pool's
    ``start`` has every worker do it while the driver walks the plan.
    """
    import imagecodecs
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401 - the table parts' writer

    import curator.readers.dicom  # noqa: F401 - pydicom and the header reader

    keep_freed_memory()
    pa.array([""])  # pyarrow looks for pandas (and imports it) on its first conversion of a list
    imagecodecs.png_encode(np.zeros((1, 1), np.uint8))  # loads the PNG codec's extension module
    for name in adapters:
        adapter_class(name)


def ingest_unit(unit: Unit) -> dict:
    """Index one unit's items: blobs first, then its parts (each committed atomically); returns its stats."""
    keep_freed_memory()
    work: UnitWork = unit.payload
    corpus = Corpus(work.corpus_url)
    adapter = adapter_class(work.card.adapter.name)(work.card, Path(work.root))
    adapter.use_identifiers(work.identifiers, work.patient_key)
    adapter.known_headers = work.headers
    stats = Stats()
    with (
        corpus.table_writer("images", unit.id) as images,
        corpus.table_writer("annotations", unit.id) as annotations,
        corpus.table_writer("rejects", unit.id) as rejects,
        PackWriter(corpus, unit.id) as pack,  # entered last, so committed first: blobs before rows
    ):
        for out in adapter.index_items(work.items, work.settings, stats, work.patient_key):
            if isinstance(out, Rejected):
                rejects.append(out.row)
                continue
            for enc, row in zip(out.blobs, out.images, strict=True):
                pack.add(enc.sha256, enc.ext, enc.data)
                images.append(row)
            for row in out.annotations:
                annotations.append(row)
    return stats.as_dict()
