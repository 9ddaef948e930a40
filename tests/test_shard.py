"""Sharding: sizing, balance, mixtures and weights, tar bytes, class index, resume on a local disk."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import polars as pl
import pytest
import webdataset as wds
from helpers import Killed, copy_corpus

from curator.config import Mixture, ShardSettings, load_recipe
from curator.errors import CuratorError, RecipeError
from curator.stages.shard import (
    TAR_MTIME,
    _tar_header,
    _tar_header_slow,
    _write_shard,
    build_samples,
    expand,
    plan_shards,
    repeat_key,
    run_shard,
    sample_id_of,
    shard_counts,
)
from curator.storage import Corpus


@pytest.fixture
def corpus_copy(demo_build, tmp_path):
    """The demo's index and blobs without its shards: a corpus to shard with other settings."""
    return copy_corpus(demo_build[0], tmp_path / "corpus", done=("ingest", "index", "caption"))


# -- sizing ---------------------------------------------------------------------------
def test_counts_are_balanced_and_a_multiple_of_n():
    counts = shard_counts([1000] * 1003, ShardSettings(max_samples=100, multiple_of=8))
    assert len(counts) == 16 and sum(counts) == 1003
    assert max(counts) - min(counts) <= 1


def test_byte_target_sets_the_shard_count():
    sizes = [3000] * 100  # 300 kB in all
    counts = shard_counts(sizes, ShardSettings(max_bytes=64 * 1024))
    assert len(counts) == 5 and sum(counts) == 100
    assert all(c * 3000 + 1024 <= 64 * 1024 for c in counts)


def test_uneven_sizes_grow_the_count_until_every_shard_fits():
    sizes = [100_000] * 10 + [1000] * 90
    counts = shard_counts(sizes, ShardSettings(max_bytes=300_000, multiple_of=2))
    assert len(counts) % 2 == 0
    start = 0
    for c in counts:
        assert sum(sizes[start : start + c]) + 1024 <= 300_000
        start += c


def test_fewer_samples_than_n_warns_and_still_writes_them(caplog):
    counts = shard_counts([10] * 3, ShardSettings(multiple_of=8), "test")
    assert counts == [3]
    assert "fewer than multiple_of=8" in caplog.text


def test_default_target_is_in_the_range_webdataset_recommends():
    assert 256 * 1024**2 <= ShardSettings().max_bytes <= 1024**3
    assert ShardSettings(max_bytes="300MiB").max_bytes == 300 * 1024**2


# -- weights ---------------------------------------------------------------------------
def _fake(n_a: int, n_b: int) -> dict[str, dict]:
    samples = {}
    for src, n in (("a", n_a), ("b", n_b)):
        for i in range(n):
            samples[f"{src}-{i:016x}"] = {"split": "train", "source_ids": [src], "size": 10}
    return samples


def test_weights_up_and_down_sample_exactly_with_distinct_keys():
    samples = _fake(10, 20)
    mixture = Mixture(weights={"a": 2.5, "b": 0.25})
    settings = ShardSettings(seed=7)
    keys = expand(sorted(samples), samples, mixture, settings, "m", "train")
    per_source = Counter(sid.split("-")[0] for _, sid in keys)
    assert per_source == {"a": 25, "b": 5}
    assert len({k for k, _ in keys}) == len(keys)
    for key, sid in keys:
        assert "." not in key and sample_id_of(key) == sid
    copies = Counter(sid for _, sid in keys if sid.startswith("a"))
    assert sorted(Counter(copies.values()).items()) == [(2, 5), (3, 5)]
    thrice = next(sid for sid, n in copies.items() if n == 3)
    assert {k for k, sid in keys if sid == thrice} == {thrice, repeat_key(thrice, 1), repeat_key(thrice, 2)}
    assert keys == expand(sorted(samples), samples, mixture, settings, "m", "train"), "not deterministic"
    other = expand(sorted(samples), samples, mixture, ShardSettings(seed=8), "m", "train")
    assert other != keys and len(other) == len(keys)


def test_weights_leave_val_and_test_alone():
    samples = _fake(4, 4)
    keys = expand(sorted(samples), samples, Mixture(weights={"a": 3}), ShardSettings(), None, "val")
    assert [k for k, _ in keys] == sorted(samples)


def test_zero_weight_drops_a_source():
    samples = _fake(4, 4)
    keys = expand(sorted(samples), samples, Mixture(weights={"a": 0}), ShardSettings(), None, "train")
    assert {sid.split("-")[0] for _, sid in keys} == {"b"}


