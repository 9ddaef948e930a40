"""What table layouts share: finding tables by glob, per-row fields, value maps, split rules.

- **Tables by glob.** A card names ``Data_Entry_2017*.csv`` and reads NIH's
  ``Data_Entry_2017_v2020.csv`` as well as the 2017 file. A table that is not
  there is a card error naming what was looked for and the nearest names found.
- **Per-row fields.** ``split_column``, ``modality_column``, ``anatomy_column``,
  ``patient_column`` take the value from the row; ``value_maps`` renames values
  per field (``{split = {test_freeform = "test"}, anatomy = {ABD = "abdomen"}}``).
- **Strictest split.** Several rows may name one image with different splits
  (VQA-RAD's ``freeform`` and ``test_freeform`` questions about one image): a first
  pass over the rows finds each image's strictest split (test, then val, then
  train), every row of it gets that split, and the disagreement is counted.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from curator.adapters.base import SPLITS, Params
from curator.errors import CardError

RANK = {"test": 0, "val": 1, "train": 2}
Field_ = Literal["split", "modality", "anatomy", "label", "patient"]


class RowParams(Params):
    split_column: str | None = Field(None, description="Column holding each row's split (mapped by value_maps.split).")
    modality_column: str | None = Field(None, description="Column holding each row's modality (SLAKE 'modality').")
    anatomy_column: str | None = Field(None, description="Column holding each row's anatomy (VQA-RAD 'image_organ').")
    patient_column: str | None = Field(None, description="Column holding the patient (or lesion) id to group splits.")
    value_maps: dict[Field_, dict[str, str]] = Field(
        default_factory=dict,
        description="Per field (split, modality, anatomy, label, patient): native value -> value used.",
    )


class BoxTable(BaseModel):
    """A table of boxes per image (NIH ``BBox_List_2017.csv``, VinDr-CXR ``annotations_train.csv``)."""

    model_config = ConfigDict(extra="forbid")
    table: str = Field(description="Table file (a glob) relative to the root.")
    image_column: str = Field(description="Column naming the image, as the label table names it.")
    label_column: str = Field(description="Column naming the finding the box marks.")
    columns: list[str] = Field(min_length=4, max_length=4, description="The four coordinate columns, in order.")
    format: Literal["xywh", "xyxy"] = Field("xywh", description="x, y, width, height or x0, y0, x1, y1 (pixels).")


def row_value(p: RowParams, row: dict, field: str, column: str | None) -> str | None:
    if not column:
        return None
    value = str(row.get(column) or "").strip()
    if not value:
        return None
    return p.value_maps.get(field, {}).get(value, value)


def nearest(folder: Path, name: str, n: int = 3) -> str:
    """The nearest file names in a folder, for a message ("nearest: a.csv, b.csv")."""
    try:
        names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("._"))
    except OSError:
        return f"folder {folder.name}/ not found"
    close = difflib.get_close_matches(Path(name).name, names, n=n, cutoff=0.3)
    if close:
        return "nearest: " + ", ".join(close)
    return "found: " + (", ".join(names[:6]) + (" ..." if len(names) > 6 else "") if names else "nothing")


def find_tables(card_id: str, root: Path, patterns: Iterable[str], what: str = "table") -> list[tuple[str, Path]]:
    """(pattern, path) for every file each pattern matches, sorted; a pattern matching nothing is an error."""
    out: list[tuple[str, Path]] = []
    for pattern in patterns:
        matches = [p for p in sorted(root.glob(pattern)) if p.is_file() and not p.name.startswith("._")]
        if not matches:
            folder = (root / pattern).parent
            raise CardError(f"{card_id}: {what} '{pattern}' not found under {root} ({nearest(folder, pattern)})")
        out += [(pattern, m) for m in matches]
    return out


def check_columns(card_id: str, table: str, fieldnames: Iterable[str] | None, needed: Iterable[str | None]) -> None:
    have = [f for f in (fieldnames or []) if f is not None]
    missing = [c for c in needed if c and c not in have]
    if missing:
        close = {c: difflib.get_close_matches(c, have, n=1, cutoff=0.5) for c in missing}
        hints = "; ".join(f"'{c}' (did you mean '{m[0]}'?)" if m else f"'{c}'" for c, m in close.items())
        raise CardError(f"{card_id}: {table} lacks column(s) {hints}; available: {', '.join(have) or 'none'}")


def normal_split(value: str | None) -> str | None:
    return SPLITS.get((value or "").strip().lower()) if value else None


class StrictestSplit:
    """Collects (image, split) over a first pass; ``get`` gives the strictest, ``conflicts`` counts images."""

    def __init__(self) -> None:
        self._rank: dict[str, int] = {}
        self._mixed: set[str] = set()

    def add(self, key: str, split: str | None) -> None:
        rank = RANK.get(normal_split(split) or "")
        if rank is None:
            return
        old = self._rank.get(key)
        if old is not None and old != rank:
            self._mixed.add(key)
        if old is None or rank < old:
            self._rank[key] = rank

    def get(self, key: str, split: str | None) -> str | None:
        if key in self._mixed:
            return {v: k for k, v in RANK.items()}[self._rank[key]]
        return split

    @property
    def conflicts(self) -> int:
        return len(self._mixed)
