"""What readers open beside the shards: the manifest table, manifest.json, wids indexes, classes, left-out list.

Per shard folder: ``manifest.json``, ``classes.json`` and ``classnames.txt`` (one
class per line, as CLIP_benchmark reads class names), one ``<split>.wids.json``;
per split folder a ``sizes.json`` (shard file name -> samples, which open_clip
reads instead of ``--train-num-samples``); per shard a ``_stats.json`` (written by
its unit, see ``run.py``).

Written last, after the previous run's are removed, so an index never names a
missing shard. URLs in a folder's files are relative to that folder (``shards/``
for the main set, ``shards/mixtures/<name>/`` for a named mixture).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curator.layout import (
    CLASSES_KIND,
    CLASSNAMES_FILE,
    LEFT_OUT,
    LEFT_OUT_KIND,
    SHARDS_DIR,
    SIZES_FILE,
    mixture_root,
    stats_path,
)
from curator.stages.shard.plan import PlannedShard, Samples, ordered_splits
from curator.storage import Corpus
from curator.tables import write_table_part

log = logging.getLogger(__name__)
INDEX_FILES = ("manifest.json", "classes.json", "left_out.json", CLASSNAMES_FILE, SIZES_FILE)


@dataclass
class ShardInfo:
    url: str
    split: str
    nsamples: int
    bytes: int
    sha256: str
    md5: str
    mixture: str | None = None
    kept: bool = False  # verified from an earlier run rather than written now


def unit_id(rel: str) -> str:
    return rel.replace("/", "__")


def table_part(mixture: str | None) -> str:
    return "manifest" if mixture is None else f"mixture-{mixture}"


def write_manifest_table(
    corpus: Corpus, mixture: str | None, plan: list[PlannedShard], infos: dict[str, ShardInfo], extras: SampleExtras
) -> None:
    """The ``shards`` table part of one mixture: a row per key, built a shard at a time."""

    def batches():
        for shard in plan:
            if shard.mixture != mixture:
                continue
            keys = shard.keys(extras.samples)
            exts = extras.ext.take(pa.array(shard.rows)).to_pylist()
            has_cls = extras.has_cls[shard.rows]
            members = [
                [f"{key}.{ext}", f"{key}.json", f"{key}.txt", *([f"{key}.cls"] if c else [])]
                for (key, _), ext, c in zip(keys, exts, has_cls, strict=True)
            ]
            n = len(keys)
            yield pa.RecordBatch.from_pydict(
                {
                    "sample_id": [sid for _, sid in keys],
                    "split": [shard.split] * n,
                    "shard_url": [shard.rel] * n,
                    "members": members,
                    "bytes": extras.samples.size_of(mixture)[shard.rows],
                    "shard_sha256": [infos[shard.rel].sha256] * n,
                    "key": [key for key, _ in keys],
                    "mixture": pa.array([mixture] * n, pa.string()),
                }
            )

    write_table_part(corpus, "shards", table_part(mixture), batches())


@dataclass
class SampleExtras:
    """Per-sample columns the manifest needs beside the plan's: the image extension, whether a .cls exists."""

    samples: Samples
    ext: pa.Array
    has_cls: np.ndarray


