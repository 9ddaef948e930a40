"""Overrides without copying cards: recipe params/image, --param/--image with --source, additive registries."""

from __future__ import annotations

import shutil

import pytest
from fake_trees import DATASET_TREES
from helpers import run

from curator.config import load_recipe
from curator.errors import CardError
from curator.registry import default_registry, find_card, override_card


def test_param_with_source_overrides_the_card(tmp_path):
    DATASET_TREES["nih_chestxray14"](tmp_path / "nih")
    # an older download: the 2017 table name, and a smaller image size asked for on the command line
    (tmp_path / "nih" / "Data_Entry_2017_v2020.csv").rename(tmp_path / "nih" / "Data_Entry_2017.csv")
    args = ["ingest", "--source", "nih_chestxray14", "--root", tmp_path / "nih", "--out", tmp_path / "c", "-q"]
    result = run(*args, "--param", 'csv=["Data_Entry_2017.csv"]', "--image", "max_side=16")
    assert result.exit_code == 0, result.output
    assert " 5 " in result.output.splitlines()[2]  # five images indexed
    # the glob the card ships finds the old name too: no override needed
    assert run(*args[:-3], "--out", tmp_path / "c2", "-q").exit_code == 0


def test_unknown_override_keys_are_one_line_errors(tmp_path):
    DATASET_TREES["busi"](tmp_path)
    base = ["ingest", "--source", "busi", "--root", tmp_path, "--out", tmp_path / "c"]
    result = run(*base, "--param", "mask_pattern=x")
    assert result.exit_code == 1
    assert (
        result.stderr.startswith("error: busi: --param/--image params.mask_pattern") and result.stderr.count("\n") == 1
    )
    result = run(*base, "--image", "max_sides=64")
    assert result.exit_code == 1 and "image.max_sides" in result.stderr
    # a card's description is the card's: --modality with --source is refused, not ignored
    result = run(*base, "--modality", "CT")
    assert result.exit_code == 2 and "--modality only apply with --adapter" in result.output


def test_recipe_sources_override_params_and_image(tmp_path):
    (tmp_path / "recipe.toml").write_text(
        'name = "r"\n[[sources]]\nid = "busi"\nroot = "data/busi"\n'
        'params = { known_labels = ["benign", "malignant"] }\nimage = { max_side = 64 }\n'
    )
    recipe = load_recipe(tmp_path / "recipe.toml")
    card, _ = find_card("busi")
    src = recipe.sources[0]
    changed = override_card(card, src.params, src.image, "recipe source 'busi'")
    assert changed.adapter.params["known_labels"] == ["benign", "malignant"]
    assert changed.adapter.params["masks"] == card.adapter.params["masks"]  # the rest of the card stays
    assert changed.image.max_side == 64 and changed.image.format == card.image.format
    with pytest.raises(CardError, match=r"recipe source 'busi' params\.levelz"):
        override_card(card, {"levelz": ["label"]}, {}, "recipe source 'busi'")


def test_a_recipe_registry_adds_to_the_shipped_cards(tmp_path):
    private = tmp_path / "cards"
    private.mkdir()
    text = (default_registry() / "busi.toml").read_text().replace('id = "busi"', 'id = "busi_local"')
    (private / "busi_local.toml").write_text(text)
    card, path = find_card("busi_local", private)
    assert card.id == "busi_local" and path.parent == private
    card, path = find_card("vqa_rad", private)  # shipped cards are still found
    assert path.parent == default_registry()
    # a private card of a shipped id wins: the recipe's registry is the more specific
    shutil.copy(default_registry() / "vqa_rad.toml", private / "vqa_rad.toml")
    assert find_card("vqa_rad", private)[1].parent == private


def test_an_unknown_source_suggests_the_nearest_ids():
    result = run("ingest", "--source", "nih_chestxray", "--root", ".", "--out", "x")
    assert result.exit_code == 1 and "did you mean nih_chestxray14" in result.stderr
