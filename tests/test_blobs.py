"""Packed blobs (curator.blobs): write and read on local disk and on a loopback S3 server (moto), what
verify catches inside packs, what trace shows, and a unit killed mid-pack that resumes with nothing
lost or duplicated."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import Killed, loopback_s3, run

from curator import blobs
from curator.blobs import BlobRef, PackWriter, pack_path, read_blobs
from curator.config import load_recipe
from curator.errors import CorpusError
from curator.executors import make_executor
from curator.stages.build import run_build
from curator.stages.shard import run_shard
from curator.storage import Corpus
from curator.tables import connect

BUCKET = "curator-blobs-test"


def _images(n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        data = rng.integers(0, 256, 300 + 97 * i, dtype=np.uint8).tobytes()
        out.append((hashlib.sha256(data).hexdigest(), data))
    return out


def _write(corpus: Corpus, unit: str, images) -> None:
    with PackWriter(corpus, unit) as pack:
        for sha, data in images:
            pack.add(sha, "png", data)


def _refs(corpus: Corpus, shas) -> list[BlobRef]:
    return blobs.refs(connect(corpus, ["blob_packs"]), [(s, "png", "src") for s in shas])


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 with the AWS_* variables s3fs reads, for this module."""
    with loopback_s3(BUCKET, "blobs-test", "blobs-test"):
        yield f"s3://{BUCKET}"


@pytest.fixture(params=["local", "s3"])
def corpus(request, tmp_path) -> Corpus:
    if request.param == "local":
        return Corpus(str(tmp_path / "corpus"))
    return Corpus(f"{request.getfixturevalue('s3')}/{tmp_path.name}")


# -- write and read -------------------------------------------------------------------------
def test_a_pack_round_trips_in_any_order_and_is_a_plain_deterministic_tar(corpus):
    images = _images(40)
    _write(corpus, "src-000000", [*images, images[3]])  # an image twice in one unit is stored once
    _write(corpus, "src-000001", images[30:] + _images(5, seed=1))  # a cross-unit duplicate keeps its own copy
    rows = corpus.read_table("blob_packs").to_pylist()
    assert len(rows) == 40 + 15
    assert {r["pack"] for r in rows} == {pack_path("src-000000"), pack_path("src-000001")}

    order = list(np.random.default_rng(7).permutation(len(images)))
    got = read_blobs(corpus, _refs(corpus, [images[i][0] for i in order]))
    assert got == [images[i][1] for i in order]

    raw = corpus.read_bytes(pack_path("src-000000"))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:  # what GNU tar or an auditor sees
        members = tar.getmembers()
        assert [m.name for m in members] == [f"{sha}.png" for sha, _ in images]
        assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members)
        assert tar.extractfile(members[5]).read() == images[5][1]
    for r in rows[:40]:
        assert raw[r["offset"] : r["offset"] + r["length"]] == dict(images)[r["image_sha256"]]

    _write(corpus, "src-000000", images)  # a re-run of the unit: the very same bytes
    assert corpus.read_bytes(pack_path("src-000000")) == raw