# -- tar bytes -------------------------------------------------------------------------
def test_hand_written_tar_is_byte_identical_to_tarfile(corpus_copy):
    corpus = Corpus(str(corpus_copy))
    samples = build_samples(corpus, ShardSettings())
    ids = sorted(samples)[:7]
    keys = [(sid, sid) for sid in ids] + [(repeat_key(ids[0], 1), ids[0])]
    size, _, _ = _write_shard(corpus, "x.tar", keys, samples)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for key, sid in keys:
            for ext, data in samples[sid]["members"]:
                data = corpus.read_bytes(samples[sid]["blob"]) if data is None else data
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode, info.uid, info.gid = len(data), TAR_MTIME, 0o444, 0, 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    assert (corpus_copy / "x.tar").read_bytes() == buf.getvalue()
    assert size == len(buf.getvalue())
    with tarfile.open(corpus_copy / "x.tar") as tar:
        assert all(m.mtime == TAR_MTIME and m.uname == "" for m in tar.getmembers())


@pytest.mark.parametrize(
    "name,size", [("demo_x-0123456789abcdef.png", 12345), ("a.json", 0), ("x" * 100, 5), ("é-k.txt", 8**11 - 1)]
)
def test_fast_tar_header_matches_tarfile(name, size):
    assert _tar_header(name, size) == _tar_header_slow(name, size)


def test_a_key_too_long_for_ustar_is_a_clear_error():
    with pytest.raises(CuratorError, match="over USTAR's 100 bytes"):
        _tar_header("k" * 97 + ".json", 1)


# -- mixtures end to end ---------------------------------------------------------------
def test_named_mixtures_weights_and_multiple_of(corpus_copy, demo_recipe_path):
    settings = load_recipe(demo_recipe_path).shard.model_copy(
        update={
            "multiple_of": 4,
            "max_samples": 100,
            "mixtures": {
                "captions": Mixture(weights={"demo_rocov2": 3.0, "demo_zh_captions": 2.0}, default_weight=0.5),
                "labels": Mixture(weights={"demo_rocov2": 0, "demo_zh_captions": 0}, splits=["train"]),
            },
        }
    )
    corpus = Corpus(str(corpus_copy))
    result = run_shard(corpus, settings, "demo", progress=False)
    manifest = pl.read_parquet(str(corpus_copy / "index" / "shards" / "*.parquet"))
    images = pl.read_parquet(str(corpus_copy / "index" / "images" / "*.parquet"))
    source_of = dict(zip(images["sample_id"], images["source_id"], strict=True))

    for mixture in (None, "captions", "labels"):
        shards = [s for s in result.shards if s.mixture == mixture]
        train = [s for s in shards if s.split == "train"]
        assert len(train) % 4 == 0
        assert max(s.nsamples for s in train) - min(s.nsamples for s in train) <= 1
        # every train shard mixes sources
        rows = manifest.filter(pl.col("mixture").eq(mixture) if mixture else pl.col("mixture").is_null())
        for s in train:
            keys = rows.filter(pl.col("shard_url") == s.url)
            assert keys["sample_id"].map_elements(source_of.get, return_dtype=pl.String).n_unique() >= 2
        assert rows["key"].n_unique() == rows.height
        assert (rows["members"].list.first().str.split(".").list.first() == rows["key"]).all()

    root = corpus_copy / "shards" / "mixtures"
    assert sorted(p.name for p in (root / "labels").glob("*.json")) == [
        "classes.json",
        "manifest.json",
        "train.wids.json",
    ]
    caps = manifest.filter((pl.col("mixture") == "captions") & (pl.col("split") == "train"))
    per_source = Counter(source_of[s] for s in caps["sample_id"])
    n_train = Counter(source_of[s] for s in images.filter(pl.col("split") == "train")["sample_id"])
    assert per_source["demo_rocov2"] == 3 * n_train["demo_rocov2"]
    assert per_source["demo_zh_captions"] == 2 * n_train["demo_zh_captions"]
    assert per_source["demo_chexpert"] == round(0.5 * n_train["demo_chexpert"])
    repeats = caps.filter(pl.col("key") != pl.col("sample_id"))
    assert repeats.height and (repeats["key"].str.replace(r"-r[0-9]+$", "") == repeats["sample_id"]).all()
    labels = manifest.filter(pl.col("mixture") == "labels")
    assert not {source_of[s] for s in labels["sample_id"]} & {"demo_rocov2", "demo_zh_captions"}

    # webdataset reads a mixture's repeats as distinct samples
    idx = json.loads((root / "captions" / "train.wids.json").read_text())
    urls = [str(root / "captions" / e["url"]) for e in idx["shardlist"]]
    got = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]
    assert sorted(got) == sorted(caps["key"])

    # dropping a mixture removes its shards and manifest part on the next run
    run_shard(corpus, settings.model_copy(update={"mixtures": {}}), "demo", progress=False)
    assert not root.exists() or not list(root.rglob("*.tar"))
    assert pl.read_parquet(str(corpus_copy / "index" / "shards" / "*.parquet"))["mixture"].null_count() == len(
        pl.read_parquet(str(corpus_copy / "index" / "shards" / "*.parquet"))
    )


