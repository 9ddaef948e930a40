"""The auditor's tools on a real demo build: trace, query, verify (tampering caught), report."""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from helpers import STAGES, copy_corpus, run
from PIL import Image

from curator.audit.verify import verify
from curator.storage import Corpus

CHEX = "chexpert/CheXpert-v1.0-small"


@pytest.fixture
def corpus_copy(demo_build, tmp_path) -> Path:
    """A private copy of the shared demo build, safe to tamper with (~1 MB)."""
    return copy_corpus(demo_build[0], tmp_path / "corpus", done=STAGES)


# -- trace ---------------------------------------------------------------------------------
def test_trace_of_a_merged_sample_lists_every_member(demo_build):
    out, _ = demo_build
    result = run(
        "query", "SELECT member_id FROM members WHERE NOT canonical ORDER BY 1", "--out", out, "--format", "csv"
    )
    member = result.output.splitlines()[1]
    data = json.loads(run("trace", member, "--out", out, "--json").output)
    assert data["requested"] == member and data["sample_id"] < member
    assert len(data["provenance"]) == 3
    assert {p["image"]["original_format"] for p in data["provenance"]} == {"dicom"}
    assert len({p["image"]["original_sha256"] for p in data["provenance"]}) == 3  # three files, one picture
    assert all(p["source"]["license"] == "LicenseRef-pydicom-test-data" for p in data["provenance"])
    assert {d["kind"] for d in data["duplicates"]} == {"exact_same_source"}
    assert data["shard"]["members"][0] == f"{data['sample_id']}.png"
    text = run("trace", member, "--out", out).output
    assert f"(asked for {member}, merged into this sample)" in text
    assert text.count("  - member    ") == 3 and text.count("  source    demo_dicom") == 1
    assert "duplicate   exact_same_source: " in text


def test_trace_by_shard_url_and_key(demo_build):
    out, _ = demo_build
    url, key = (
        run("query", "SELECT shard_url, sample_id FROM shards LIMIT 1", "--out", out, "--format", "csv")
        .output.splitlines()[1]
        .split(",")
    )
    data = json.loads(run("trace", f"{url}#{key}", "--out", out, "--json").output)
    assert data["sample_id"] == key and data["shard"]["shard_url"] == url
    wrong = run("trace", f"shards/train/nope.tar#{key}", "--out", out)
    assert wrong.exit_code == 1 and f"is in {url}, not shards/train/nope.tar" in wrong.stderr


# -- query ---------------------------------------------------------------------------------
def test_query_samples_per_licence_as_a_table(demo_build):
    out, report = demo_build
    result = run(
        "query",
        "SELECT src.license, count(DISTINCT mb.sample_id) AS samples FROM members mb JOIN samples s USING (sample_id) "
        "JOIN sources src ON src.source_id = mb.source_id WHERE s.status = 'keep' GROUP BY 1 ORDER BY 1",
        "--out",
        out,
    )
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["license", "samples"]
    counts = {line.split()[0]: int(line.split()[1]) for line in lines[1:-1]}
    assert counts["LicenseRef-pydicom-test-data"] == 4  # six DICOM images, three of them one picture
    assert sum(counts.values()) == report.index.kept
    assert lines[-1] == "(2 rows)"


def test_query_writes_csv_and_json_lines(demo_build, tmp_path):
    out, _ = demo_build
    sql = "SELECT modality, department, count(*) AS n FROM samples WHERE status = 'keep' GROUP BY ALL ORDER BY ALL"
    target = tmp_path / "by_modality.csv"
    result = run("query", sql, "--out", out, "--format", "csv", "--output", target)
    assert result.exit_code == 0
    rows = list(csv.DictReader(target.open()))
    assert {"CT", "MRI", "X-ray"} <= {r["modality"] for r in rows}
    assert result.stderr.strip() == f"{len(rows)} rows written to {target}"
    lines = run("query", sql, "--out", out, "--format", "json").output.splitlines()
    assert [json.loads(line)["n"] for line in lines] == [int(r["n"]) for r in rows]
    # list columns come out as JSON
    rows = run("query", "SELECT source_ids FROM samples LIMIT 1", "--out", out, "--format", "csv").output
    assert rows.splitlines()[1].startswith('"[')


