"""End-to-end demo build: wall time per stage and images per second.

Scales the demo by repeating the class-folder source so ingest throughput is measured
on more than a handful of files.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np

from curator.config import DuplicateSettings, HoldoutSettings, IngestSettings, ShardSettings, load_recipe
from curator.demo import _phantom, _save_png, make_demo_sources, write_demo_recipe
from curator.registry import find_card
from curator.stages.build import run_build
from curator.stages.index import run_index
from curator.stages.ingest import ingest_source
from curator.stages.shard import run_shard
from curator.storage import Corpus

REPO = Path(__file__).resolve().parent.parent
IMAGES = 1200


def run(workdir: Path) -> list[tuple[str, float, str]]:
    data = workdir / "data"
    make_demo_sources(data)
    recipe_path = write_demo_recipe(data, workdir)

    t = time.perf_counter()
    run_build(load_recipe(recipe_path), str(workdir / "demo"), progress=False)
    demo_s = time.perf_counter() - t
    t = time.perf_counter()
    run_build(load_recipe(recipe_path), str(workdir / "demo"), progress=False)
    rerun_s = time.perf_counter() - t

    # a larger folder-per-class source: distinct synthetic PNGs (copies would merge into one sample each)
    big = workdir / "big"
    classes = sorted({p.parent.relative_to(data / "radimagenet") for p in (data / "radimagenet").rglob("*.png")})
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        _save_png(big / classes[i % len(classes)] / f"img{i:05d}.png", _phantom(rng, (256, 256), blobs=1 + i % 3))
    card, path = find_card("demo_radimagenet", REPO / "source_registry")
    corpus = Corpus(str(workdir / "big-corpus"))
    t = time.perf_counter()
    result = ingest_source(corpus, card, path, big, IngestSettings(), progress=False)
    ingest_s = time.perf_counter() - t
    t = time.perf_counter()
    run_index(corpus, DuplicateSettings(), HoldoutSettings())
    index_s = time.perf_counter() - t
    t = time.perf_counter()
    shards = run_shard(corpus, ShardSettings(), "big", progress=False)
    shard_s = time.perf_counter() - t
    shard_mb = sum(s.bytes for s in shards.shards) / 1e6
    return [
        ("demo build, all stages (s)", demo_s, "s"),
        ("demo re-run, nothing to do (s)", rerun_s, "s"),
        (f"ingest PNG class folders ({result.stats.seen} files)", result.stats.images / ingest_s, "images/s"),
        (f"index step ({result.stats.images} images)", result.stats.images / index_s, "images/s"),
        ("shard writing", shard_mb / shard_s, "MB/s"),
        ("peak resident memory", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB"),
    ]