def write_indexes(corpus: Corpus, shards: list[ShardInfo], root: str, name: str, classes: list[str]) -> None:
    """manifest.json, classes.json and one wids index per split, with URLs relative to ``root``."""
    prefix = root + "/"
    corpus.write_json(
        f"{root}/classes.json",
        {
            "kind": CLASSES_KIND,
            "rule": "<key>.cls is the position in 'classes' of the sample's one label; only samples of "
            "single-label sources (every sample the source labels has exactly one positive label from it) have "
            "a .cls; a merged sample takes it from its single-label sources when they agree",
            "classes": classes,
        },
    )
    corpus.write_bytes(f"{root}/{CLASSNAMES_FILE}", "".join(f"{c}\n" for c in classes).encode())
    corpus.write_json(
        f"{root}/manifest.json",
        {
            "name": name,
            "mixture": shards[0].mixture if shards else None,
            "shards": [
                {
                    "url": s.url.removeprefix(prefix),
                    "split": s.split,
                    "nsamples": s.nsamples,
                    "bytes": s.bytes,
                    "sha256": s.sha256,
                }
                for s in shards
            ],
        },
    )
    for split in ordered_splits({s.split for s in shards}):
        corpus.write_json(
            f"{root}/{split}/{SIZES_FILE}",
            {s.url.rsplit("/", 1)[-1]: s.nsamples for s in shards if s.split == split},
        )
        label = name if not shards[0].mixture else f"{name}-{shards[0].mixture}"
        corpus.write_json(
            f"{root}/{split}.wids.json",
            {
                "__kind__": "wids-shard-index-v1",
                "wids_version": 1,
                "name": f"{label}-{split}",
                "shardlist": [
                    {"url": s.url.removeprefix(prefix), "nsamples": s.nsamples, "filesize": s.bytes, "md5sum": s.md5}
                    for s in shards
                    if s.split == split
                ],
            },
        )


def write_left_out(corpus: Corpus, samples: Samples, plan: list[PlannedShard]) -> None:
    """Kept samples of the index that the main set leaves out on purpose (a source weight below 1)."""
    in_main = np.zeros(len(samples), dtype=bool)
    for shard in plan:
        if shard.mixture is None:
            in_main[shard.rows] = True
    rows = np.flatnonzero(~in_main)
    ids = samples.sample_id.take(pa.array(rows)).to_pylist()
    corpus.write_json(
        LEFT_OUT,
        {
            "kind": LEFT_OUT_KIND,
            "rule": "kept samples of the index that the main set leaves out on purpose: 'weight' means "
            "their source's weight (below 1, or 0) drew no copy of them",
            "samples": [
                {"sample_id": sid, "split": samples.splits[samples.split[r]], "reason": "weight"}
                for sid, r in zip(ids, rows, strict=True)
            ],
        },
    )


def missing_outputs(corpus: Corpus, mixtures, plan: list[PlannedShard]) -> list[str]:
    """Every output of a finished run that is not there: indexes, manifest table parts, shards."""
    need = [LEFT_OUT]
    for mixture in mixtures:
        root = mixture_root(mixture)
        need += [f"{root}/manifest.json", f"{root}/classes.json", f"{root}/{CLASSNAMES_FILE}"]
        for split in sorted({p.split for p in plan if p.mixture == mixture}):
            need += [f"{root}/{split}.wids.json", f"{root}/{split}/{SIZES_FILE}"]
        need.append(f"{corpus.table_dir('shards')}/part-{table_part(mixture)}.parquet")
    need += [rel for p in plan for rel in (p.rel, stats_path(p.rel))]
    missing = [rel for rel in need if not corpus.exists(rel)]
    if missing:
        log.warning("shard outputs missing (%s): redoing the shard stage", ", ".join(missing[:5]))
    return missing


def remove_indexes(corpus: Corpus) -> None:
    for path in corpus.find(SHARDS_DIR):
        base = path.rsplit("/", 1)[-1]
        if base.endswith(".wids.json") or base in INDEX_FILES:
            corpus.fs.rm(path)


def remove_stale(corpus: Corpus, planned: set[str], mixtures: set[str]) -> None:
    """Remove what an earlier plan (other settings, a killed run) left and this build does not own."""
    for path in corpus.find(SHARDS_DIR):
        rel = corpus.rel(path)
        base = rel.rsplit("/", 1)[-1]
        if (rel.endswith(".tar") and rel not in planned) or base.startswith(".tmp-"):
            corpus.fs.rm(path)
            corpus.clear_marker("shard", unit_id(rel))
        elif rel.endswith("_stats.json") and rel.removesuffix("_stats.json") + ".tar" not in planned:
            corpus.fs.rm(path)
    for path in corpus.table_parts("shards"):
        part = path.rsplit("/", 1)[-1].removeprefix("part-").removesuffix(".parquet")
        if part.startswith("mixture-") and part.removeprefix("mixture-") not in mixtures:
            corpus.fs.rm(path)
