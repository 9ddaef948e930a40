"""`curator export llava`: the files load the way LLaVA's and InternVL's dataset classes load them.

The two loaders below follow the trainers' own code paths (neither package is a
dependency): LLaVA's ``LazySupervisedDataset`` (``json.load(open(data_path))``, the
image opened from ``os.path.join(image_folder, item["image"])`` and converted to RGB,
``preprocess_multimodal`` moving the ``<image>`` token to the front, ``preprocess``
asserting that roles alternate human/gpt; one image means exactly one token, or
``tokenizer_image_token`` would splice in a second image) and InternVL's
(``meta[name]["annotation"]`` read with ``readlines()``, ``length`` and
``repeat_time`` from the meta file, images from ``os.path.join(meta["root"], item["image"])``,
``<image>`` expected in the first human turn).
"""

from __future__ import annotations

import json
import os

import fsspec
import polars as pl
from helpers import run
from PIL import Image

from curator.exports.llava import export_llava
from curator.storage import Corpus

IMAGE = "<image>"


def load_like_llava(data_path: str, image_folder: str) -> list[dict]:
    items = json.load(open(data_path))  # noqa: SIM115 (as LLaVA does)
    for item in items:
        Image.open(os.path.join(image_folder, item["image"])).convert("RGB")
        conversations = item["conversations"]
        assert sum(t["value"].count(IMAGE) for t in conversations) == 1
        assert conversations[0]["value"].startswith(IMAGE + "\n")
        roles = {"human": "USER", "gpt": "ASSISTANT"}
        for j, turn in enumerate(conversations):
            assert roles[turn["from"]] == ("USER", "ASSISTANT")[j % 2]
            assert turn["value"].replace(IMAGE, "").strip()
    return items


def load_like_internvl(meta_path: str) -> dict[str, list[dict]]:
    out = {}
    for name, meta in json.load(open(meta_path)).items():  # noqa: SIM115
        with open(meta["annotation"]) as f:
            raw = f.readlines()
        assert len(raw) == meta["length"] and meta["repeat_time"] == 1
        items = [json.loads(line) for line in raw]
        for item in items:
            with Image.open(os.path.join(meta["root"], item["image"])) as im:
                im.convert("RGB")
            assert IMAGE in item["conversations"][0]["value"]
            assert [t["from"] for t in item["conversations"]] == ["human", "gpt"] * (len(item["conversations"]) // 2)
        out[name] = items
    return out


def test_export_loads_in_llava_and_internvl(demo_build, tmp_path):
    out, _ = demo_build
    dest = tmp_path / "llava"
    result = run("export", "llava", "--out", out, "--to", dest, "-q")
    assert result.exit_code == 0, result.output
    entries = pl.read_parquet(str(out / "index" / "instructions" / "*.parquet"))
    turns = 0
    for split in ("train", "val", "test"):
        items = load_like_llava(str(dest / f"{split}.json"), str(dest))
        assert {i["id"].split("-zh")[0] for i in items} == set(entries.filter(pl.col("split") == split)["sample_id"])
        turns += sum(len(i["conversations"]) for i in items)
    assert turns == 2 * entries.height  # every entry once, as one human and one gpt turn
    internvl = load_like_internvl(str(dest / "internvl_meta.json"))
    assert sorted(internvl) == ["curator_test", "curator_train", "curator_val"]
    assert internvl["curator_train"] == json.load(open(dest / "train.json"))  # noqa: SIM115
    assert "entries in records by split" in result.output


def test_per_entry_layout(demo_build, tmp_path):
    out, _ = demo_build
    dest = tmp_path / "entries"
    result = export_llava(Corpus(str(out)), str(dest), per="entry", splits=("val",), progress=False)
    assert result.images > 0 and list(result.records) == ["val"]
    items = load_like_llava(str(dest / "val.json"), str(dest))
    val = pl.read_parquet(str(out / "index" / "instructions" / "*.parquet")).filter(pl.col("split") == "val")
    assert sorted(i["id"] for i in items) == sorted(val["entry_id"])
    assert all(len(i["conversations"]) == 2 for i in items)
    load_like_internvl(str(dest / "internvl_meta.json"))


def test_an_image_root_on_a_packed_corpus_is_one_line(demo_build, tmp_path):
    # packed blobs (curator.blobs) have no file per image for a trainer to open in place
    out, _ = demo_build
    result = run("export", "llava", "--out", out, "--to", tmp_path / "x", "--image-root", out)
    assert result.exit_code == 1 and "keeps its images in packs" in result.output
    assert "export without --image-root" in result.output and not (tmp_path / "x").exists()


def test_export_writes_through_fsspec(demo_build):
    out, _ = demo_build
    result = export_llava(
        Corpus(str(out)), "memory://llava-export", splits=("test",), languages=("en",), progress=False
    )
    fs = fsspec.filesystem("memory")
    items = json.loads(fs.cat("/llava-export/test.json"))
    assert len(items) == result.records["test"] and items
    for item in items:
        assert fs.exists(f"/llava-export/{item['image']}")
        assert not item["id"].endswith("-zh")
    meta = json.loads(fs.cat("/llava-export/internvl_meta.json"))
    assert meta["curator_test"]["annotation"] == "memory:///llava-export/test.jsonl"


def test_export_without_instructions_is_one_line(tmp_path, demo_build):
    from helpers import copy_corpus

    out, _ = demo_build
    bare = copy_corpus(out, tmp_path / "bare")
    for p in (bare / "index" / "instructions").glob("*"):
        p.unlink()
    result = run("export", "llava", "--out", bare, "--to", tmp_path / "x")
    assert result.exit_code == 1
    assert "has no 'instructions' table: run `curator instruct`" in result.output


def test_an_image_root_without_blobs_is_one_line(demo_build, tmp_path):
    out, _ = demo_build
    result = run("export", "llava", "--out", out, "--to", tmp_path / "x", "--image-root", tmp_path)
    assert result.exit_code == 1 and "has no blobs/ folder" in result.output
