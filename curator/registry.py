"""Source cards and the adapter registry.

A *source card* (``source_registry/<id>.toml``) declares what a dataset is: its
name, licence, access class, citation, default modality/anatomy/department, and
which adapter reads its native layout with which parameters. The card's file
name is its id.

Adapters are registered lazily as ``name -> "module:Class"`` so listing cards
never imports imaging code, and an unknown name fails with the list of known ones.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from curator.errors import CardError, UnknownAdapterError, UnknownSourceError
from curator.tomlfile import format_validation, load_model

ADAPTERS: dict[str, str] = {
    "class_folders": "curator.adapters.class_folders:ClassFolders",
    "label_csv": "curator.adapters.label_csv:LabelCsv",
    "image_text": "curator.adapters.image_text:ImageText",
    "dicom_folder": "curator.adapters.dicom_folder:DicomFolder",
    "nifti_volumes": "curator.adapters.nifti_volumes:NiftiVolumes",
    "nifti_folder": "curator.adapters.nifti_folder:NiftiFolder",
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
      RGB/YBR/palette colour becomes 8-bit RGB. Multi-frame volumes give one image
      per frame (the adapter's frame step and range); cine loops (Frame Time,
      Frame Time Vector or Cine Rate) follow the video policy below. Files flagged
      BurnedInAnnotation=YES are rejected
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
    - **Video** (MP4, AVI, MOV, MKV through PyAV) and **DICOM cine**: ``video_fps`` frames
      a second from t = 0, at most ``max_frames_per_file`` spread over the whole
      duration, near-identical consecutive frames skipped and counted; each image
      row carries its frame index and time. Declared frame size (64 megapixels) and
      duration (``max_video_seconds``) are checked before any frame is decoded.
    - **Whole-slide images** (pyramidal TIFF, SVS, NDPI through tifffile): square
      tiles of ``tile_size`` at ``slide_level`` or ``slide_magnification``; background
      tiles skipped and counted; each row carries the tile's level and offset; a
      slide is never decoded whole; a tile that fails is its own reject (tile_corrupt).
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

    # -- time series (video, DICOM cine) ---------------------------------------------------
    # One frame a second: consecutive frames of endoscopy or echo video are near copies, and a
    # second is short enough to keep every view a clinician would name.
    video_fps: float = Field(1.0, gt=0, le=120, description="Frames sampled per second of video or cine.")
    # 300 bounds a file's share of the corpus (a 100,000-frame cine once became 100,000 images);
    # when the declared duration would exceed it, the interval widens to span the whole file.
    max_frames_per_file: int | None = Field(
        300, ge=1, description="Most images one video, cine loop or slide gives; none for no limit."
    )
    near_duplicate_mad: float = Field(
        0.01,
        ge=0,
        le=1,
        description="A sampled frame whose 32x32 grey thumbnail differs from the last kept one by less "
        "than this mean absolute difference (0-1) is skipped and counted; 0 keeps every sampled frame.",
    )
    # Four hours covers the longest surgical recordings; a longer declared duration is a
    # reject (too_long) before any frame is decoded.
    max_video_seconds: float = Field(14400.0, gt=0, description="Longest declared video duration accepted.")

    # -- whole-slide images ----------------------------------------------------------------
    tile_size: int = Field(512, ge=64, le=4096, description="Side of the square tiles cut from a slide.")
    slide_level: int | None = Field(None, ge=0, description="Pyramid level to tile (0 = full resolution).")
    slide_magnification: float | None = Field(
        None, gt=0, description="Objective magnification to tile at (e.g. 20); the level nearest above is used."
    )
    background_fraction: float = Field(
        0.8, gt=0, le=1, description="A tile with more than this fraction of glass or empty pixels is skipped."
    )
    # 200k x 200k covers any scanner's 40x slide; beyond it the header is not believed.
    max_slide_pixels: int = Field(40_000_000_000, ge=1, description="Largest declared slide (level 0) accepted.")

    @field_validator("ct_window")
    @classmethod
    def _known_window(cls, v):
        if isinstance(v, str) and v not in CT_WINDOWS:
            raise ValueError(f"unknown CT window '{v}'; choose one of {', '.join(CT_WINDOWS)} or [centre, width]")
        return v

    @model_validator(mode="after")
    def _one_slide_scale(self):
        if self.slide_level is not None and self.slide_magnification is not None:
            raise ValueError("set slide_level or slide_magnification, not both")
        return self

    def stream_options(self) -> dict:
        """The ReadOptions fields for time series and slides, as this policy sets them."""
        names = ("video_fps", "max_frames_per_file", "near_duplicate_mad", "max_video_seconds", "tile_size")
        names += ("slide_level", "slide_magnification", "background_fraction", "max_slide_pixels")
        return {n: getattr(self, n) for n in names}

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
    top_folders: list[str] = Field(
        default_factory=list,
        description="The archive's own top folder(s) inside the unpack folder (BUSI: Dataset_BUSI_with_GT): "
        "--root may be either; the first that exists below --root is read.",
    )
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


def registries(extra: Path | None = None) -> list[Path]:
    """Where cards are looked up: a recipe's or --registry folder first, then the shipped cards.

    An extra registry *adds* cards (and overrides a shipped card of the same id); it does
    not hide the shipped ones, so a recipe with one private card still finds the rest.
    """
    shipped = Path(default_registry())
    if extra is None or Path(extra).resolve() == shipped.resolve():
        return [shipped]
    return [Path(extra), shipped]


def find_card(source_id: str, registry: Path | None = None) -> tuple[SourceCard, Path]:
    folders = registries(registry)
    if registry is not None and not Path(registry).is_dir():
        raise CardError(f"source registry folder not found: {registry}")
    for folder in folders:
        path = folder / f"{source_id}.toml"
        if path.is_file():
            return load_card(path), path
    known = sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.toml")})
    close = difflib.get_close_matches(source_id, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownSourceError(f"unknown source '{source_id}'{hint} (known: {', '.join(known) or 'none'})")


def _coerce_params(model: type[BaseModel], params: dict[str, Any]) -> dict[str, Any]:
    """On the command line a list parameter may be given as plain text: "a.csv,b.csv"."""
    out = dict(params)
    for name, value in params.items():
        field = model.model_fields.get(name)
        if field is not None and isinstance(value, str) and typing.get_origin(field.annotation) is list:
            out[name] = [v.strip() for v in value.split(",") if v.strip()]
    return out


def override_card(card: SourceCard, params: dict[str, Any], image: dict[str, Any], where: str) -> SourceCard:
    """The card with some adapter parameters and image policy fields replaced, validated as strictly.

    ``where`` names the origin in messages (``--param``, ``recipe source 'nih_chestxray14'``):
    an unknown key is an error there, never silently ignored.
    """
    if not params and not image:
        return card
    model = adapter_class(card.adapter.name).Params
    merged = {**card.adapter.params, **_coerce_params(model, params)}
    try:
        model.model_validate(merged)
    except ValidationError as exc:
        raise CardError(f"{card.id}: {where} params.{format_validation(exc)}") from None
    try:
        policy = ImagePolicy.model_validate({**card.image.model_dump(exclude_unset=True), **image})
    except ValidationError as exc:
        raise CardError(f"{card.id}: {where} image.{format_validation(exc)}") from None
    return card.model_copy(update={"adapter": AdapterSpec(name=card.adapter.name, params=merged), "image": policy})


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
    params = _coerce_params(model, params)
    try:
        model.model_validate(params)
    except ValidationError as exc:
        raise CardError(f"--adapter {adapter}: --param {format_validation(exc)}") from None
    return card.model_copy(update={"adapter": AdapterSpec(name=adapter, params=params)})


def _type_name(annotation) -> str:
    text = str(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = re.sub(r"typing\.|curator\.[a-z_.]+\.", "", text)
    text = re.sub(r"<class '([^']+)'>", r"\1", text)
    return text.replace("NoneType", "None").replace("Literal", "one of ")


def adapter_parameters(name: str) -> list[tuple[str, str, str, str]]:
    """(parameter, type, default, description) of an adapter, read from its pydantic model.

    Nested models (a box table, a join) follow their parameter as ``parameter[].field`` rows.
    """
    from pydantic_core import PydanticUndefined

    rows: list[tuple[str, str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for field_name, info in model.model_fields.items():
            if info.default_factory is not None:
                default = repr(info.default_factory())
            elif info.default is PydanticUndefined:
                default = "required"
            else:
                default = repr(info.default)
            rows.append((prefix + field_name, _type_name(info.annotation), default, info.description or ""))
            for arg in typing.get_args(info.annotation) or (info.annotation,):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg, f"{prefix}{field_name}[].")

    walk(adapter_class(name).Params, "")
    return rows


def adapter_summary(name: str) -> str:
    module = importlib.import_module(ADAPTERS[name].partition(":")[0])
    return (module.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


def adapters_markdown() -> str:
    """The adapter reference as Markdown: one table per adapter (README's generated section)."""
    out = []
    for name in sorted(ADAPTERS):
        out += [f"#### `{name}`", "", adapter_summary(name), "", "| parameter | type | default | meaning |"]
        out.append("| --- | --- | --- | --- |")
        for param, kind, default, desc in adapter_parameters(name):
            cells = [f"`{param}`", kind, f"`{default}`", desc]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
