"""Sharding: sizing, balance, mixtures and weights, tar bytes, class index, resume on a local disk."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import webdataset as wds
from helpers import Killed, copy_corpus

from curator.config import Mixture, ShardSettings, load_recipe
from curator.errors import CuratorError, RecipeError
from curator.executors import make_executor
from curator.stages.shard import (
    TAR_MTIME,
    Samples,
    expand,
    plan_shards,
    repeat_key,
    run_shard,
    sample_id_of,
    shard_counts,
    tar_header,
    tar_header_slow,
    write_tar,
)
from curator.stages.shard import work as shard_work
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
def _fake(n_a: int, n_b: int) -> Samples:
    ids = [f"{src}-{i:016x}" for src, n in (("a", n_a), ("b", n_b)) for i in range(n)]
    table = pa.table(
        {
            "sample_id": ids,
            "split": ["train"] * len(ids),
            "size": [10] * len(ids),
            "digest": pa.array([bytes(16)] * len(ids), pa.binary(16)),
            "sources": [[sid.split("-")[0]] for sid in ids],
        }
    )
    return Samples.from_table(table)


def _expand(samples: Samples, mixture: Mixture, settings: ShardSettings, name, split) -> list[tuple[str, str]]:
    """(key, sample_id) pairs of ``expand`` over every sample, in its order."""
    rows, reps = expand(np.arange(len(samples)), samples, mixture, settings, name, split)
    ids = samples.sample_id.to_pylist()
    return [(repeat_key(ids[r], int(n)), ids[r]) for r, n in zip(rows, reps, strict=True)]


def test_weights_up_and_down_sample_exactly_with_distinct_keys():
    samples = _fake(10, 20)
    mixture = Mixture(weights={"a": 2.5, "b": 0.25})
    settings = ShardSettings(seed=7)
    keys = _expand(samples, mixture, settings, "m", "train")
    per_source = Counter(sid.split("-")[0] for _, sid in keys)
    assert per_source == {"a": 25, "b": 5}
    assert len({k for k, _ in keys}) == len(keys)
    for key, sid in keys:
        assert "." not in key and sample_id_of(key) == sid
    copies = Counter(sid for _, sid in keys if sid.startswith("a"))
    assert sorted(Counter(copies.values()).items()) == [(2, 5), (3, 5)]
    thrice = next(sid for sid, n in copies.items() if n == 3)
    assert {k for k, sid in keys if sid == thrice} == {thrice, repeat_key(thrice, 1), repeat_key(thrice, 2)}
    assert keys == _expand(samples, mixture, settings, "m", "train"), "not deterministic"
    other = _expand(samples, mixture, ShardSettings(seed=8), "m", "train")
    assert other != keys and len(other) == len(keys)


def test_weights_leave_val_and_test_alone():
    samples = _fake(4, 4)
    keys = _expand(samples, Mixture(weights={"a": 3}), ShardSettings(), None, "val")
    assert [k for k, _ in keys] == samples.sample_id.to_pylist()


def test_zero_weight_drops_a_source():
    samples = _fake(4, 4)
    keys = _expand(samples, Mixture(weights={"a": 0}), ShardSettings(), None, "train")
    assert {sid.split("-")[0] for _, sid in keys} == {"b"}


# -- tar bytes -------------------------------------------------------------------------
def test_hand_written_tar_is_byte_identical_to_tarfile(demo_build, tmp_path):
    out, _ = demo_build
    with tarfile.open(next((out / "shards" / "train").glob("*.tar"))) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()][:20]
    members.append((f"{members[0][0].split('.')[0]}-r1.json", b""))
    corpus = Corpus(str(tmp_path))
    size, _, _ = write_tar(corpus, "x.tar", members)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uid, info.gid = len(data), TAR_MTIME, 0o444, 0, 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    assert (tmp_path / "x.tar").read_bytes() == buf.getvalue()
    assert size == len(buf.getvalue())
    with tarfile.open(tmp_path / "x.tar") as tar:
        assert all(m.mtime == TAR_MTIME and m.uname == "" for m in tar.getmembers())


@pytest.mark.parametrize(
    "name,size", [("demo_x-0123456789abcdef.png", 12345), ("a.json", 0), ("x" * 100, 5), ("é-k.txt", 8**11 - 1)]
)
def test_fast_tar_header_matches_tarfile(name, size):
    assert tar_header(name, size) == tar_header_slow(name, size)


def test_a_key_too_long_for_ustar_is_a_clear_error():
    with pytest.raises(CuratorError, match="over USTAR's 100 bytes"):
        tar_header("k" * 97 + ".json", 1)


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


def test_plan_is_stable_and_keys_are_dot_free(corpus_copy):
    corpus = Corpus(str(corpus_copy))
    settings = ShardSettings(max_samples=8, multiple_of=2, seed=3)
    run_shard(corpus, settings, "x", progress=False)
    staged = pl.read_parquet(str(corpus_copy / "index" / "shards" / "*.parquet"))
    table = pa.table(
        {
            "sample_id": sorted(set(staged["sample_id"])),
            "split": ["train"] * staged["sample_id"].n_unique(),
            "size": [1000] * staged["sample_id"].n_unique(),
            "digest": pa.array([bytes(16)] * staged["sample_id"].n_unique(), pa.binary(16)),
            "sources": [["s"]] * staged["sample_id"].n_unique(),
        }
    )
    samples = Samples.from_table(table)
    a, b = plan_shards(samples, settings, "x"), plan_shards(samples, settings, "x")  # planning is pure
    assert [(p.rel, p.keys(samples)) for p in a] == [(p.rel, p.keys(samples)) for p in b]
    assert all("." not in k for p in a for k, _ in p.keys(samples))
    assert all("." not in k for k in staged["key"])
    assert sorted(k for p in a for k, _ in p.keys(samples)) == samples.sample_id.to_pylist()


# -- resume ----------------------------------------------------------------------------
def test_killed_local_run_leaves_no_partial_shard_and_resumes(corpus_copy, demo_recipe_path, demo_build, monkeypatch):
    settings = load_recipe(demo_recipe_path).shard
    real = shard_work.write_tar
    calls = 0

    def dying(corpus, rel, members):
        nonlocal calls
        calls += 1
        if calls == 3:
            with corpus.open_atomic(rel) as fh:
                fh.write(b"half a shard")
                raise Killed
        return real(corpus, rel, members)

    monkeypatch.setattr(shard_work, "write_tar", dying)
    with pytest.raises(Killed):
        run_shard(Corpus(str(corpus_copy)), settings, "demo", progress=False, executor=make_executor("serial"))
    monkeypatch.setattr(shard_work, "write_tar", real)
    files = sorted(p.name for p in (corpus_copy / "shards").rglob("*") if p.is_file())
    assert files == [
        "demo-train-000000.tar",
        "demo-train-000000_stats.json",
        "demo-train-000001.tar",
        "demo-train-000001_stats.json",
    ]

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

    def killed(*args):
        raise Killed

    monkeypatch.setattr(shard_work, "write_tar", killed)
    with pytest.raises(Killed):
        run_shard(Corpus(str(corpus_copy)), settings, "demo", progress=False, executor=make_executor("serial"))
    indexes = [p.name for p in shards.rglob("*.json") if not p.name.endswith("_stats.json")]  # stats: per shard
    assert not indexes, "an old index survived into a rewrite"


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


@pytest.mark.slow
def test_serial_and_process_pool_write_the_same_bytes(demo_build, tmp_path):
    out, _ = demo_build
    settings = ShardSettings(max_samples=10, seed=5)
    written = {}
    for name in ("serial", "local"):
        copy = copy_corpus(out, tmp_path / name, done=("ingest", "index", "caption"))
        with make_executor(name, 2) as executor:
            result = run_shard(Corpus(str(copy)), settings, "demo", progress=False, executor=executor)
        assert result.written == len(result.shards) > 2
        written[name] = {
            str(p.relative_to(copy)): p.read_bytes() for p in sorted((copy / "shards").rglob("*")) if p.is_file()
        }
        assert not (copy / "_work" / "shard" / "records.parquet").exists(), "staging left behind"
    assert written["serial"].keys() == written["local"].keys()
    assert written["serial"] == written["local"]


# -- files other tools read beside the shards ------------------------------------------
def test_sizes_stats_and_classnames_beside_the_shards(demo_build):
    out, _ = demo_build
    root = out / "shards"
    manifest = json.loads((root / "manifest.json").read_text())
    for split in {s["split"] for s in manifest["shards"]}:
        sizes = json.loads((root / split / "sizes.json").read_text())
        listed = {s["url"].rsplit("/", 1)[-1]: s["nsamples"] for s in manifest["shards"] if s["split"] == split}
        assert sizes == listed  # open_clip: sum(sizes[basename(url)] for url in shards)
    for entry in manifest["shards"]:
        tar_path = root / entry["url"]
        stats = json.loads(tar_path.with_name(tar_path.stem + "_stats.json").read_text())
        with tarfile.open(tar_path) as tar:
            names = tar.getnames()
        assert stats["samples"] == entry["nsamples"] == len({n.split(".")[0] for n in names})
        assert stats["bytes"] == tar_path.stat().st_size and stats["sha256"] == entry["sha256"]
        assert sum(stats["members"].values()) == len(names)
        assert stats["sources"] and all(n > 0 for n in stats["sources"].values())
    classes = json.loads((root / "classes.json").read_text())["classes"]
    assert (root / "classnames.txt").read_text().splitlines() == classes


def test_verify_knows_sizes_stats_and_classnames(demo_build, tmp_path):
    from curator.audit.verify import verify

    copy = copy_corpus(demo_build[0], tmp_path / "c", done=("ingest", "index", "caption", "instruct", "shard"))
    assert verify(Corpus(str(copy)), progress=False).ok
    sizes = copy / "shards" / "train" / "sizes.json"
    first = sorted(json.loads(sizes.read_text()))[0]
    sizes.write_text(json.dumps({**json.loads(sizes.read_text()), first: 999}))
    next((copy / "shards" / "val").glob("*_stats.json")).unlink()
    (copy / "shards" / "classnames.txt").write_text("nope\n")
    kinds = {p.kind for p in verify(Corpus(str(copy)), progress=False).problems}
    reader_kinds = {"sizes_entry", "stats_missing", "classnames_mismatch"}
    assert reader_kinds <= kinds and kinds - reader_kinds <= {"seal_mismatch", "sealed_missing"}  # the seal too


def test_an_optional_table_joins_into_each_json(corpus_copy):
    from curator.stages.shard import RecordExtra

    corpus = Corpus(str(corpus_copy))
    ids = pl.read_parquet(str(corpus_copy / "index" / "samples" / "*.parquet"))["sample_id"].to_list()
    part = corpus_copy / "index" / "notes_extra" / "part-x.parquet"
    part.parent.mkdir(parents=True)
    pl.DataFrame({"sample_id": [ids[0], ids[0]], "entry_id": ["e2", "e1"], "task": ["vqa", "caption"]}).write_parquet(
        part
    )
    extra = RecordExtra(
        "conversations",
        "notes_extra",
        "SELECT sample_id, list(struct_pack(entry_id, task) ORDER BY entry_id) AS value FROM notes_extra GROUP BY 1",
    )
    result = run_shard(corpus, ShardSettings(), "x", progress=False, extras=[extra])
    urls = [corpus.uri(s.url) for s in result.shards]
    got = {s["__key__"]: json.loads(s["json"]) for s in wds.WebDataset(urls, shardshuffle=False)}
    assert got[ids[0]]["conversations"] == [{"entry_id": "e1", "task": "caption"}, {"entry_id": "e2", "task": "vqa"}]
    assert all(rec["conversations"] == [] for key, rec in got.items() if key != ids[0])


def test_sample_captions_join_samples_to_the_captions_their_shards_carry(demo_build):
    from curator.audit.query import run_query

    out, _ = demo_build
    corpus = Corpus(str(out))
    _, rows = run_query(
        corpus,
        "SELECT sc.sample_id, list(c.caption ORDER BY c.caption) FROM sample_captions sc "
        "JOIN captions c USING (triplet_id, language, caption_index) GROUP BY 1",
    )
    joined = {sid: caps for sid, caps in rows}
    urls = [str(p) for p in sorted((out / "shards").rglob("*.tar")) if "mixtures" not in p.parts]
    carried = {
        s["__key__"]: sorted(c["caption"] for c in json.loads(s["json"])["captions"])
        for s in wds.WebDataset(urls, shardshuffle=False)
    }
    assert joined and all(carried[sid] == caps for sid, caps in joined.items())
    assert {sid for sid, caps in carried.items() if caps} == set(joined)
