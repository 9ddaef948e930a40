"""Shared test helpers: the CLI runner, and private copies of the session's demo corpus."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
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


def corpus_copies(src: Path, under: Path, done: tuple[str, ...] = ("ingest", "index")):
    """A function returning a fresh ``Corpus`` copy of ``src`` (see :func:`copy_corpus`) at each call."""
    from curator.storage import Corpus

    made = iter(range(1000))
    return lambda: Corpus(str(copy_corpus(src, under / f"corpus{next(made)}", done=done)))


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


@contextmanager
def loopback_s3(bucket: str, key_id: str, secret: str, **env: str) -> Iterator:
    """moto's S3 server on 127.0.0.1 with the AWS_* environment s3fs (and child processes) read.

    Yields ``(endpoint, fs)``: the server's URL and an s3fs filesystem with ``bucket`` made.
    ``env`` adds variables (e.g. ``FSSPEC_S3_DEFAULT_BLOCK_SIZE``). The server stops on exit.
    """
    import fsspec
    import pytest
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE", "AWS_CONFIG_FILE"):
                mp.delenv(var, raising=False)
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            mp.setenv("AWS_ACCESS_KEY_ID", key_id)
            mp.setenv("AWS_SECRET_ACCESS_KEY", secret)
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            mp.setenv("NO_PROXY", "127.0.0.1")
            for name, value in env.items():
                mp.setenv(name, value)
            fsspec.filesystem("s3").clear_instance_cache()
            fs = fsspec.filesystem("s3", skip_instance_cache=True)
            fs.mkdir(bucket)
            yield endpoint, fs
    finally:
        fsspec.filesystem("s3").clear_instance_cache()
        server.stop()
