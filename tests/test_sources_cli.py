"""`curator sources list|adapters`, the README's generated adapter reference, and card mistakes in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fake_trees import DATASET_TREES
from helpers import run

from curator.adapters.base import Stats
from curator.config import IngestSettings
from curator.errors import CardError
from curator.registry import ADAPTERS, adapter_class, adapter_parameters, adapters_markdown, find_card

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_adapter_reference_is_generated_from_the_models():
    text = README.read_text(encoding="utf-8")
    section = re.search(r"<!-- adapters:begin -->\n(.*)<!-- adapters:end -->", text, re.S)
    assert section, "README lacks the generated adapter section"
    assert section.group(1) == adapters_markdown(), "run: curator sources adapters --markdown, paste into README"
    assert run("sources", "adapters", "--markdown").output == adapters_markdown()


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_every_adapter_parameter_is_described(name):
    rows = adapter_parameters(name)
    assert rows, name
    assert not [r[0] for r in rows if not r[3]], f"{name}: parameters without a description"
    out = run("sources", "adapters", name).output
    assert all(f"  {r[0]} " in out for r in rows)


def test_sources_list_filters_by_modality_access_and_adapter():
    out = run("sources", "list", "--modality", "ct", "--access", "open").output
    ids = [line.split()[0] for line in out.splitlines()[1:-1]]
    assert "msd_spleen" in ids and "busi" not in ids and "chexpert" not in ids
    out = run("sources", "list", "--adapter", "class_folders").output
    assert out.count(" class_folders ") == len(out.splitlines()) - 2  # every row, not the header or count
    assert re.search(r"^\d+ of \d+ card\(s\)$", out.splitlines()[-1])
    bad = run("sources", "list", "--adapter", "no_such")
    assert bad.exit_code == 1 and "unknown adapter 'no_such'" in bad.stderr


def _adapter(source_id, root):
    card, _ = find_card(source_id)
    return adapter_class(card.adapter.name)(card, root)


def _first_error(source_id, root) -> str:
    with pytest.raises(CardError) as exc:
        list(_adapter(source_id, root).run(IngestSettings(), Stats()))
    return str(exc.value)


def test_a_missing_table_names_the_nearest_files(tmp_path):
    DATASET_TREES["nih_chestxray14"](tmp_path)
    (tmp_path / "Data_Entry_2017_v2020.csv").rename(tmp_path / "Data_Entry.csv")
    msg = _first_error("nih_chestxray14", tmp_path)
    assert "'Data_Entry_2017*.csv' not found" in msg and "nearest: Data_Entry.csv" in msg and "\n" not in msg


def test_a_missing_column_names_the_available_ones(tmp_path):
    DATASET_TREES["aptos2019"](tmp_path)
    path = tmp_path / "train.csv"
    path.write_text(path.read_text().replace("diagnosis", "diagnosis_grade", 1))
    msg = _first_error("aptos2019", tmp_path)
    assert "train.csv lacks column(s) 'diagnosis' (did you mean 'diagnosis_grade'?)" in msg
    assert "available: id_code, diagnosis_grade" in msg


def test_a_missing_image_folder_names_what_is_there(tmp_path):
    DATASET_TREES["ham10000"](tmp_path)
    for part in tmp_path.glob("HAM10000_images_part_*"):
        part.rename(tmp_path / part.name.replace("HAM10000_images", "images"))
    msg = _first_error("ham10000", tmp_path)
    assert "no image folder matches" in msg and "images_part_1" in msg


def test_coverage_page_names_only_cards_that_exist():
    """source_registry/COVERAGE.md maps UniMed-CLIP's and the GMAI-VL family's sources to cards."""
    registry = README.parent / "source_registry"
    text = (registry / "COVERAGE.md").read_text(encoding="utf-8")
    cards = {p.stem for p in registry.glob("*.toml")}
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    rows = [r for r in rows if not r.startswith("| dataset")]
    assert len(rows) > 100
    named = set()
    for row in rows:
        dataset, card, notes = (c.strip() for c in row.strip("|").split("|"))
        if card == "none":
            assert notes, f"{dataset}: a row without a card must say why"
            continue
        ids = re.findall(r"`([a-z0-9_]+)`", card + " " + notes)
        assert ids, f"{dataset}: neither a card nor 'none'"
        named.update(ids)
    assert named <= cards, f"COVERAGE.md names missing cards: {sorted(named - cards)}"
    # the UniMed-CLIP list's constituents of the FLAIR collection and its other sources all appear
    for must in ("chexpert", "radimagenet", "quilt_1m", "rocov2", "llava_med", "aptos2019", "refuge", "pathvqa"):
        assert must in named