def test_plan_is_stable_and_keys_are_dot_free(demo_build):
    out, _ = demo_build
    corpus = Corpus(str(out))
    settings = ShardSettings(max_samples=8, multiple_of=2, seed=3)
    a = plan_shards(build_samples(corpus, settings), settings, "x")
    b = plan_shards(build_samples(corpus, settings), settings, "x")
    assert [(p.rel, p.keys) for p in a] == [(p.rel, p.keys) for p in b]
    assert all("." not in k for p in a for k, _ in p.keys)


# -- resume ----------------------------------------------------------------------------
def test_killed_local_run_leaves_no_partial_shard_and_resumes(corpus_copy, demo_recipe_path, demo_build, monkeypatch):
    settings = load_recipe(demo_recipe_path).shard
    import curator.stages.shard as shard_mod

    real = shard_mod._write_shard
    calls = 0

    def dying(corpus, rel, keys, samples):
        nonlocal calls
        calls += 1
        if calls == 3:
            with corpus.open_atomic(rel) as fh:
                fh.write(b"half a shard")
                raise Killed
        return real(corpus, rel, keys, samples)

    monkeypatch.setattr(shard_mod, "_write_shard", dying)
    with pytest.raises(Killed):
        run_shard(Corpus(str(corpus_copy)), settings, "demo", progress=False, threads=1)
    monkeypatch.setattr(shard_mod, "_write_shard", real)
    files = sorted(p.name for p in (corpus_copy / "shards").rglob("*") if p.is_file())
    assert files == ["demo-train-000000.tar", "demo-train-000001.tar"]

    (corpus_copy / "shards" / "train" / "demo-train-000001.tar").write_bytes(b"truncated")
    result = run_shard(Corpus(str(corpus_copy)), settings, "demo", progress=False)
    assert [s.url for s in result.shards if s.kept] == ["shards/train/demo-train-000000.tar"]
    out, _ = demo_build
    for s in result.shards:
        assert (corpus_copy / s.url).read_bytes() == (out / s.url).read_bytes()
    assert (corpus_copy / "shards" / "manifest.json").read_bytes() == (out / "shards" / "manifest.json").read_bytes()


# -- recipe ----------------------------------------------------------------------------
def test_weights_for_an_unknown_source_are_one_clear_error(demo_recipe_path, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(demo_recipe_path.read_text() + "\n[shard.mixtures.stage1.weights]\nno_such_source = 2.0\n")
    with pytest.raises(RecipeError, match="shard.mixtures.stage1 names source"):
        load_recipe(bad)


def test_a_reshard_removes_the_old_indexes_before_writing_any_shard(corpus_copy, demo_recipe_path, monkeypatch):
    settings = load_recipe(demo_recipe_path).shard
    run_shard(Corpus(str(corpus_copy)), settings.model_copy(update={"max_samples": 8}), "demo", progress=False)
    shards = corpus_copy / "shards"
    assert (shards / "train.wids.json").exists() and (shards / "manifest.json").exists()
    import curator.stages.shard as shard_mod

    def killed(*args):
        raise Killed

    monkeypatch.setattr(shard_mod, "_write_shard", killed)
    with pytest.raises(Killed):
        run_shard(Corpus(str(corpus_copy)), settings, "demo", progress=False)
    assert not [p.name for p in shards.rglob("*.json")], "an old index survived into a rewrite"


def test_shard_command_sizes_and_reports(corpus_copy, demo_recipe_path):
    from click.testing import CliRunner

    from curator.cli import main

    args = ["shard", "--out", str(corpus_copy), "--recipe", str(demo_recipe_path), "--quiet"]
    result = CliRunner().invoke(main, [*args, "--multiple-of", "2", "--max-samples", "100"])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines() if ".tar" in line]
    train = [int(parts[1]) for parts in lines if "/train/" in parts[0]]
    assert len(train) == 2 and abs(train[0] - train[1]) <= 1
    assert "classes for .cls" in result.output

    again = CliRunner().invoke(main, [*args, "--multiple-of", "2", "--max-samples", "100"])
    assert "(unchanged, skipped)" in again.output

    bad = CliRunner().invoke(main, [*args, "--max-bytes", "lots"])
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: --max-bytes: ") and len(bad.stderr.strip().splitlines()) == 1
