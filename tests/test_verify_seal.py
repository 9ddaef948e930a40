"""verify checks the seal and the tables: every tampering an auditor would worry about fails, in one line each."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import run

from curator.storage import SEAL


def _part(out: Path, table: str) -> Path:
    return sorted((out / "index" / table).glob("part-*.parquet"))[0]


def _set(out: Path, table: str, column: str, value) -> None:
    path = _part(out, table)
    t = pq.read_table(path)
    assert t.num_rows, table
    i = t.column_names.index(column)
    values = t.column(column).to_pylist()
    values[0] = value
    pq.write_table(t.set_column(i, column, [values]), path, compression="zstd")


def _flip(path: Path, where: float) -> None:
    data = bytearray(path.read_bytes())
    i = min(len(data) - 1, int(len(data) * where))
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _manifest(out: Path, edit) -> None:
    path = out / "shards" / "manifest.json"
    m = json.loads(path.read_text())
    edit(m["shards"][0])
    path.write_text(json.dumps(m))


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    assert set(changes) <= set(data), path
    data.update(changes)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _a_shard(out: Path) -> Path:
    return sorted((out / "shards").rglob("*.tar"))[0]


def _a_blob(out: Path) -> Path:
    """A pack of blobs (curator.blobs): a flip at 50% lands in some image's bytes or its tar header."""
    return sorted((out / "blobs" / "packs").glob("*.tar"))[0]


TAMPERINGS = {
    "sources.license CC0 -> MIT": lambda o: _set(o, "sources", "license", "MIT"),
    "sources.access": lambda o: _set(o, "sources", "access", "open" if "open" != _first(o) else "credentialed"),
    "annotation text": lambda o: _set(o, "annotations", "text", "tampered"),
    "caption text": lambda o: _set(o, "captions", "caption", "tampered caption"),
    "images.original_sha256": lambda o: _set(o, "images", "original_sha256", "0" * 64),
    "rejects.reason": lambda o: _set(o, "rejects", "reason", "corrupt"),
    "manifest nsamples": lambda o: _manifest(o, lambda s: s.update(nsamples=s["nsamples"] + 1)),
    "manifest split": lambda o: _manifest(o, lambda s: s.update(split="test" if s["split"] != "test" else "train")),
    "broken manifest.json": lambda o: (o / "shards" / "manifest.json").write_text('{"shards": [{"url'),
    "stray .tar.gz": lambda o: (o / "shards" / "extra.tar.gz").write_bytes(b"\x1f\x8b junk"),
    "stray file in index": lambda o: (o / "index" / "images" / "notes.txt").write_text("x"),
    "orphaned pack": lambda o: shutil.copy(_a_blob(o), _a_blob(o).with_name("zz-999999.tar")),
    "stray file in blobs": lambda o: (o / "blobs" / "notes.txt").write_text("x"),
    "blob bytes": lambda o: _flip(_a_blob(o), 0.5),
    "blob deleted": lambda o: _a_blob(o).unlink(),
    "shard byte flip": lambda o: _flip(_a_shard(o), 0.5),
    "seal deleted": lambda o: (o / SEAL).unlink(),
    "seal broken": lambda o: (o / SEAL).write_text("{"),
    "marker edited": lambda o: (o / "_markers" / "index" / "all.json").write_text("{}"),
    "sizes or wids index edited": lambda o: _flip(sorted((o / "shards").rglob("*.wids.json"))[0], 0.3),
    "build.json times edited": lambda o: _edit_json(o / "shards" / "build.json", finished_at="2020-01-01T00:00:00Z"),
    "build.json recipe edited": lambda o: _edit_json(o / "shards" / "build.json", recipe={"name": "other"}),
    "build.json deleted": lambda o: (o / "shards" / "build.json").unlink(),
    "recipe.json edited": lambda o: _edit_json(o / "recipe.json", kind="x"),
}
TABLES = ("sources", "images", "annotations", "captions", "rejects", "samples", "shards")
for _table in TABLES:
    for _where in (0.1, 0.5, 0.98):
        TAMPERINGS[f"byte flip in {_table} at {_where:.0%}"] = lambda o, t=_table, w=_where: _flip(_part(o, t), w)


