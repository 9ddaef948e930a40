"""Worker preparation: a unit's imports are paid once a process, before its first unit, on every backend."""

from pathlib import Path

import pytest
from dicom_fixtures import make_dicom
from prepare_units import fail_to_prepare, mark_prepared, modules_a_unit_imports, report

from curator.config import IngestSettings
from curator.executors import Prepare, UnitFailure, make_executor
from curator.registry import adhoc_card
from curator.stages.ingest import ingest_sources
from curator.stages.ingest.plan import plan_source
from curator.stages.ingest.work import prepare_worker
from curator.storage import Corpus


def _check_once_per_process(out: dict) -> None:
    assert sorted(out) == list(range(8))
    for pid, prepared in out.values():
        assert prepared == ["x"], f"worker {pid} ran its prepare {len(prepared)} times before a unit"


@pytest.mark.parametrize("name", ["serial", "local"])
def test_prepare_runs_once_in_each_process_before_its_first_unit(name):
    prepare = Prepare(mark_prepared, ("x",))
    with make_executor(name, workers=2) as executor:
        executor.start(prepare)  # the eager start and the units' own check share one record per process
        out = dict(executor.map(report, list(range(8)), progress=False, prepare=prepare))
        _check_once_per_process(out)
        # a second map on the same workers does not prepare them again
        again = dict(executor.map(report, list(range(8)), progress=False, prepare=prepare))
    _check_once_per_process(again)


@pytest.mark.slow
def test_prepare_on_ray(monkeypatch):
    # Ray's workers inherit the environment of the Ray the executor starts; they import this test's helpers
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    prepare = Prepare(mark_prepared, ("x",))
    with make_executor("ray", workers=2) as executor:
        executor.start(prepare)
        _check_once_per_process(dict(executor.map(report, list(range(8)), progress=False, prepare=prepare)))


@pytest.mark.parametrize("name", ["serial", "local"])
def test_a_prepare_that_fails_fails_the_units_with_its_error(name):
    prepare = Prepare(fail_to_prepare)
    with make_executor(name, workers=2) as executor:
        executor.start(prepare)  # never waited for: its failure surfaces in the units
        out = dict(executor.map(report, [0, 1, 2], progress=False, prepare=prepare))
    assert out == {i: UnitFailure(str(i), "ImportError: no module named 'a_missing_codec'") for i in range(3)}


def test_without_prepare_nothing_runs_first():
    with make_executor("local", workers=1) as executor:
        out = dict(executor.map(report, [0, 1], progress=False))
    assert [prepared for _, prepared in out.values()] == [[], []]


def _ct_source(tmp_path):
    """A 3-slice DICOM folder with its ad-hoc card: (card, card path, root, corpus to ingest into)."""
    root = tmp_path / "ct"
    for k in range(3):
        make_dicom(root / f"IM{k}.dcm", [[k, 1], [2, 3]], InstanceNumber=k + 1)
    card = adhoc_card("dicom_folder", root, source_id="ct", modality="CT", license="CC0-1.0", access="open")
    card_path = tmp_path / "card.json"
    card_path.write_text(card.model_dump_json())
    return card, card_path, root, Corpus(str(tmp_path / "out"))


def test_a_prepared_ingest_worker_imports_nothing_new_in_its_first_unit(tmp_path):
    """Before ``prepare_worker``, a pool worker's first unit imported pandas (through pyarrow) and more.

    That cost landed in each worker's first unit: 0.4-1.7 s of a 1-2 s bench run.
    """
    card, card_path, root, corpus = _ct_source(tmp_path)
    with make_executor("serial") as serial:
        plan = plan_source(corpus, card, card_path, root, IngestSettings(), serial, False)
    prepare = Prepare(prepare_worker, (("dicom_folder",),))
    with make_executor("local", workers=1) as executor:
        [(_, prepared)] = executor.map(modules_a_unit_imports, plan.units, progress=False, prepare=prepare)
    with make_executor("local", workers=1) as executor:
        [(_, unprepared)] = executor.map(modules_a_unit_imports, plan.units, progress=False)
    assert prepared == []
    assert "pandas" in unprepared  # what the test guards against: without the prepare, the unit pays it


def test_start_sends_each_prepare_once_and_a_skipped_rerun_starts_no_worker(tmp_path):
    card, card_path, root, corpus = _ct_source(tmp_path)
    with make_executor("local", workers=2) as executor:
        executor.start(Prepare(mark_prepared, ("x",)))
        executor.start(Prepare(mark_prepared, ("x",)))  # a build's second source: nothing more is sent
        assert len(executor._starting) == 2
        (first,) = ingest_sources(corpus, [(card, card_path, root)], IngestSettings(), executor, False)
    assert first.ok and not first.skipped
    with make_executor("local", workers=2) as executor:
        (again,) = ingest_sources(corpus, [(card, card_path, root)], IngestSettings(), executor, False)
        assert again.skipped and executor._pool is None  # nothing to do: no process spawned
