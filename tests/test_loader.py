"""The training-side helpers read every sample of the demo shards back and agree with the index."""

from __future__ import annotations

import hashlib
import io
import json

import polars as pl
import pytest
import torch
from PIL import Image

from curator.loader import (
    iterate_records,
    read_classes,
    read_index,
    shard_urls,
    webdataset,
    webdataset_loader,
    wids_dataset,
)


def _manifest(out, split):
    rows = pl.read_parquet(str(out / "index" / "shards" / "*.parquet")).filter(pl.col("split") == split)
    return {r["key"]: r for r in rows.iter_rows(named=True)}


def _images(out):
    return {
        r["sample_id"]: r for r in pl.read_parquet(str(out / "index" / "images" / "*.parquet")).iter_rows(named=True)
    }


def _check(rec, row, image, classes):
    assert rec["key"] == row["key"] and "." not in rec["key"]
    assert hashlib.sha256(rec["image"]).hexdigest() == image["image_sha256"]
    assert rec["image_format"] == ("png" if image["image_format"] == "png" else "jpg")
    assert rec["meta"]["sample_id"] == row["sample_id"] == image["sample_id"]
    assert sorted(f"{rec['key']}.{m.rsplit('.', 1)[1]}" for m in row["members"]) == sorted(row["members"])
    labels = {lab["label"] for lab in rec["meta"]["labels"]}
    if rec["cls"] >= 0:
        assert labels == {classes[rec["cls"]]}
        assert f"{rec['key']}.cls" in row["members"]
    else:
        assert f"{rec['key']}.cls" not in row["members"]
    assert isinstance(rec["text"], str) and rec["text"]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_dataloader_with_workers_reads_every_sample_once(demo_build, split):
    out, _ = demo_build
    manifest, images = _manifest(out, split), _images(out)
    classes = read_classes(str(out / "shards"))
    urls = shard_urls(str(out / "shards"), split)
    seen = {}
    for rec in iterate_records(webdataset_loader(urls, batch_size=5, num_workers=2)):
        assert rec["key"] not in seen, "a sample came twice"
        seen[rec["key"]] = rec
    assert set(seen) == set(manifest)
    for key, rec in seen.items():
        _check(rec, manifest[key], images[manifest[key]["sample_id"]], classes)
        assert rec["url"].endswith(manifest[key]["shard_url"])


def test_the_demo_has_class_indexes_for_single_label_sources(demo_build):
    out, _ = demo_build
    classes = read_classes(str(out / "shards"))
    assert classes == sorted(classes) and "no finding" in classes
    rows = pl.read_parquet(str(out / "index" / "shards" / "*.parquet"))
    with_cls = rows.filter(pl.col("members").list.eval(pl.element().str.ends_with(".cls")).list.any())
    assert set(with_cls["sample_id"].str.split("-").list.first()) == {"demo_radimagenet"}


def test_pipe_urls_and_a_transform_to_tensors(demo_build):
    out, _ = demo_build
    urls = [f"pipe:cat {u}" for u in shard_urls(str(out / "shards"), "val")]

    def to_tensor(rec):
        with Image.open(io.BytesIO(rec["image"])) as im:
            im = im.convert("L").resize((32, 32))
            return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(1, 32, 32), rec["cls"]

    loader = webdataset_loader(urls, batch_size=4, num_workers=2, transform=to_tensor, collate_fn=None)
    total = 0
    for batch in loader:
        assert isinstance(batch, list)
        total += len(batch)
    n = sum(e["nsamples"] for e in read_index(str(out / "shards"), "val")["shardlist"])
    assert total == n
    # torch's default collate works once the transform gives one shape
    from torch.utils.data import DataLoader, default_collate

    images, cls = next(
        iter(DataLoader(webdataset(urls, transform=to_tensor), batch_size=3, collate_fn=default_collate))
    )
    assert images.shape == (3, 1, 32, 32) and cls.dtype == torch.int64


@pytest.mark.parametrize("split", ["train", "test"])
def test_wids_reads_every_sample_through_the_shard_index(demo_build, split):
    out, _ = demo_build
    manifest, images = _manifest(out, split), _images(out)
    classes = read_classes(str(out / "shards"))
    index = json.loads((out / "shards" / f"{split}.wids.json").read_text())
    ds = wids_dataset(str(out / "shards"), split)
    assert len(ds) == sum(e["nsamples"] for e in index["shardlist"]) == len(manifest)
    keys = []
    for i in range(len(ds)):
        rec = ds[i]
        keys.append(rec["key"])
        _check(rec, manifest[rec["key"]], images[manifest[rec["key"]]["sample_id"]], classes)
    assert sorted(keys) == sorted(manifest)
    # random access: the wids order is the tar order, shard by shard, as the index lists them
    start = 0
    for entry in index["shardlist"]:
        in_tar_order = [k for k, r in manifest.items() if r["shard_url"] == f"shards/{entry['url']}"]
        assert keys[start : start + entry["nsamples"]] == in_tar_order
        start += entry["nsamples"]


def test_remote_shards_get_spawned_workers_local_ones_keep_the_default():
    from curator.loader import webdataset_loader

    remote = webdataset_loader(["s3://bucket/shards/train/a-000000.tar"], num_workers=2)
    assert remote.multiprocessing_context.get_start_method() == "spawn"
    assert webdataset_loader(["/data/a-000000.tar"], num_workers=2).multiprocessing_context is None
    chosen = webdataset_loader(["s3://b/a.tar"], num_workers=2, multiprocessing_context="forkserver")
    assert chosen.multiprocessing_context.get_start_method() == "forkserver"
