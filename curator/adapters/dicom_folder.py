"""A folder of DICOM files, any depth, any names (PACS exports, TCIA series).

Every file is an item read as DICOM: files without the DICM preamble are
rejected ``not_dicom``, DICOMDIR and reports ``no_pixels``. Modality and anatomy
come from the header (Modality, BodyPartExamined) where present, else the card.
Multi-frame files yield one image per kept frame (``frame_step``, ``frame_range``:
the same rule as NIfTI slicing). Each file's series (SeriesInstanceUID, stored only
as a keyed hash) and slice position (ImagePositionPatient along the slice normal,
in mm) go on its image row, so slices of one series are never near-duplicates of
each other. ``include`` / ``exclude`` globs choose files; ``._*`` and OS files are
skipped and counted (curator.adapters.walk).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydantic import Field

from curator.adapters.base import Adapter, Item
from curator.adapters.walk import WalkParams, classify
from curator.readers import ReadOptions


class DicomFolderParams(WalkParams):
    subdir: str = Field("", description="Folder below the root to walk.")
    frame_step: int = Field(1, ge=1, description="Keep every n-th frame of multi-frame files.")
    frame_range: tuple[float, float] = Field((0.0, 1.0), description="Fractions of the frames to keep.")


class DicomFolder(Adapter):
    name = "dicom_folder"
    version = "2"
    Params = DicomFolderParams

    def read_options(self) -> ReadOptions:
        return ReadOptions(
            ct_window=self.card.image.window(),
            burned_in=self.card.image.burned_in,
            slice_step=self.params.frame_step,
            slice_range=self.params.frame_range,
        )

    def _walk(self) -> list[Item]:
        if not hasattr(self, "_found"):
            base = (self.root / self.params.subdir).resolve()
            # DICOM files often have no extension: only junk and the card's globs are skipped.
            self._found, skipped = classify(self.files(base), base, self.params, sidecars=False)
            self.skipped.update(skipped)
            self._series: dict = {}
        return self._found

    def _series_of(self, path) -> tuple[str | None, float | None]:
        if path not in self._series:
            self._series[path] = _series(path) if path.is_file() else (None, None)
        return self._series[path]

    def items(self) -> Iterator[Item]:
        for item in self._walk():
            item.uri, item.fmt = self.rel(item.path), "dicom"
            item.series_id, item.slice_position = self._series_of(item.path)
            yield item


def _series(path) -> tuple[str | None, float | None]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        uid = str(ds.get("SeriesInstanceUID") or "") or None
        position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        if position is None or len(position) != 3:
            return uid, None
        if orientation is not None and len(orientation) == 6:
            normal = np.cross(np.array(orientation[:3], float), np.array(orientation[3:], float))
            return uid, round(float(np.dot(normal, np.array(position, float))), 4)
        return uid, round(float(position[2]), 4)
    except Exception:  # noqa: BLE001 - an unreadable header only means no series; the reader rejects the file
        return None, None
