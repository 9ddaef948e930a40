"""Peak memory of index -> caption -> shard on synthetic corpora, all processes together.

A synthetic corpus of N samples is written directly as index tables and blob packs
(no pixels to decode: the point is what grows with the number of rows): 5 sources of
folder-per-class style (one label each of 24, 3 modalities, 4 anatomies, so
captions are per triplet and every sample gets a ``.cls``), ~3 images per patient,
a distinct tiny blob per image, one table part and one pack per unit of 256 images
as ingest writes them (``CURATOR_BENCH_UNIT_ROWS``). Then a child process runs the index step, the
offline caption stage and the shard stage (its workers are the executor's
processes), while this process samples the resident memory of the child's whole
process tree every 50 ms from ``/proc``. Shared pages count once per process, so
the figure errs high.

10k, 100k and 1M samples run by default (1M takes ~15 minutes on 2 busy cores), and
the growth ratio 10k -> 100k is printed beside the issue's goal (at most 1.5x).
``CURATOR_BENCH_SAMPLES=5500000`` (comma-separated sizes) replaces the list: the
GMAI-VL-sized run takes the better part of an hour and ~45 GB of disk (mostly the
shards: ~7 KB of tar per tiny sample), so it is not a default.

Read the ratio with the executor in mind: the shard stage starts its process pool
(one spawn worker per core, ~75 MiB each before its first shard) only when there are
256 MiB of tar to write, so 10k runs in one process and 100k with the pool. The
stages' own process is printed apart: what grows with the corpus shows there. So is
the largest single worker: a tar worker's memory must not grow with the shards it writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curator.schema import ANNOTATIONS, IMAGES, SOURCES

SIZES_ENV = "CURATOR_BENCH_SAMPLES"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
SOURCES_N = 5
LABELS = [f"finding {i:02d}" for i in range(24)]
MODALITIES = ["CT", "MRI", "X-ray"]
ANATOMIES = ["chest", "brain", "knee", "abdomen"]
BATCH = 100_000
# images per ingest unit: one part per table and one blob pack each (IngestSettings.unit_items)
UNIT_ROWS = int(os.environ.get("CURATOR_BENCH_UNIT_ROWS", "256"))
POLL_S = 0.05


def _table(columns: dict, schema: pa.Schema, m: int) -> pa.Table:
    """The columns given, every other column of ``schema`` null (the schema grows; the bench need not)."""
    full = {f.name: columns.get(f.name, pa.nulls(m, f.type)) for f in schema}
    return pa.table(full, schema=schema)


def make_corpus(root: Path, n: int, seed: int = 0, unit_rows: int = UNIT_ROWS) -> None:
    """Index tables (sources, images, annotations) and blob packs, laid out as ingest lays them out.

    One part per table and one blob pack (``curator.blobs.PackWriter``) per unit of
    ``unit_rows`` images, as ``curator ingest`` writes them with its default
    ``unit_items``: a 5.5M corpus is ~21k units, so the stages scan ~21k parts per
    table, as they would on a real build.
    """
    from curator.blobs import PackWriter
    from curator.storage import Corpus

    rng = np.random.default_rng(seed)
    corpus = Corpus(str(root))
    for table in ("images", "annotations", "sources"):
        (root / "index" / table).mkdir(parents=True, exist_ok=True)
    per = -(-n // SOURCES_N)
    done = 0
    for s in range(SOURCES_N):
        sid = f"synth{s}"
        src = {f.name: None for f in SOURCES}
        src.update(source_id=sid, name=sid, version="1", license="CC-BY-4.0", access="open")
        pq.write_table(pa.Table.from_pylist([src], schema=SOURCES), root / "index" / "sources" / f"part-{sid}.parquet")
        count = min(per, n - done)
        for start in range(0, count, BATCH):
            m = min(BATCH, count - start)
            ids = [f"{sid}-{i:012d}" for i in range(start, start + m)]
            blobs = [f"synthetic image {i}".encode() for i in ids]
            shas = [hashlib.sha256(b).hexdigest() for b in blobs]
            label = rng.integers(0, len(LABELS), m)
            modality = np.array(MODALITIES)[label % len(MODALITIES)]
            anatomy = np.array(ANATOMIES)[label % len(ANATOMIES)]
            split = np.where(rng.random(m) < 0.9, "train", np.where(rng.random(m) < 0.5, "val", "test"))
            images = _table(
                {
                    "sample_id": ids,
                    "source_id": [sid] * m,
                    "original_uri": [f"{LABELS[k]}/{i}.png" for k, i in zip(label, ids, strict=True)],
                    "original_sha256": shas,
                    "original_format": ["png"] * m,
                    "frame_index": pa.nulls(m, pa.int32()),
                    "plane": pa.nulls(m, pa.string()),
                    "image_sha256": shas,
                    "phash": [f"{int(h):016x}" for h in rng.integers(0, 2**63, m)],
                    "image_format": ["png"] * m,
                    "image_bytes": np.array([len(b) for b in blobs]),
                    "width": np.full(m, 64, dtype=np.int32),
                    "height": np.full(m, 64, dtype=np.int32),
                    "bit_depth": np.full(m, 8, dtype=np.int8),
                    "channels": np.ones(m, dtype=np.int8),
                    "modality": modality,
                    "anatomy": anatomy,
                    "department": ["radiology"] * m,
                    "patient_key": [f"p{s}-{(start + j) // 3}" for j in range(m)],
                    "study_key": pa.nulls(m, pa.string()),
                    "split": split,
                    "adapter": ["class_folders"] * m,
                    "adapter_version": ["1"] * m,
                    "transform": [{}] * m,
                },
                IMAGES,
                m,
            )
            notes = _table(
                {
                    "annotation_id": [f"{i}-0" for i in ids],
                    "sample_id": ids,
                    "source_id": [sid] * m,
                    "kind": ["label"] * m,
                    "text": np.array(LABELS)[label],
                    "value": ["positive"] * m,
                    "native": np.array(LABELS)[label],
                    "language": ["en"] * m,
                    "payload": pa.nulls(m, pa.string()),
                    "boxes": pa.nulls(m, ANNOTATIONS.field("boxes").type),
                },
                ANNOTATIONS,
                m,
            )
            for lo in range(0, m, unit_rows):
                unit = f"{sid}-{(start + lo) // unit_rows:06d}"
                hi = min(m, lo + unit_rows)
                with PackWriter(corpus, unit) as pack:
                    for k in range(lo, hi):
                        pack.add(shas[k], "png", blobs[k])
                pq.write_table(images.slice(lo, hi - lo), root / "index" / "images" / f"part-{unit}.parquet")
                pq.write_table(notes.slice(lo, hi - lo), root / "index" / "annotations" / f"part-{unit}.parquet")
        done += count


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _tree_rss(root_pid: int) -> dict[int, int]:
    """Resident bytes of a process and of each of its descendants (pid -> bytes), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return {pid: _rss(pid) for pid in tree}