def test_reads_are_grouped_by_pack_not_one_request_per_image(tmp_path, monkeypatch):
    corpus = Corpus(str(tmp_path / "corpus"))
    images = _images(60)
    _write(corpus, "a-000000", images[:30])
    _write(corpus, "a-000001", images[30:])
    opened = []
    real_open = corpus.fs.open
    monkeypatch.setattr(corpus.fs, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    shuffled = [images[i][0] for i in np.random.default_rng(3).permutation(60)]
    assert read_blobs(corpus, _refs(corpus, shuffled)) == [dict(images)[s] for s in shuffled]
    assert sorted(opened) == sorted(corpus.path(pack_path(u)) for u in ("a-000000", "a-000001"))
    # neighbours within the gap become one ranged request; far ones stay apart
    refs = _refs(corpus, [s for s, _ in images[:30]])
    requests = blobs._merged(refs, blobs.MERGE_GAP_LOCAL)
    assert len(requests) == 1 and len(requests[0][2]) == 30
    assert len(blobs._merged(refs[::3], 1000)) == 10


def test_s3_reads_fetch_every_range_of_a_batch_in_one_concurrent_call(s3, tmp_path, monkeypatch):
    corpus = Corpus(f"{s3}/{tmp_path.name}")
    images = _images(20)
    _write(corpus, "a-000000", images[:10])
    _write(corpus, "a-000001", images[10:])
    calls = []
    real = corpus.fs.cat_ranges
    monkeypatch.setattr(corpus.fs, "cat_ranges", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    assert read_blobs(corpus, _refs(corpus, [s for s, _ in reversed(images)])) == [d for _, d in reversed(images)]
    assert calls == [2]  # two packs, each one merged range, one call


def test_a_unit_that_fails_mid_pack_leaves_no_pack_and_no_index_part(corpus):
    images = _images(10)
    with pytest.raises(Killed), PackWriter(corpus, "u-000000") as pack:
        for n, (sha, data) in enumerate(images):
            if n == 6:
                raise Killed
            pack.add(sha, "png", data)
    corpus.fs.invalidate_cache()
    assert not corpus.exists(pack_path("u-000000"))
    assert not corpus.table_parts("blob_packs")
    assert not [p for p in corpus.find("") if ".tmp-" in p]


def test_a_unit_without_images_writes_an_empty_index_part_and_no_pack(tmp_path):
    corpus = Corpus(str(tmp_path / "corpus"))
    _write(corpus, "r-000000", [])
    assert corpus.read_table("blob_packs").num_rows == 0
    assert not corpus.exists(pack_path("r-000000"))


def test_a_missing_pack_or_damaged_bytes_are_one_line_naming_the_unit_to_redo(tmp_path):
    corpus = Corpus(str(tmp_path / "corpus"))
    images = _images(4)
    _write(corpus, "src-000002", images)
    refs = _refs(corpus, [s for s, _ in images])
    path = tmp_path / "corpus" / pack_path("src-000002")
    raw = bytearray(path.read_bytes())
    raw[refs[2].offset + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorpusError, match=r"does not hash to its image_sha256: re-ingest source 'src'") as err:
        read_blobs(corpus, refs)
    assert images[2][0] in str(err.value) and "_markers/ingest/src/src-000002.json" in str(err.value)
    path.unlink()
    with pytest.raises(CorpusError, match=r"pack blobs/packs/src-000002.tar \(source 'src'\) is missing"):
        read_blobs(corpus, refs)


def test_loose_blobs_of_an_older_corpus_stay_readable(tmp_path):
    corpus = Corpus(str(tmp_path / "corpus"))
    (sha, data), (other, _) = _images(2)
    corpus.write_bytes(blobs.blob_path(sha, "png"), data)
    ref = _refs(corpus, [sha])[0]  # no blob_packs table at all
    assert ref.pack is None and read_blobs(corpus, [ref]) == [data]
    with pytest.raises(CorpusError, match="is in no pack and has no loose file"):
        read_blobs(corpus, _refs(corpus, [other]))


# -- the demo build: verify, trace, shard ----------------------------------------------------
@pytest.fixture
def built(demo_build, tmp_path):
    out, _ = demo_build
    copy = tmp_path / "corpus"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report"))
    return copy


def _kinds(out) -> dict[str, list[str]]:
    result = {}
    from curator.audit.verify import verify

    for p in verify(Corpus(str(out)), progress=False).problems:
        result.setdefault(p.kind, []).append(p.subject)
    return result


def test_the_demo_keeps_its_images_in_packs_one_per_unit(demo_build):
    out, _ = demo_build
    assert not [p for p in (out / "blobs").rglob("*") if p.is_file() and p.suffix != ".tar"]  # no loose blob
    packs = sorted(p.stem for p in (out / "blobs" / "packs").glob("*.tar"))
    index = pq.read_table(out / "index" / "blob_packs").to_pylist()
    images = pq.read_table(out / "index" / "images", columns=["image_sha256"]).column(0).to_pylist()
    assert sorted({r["pack"].rsplit("/", 1)[-1].removesuffix(".tar") for r in index}) == packs
    assert {r["image_sha256"] for r in index} == set(images)  # every image located, nothing extra
    assert len({(r["pack"], r["image_sha256"]) for r in index}) == len(index)


def test_verify_catches_a_flipped_byte_inside_a_pack_and_the_sharder_stops(built, demo_recipe_path):
    corpus = Corpus(str(built))
    row = corpus.read_table("blob_packs").to_pylist()[3]
    path = built / row["pack"]
    raw = bytearray(path.read_bytes())
    raw[row["offset"] + row["length"] // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    kinds = _kinds(built)
    assert kinds["blob_hash"] == [f"{row['pack']}:{row['image_sha256']}.{row['ext']}"]
    assert "seal_mismatch" in kinds  # and the seal saw it too
    settings = load_recipe(demo_recipe_path).shard.model_copy(update={"seed": 12345})
    with pytest.raises(CorpusError, match=rf"blob {row['image_sha256']} at {row['pack']}@") as err:
        run_shard(corpus, settings, "demo", progress=False, executor=make_executor("serial"))
    assert "does not hash" in str(err.value) and "\n" not in str(err.value)


def test_verify_flags_an_orphaned_pack_a_missing_pack_and_a_stray_file(built):
    packs = sorted((built / "blobs" / "packs").glob("*.tar"))
    shutil.copy(packs[0], packs[0].with_name("zz-999999.tar"))
    (built / "blobs" / "notes.txt").write_text("x")
    packs[1].unlink()
    kinds = _kinds(built)
    assert kinds["pack_orphan"] == ["blobs/packs/zz-999999.tar"]
    assert kinds["blob_orphan"] == ["blobs/notes.txt"]
    assert kinds["blob_missing"] == [f"blobs/packs/{packs[1].name}"]
    result = run("verify", "--out", built, "-q")
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1].startswith("FAILED: ")


def test_verify_flags_a_member_added_to_a_pack(built):
    pack = sorted((built / "blobs" / "packs").glob("*.tar"))[0]
    with tarfile.open(pack) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(pack, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))
        extra = tarfile.TarInfo("f" * 64 + ".png")
        extra.size = 3
        tar.addfile(extra, io.BytesIO(b"abc"))
    assert _kinds(built).get("pack_member_unexpected") == [f"blobs/packs/{pack.name}:{'f' * 64}.png"]


def test_a_clean_demo_verifies_and_trace_shows_where_the_blob_is(demo_build):
    from curator.audit.trace import format_trace, trace

    out, _ = demo_build
    assert run("verify", "--out", out, "-q").output.startswith("ok: ")
    corpus = Corpus(str(out))
    sid = pq.read_table(out / "index" / "samples", columns=["sample_id"]).column(0)[0].as_py()
    t = trace(corpus, sid)
    b = t["blob"]
    assert b["pack"].startswith("blobs/packs/") and b["length"] > 0
    data = (out / b["pack"]).read_bytes()[b["offset"] : b["offset"] + b["length"]]
    assert hashlib.sha256(data).hexdigest() == t["sample"]["image_sha256"]
    assert f"blob        {b['pack']}  bytes {b['offset']}.." in format_trace(t)
    result = run("trace", "--out", out, sid)
    assert result.exit_code == 0 and b["pack"] in result.output


# -- killed mid-pack ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_build_killed_inside_a_pack_resumes_with_no_blob_lost_or_duplicated(
    demo_recipe_path, demo_build, tmp_path, monkeypatch
):
    reference, _ = demo_build
    out = tmp_path / "killed"
    original = PackWriter.add
    added = []

    def dying(self, sha, ext, data):
        added.append(sha)
        if len(added) == 25:  # inside some unit's pack, with earlier units committed
            raise Killed
        original(self, sha, ext, data)

    monkeypatch.setattr(PackWriter, "add", dying)
    with pytest.raises(Killed):
        run_build(load_recipe(demo_recipe_path), str(out), progress=False, executor=make_executor("serial"))
    before = sorted(p.name for p in (out / "blobs" / "packs").glob("*.tar"))
    assert not [p for p in out.rglob(".tmp-*")]  # the half pack was discarded, not left to count
    monkeypatch.setattr(PackWriter, "add", original)
    run_build(load_recipe(demo_recipe_path), str(out), progress=False, executor=make_executor("serial"))

    def packs(root):
        return {p.name: p.read_bytes() for p in (root / "blobs" / "packs").glob("*.tar")}

    assert set(before) < set(packs(out))
    assert packs(out) == packs(reference)  # every pack, byte for byte, none extra
    got = pq.read_table(out / "index" / "blob_packs").sort_by([("pack", "ascending"), ("offset", "ascending")])
    want = pq.read_table(reference / "index" / "blob_packs").sort_by([("pack", "ascending"), ("offset", "ascending")])
    assert got.equals(want)
    assert run("verify", "--out", out, "-q").output.startswith("ok: ")


