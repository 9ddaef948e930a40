"""End-to-end demo build: wall time per stage and images per second.

Scales the demo by repeating the class-folder source so ingest throughput is measured
on more than a handful of files.
"""

from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path

from curator.config import IngestSettings, ShardSettings, load_recipe
from curator.demo import make_demo_sources, write_demo_recipe
from curator.registry import find_card
from curator.stages.build import run_build
from curator.stages.ingest import ingest_source
from curator.stages.shard import run_shard
from curator.storage import Corpus

REPO = Path(__file__).resolve().parent.parent
COPIES = 60


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

    # a larger folder-per-class source: the demo's PNGs copied COPIES times
    big = workdir / "big"
    src = data / "radimagenet" / "radiology_ai"
    for i in range(COPIES):
        for p in src.rglob("*.png"):
            dest = big / "radiology_ai" / p.relative_to(src).parent / f"c{i:03d}_{p.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest)
    card, path = find_card("demo_radimagenet", REPO / "source_registry")
    corpus = Corpus(str(workdir / "big-corpus"))
    t = time.perf_counter()
    result = ingest_source(corpus, card, path, big, IngestSettings(), progress=False)
    ingest_s = time.perf_counter() - t
    t = time.perf_counter()
    shards = run_shard(corpus, ShardSettings(), "big", progress=False)
    shard_s = time.perf_counter() - t
    shard_mb = sum(s.bytes for s in shards.shards) / 1e6
    return [
        ("demo build, all stages (s)", demo_s, "s"),
        ("demo re-run, nothing to do (s)", rerun_s, "s"),
        (f"ingest PNG class folders ({result.stats.seen} files)", result.stats.images / ingest_s, "images/s"),
        ("shard writing", shard_mb / shard_s, "MB/s"),
        ("peak resident memory", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB"),
    ]
