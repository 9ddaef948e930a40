"""Identifiers that a DICOM export puts in folder names never reach the index, shards or markers."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pydicom
from click.testing import CliRunner
from pydicom.data import get_testdata_file

from curator.cli import main

NAME = "Doe^John"


def _dcm(path: Path, **attrs) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for k, v in attrs.items():
        setattr(ds, k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)


def _tree(root: Path) -> list[str]:
    """A PACS-like export whose folders name patients, dates and accession numbers."""
    # read first in sorted order, with an empty PatientID: only a later file reveals the folder's ID
    _dcm(root / "PAT12345" / "CT" / "a_localizer.dcm", PatientID="", PatientName="")
    _dcm(root / "PAT12345" / "CT" / "b.dcm", PatientID="PAT12345", PatientName="Smith^Anna")
    _dcm(root / "ID1" / "20040119_ACC777" / "c.dcm", PatientID="ID1", StudyDate="20040119", AccessionNumber="ACC777")
    _dcm(root / NAME / "d.dcm", PatientID="ZZ9", PatientName="DOE^JOHN")  # the folder's case differs
    _dcm(root / "42" / "e.dcm", PatientID="42")  # a short ID
    # a file without the DICM preamble, in a folder named by its own PatientID
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = "NOPREAMBLE77"
    (root / "NOPREAMBLE77").mkdir()
    ds.preamble = None
    ds.save_as(root / "NOPREAMBLE77" / "f.dcm", enforce_file_format=False)
    return ["PAT12345", "Smith", "20040119", "ACC777", "Doe", "John", "NOPREAMBLE77", "ZZ9", "/42/", "42/e.dcm"]


def _ingest(root: Path, out: Path, *extra: str):
    args = ["ingest", "--adapter", "dicom_folder", "--root", str(root), "--out", str(out), "--quiet", *extra]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _texts(out: Path) -> str:
    parts = []
    for path in sorted(out.rglob("*")):
        if path.suffix == ".parquet":
            parts.append(str(pl.read_parquet(path).to_dicts()))
        elif path.suffix == ".json":
            parts.append(path.read_text())
        parts.append(str(path.relative_to(out)))
    return "\n".join(parts)


def test_path_identifiers_are_redacted_whatever_the_file_order_case_or_length(tmp_path, monkeypatch):
    root = tmp_path / "Export"
    secrets = _tree(root)
    out = tmp_path / "corpus"
    _ingest(root, out)
    text = _texts(out)
    images = pl.read_parquet(str(out / "index" / "images" / "*.parquet"))
    assert images.height == 5  # a, b, c, d, e: the preamble-less file is a reject
    for secret in secrets:
        assert not re.search(re.escape(secret), text, re.IGNORECASE), secret
    # the files stay distinguishable and findable: keyed tags, relative names and sha256 kept
    assert images["original_uri"].n_unique() == 5
    assert all("[patient-" in u for u in images["original_uri"])
    assert images["original_sha256"].n_unique() >= 4


def test_sample_ids_do_not_move_with_the_secret_key(tmp_path, monkeypatch):
    root = tmp_path / "Export"
    _tree(root)
    ids = []
    for n, key in enumerate(("first-secret-key", "second-secret-key")):
        monkeypatch.setenv("CURATOR_PATIENT_KEY", key)
        out = tmp_path / f"c{n}"
        _ingest(root, out, "--id", "export")
        ids.append(sorted(pl.read_parquet(str(out / "index" / "images" / "*.parquet"))["sample_id"]))
    assert ids[0] == ids[1]


def test_an_adhoc_source_is_not_named_after_its_folder(tmp_path):
    root = tmp_path / "PAT12345"
    _dcm(root / "x.dcm", PatientID="PAT12345")
    result = _ingest(root, tmp_path / "corpus")
    assert "pat12345" not in result.output.lower()
    assert not re.search("pat12345", _texts(tmp_path / "corpus"), re.IGNORECASE)
