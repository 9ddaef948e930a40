"""A build killed at any point (planning, between units, inside one) resumes with nothing lost or duplicated."""

from __future__ import annotations

import pytest
from helpers import STAGES, Killed, timeless

from curator.adapters.label_csv import LabelCsv
from curator.config import IngestSettings, Recipe, load_recipe
from curator.stages import ingest as ingest_stage
from curator.stages.build import run_build


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and "_markers" not in p.parts}


def _same_corpus(got_root, want_root) -> None:
    """Every table part, blob, shard and index byte for byte (the report folder is written only by `curator report`)."""
    got = _files(got_root)
    want = {k: v for k, v in _files(want_root).items() if k.parts[0] != "report"}
    assert sorted(got) == sorted(want)
    differing = [str(k) for k in want if timeless(k, got[k]) != timeless(k, want[k])]
    assert not differing, differing
    # beside the stages' markers: the seal's size/mtime cache (storage.SEAL_STAMPS)
    assert set(p.name for p in (got_root / "_markers").iterdir()) - {"seal-stamps.json"} == set(STAGES)


def test_a_build_killed_while_planning_resumes_to_the_same_corpus(demo_recipe_path, demo_build, tmp_path, monkeypatch):
    reference, _ = demo_build
    out = tmp_path / "killed"
    original = LabelCsv.items

    def dying(self):
        for n, item in enumerate(original(self)):
            if n == 5:
                raise Killed
            yield item

    monkeypatch.setattr(LabelCsv, "items", dying)
    with pytest.raises(Killed):
        run_build(load_recipe(demo_recipe_path), str(out), progress=False)
    # every source is planned before any unit runs: nothing is written, nothing marked done
    assert not list(out.glob("_markers/ingest/*.json"))
    assert not list(out.glob("index/images/part-*"))

    monkeypatch.setattr(LabelCsv, "items", original)
    run_build(load_recipe(demo_recipe_path), str(out), progress=False)
    _same_corpus(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["between_units", "inside_a_unit"])
def test_a_build_killed_among_its_units_redoes_only_the_missing_ones(where, demo_recipe_path, tmp_path, monkeypatch):
    monkeypatch.setattr(
        Recipe, "ingest_settings", lambda self: IngestSettings(seed=self.seed, split=self.split, unit_items=4)
    )
    reference = tmp_path / "reference"
    run_build(load_recipe(demo_recipe_path), str(reference), progress=False)
    out = tmp_path / "killed"
    original = ingest_stage.ingest_unit
    calls = []

    def dying(unit):
        calls.append(unit.id)
        if len(calls) == 4:
            if where == "inside_a_unit":
                original(unit)  # its parts and blobs are written, the driver dies before its marker
            raise Killed
        return original(unit)

    monkeypatch.setattr(ingest_stage, "ingest_unit", dying)
    with pytest.raises(Killed):
        run_build(load_recipe(demo_recipe_path), str(out), progress=False)
    done = sorted(p.stem for p in out.glob("_markers/ingest/*/*.json"))
    assert done == sorted(calls[:3])  # the fourth has no marker, whatever it wrote
    assert not list(out.glob("_markers/ingest/*.json"))  # no source is done

    monkeypatch.setattr(ingest_stage, "ingest_unit", original)
    report = run_build(load_recipe(demo_recipe_path), str(out), progress=False)
    assert sum(r.units_skipped for r in report.sources) == 3
    assert sum(r.units for r in report.sources) > 4
    _same_corpus(out, reference)
