"""Folder per class: ``root/<level>/<level>/.../image`` (RadImageNet, BUSI, most Kaggle sets).

``levels`` names what each folder level means, e.g. RadImageNet's
``["modality", "anatomy", "label"]`` or Kaggle Brain Tumor MRI's ``["split", "label"]``
(``Training/glioma/...``). Every file is an item: a file at the wrong depth is
rejected as ``bad_layout``, a non-image as ``unsupported_format``, and a class
folder outside ``known_labels`` (when the card sets it) as ``unknown_label``.
Any format a reader knows is an item's file: images, DICOM, videos (one image per
sampled frame) and whole-slide images (one per tile). ``extensions``, when set,
names the only suffixes the dataset ships; anything else (annotation XML beside
the slides, a player's index file) is rejected ``unsupported_format`` unread.
``label_map`` renames folders (APTOS-style grades), ``normal_labels`` names the
folders meaning "no finding" (``notumor``, ``normal``). Masks beside images
(``masks``) or in mask folders become regions on their image, never images;
``._*`` files, OS metadata and sidecars are skipped and counted (curator.adapters.walk).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from curator.adapters.base import Adapter, Item, Label
from curator.adapters.tables import normal_split
from curator.adapters.walk import MaskParams, WalkParams, classify

Level = Literal["label", "modality", "anatomy", "split", "patient", "ignore"]


class ClassFoldersParams(WalkParams, MaskParams):
    levels: list[Level] = Field(
        default_factory=lambda: ["label"], min_length=1, description="What each folder level below subdir means."
    )
    subdir: str = Field("", description="Folder below the root where the levels start.")
    known_labels: list[str] = Field(
        default_factory=list, description="If set, a folder naming another label is rejected (after label_map)."
    )
    label_map: dict[str, str] = Field(default_factory=dict, description="Folder name -> label name.")
    normal_labels: list[str] = Field(
        default_factory=list, description="Labels (after label_map) meaning normal / no finding ('notumor')."
    )
    label_pattern: str | None = Field(
        None,
        description="Regex whose first group takes the label from the label folder's name, or from the file name "
        "when no level is 'label' (Shenzhen CXR '_(0|1).png$', MURA 'study\\d+_(positive|negative)').",
    )
    split_map: dict[str, str] = Field(
        default_factory=dict, description="Split folder name -> train/val/test (beyond Training/Testing/val...)."
    )
    extensions: list[str] = Field(
        default_factory=list, description="If set, the only file suffixes read (e.g. ['.avi']); others are rejected."
    )


class ClassFolders(Adapter):
    name = "class_folders"
    version = "2"
    Params = ClassFoldersParams

    def items(self) -> Iterator[Item]:
        p = self.params
        base = (self.root / p.subdir).resolve()
        depth = len(p.levels)
        suffixes = {e.lower() for e in p.extensions}
        found, skipped = classify(self.files(base), base, p)
        self.skipped.update(skipped)
        for item in found:
            item.uri = self.rel(item.path)
            parts = item.path.relative_to(base).parts
            if item.reject is None and suffixes and item.path.suffix.lower() not in suffixes:
                item.reject = ("unsupported_format", f"'{item.path.suffix}' is not among the card's {sorted(suffixes)}")
            if item.reject is None and len(parts) != depth + 1:
                item.reject = ("bad_layout", f"expected {depth} folder level(s) {p.levels}, found {len(parts) - 1}")
            if item.reject is None:
                self._read_levels(item, parts)
            yield item

    def _read_levels(self, item: Item, parts: tuple[str, ...]) -> None:
        p = self.params
        if "label" not in p.levels and p.label_pattern:
            self._add_label(item, self._from_pattern(item.path.name), f"file name '{item.path.name}'")
        for level, value in zip(p.levels, parts[:-1], strict=True):
            if level == "label":
                named = self._from_pattern(value) if p.label_pattern else value
                self._add_label(item, named, f"class folder '{value}'")
            elif level == "modality":
                item.modality = value
            elif level == "anatomy":
                item.anatomy = value
            elif level == "split":
                item.split = p.split_map.get(value, value)
                if normal_split(item.split) is None:
                    item.reject = ("bad_layout", f"split folder '{value}' is not train/val/test; map it in split_map")
            elif level == "patient":
                item.patient_id = value

    def _add_label(self, item: Item, native: str | None, where: str) -> None:
        p = self.params
        if native is None:
            item.reject = ("unknown_label", f"{where} does not match label_pattern {p.label_pattern!r}")
            return
        value = p.label_map.get(native, native)
        if p.known_labels and value not in p.known_labels:
            item.reject = ("unknown_label", f"{where} names '{value}', which is not in known_labels")
            return
        item.labels.append(Label(value, normal=value in p.normal_labels))

    def _from_pattern(self, text: str) -> str | None:
        m = re.search(self.params.label_pattern, text) if self.params.label_pattern else None
        return m.group(1) if m else (None if self.params.label_pattern else text)
