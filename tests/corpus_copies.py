"""Private copies of the session's demo corpus, for tests that re-run or tamper with a stage."""

from __future__ import annotations

import shutil
from pathlib import Path

STAGES = ("ingest", "index", "caption", "shard")


def copy_corpus(src: Path, dest: Path, done: tuple[str, ...] = ("ingest", "index")) -> Path:
    """Copy a built corpus without its shards; only the stages in ``done`` stay marked complete."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("shards", "report"))
    for stage in STAGES:
        if stage not in done:
            shutil.rmtree(dest / "_markers" / stage, ignore_errors=True)
    return dest
