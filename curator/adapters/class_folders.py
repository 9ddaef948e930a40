"""Folder per class: ``root/<level>/<level>/.../image`` (RadImageNet, most Kaggle sets).

``levels`` names what each folder level means, e.g. RadImageNet's
``["modality", "anatomy", "label"]``. Every file is an item: a file at the wrong
depth is rejected as ``bad_layout``, a non-image as ``unsupported_format``, and a
class folder outside ``known_labels`` (when the card sets it) as ``unknown_label``.
Any format a reader knows is an item's file: images, DICOM, videos (one image per
sampled frame) and whole-slide images (one per tile). ``extensions``, when set,
names the only suffixes the dataset ships; anything else (annotation XML beside
the slides, a player's index file) is rejected ``unsupported_format`` unread.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import Field

from curator.adapters.base import Adapter, Item, Label, Params

Level = Literal["label", "modality", "anatomy", "split", "patient", "ignore"]


class ClassFoldersParams(Params):
    levels: list[Level] = Field(default_factory=lambda: ["label"], min_length=1)
    subdir: str = Field("", description="Folder below the root where the levels start.")
    known_labels: list[str] = Field(
        default_factory=list, description="If set, a folder naming another label is rejected."
    )
    extensions: list[str] = Field(
        default_factory=list, description="If set, the only file suffixes read (e.g. ['.avi']); others are rejected."
    )


class ClassFolders(Adapter):
    name = "class_folders"
    version = "1"
    Params = ClassFoldersParams

    def items(self) -> Iterator[Item]:
        base = (self.root / self.params.subdir).resolve()
        depth = len(self.params.levels)
        for path in self.files(base):
            parts = path.relative_to(base).parts
            item = Item(uri=self.rel(path), path=path)
            suffixes = {e.lower() for e in self.params.extensions}
            if suffixes and path.suffix.lower() not in suffixes:
                item.reject = ("unsupported_format", f"'{path.suffix}' is not among the card's {sorted(suffixes)}")
                yield item
                continue
            if len(parts) != depth + 1:
                item.reject = (
                    "bad_layout",
                    f"expected {depth} folder level(s) {self.params.levels}, found {len(parts) - 1}",
                )
                yield item
                continue
            for level, value in zip(self.params.levels, parts[:-1], strict=True):
                if level == "label" and self.params.known_labels and value not in self.params.known_labels:
                    item.reject = ("unknown_label", f"class folder '{value}' is not in known_labels")
                elif level == "label":
                    item.labels.append(Label(value))
                elif level == "modality":
                    item.modality = value
                elif level == "anatomy":
                    item.anatomy = value
                elif level == "split":
                    item.split = value
                elif level == "patient":
                    item.patient_id = value
            yield item
