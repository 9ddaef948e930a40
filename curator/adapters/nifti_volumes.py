"""NIfTI volumes with a labels file: the Medical Segmentation Decathlon layout.

``dataset.json`` lists ``training`` pairs (image, label mask) and names the
mask values (``labels``; MSD's ``{"0": "background", ...}`` or nnU-Net v2's
``{"background": 0, ...}``) and the modality. Each volume is sliced (plane, step
and range from the card); a slice's labels are the mask values present in it,
and each connected component of a value's pixels in the slice becomes a box
(curator.adapters.regions), which the adapter base scales to the output image's pixels.
A mask whose shape differs from its image is rejected ``mask_mismatch``.
4D images use their first channel (see readers.nifti).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
from pydantic import Field

from curator.adapters.base import Adapter, Box, Item, Label, Params
from curator.adapters.regions import components
from curator.errors import CardError, ReadError
from curator.readers import ReadOptions, slice_indices
from curator.readers.nifti import PLANES, load_volume, take_slice


class SlicingParams(Params):
    """How a volume becomes 2D images (shared by the NIfTI adapters)."""

    plane: str = Field("axial", pattern="^(axial|coronal|sagittal)$", description="Slicing plane.")
    slice_step: int = Field(1, ge=1, description="Keep every n-th slice.")
    slice_range: tuple[float, float] = Field((0.0, 1.0), description="Fractions of the volume to slice.")


class VolumeAdapter(Adapter):
    """An adapter whose params are :class:`SlicingParams`: the card's window plus the slicing policy."""

    def read_options(self) -> ReadOptions:
        p = self.params
        return ReadOptions(
            ct_window=self.card.image.window(),
            burned_in=self.card.image.burned_in,
            plane=p.plane,
            slice_step=p.slice_step,
            slice_range=p.slice_range,
        )


class NiftiVolumesParams(SlicingParams):
    dataset_json: str = Field("dataset.json", description="The labels file listing training pairs and label names.")
    include_test: bool = Field(False, description="Also index the unlabelled 'test' images.")


class NiftiVolumes(VolumeAdapter):
    name = "nifti_volumes"
    version = "2"
    Params = NiftiVolumesParams

    def items(self) -> Iterator[Item]:
        path = self.root / self.params.dataset_json
        if not path.is_file():
            raise CardError(f"{self.card.id}: '{self.params.dataset_json}' not found under {self.root}")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CardError(f"{self.card.id}: {self.params.dataset_json} is not valid JSON: {exc}") from None
        names = _label_names(meta.get("labels", {}))
        modality = next(iter(meta.get("modality", {}).values()), None)
        entries = [(e.get("image"), e.get("label"), None) for e in meta.get("training", [])]
        if self.params.include_test:
            entries += [(e if isinstance(e, str) else e.get("image"), None, "test") for e in meta.get("test", [])]
        for image, label, split in entries:
            item = Item(uri=str(image).removeprefix("./"), fmt="nifti", modality=modality, split=split)
            try:
                item.path = self.resolve(str(image))
                item.uri = self.rel(item.path)
                if label:
                    item.frame_labels, item.frame_boxes = self._slice_labels(item.path, self.resolve(str(label)), names)
            except ReadError as exc:
                item.reject = (exc.reason, exc.message)
            yield item

    def _slice_labels(self, image_path, mask_path, names: dict[int, str]):
        return slice_regions(image_path, mask_path, names, self.params.plane, self.read_options())


def slice_regions(image_path, mask_path, names: dict[int, str], plane: str, options: ReadOptions):
    """Per kept slice: the labels a mask volume marks in it and one box per connected component."""
    from curator.readers.nifti import volume_shape

    mask, _ = load_volume(mask_path)
    shape = volume_shape(image_path)
    if tuple(mask.shape[:3]) != tuple(shape[:3]):
        raise ReadError("mask_mismatch", f"mask shape {mask.shape[:3]} differs from image shape {shape[:3]}")
    labels: dict[int, list[Label]] = {}
    boxes: dict[int, list[Box]] = {}
    for k in slice_indices(mask.shape[PLANES[plane]], options):
        sl = np.rint(take_slice(mask, plane, k)).astype(int)
        labels[k], boxes[k] = [], []
        for v in np.unique(sl):
            if v == 0:
                continue
            label = Label(names.get(int(v), f"label {v}"))
            labels[k].append(label)
            boxes[k] += [Box(label, tuple(float(c) for c in b)) for b in components(sl == v)]
    return labels, boxes


def _label_names(labels: dict) -> dict[int, str]:
    out: dict[int, str] = {}
    for k, v in labels.items():
        if str(k).lstrip("-").isdigit():
            out[int(k)] = str(v)
        elif isinstance(v, int):
            out[v] = str(k)
        elif isinstance(v, list) and v and isinstance(v[0], int):  # nnU-Net v2 region labels
            out[v[0]] = str(k)
    return out
