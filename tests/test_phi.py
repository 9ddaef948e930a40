"""De-identification by design: identifiers in every form go, everything else in a path stays verbatim."""

from __future__ import annotations

import logging
import re
import tarfile
from pathlib import Path

import polars as pl
import pydicom
import pytest
from helpers import run
from pydicom.data import get_testdata_file

from curator import phi
from curator.adapters.base import sha256_file

KEY = b"k" * 32


def _redactor(keyed: bool = False, **ids) -> phi.Redactor:
    r = phi.Redactor(KEY, "src", keyed_paths=keyed)
    r.learn({"patient": ids.pop("patient", None), "identifiers": {k: list(v) for k, v in ids.items()}})
    return r


@pytest.mark.parametrize(
    ("path", "gone"),
    [
        ("DOE_JOHN/1961-04-23/CT/img.dcm", ["DOE", "JOHN", "1961"]),
        ("john.doe/x.dcm", ["john", "doe"]),
        ("JohnDoe/x.dcm", ["JohnDoe"]),
        ("Doe, John - 23.04.1961/x.dcm", ["Doe", "John", "1961"]),
        ("23Apr1961/x.dcm", ["23Apr1961"]),
        ("04-23-1961/x.dcm", ["1961"]),
        ("19610423_143025/x.dcm", ["19610423", "143025"]),
        ("14-30-25/x.dcm", ["14-30-25"]),
        ("Saint_Bartholomew_General_Hospital/x.dcm", ["Bartholomew"]),
        ("HOUSE_GREGORY/x.dcm", ["HOUSE", "GREGORY"]),
        ("Gregory.House/x.dcm", ["Gregory", "House"]),
        ("Mueller/x.dcm", ["Mueller"]),
        ("Muller/x.dcm", ["Muller"]),
        ("Müller_Hans/x.dcm", ["Müller", "Hans"]),
        ("29.02.2024/x.dcm", ["29.02.2024"]),
        ("ACC-99812/x.dcm", ["99812"]),
        ("PID4711/x.dcm", ["PID4711"]),
    ],
)
def test_every_form_of_an_identifier_is_removed(path, gone):
    r = _redactor(
        patient="PID4711",
        patient_name=["Doe^John", "Müller^Hans"],
        physician=["House^Gregory"],
        institution=["Saint Bartholomew General Hospital"],
        date=["19610423", "20240229"],
        time=["143025.000"],
        id=["ACC-99812"],
    )
    out = r.redact(path)
    for word in gone:
        assert word.lower() not in out.lower(), (path, out)
    assert out.endswith("x.dcm") or out.endswith("img.dcm")


def test_what_is_no_identifier_survives_verbatim():
    # pydicom's own files: PatientName "Test", one-character IDs, placeholders
    r = _redactor(patient="2", patient_name=["Test", "Anonymous^Unknown"], id=["1"], study_id=["1"])
    for path in ("dicomdirtests/test-SR.dcm", "rtstruct_transform_2.dcm", "unknown/anonymous_1.dcm", "test/x.dcm"):
        assert r.redact(path) == path
    # whole tokens only: a name inside a longer word is left alone
    r = _redactor(patient_name=["Ann^Lee"])
    assert r.redact("planning/Annotations/sleep.dcm") == "planning/Annotations/sleep.dcm"
    assert r.redact("Lee_Ann/sleep.dcm").endswith("/sleep.dcm") and "Lee" not in r.redact("Lee_Ann/sleep.dcm")


def test_study_id_is_a_study_and_patients_stay_distinguishable():
    r = _redactor(patient="P1", study_id=["S4711"])
    out = r.redact("P1/S4711/x.dcm")
    assert re.fullmatch(r"\[patient-[0-9a-f]{8}\]/\[study-[0-9a-f]{8}\]/x\.dcm", out), out
    other = _redactor(patient="P2")
    assert other.redact("P2/x.dcm") != _redactor(patient="P1").redact("P1/x.dcm")


def test_keyed_layouts_write_one_token_per_component_and_keep_a_lookup():
    r = _redactor(keyed=True, patient="PID4711", patient_name=["Doe^John"], date=["19610423"])
    out = r.redact("DOE_JOHN/1961-04-23/series 3/DOE_JOHN_1.dcm")
    first, second, third, name = out.split("/")
    assert phi.KEYED.fullmatch(first) and phi.KEYED.fullmatch(second) and third == "series 3"
    assert phi.KEYED.fullmatch(name.removesuffix(".dcm"))
    assert r.lookup == {out: "DOE_JOHN/1961-04-23/series 3/DOE_JOHN_1.dcm"}


