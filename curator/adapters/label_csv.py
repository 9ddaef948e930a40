"""Label tables: one row per image, single- or multi-label.

Two shapes cover the major chest X-ray sets:

- ``label_columns`` (CheXpert, MIMIC-CXR-JPG): a column per finding holding
  1 / 0 / -1 / blank. Uncertainty policy (``uncertain``): ``keep`` records -1 as an
  ``uncertain`` annotation (the default: training code chooses U-Ones or
  U-Zeros later), ``positive`` / ``negative`` map it, ``drop`` omits it. Blank means
  not mentioned and yields no annotation.
- ``label_column`` + ``separator`` (NIH ChestX-ray14 ``Finding Labels`` split on
  ``|``): every listed finding is positive.

Official splits come from which CSV a row is in (``csv_splits``) or from image
lists (``split_lists``, NIH's ``train_val_list.txt`` / ``test_list.txt``).

NIH ships images in twelve folders (``images_001/images/`` ... ``images_012/images/``)
while its CSV names only the file: ``image_search`` lists folder globs whose
files are found by name. ``known_labels`` closes the vocabulary: a row naming
any other label is rejected ``unknown_label`` (a typo or a newer release).
"""

from __future__ import annotations

import ast
import csv
import re
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, model_validator

from curator.adapters.base import Adapter, Item, Label, Params
from curator.errors import CardError, ReadError

VALUES = {
    "1": "positive",
    "1.0": "positive",
    "0": "negative",
    "0.0": "negative",
    "-1": "uncertain",
    "-1.0": "uncertain",
}


class LabelCsvParams(Params):
    csv: list[str] = Field(min_length=1, description="Label tables, relative to the root.")
    path_column: str = "Path"
    strip_prefix: str = Field("", description="Leading part of the path column to drop (CheXpert's folder name).")
    image_dir: str = Field("", description="Folder the paths are relative to, below the root.")
    label_columns: list[str] = Field(default_factory=list)
    label_column: str | None = None
    separator: str = Field("|", description="Splits label_column; a value like \"['a', 'b']\" is read as a list.")
    image_suffix: str = Field("", description="Appended to the path column (HAM10000 names images without '.jpg').")
    uncertain: Literal["keep", "positive", "negative", "drop"] = "keep"
    patient_column: str | None = None
    patient_from_path: str | None = Field(None, description="Regex with one group taking the patient id from the path.")
    study_from_path: str | None = None
    csv_splits: dict[str, str] = Field(default_factory=dict)
    split_lists: dict[str, str] = Field(default_factory=dict, description="List file -> split name.")
    image_search: list[str] = Field(
        default_factory=list, description="Folder globs below the root where images are found by file name (NIH)."
    )
    known_labels: list[str] = Field(default_factory=list, description="If set, any other label is rejected.")

    @model_validator(mode="after")
    def _one_shape(self):
        if bool(self.label_columns) == bool(self.label_column):
            raise ValueError("set exactly one of label_columns (multi-column) or label_column (delimited)")
        return self


class LabelCsv(Adapter):
    name = "label_csv"
    version = "1"
    rows_repeat = True
    Params = LabelCsvParams

    def items(self) -> Iterator[Item]:
        p = self.params
        listed = self._split_lists()
        self._by_name = self._search_index()
        for table in p.csv:
            path = self.root / table
            if not path.is_file():
                raise CardError(f"{self.card.id}: label table '{table}' not found under {self.root}")
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                needed = [p.path_column, *(p.label_columns or [p.label_column])]
                missing = [c for c in needed if c not in (reader.fieldnames or [])]
                if missing:
                    raise CardError(f"{self.card.id}: {table} lacks column(s) {', '.join(missing)}")
                for n, row in enumerate(reader, start=2):
                    yield self._item(table, n, row, listed)

    def _item(self, table: str, line: int, row: dict, listed: dict[str, str]) -> Item:
        p = self.params
        name = (row.get(p.path_column) or "").strip()
        if p.strip_prefix and name.startswith(p.strip_prefix):
            name = name[len(p.strip_prefix) :]
        name = f"{name}{p.image_suffix}" if name else name
        rel = f"{p.image_dir}/{name}" if p.image_dir else name
        item = Item(uri=rel or f"{table}:{line}")
        if not name:
            item.reject = ("bad_row", f"{table} line {line}: empty {p.path_column}")
            return item
        try:
            item.path = self._find(rel)
            item.uri = self.rel(item.path)
            item.labels = self._labels(row)
        except ReadError as exc:
            item.reject = (exc.reason, f"{table} line {line}: {exc.message}")
            return item
        item.patient_id = row.get(p.patient_column) if p.patient_column else _group(p.patient_from_path, name)
        item.study_id = _group(p.study_from_path, name)
        item.split = p.csv_splits.get(table) or listed.get(name.rsplit("/", 1)[-1])
        return item

    def _find(self, rel: str):
        if not self._by_name:
            return self.resolve(rel)
        if not (self.root / rel).resolve().is_relative_to(self.root):
            raise ReadError("path_escape", f"'{rel}' resolves outside the source root")
        found = self._by_name.get(rel.rsplit("/", 1)[-1])
        if found is None:
            raise ReadError("missing_file", f"'{rel}' is in none of {self.params.image_search}")
        return found

    def _search_index(self) -> dict:
        index: dict = {}
        for pattern in self.params.image_search:
            for folder in sorted(self.root.glob(pattern)):
                if folder.is_dir() and folder.resolve().is_relative_to(self.root):
                    for path in sorted(folder.iterdir()):
                        # the link itself, not its target: the base rejects links leaving the root
                        index.setdefault(path.name, path)
        return index

    def _labels(self, row: dict) -> list[Label]:
        p = self.params
        if p.label_column:
            names = _split_labels(row.get(p.label_column) or "", p.separator)
            unknown = [x for x in names if x and p.known_labels and x not in p.known_labels]
            if unknown:
                raise ReadError("unknown_label", f"label(s) {', '.join(unknown)} not in known_labels")
            return [Label(x) for x in names if x]
        labels = []
        for col in p.label_columns:
            value = VALUES.get((row.get(col) or "").strip())
            if value == "uncertain" and p.uncertain != "keep":
                value = None if p.uncertain == "drop" else p.uncertain
            if value:
                labels.append(Label(col, value))
        return labels

    def _split_lists(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, split in self.params.split_lists.items():
            path = self.root / name
            if not path.is_file():
                raise CardError(f"{self.card.id}: split list '{name}' not found under {self.root}")
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    out[line.strip()] = split
        return out


def _split_labels(value: str, separator: str) -> list[str]:
    """``A|B`` split on the separator; a Python/JSON list literal (FLAIR, PadChest) read as a list."""
    value = value.strip()
    if value.startswith("[") and value.endswith("]"):
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, list):
            return [str(x).strip() for x in parsed if str(x).strip()]
    return [x.strip() for x in value.split(separator) if x.strip()]


def _group(pattern: str | None, text: str) -> str | None:
    if not pattern:
        return None
    m = re.search(pattern, text)
    return m.group(1) if m else None
