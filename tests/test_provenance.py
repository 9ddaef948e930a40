"""Build provenance: shards/build.json beside the shards, and the corpus remembering its recipe."""

from __future__ import annotations

import json
import re
import socket

import polars as pl
from helpers import copy_corpus, run

from curator.config import load_recipe
from curator.demo import write_demo_recipe
from curator.provenance import BUILD_FILE, RECIPE_FILE, recipe_sha256, stored_recipe
from curator.storage import Corpus


def test_build_json_names_version_recipe_cards_and_times_and_nothing_of_the_host(demo_build, demo_recipe_path):
    out, report = demo_build
    text = (out / BUILD_FILE).read_text()
    record = json.loads(text)
    assert record["kind"] == "curator-build-v1" and record["curator_version"]
    recipe = load_recipe(demo_recipe_path)
    assert record["recipe"] == {"name": "demo", "seed": recipe.seed, "sha256": recipe_sha256(recipe)}
    sources = pl.read_parquet(str(out / "index" / "sources" / "*.parquet")).sort("source_id")
    assert [s["source_id"] for s in record["sources"]] == sources["source_id"].to_list()
    assert [s["card_sha256"] for s in record["sources"]] == sources["card_sha256"].to_list()
    assert all(s["version"] for s in record["sources"])
    assert record["shards"]["manifest_sha256"] == Corpus(str(out)).sha256("shards/manifest.json")
    main_set = [s for s in report.shard.shards if s.mixture is None]
    assert sum(record["shards"]["samples_per_split"].values()) == sum(s.nsamples for s in main_set)
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(stamp, record["started_at"]) and re.fullmatch(stamp, record["finished_at"])
    assert record["started_at"] <= record["finished_at"]
    # host-independent: no paths of this machine, no host name
    assert str(out) not in text and str(demo_recipe_path.parent) not in text and "/tmp" not in text
    assert socket.gethostname() not in text
    # outside the tars: no shard member carries a time
    assert not any(p.name == "build.json" for p in (out / "shards").rglob("*.tar"))


def test_the_recipe_sha256_is_the_same_wherever_the_sources_lie(demo_data, tmp_path):
    here = load_recipe(write_demo_recipe(demo_data, tmp_path))
    (tmp_path / "other").mkdir()
    elsewhere = load_recipe(write_demo_recipe(tmp_path / "elsewhere" / "data", tmp_path / "other"))
    assert here.sources[0].root != elsewhere.sources[0].root
    assert recipe_sha256(here) == recipe_sha256(elsewhere)
    changed = here.model_copy(update={"seed": here.seed + 1})
    assert recipe_sha256(changed) != recipe_sha256(here)


def test_caption_and_shard_without_recipe_use_the_builds(demo_build, tmp_path):
    out, _ = demo_build
    assert stored_recipe(Corpus(str(out))).caption.captions_per_triplet == 5
    copy = copy_corpus(out, tmp_path / "copy", done=("ingest", "index"))
    for part in (copy / "index" / "captions").glob("*.parquet"):
        part.unlink()
    result = run("caption", "--out", copy, "--quiet")
    assert result.exit_code == 0, result.output
    assert "recipe: 'demo', the one this corpus was built with (recipe.json)" in result.output
    counts = pl.read_parquet(str(copy / "index" / "captions" / "*.parquet")).group_by("triplet_id", "language").len()
    assert set(counts["len"]) == {5}  # the demo recipe's, not the default 10
    result = run("shard", "--out", copy, "--quiet")
    assert result.exit_code == 0, result.output
    built = json.loads((out / "shards" / "manifest.json").read_text())["shards"]
    again = json.loads((copy / "shards" / "manifest.json").read_text())["shards"]
    # the recipe's name, max_samples and seed: the same shards, byte for byte
    assert [(s["url"], s["sha256"]) for s in again] == [(s["url"], s["sha256"]) for s in built]
    assert all(s["url"].split("/")[-1].startswith("demo-") for s in again)


def test_a_corpus_no_build_wrote_keeps_the_defaults_and_a_broken_recipe_json_is_one_line(demo_build, tmp_path):
    out, _ = demo_build
    copy = copy_corpus(out, tmp_path / "copy", done=("ingest", "index"))
    (copy / RECIPE_FILE).unlink()
    assert stored_recipe(Corpus(str(copy))) is None
    result = run("caption", "--out", copy, "--dry-run")
    assert result.exit_code == 0 and "recipe:" not in result.output
    (copy / RECIPE_FILE).write_text(json.dumps({"kind": "curator-recipe-v1", "recipe": {"name": "x"}}))
    result = run("shard", "--out", copy)
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {copy}/recipe.json: sources: Field required (pass --recipe)"
