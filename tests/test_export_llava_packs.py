"""`curator export llava` reads its images a pack-ordered batch at a time, each image once (#9 item 5)."""

from __future__ import annotations

import hashlib
import json

from curator.exports import llava
from curator.exports.llava import export_llava
from curator.storage import Corpus


def test_images_are_read_in_pack_order_in_few_batches_and_copied_whole(demo_build, tmp_path, monkeypatch):
    out, _ = demo_build
    calls = []
    real = llava.read_blobs

    def counted(corpus, refs):
        calls.append(list(refs))
        return real(corpus, refs)

    monkeypatch.setattr(llava, "read_blobs", counted)
    monkeypatch.setattr(llava, "IMAGE_BATCH", 8)
    dest = tmp_path / "llava"
    result = export_llava(Corpus(str(out)), str(dest), progress=False)

    refs = [r for call in calls for r in call]
    assert result.images == len(refs) == len({r.sha256 for r in refs}) > 8  # each image read once
    assert len(calls) == -(-result.images // 8) and all(len(c) <= 8 for c in calls)
    assert all(r.pack for r in refs), "an image was read without its pack location"
    places = [(r.pack, r.offset) for r in refs]
    assert places == sorted(places), "images not read in pack order"
    files = sorted((dest / "images").rglob("*.*"))
    assert len(files) == result.images
    for f in files:
        assert hashlib.sha256(f.read_bytes()).hexdigest() == f.stem
    named = {
        item["image"] for split in ("train", "val", "test") for item in json.loads((dest / f"{split}.json").read_text())
    }
    assert named == {str(f.relative_to(dest)) for f in files}


def test_a_split_filter_copies_only_that_splits_images(demo_build, tmp_path):
    out, _ = demo_build
    dest = tmp_path / "val"
    result = export_llava(Corpus(str(out)), str(dest), splits=("val",), progress=False)
    named = {item["image"] for item in json.loads((dest / "val.json").read_text())}
    assert len(named) == result.images == len(list((dest / "images").rglob("*.*"))) > 0
