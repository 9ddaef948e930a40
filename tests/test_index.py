"""The index step on real Parquet, read back with DuckDB and polars: merging, splits, hold-out, select.

The fixture corpus is the demo's CheXpert-layout source plus ``copy_chexpert``, a
folder-per-class source (other licence, credentialed) holding byte copies and a
resized copy of some CheXpert images, as happens when one dataset redistributes
another's pictures. A benchmark hash list and a benchmark folder hold two more.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest
import webdataset as wds
from PIL import Image

from curator.config import load_recipe
from curator.errors import CuratorError
from curator.stages.build import run_build

REPO = Path(__file__).resolve().parent.parent
CHEX = "chexpert/CheXpert-v1.0-small"

COPY_CARD = """id = "copy_chexpert"
name = "A redistribution of some CheXpert-layout images (test fixture)"
version = "test-1"
license = "CC-BY-NC-4.0"
access = "credentialed"
citation = "Test fixture."
modality = "X-ray"
anatomy = "chest"
department = "radiology"
languages = ["en"]

[adapter]
name = "class_folders"
params = { levels = ["split", "label"] }

[image]
format = "jpeg"
jpeg_quality = 92
max_side = 256
"""


def _sql(out: Path, sql: str) -> list[tuple]:
    con = duckdb.connect()
    for table in ("images", "samples", "members", "duplicates", "leakage", "shards", "sources", "annotations"):
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{out}/index/{table}/*.parquet')")
    return con.execute(sql).fetchall()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mini(demo_data, tmp_path_factory):
    """A recipe over demo_chexpert + copy_chexpert with a hold-out list and folder; returns (tmp, recipe text)."""
    tmp = tmp_path_factory.mktemp("mini")
    registry = tmp / "registry"
    registry.mkdir()
    shutil.copy(REPO / "source_registry" / "demo_chexpert.toml", registry)
    (registry / "copy_chexpert.toml").write_text(COPY_CARD)
    chex = demo_data / CHEX
    copy = tmp / "copy"
    for rel, src in {
        "test/cardiomegaly/p3.jpg": "train/patient00003/study1/view1_frontal.jpg",  # train in chexpert: conflict
        "train/pleural effusion/v.jpg": "valid/patient64542/study1/view1_frontal.jpg",  # val in chexpert: conflict
    }.items():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(chex / src, copy / rel)
    with Image.open(chex / "train/patient00005/study1/view1_frontal.jpg") as im:
        (copy / "train/edema").mkdir(parents=True)
        # a re-windowed copy: every pixel 4 levels brighter, so new bytes but the same dHash
        im.convert("L").point(lambda v: min(255, v + 4)).save(copy / "train/edema/near.png")
    bench = tmp / "bench"
    bench.mkdir()
    with Image.open(chex / "train/patient00008/study1/view1_frontal.jpg") as im:
        im.save(bench / "case8.png")  # re-encoded: a new file hash, the same picture
    (tmp / "bench.sha256").write_text(
        f"# benchmark test images\n{_sha(chex / 'train/patient00007/study1/view1_frontal.jpg')}  case7.jpg\n"
    )
    recipe = f"""
name = "mini"
seed = 7
registry = "{registry}"

[[sources]]
id = "demo_chexpert"
root = "{chex}"

[[sources]]
id = "copy_chexpert"
root = "{copy}"

# The demo's synthetic radiographs are smooth look-alikes whose dHashes sit 1-4 bits
# apart; 0 bits (same dHash, other bytes) isolates the resized copy.
[duplicates]
near_threshold = 0
near_action = "drop"

