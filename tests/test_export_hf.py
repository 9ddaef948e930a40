"""`curator export hf`: the real `datasets` library loads the export with no `features=`, normal and streaming."""

from __future__ import annotations

import hashlib
import io
import os

import fsspec
import polars as pl
import pyarrow.parquet as pq
import pytest
from helpers import run
from PIL import Image

from curator.exports.hf import SCHEMA, export_hf, hf_features
from curator.storage import Corpus
from curator.tables import connect, rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read by huggingface_hub at import: no hub, ever
datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def hf_export(demo_build, tmp_path_factory):
    out, _ = demo_build
    to = tmp_path_factory.mktemp("hf") / "demo-hf"
    result = run("export", "hf", "--out", out, "--to", to, "--quiet")
    assert result.exit_code == 0, result.output
    return out, to


def _kept(out) -> dict[str, dict]:
    con = connect(Corpus(str(out)))
    return {
        r["sample_id"]: r
        for r in rows(
            con,
            "SELECT s.sample_id, s.split, i.image_sha256, i.width, i.height, i.source_id FROM samples s "
            "JOIN images i USING (sample_id) WHERE s.status = 'keep'",
        )
    }


def _validated_captions(out) -> dict[str, int]:
    from curator.stages.caption import sample_triplets

    con = connect(Corpus(str(out)))
    per_triplet = dict(
        con.execute("SELECT triplet_id, count(*) FROM captions WHERE validation = 'ok' GROUP BY ALL").fetchall()
    )
    return {sid: per_triplet.get(t.id, 0) for sid, t in sample_triplets(Corpus(str(out))).items()}


def test_load_dataset_reads_every_split_typed_without_features(hf_export, tmp_path):
    out, to = hf_export
    kept, n_captions = _kept(out), _validated_captions(out)
    ds = datasets.load_dataset(str(to), cache_dir=str(tmp_path / "cache"))
    assert set(ds) == {r["split"] for r in kept.values()}
    features = ds["train"].features
    assert isinstance(features["image"], datasets.Image)
    assert features["width"] == datasets.Value("int32")
    assert features["sources"] == datasets.List(datasets.Value("string"))
    assert features["labels"] == datasets.List(
        {k: datasets.Value("string") for k in ("label", "value", "native", "source_id")}
        | {"boxes": datasets.List({k: datasets.Value("float64") for k in ("x0", "y0", "x1", "y1")})}
        | {"payload": datasets.Value("string")}
    )
    assert features == datasets.Features.from_arrow_schema(SCHEMA) | {"image": datasets.Image()}
    seen = set()
    for split, part in ds.items():
        assert part.info.splits[split].num_examples == part.num_rows
        for row in part:
            sid = row["sample_id"]
            want = kept[sid]
            assert row["split"] == want["split"] == split and sid not in seen
            seen.add(sid)
            image = row["image"]
            assert isinstance(image, Image.Image) and image.size == (want["width"], want["height"])
            assert row["source_id"] == want["source_id"] and want["source_id"] in row["sources"]
            assert row["license"] and row["original_uri"]
            assert len(row["captions"]) == n_captions.get(sid, 0)
            assert all(c["generator"] and c["prompt_sha256"] for c in row["captions"])
    assert seen == set(kept)
    raw = ds["val"].cast_column("image", datasets.Image(decode=False))
    for row in raw:
        assert hashlib.sha256(row["image"]["bytes"]).hexdigest() == kept[row["sample_id"]]["image_sha256"]
        assert row["image"]["path"].startswith(row["sample_id"] + ".")


def test_streaming_reads_every_split_with_the_same_rows(hf_export, tmp_path):
    out, to = hf_export
    kept = _kept(out)
    streamed = datasets.load_dataset(str(to), streaming=True)
    assert set(streamed) == {r["split"] for r in kept.values()}
    for split, part in streamed.items():
        assert isinstance(part.features["image"], datasets.Image)
        ids = []
        for row in part:
            assert row["split"] == split
            assert row["image"].size == (kept[row["sample_id"]]["width"], kept[row["sample_id"]]["height"])
            ids.append(row["sample_id"])
        assert ids == sorted(sid for sid, r in kept.items() if r["split"] == split)


