"""A folder of DICOM files, any depth, any names (PACS exports, TCIA series).

Every file is an item read as DICOM: files without the DICM preamble are
rejected ``not_dicom``, DICOMDIR and reports ``no_pixels``. Modality and anatomy
come from the header (Modality, BodyPartExamined) where present, else the card.
Multi-frame files yield one image per kept frame (``frame_step``, ``frame_range``:
the same rule as NIfTI slicing). Each file's series (SeriesInstanceUID, stored only
as a keyed hash) and slice position (ImagePositionPatient along the slice normal,
in mm) go on its image row, so slices of one series are never near-duplicates of
each other; both come from the plan's one parse of each header (``headers_seen``).
``include`` / ``exclude`` globs choose files; ``._*`` and OS files are skipped and
counted (curator.adapters.walk).
"""

from __future__ import annotations

from collections.abc import Iterator

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
        return self._found

    def items(self) -> Iterator[Item]:
        # no header read here: the plan's header pass reads each one once (headers_seen)
        for item in self._walk():
            item.uri, item.fmt = self.rel(item.path), "dicom"
            yield item

    def headers_seen(self, items: list[Item], headers: dict) -> None:
        """Each file's series and slice position, from the one parse of its header."""
        for item in items:
            header = headers.get(item.path)
            if header is not None:
                item.series_id, item.slice_position = header.series_uid, header.slice_position
