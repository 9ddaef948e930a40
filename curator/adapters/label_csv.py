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

Table names are globs (``Data_Entry_2017*.csv``); ``label_map`` renames native
values (APTOS grades ``0``..``4`` -> names) and ``normal_labels`` names the ones
meaning "no finding"; ``unlabelled`` (or ``unlabelled_tables``) reads image lists
without a label column (APTOS ``test.csv``); ``boxes`` attaches a box table's
regions to the labels (NIH ``BBox_List_2017.csv``, VinDr-CXR); per-row split,
modality, anatomy and patient columns and the strictest-split rule come from
curator.adapters.tables.
"""

from __future__ import annotations

import ast
import csv
import fnmatch
import re
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, model_validator

from curator.adapters.base import Adapter, Box, Item, Label
from curator.adapters.tables import (
    BoxTable,
    RowParams,
    StrictestSplit,
    check_columns,
    find_tables,
    nearest,
    normal_split,
    row_value,
)
from curator.errors import CardError, ReadError

VALUES = {
    "1": "positive",
    "1.0": "positive",
    "0": "negative",
    "0.0": "negative",
    "-1": "uncertain",
    "-1.0": "uncertain",
}


class LabelCsvParams(RowParams):
    csv: list[str] = Field(min_length=1, description="Label tables (globs), relative to the root.")
    path_column: str = Field("Path", description="Column naming the image.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator (FETAL_PLANES_DB uses ';').")
    columns: list[str] = Field(
        default_factory=list,
        description="Column names of tables without a header line (DDR's 'name grade' lists); "
        "lines are split on the delimiter, quotes taken literally.",
    )
    strip_prefix: str = Field("", description="Leading part of the path column to drop (CheXpert's folder name).")
    image_dir: str = Field("", description="Folder the paths are relative to, below the root.")
    label_columns: list[str] = Field(default_factory=list, description="A column per finding holding 1/0/-1/blank.")
    label_column: str | None = Field(None, description="One column holding the label(s) of the row.")
    separator: str = Field("|", description="Splits label_column; a value like \"['a', 'b']\" is read as a list.")
    image_suffix: str = Field("", description="Appended to the path column (HAM10000 names images without '.jpg').")
    uncertain: Literal["keep", "positive", "negative", "drop"] = Field("keep", description="What -1 becomes.")
    patient_from_path: str | None = Field(None, description="Regex with one group taking the patient id from the path.")
    study_from_path: str | None = Field(None, description="Regex with one group taking the study id from the path.")
    csv_splits: dict[str, str] = Field(default_factory=dict, description="Table (as listed in csv) -> split.")
    split_lists: dict[str, str] = Field(default_factory=dict, description="List file -> split name.")
    image_search: list[str] = Field(
        default_factory=list, description="Folder globs below the root where images are found by file name (NIH)."
    )
    known_labels: list[str] = Field(
        default_factory=list, description="If set, any other label (after label_map) is rejected."
    )
    label_map: dict[str, str] = Field(default_factory=dict, description="Native label -> label name (grades).")
    normal_labels: list[str] = Field(
        default_factory=list, description="Labels (after label_map) meaning normal / no finding ('No Finding')."
    )
    unlabelled: bool = Field(False, description="An image list without labels (no label column needed).")
    unlabelled_tables: list[str] = Field(
        default_factory=list, description="Tables (globs) of unlabelled images among labelled ones (APTOS test.csv)."
    )
    boxes: list[BoxTable] = Field(default_factory=list, description="Box tables whose regions join the labels.")

    @model_validator(mode="after")
    def _one_shape(self):
        shapes = bool(self.label_columns) + bool(self.label_column)
        if self.unlabelled and shapes:
            raise ValueError("unlabelled = true takes neither label_columns nor label_column")
        if not self.unlabelled and shapes != 1:
            raise ValueError(
                "set exactly one of label_columns (multi-column) or label_column (delimited), or unlabelled = true"
            )
        return self


class LabelCsv(Adapter):
    name = "label_csv"
    version = "2"
    rows_repeat = True
    Params = LabelCsvParams

    def items(self) -> Iterator[Item]:
        listed = self._split_lists()
        self._by_name = self._search_index()
        self._boxes = self._box_index()
        strictest = StrictestSplit()
        tables = find_tables(self.card.id, self.root, self.params.csv, "label table")
        if self._may_disagree(tables):
            for pattern, path in tables:
                for _line, row in self._rows(pattern, path):
                    rel, name = self._name(row)
                    if rel:
                        strictest.add(rel, self._split(pattern, path, row, name, listed))
            self.split_conflicts += strictest.conflicts
        named: set[str] = set()
        for pattern, path in tables:
            for line, row in self._rows(pattern, path):
                item = self._item(pattern, path, line, row, listed)
                item.split = strictest.get(self._name(row)[0], item.split)
                named.add(self._name(row)[1].rsplit("/", 1)[-1])
                yield item
        # files in the searched folders that no row names (a table's rows are the inputs):
        # counted, so the summary accounts for every file the card looked at
        unnamed = self._searched - len(named & set(self._by_name))
        if unnamed:
            self.skipped["not_in_table"] += unnamed

    def _may_disagree(self, tables) -> bool:
        p = self.params
        return bool(p.split_column or p.split_lists or len({p.csv_splits.get(t) for t, _ in tables}) > 1)

    def _rows(self, pattern: str, path) -> Iterator[tuple[int, dict]]:
        p = self.params
        table = self.rel(path)
        unlabelled = p.unlabelled or any(fnmatch.fnmatch(table, g) for g in p.unlabelled_tables)
        with open(path, newline="", encoding="utf-8-sig") as fh:
            if p.columns:  # no header line: every line is a row
                reader = csv.DictReader(fh, fieldnames=p.columns, delimiter=p.delimiter, quoting=csv.QUOTE_NONE)
            else:
                reader = csv.DictReader(fh, delimiter=p.delimiter)
            labels = [] if unlabelled else [*p.label_columns, p.label_column]
            check_columns(
                self.card.id,
                table,
                reader.fieldnames,
                [p.path_column, *labels, p.split_column, p.modality_column, p.anatomy_column, p.patient_column],
            )
            for n, row in enumerate(reader, start=1 if p.columns else 2):
                row["\x00unlabelled"] = unlabelled
                yield n, row

    def _name(self, row: dict) -> tuple[str, str]:
        p = self.params
        name = (row.get(p.path_column) or "").strip()
        if p.strip_prefix and name.startswith(p.strip_prefix):
            name = name[len(p.strip_prefix) :]
        name = f"{name}{p.image_suffix}" if name else name
        rel = f"{p.image_dir}/{name}" if p.image_dir and name else name
        return rel, name

    def _split(self, pattern, path, row, name, listed) -> str | None:
        p = self.params
        return (
            row_value(p, row, "split", p.split_column)
            or p.csv_splits.get(pattern)
            or p.csv_splits.get(path.name)
            or listed.get(name.rsplit("/", 1)[-1])
        )

    def _item(self, pattern: str, path, line: int, row: dict, listed: dict[str, str]) -> Item:
        p = self.params
        table = self.rel(path)
        rel, name = self._name(row)
        item = Item(uri=rel or f"{table}:{line}")
        if not name:
            item.reject = ("bad_row", f"{table} line {line}: empty {p.path_column}")
            return item
        try:
            item.path = self._find(rel)
            item.uri = self.rel(item.path)
            item.labels = [] if row["\x00unlabelled"] else self._labels(row)
        except ReadError as exc:
            item.reject = (exc.reason, f"{table} line {line}: {exc.message}")
            return item
        boxes = self._boxes.get(name.rsplit("/", 1)[-1], [])
        if boxes:
            for box in boxes:
                if not any(lb.native == box.label.native for lb in item.labels):
                    item.labels.append(box.label)
            item.frame_boxes = {None: boxes}  # a 2D image: its one frame has no index
        item.patient_id = row_value(p, row, "patient", p.patient_column) or _group(p.patient_from_path, name)
        item.study_id = _group(p.study_from_path, name)
        item.modality = row_value(p, row, "modality", p.modality_column)
        item.anatomy = row_value(p, row, "anatomy", p.anatomy_column)
        item.split = self._split(pattern, path, row, name, listed)
        if item.split and normal_split(item.split) is None:
            item.reject = (
                "bad_row",
                f"{table} line {line}: split '{item.split}' is not train/val/test; map it in value_maps.split",
            )
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
        folders = 0
        self._searched = 0
        for pattern in self.params.image_search:
            for folder in sorted(self.root.glob(pattern)):
                if folder.is_dir() and folder.resolve().is_relative_to(self.root):
                    folders += 1
                    for path in sorted(folder.iterdir()):
                        if path.name.startswith("._"):
                            self.skipped["macos_resource_fork"] += 1
                            continue
                        # the link itself, not its target: the base rejects links leaving the root
                        self._searched += 1
                        if path.name in index:
                            self.skipped["duplicate_name"] += 1  # a second copy (Kaggle's lower-case folders)
                            self._searched -= 1
                        index.setdefault(path.name, path)
        if self.params.image_search and not folders:
            raise CardError(
                f"{self.card.id}: no image folder matches {self.params.image_search} under {self.root} "
                f"({nearest(self.root, self.params.image_search[0])})"
            )
        return index

    def _box_index(self) -> dict[str, list[Box]]:
        out: dict[str, list[Box]] = {}
        for spec in self.params.boxes:
            for _, path in find_tables(self.card.id, self.root, [spec.table], "box table"):
                with open(path, newline="", encoding="utf-8-sig") as fh:
                    reader = csv.DictReader(fh)
                    check_columns(
                        self.card.id,
                        self.rel(path),
                        reader.fieldnames,
                        [spec.image_column, spec.label_column, *spec.columns],
                    )
                    for row in reader:
                        try:
                            a, b, c, d = (float(row[col]) for col in spec.columns)
                        except (TypeError, ValueError):
                            continue  # VinDr's "No finding" rows carry no box
                        box = (a, b, a + c, b + d) if spec.format == "xywh" else (a, b, c, d)
                        name = self._label_name(row[spec.label_column].strip())
                        image = f"{row[spec.image_column].strip()}{self.params.image_suffix}"
                        label = Label(name, normal=name in self.params.normal_labels)
                        out.setdefault(image.rsplit("/", 1)[-1], []).append(Box(label, box))
        return out

    def _label_name(self, native: str) -> str:
        p = self.params
        return p.label_map.get(native, p.value_maps.get("label", {}).get(native, native))

    def _labels(self, row: dict) -> list[Label]:
        p = self.params
        if p.label_column:
            names = [self._label_name(x) for x in _split_labels(row.get(p.label_column) or "", p.separator)]
            unknown = [x for x in names if x and p.known_labels and x not in p.known_labels]
            if unknown:
                raise ReadError("unknown_label", f"label(s) {', '.join(unknown)} not in known_labels")
            return [Label(x, normal=x in p.normal_labels) for x in names if x]
        labels = []
        for col in p.label_columns:
            value = VALUES.get((row.get(col) or "").strip())
            if value == "uncertain" and p.uncertain != "keep":
                value = None if p.uncertain == "drop" else p.uncertain
            if value:
                name = self._label_name(col)
                labels.append(Label(name, value, normal=name in p.normal_labels))
        return labels

    def _split_lists(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, split in self.params.split_lists.items():
            path = self.root / name
            if not path.is_file():
                raise CardError(
                    f"{self.card.id}: split list '{name}' not found under {self.root} ({nearest(self.root, name)})"
                )
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