def measure(corpus_dir: Path) -> dict:
    """Run index -> caption -> shard in a child; return its stage times and the tree's peak RSS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CURATOR_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_memory", str(corpus_dir)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    peak = own = worker = 0
    while proc.poll() is None:
        workers = _tree_rss(proc.pid)
        stages = workers.pop(proc.pid, 0)
        peak = max(peak, stages + sum(workers.values()))
        own = max(own, stages)
        worker = max([worker, *workers.values()])  # the largest single worker (the shard stage's tar workers)
        time.sleep(POLL_S)
    out = proc.stdout.read()
    if proc.returncode:
        raise RuntimeError(f"memory bench child failed with exit code {proc.returncode}")
    return {**json.loads(out), "peak_mib": peak / 1024**2, "main_mib": own / 1024**2, "worker_mib": worker / 1024**2}


def _child(corpus_dir: str) -> None:
    from curator.config import CaptionSettings, DuplicateSettings, HoldoutSettings, ShardSettings
    from curator.stages.caption import run_caption
    from curator.stages.index import run_index
    from curator.stages.shard import run_shard
    from curator.storage import Corpus

    corpus = Corpus(corpus_dir)
    times = {}
    t = time.perf_counter()
    run_index(corpus, DuplicateSettings(), HoldoutSettings())
    times["index_s"] = time.perf_counter() - t
    t = time.perf_counter()
    run_caption(corpus, CaptionSettings(), progress=False)
    times["caption_s"] = time.perf_counter() - t
    t = time.perf_counter()
    result = run_shard(corpus, ShardSettings(), "mem", progress=False)
    times["shard_s"] = time.perf_counter() - t
    times["samples"] = result.samples
    times["shards"] = len(result.shards)
    print(json.dumps(times))


def sizes() -> list[int]:
    raw = os.environ.get(SIZES_ENV)
    return [int(x) for x in raw.split(",")] if raw else list(DEFAULT_SIZES)


def run(workdir: Path):
    """Figures per size as each finishes (a generator: the 1M and 5.5M runs take minutes)."""
    import shutil

    peaks, mains = {}, {}
    for n in sizes():
        corpus_dir = workdir / f"synthetic-{n}"
        t = time.perf_counter()
        make_corpus(corpus_dir, n)
        make_s = time.perf_counter() - t
        got = measure(corpus_dir)
        peaks[n], mains[n] = got["peak_mib"], got["main_mib"]
        label = f"{n:,} samples"
        yield f"{label}: peak RSS, all processes", got["peak_mib"], "MiB"
        yield f"{label}:   the stages' own process", got["main_mib"], "MiB"
        yield f"{label}:   the largest worker process", got["worker_mib"], "MiB"
        yield f"{label}: index / caption / shard", got["index_s"] + got["caption_s"] + got["shard_s"], "s"
        yield f"{label}:   index step", got["index_s"], "s"
        yield f"{label}:   caption stage (offline)", got["caption_s"], "s"
        yield f"{label}:   shard stage ({got['shards']} shards)", got["shard_s"], "s"
        yield f"{label}:   writing the synthetic corpus", make_s, "s"
        shutil.rmtree(corpus_dir)
    if 10_000 in peaks and 100_000 in peaks:
        yield "peak growth 10k -> 100k samples (goal <= 1.5)", peaks[100_000] / peaks[10_000], "x"
        yield "  the stages' own process 10k -> 100k", mains[100_000] / mains[10_000], "x"
    if 5_500_000 in peaks:
        yield "5.5M samples: peak, all processes (goal < 4096)", peaks[5_500_000], "MiB"


if __name__ == "__main__":
    _child(sys.argv[1])