def test_query_errors_are_one_line(demo_build):
    out, _ = demo_build
    result = run("query", "SELECT * FROM no_such_table", "--out", out)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: query failed: ") and "tables: sources, images" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- verify --------------------------------------------------------------------------------
def test_verify_passes_on_an_untouched_build_with_originals(demo_build, demo_recipe_path):
    out, report = demo_build
    result = run("verify", "--out", out, "--recipe", demo_recipe_path, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"ok: {len(report.shard.shards)} shards, {report.shard.samples} samples, "
        f"{sum(r.stats.indexed_items for r in report.sources)} original files checked, "
        "shards, manifest and index agree"
    )


def _rewrite_member(shard: Path, suffix: str, change) -> str:
    """Rewrite one shard with the first member ending in ``suffix`` changed; return its name."""
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    target = next(m.name for m, _ in members if m.name.endswith(suffix))
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            if m.name == target:
                data = change(data)
                if data is None:
                    continue
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    return target


def test_verify_catches_a_tampered_shard(corpus_copy):
    shard = sorted((corpus_copy / "shards" / "train").glob("*.tar"))[0]

    def repaint(data: bytes) -> bytes:
        with Image.open(io.BytesIO(data)) as im:
            im = im.copy()
        im.putpixel((0, 0), 0 if im.getpixel((0, 0)) else 255)
        buf = io.BytesIO()
        im.save(buf, format=im.format or "PNG")
        return buf.getvalue()

    name = _rewrite_member(shard, ".png", repaint)
    result = run("verify", "--out", corpus_copy, "--quiet")
    assert result.exit_code == 1
    rel = f"shards/train/{shard.name}"
    assert f"image_hash             {rel}:{name}  image bytes differ from the index's image_sha256" in result.output
    assert f"shard_hash             {rel}" in result.output
    assert "wids_entry" in result.output
    assert result.output.splitlines()[-1].startswith("FAILED: ")


def test_verify_catches_a_sample_missing_from_its_shard(corpus_copy):
    shard = sorted((corpus_copy / "shards" / "val").glob("*.tar"))[0]
    name = _rewrite_member(shard, ".json", lambda data: None)
    sid = name.removesuffix(".json")
    result = verify(Corpus(str(corpus_copy)), progress=False)
    kinds = {(p.kind, p.subject) for p in result.problems}
    assert ("member_missing", f"shards/val/{shard.name}:{name}") in kinds
    assert ("shard_hash", f"shards/val/{shard.name}") in kinds
    assert not result.ok and all(p.subject.endswith(shard.name) or sid in p.subject for p in result.problems)


def test_verify_catches_a_sample_missing_from_the_manifest(corpus_copy):
    part = next((corpus_copy / "index" / "shards").glob("*.parquet"))
    table = pq.read_table(part)
    dropped = table["sample_id"][0].as_py()
    pq.write_table(table.slice(1), part)
    result = verify(Corpus(str(corpus_copy)), progress=False)
    kinds = {(p.kind, p.subject) for p in result.problems}
    assert ("not_sharded", dropped) in kinds  # a kept sample in the index is in no shard
    assert any(k == "member_unexpected" and s.endswith(f":{dropped}.json") for k, s in kinds)  # and the tar has it


def test_verify_catches_changed_and_missing_originals(corpus_copy, demo_data, tmp_path):
    root = tmp_path / "chexpert"
    shutil.copytree(demo_data / CHEX, root)
    (root / "train/patient00001/study1/view1_frontal.jpg").write_bytes(b"not the original")
    (root / "train/patient00003/study2/view1_frontal.jpg").unlink()
    result = run("verify", "--out", corpus_copy, "--root", f"demo_chexpert={root}", "--quiet")
    assert result.exit_code == 1
    assert "original_changed       demo_chexpert:train/patient00001/study1/view1_frontal.jpg" in result.output
    assert "original_missing       demo_chexpert:train/patient00003/study2/view1_frontal.jpg" in result.output
    bad = run("verify", "--out", corpus_copy, "--root", "demo_chexpert")
    assert bad.exit_code == 2 and "is not SOURCE=DIR" in bad.output


