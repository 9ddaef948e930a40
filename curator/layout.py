"""Where a corpus keeps its shards, and how a WebDataset key names its sample.

The shard stage writes these paths and keys; the audit reads them. Both import
them from here, so the audit never imports a stage.
"""

from __future__ import annotations

import re

SHARDS_DIR = "shards"
LEFT_OUT = f"{SHARDS_DIR}/left_out.json"
LEFT_OUT_KIND = "curator-left-out-v1"
CLASSES_KIND = "curator-classes-v1"
REPEAT_KEY = re.compile(r"^(?P<sample_id>.+)-r(?P<repeat>[0-9]+)$")


STATS_KIND = "curator-shard-stats-v1"
SIZES_FILE = "sizes.json"  # per split folder: shard file name -> samples, as open_clip reads it
CLASSNAMES_FILE = "classnames.txt"  # beside classes.json: one class per line, CLIP_benchmark's convention


def stats_path(shard: str) -> str:
    """A shard's ``_stats.json`` beside it (img2dataset's convention): ``x-000001.tar`` -> ``x-000001_stats.json``."""
    return shard.removesuffix(".tar") + "_stats.json"


def mixture_root(mixture: str | None) -> str:
    """The folder of a mixture's shards: ``shards/`` for the main set, ``shards/mixtures/<name>/`` otherwise."""
    return SHARDS_DIR if mixture is None else f"{SHARDS_DIR}/mixtures/{mixture}"


def repeat_key(sample_id: str, repeat: int) -> str:
    """The WebDataset key of a sample's ``repeat``-th copy: the id itself, then ``<id>-r1``, ``<id>-r2``..."""
    return sample_id if repeat == 0 else f"{sample_id}-r{repeat}"


def sample_id_of(key: str) -> str:
    """Back from a key to its sample_id (the manifest's ``key`` column is the authoritative map)."""
    m = REPEAT_KEY.match(key)
    return m["sample_id"] if m else key
