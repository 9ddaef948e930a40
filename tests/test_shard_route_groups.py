"""The shard stage routes its rows a group of shards at a time: the same shards as one routing query."""

from __future__ import annotations

import shutil

from curator.config import load_recipe
from curator.executors import make_executor
from curator.stages.shard import run as shard_run
from curator.stages.shard import run_shard
from curator.storage import Corpus


def _fresh_shards(out) -> None:
    shutil.rmtree(out / "shards", ignore_errors=True)
    shutil.rmtree(out / "_markers" / "shard", ignore_errors=True)
    (out / "_markers" / "shard.json").unlink(missing_ok=True)


def test_routing_a_few_rows_at_a_time_writes_the_same_shards(demo_build, demo_recipe_path, tmp_path, monkeypatch):
    out = tmp_path / "demo"
    shutil.copytree(demo_build[0], out)
    settings = load_recipe(demo_recipe_path).shard
    corpus = Corpus(str(out))
    _fresh_shards(out)
    whole = run_shard(corpus, settings, "demo", progress=False, executor=make_executor("serial"))

    groups = []
    real = shard_run._route_groups

    def spying(todo, lengths):
        groups.append(real(todo, lengths))
        return groups[-1]

    monkeypatch.setattr(shard_run, "ROUTE_ROWS", 5)  # every shard of the demo holds more: one group per shard
    monkeypatch.setattr(shard_run, "_route_groups", spying)
    _fresh_shards(out)
    grouped = run_shard(corpus, settings, "demo", progress=False, executor=make_executor("serial"))

    assert len(groups) == 1 and len(groups[0]) == len(whole.shards) > 1
    assert not any(s.kept for s in grouped.shards)
    assert {s.url: s.sha256 for s in grouped.shards} == {s.url: s.sha256 for s in whole.shards}
