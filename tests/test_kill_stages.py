"""Real kills of each single stage: `curator ingest|index|caption|instruct|shard` as a child process that
SIGKILLs itself at a named point (curator.testhooks), re-run, equals an uninterrupted run byte for byte.

The reference runs the stages one command at a time and keeps a copy of the corpus after each; a
killed stage starts from the copy before it. Compared: every file (tables, blobs, shards, index
files, markers, the seal) but the seal's mtime cache; and nothing may be left over: no ``.tmp-*``,
no lock, no DuckDB spill folder in the corpus's scratch space, nothing in the system temp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import timeless

from curator.testhooks import KILL_ENV

SOURCES = ("demo_radimagenet", "demo_dicom")
STAGES = ("ingest", "index", "caption", "instruct", "shard")
# (stage, kill point): after the stage's first write, and in the middle of writing a file
POINTS = [
    ("ingest", "commit:blobs/*:1"),
    ("ingest", "write:index/images/*:1"),
    ("index", "commit:index/*:1"),
    ("index", "write:index/samples/*:1"),
    ("caption", "commit:*:1"),
    ("caption", "write:index/captions/*:1"),
    ("instruct", "commit:*:1"),
    ("instruct", "write:index/instructions/*:1"),
    ("shard", "commit:shards/*.tar:2"),
    ("shard", "write:shards/*.tar:1"),
]


def _recipe(demo_data: Path, folder: Path) -> Path:
    roots = {"demo_radimagenet": demo_data / "radimagenet", "demo_dicom": demo_data / "dicom"}
    text = 'name = "kills"\nseed = 7\n'
    for sid in SOURCES:
        text += f'[[sources]]\nid = "{sid}"\nroot = "{roots[sid]}"\n'
    text += '[caption]\nlanguages = ["en", "zh"]\n[instruct]\nlanguages = ["en"]\n[shard]\nmax_samples = 6\n'
    path = folder / "kills.toml"
    path.write_text(text)
    return path


def _commands(stage: str, recipe: Path, demo_data: Path, out: Path) -> list[list[str]]:
    base = [sys.executable, "-m", "curator"]
    if stage == "ingest":
        roots = {"demo_radimagenet": demo_data / "radimagenet", "demo_dicom": demo_data / "dicom"}
        return [
            [*base, "ingest", "--source", s, "--root", str(roots[s]), "--out", str(out), "--seed", "7"]
            + ["--executor", "serial", "-q"]
            for s in SOURCES
        ]
    extra = ["--executor", "serial"] if stage == "shard" else []
    return [[*base, stage, "--out", str(out), *([] if stage == "index" else ["--recipe", str(recipe)]), *extra]]


class Child:
    """Runs commands with a private system temp dir and user cache, so a test sees what they leave there."""

    def __init__(self, root: Path):
        self.tmp, self.cache = root / "system-tmp", root / "user-cache"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)

    def run(self, cmd: list[str], kill_at: str | None = None, **extra: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "TMPDIR": str(self.tmp), "XDG_CACHE_HOME": str(self.cache), **extra}
        env.pop(KILL_ENV, None)
        if kill_at:
            env[KILL_ENV] = kill_at
        # output to files, not pipes: a process the command leaves running must not keep this call waiting
        with open(self.tmp.parent / "child.out", "w+") as out, open(self.tmp.parent / "child.err", "w+") as err:
            proc = subprocess.run(cmd, env=env, stdout=out, stderr=err, text=True, timeout=600)
            out.seek(0), err.seek(0)
            return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())

    def left_behind(self) -> list[str]:
        """Anything in the temp dir; in the cache, any file or corpus scratch folder (curator/scratch/<corpus>)."""
        cached = [p for p in self.cache.rglob("*") if p.is_file() or p.parent.name == "scratch"]
        return sorted(str(p) for p in [*self.tmp.rglob("*"), *cached])


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def staged(demo_data, tmp_path_factory):
    """The uninterrupted run: {stage: the corpus after it}, and "": the corpus before ingest's last source."""
    root = tmp_path_factory.mktemp("staged")
    recipe = _recipe(demo_data, root)
    child = Child(root)
    out = root / "corpus"
    snapshots = {}
    for stage in STAGES:
        commands = _commands(stage, recipe, demo_data, out)
        for n, cmd in enumerate(commands):
            if stage == "ingest" and n == len(commands) - 1:
                snapshots[""] = shutil.copytree(out, root / "before-last-ingest")
            _ok(child.run(cmd))
        snapshots[stage] = shutil.copytree(out, root / f"after-{stage}")
    assert child.left_behind() == []
    return recipe, snapshots


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): timeless(p.relative_to(root).as_posix(), p.read_bytes())
        for p in root.rglob("*")
        if p.is_file() and p.name != "seal-stamps.json"
    }


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "point"), POINTS, ids=[f"{s}-{p}" for s, p in POINTS])
def test_a_stage_killed_at_a_point_resumes_to_identical_bytes(staged, demo_data, tmp_path, stage, point):
    recipe, snapshots = staged
    before = snapshots[STAGES[STAGES.index(stage) - 1]] if stage != "ingest" else snapshots[""]
    out = shutil.copytree(before, tmp_path / "corpus")
    child = Child(tmp_path)
    cmd = _commands(stage, recipe, demo_data, out)[-1]

    killed = child.run(cmd, kill_at=point)
    assert killed.returncode == -signal.SIGKILL, f"never reached {point}: {killed.stderr[-1500:]}"
    assert (out / "_lock.json").is_file()  # the dead run's lock: the re-run must take it over
    spill = sorted(p.name for p in (out / ".scratch").iterdir()) if (out / ".scratch").is_dir() else []
    if stage in ("index", "shard"):  # both query the tables through DuckDB before their first write
        assert [n.split("-")[0] for n in spill] == ["duckdb"], spill
    if point.startswith("write:"):
        assert list(out.rglob(".tmp-*")), "killed mid-write, yet no temporary file"

    rerun = child.run(cmd)
    _ok(rerun)
    assert "taking over a stale lock" in rerun.stderr
    got, want = _files(out), _files(snapshots[stage])
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
    assert not list(out.rglob(".tmp-*")) and not (out / "_lock.json").exists()
    assert not (out / ".scratch").exists(), "the killed run's DuckDB spill folder is still there"
    assert child.left_behind() == [], "a run left files in the system temp dir or the user cache"


def _processes_with(token: str) -> list[int]:
    """Pids of live processes whose environment holds ``token``: one test's children, whoever their parent now is."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and token.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile, or not ours
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_a_killed_build_leaves_no_pool_worker_running(demo_recipe_path, tmp_path):
    """The build's process pool outlives ingest (the shard stage uses it again): SIGKILL the build in
    between, and its idle workers must exit by themselves instead of waiting on their queue forever."""
    token = uuid.uuid4().hex
    child = Child(tmp_path)
    cmd = [sys.executable, "-m", "curator", "build", "--recipe", str(demo_recipe_path), "--out", str(tmp_path / "c")]
    killed = child.run([*cmd, "-q", "--workers", "2"], kill_at="commit:index/samples/*:1", CURATOR_TEST_TOKEN=token)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-1500:]
    deadline = time.monotonic() + 30
    while _processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _processes_with(token)
    for pid in left:  # ours: started by this test's child, found by its token
        os.kill(pid, signal.SIGKILL)
    assert left == [], "pool workers of the killed build are still running"
