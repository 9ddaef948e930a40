"""Review fixes: shard re-runs repair what is missing, verify checks what readers use, trace keys, query safety."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import STAGES, copy_corpus, run

from curator.audit.verify import verify
from curator.config import ShardSettings, load_recipe
from curator.errors import CorpusError
from curator.executors import make_executor
from curator.loader import webdataset_loader
from curator.stages.shard import run_shard, shard_counts
from curator.stages.shard.records import class_vocabulary
from curator.storage import Corpus


@pytest.fixture
def built(demo_build, tmp_path) -> Path:
    """A private copy of the whole demo build (index, blobs, shards, markers)."""
    return copy_corpus(demo_build[0], tmp_path / "corpus", done=STAGES)


def _kinds(result) -> set[str]:
    return {p.kind for p in result.problems}


# -- 1: a re-run repairs deleted indexes and tampered shards --------------------------------
def test_rerun_repairs_deleted_indexes_and_a_tampered_shard(built, demo_recipe_path):
    settings = load_recipe(demo_recipe_path).shard
    corpus = Corpus(str(built))
    original = {p: p.read_bytes() for p in (built / "shards").rglob("*") if p.is_file()}
    part = built / "index" / "shards" / "part-manifest.parquet"
    part_bytes = part.read_bytes()
    victim = next(p for p in sorted(original) if p.suffix == ".tar")
    data = bytearray(original[victim])
    data[600] ^= 0xFF  # a flipped byte in the first member's data: same size, other hash
    victim.write_bytes(bytes(data))
    for name in ("train.wids.json", "classes.json", "manifest.json"):
        (built / "shards" / name).unlink()
    part.unlink()

    result = run_shard(corpus, settings, "demo", progress=False)
    assert not result.skipped
    assert [s.url for s in result.shards if not s.kept] == [corpus.rel(str(victim))]
    for path, content in original.items():
        assert path.read_bytes() == content, path
    assert part.read_bytes() == part_bytes
    assert verify(corpus, progress=False).ok

    again = run_shard(corpus, settings, "demo", progress=False)
    assert again.skipped


# -- 2: verify checks the wids indexes, manifest entries, classes.json and stray tars ------
def test_verify_reports_what_training_readers_would_miss(built):
    shards = built / "shards"
    train = json.loads((shards / "train.wids.json").read_text())
    dropped = train["shardlist"].pop(0)["url"]
    (shards / "train.wids.json").write_text(json.dumps(train))
    manifest = json.loads((shards / "manifest.json").read_text())
    unlisted = manifest["shards"].pop()["url"]
    (shards / "manifest.json").write_text(json.dumps(manifest))
    (shards / "val.wids.json").unlink()
    (shards / "classes.json").unlink()
    shutil.copy(shards / dropped, shards / "train" / "stray.tar")

    problems = {(p.kind, p.subject) for p in verify(Corpus(str(built)), progress=False).problems}
    assert ("wids_entry_missing", f"shards/{dropped}") in problems
    assert ("manifest_entry_missing", f"shards/{unlisted}") in problems
    assert ("wids_missing", "shards/val.wids.json") in problems
    assert ("classes_missing", "shards/classes.json") in problems
    assert ("shard_unexpected", "shards/train/stray.tar") in problems


def test_verify_catches_a_cls_that_names_another_class(built):
    victim = next(p for p in sorted((built / "shards").rglob("*.tar")) if b".cls" in p.read_bytes())
    classes = json.loads((built / "shards" / "classes.json").read_text())["classes"]
    with tarfile.open(victim) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    name, value = next((m.name, d) for m, d in members if m.name.endswith(".cls"))
    other = str((int(value) + 1) % len(classes)).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for m, d in members:
            d = other if m.name == name else d
            m.size = len(d)
            tar.addfile(m, io.BytesIO(d))
    victim.write_bytes(buf.getvalue())
    problems = verify(Corpus(str(built)), progress=False).problems
    assert any(p.kind == "cls_mismatch" and p.subject.endswith(name) for p in problems)


# -- 3, 6, 9: weights below 1 verify clean; trace keys exactly; report counts distinct samples --
def test_weights_below_one_verify_trace_keys_and_report(built, demo_recipe_path, tmp_path):
    recipe = tmp_path / "weighted.toml"
    recipe.write_text(demo_recipe_path.read_text() + "weights = { demo_radimagenet = 3.0, demo_chexpert = 0.5 }\n")
    result = run("shard", "--out", built, "--recipe", recipe, "--quiet")
    assert result.exit_code == 0, result.output
    left_out = json.loads((built / "shards" / "left_out.json").read_text())["samples"]
    assert left_out and {e["reason"] for e in left_out} == {"weight"}
    assert all(e["sample_id"].startswith("demo_chexpert-") for e in left_out)
    checked = run("verify", "--out", built, "--quiet")
    assert checked.exit_code == 0, checked.output

    rows = pq.read_table(str(built / "index" / "shards")).to_pylist()
    second = next(r for r in rows if r["key"] and r["key"].endswith("-r2"))
    sid, url = second["sample_id"], second["shard_url"]
    traced = json.loads(run("trace", f"{url}#{second['key']}", "--out", built, "--json").output)
    assert traced["shard"]["key"] == second["key"] and traced["shard"]["shard_url"] == url
    text = run("trace", f"{url}#{second['key']}", "--out", built).output
    assert f"key {second['key']} (main, repeat 2)" in text
    first = next(r for r in rows if r["sample_id"] == sid and r["key"] == sid)
    assert f"key {sid} (main)" in text and "(repeat)" not in text and first
    missing = run("trace", f"{url}#{sid}-r99", "--out", built)
    assert missing.exit_code == 1 and f"'{sid}-r99' is not in" in missing.stderr
    # the sample's own key, asked of the shard that holds its -r2 copy (unless both share one shard)
    if not any(r["key"] == sid and r["shard_url"] == url for r in rows):
        elsewhere = run("trace", f"{url}#{sid}", "--out", built)
        assert elsewhere.exit_code == 1 and f"holds no key '{sid}'" in elsewhere.stderr
    alone = run("trace", f"{sid}-r99", "--out", built)
    assert alone.exit_code == 1 and f"'{sid}-r99' is not in" in alone.stderr

    assert run("report", "--out", built).exit_code == 0
    md = (built / "report" / "README.md").read_text()
    distinct = len({r["sample_id"] for r in rows if r["mixture"] is None})
    assert distinct < len(rows)
    assert f"**{distinct:,}** in the main shard set" in md
    assert f"**{len(left_out):,}** dropped by weight" in md
    assert f"**{len(rows):,}** shard keys" in md


# -- 4: blobs are hashed when copied and by verify -------------------------------------
def test_a_corrupt_blob_stops_the_sharder_and_fails_verify(built, demo_recipe_path):
    corpus = Corpus(str(built))
    row = corpus.read_table("blob_packs").to_pylist()[0]
    pack = built / row["pack"]
    raw = bytearray(pack.read_bytes())
    raw[row["offset"] + row["length"] - 1] ^= 0xFF  # the blob's last byte, inside its pack
    pack.write_bytes(bytes(raw))
    problems = verify(corpus, progress=False).problems
    assert [p.subject for p in problems if p.kind == "blob_hash"] == [
        f"{row['pack']}:{row['image_sha256']}.{row['ext']}"
    ]
    settings = load_recipe(demo_recipe_path).shard.model_copy(update={"seed": 12345})
    where = rf"blob {row['image_sha256']} at {row['pack']}@\d+\+\d+"
    with pytest.raises(CorpusError, match=rf"{where} \(source '[a-z_]+'\) does not hash") as err:
        run_shard(corpus, settings, "demo", progress=False, executor=make_executor("serial"))
    assert "_markers/ingest/" in str(err.value) and "\n" not in str(err.value)
    pack.unlink()
    assert "blob_missing" in _kinds(verify(corpus, progress=False))
    with pytest.raises(CorpusError, match="is missing: re-ingest source"):
        run_shard(corpus, settings, "demo", progress=False, executor=make_executor("serial"))


# -- 5: one cross-source duplicate no longer removes .cls from a whole source ------------
def test_class_labels_judge_each_source_on_its_own_labels():
    # (sample_id, {member_id: source}, [(source, label)]): merged samples hold one member per source
    samples = [
        ("a-1", [("a", "cat")]),
        ("a-2", [("a", "dog")]),
        ("m-1", [("a", "cat"), ("b", "edema"), ("b", "effusion")]),  # merged duplicate
        ("b-1", [("b", "edema")]),
        ("c-1", [("c", "cat")]),
        ("m-2", [("a", "cat"), ("c", "dog")]),  # qualifying sources disagree
    ]
    con = duckdb.connect()
    rows = [(sid, sorted({src for src, _ in labels})) for sid, labels in samples]
    con.register(
        "samples",
        pa.table(
            {"sample_id": [r[0] for r in rows], "status": ["keep"] * len(rows), "source_ids": [r[1] for r in rows]}
        ),
    )
    members = [(sid, f"{sid}@{src}") for sid, srcs in rows for src in srcs]
    con.register("members", pa.table({"sample_id": [m[0] for m in members], "member_id": [m[1] for m in members]}))
    notes = [(f"{sid}@{src}", src, label) for sid, labels in samples for src, label in labels]
    con.register(
        "annotations",
        pa.table(
            {
                "sample_id": [n[0] for n in notes],
                "source_id": [n[1] for n in notes],
                "kind": ["label"] * len(notes),
                "text": [n[2] for n in notes],
                "value": ["positive"] * len(notes),
            }
        ),
    )
    assert class_vocabulary(con) == ["cat", "dog"]
    got = dict(con.execute("SELECT sample_id, label FROM shard_classes").fetchall())
    assert got == {"a-1": "cat", "a-2": "dog", "m-1": "cat", "c-1": "cat"}  # b is multi-label: no class


# -- 7, 8: sizing counts tar record padding; multiple_of overriding max_samples warns -----
def test_shard_size_estimate_includes_tar_record_padding():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(19):
            tar.addfile(tarfile.TarInfo(f"k{i}.txt"))  # 512 bytes each: a header, no data
    assert len(buf.getvalue()) == 20480  # 19 * 512 + 1024 = 10752, padded to 2 * 10240
    counts = shard_counts([512] * 19, ShardSettings(max_bytes=12000))
    assert counts == [10, 9]  # one tar of 19 would be 20480 bytes, over 12000


def test_multiple_of_overriding_max_samples_warns(caplog):
    counts = shard_counts([10] * 12, ShardSettings(max_samples=1, multiple_of=8), "train")
    assert len(counts) == 8 and max(counts) == 2
    assert "multiple_of=8 overrides max_samples=1" in caplog.text


# -- 10: query --------------------------------------------------------------------------
def test_query_timestamps_refuses_writes_and_writes_valid_json_lines(demo_build, tmp_path):
    out, _ = demo_build
    now = run("query", "SELECT current_timestamp AS t", "--out", out, "--format", "csv")
    assert now.exit_code == 0, now.output
    assert now.output.splitlines()[1][:2] == "20"
    target = tmp_path / "leak.csv"
    copy = run("query", f"COPY (SELECT * FROM sources) TO '{target}'", "--out", out)
    assert copy.exit_code == 1 and copy.stderr.startswith("error: query refused: COPY")
    assert not target.exists()
    for sql in ("ATTACH 'x.db'", "SELECT 1; SET threads = 1", "EXPLAIN ANALYZE COPY sources TO 'x.csv'"):
        assert run("query", sql, "--out", out).exit_code == 1, sql
    assert run("query", "DESCRIBE samples", "--out", out).exit_code == 0
    assert run("query", "PRAGMA table_info('samples')", "--out", out).exit_code == 0

    lines = run(
        "query",
        "SELECT 'nan'::DOUBLE AS x, '\\xAA\\xBB'::BLOB AS b, [1.0, 'inf'::DOUBLE] AS l",
        "--out",
        out,
        "--format",
        "json",
    ).output.splitlines()

    def strict(token):
        raise ValueError(token)

    row = json.loads(lines[0], parse_constant=strict)
    assert row == {"x": None, "b": base64.b64encode(b"\xaa\xbb").decode(), "l": [1.0, None]}


# -- 11: loader options reach the DataLoader -------------------------------------------
@pytest.mark.filterwarnings("ignore:.pin_memory. argument is set as true")
def test_webdataset_loader_passes_dataloader_options(demo_build):
    out, _ = demo_build
    urls = [str(p) for p in sorted((out / "shards" / "val").glob("*.tar"))]
    loader = webdataset_loader(urls, pin_memory=True, num_workers=0, batch_size=2, loader_kwargs={"drop_last": True})
    assert loader.pin_memory is True and loader.drop_last is True
    batch = next(iter(loader))
    assert len(batch) == 2
    assert hashlib.sha256(batch[0]["image"]).hexdigest() == batch[0]["meta"]["image"]["image_sha256"]
