"""Object storage: the whole build to s3:// on a real S3-compatible server on loopback (moto's server
mode, as s3fs's own tests use), read back through the loader, and a sharding run killed mid-upload
that resumes.

Credentials and the endpoint reach s3fs only through the standard AWS_* environment variables;
nothing here talks to a real network.
"""

from __future__ import annotations

import hashlib
import json
import os

import fsspec
import pytest
from click.testing import CliRunner
from helpers import Killed, loopback_s3, timeless

from curator import storage
from curator.cli import main
from curator.config import load_recipe
from curator.executors import make_executor
from curator.loader import iterate_records, shard_urls, webdataset_loader, wids_dataset
from curator.stages.shard import run_shard
from curator.stages.shard import work as shard_work
from curator.storage import LOCK, Corpus, LockedError, writer_lock

BUCKET = "curator-test"
# Distinctive dummy credentials: a test greps every stored object for them.
ACCESS_KEY = "AKIACURATORTESTKEY01"
SECRET_KEY = "curator-dummy-secret-5b1e7c0d9f"


@pytest.fixture(scope="session")
def s3_endpoint():
    """One moto S3 server per session on 127.0.0.1 (~1 s to start), with the AWS_* environment set."""
    with loopback_s3(BUCKET, ACCESS_KEY, SECRET_KEY) as (endpoint, _):
        yield endpoint


