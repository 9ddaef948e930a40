"""Ingest reads each input once: one parse of every DICOM header, one read of every NIfTI file.

The plan's header pass parses each DICOM header (identifiers, series, slice position,
the read's digest); the unit's read then parses only the digest and the pixel data.
A NIfTI volume's bytes are read once, hashed and decoded from memory.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import polars as pl
import pydicom
import pytest
from dicom_fixtures import make_dicom

from curator.adapters import base
from curator.config import IngestSettings
from curator.executors import make_executor
from curator.registry import adhoc_card
from curator.stages.ingest import ingest_sources, plan
from curator.storage import Corpus


def _ingest(root: Path, out: Path, adapter: str, **params):
    card = adhoc_card(adapter, root, source_id="once", modality="CT", license="CC0-1.0", access="open")
    card.adapter.params.update(params)
    card_path = out.parent / f"{out.name}-card.json"
    card_path.write_text(card.model_dump_json())
    with make_executor("serial") as serial:
        settings = IngestSettings(unit_items=3)
        return ingest_sources(Corpus(str(out)), [(card, card_path, root)], settings, serial, False)[0]


def _series(root: Path, n: int = 7) -> list[Path]:
    return [
        make_dicom(
            root / "PAT1" / f"IM{k:03d}",
            np.arange(64, dtype=np.int16).reshape(8, 8) * (k + 1),
            patient_id="PAT1",
            SeriesInstanceUID="1.2.826.0.1.5",
            StudyInstanceUID="1.2.826.0.1.4",
            ImagePositionPatient=[0.0, 0.0, 2.5 * k],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            RescaleIntercept=-1024,
            RescaleSlope=1,
        )
        for k in range(n)
    ]


def test_each_dicom_header_is_parsed_once(tmp_path, monkeypatch):
    paths = _series(tmp_path / "src")
    (tmp_path / "src" / "notes.txt").write_text("not a DICOM file")
    parsed: Counter = Counter()
    real = pydicom.dcmread

    def counting(fp, *args, **kwargs):
        parsed[Path(fp if isinstance(fp, str | Path) else getattr(fp, "name", "<memory>")).name] += 1
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    result = _ingest(tmp_path / "src", tmp_path / "out", "dicom_folder")
    assert result.ok and result.stats.images == 7 and result.units == 3
    assert result.stats.rejects == {"not_dicom": 1}
    # every file once, in the plan's header pass: the slices' reads and the text file's reject reuse it
    assert parsed == {**{p.name: 1 for p in paths}, "notes.txt": 1}
    images = pl.read_parquet(str(tmp_path / "out/index/images/*.parquet")).sort("slice_position")
    # series and position came from that one parse; the series is one, its slices ordered by position
    assert images["slice_position"].to_list() == [2.5 * k for k in range(7)]
    assert images["series_key"].n_unique() == 1 and images["series_key"][0] is not None


def test_the_same_corpus_whether_or_not_the_reads_reuse_the_plans_headers(tmp_path, monkeypatch):
    _series(tmp_path / "src")
    _ingest(tmp_path / "src", tmp_path / "reused", "dicom_folder")
    # without digests every read parses its whole file: the tables must not change by a byte
    from curator.readers import dicom

    monkeypatch.setattr(dicom.DicomHeader, "dataset", lambda self, data: None)
    _ingest(tmp_path / "src", tmp_path / "whole", "dicom_folder")
    for table in ("images", "annotations", "rejects"):
        a, b = (pl.read_parquet(str(tmp_path / d / "index" / table / "*.parquet")) for d in ("reused", "whole"))
        assert a.sort(pl.all()).equals(b.sort(pl.all())), table


def test_a_nifti_volume_is_read_once_and_hashed_from_those_bytes(tmp_path, monkeypatch):
    root = tmp_path / "src"
    root.mkdir()
    vol = np.random.default_rng(0).normal(0, 300, (16, 12, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.5, 1.0])), str(root / "case.nii.gz"))
    nib.save(nib.Nifti1Image(vol[..., :3], np.eye(4)), str(root / "plain.nii"))
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b truncated gzip")
    loaded: Counter = Counter()
    real_load = nib.load

    def counting_load(path, *args, **kwargs):
        loaded[Path(path).name] += 1
        return real_load(path, *args, **kwargs)

    def no_second_read(path):
        raise AssertionError(f"{path} read a second time to hash it")

    monkeypatch.setattr(nib, "load", counting_load)
    monkeypatch.setattr(base, "sha256_file", no_second_read)
    result = _ingest(root, tmp_path / "out", "nifti_folder")
    assert result.stats.images == 8 and result.stats.rejects == {"corrupt": 1}
    # good volumes decode from the bytes ingest read; only the broken one goes to nib.load for its error
    assert loaded == {"broken.nii.gz": 1}
    images = pl.read_parquet(str(tmp_path / "out/index/images/*.parquet"))
    import hashlib

    sha = hashlib.sha256((root / "case.nii.gz").read_bytes()).hexdigest()
    assert set(images.filter(pl.col("original_uri") == "case.nii.gz")["original_sha256"]) == {sha}


@pytest.mark.slow
def test_the_header_pass_on_a_pool_gives_the_serial_corpus(tmp_path):
    """Enough files for the header pass to run on the pool's workers, in batches finishing in any order."""
    root = tmp_path / "src"
    for patient in range(4):
        for k in range(10):
            make_dicom(
                root / f"PID{patient:04d}-Doe" / f"IM{k:03d}",
                np.arange(64, dtype=np.int16).reshape(8, 8) * (k + 1) + patient,
                patient_id=f"PID{patient:04d}",
                patient_name=f"Doe^Patient{patient}",
                SeriesInstanceUID=f"1.2.826.0.1.{patient}",
                ImagePositionPatient=[0.0, 0.0, 2.0 * k],
            )
    assert len(list(root.rglob("IM*"))) > 2 * plan.HEADER_MIN_PARALLEL
    corpora = {}
    for name in ("serial", "local"):
        card = adhoc_card("dicom_folder", root, source_id="pool", modality="CT", license="CC0-1.0", access="open")
        card_path = tmp_path / f"{name}-card.json"
        card_path.write_text(card.model_dump_json())
        with make_executor(name, workers=2) as executor:
            settings = IngestSettings(unit_items=7)
            out = tmp_path / name
            (result,) = ingest_sources(Corpus(str(out)), [(card, card_path, root)], settings, executor, False)
        assert result.ok and result.stats.images == 40
        corpora[name] = {
            p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and "index" in p.parts
        }
    assert corpora["local"] == corpora["serial"]
    uris = pl.read_parquet(str(tmp_path / "serial/index/images/*.parquet"))["original_uri"].to_list()
    # the folders' patient IDs and names were learned from headers before any unit ran
    assert not any("PID" in u or "Doe" in u for u in uris)


def test_learning_each_identifier_value_once_learns_what_every_header_teaches(tmp_path):
    from dicom_fixtures import PYDICOM_FILES

    from curator import phi
    from curator.readers.dicom import scan_header

    series = _series(tmp_path / "s", n=5)
    other = make_dicom(tmp_path / "o" / "IM1", np.ones((8, 8), np.int16), patient_id="PAT2", patient_name="Doe^Jane")
    paths = [*series, other, *sorted(p for p in PYDICOM_FILES.iterdir() if p.is_file())]
    identities = [scan_header(p).identity for p in paths]
    assert sum(bool(i) for i in identities) > 40
    for order in (identities, identities[::-1], identities[1::2] + identities[::2]):
        every, once = phi.Redactor(b"key", "src"), phi.Redactor(b"key", "src")
        for identity in order:
            every.learn(identity)
        for identity in plan.new_values(order):
            once.learn(identity)
        assert once.state() == every.state()
        assert (once._embedded, once._longest) == (every._embedded, every._longest)
        for text in ("PAT1/IM000/Doe^Jane_20190321.dcm", "Secret General Hospital/PAT2", "CompressedSamples^CT1"):
            assert once.redact(text) == every.redact(text)
