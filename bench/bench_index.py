"""Index step and audit queries at scale: a synthetic images table of N rows, merged, deduplicated, queried.

The rows are made directly as Parquet (no pixels): 5 sources, 4% of images
shared across sources (half of them with a disagreeing split), 2% near copies
(one dHash bit flipped), ~3 images per patient. Figures: index wall time and rows
per second, peak RSS growth, and the time of a per-licence query and a trace.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curator.audit.query import run_query
from curator.audit.trace import trace
from curator.config import DuplicateSettings, HoldoutSettings
from curator.schema import IMAGES, SOURCES
from curator.stages.index import run_index
from curator.storage import Corpus

ROWS = 400_000
SOURCES_N = 5


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make(corpus_dir: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    per = rows // SOURCES_N
    shared = rng.integers(0, 2**63, size=int(per * 0.04), dtype=np.int64)  # pictures several sources hold
    for s in range(SOURCES_N):
        sid = f"bench_src{s}"
        pixels = rng.integers(0, 2**63, size=per, dtype=np.int64)
        pixels[: len(shared)] = shared
        phash = rng.integers(0, 2**63, size=per, dtype=np.uint64)
        phash[: len(shared)] = shared.astype(np.uint64)
        near = slice(len(shared), len(shared) + per // 50)  # near copies of the shared pictures, one bit off
        phash[near] = shared[: per // 50].astype(np.uint64) ^ np.uint64(1 << (s + 3))
        patients = rng.integers(0, per // 3, size=per)
        split = np.where(rng.random(per) < 0.9, "train", np.where(rng.random(per) < 0.5, "val", "test"))
        ids = [f"{sid}-{i:016x}" for i in range(per)]
        table = pa.table(
            {
                "sample_id": ids,
                "source_id": [sid] * per,
                "original_uri": [f"img/{i}.png" for i in range(per)],
                "original_sha256": [f"{s:02x}{i:062x}" for i in range(per)],
                "original_format": ["png"] * per,
                "frame_index": pa.nulls(per, pa.int32()),
                "plane": pa.nulls(per, pa.string()),
                "image_sha256": [f"{int(p) & (2**63 - 1):064x}" for p in pixels],
                "phash": [f"{int(h):016x}" for h in phash],
                "image_format": ["png"] * per,
                "image_bytes": np.full(per, 50_000),
                "width": np.full(per, 256, dtype=np.int32),
                "height": np.full(per, 256, dtype=np.int32),
                "bit_depth": np.full(per, 8, dtype=np.int8),
                "channels": np.ones(per, dtype=np.int8),
                "modality": rng.choice(["CT", "MRI", "X-ray"], per),
                "anatomy": ["chest"] * per,
                "department": ["radiology"] * per,
                "patient_key": [f"p{s}-{p}" for p in patients],
                "study_key": pa.nulls(per, pa.string()),
                "split": split,
                "adapter": ["class_folders"] * per,
                "adapter_version": ["1"] * per,
                "transform": [{}] * per,
            },
            schema=IMAGES,
        )
        (corpus_dir / "index" / "images").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, corpus_dir / "index" / "images" / f"part-{sid}.parquet", row_group_size=4096)
        src = {f.name: None for f in SOURCES}
        src.update(source_id=sid, name=sid, license="CC0-1.0" if s % 2 else "CC-BY-4.0", access="open")
        (corpus_dir / "index" / "sources").mkdir(parents=True, exist_ok=True)
        part = corpus_dir / "index" / "sources" / f"part-{sid}.parquet"
        pq.write_table(pa.Table.from_pylist([src], schema=SOURCES), part)


def run(workdir: Path) -> list[tuple[str, float, str]]:
    out = workdir / "corpus"
    _make(out, ROWS)
    corpus = Corpus(str(out))
    before = _rss_mb()
    t = time.perf_counter()
    result = run_index(corpus, DuplicateSettings(near_threshold=2), HoldoutSettings(), inputs_fingerprint="bench")
    index_s = time.perf_counter() - t
    grew = _rss_mb() - before
    t = time.perf_counter()
    _, rows = run_query(
        corpus,
        "SELECT src.license, count(DISTINCT mb.sample_id) FROM members mb "
        "JOIN sources src USING (source_id) GROUP BY 1",
    )
    list(rows)
    query_s = time.perf_counter() - t
    t = time.perf_counter()
    trace(corpus, "bench_src1-0000000000000000")
    trace_s = time.perf_counter() - t
    return [
        ("index: image rows", result.images, "rows"),
        ("index: samples after exact merge", result.samples, "samples"),
        ("index: near-duplicate pairs", result.near_pairs, "pairs"),
        ("index: samples moved to a stricter split", result.split_moved, "samples"),
        ("index: wall time", index_s, "s"),
        ("index: throughput", result.images / index_s, "rows/s"),
        ("index: peak RSS growth", grew, "MiB"),
        ("query: samples per licence", query_s * 1000, "ms"),
        ("trace: one merged sample", trace_s * 1000, "ms"),
    ]