@pytest.fixture(scope="session")
def s3_build(s3_endpoint, demo_recipe_path):
    """`curator build --out s3://...` of the demo, through the CLI."""
    url = f"s3://{BUCKET}/demo"
    result = CliRunner().invoke(
        main, ["build", "--recipe", str(demo_recipe_path), "--out", url, "--quiet"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return url, result.output


def _objects(prefix: str) -> dict[str, bytes]:
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return {p: fs.cat_file(p) for p in fs.find(prefix)}


def test_build_to_s3_gives_the_same_shards_as_a_local_build(s3_build, demo_build):
    url, output = s3_build
    local, _ = demo_build
    assert "written to s3://" in output
    objects = _objects(f"{BUCKET}/demo")
    prefix = f"{BUCKET}/demo/"
    rels = {p.removeprefix(prefix) for p in objects}
    # ingest wrote its tables, blobs and markers through the same Corpus
    assert any(r.startswith("index/images/part-") for r in rels) and any(r.startswith("blobs/") for r in rels)
    assert not [r for r in rels if "/.tmp-" in r], "temporary names left behind"
    local_shards = sorted(p.relative_to(local).as_posix() for p in (local / "shards").rglob("*") if p.is_file())
    assert local_shards == sorted(r for r in rels if r.startswith("shards/"))
    for rel in local_shards:
        assert timeless(rel, objects[prefix + rel]) == timeless(rel, (local / rel).read_bytes()), rel


def test_no_secret_is_written_anywhere(s3_build):
    for path, data in _objects(f"{BUCKET}/demo").items():
        assert SECRET_KEY.encode() not in data and ACCESS_KEY.encode() not in data, path
    assert SECRET_KEY not in s3_build[1]


def _expected(url: str, split: str) -> dict[str, dict]:
    manifest = Corpus(url).read_table("shards").to_pylist()
    return {r["key"]: r for r in manifest if r["split"] == split and r["mixture"] is None}


def test_loader_streams_every_sample_back_from_s3(s3_build):
    url, _ = s3_build
    images = {r["sample_id"]: r for r in Corpus(url).read_table("images").to_pylist()}
    for split in ("train", "val"):
        expected = _expected(url, split)
        urls = shard_urls(f"{url}/shards", split)
        assert all(u.startswith("s3://") for u in urls)
        seen = {}
        for rec in iterate_records(webdataset_loader(urls, batch_size=4, num_workers=2)):
            assert rec["key"] not in seen
            seen[rec["key"]] = rec
        assert set(seen) == set(expected)
        for key, rec in seen.items():
            row = expected[key]
            assert rec["url"].endswith(row["shard_url"])
            assert hashlib.sha256(rec["image"]).hexdigest() == images[row["sample_id"]]["image_sha256"]
            assert rec["meta"]["sample_id"] == row["sample_id"]


def test_wids_reads_every_sample_from_s3_through_the_index(s3_build, tmp_path):
    url, _ = s3_build
    expected = _expected(url, "train")
    ds = wids_dataset(f"{url}/shards", "train", cache_dir=str(tmp_path / "wids-cache"))
    assert len(ds) == len(expected)
    keys = [ds[i]["key"] for i in range(len(ds))]
    assert sorted(keys) == sorted(expected)
    assert any((tmp_path / "wids-cache").iterdir())


def _copy_index(src: str, dst: str) -> None:
    fs = fsspec.filesystem("s3")
    for part in ("index", "blobs", "_markers/ingest", "_markers/index", "_markers/caption"):
        fs.copy(f"{src}/{part}", f"{dst}/{part}", recursive=True)
    for rel in ("index/shards",):
        fs.rm(f"{dst}/{rel}", recursive=True)


def test_a_killed_upload_resumes_keeping_shards_that_verify(s3_build, demo_recipe_path, demo_build, monkeypatch):
    src, _ = s3_build
    dst = f"s3://{BUCKET}/killed"
    _copy_index(src.removeprefix("s3://"), dst.removeprefix("s3://"))
    settings = load_recipe(demo_recipe_path).shard
    corpus = Corpus(dst)

    finished, reads_since = 0, 0
    real_read, real_marker = shard_work.read_blobs, Corpus.set_marker

    def counting_marker(self, stage, unit, payload):
        nonlocal finished, reads_since
        real_marker(self, stage, unit, payload)
        if stage == "shard":
            finished, reads_since = finished + 1, 0

    def dying_read(corpus, refs):
        nonlocal reads_since
        reads_since += 1
        if finished == 2 and reads_since == 4:  # in the middle of the third shard's upload
            raise Killed
        return real_read(corpus, refs)

    monkeypatch.setattr(Corpus, "set_marker", counting_marker)
    monkeypatch.setattr(shard_work, "READ_BATCH", 1)  # one blob per read: the kill lands between members
    monkeypatch.setattr(shard_work, "read_blobs", dying_read)
    with pytest.raises(Killed):
        run_shard(corpus, settings, "demo", progress=False, executor=make_executor("serial"))
    monkeypatch.setattr(shard_work, "read_blobs", real_read)

    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    stored = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{BUCKET}/killed/shards") if p.endswith(".tar"))
    assert stored == ["demo-train-000000.tar", "demo-train-000001.tar"], "a half-written shard became visible"
    assert corpus.marker("shard", "all") is None

    # damage one finished shard: the resume must notice by re-hashing, not trust the marker
    first = f"{BUCKET}/killed/shards/train/demo-train-000000.tar"
    data = bytearray(fs.cat_file(first))
    data[700] ^= 0xFF
    fs.pipe_file(first, bytes(data))

    result = run_shard(Corpus(dst), settings, "demo", progress=False)
    kept = {s.url for s in result.shards if s.kept}
    assert kept == {"shards/train/demo-train-000001.tar"}
    local, _ = demo_build
    for s in result.shards:
        assert fs.cat_file(f"{BUCKET}/killed/{s.url}") == (local / s.url).read_bytes(), s.url
    index = json.loads(fs.cat_file(f"{BUCKET}/killed/shards/train.wids.json"))
    assert [e["url"] for e in index["shardlist"]] == [
        s.url.removeprefix("shards/") for s in result.shards if s.split == "train"
    ]


def test_a_missing_bucket_is_one_clear_line(s3_endpoint, demo_recipe_path):
    result = CliRunner().invoke(
        main, ["build", "--recipe", str(demo_recipe_path), "--out", "s3://no-such-bucket/demo", "--quiet"]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: s3://no-such-bucket/demo: bucket 'no-such-bucket' not found")
    assert len(result.stderr.strip().splitlines()) == 1


def test_endpoint_from_fsspec_config_instead_of_aws_endpoint_url(s3_build, monkeypatch):
    """fsspec's own configuration (~/.config/fsspec/*.json or FSSPEC_S3_* variables) is the other standard place."""
    url, _ = s3_build
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    fsspec.filesystem("s3").clear_instance_cache()
    try:
        assert len(shard_urls(f"{url}/shards", "train")) >= 2
        assert Corpus(url).read_table("shards").num_rows > 0
    finally:
        fsspec.filesystem("s3").clear_instance_cache()


def test_a_failed_multipart_upload_is_aborted_not_committed(s3_endpoint, monkeypatch):
    """A shard bigger than one upload part: parts reach the server, but the object never appears."""
    corpus = Corpus(f"s3://{BUCKET}/mpu")
    monkeypatch.setattr(corpus.fs, "default_block_size", 5 * 1024**2)  # S3's smallest part
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with pytest.raises(Killed), corpus.open_atomic("shards/train/big.tar") as fh:
        for _ in range(11):
            fh.write(chunk)
        assert fh.mpu is not None and len(fh.parts) == 2, "the upload should be under way"
        raise Killed
    fs = corpus.fs
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/mpu/shards/train/big.tar")
    assert not [u for u in fs.list_multipart_uploads(BUCKET) if u["Key"].startswith("mpu/")]

    with corpus.open_atomic("shards/train/big.tar") as fh:
        for _ in range(11):
            fh.write(chunk)
    assert corpus.size("shards/train/big.tar") == 11 * len(chunk)


def test_the_writer_lock_is_a_lease_object_written_by_conditional_put(s3_endpoint):
    url = f"s3://{BUCKET}/leased"
    first = Corpus(url)
    with writer_lock(first, "build a"):
        assert first.exists(LOCK)
        with pytest.raises(LockedError, match="'build a' by .* since "):
            # another process would not share this one's re-entrant state: forget it for the attempt
            held = storage._held.pop(first.path(LOCK))
            try:
                with writer_lock(Corpus(url), "build b"):
                    pass
            finally:
                storage._held[first.path(LOCK)] = held
    assert not Corpus(url).exists(LOCK)
