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

from curator.layout import LEFT_OUT, REPEAT_KEY, SHARDS_DIR, mixture_root, repeat_key, sample_id_of
from curator.stages.shard.indexes import ShardInfo
from curator.stages.shard.plan import PlannedShard, Samples, expand, plan_shards, shard_counts
from curator.stages.shard.records import CONVERSATIONS, RecordExtra
from curator.stages.shard.run import ShardResult, run_shard
from curator.stages.shard.tar import TAR_MTIME, tar_header, tar_header_slow, write_tar

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
