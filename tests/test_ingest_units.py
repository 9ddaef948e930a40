"""Ingest as plan -> work -> commit: units, failures that stay with their unit, stale parts, CLI options."""

from __future__ import annotations

import sys

import polars as pl
import pytest
from executor_units import FourItemUnits, ingest_unit_crashing_on_second
from helpers import run

from curator.adapters.base import Item
from curator.config import IngestSettings
from curator.executors import make_executor
from curator.registry import find_card
from curator.stages import ingest as ingest_stage
from curator.stages.ingest import ingest_sources
from curator.stages.ingest.plan import cut
from curator.storage import Corpus


def _ingest(out, demo_data, executor, unit_items, source="demo_radimagenet", folder="radimagenet"):
    card, path = find_card(source)
    settings = IngestSettings(unit_items=unit_items)
    return ingest_sources(Corpus(str(out)), [(card, path, demo_data / folder)], settings, executor, progress=False)[0]


def _table(out, table: str) -> list[dict]:
    return pl.read_parquet(str(out / "index" / table / "*.parquet")).sort(pl.all()).to_dicts()


def _parts(out, table: str = "images") -> list[str]:
    return sorted(p.name for p in (out / "index" / table).glob("part-*.parquet"))


def test_units_are_cut_by_items_and_rows_naming_one_image_stay_together():
    items = [Item(uri=u) for u in ["a", "b", "a", "c", "d", "b", "e"]]
    assert [[i.uri for i in b] for b in cut(items, 3, rows_repeat=False)] == [["a", "b", "a"], ["c", "d", "b"], ["e"]]
    # three distinct images a unit; a later row joins its image's unit, in row order
    assert [[i.uri for i in b] for b in cut(items, 2, rows_repeat=True)] == [["a", "b", "a", "b"], ["c", "d"], ["e"]]


def test_a_failed_unit_fails_alone_and_the_rerun_redoes_only_it(demo_data, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    with make_executor("serial") as serial:
        whole = _ingest(reference, demo_data, serial, unit_items=4)
    assert whole.ok and whole.units == 6 and whole.stats.seen == 21

    out = tmp_path / "corpus"

    def failing(unit):
        if unit.id == "demo_radimagenet-000002":
            raise RuntimeError("decoder exploded")
        return ingest_stage.work.ingest_unit(unit)

    monkeypatch.setattr(ingest_stage, "ingest_unit", failing)
    with make_executor("serial") as serial:
        first = _ingest(out, demo_data, serial, unit_items=4)
    assert first.failed == {"demo_radimagenet-000002": "RuntimeError: decoder exploded"}
    assert "part-demo_radimagenet-000002.parquet" not in _parts(out)
    assert len(_parts(out)) == 5
    assert not (out / "_markers" / "ingest" / "demo_radimagenet.json").exists()  # the source is not done

    monkeypatch.undo()
    with make_executor("serial") as serial:
        second = _ingest(out, demo_data, serial, unit_items=4)
    assert second.ok and second.units_skipped == 5 and second.stats.as_dict() == whole.stats.as_dict()
    for table in ("images", "annotations", "rejects", "sources"):
        assert _table(out, table) == _table(reference, table), table
    with make_executor("serial") as serial:
        assert _ingest(out, demo_data, serial, unit_items=4).skipped


@pytest.mark.slow
def test_a_worker_that_segfaults_costs_its_unit_and_the_cli_exits_1(demo_data, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest_stage, "ingest_unit", ingest_unit_crashing_on_second)
    root = demo_data / "radimagenet"
    args = ["ingest", "--source", "demo_radimagenet", "--root", root, "--out", tmp_path / "c", "-q"]
    monkeypatch.setattr("curator.config.IngestSettings", FourItemUnits)
    result = run(*args, "--workers", "2")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip().startswith("failed ")]
    assert lines == ["  failed demo_radimagenet-000001: worker process died (crash or out-of-memory kill)"]
    assert len(_parts(tmp_path / "c")) == 5  # every other unit committed


def test_stale_parts_of_units_no_longer_planned_are_removed(demo_data, tmp_path):
    out = tmp_path / "corpus"
    with make_executor("serial") as serial:
        _ingest(out, demo_data, serial, unit_items=4)
        assert len(_parts(out)) == 6
        small = {t: _table(out, t) for t in ("images", "annotations", "rejects")}
        # an orphan a killed run could leave: a part without a marker, of a unit the new plan lacks
        (out / "index" / "images" / "part-demo_radimagenet-000009.parquet").write_bytes(b"junk")
        result = _ingest(out, demo_data, serial, unit_items=16)
    assert result.ok and result.units == 2
    for table in ("images", "annotations", "rejects"):
        assert _parts(out, table) == [f"part-demo_radimagenet-00000{n}.parquet" for n in (0, 1)]
        assert _table(out, table) == small[table], table
    assert sorted(p.name for p in (out / "_markers" / "ingest" / "demo_radimagenet").iterdir()) == [
        "demo_radimagenet-000000.json",
        "demo_radimagenet-000001.json",
    ]


def test_redaction_does_not_depend_on_unit_boundaries(demo_data, tmp_path):
    # one file a unit: a unit never reads the file that names its folder's patient
    outs = []
    with make_executor("serial") as serial:
        for n in (1, 100):
            outs.append(tmp_path / f"u{n}")
            assert _ingest(outs[-1], demo_data, serial, unit_items=n, source="demo_dicom", folder="dicom").ok
    for table in ("images", "rejects"):
        assert _table(outs[0], table) == _table(outs[1], table)


def test_executor_mistakes_are_one_line_and_exit_1(demo_data, tmp_path, monkeypatch):
    base = ["ingest", "--source", "demo_radimagenet", "--root", demo_data / "radimagenet", "--out", tmp_path / "o"]
    result = run(*base, "--workers", "0")
    assert result.exit_code == 1
    assert result.output.strip() == "error: --workers must be at least 1 (got 0)"
    result = run(*base, "--ray-address", "127.0.0.1:1")
    assert result.exit_code == 1 and result.output.strip() == "error: --ray-address needs --executor ray"
    # Ray not installed
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delitem(sys.modules, "curator.executors.ray", raising=False)
    result = run(*base, "--executor", "ray")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: the ray executor needs ray: pip install 'curator[ray]' (or: pip install ray)"
    )
    assert not (tmp_path / "o" / "index").exists()


@pytest.mark.slow
def test_an_unreachable_ray_address_is_one_line_and_exit_1(demo_recipe_path, tmp_path):
    args = ["build", "--recipe", demo_recipe_path, "--out", tmp_path / "o", "--executor", "ray"]
    result = run(*args, "--ray-address", "127.0.0.1:1")
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot connect to Ray at 127.0.0.1:1: ")
    assert len(result.output.strip().splitlines()) == 1