def test_a_label_with_mask_boxes_keeps_them_typed_as_the_index_has_them(hf_export, tmp_path):
    corpus, to = hf_export
    ds = datasets.load_dataset(str(to), cache_dir=str(tmp_path / "cache"))
    notes = pl.read_parquet(str(corpus / "index" / "annotations" / "*.parquet")).filter(pl.col("boxes").is_not_null())
    boxes = {tuple((b["x0"], b["y0"], b["x1"], b["y1"]) for b in bs) for bs in notes["boxes"].to_list()}
    typed = {
        tuple((b["x0"], b["y0"], b["x1"], b["y1"]) for b in lab["boxes"])
        for part in ds.values()
        for row in part
        for lab in row["labels"]
        if lab["boxes"]
    }
    assert typed and typed <= boxes  # the export's typed boxes are the index's, label by label
    assert ds["train"].features["labels"].feature["boxes"] == datasets.List(
        {k: datasets.Value("float64") for k in ("x0", "y0", "x1", "y1")}
    )


def test_the_card_front_matter_is_what_datasets_itself_would_write(hf_export):
    import yaml

    _, to = hf_export
    text = (to / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    ours = front["dataset_info"]["features"]
    assert ours == hf_features()
    theirs = datasets.Features.from_arrow_schema(SCHEMA)._to_yaml_list()
    assert ours[1:] == theirs[1:] and ours[0] == {"name": "image", "dtype": "image"}
    splits = [s["name"] for s in front["dataset_info"]["splits"]]
    assert [c["split"] for c in front["configs"][0]["data_files"]] == splits
    assert "| demo_dicom (" in text and "LicenseRef-pydicom-test-data" in text


def test_export_to_an_fsspec_url_writes_the_same_bytes(demo_build, hf_export):
    out, to = hf_export
    url = "memory://curator-hf-test/export"
    try:
        result = export_hf(Corpus(str(out)), url, progress=False, max_file_bytes=64 * 1024)
        fs = fsspec.filesystem("memory")
        assert len(result.files) > 3  # small files: several per split
        assert all(fs.exists(f"/curator-hf-test/export/{f}") for f in result.files)
        table = pq.read_table(io.BytesIO(fs.cat(f"/curator-hf-test/export/{result.files[0]}")))
        assert table.schema.equals(SCHEMA)
        assert sum(result.splits.values()) == len(_kept(out))
        assert fs.cat("/curator-hf-test/export/README.md").decode().startswith("---\nconfigs:")
    finally:
        fsspec.filesystem("memory").rm("/curator-hf-test", recursive=True)


def test_a_non_empty_target_is_refused_unless_overwrite(hf_export):
    out, to = hf_export
    result = run("export", "hf", "--out", out, "--to", to, "--quiet")
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {to} is not empty: choose an empty folder or pass --overwrite"
    before = sorted(p.name for p in (to / "data").iterdir())
    assert run("export", "hf", "--out", out, "--to", to, "--quiet", "--overwrite").exit_code == 0
    assert sorted(p.name for p in (to / "data").iterdir()) == before


def test_the_transform_is_a_typed_struct_and_captions_come_from_sample_captions(hf_export, tmp_path):
    from curator.schema import transform_dict

    out, to = hf_export
    images = {r["sample_id"]: r for r in pq.read_table(str(out / "index" / "images")).to_pylist()}
    served = {}
    for r in pq.read_table(str(out / "index" / "sample_captions")).to_pylist():
        served.setdefault(r["sample_id"], set()).add(r["triplet_id"])
    ds = datasets.load_dataset(str(to), cache_dir=str(tmp_path / "cache"))
    transform = ds["train"].features["transform"]
    assert transform["encode"]["bit_depth"] == datasets.Value("int8")
    assert transform["window"]["centre"] == datasets.Value("float64")
    for part in ds.values():
        for row in part:
            assert transform_dict(row["transform"]) == transform_dict(images[row["sample_id"]]["transform"])
            assert row["transform"]["encode"]["format"] == row["image_format"]
            # a sample's triplet is the one sample_captions names; none without a validated caption
            assert ({row["triplet_id"]} if row["captions"] else set()) == served.get(row["sample_id"], set())
