"""Any tree of NIfTI volumes, no ``dataset.json`` needed (as ``dicom_folder`` is for DICOM).

Every ``.nii`` / ``.nii.gz`` below ``subdir`` (filtered by ``include`` /
``exclude``) is a volume sliced along ``plane``. Masks are found beside or apart
from each volume by name templates (``masks``: ``../labelsTr/{name}`` for an
nnU-Net/MSD-style tree, ``{stem}_seg{ext}`` for BraTS) and mask folders
(``mask_dirs``) are never read as images. A mask's values name labels through
``mask_values`` (``{1 = "spleen"}``; unnamed values become ``label <n>``); each
slice gets the labels present in it and one box per connected component.
Files that are not NIfTI are rejected ``unsupported_format``; ``._*``, sidecar JSON
and OS files are skipped and counted (curator.adapters.walk).
"""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from curator.adapters.base import Item
from curator.adapters.nifti_volumes import SlicingParams, VolumeAdapter, slice_regions
from curator.adapters.walk import MaskParams, WalkParams, _stem, classify
from curator.errors import ReadError


class NiftiFolderParams(WalkParams, MaskParams, SlicingParams):
    subdir: str = Field("", description="Folder below the root to walk.")
    mask_values: dict[int, str] = Field(default_factory=dict, description="Mask value -> label name.")
    label_from_mask_name: bool = Field(
        False, description="Each mask file is one structure named by its file name (TotalSegmentator's spleen.nii.gz)."
    )
    modality: str | None = Field(None, description="Modality of every volume (else the card's).")


class NiftiFolder(VolumeAdapter):
    name = "nifti_folder"
    version = "1"
    Params = NiftiFolderParams

    def items(self) -> Iterator[Item]:
        p = self.params
        base = (self.root / p.subdir).resolve()
        found, skipped = classify(self.files(base), base, p)
        self.skipped.update(skipped)
        for item in found:
            item.uri, item.fmt, item.modality = self.rel(item.path), "nifti", p.modality
            if item.reject is None and not item.path.name.lower().endswith((".nii", ".nii.gz")):
                item.reject = ("unsupported_format", f"'{item.path.name}' is not a NIfTI volume (.nii, .nii.gz)")
            elif item.reject is None and item.masks:
                masks, item.masks = item.masks, []  # volume masks: per-slice regions here, not 2D masks
                try:
                    item.frame_labels, item.frame_boxes = {}, {}
                    for mask in masks:
                        names = {1: _stem(mask.name)} if p.label_from_mask_name else p.mask_values
                        labels, boxes = slice_regions(item.path, mask, names, p.plane, self.read_options())
                        for k in labels:
                            item.frame_labels.setdefault(k, []).extend(labels[k])
                            item.frame_boxes.setdefault(k, []).extend(boxes[k])
                except ReadError as exc:
                    item.reject = (exc.reason, exc.message)
                except (OSError, EOFError, ValueError) as exc:
                    item.reject = ("corrupt", f"mask of '{item.path.name}' cannot be read: {exc}")
            yield item