def test_a_dropped_source_takes_its_packs_with_it(built):
    from curator.stages.ingest import drop_source

    corpus = Corpus(str(built))
    packs = sorted(p.stem for p in (built / "blobs" / "packs").glob("*.tar"))
    source = packs[0].rsplit("-", 1)[0]
    drop_source(corpus, source)
    left = sorted(p.stem for p in (built / "blobs" / "packs").glob("*.tar"))
    assert left == [p for p in packs if not p.startswith(f"{source}-")] and len(left) < len(packs)
    assert not [p for p in corpus.table_parts("blob_packs") if f"part-{source}-" in p]


def test_an_older_corpus_of_loose_blobs_still_verifies_and_shards(built, demo_recipe_path):
    corpus = Corpus(str(built))
    for r in corpus.read_table("blob_packs").to_pylist():  # unpack to the one-object-per-image layout
        raw = (built / r["pack"]).read_bytes()
        corpus.write_bytes(blobs.blob_path(r["image_sha256"], r["ext"]), raw[r["offset"] : r["offset"] + r["length"]])
    shutil.rmtree(built / "blobs" / "packs")
    shutil.rmtree(built / "index" / "blob_packs")
    kinds = _kinds(built)
    assert not [k for k in kinds if k.startswith(("blob_", "pack_"))], kinds
    settings = load_recipe(demo_recipe_path).shard.model_copy(update={"seed": 4321})
    result = run_shard(corpus, settings, "demo", progress=False, executor=make_executor("serial"))
    assert result.written and result.samples
