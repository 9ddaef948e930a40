"""One contract for every registered adapter and every card in the registry.

Each card validates; its adapter runs over a small fake tree mirroring the card's
layout (tests/fake_trees.py); every input ends indexed or rejected with a known
reason; sample keys are dot-free and identical across two runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fake_trees import BUILDERS, DATASET_TREES, GENERIC_PARAMS

from curator.adapters.base import Indexed, Rejected, Stats
from curator.config import IngestSettings
from curator.registry import ADAPTERS, adapter_class, adhoc_card, card_paths, default_registry, load_card
from curator.schema import IMAGES, REASONS

CARDS = card_paths(default_registry())
KEY = re.compile(r"^[a-z][a-z0-9_]*-[0-9a-f]{16}$")


def _run(card, root: Path) -> tuple[Stats, list[Indexed], list[Rejected]]:
    stats = Stats()
    out = list(adapter_class(card.adapter.name)(card, root).run(IngestSettings(), stats))
    return stats, [o for o in out if isinstance(o, Indexed)], [o for o in out if isinstance(o, Rejected)]


def _check_contract(card, root: Path, built: bool = False) -> tuple[Stats, list[Indexed], list[Rejected]]:
    if not built:
        BUILDERS[card.adapter.name](adapter_class(card.adapter.name)(card, root), root)
    stats, indexed, rejected = _run(card, root)
    assert stats.seen == stats.indexed_items + stats.rejected
    # a failed part of an indexed file (a slide tile, a video's lost frames) is a rejects row of its own
    assert stats.seen == len(indexed) + len([r for r in rejected if not r.part])
    assert sum(stats.part_rejects.values()) == len([r for r in rejected if r.part])
    assert stats.images > 0, f"{card.id}: nothing indexed from its fake tree"
    assert stats.rejected > 0, f"{card.id}: the fake tree's traps were not rejected"
    assert set(stats.rejects) <= set(REASONS), set(stats.rejects) - set(REASONS)
    for r in rejected:
        assert r.row["reason"] in REASONS and r.row["message"]
    ids = [row["sample_id"] for o in indexed for row in o.images]
    assert len(ids) == len(set(ids))
    for sid in ids:
        assert KEY.match(sid) and "." not in sid and sid.startswith(card.id + "-")
    for o in indexed:
        for row in o.images:
            assert set(row) == set(IMAGES.names)
        assert {a["sample_id"] for a in o.annotations} <= set(ids)
    again, indexed2, _ = _run(card, root)
    assert [row["sample_id"] for o in indexed2 for row in o.images] == ids
    assert again.as_dict() == stats.as_dict()
    return stats, indexed, rejected


def test_every_registered_adapter_has_a_fake_tree():
    assert set(BUILDERS) == set(ADAPTERS) == set(GENERIC_PARAMS)


@pytest.mark.parametrize("path", CARDS, ids=[p.stem for p in CARDS])
def test_card_contract(path, tmp_path):
    card = load_card(path)
    assert card.license and card.citation and card.access in ("open", "credentialed", "on-request")
    if not card.id.startswith("demo_"):
        assert card.homepage, f"{card.id}: a real source needs a homepage"
    if card.id in DATASET_TREES:
        # the layout as downloaded, from the dataset's documentation; --root given as the
        # unpack folder and as the archive's own top folder must read the same
        top = DATASET_TREES[card.id](tmp_path)
        first = _check_contract(card, tmp_path, built=True)
        if top != tmp_path:
            again = _check_contract(card, top, built=True)
            assert again[0].as_dict() == first[0].as_dict()
    else:
        _check_contract(card, tmp_path)


def test_every_named_dataset_has_its_layout_and_a_card():
    assert set(DATASET_TREES) <= {p.stem for p in CARDS}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_generic_adapter_without_card(name, tmp_path):
    card = adhoc_card(name, tmp_path, params=GENERIC_PARAMS[name], modality="X-ray", anatomy="chest")
    assert card.access == "on-request" and card.license == "LicenseRef-unspecified"
    _check_contract(card, tmp_path)
