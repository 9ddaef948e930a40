"""Real kills: a child `curator build` SIGKILLed at several points, re-run, equals an uninterrupted build byte for byte.

The child is killed by its own pid the moment a trigger file appears (a first blob, a
table part being written, a shard being written), so the kill lands where a power
cut or the OOM killer would. The re-run must take over the dead run's lock, remove its
``.tmp-*`` leftovers and end with the same files as the reference build.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import timeless

# not compared: markers and the seal's stamp cache hold timings and mtimes; the report is `curator report`'s
SKIP = ("_markers", "report")


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): timeless(p.relative_to(root).as_posix(), p.read_bytes())
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] not in SKIP
    }


def _build(recipe: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "curator", "build", "--recipe", str(recipe), "--out", str(out), "-q"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, out: Path, trigger) -> bool:
    """SIGKILL the child as soon as ``trigger(out)`` holds; False if it finished first."""
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if trigger(out):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.wait()
    return False


TRIGGERS = {
    "after the first blob": lambda out: (out / "blobs").is_dir() and any((out / "blobs").iterdir()),
    "mid-ingest of a later source": lambda out: (
        any((out / "index" / "images").glob("part-demo_rocov2*")) if (out / "index" / "images").is_dir() else False
    ),
    "mid-shard": lambda out: (out / "shards").is_dir() and any((out / "shards").rglob("*.tar")),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(TRIGGERS))
def test_a_build_killed_at_any_point_resumes_to_identical_bytes(demo_build, demo_recipe_path, tmp_path, point):
    reference, _ = demo_build
    out = tmp_path / "killed"
    assert _kill_when(_build(demo_recipe_path, out), out, TRIGGERS[point]), "the build finished before the kill"
    rerun = _build(demo_recipe_path, out)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err.decode()[-2000:]
    got, want = _files(out), _files(reference)
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
    assert not list(out.rglob(".tmp-*")) and not (out / "_lock.json").exists()
