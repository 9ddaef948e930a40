"""Shard: image-centric WebDataset tar shards, one sample per image, bytes copied not re-encoded.

Each sample holds the encoded image (``.png``/``.jpg``), a ``.json`` with its
provenance, every annotation and every caption of its triplet, a ``.txt`` with
one seeded caption, and a ``.cls`` (decimal class index, see ``classes.json``)
when the sample carries exactly one label. Tar members are USTAR with a fixed
mtime, owner, mode and order, so the same index gives byte-identical shards on
every executor.

One job per module: ``records`` (per-sample members, streamed from DuckDB),
``plan`` (weights, shuffle and shard sizes as compact arrays), ``tar`` (the
writer), ``indexes`` (manifest table, manifest.json, wids indexes, classes,
left-out list) and ``run`` (the stage: units on an executor, resume, indexes last).
"""

import importlib

# Names are loaded on first use (PEP 562): a tar worker importing ``curator.stages.shard.work``
# must not pay for DuckDB, the records SQL and the planner through this package's __init__.
_WHERE = {
    "LEFT_OUT": "curator.layout",
    "REPEAT_KEY": "curator.layout",
    "SHARDS_DIR": "curator.layout",
    "mixture_root": "curator.layout",
    "repeat_key": "curator.layout",
    "sample_id_of": "curator.layout",
    "ShardInfo": "curator.stages.shard.indexes",
    "PlannedShard": "curator.stages.shard.plan",
    "Samples": "curator.stages.shard.plan",
    "expand": "curator.stages.shard.plan",
    "plan_shards": "curator.stages.shard.plan",
    "shard_counts": "curator.stages.shard.plan",
    "CONVERSATIONS": "curator.stages.shard.records",
    "RecordExtra": "curator.stages.shard.records",
    "ShardResult": "curator.stages.shard.run",
    "run_shard": "curator.stages.shard.run",
    "TAR_MTIME": "curator.stages.shard.tar",
    "tar_header": "curator.stages.shard.tar",
    "tar_header_slow": "curator.stages.shard.tar",
    "write_tar": "curator.stages.shard.tar",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


__all__ = [
    "LEFT_OUT",
    "REPEAT_KEY",
    "SHARDS_DIR",
    "TAR_MTIME",
    "PlannedShard",
    "CONVERSATIONS",
    "RecordExtra",
    "Samples",
    "ShardInfo",
    "ShardResult",
    "expand",
    "mixture_root",
    "plan_shards",
    "repeat_key",
    "run_shard",
    "sample_id_of",
    "shard_counts",
    "tar_header",
    "tar_header_slow",
    "write_tar",
]
