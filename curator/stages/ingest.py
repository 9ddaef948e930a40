"""Ingest: run one source's adapter and write its index parts, blobs and rejects.

Each source is one unit: its parts (``index/<table>/part-<source>.parquet``) are
written under temporary names and committed, then a marker records the
fingerprint (card, root, settings, code version) and the counts. A re-run with the
same fingerprint skips the source; a killed run left no marker, so it redoes the
source and overwrites its parts: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from curator import __version__, phi
from curator.adapters.base import Rejected, Stats, short_hash
from curator.config import IngestSettings
from curator.errors import CuratorError
from curator.registry import SourceCard, adapter_class, card_sha256
from curator.storage import Corpus

log = logging.getLogger(__name__)

TABLES = ("images", "annotations", "rejects", "sources")


@dataclass
class SourceResult:
    source_id: str
    stats: Stats
    skipped: bool
    seconds: float


def blob_path(sha256: str, ext: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}.{ext}"


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


def ingest_source(
    corpus: Corpus, card: SourceCard, card_path: Path, root: str | Path, settings: IngestSettings, progress: bool = True
) -> SourceResult:
    root = Path(root)
    if not root.is_dir():
        raise CuratorError(f"source '{card.id}': root folder not found: {root}")
    adapter = adapter_class(card.adapter.name)(card, root)
    sha = card_sha256(card_path)
    fingerprint = short_hash(
        sha, root.resolve(), settings.fingerprint(), __version__, adapter.name, adapter.version, n=32
    )
    marker = corpus.marker("ingest", card.id)
    if (
        marker
        and marker["fingerprint"] == fingerprint
        and all(corpus.exists(f"index/{t}/part-{card.id}.parquet") for t in TABLES)
    ):
        return SourceResult(card.id, Stats.from_dict(marker["stats"]), skipped=True, seconds=0.0)
    corpus.clear_marker("ingest", card.id)

    start = time.monotonic()
    stats = Stats()
    with (
        corpus.table_writer("images", card.id) as images,
        corpus.table_writer("annotations", card.id) as annotations,
        corpus.table_writer("rejects", card.id) as rejects,
    ):
        outcomes = adapter.run(settings, stats)
        for out in tqdm(
            outcomes, desc=f"ingest {card.id}", unit="file", disable=None if progress else True, leave=False
        ):
            if isinstance(out, Rejected):
                rejects.append(out.row)
                continue
            for enc, row in zip(out.blobs, out.images, strict=True):
                rel = blob_path(enc.sha256, enc.ext)
                if not corpus.exists(rel):
                    corpus.write_bytes(rel, enc.data)
                images.append(row)
            for row in out.annotations:
                annotations.append(row)
    corpus.write_table("sources", card.id, [source_row(card, sha)])
    # keyed layouts: the way back from a sample to its file stays on this machine, outside the corpus
    phi.save_lookup(corpus.url, card.id, adapter.path_lookup())
    if stats.seen == 0:
        log.warning("source '%s': nothing found under %s; is --root the folder the dataset unpacked to?", card.id, root)
    seconds = time.monotonic() - start
    corpus.set_marker(
        "ingest",
        card.id,
        {
            "fingerprint": fingerprint,
            "stats": stats.as_dict(),
            "root_sha256": hashlib.sha256(str(root.resolve()).encode()).hexdigest(),
            "curator": __version__,
        },
    )
    log.info(
        "ingested %s: %d seen, %d images, %d rejected in %.1fs",
        card.id,
        stats.seen,
        stats.images,
        stats.rejected,
        seconds,
    )
    return SourceResult(card.id, stats, skipped=False, seconds=seconds)


def drop_source(corpus: Corpus, source_id: str) -> None:
    """Remove a source's parts and marker (a recipe no longer lists it)."""
    for table in TABLES:
        corpus.remove_table_part(table, source_id)
    corpus.clear_marker("ingest", source_id)


def ingested_sources(corpus: Corpus) -> list[str]:
    return sorted(
        p.rsplit("/", 1)[-1].removesuffix(".json") for p in corpus.ls("_markers/ingest") if p.endswith(".json")
    )
