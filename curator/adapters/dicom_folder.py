"""A folder of DICOM files, any depth, any names (PACS exports, TCIA series).

Every file is an item read as DICOM: files without the DICM preamble are
rejected ``not_dicom``, DICOMDIR and reports ``no_pixels``. Modality and anatomy
come from the header (Modality, BodyPartExamined) where present, else the card.
Multi-frame files yield one image per frame.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from curator.adapters.base import Adapter, Item, Params


class DicomFolderParams(Params):
    subdir: str = Field("", description="Folder below the root to walk.")


class DicomFolder(Adapter):
    name = "dicom_folder"
    version = "1"
    Params = DicomFolderParams

    def items(self) -> Iterator[Item]:
        for path in self.files((self.root / self.params.subdir).resolve()):
            yield Item(uri=self.rel(path), path=path, fmt="dicom")