def _first(out: Path) -> str:
    return pq.read_table(_part(out, "sources")).column("access")[0].as_py()


@pytest.fixture(scope="module")
def sealed(demo_build, tmp_path_factory) -> Path:
    out, _ = demo_build
    copy = tmp_path_factory.mktemp("sealed") / "corpus"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report"))
    result = run("verify", "--out", copy, "-q")
    assert result.exit_code == 0 and result.output.startswith("ok: "), result.output
    return copy


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_every_tampering_fails_verify_in_one_line_each(sealed, tmp_path, name):
    out = tmp_path / "corpus"
    shutil.copytree(sealed, out)
    TAMPERINGS[name](out)
    result = run("verify", "--out", out, "-q")
    assert result.exit_code == 1, (name, result.output)
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("FAILED: ") and all(line.strip() for line in lines), result.output


def test_a_damaged_part_makes_the_next_build_name_it(demo_recipe_path, demo_build, tmp_path):
    out, _ = demo_build
    copy = tmp_path / "corpus"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report"))
    part = _part(copy, "captions")
    data = part.read_bytes()
    part.write_bytes(data[:-12] + b"\x00" * 12)  # the footer
    result = run("build", "--recipe", demo_recipe_path, "--out", copy, "-q")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert f"index/captions/{part.name} is damaged" in lines[0] and "delete it" in lines[0]
    part.unlink()
    assert run("build", "--recipe", demo_recipe_path, "--out", copy, "-q").exit_code == 0
    assert run("verify", "--out", copy, "-q").exit_code == 0


def test_build_json_and_recipe_json_are_sealed(sealed):
    """Two builds' seals differ in build.json's entry only (its times): the kill and resume tests compare the rest."""
    seal = json.loads((sealed / SEAL).read_text())["files"]
    for rel in ("shards/build.json", "recipe.json"):
        assert seal[rel] == hashlib.sha256((sealed / rel).read_bytes()).hexdigest(), rel
    assert "_recipe.json" not in seal and not (sealed / "_recipe.json").exists()


def test_a_source_the_recipe_drops_leaves_no_blob_behind(demo_build, demo_recipe_path, tmp_path):
    out, _ = demo_build
    copy = tmp_path / "corpus"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report"))
    text = demo_recipe_path.read_text()
    fewer = tmp_path / "fewer.toml"
    fewer.write_text(re.sub(r'\[\[sources\]\]\nid = "demo_rocov2"\nroot = "[^"]*"\n', "", text))
    assert fewer.read_text() != text
    images = pq.read_table(copy / "index" / "images").to_pylist()
    dropped = {r["image_sha256"] for r in images if r["source_id"] == "demo_rocov2"}
    packs = {p.name for p in (copy / "blobs" / "packs").glob("demo_rocov2-*.tar")}
    assert dropped and packs
    assert run("build", "--recipe", fewer, "--out", copy, "-q").exit_code == 0
    kept = {r["image_sha256"] for r in pq.read_table(copy / "index" / "images").to_pylist()}
    assert not dropped & kept and not list((copy / "blobs" / "packs").glob("demo_rocov2-*.tar"))
    located = {r["image_sha256"] for r in pq.read_table(copy / "index" / "blob_packs").to_pylist()}
    assert located == kept  # every kept image has its pack entry, and no dropped image has one
    tars = (copy / "blobs" / "packs").glob("*.tar")
    members = {m.rsplit(".", 1)[0] for p in tars for m in tarfile.open(p).getnames()}
    assert members == kept
    result = run("verify", "--out", copy, "-q")
    assert result.exit_code == 0 and result.output.startswith("ok: "), result.output