def test_verify_needs_a_built_corpus(tmp_path):
    result = run("verify", "--out", tmp_path)
    assert result.exit_code == 1 and "has no shard manifest" in result.stderr


# -- report: tests/test_report.py and tests/test_report_browser.py -----------------------


# -- object storage ------------------------------------------------------------------------
@pytest.fixture
def s3_corpus(demo_build, monkeypatch):
    """The demo build copied to a bucket on a real S3-compatible server on loopback (moto server mode)."""
    import logging

    s3fs = pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    # fsspec read FSSPEC_S3_* at import; Corpus("s3://...") picks the endpoint up from its config
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint})
    fs.mkdir("audit")
    out, _ = demo_build
    fs.put(f"{out}/", "audit/demo/", recursive=True)
    yield "s3://audit/demo", fs
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_audit_tools_read_a_corpus_on_object_storage(s3_corpus, demo_build):
    url, fs = s3_corpus
    _, report = demo_build
    counted = run("query", "SELECT count(*) AS n FROM samples WHERE status = 'keep'", "--out", url, "--format", "json")
    assert json.loads(counted.output) == {"n": report.index.kept}
    local, _ = demo_build
    merged = pq.read_table(str(local / "index" / "samples")).to_pylist()
    mr = next(s["sample_id"] for s in merged if s["n_members"] == 3)  # MR_small and its RLE and J2K copies
    data = json.loads(run("trace", mr, "--out", url, "--json").output)
    assert len(data["provenance"]) == 3
    assert run("verify", "--out", url, "--quiet").exit_code == 0
    assert run("report", "--out", url).exit_code == 2  # no local folder to default to: --to is required
    victim = sorted(fs.find("audit/demo/shards/val"))[0]
    fs.rm(victim)
    result = run("verify", "--out", url, "--quiet")
    assert result.exit_code == 1
    assert f"shard_missing          shards/val/{victim.rsplit('/', 1)[-1]}" in result.output


def test_verify_and_trace_follow_repeats_and_named_mixtures(corpus_copy, demo_recipe_path, tmp_path):
    """Up-sampled repeats (<sample_id>-rN) and shards/mixtures/<name>/ verify clean and trace back."""
    recipe = tmp_path / "weighted.toml"
    recipe.write_text(
        demo_recipe_path.read_text()
        + "weights = { demo_radimagenet = 2.0 }\n"
        + "[shard.mixtures.captions_only]\nweights = { demo_radimagenet = 0.0, demo_chexpert = 0.0 }\n"
    )
    result = run("shard", "--out", corpus_copy, "--recipe", recipe, "--quiet")
    assert result.exit_code == 0, result.output
    assert any((corpus_copy / "shards" / "mixtures" / "captions_only").rglob("*.tar"))
    checked = run("verify", "--out", corpus_copy, "--quiet")
    assert checked.exit_code == 0, checked.output
    assert checked.output.startswith("ok: ")

    manifest = pq.read_table(str(corpus_copy / "index" / "shards")).to_pylist()
    repeat = next(r for r in manifest if r["key"] and r["key"].endswith("-r1"))
    assert repeat["sample_id"].startswith("demo_radimagenet-") and repeat["key"] == f"{repeat['sample_id']}-r1"
    traced = json.loads(run("trace", f"{repeat['shard_url']}#{repeat['key']}", "--out", corpus_copy, "--json").output)
    assert traced["sample_id"] == repeat["sample_id"]
    assert traced["shard"]["shard_url"] == repeat["shard_url"]
    assert {p["mixture"] for p in traced["placements"]} == {None}  # radimagenet is weighted 0 in the mixture

    # tampering with a mixture's shard is caught like any other
    victim = next((corpus_copy / "shards" / "mixtures" / "captions_only").rglob("*.tar"))
    victim.write_bytes(victim.read_bytes()[:-2048] + b"\0" * 2048 + b"x")
    broken = run("verify", "--out", corpus_copy, "--quiet")
    assert broken.exit_code == 1 and "shard_hash" in broken.output
