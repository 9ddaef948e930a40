"""The plan learns from the header pass as it returns: batch by batch, in item order, whatever order they finish in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from dicom_fixtures import make_dicom

from curator.config import IngestSettings
from curator.executors import Executor, UnitFailure, make_executor
from curator.executors.base import prepared_call
from curator.registry import adhoc_card
from curator.stages.ingest import plan
from curator.storage import Corpus


class ReversedExecutor(Executor):
    """Runs units in this process and returns them last first (the order a pool may finish them in)."""

    name = "reversed"

    def __init__(self, workers: int = 2, fail_at: int | None = None):
        super().__init__(workers)
        self.fail_at = fail_at

    def imap(self, fn, units, prepare=None):
        for i in reversed(range(len(units))):
            if i == self.fail_at:
                yield i, UnitFailure(str(i), "OSError: disk gone")
            else:
                yield i, prepared_call(prepare, fn, units[i])


def _tree(root: Path) -> None:
    for patient in range(3):
        for k in range(12):
            make_dicom(
                root / f"PID{patient:04d}-Doe" / f"IM{k:03d}",
                np.arange(16, dtype=np.int16).reshape(4, 4) + k,
                patient_id=f"PID{patient:04d}",
                patient_name=f"Doe^Patient{patient}",
                SeriesInstanceUID=f"1.2.826.0.1.{patient}",
                ImagePositionPatient=[0.0, 0.0, 2.0 * k],
            )


def _plan(tmp_path: Path, root: Path, executor: Executor) -> plan.SourcePlan:
    card = adhoc_card("dicom_folder", root, source_id="streamed", modality="CT", license="CC0-1.0", access="open")
    card_path = tmp_path / "card.json"
    card_path.write_text(card.model_dump_json())
    corpus = Corpus(str(tmp_path / "out"))
    return plan.plan_source(corpus, card, card_path, root, IngestSettings(unit_items=5), executor, False)


def test_batches_finishing_last_first_plan_the_serial_units(tmp_path):
    root = tmp_path / "src"
    _tree(root)
    with make_executor("serial") as serial:
        reference = _plan(tmp_path, root, serial)
    reversed_plan = _plan(tmp_path, root, ReversedExecutor())
    assert len(list(root.rglob("IM*"))) > 2 * plan.HEADER_MIN_PARALLEL  # so the pass ran in batches
    assert [u.id for u in reversed_plan.units] == [u.id for u in reference.units] and len(reference.units) == 8
    for got, want in zip(reversed_plan.units, reference.units, strict=True):
        assert got.fingerprint == want.fingerprint
        assert got.payload.identifiers == want.payload.identifiers
        assert got.payload.headers == want.payload.headers
        assert [(i.series_id, i.slice_position) for i in got.payload.items] == [
            (i.series_id, i.slice_position) for i in want.payload.items
        ]
    assert "pid0000" in reference.units[0].payload.identifiers  # the patients were learned at all


def test_a_failed_header_batch_fails_the_source_with_no_unit(tmp_path):
    root = tmp_path / "src"
    _tree(root)
    failed = _plan(tmp_path, root, ReversedExecutor(fail_at=0))
    assert failed.units == []
    assert list(failed.failed.values()) == ["header pass, batch 1 of 3: OSError: disk gone"]
