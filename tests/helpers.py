"""Shared test helpers: the CLI runner, and private copies of the session's demo corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from curator.cli import main

STAGES = ("ingest", "index", "caption", "instruct", "shard")


class Killed(BaseException):
    """Stands in for SIGKILL in a test: not an Exception, so nothing in the library may swallow it."""


def run(*args):
    """``curator ARGS`` in-process; exceptions other than SystemExit propagate (a traceback fails the test)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def copy_corpus(src: Path, dest: Path, done: tuple[str, ...] = ("ingest", "index")) -> Path:
    """Copy a built corpus; only the stages in ``done`` stay complete.

    Without ``shard`` in ``done`` the shards and their manifest table are left out,
    so the copy is a corpus ready to shard with other settings.
    """
    shards_done = "shard" in done
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("report", *(() if shards_done else ("shards",))))
    if not shards_done:
        shutil.rmtree(dest / "index" / "shards", ignore_errors=True)
    for stage in STAGES:
        if stage not in done:
            shutil.rmtree(dest / "_markers" / stage, ignore_errors=True)
    return dest


def timeless(rel: str, data: bytes) -> bytes:
    """A file's bytes for comparing two builds: ``shards/build.json`` without its start and end times,
    and the seal without build.json's hash (which those times change)."""
    rel = str(rel).replace("\\", "/")
    if rel.endswith("shards/build.json"):
        from curator.provenance import without_times

        return json.dumps(without_times(json.loads(data)), sort_keys=True).encode()
    if rel == "_seal.json":
        seal = json.loads(data)
        seal["files"].pop("shards/build.json", None)
        return json.dumps(seal, sort_keys=True).encode()
    return data