# -- end to end: pydicom's test folder and a PACS tree, through build, shards, logs and reports ----------------
def _dcm(path: Path, **attrs) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for k, v in attrs.items():
        setattr(ds, k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)


PACS_SECRETS = [
    "doe",
    "john",
    "1961",
    "19610423",
    "mueller",
    "muller",
    "müller",
    "hans",
    "29.02.2024",
    "20240229",
    "bartholomew",
    "house",
    "gregory",
    "pid8812",
    "s4711",
    "acc77812",
    "143025",
    "vermeer",
]


def _pacs(root: Path) -> None:
    """A PACS export whose folders hold each form an identifier takes in the wild."""
    base = dict(InstitutionName="Saint Bartholomew General Hospital", ReferringPhysicianName="House^Gregory")
    _dcm(
        root / "DOE_JOHN" / "1961-04-23" / "CT_1" / "IM0001.dcm",
        PatientName="Doe^John",
        PatientID="PID8812",
        PatientBirthDate="19610423",
        **base,
    )
    _dcm(
        root / "Mueller" / "29.02.2024" / "Study_S4711" / "IM0001.dcm",
        PatientName="Müller^Hans",
        PatientID="PID8813",
        StudyDate="20240229",
        StudyID="S4711",
        **base,
    )
    _dcm(
        root / "Saint_Bartholomew_General_Hospital" / "HOUSE_GREGORY" / "ACC77812_143025" / "IM0001.dcm",
        PatientName="Vermeer^Anna",
        PatientID="PID8814",
        AccessionNumber="ACC77812",
        StudyTime="143025",
        **base,
    )
    # placeholders and short IDs (pydicom's own style) must not rewrite anything
    _dcm(root / "phantoms" / "test-SR_transform_2.dcm", PatientName="Test", PatientID="2")


def _pydicom_folder(root: Path) -> int:
    import shutil

    data = Path(get_testdata_file("CT_small.dcm")).parent
    shutil.copytree(data, root)
    return sum(1 for p in root.rglob("*") if p.is_file())


def _card(registry: Path, source_id: str, keyed: bool) -> None:
    registry.mkdir(exist_ok=True)
    (registry / f"{source_id}.toml").write_text(
        f'id = "{source_id}"\nname = "{source_id}"\nversion = "1"\nlicense = "CC0-1.0"\naccess = "open"\n'
        'citation = "test"\nmodality = "CT"\nanatomy = "unspecified"\ndepartment = "radiology"\n'
        f"identifiers_in_paths = {'true' if keyed else 'false'}\n"
        '[adapter]\nname = "dicom_folder"\n'
    )


def _everything_written(out: Path) -> str:
    texts = []
    for path in sorted(out.rglob("*")):
        texts.append(str(path.relative_to(out)))
        if path.suffix == ".parquet":
            texts.append(str(pl.read_parquet(path).to_dicts()))
        elif path.suffix == ".tar":
            with tarfile.open(path) as tar:
                for member in tar:
                    texts.append(member.name)
                    if member.name.endswith((".json", ".txt")):
                        texts.append(tar.extractfile(member).read().decode())
        elif path.suffix in (".json", ".md", ".html", ".txt", ".jsonl"):
            texts.append(path.read_text())
    return "\n".join(texts)


def _tokens(text: str) -> set[str]:
    return {t.casefold() for t in re.findall(r"[^\W_]+", text)}


