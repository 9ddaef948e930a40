"""One writer per corpus: a lock file (local) or a lease object (S3, conditional put), stale locks taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import STAGES, copy_corpus, run

from curator.config import load_recipe
from curator.errors import CorpusError
from curator.provenance import RECIPE_FILE, save_recipe
from curator.storage import LOCK, Corpus, LockedError, writer_lock

HOLD = """
import sys, time
from curator.storage import Corpus, writer_lock
with writer_lock(Corpus(sys.argv[1]), "build other"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(out, seconds: float = 60.0) -> subprocess.Popen:
    """A real second process holding the corpus (stops by itself after ``seconds``)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _one_line(result, start: str) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith(start), result.output
    return lines[0]


def test_a_second_writer_fails_at_once_naming_the_holder(demo_recipe_path, tmp_path):
    out = tmp_path / "corpus"
    holder = _holder(out)
    try:
        start = time.monotonic()
        line = _one_line(run("build", "--recipe", demo_recipe_path, "--out", out, "-q"), "error: ")
        assert time.monotonic() - start < 10
        assert f"pid {holder.pid}" in line and "'build other'" in line and " since 20" in line and "UTC" in line
        _one_line(run("index", "--out", out), "error: ")  # a stage, too
    finally:
        holder.kill()
        holder.wait()


def test_every_stage_command_waits_for_the_holder(demo_build, tmp_path):
    out = copy_corpus(demo_build[0], tmp_path / "corpus", done=STAGES)
    holder = _holder(out)
    try:
        for stage in ("index", "caption", "instruct", "shard"):
            result = run(stage, "--out", out)
            # caption prints its (read-only) plan first; the refusal is one line, and the last
            line = result.output.strip().splitlines()[-1]
            assert result.exit_code == 1 and line.startswith("error: "), (stage, result.output)
            assert f"pid {holder.pid}" in line and "'build other'" in line, (stage, line)
            assert sum(x.startswith("error") for x in result.output.splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holders_lock_is_taken_over(demo_recipe_path, tmp_path):
    out = tmp_path / "corpus"
    holder = _holder(out)
    os.kill(holder.pid, signal.SIGKILL)  # a killed run leaves its lock file behind
    holder.wait()
    assert (out / LOCK).is_file()
    (out / "index" / "images").mkdir(parents=True)
    leftover = out / "index" / "images" / ".tmp-0123456789ab-part-x.parquet"
    leftover.write_bytes(b"half a part")
    result = run("build", "--recipe", demo_recipe_path, "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert not (out / LOCK).exists() and not leftover.exists()
    assert not list(out.rglob(".tmp-*"))


def test_a_lock_silent_past_its_lease_on_another_host_is_stale(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    record = {"command": "build x", "host": "elsewhere", "pid": 1, "since": 0, "heartbeat": time.time(), "token": "t"}
    (out / LOCK).write_text(json.dumps(record))
    with pytest.raises(LockedError, match="elsewhere pid 1 since 1970-01-01 00:00:00 UTC"):
        with writer_lock(Corpus(str(out)), "ingest"):
            pass
    record["heartbeat"] = time.time() - 3600
    (out / LOCK).write_text(json.dumps(record))
    with writer_lock(Corpus(str(out)), "ingest"):
        assert json.loads((out / LOCK).read_text())["command"] == "ingest"


def test_another_recipe_into_the_same_out_needs_replace(demo_recipe_path, tmp_path):
    out = tmp_path / "corpus"
    other = load_recipe(demo_recipe_path).model_copy(update={"name": "open-only"})
    save_recipe(Corpus(str(out)), other)  # what a build of recipe 'open-only' leaves: its recipe.json
    (out / "stale.txt").write_text("from the other build")
    line = _one_line(run("build", "--recipe", demo_recipe_path, "--out", out, "-q"), "error: ")
    assert "recipe 'open-only', not 'demo'" in line and "--replace" in line
    assert (out / "stale.txt").exists()
    assert run("build", "--recipe", demo_recipe_path, "--out", out, "-q", "--replace").exit_code == 0
    assert json.loads((out / RECIPE_FILE).read_text())["recipe"]["name"] == "demo"
    assert not (out / "stale.txt").exists()
    # one file records the recipe: the corpus's owner is the one recipe.json names
    assert not (out / "_recipe.json").exists() and [p.name for p in out.glob("*recipe*")] == [RECIPE_FILE]
    assert run("build", "--recipe", demo_recipe_path, "--out", out, "-q").exit_code == 0  # the same recipe: no refusal


def test_an_unreadable_recipe_json_is_refused_unless_replace(demo_recipe_path, tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / RECIPE_FILE).write_text("{half a recipe")
    line = _one_line(run("build", "--recipe", demo_recipe_path, "--out", out, "-q"), "error: ")
    assert "does not name (unreadable), not 'demo'" in line and "--replace" in line


def test_a_corpus_with_the_old_recipe_claim_is_still_owned_by_it(demo_recipe_path, tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "_recipe.json").write_text(json.dumps({"recipe": "open-only"}))
    line = _one_line(run("build", "--recipe", demo_recipe_path, "--out", out, "-q"), "error: ")
    assert "recipe 'open-only', not 'demo'" in line


@pytest.mark.parametrize("out", ["", "   "])
def test_an_empty_out_is_refused(demo_recipe_path, tmp_path, out, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_line(run("build", "--recipe", demo_recipe_path, "--out", out, "-q"), "error: --out is empty")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CorpusError):
        Corpus(out)