[holdout]
hash_lists = ["bench.sha256"]
folders = ["bench"]
near_threshold = 0
"""
    return tmp, recipe


def _build(tmp: Path, recipe: str, name: str, extra: str = ""):
    path = tmp / f"{name}.toml"
    path.write_text(recipe + extra)
    out = tmp / name
    return out, run_build(load_recipe(path), str(out), progress=False)


@pytest.fixture(scope="module")
def merged(mini):
    return _build(*mini, "merged")


def _chex_id(out: Path, uri: str) -> str:
    """The sample an original file ended up in (its own id, or the merged sample's)."""
    (sid,) = _sql(
        out,
        f"SELECT mb.sample_id FROM images i JOIN members mb ON mb.member_id = i.sample_id WHERE original_uri = '{uri}'",
    )[0]
    return sid


def test_cross_source_copies_merge_into_one_sample_with_both_provenances(merged):
    out, report = merged
    assert report.index.exact_cross_source == 2 and report.index.merged_samples == 2
    rows = _sql(
        out,
        "SELECT s.sample_id, s.source_ids, s.n_members, list(mb.member_id ORDER BY mb.member_id) "
        "FROM samples s JOIN members mb USING (sample_id) WHERE len(s.source_ids) > 1 GROUP BY ALL ORDER BY 1",
    )
    assert len(rows) == 2
    for sid, sources, n, members in rows:
        assert sources == ["copy_chexpert", "demo_chexpert"] and n == 2
        assert sid == min(members)  # the canonical id is the smallest member id: stable, dot-free
        assert "." not in sid
    dup = _sql(out, "SELECT kind, action, distance FROM duplicates WHERE kind = 'exact_cross_source'")
    assert dup == [("exact_cross_source", "merged", 0)] * 2
    # every image row belongs to exactly one sample
    assert _sql(out, "SELECT count(*), count(DISTINCT member_id) FROM members") == [(report.index.images,) * 2]


def test_merged_sample_in_the_shard_lists_every_source_and_annotation(merged):
    out, _ = merged
    sid = _sql(out, "SELECT sample_id FROM samples WHERE len(source_ids) > 1 AND split = 'test'")[0][0]
    urls = sorted(str(p) for p in (out / "shards").rglob("*.tar"))
    sample = next(s for s in wds.WebDataset(urls, shardshuffle=False) if s["__key__"] == sid)
    meta = json.loads(sample["json"])
    assert {p["source_id"] for p in meta["provenance"]} == {"demo_chexpert", "copy_chexpert"}
    assert meta["licenses"] == ["CC-BY-NC-4.0", "CC0-1.0"] and meta["access"] == ["credentialed", "open"]
    by_source = {(lab["source_id"], lab["label"]) for lab in meta["labels"]}
    assert ("copy_chexpert", "cardiomegaly") in by_source
    assert any(src == "demo_chexpert" for src, _ in by_source)
    originals = {p["original_uri"] for p in meta["provenance"]}
    assert originals == {"train/patient00003/study1/view1_frontal.jpg", "test/cardiomegaly/p3.jpg"}
    # the caption triplet pools both sources' positive findings
    assert "cardiomegaly" in meta["triplet"]["label"]


def test_disagreeing_splits_take_the_strictest_and_carry_the_patient(merged):
    out, report = merged
    assert report.index.split_conflicts == 2
    p3 = _chex_id(out, "train/patient00003/study1/view1_frontal.jpg")
    p3_other = _chex_id(out, "train/patient00003/study2/view1_frontal.jpg")
    v = _chex_id(out, "valid/patient64542/study1/view1_frontal.jpg")
    splits = dict(_sql(out, "SELECT sample_id, split || '/' || split_rule FROM samples"))
    assert splits[p3] == "test/strictest"  # chexpert says train, the copy's official split says test
    assert splits[p3_other] == "test/strictest"  # same patient, no merge of its own: follows the patient
    assert splits[v] == "val/strictest"
    assert report.index.split_moved == 3
    # still: no patient in two splits, seen through samples
    straddling = _sql(
        out,
        "SELECT i.source_id, i.patient_key FROM images i JOIN members mb ON mb.member_id = i.sample_id "
        "JOIN samples s ON s.sample_id = mb.sample_id WHERE i.patient_key IS NOT NULL "
        "GROUP BY 1, 2 HAVING count(DISTINCT s.split) > 1",
    )
    assert straddling == []
    manifest = dict(_sql(out, "SELECT sample_id, split FROM shards"))
    assert manifest[p3] == "test" and manifest[p3_other] == "test"


def test_near_duplicate_is_dropped_by_policy(merged):
    out, report = merged
    near = _sql(
        out,
        "SELECT sample_id, other_id, source_id, other_source_id, distance, action FROM duplicates WHERE kind = 'near'",
    )
    p5 = _chex_id(out, "train/patient00005/study1/view1_frontal.jpg")
    copy = _chex_id(out, "train/edema/near.png")
    pair = [r for r in near if {r[0], r[1]} == {p5, copy}]
    assert len(pair) == 1 and pair[0][4] == 0 and pair[0][5] == "dropped"
    keeper, dropped = pair[0][0], pair[0][1]
    assert keeper == min(p5, copy)  # both in train: the smaller id is kept
    status = dict(_sql(out, "SELECT sample_id, status || ':' || coalesce(duplicate_of, '') FROM samples"))
    assert status[dropped] == f"near_duplicate:{keeper}"
    assert report.index.near_dropped == len(near) >= 1
    sharded = {r[0] for r in _sql(out, "SELECT sample_id FROM shards")}
    assert dropped not in sharded and keeper in sharded


def test_holdout_benchmark_images_are_excluded_and_listed(merged):
    out, report = merged
    p7 = _chex_id(out, "train/patient00007/study1/view1_frontal.jpg")
    p8 = _chex_id(out, "train/patient00008/study1/view1_frontal.jpg")
    leaks = {r[0]: r[1:] for r in _sql(out, "SELECT sample_id, benchmark, benchmark_item, match, action FROM leakage")}
    assert leaks[p7] == ("bench", "case7.jpg", "original_sha256", "excluded")
    assert leaks[p8][:3] == ("bench", "case8.png", "phash") and leaks[p8][3] == "excluded"
    assert report.index.held_out == 2
    status = dict(_sql(out, "SELECT sample_id, status FROM samples"))
    assert status[p7] == status[p8] == "held_out"
    sharded = {r[0] for r in _sql(out, "SELECT sample_id FROM shards")}
    assert p7 not in sharded and p8 not in sharded
    # kept + left out = samples, and every kept sample is sharded exactly once
    kept = {r[0] for r in _sql(out, "SELECT sample_id FROM samples WHERE status = 'keep'")}
    assert kept == sharded and len(kept) == report.index.kept == report.shard.samples
    from curator.audit.trace import format_trace, trace
    from curator.storage import Corpus

    text = format_trace(trace(Corpus(str(out)), p7))
    assert "hold-out    bench/case7.jpg by original_sha256 (distance 0), excluded" in text
    assert "shard       none (left out: held_out)" in text


def test_the_open_subset_leaves_credentialed_sources_out(mini):
    tmp, recipe = mini
    out, report = _build(tmp, recipe, "open", '\n[select]\nexclude_access = ["credentialed"]\n')
    assert set(report.excluded) == {"copy_chexpert"}
    assert "credentialed" in report.excluded["copy_chexpert"]
    assert [r.source_id for r in report.sources] == ["demo_chexpert"]
    assert _sql(out, "SELECT DISTINCT license, access FROM sources") == [("CC0-1.0", "open")]
    assert report.index.merged_samples == 0
    for sample in wds.WebDataset(sorted(str(p) for p in (out / "shards").rglob("*.tar")), shardshuffle=False):
        assert json.loads(sample["json"])["licenses"] == ["CC0-1.0"]


def test_a_select_that_leaves_nothing_is_one_clear_error(mini):
    tmp, recipe = mini
    with pytest.raises(CuratorError, match=r"\[select\] leaves out every source"):
        _build(tmp, recipe, "none", '\n[select]\nlicenses = ["MIT", "CC0-*"]\naccess = ["on-request"]\n')


def test_a_bad_hash_list_line_is_one_clear_error(mini, tmp_path):
    tmp, recipe = mini
    bad = tmp_path / "bad.txt"
    bad.write_text("not-a-hash  x.png\n")
    text = recipe.replace('hash_lists = ["bench.sha256"]', f'hash_lists = ["{bad}"]')
    with pytest.raises(CuratorError, match=r"bad.txt:1: not a sha256 hex digest"):
        _build(tmp_path, text, "bad")


def test_demo_dicom_copies_collapse_within_the_source(demo_build):
    out, report = demo_build
    # MR_small, its RLE and its JPEG 2000 copies: identical pixels, one sample of three members
    rows = _sql(out, "SELECT n_members, source_ids FROM samples WHERE n_members > 1")
    assert rows == [(3, ["demo_dicom"])]
    assert report.index.exact_same_source == 2 and report.index.exact_cross_source == 0
    assert report.index.samples == report.index.images - 2
    # the parts are real Parquet, and polars reads the same counts
    samples = pl.read_parquet(str(out / "index" / "samples" / "*.parquet"))
    assert samples.height == report.index.samples and samples["sample_id"].n_unique() == samples.height


def test_index_rerun_is_skipped_and_a_new_holdout_reruns_it(mini, tmp_path):
    tmp, recipe = mini
    text = recipe.replace('folders = ["bench"]', f'folders = ["{tmp / "bench"}"]').replace(
        'hash_lists = ["bench.sha256"]', f'hash_lists = ["{tmp / "bench.sha256"}"]'
    )
    out, first = _build(tmp_path, text, "again")
    _, second = _build(tmp_path, text, "again")
    assert second.index.skipped and second.index.kept == first.index.kept
    extra = tmp_path / "more.sha256"
    extra.write_text(_sha(tmp / "copy" / "train/edema/near.png") + "\n")
    _, third = _build(tmp_path, text.replace("hash_lists = [", f'hash_lists = ["{extra}", '), "again")
    assert not third.index.skipped and third.index.held_out == first.index.held_out + 1


def test_select_matches_licence_patterns_and_access_classes():
    from curator.config import SelectSettings
    from curator.registry import load_card
    from curator.stages.build import exclusion

    card = load_card(REPO / "source_registry" / "demo_dicom.toml")  # LicenseRef-pydicom-test-data, open
    assert exclusion(card, SelectSettings()) is None
    assert exclusion(card, SelectSettings(licenses=["CC0-*", "LicenseRef-*"])) is None
    assert "matches none" in exclusion(card, SelectSettings(licenses=["CC0-*"]))
    assert "'LicenseRef-*'" in exclusion(card, SelectSettings(exclude_licenses=["LicenseRef-*"]))
    assert exclusion(card, SelectSettings(access=["open"])) is None
    assert "exclude_access" in exclusion(card, SelectSettings(exclude_access=["open"]))


def test_build_summary_prints_merge_duplicate_split_and_leakage_counts(merged, mini):
    from click.testing import CliRunner

    from curator.cli import main

    tmp, _ = mini
    out, report = merged
    result = CliRunner().invoke(main, ["build", "--recipe", str(tmp / "merged.toml"), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    text = result.output
    r = report.index
    assert f"  {r.images} images -> {r.samples} samples, {r.kept} kept  (unchanged, skipped)" in text
    assert "  exact duplicates merged: 0 within a source, 2 across sources (2 samples hold several sources)" in text
    assert f"  near-duplicates: {r.near_pairs} dropped" in text
    assert "  splits: 2 samples with disagreeing members, 3 moved to the stricter split" in text
    assert "  hold-out benchmarks: 2 samples excluded, 0 near matches flagged" in text


def test_split_moves_reach_only_components_with_a_disagreement():
    from curator.stages.index import _reconcile_splits

    con = duckdb.connect()
    con.execute(
        """
        CREATE TEMP TABLE m AS SELECT * FROM (VALUES
            ('s1', 'a-1', 'src1/p1', 'train'),  -- s1 merges a train image (patient p1) ...
            ('s1', 'b-1', 'src2/q1', 'test'),   -- ... with a test image of another source
            ('s2', 'a-2', 'src1/p1', 'train'),  -- p1's other image must follow s1 into test
            ('s3', 'a-3', 'src1/p2', 'train'),  -- another patient: untouched
            ('s4', 'c-1', 'src3/r1', 'train'),  -- a source that put one patient in two splits,
            ('s5', 'c-2', 'src3/r1', 'val'),    -- with no merge involved: its choice stands
            ('s6', 'c-3', NULL, 'val')          -- no patient or study: a group of its own
        ) t(sample_id, member_id, grp, split)
        """
    )
    fixes, conflicts = _reconcile_splits(con)
    assert conflicts == 1
    assert fixes == {"s1": "test", "s2": "test"}


def test_stages_run_one_by_one_refuse_a_missing_or_stale_index(demo_data, tmp_path):
    from click.testing import CliRunner

    from curator.cli import main

    def run(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    out = tmp_path / "c"
    assert run("ingest", "--source", "demo_rocov2", "--root", demo_data / "rocov2", "--out", out, "-q").exit_code == 0
    early = run("caption", "--out", out)
    assert early.exit_code == 1
    assert (
        early.stderr.strip() == f"error: {out} has no 'samples' table: run `curator index` (or `curator build`) first"
    )
    indexed = run("index", "--out", out)
    assert indexed.exit_code == 0 and "index\n  8 images -> 8 samples, 8 kept" in indexed.output
    assert run("caption", "--out", out).exit_code == 0
    assert (
        run("ingest", "--source", "demo_zh_captions", "--root", demo_data / "zh_captions", "--out", out, "-q").exit_code
        == 0
    )
    stale = run("shard", "--out", out, "-q")
    assert stale.exit_code == 1
    assert stale.stderr.strip() == (
        f"error: {out}: sources were ingested after the index step: run `curator index` again"
    )
    assert run("index", "--out", out).exit_code == 0
    assert run("shard", "--out", out, "-q").exit_code == 0
    assert run("verify", "--out", out, "-q").exit_code == 0


def test_the_open_demo_recipe_leaves_out_only_the_licenceref_source():
    from curator.registry import find_card
    from curator.stages.build import exclusion

    recipe = load_recipe(REPO / "recipes" / "demo-open.toml")
    left_out = {s.id for s in recipe.sources if exclusion(find_card(s.id)[0], recipe.select)}
    assert left_out == {"demo_dicom"}
