"""Image-text pairs in a CSV, JSONL or JSON-array table (ROCOv2, PMC-OA, Quilt-1M, LLaVA-Med).

One row names one image and its text. ROCOv2 names images by ``ID`` without an
extension, hence ``image_suffix``; LLaVA-Med's JSON keeps the caption inside a
conversation, hence dotted column paths (``conversations.1.value``); Quilt-1M
carries its split in a column (``split_column``). Visual question answering sets
(VQA-RAD, SLAKE) use ``kind = "vqa"``: the text column is the question, the answer
goes in the annotation's payload, and ``language_column`` gives each row's language. Rows whose image is missing or
whose path escapes the root are rejected with the row's line (or array index).
Several rows naming one image make one sample with several captions.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from curator.adapters.base import Adapter, Item, Params, Text
from curator.errors import CardError, ReadError


class ImageTextParams(Params):
    tables: list[str] = Field(
        default_factory=list,
        description="CSV, JSONL or JSON files, relative to the root; empty: every such file directly in the root.",
    )
    image_column: str = "image"
    text_column: str = "caption"
    image_dir: str = Field("", description="Folder the image names are relative to, below the root.")
    image_dirs: dict[str, str] = Field(default_factory=dict, description="Per-table image folder (ROCOv2).")
    image_suffix: str = Field("", description="Appended to the image column (ROCOv2: '.jpg').")
    language: str = "en"
    kind: Literal["caption", "report", "vqa"] = Field(
        "caption", description="vqa: text_column is the question and answer_column its answer (VQA-RAD, SLAKE)."
    )
    answer_column: str | None = Field(None, description="With kind = vqa: the answer column.")
    language_column: str | None = Field(None, description="Per-row language code (SLAKE's q_lang).")
    table_splits: dict[str, str] = Field(default_factory=dict)
    split_column: str | None = Field(None, description="Column holding train/val/test per row (Quilt-1M).")
    strip_text: list[str] = Field(
        default_factory=list, description="Literal markers removed from the text (LLaVA's '<image>')."
    )


class ImageText(Adapter):
    name = "image_text"
    version = "1"
    rows_repeat = True
    Params = ImageTextParams

    def items(self) -> Iterator[Item]:
        tables = self.params.tables or sorted(
            p.name for p in self.root.iterdir() if p.suffix.lower() in (".csv", ".jsonl", ".ndjson", ".json")
        )
        if not tables:
            raise CardError(f"{self.card.id}: no CSV/JSONL/JSON table in {self.root}; set the 'tables' parameter")
        for table in tables:
            path = self.root / table
            if not path.is_file():
                raise CardError(f"{self.card.id}: table '{table}' not found under {self.root}")
            for line, row in _rows(path):
                yield self._item(table, line, row)

    def _item(self, table: str, line: int, row: dict | None) -> Item:
        p = self.params
        image_dir = p.image_dirs.get(table, p.image_dir)
        if row is None:
            return Item(uri=f"{table}:{line}", reject=("bad_row", f"{table} line {line}: not a JSON object"))
        name = str(_get(row, p.image_column) or "").strip()
        text = str(_get(row, p.text_column) or "")
        for marker in p.strip_text:
            text = text.replace(marker, "")
        text = text.strip()
        rel = f"{image_dir}/{name}{p.image_suffix}" if image_dir else f"{name}{p.image_suffix}"
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
        item.split = (str(_get(row, p.split_column) or "") if p.split_column else "") or p.table_splits.get(table)
        return item


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


def _rows(path: Path) -> Iterator[tuple[int, dict | None]]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CardError(f"{path.name} is not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise CardError(f"{path.name}: expected a JSON array of objects")
        for n, obj in enumerate(data):
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
                yield n, obj if isinstance(obj, dict) else None
        return
    with open(path, newline="", encoding="utf-8-sig") as fh:
        yield from enumerate(csv.DictReader(fh), start=2)
