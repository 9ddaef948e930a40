"""Source cards and the adapter registry.

A *source card* (``source_registry/<id>.toml``) declares what a dataset is: its
name, licence, access class, citation, default modality/anatomy/department, and
which adapter reads its native layout with which parameters. The card's file
name is its id.

Adapters are registered lazily as ``name -> "module:Class"`` so listing cards
never imports imaging code, and an unknown name fails with the list of known ones.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curator.errors import CardError, UnknownAdapterError, UnknownSourceError
from curator.tomlfile import format_validation, load_model

ADAPTERS: dict[str, str] = {
    "class_folders": "curator.adapters.class_folders:ClassFolders",
    "label_csv": "curator.adapters.label_csv:LabelCsv",
    "image_text": "curator.adapters.image_text:ImageText",
    "dicom_folder": "curator.adapters.dicom_folder:DicomFolder",
    "nifti_volumes": "curator.adapters.nifti_volumes:NiftiVolumes",
    "image_report": "curator.adapters.image_report:ImageReport",
    "openi_reports": "curator.adapters.openi_reports:OpeniReports",
}

# Named CT windows (centre, width) in Hounsfield units, the usual radiology presets.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}

SPDX_OR_REF = re.compile(r"^(LicenseRef-[A-Za-z0-9.\-]+|[A-Za-z0-9.\-+]+( (AND|OR|WITH) [A-Za-z0-9.\-+]+)*)$")


@functools.cache
def _spdx_ids() -> frozenset[str]:
    from license_expression import get_spdx_licensing

    return frozenset(get_spdx_licensing().known_symbols)


def unknown_licence_ids(expression: str) -> list[str]:
    """Ids in an SPDX expression that are neither on the SPDX list nor a LicenseRef-<name>.

    Auditors and the licence filters rely on this field, so "GPL-banana" must not pass.
    """
    tokens = re.findall(r"[A-Za-z0-9.\-+]+", expression)
    return [
        t
        for t in tokens
        if t not in ("AND", "OR", "WITH")
        and not (t.startswith("LicenseRef-") and len(t) > len("LicenseRef-"))
        and t not in _spdx_ids()
    ]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdapterSpec(Strict):
    name: str = Field(description="Registered adapter name, e.g. 'class_folders'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Adapter parameters, validated by the adapter.")


class ImagePolicy(Strict):
    """How every image of a source is normalised and encoded. The policy, stated once:

    - **DICOM**, per frame in the standard's order: decode; modality LUT (Modality
      LUT Sequence, else Rescale Slope/Intercept, per frame for enhanced
      multi-frame objects); VOI: the card's ``ct_window`` for CT, else the VOI LUT
      Sequence, else the header's first Window Centre/Width with its VOI LUT
      Function (LINEAR, LINEAR_EXACT, SIGMOID), else the 0.5-99.5 percentile range;
      MONOCHROME1 inverted *after* windowing; then quantised to ``bit_depth``.
      RGB/YBR/palette colour becomes 8-bit RGB. Multi-frame files give one image
      per frame. Files flagged BurnedInAnnotation=YES are rejected
      (``burned_in_annotation``) unless ``burned_in = "allow"``.
    - **NIfTI**: reoriented to RAS+, sliced along the adapter's plane; displayed
      radiologically (patient right on the viewer's left, anterior/superior up);
      scl_slope/inter applied; ``ct_window`` for CT, else percentile 0.5-99.5 per
      slice; 4D volumes use the first volume (t=0 / first channel); free-text
      header fields (descrip, aux_file, intent_name) are never read.
    - **PNG/JPEG/TIFF**: EXIF orientation applied; grey+alpha and RGBA composited on
      black; 8- and 16-bit values kept exactly when no resize is needed and the
      output depth matches; images above 64 megapixels rejected
      (``decompression_bomb``).
    - **Geometry**: anisotropic pixels (DICOM Pixel Spacing / Imager Pixel Spacing /
      Pixel Aspect Ratio, NIfTI voxel sizes) are resampled to square pixels, then
      the longest side is limited to ``max_side`` (Lanczos). Boxes are given in the
      output image's pixel coordinates.
    - 16-bit output applies to greyscale PNG only; colour and JPEG are 8-bit.
      The transform actually applied is recorded as JSON on each image row.
    """

    format: Literal["png", "jpeg"] = Field("png", description="Encoded output format.")
    bit_depth: Literal[8, 16] = Field(8, description="Output bits per channel (16 only for greyscale PNG).")
    jpeg_quality: int = Field(90, ge=50, le=100, description="JPEG quality when format is jpeg.")
    # 512 keeps fine findings visible at the resolutions VLMs train at (224-448)
    # while a million images still fit a few hundred GB of shards.
    max_side: int | None = Field(512, ge=16, description="Longest side in pixels after resize; none keeps size.")
    ct_window: str | tuple[float, float] | None = Field(
        None,
        description="CT window: a preset name (lung, mediastinum, abdomen, liver, bone, brain) or [centre, width].",
    )

    burned_in: Literal["reject", "allow"] = Field(
        "reject",
        description="DICOM with BurnedInAnnotation=YES: reject (default) or allow when the publisher scrubbed pixels.",
    )
    # Bounded cost per input: checked against what a header declares, before anything is allocated.
    max_pixels: int = Field(64_000_000, ge=1, description="Pixels of one 2D image or frame (decompression_bomb).")
    max_decoded_bytes: int = Field(
        2 * 1024**3, ge=1, description="Bytes one file decodes to: NIfTI shape x float32, DICOM all frames."
    )
    max_frames: int = Field(2048, ge=1, description="Frames or slices one file may hold (too_many_frames).")
    # 20k characters holds the longest radiology report; a 50 MB "caption" is an attack or a bug.
    max_text_chars: int = Field(20_000, ge=1, description="Characters of one caption, report or VQA text.")

    def limits(self):
        from curator.readers import Limits

        return Limits(self.max_pixels, self.max_decoded_bytes, self.max_frames)

    @field_validator("ct_window")
    @classmethod
    def _known_window(cls, v):
        if isinstance(v, str) and v not in CT_WINDOWS:
            raise ValueError(f"unknown CT window '{v}'; choose one of {', '.join(CT_WINDOWS)} or [centre, width]")
        return v

    def window(self) -> tuple[float, float] | None:
        if self.ct_window is None:
            return None
        return CT_WINDOWS[self.ct_window] if isinstance(self.ct_window, str) else tuple(self.ct_window)


class SourceCard(Strict):
    """What a dataset is. Licence and access must be right: auditors rely on them."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="snake_case id; equals the card's file name.")
    name: str
    version: str = Field(description="Dataset release the card describes.")
    description: str = ""
    homepage: str | None = Field(
        None, pattern=r"^https?://", description="Where the dataset is published; none for synthetic demo data."
    )
    license: str = Field(description="SPDX expression or LicenseRef-<name>.")
    access: Literal["open", "credentialed", "on-request"]
    citation: str
    modality: str = Field(description="Default modality when the layout or header does not say.")
    anatomy: str = Field(description="Default anatomy when the layout or header does not say.")
    department: str
    languages: list[str] = Field(default_factory=lambda: ["en"])
    adapter: AdapterSpec
    image: ImagePolicy = Field(default_factory=ImagePolicy)
    identifiers_in_paths: bool = Field(
        False,
        description="The layout names folders or files by patient identifiers (a PACS export): every path "
        "component holding one is written as a keyed token, mapped back by a local lookup that is never shipped.",
    )
    notes: str = ""

    @field_validator("license")
    @classmethod
    def _spdx(cls, v: str) -> str:
        if not SPDX_OR_REF.match(v):
            raise ValueError(f"'{v}' is not an SPDX expression or LicenseRef-…")
        unknown = unknown_licence_ids(v)
        if unknown:
            raise ValueError(
                f"unknown licence id(s) {', '.join(unknown)}: use an SPDX id (spdx.org/licenses) "
                "or LicenseRef-<name> for a licence SPDX does not list"
            )
        return v


def card_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def project_dir(name: str, env: str) -> Path:
    """Find a project folder (source_registry, prompts): $ENV, then ./name, then beside the package."""
    if os.environ.get(env):
        return Path(os.environ[env])
    here = Path.cwd() / name
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / name


def default_registry() -> Path:
    return project_dir("source_registry", "CURATOR_REGISTRY")


def load_card(path: Path) -> SourceCard:
    path = Path(path)
    card = load_model(path, SourceCard, CardError, "card")
    if card.id != path.stem:
        raise CardError(f"{path}: id '{card.id}' must equal the file name '{path.stem}'")
    try:
        params_model = adapter_class(card.adapter.name).Params
    except UnknownAdapterError as exc:
        raise CardError(f"{path}: {exc}") from None
    try:
        params_model.model_validate(card.adapter.params)
    except ValidationError as exc:
        raise CardError(f"{path}: adapter.params.{format_validation(exc)}") from None
    return card


def card_paths(registry: Path | None = None) -> list[Path]:
    registry = Path(registry or default_registry())
    if not registry.is_dir():
        raise CardError(f"source registry folder not found: {registry}")
    return sorted(registry.glob("*.toml"))


def load_registry(registry: Path | None = None) -> dict[str, SourceCard]:
    return {p.stem: load_card(p) for p in card_paths(registry)}


def find_card(source_id: str, registry: Path | None = None) -> tuple[SourceCard, Path]:
    registry = Path(registry or default_registry())
    path = registry / f"{source_id}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in card_paths(registry)) or "none"
        raise UnknownSourceError(f"unknown source '{source_id}' (known: {known})")
    return load_card(path), path


def adapter_class(name: str):
    try:
        target = ADAPTERS[name]
    except KeyError:
        raise UnknownAdapterError(f"unknown adapter '{name}' (known: {', '.join(sorted(ADAPTERS))})") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def adhoc_card(adapter: str, root: Path, *, source_id: str | None = None, **fields: Any) -> SourceCard:
    """A card for a generic adapter run without a registry file (``curator ingest --adapter``).

    Fields left out get conservative defaults: licence ``LicenseRef-unspecified`` and
    access ``on-request``, so nothing un-described is ever treated as open data.
    """
    params = fields.pop("params", None) or {}
    image = fields.pop("image", None) or {}
    # Not named after the folder: a DICOM export's folder may be a patient ID, and the id
    # travels into every sample key. A hash of the root path is stable and says nothing.
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]
    sid = source_id or f"{adapter}_{digest}"
    if not sid[0].isalpha():
        sid = f"src_{sid}"
    data = {
        "id": sid,
        "name": fields.pop("name", None) or f"ad-hoc {adapter} source {digest} (no source card)",
        "version": fields.pop("version", None) or "unversioned",
        "license": fields.pop("license", None) or "LicenseRef-unspecified",
        "access": fields.pop("access", None) or "on-request",
        "citation": fields.pop("citation", None) or "not given (ingested without a source card)",
        "modality": fields.pop("modality", None) or "mixed",
        "anatomy": fields.pop("anatomy", None) or "unspecified",
        "department": fields.pop("department", None) or "unspecified",
        "adapter": {"name": adapter, "params": params},
        "image": image,
        "notes": "Made on the command line by `curator ingest --adapter`; no registry card describes this source.",
    }
    data.update({k: v for k, v in fields.items() if v is not None})
    try:
        card = SourceCard.model_validate(data)
    except ValidationError as exc:
        raise CardError(f"--adapter {adapter}: {format_validation(exc)}") from None
    model = adapter_class(adapter).Params
    # On the command line a list parameter may be given as plain text: "a.csv,b.csv".
    for name, value in list(params.items()):
        field = model.model_fields.get(name)
        if field is not None and isinstance(value, str) and typing.get_origin(field.annotation) is list:
            params[name] = [v.strip() for v in value.split(",") if v.strip()]
    try:
        model.model_validate(params)
    except ValidationError as exc:
        raise CardError(f"--adapter {adapter}: --param {format_validation(exc)}") from None
    return card.model_copy(update={"adapter": AdapterSpec(name=adapter, params=params)})
