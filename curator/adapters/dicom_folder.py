"""A folder of DICOM files, any depth, any names (PACS exports, TCIA series).

Every file is an item read as DICOM: files without the DICM preamble are
rejected ``not_dicom``, DICOMDIR and reports ``no_pixels``. Modality and anatomy
come from the header (Modality, BodyPartExamined) where present, else the card.
Multi-frame files yield one image per kept frame (``frame_step``, ``frame_range``:
the same rule as NIfTI slicing).
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from curator.adapters.base import Adapter, Item, Params
from curator.readers import ReadOptions


class DicomFolderParams(Params):
    subdir: str = Field("", description="Folder below the root to walk.")
    frame_step: int = Field(1, ge=1, description="Keep every n-th frame of multi-frame files.")
    frame_range: tuple[float, float] = Field((0.0, 1.0), description="Fractions of the frames to keep.")


class DicomFolder(Adapter):
    name = "dicom_folder"
    version = "1"
    Params = DicomFolderParams

    def read_options(self) -> ReadOptions:
        return ReadOptions(
            ct_window=self.card.image.window(),
            burned_in=self.card.image.burned_in,
            slice_step=self.params.frame_step,
            slice_range=self.params.frame_range,
        )

    def items(self) -> Iterator[Item]:
        for path in self.files((self.root / self.params.subdir).resolve()):
            yield Item(uri=self.rel(path), path=path, fmt="dicom")
