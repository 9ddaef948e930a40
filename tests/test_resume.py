"""A build killed part-way through a source resumes with nothing lost and nothing duplicated."""

from __future__ import annotations

import pytest
from helpers import STAGES, Killed

from curator.adapters.label_csv import LabelCsv
from curator.config import load_recipe
from curator.stages.build import run_build


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and "_markers" not in p.parts}


def test_a_build_killed_mid_source_resumes_to_the_same_corpus(demo_recipe_path, demo_build, tmp_path, monkeypatch):
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
    # the source before it finished; the killed one left no part and no marker
    assert (out / "_markers" / "ingest" / "demo_radimagenet.json").is_file()
    assert not (out / "_markers" / "ingest" / "demo_chexpert.json").exists()
    assert not list((out / "index" / "images").glob("part-demo_chexpert*"))

    monkeypatch.setattr(LabelCsv, "items", original)
    report = run_build(load_recipe(demo_recipe_path), str(out), progress=False)
    skipped = {r.source_id for r in report.sources if r.skipped}
    assert skipped == {"demo_radimagenet"}  # finished work is kept, the rest redone
    # identical to an uninterrupted build: every table part, blob, shard and index, byte for byte
    # (the report folder is written only by `curator report`)
    got = _files(out)
    want = {k: v for k, v in _files(reference).items() if k.parts[0] != "report"}
    assert sorted(got) == sorted(want)
    differing = [str(k) for k in want if got[k] != want[k]]
    assert not differing, differing
    # beside the stages' markers: the seal's size/mtime cache (storage.SEAL_STAMPS)
    assert set(p.name for p in (out / "_markers").iterdir()) - {"seal-stamps.json"} == set(STAGES)
