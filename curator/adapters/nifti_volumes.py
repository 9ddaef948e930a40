"""NIfTI volumes with a labels file: the Medical Segmentation Decathlon layout.

``dataset.json`` lists ``training`` pairs (image, label mask) and names the
mask values (``labels``) and the modality. Each volume is sliced (plane, step and
range from the card); a slice's labels are the mask values present in it.
4D images use their first channel (see readers.nifti).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
from pydantic import Field

from curator.adapters.base import Adapter, Item, Label, Params
from curator.errors import CardError, ReadError
from curator.readers import ReadOptions
from curator.readers.nifti import PLANES, load_volume, slice_indices, take_slice


class NiftiVolumesParams(Params):
    dataset_json: str = "dataset.json"
    include_test: bool = Field(False, description="Also index the unlabelled 'test' images.")
    plane: str = Field("axial", pattern="^(axial|coronal|sagittal)$")
    slice_step: int = Field(1, ge=1)
    slice_range: tuple[float, float] = Field((0.0, 1.0), description="Fractions of the volume to slice.")


class NiftiVolumes(Adapter):
    name = "nifti_volumes"
    version = "1"
    Params = NiftiVolumesParams

    def read_options(self) -> ReadOptions:
        p = self.params
        return ReadOptions(
            ct_window=self.card.image.window(), plane=p.plane, slice_step=p.slice_step, slice_range=p.slice_range
        )

    def items(self) -> Iterator[Item]:
        path = self.root / self.params.dataset_json
        if not path.is_file():
            raise CardError(f"{self.card.id}: '{self.params.dataset_json}' not found under {self.root}")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CardError(f"{self.card.id}: {self.params.dataset_json} is not valid JSON: {exc}") from None
        names = {int(k): v for k, v in meta.get("labels", {}).items()}
        modality = next(iter(meta.get("modality", {}).values()), None)
        entries = [(e.get("image"), e.get("label"), None) for e in meta.get("training", [])]
        if self.params.include_test:
            entries += [(e if isinstance(e, str) else e.get("image"), None, "test") for e in meta.get("test", [])]
        for image, label, split in entries:
            item = Item(uri=str(image), fmt="nifti", modality=modality, split=split)
            try:
                item.path = self.resolve(str(image))
                item.uri = self.rel(item.path)
                if label:
                    item.frame_labels = self._slice_labels(self.resolve(str(label)), names)
            except ReadError as exc:
                item.reject = (exc.reason, exc.message)
            yield item

    def _slice_labels(self, mask_path, names: dict[int, str]) -> dict[int, list[Label]]:
        mask, _ = load_volume(mask_path)
        plane = self.params.plane
        out: dict[int, list[Label]] = {}
        for k in slice_indices(mask.shape[PLANES[plane]], self.read_options()):
            values = np.unique(np.rint(take_slice(mask, plane, k)).astype(int))
            out[k] = [Label(names.get(int(v), f"label {v}")) for v in values if v != 0]
        return out