def test_pydicom_folder_and_pacs_tree_leave_no_identifier_anywhere(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CURATOR_LOOKUP_DIR", str(tmp_path / "private"))
    _pacs(tmp_path / "pacs")
    n_pydicom = _pydicom_folder(tmp_path / "pydicom")
    registry = tmp_path / "cards"
    _card(registry, "pacs", keyed=False)
    _card(registry, "pacs_keyed", keyed=True)
    _card(registry, "pydicom_files", keyed=False)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'name = "phi"\nregistry = "{registry}"\n'
        f'[[sources]]\nid = "pacs"\nroot = "{tmp_path / "pacs"}"\n'
        f'[[sources]]\nid = "pacs_keyed"\nroot = "{tmp_path / "pacs"}"\n'
        f'[[sources]]\nid = "pydicom_files"\nroot = "{tmp_path / "pydicom"}"\n'
    )
    out = tmp_path / "corpus"
    with caplog.at_level(logging.DEBUG):
        printed = [run(*["build", "--recipe", str(recipe), "--out", str(out), "--quiet"]).output]
        printed.append(run(*["report", "--out", str(out)]).output)
        images = pl.read_parquet(str(out / "index" / "images" / "*.parquet"))
        for sid in images["sample_id"].to_list()[:40]:
            printed.append(run(*["trace", sid, "--out", str(out)]).output)
        printed.append(run(*["query", "SELECT * FROM images", "--out", str(out), "--limit", "1000"]).output)
        printed.append(run(*["query", "SELECT * FROM rejects", "--out", str(out), "--limit", "1000"]).output)
    written = _everything_written(out) + "\n".join(printed) + caplog.text
    words = _tokens(written)
    found = [s for s in PACS_SECRETS if s in words or (not s.isalnum() and s in written.lower())]
    assert found == [], found
    for phrase in ("doe_john", "saint_bartholomew", "house_gregory", "1961-04-23"):
        assert phrase not in written.lower()

    # every original file is found from its sample: verbatim, by tag pattern + sha256, or by the local lookup
    roots = [f"{s}={tmp_path / d}" for s, d in (("pacs", "pacs"), ("pacs_keyed", "pacs"), ("pydicom_files", "pydicom"))]
    result = run("verify", "--out", out, "--quiet", *[x for r in roots for x in ("--root", r)])
    assert "original_missing" not in result.output and "original_changed" not in result.output, result.output
    lookup = phi.load_lookup(str(out), "pacs_keyed")
    keyed = images.filter(pl.col("source_id") == "pacs_keyed")
    assert keyed.height == 4 and sum(bool(phi.KEYED.search(u)) for u in keyed["original_uri"]) == 3
    for uri, sha in keyed.select("original_uri", "original_sha256").iter_rows():
        original = tmp_path / "pacs" / lookup.get(uri, uri)
        assert original.is_file() and sha256_file(original) == sha, uri
    assert not (tmp_path / "private").is_relative_to(out)

    # pydicom's test files: nothing in their paths is an identifier, so nothing is rewritten
    pyd = pl.concat(
        [
            images.filter(pl.col("source_id") == "pydicom_files").select("original_uri"),
            pl.read_parquet(str(out / "index" / "rejects" / "*.parquet"))
            .filter(pl.col("source_id") == "pydicom_files")
            .select("original_uri"),
        ]
    )["original_uri"]
    assert pyd.n_unique() == n_pydicom
    rewritten = sorted(u for u in pyd if not (tmp_path / "pydicom" / u).exists())
    # rewritten are exactly the paths with a folder named by a PatientID some header holds (DICOMDIR records too)
    ids = set()
    for path in (tmp_path / "pydicom").rglob("*"):
        if path.is_file():
            try:
                ids |= {str(e.value) for e in pydicom.dcmread(path, force=True).iterall() if e.keyword == "PatientID"}
            except Exception:  # noqa: BLE001 - not DICOM
                continue
    expected = sorted(
        p.relative_to(tmp_path / "pydicom").as_posix()
        for p in (tmp_path / "pydicom").rglob("*")
        if p.is_file() and set(p.relative_to(tmp_path / "pydicom").parts[:-1]) & ids
    )
    assert len(rewritten) == len(expected) and all("[patient-" in u for u in rewritten), (rewritten, expected)
    # the placeholder file of the PACS tree keeps its name
    assert "phantoms/test-SR_transform_2.dcm" in images["original_uri"].to_list()


def test_an_id_glued_to_a_prefix_goes_at_a_letter_digit_boundary_only():
    r = _redactor(patient="4MR1", id=["77654033"])
    assert r.redact("PAT4MR1/STUDY1/IM1").startswith("PAT[patient-")
    assert r.redact("CT77654033_x/IM1") == "CT[id]_x/IM1"
    assert r.redact("XPAT4MR12/IM1") == "XPAT4MR12/IM1"  # 4MR12 is another ID
