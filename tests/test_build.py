"""The whole demo build, end to end: accounting, shards read back by webdataset, determinism."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import polars as pl
import pytest
import webdataset as wds
from helpers import timeless
from PIL import Image

from curator.config import load_recipe
from curator.stages.build import run_build


def _table(out: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(str(out / "index" / name / "*.parquet"))


def test_every_input_is_indexed_or_rejected(demo_build):
    out, report = demo_build
    images, rejects = _table(out, "images"), _table(out, "rejects")
    assert len(report.sources) == 6
    for result in report.sources:
        s = result.stats
        assert s.seen > 0
        assert s.seen == s.indexed_items + s.rejected, result.source_id
        got = rejects.filter(pl.col("source_id") == result.source_id)
        assert got.height == s.rejected
        assert dict(got.group_by("reason").len().iter_rows()) == dict(s.rejects)
        assert images.filter(pl.col("source_id") == result.source_id).height == s.images
        # every indexed item appears as at least one image row
        assert images.filter(pl.col("source_id") == result.source_id)["original_uri"].n_unique() == s.indexed_items


def test_the_traps_in_the_demo_data_become_the_right_rejects(demo_build):
    out, _ = demo_build
    rejects = {(r["source_id"], r["original_uri"]): r for r in _table(out, "rejects").iter_rows(named=True)}
    assert rejects[("demo_chexpert", "../../etc/passwd")]["reason"] == "path_escape"
    assert rejects[("demo_chexpert", "train/patient00099/study1/view1_frontal.jpg")]["reason"] == "missing_file"
    assert rejects[("demo_chexpert", "train/patient00002/study1/view1_frontal.jpg")]["reason"] == "truncated"
    assert rejects[("demo_radimagenet", "radiology_ai/CT/lung/normal/Thumbs.db")]["reason"] == "unsupported_format"
    assert rejects[("demo_radimagenet", "radiology_ai/CT/README.txt")]["reason"] == "bad_layout"
    # PACS-style folders named by patient ID: the ID is redacted from the path, the rest kept
    dicom = {
        re.sub(r"\[patient-[0-9a-f]{8}\]", "[patient]", uri): r
        for (src, uri), r in rejects.items()
        if src == "demo_dicom"
    }
    assert dicom["DICOM/PAT[patient]/export_log.txt"]["reason"] == "not_dicom"
    assert dicom["DICOM/PAT[patient]/STUDY1/SERIES4/IM000001"]["reason"] == "truncated"
    jpeg12 = dicom["DICOM/PAT[patient]/STUDY1/SERIES2/IM000001"]
    assert jpeg12["reason"] == "undecodable_syntax" and "JPEG Extended" in jpeg12["message"]
    assert rejects[("demo_msd_liver", "imagesTr/liver_2.nii.gz")]["reason"] == "truncated"
    assert rejects[("demo_zh_captions", "annotations.jsonl:4")]["reason"] == "bad_row"


def test_compressed_dicom_decodes_to_the_same_pixels_as_uncompressed(demo_build):
    out, _ = demo_build
    images = _table(out, "images").filter(pl.col("source_id") == "demo_dicom")
    mr = images.filter(pl.col("width") == 64)
    # MR_small.dcm, its RLE and its lossless JPEG 2000 copies: lossless, so identical normalised pixels
    assert mr.height == 3
    assert mr["image_sha256"].n_unique() == 1
    assert set(images["modality"]) >= {"CT", "MRI"}


def test_shards_read_back_with_webdataset_match_the_index(demo_build):
    out, report = demo_build
    images = {r["sample_id"]: r for r in _table(out, "images").iter_rows(named=True)}
    sources = {r["source_id"]: r for r in _table(out, "sources").iter_rows(named=True)}
    manifest = {r["sample_id"]: r for r in _table(out, "shards").iter_rows(named=True)}
    urls = sorted(str(p) for p in (out / "shards").rglob("*.tar"))
    assert len(urls) == len(report.shard.shards) >= 2
    seen = set()
    for sample in wds.WebDataset(urls, shardshuffle=False):
        key = sample["__key__"]
        assert "." not in key
        row = images[key]
        meta = json.loads(sample["json"])
        img_bytes = sample.get("png", sample.get("jpg"))
        assert hashlib.sha256(img_bytes).hexdigest() == row["image_sha256"]
        with Image.open(io.BytesIO(img_bytes)) as im:
            assert im.size == (row["width"], row["height"])
        # one sample per distinct image: its canonical member is the image row of the same id
        prov = meta["provenance"][0]
        assert prov["member_id"] == key
        for field in ("source_id", "original_uri", "original_sha256", "split"):
            assert prov[field] == row[field], field
        for field in ("modality", "anatomy", "split"):
            assert meta[field] == row[field], field
        assert prov["license"] == sources[row["source_id"]]["license"]
        assert meta["licenses"] == sorted({p["license"] for p in meta["provenance"]})
        assert sample["txt"].decode().strip(), key
        assert manifest[key]["shard_url"].endswith(Path(sample["__url__"]).name)
        if meta["triplet"]:
            assert meta["captions"], key
            assert all(c["generator"] == "template" and len(c["prompt_sha256"]) == 64 for c in meta["captions"])
            assert {c["language"] for c in meta["captions"]} == {"en", "zh"}
        else:
            assert meta["texts"], key
        seen.add(key)
    kept = set(_table(out, "samples").filter(pl.col("status") == "keep")["sample_id"])
    assert seen == kept and kept <= set(images)


def test_label_only_samples_carry_their_labels_and_captions(demo_build):
    out, _ = demo_build
    labels = _table(out, "annotations").filter(pl.col("kind") == "label")
    # CheXpert's -1 is kept as 'uncertain', and native names map to the shared vocabulary
    assert "uncertain" in set(labels["value"])
    effusion = labels.filter(pl.col("native") == "Pleural Effusion")
    assert effusion.height and set(effusion["text"]) == {"pleural effusion"}
    captions = _table(out, "captions")
    assert set(captions["generator"]) == {"template"}
    assert set(captions["validation"]) == {"ok"}
    per = captions.group_by("triplet_id", "language").len()
    assert set(per["len"]) == {5}
    # the MSD tumour slices carry the mask's label names
    msd = labels.filter(pl.col("source_id") == "demo_msd_liver")
    assert {"liver", "cancer"} <= set(msd["text"])


def test_splits_keep_each_patient_in_one_split(demo_build):
    out, _ = demo_build
    images = _table(out, "images").filter(pl.col("patient_key").is_not_null())
    per_patient = images.group_by("source_id", "patient_key").agg(pl.col("split").n_unique())
    assert per_patient["split"].max() == 1
    # CheXpert's official split: valid.csv -> val
    chex = _table(out, "images").filter(pl.col("source_id") == "demo_chexpert")
    assert set(chex.filter(pl.col("original_uri").str.starts_with("valid/"))["split"]) == {"val"}


def test_no_header_identifiers_reach_the_index_or_shards(demo_build):
    out, _ = demo_build
    # identifiers in the pydicom files and the NIfTI descrip field the demo writes
    needles = [b"CompressedSamples", b"1CT1", b"4MR1", b"8NM1", b"Jane Doe", b"2019-03-04"]
    files = [p for p in out.rglob("*") if p.is_file() and "blobs" not in p.parts]
    assert any(p.suffix == ".tar" for p in files) and any(p.suffix == ".parquet" for p in files)
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".parquet":
            data = json.dumps(pl.read_parquet(path).to_dicts(), default=str).encode()
        for needle in needles:
            assert needle not in data, (needle, path)


def test_second_build_gives_byte_identical_shards(demo_build, demo_recipe_path, tmp_path):
    out, _ = demo_build
    again = tmp_path / "again"
    run_build(load_recipe(demo_recipe_path), str(again), progress=False)
    first = sorted(p.relative_to(out) for p in (out / "shards").rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in (again / "shards").rglob("*") if p.is_file())
    assert first == second
    for rel in first:
        assert timeless(rel, (out / rel).read_bytes()) == timeless(rel, (again / rel).read_bytes()), rel


def test_rerun_skips_everything_and_changes_nothing(demo_recipe_path, tmp_path):
    out = tmp_path / "corpus"
    run_build(load_recipe(demo_recipe_path), str(out), progress=False)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    report = run_build(load_recipe(demo_recipe_path), str(out), progress=False)
    assert all(r.skipped for r in report.sources) and report.caption.skipped and report.shard.skipped
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert before == after


def test_a_lost_shard_is_rewritten_identically(demo_recipe_path, tmp_path):
    out = tmp_path / "corpus"
    report = run_build(load_recipe(demo_recipe_path), str(out), progress=False)
    victim = out / report.shard.shards[0].url
    original = victim.read_bytes()
    victim.unlink()
    report2 = run_build(load_recipe(demo_recipe_path), str(out), progress=False)
    assert not report2.shard.skipped
    assert victim.read_bytes() == original


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_wids_index_lists_every_shard_of_its_split(demo_build, split):
    out, report = demo_build
    index = json.loads((out / "shards" / f"{split}.wids.json").read_text())
    assert index["__kind__"] == "wids-shard-index-v1"
    listed = {e["url"]: e for e in index["shardlist"]}
    expected = [s for s in report.shard.shards if s.split == split]
    assert len(listed) == len(expected)
    for s in expected:
        entry = listed[s.url.removeprefix("shards/")]
        data = (out / s.url).read_bytes()
        assert entry["filesize"] == len(data)
        assert entry["md5sum"] == hashlib.md5(data).hexdigest()
        assert entry["nsamples"] == s.nsamples


def test_no_finding_is_dropped_beside_a_positive_finding(demo_build):
    out, _ = demo_build
    labels = set(_table(out, "captions")["label"].drop_nulls())
    multi = [lab for lab in labels if "," in lab]
    assert multi, "the demo has multi-label CheXpert rows"
    assert not [lab for lab in multi if "no finding" in lab.split(", ")]
    assert "no finding" in labels  # alone it stays
    en = _table(out, "captions").filter(pl.col("anatomy") == "unspecified", pl.col("language") == "en")
    assert en.height and not any("the unspecified" in c for c in en["caption"])


def test_template_captions_read_as_written_text(demo_build):
    captions = _table(demo_build[0], "captions")
    en = captions.filter(pl.col("language") == "en")["caption"].to_list()
    assert en and all(c[0].isupper() for c in en), [c for c in en if not c[0].isupper()]
    # Chinese captions carry Chinese terms, not English words left untranslated
    zh = captions.filter(pl.col("language") == "zh")["caption"].to_list()
    assert zh and not [c for c in zh if re.search(r"[a-z]{3,}", c)]
