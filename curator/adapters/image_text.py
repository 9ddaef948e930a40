"""Image-text pairs in a CSV, JSONL or JSON-array table (ROCOv2, PMC-OA, Quilt-1M, LLaVA-Med).

One row names one image and its text. ROCOv2 names images by ``ID`` without an
extension, hence ``image_suffix``; LLaVA-Med's JSON keeps the caption inside a
conversation, hence dotted column paths (``conversations.1.value``); Quilt-1M
carries its split in a column (``split_column``). Visual question answering sets
(VQA-RAD, SLAKE) use ``kind = "vqa"``: the text column is the question, the answer
goes in the annotation's payload, and ``language_column`` gives each row's language. Rows whose image is missing or
whose path escapes the root are rejected with the row's line (or array index).
Several rows naming one image make one sample with several captions.

Table names are globs; per-row ``split_column`` / ``modality_column`` /
``anatomy_column`` / ``patient_column`` with ``value_maps`` (VQA-RAD's
``phrase_type`` ``test_freeform`` -> test, ``image_organ`` ``ABD`` -> abdomen);
``joins`` take a field from a side table keyed by the image (ROCOv2's UMLS CUIs
naming the modality); ``masks`` / ``box_json`` beside an image become its regions
(SLAKE's ``mask.png`` and ``detection.json``). When rows disagree on an image's
split the strictest wins (curator.adapters.tables).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from curator.adapters import parquet
from curator.adapters.base import Adapter, Box, Item, Label, Text
from curator.adapters.tables import RowParams, StrictestSplit, check_columns, find_tables, normal_split, row_value
from curator.adapters.walk import MaskParams, masks_for
from curator.errors import CardError, ReadError

TABLE_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json", ".parquet")
PICKLE_SUFFIXES = (".pkl", ".pickle")


class Join(BaseModel):
    """A side table giving a field per image (ROCOv2 ``*_concepts_manually.csv``: ID -> CUIs)."""

    model_config = ConfigDict(extra="forbid")
    tables: list[str] = Field(min_length=1, description="Side tables (globs, CSV) relative to the root.")
    key_column: str = Field(description="Column holding the image name, as image_column does.")
    column: str = Field(description="Column holding the value(s).")
    separator: str = Field(";", description="Splits several values in one cell.")
    field: Literal["modality", "anatomy", "image"] = Field(
        description="What the value sets; image: the value is the image's file name (ROCO's licences.txt)."
    )
    values: dict[str, str] = Field(
        default_factory=dict,
        description="Value -> field value; values not listed are ignored (CUIs of findings). "
        "Empty with field = image: the value is used as it is.",
    )


class ImageTextParams(RowParams, MaskParams):
    tables: list[str] = Field(
        default_factory=list,
        description="CSV, JSONL or JSON files (globs), relative to the root; empty: every such file in the root.",
    )
    image_column: str = Field("image", description="Column (dotted path in JSON) naming the image.")
    text_column: str = Field("caption", description="Column (dotted path in JSON) holding the text or question.")
    image_dir: str = Field("", description="Folder the image names are relative to, below the root.")
    image_dirs: dict[str, str] = Field(default_factory=dict, description="Per-table image folder (ROCOv2).")
    image_suffix: str = Field("", description="Appended to the image column (ROCOv2: '.jpg').")
    language: str = Field("en", description="Language of the texts.")
    kind: Literal["caption", "report", "vqa"] = Field(
        "caption", description="vqa: text_column is the question and answer_column its answer (VQA-RAD, SLAKE)."
    )
    answer_column: str | None = Field(None, description="With kind = vqa: the answer column.")
    language_column: str | None = Field(None, description="Per-row language code (SLAKE's q_lang).")
    table_splits: dict[str, str] = Field(default_factory=dict, description="Table -> split.")
    strip_text: list[str] = Field(
        default_factory=list, description="Literal markers removed from the text (LLaVA's '<image>')."
    )
    joins: list[Join] = Field(default_factory=list, description="Side tables giving modality/anatomy per image.")
    box_json: str | None = Field(
        None,
        description="JSON beside each image (relative to its folder) listing {label: [x, y, w, h]} boxes (SLAKE).",
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="Field separator of CSV/text tables.")
    columns: list[str] = Field(
        default_factory=list,
        description="Column names of a table without a header line (ROCO's captions.txt: ID<TAB>caption); "
        "its lines are split on the delimiter, quotes taken literally.",
    )
    image_embedded: bool = Field(
        False,
        description="Parquet tables whose image_column holds the image itself (a Hugging Face Image "
        "{bytes, path} or a binary column): no image files; rows with the same bytes are one sample.",
    )
    key_column: str | None = Field(
        None,
        description="JSON rows that are one-key objects {key: {fields}} (DeepEyeNet's {image path: {keywords, "
        "clinical-description}}): the key becomes this column of the row.",
    )
    pickle_alternative: str = Field(
        "",
        description="Named when a download holds only Python pickles, which are never loaded "
        "(unpickling runs code): the safe release to get instead.",
    )


class ImageText(Adapter):
    name = "image_text"
    version = "2"
    rows_repeat = True
    Params = ImageTextParams

    def items(self) -> Iterator[Item]:
        p = self.params
        if p.tables:
            try:
                tables = find_tables(self.card.id, self.root, p.tables)
            except CardError as exc:
                raise self._pickles(exc) from None
        else:
            tables = [
                (path.name, path)
                for path in sorted(self.root.iterdir())
                if path.suffix.lower() in TABLE_SUFFIXES and not path.name.startswith("._")
            ]
        if not tables:
            raise self._pickles(
                CardError(f"{self.card.id}: no CSV/JSONL/JSON/Parquet table in {self.root}; set the 'tables' parameter")
            )
        for _, path in tables:
            if path.suffix.lower() in PICKLE_SUFFIXES:
                raise self._pickles(CardError(f"{self.card.id}: table '{self.rel(path)}' is a Python pickle"))
        self._cache: dict[Path, list] = {}
        self._joined = self._joins()
        self._regions_read: set[str] = set()
        strictest = StrictestSplit()
        if p.split_column or len({p.table_splits.get(t) for t, _ in tables}) > 1:
            for pattern, path in tables:
                for _line, row in self._table_rows(path):
                    if row is not None:
                        strictest.add(self._rel(pattern, row), self._split(pattern, row))
            self.split_conflicts += strictest.conflicts
        for pattern, path in tables:
            rows = iter(self._table_rows(path))
            first = next(rows, None)
            if first is not None and first[1] is not None and path.suffix.lower() in (".csv", ".parquet", ".txt"):
                check_columns(
                    self.card.id,
                    self.rel(path),
                    first[1].keys(),
                    [p.image_column, p.text_column, p.answer_column if p.kind == "vqa" else None, p.split_column],
                )
            for line, row in [first, *rows] if first else []:
                item = self._item(pattern, self.rel(path), line, row)
                if row is not None and item.reject is None:
                    item.split = strictest.get(self._rel(pattern, row), item.split)
                yield item

    def _table_rows(self, path: Path):
        """A table's rows; Parquet rows are read once (their image references cost a pass over the bytes)."""
        p = self.params
        if path.suffix.lower() != ".parquet":
            return _rows(path, p.delimiter, p.columns, p.key_column)
        if path not in self._cache:
            column = p.image_column if p.image_embedded else None
            self._cache[path] = parquet.rows(path, self.rel(path), column)
        return self._cache[path]

    def _pickles(self, exc: CardError) -> CardError:
        """A download holding only pickles gets one line saying why they are not read and what to use instead."""
        found = sorted(self.rel(f) for f in self.root.rglob("*") if f.suffix.lower() in PICKLE_SUFFIXES and f.is_file())
        if not found and "pickle" not in str(exc):
            return exc
        shown = ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")
        alternative = f"; use {self.params.pickle_alternative}" if self.params.pickle_alternative else ""
        return CardError(
            f"{self.card.id}: no table this card reads, only Python pickles ({shown or 'the named table'}); curator "
            f"never unpickles downloaded data (loading a pickle can run arbitrary code){alternative}"
        )

    def _rel(self, pattern: str, row: dict) -> str:
        p = self.params
        if p.image_embedded:
            ref = row.get(p.image_column)
            return ref["uri"] if isinstance(ref, dict) else ""
        image_dir = p.image_dirs.get(pattern, p.image_dir)
        name = str(_get(row, p.image_column) or "").strip()
        name = self._joined.get(name, {}).get("image", name)
        return f"{image_dir}/{name}{p.image_suffix}" if image_dir else f"{name}{p.image_suffix}"

    def _split(self, pattern: str, row: dict) -> str | None:
        p = self.params
        return row_value(p, row, "split", p.split_column) or p.table_splits.get(pattern)

    def _item(self, pattern: str, table: str, line: int, row: dict | None) -> Item:
        p = self.params
        if row is None:
            return Item(uri=f"{table}:{line}", reject=("bad_row", f"{table} line {line}: {_not_a_row(p.key_column)}"))
        if p.image_embedded:
            return self._embedded_item(pattern, table, line, row)
        key = str(_get(row, p.image_column) or "").strip()
        name = self._joined.get(key, {}).get("image", key)
        text = str(_get(row, p.text_column) or "")
        for marker in p.strip_text:
            text = text.replace(marker, "")
        text = text.strip()
        rel = self._rel(pattern, row)
        item = Item(uri=rel if name else f"{table}:{line}")
        if not name or not text:
            missing = p.image_column if not name else p.text_column
            item.reject = ("bad_row", f"{table} line {line}: empty {missing}")
            return item
        try:
            item.path = self.resolve(rel)
            item.uri = self.rel(item.path)
        except ReadError as exc:
            item.reject = (exc.reason, f"{table} line {line}: {exc.message}")
            return item
        language = (str(_get(row, p.language_column) or "") if p.language_column else "") or p.language
        payload = {}
        if p.kind == "vqa":
            answer = str(_get(row, p.answer_column or "answer") or "").strip()
            if not answer:
                item.reject = ("bad_row", f"{table} line {line}: empty {p.answer_column or 'answer'}")
                return item
            payload = {"answer": answer}
        item.texts = [Text(p.kind, text, language, payload)]
        item.split = self._split(pattern, row)
        if item.split and normal_split(item.split) is None:
            item.reject = (
                "bad_row",
                f"{table} line {line}: split '{item.split}' is not train/val/test; map it in value_maps.split",
            )
            return item
        joined = self._joined.get(key, {})
        item.modality = row_value(p, row, "modality", p.modality_column) or joined.get("modality")
        item.anatomy = row_value(p, row, "anatomy", p.anatomy_column) or joined.get("anatomy")
        item.patient_id = row_value(p, row, "patient", p.patient_column)
        if item.uri in self._regions_read:
            return item  # the image's masks and boxes came with its first row
        self._regions_read.add(item.uri)
        if p.masks:
            item.masks = masks_for(item.path, p.masks, p.mask_stem_replace)
            item.mask_label, item.mask_threshold = p.mask_label, p.mask_threshold
            item.min_region_pixels = p.min_region_pixels
        if p.box_json:
            boxes = _json_boxes(item.path.parent / p.box_json)
            item.frame_boxes = {None: boxes} if boxes else None  # a 2D image: its one frame has no index
            for box in boxes:
                if not any(lb.native == box.label.native for lb in item.labels):
                    item.labels.append(box.label)
        return item

    def _embedded_item(self, pattern: str, table: str, line: int, row: dict) -> Item:
        """A Parquet row whose image is in the row itself: the item names the table and the cell."""
        p = self.params
        ref = row.get(p.image_column)
        text = str(_get(row, p.text_column) or "").strip()
        for marker in p.strip_text:
            text = text.replace(marker, "").strip()
        if not isinstance(ref, dict):
            return Item(uri=f"{table}#row{line}", reject=("bad_row", f"{table} row {line}: empty {p.image_column}"))
        item = Item(uri=ref["uri"], path=self.root / table, fmt="raster", member=(p.image_column, ref["row"]))
        if not text:
            item.reject = ("bad_row", f"{table} row {line}: empty {p.text_column}")
            return item
        payload = {}
        if p.kind == "vqa":
            answer = str(_get(row, p.answer_column or "answer") or "").strip()
            if not answer:
                item.reject = ("bad_row", f"{table} row {line}: empty {p.answer_column or 'answer'}")
                return item
            payload = {"answer": answer}
        language = (str(_get(row, p.language_column) or "") if p.language_column else "") or p.language
        item.texts = [Text(p.kind, text, language, payload)]
        item.split = self._split(pattern, row)
        if item.split and normal_split(item.split) is None:
            item.reject = ("bad_row", f"{table} row {line}: split '{item.split}' is not train/val/test")
            return item
        item.modality = row_value(p, row, "modality", p.modality_column)
        item.anatomy = row_value(p, row, "anatomy", p.anatomy_column)
        item.patient_id = row_value(p, row, "patient", p.patient_column)
        return item

    def _joins(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for join in self.params.joins:
            for _, path in find_tables(self.card.id, self.root, join.tables, "join table"):
                with open(path, newline="", encoding="utf-8-sig") as fh:
                    reader = csv.DictReader(fh)
                    check_columns(self.card.id, self.rel(path), reader.fieldnames, [join.key_column, join.column])
                    for row in reader:
                        for value in (row.get(join.column) or "").split(join.separator):
                            mapped = join.values.get(value.strip())
                            if join.field == "image" and not join.values:
                                mapped = value.strip()
                            if mapped:
                                out.setdefault(row[join.key_column].strip(), {}).setdefault(join.field, mapped)
        return out


def _json_boxes(path: Path) -> list[Box]:
    """``[{"Liver": [x, y, w, h]}, ...]`` or ``{"Liver": [[x, y, w, h], ...]}``; absent or unreadable: none."""
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return []
    entries = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    boxes = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        for label, value in entry.items():
            for xywh in value if value and isinstance(value[0], list) else [value]:
                if isinstance(xywh, list) and len(xywh) == 4 and all(isinstance(v, int | float) for v in xywh):
                    x, y, w, h = (float(v) for v in xywh)
                    boxes.append(Box(Label(str(label)), (x, y, x + w, y + h)))
    return boxes


def _get(row: dict, dotted: str):
    """``a.1.b`` walks dicts by key and lists by index; a plain column name that contains dots wins."""
    if dotted in row:
        return row[dotted]
    value = row
    for part in dotted.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _not_a_row(key_column: str | None) -> str:
    return "not a one-key JSON object {key: {fields}}" if key_column else "not a JSON object"


def _keyed(obj, key_column: str | None):
    """``{key: {fields}}`` -> ``{key_column: key, **fields}``; anything else is not such a row (None)."""
    if len(obj) != 1:
        return None
    [(key, fields)] = obj.items()
    return {**fields, key_column: key} if isinstance(fields, dict) else None


def _rows(
    path: Path, delimiter: str = ",", columns: list[str] | None = None, key_column: str | None = None
) -> Iterator[tuple[int, dict | None]]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CardError(f"{path.name} is not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise CardError(f"{path.name}: expected a JSON array of objects")
        for n, obj in enumerate(data):
            if isinstance(obj, dict) and key_column:
                obj = _keyed(obj, key_column)
            yield n, obj if isinstance(obj, dict) else None
        return
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict) and key_column:
                    obj = _keyed(obj, key_column)
                yield n, obj if isinstance(obj, dict) else None
        return
    with open(path, newline="", encoding="utf-8-sig") as fh:
        if columns:  # no header line: every line is a row, quotes are text
            reader = csv.DictReader(fh, fieldnames=columns, delimiter=delimiter, quoting=csv.QUOTE_NONE)
            yield from enumerate(reader, start=1)
        else:
            yield from enumerate(csv.DictReader(fh, delimiter=delimiter), start=2)
