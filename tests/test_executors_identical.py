"""The same build on every executor: serial, a local process pool and Ray give the same bytes."""

from __future__ import annotations

import pytest
from helpers import timeless

from curator.config import IngestSettings, Recipe, load_recipe
from curator.executors import make_executor
from curator.stages.build import run_build


def _files(root):
    # the seal's stamp cache (_markers/seal-stamps.json) holds this machine's mtimes, not corpus content
    return {
        p.relative_to(root): timeless(p.relative_to(root), p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "seal-stamps.json"
    }


@pytest.mark.slow
def test_serial_local_pool_and_ray_build_byte_identical_corpora(demo_recipe_path, tmp_path, monkeypatch):
    # four items a unit, so every demo source is several units that the workers finish in any order
    monkeypatch.setattr(
        Recipe, "ingest_settings", lambda self: IngestSettings(seed=self.seed, split=self.split, unit_items=4)
    )
    corpora = {}
    for name in ("serial", "local", "ray"):
        out = tmp_path / name
        with make_executor(name, workers=2) as executor:  # Ray: a local instance on loopback only
            report = run_build(load_recipe(demo_recipe_path), str(out), progress=False, executor=executor)
        assert not report.failed
        assert sum(r.units for r in report.sources) > len(report.sources)
        corpora[name] = _files(out)
    reference = corpora["serial"]
    assert any(k.parts[0] == "blobs" for k in reference) and any(k.parts[0] == "shards" for k in reference)
    for name in ("local", "ray"):
        assert sorted(corpora[name]) == sorted(reference), name
        differing = [str(k) for k in reference if timeless(k, corpora[name][k]) != timeless(k, reference[k])]
        assert not differing, (name, differing)
