"""What a folder-walking layout reads, and what it deliberately leaves: globs, junk, masks.

Shared by the adapters that walk a tree (class_folders, dicom_folder, nifti_folder).
A file the walk sees ends in exactly one place: an input (indexed or rejected by the
base), a mask attached to its image, or a *skipped* count named by why:

- ``macos_resource_fork``: ``._*`` AppleDouble files that macOS archives carry;
- ``os_metadata``: ``.DS_Store``, ``Thumbs.db``, ``desktop.ini``;
- ``sidecar``: JSON beside images (SLAKE's ``detection.json``, BIDS / dcm2niix JSON);
- ``excluded``: outside the card's ``include`` globs or inside its ``exclude`` globs;
- ``mask``: a mask read as a region of its image.

Table layouts add ``not_in_table`` (a file in a searched image folder that no row
names) and ``duplicate_name`` (a second file of one name across searched folders).

A file that looks like a mask but has no image beside it is rejected (``bad_layout``).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections import Counter
from pathlib import Path

from pydantic import Field, field_validator

from curator.adapters.base import SPLITS, Item, Params

OS_METADATA = {".ds_store", "thumbs.db", "desktop.ini"}
# Metadata written beside images or volumes (BIDS and dcm2niix JSON, SLAKE's detection.json).
# Other stray files (a README at the wrong depth) stay inputs and are rejected with a reason.
SIDECARS = {".json"}


class WalkParams(Params):
    include: list[str] = Field(
        default_factory=list,
        description="Shell globs on the path below the walked folder ('*' crosses folders); empty: every file.",
    )
    exclude: list[str] = Field(default_factory=list, description="Shell globs of files not to read (counted excluded).")
    split_globs: dict[str, str] = Field(
        default_factory=dict,
        description="Shell glob on the path below the walked folder -> official split of the files it matches "
        "(BTCV: {'Testing/*' = 'test'}); the first match wins, other files get the seeded patient split.",
    )

    @field_validator("split_globs")
    @classmethod
    def _known_splits(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted({s for s in v.values() if s.lower() not in SPLITS})
        if bad:
            raise ValueError(f"split(s) {', '.join(bad)} are not train/val/test")
        return v


class MaskParams(Params):
    masks: list[str] = Field(
        default_factory=list,
        description="Where an image's masks are, relative to its folder: globs with {stem}, {name}, {ext} "
        "(BUSI: '{stem}_mask{ext}', '{stem}_mask_*{ext}'; Kvasir-SEG: '../masks/{stem}.*'), "
        "and {mask_stem} (see mask_stem_replace).",
    )
    mask_stem_replace: dict[str, str] = Field(
        default_factory=dict,
        description="Text replaced in the image's stem to give {mask_stem}, for masks named after their image "
        "with another word (LiTS: {'volume' = 'segmentation'} pairs volume-0.nii with segmentation-0.nii).",
    )
    mask_dirs: list[str] = Field(
        default_factory=list,
        description="Folders (globs below the walked folder) holding only masks: never read as images.",
    )
    mask_label: str | None = Field(
        None, description="Label the mask regions mark; default the image's own label, else 'region'."
    )
    mask_threshold: int = Field(0, ge=0, le=254, description="Mask pixels above this grey value are foreground.")
    min_region_pixels: int = Field(1, ge=1, description="Smaller connected components are noise (JPEG masks).")


def masks_for(image: Path, templates: list[str], replace: dict[str, str] | None = None) -> list[Path]:
    found: list[Path] = []
    stem = _stem(image.name)
    mask_stem = stem
    for old, new in (replace or {}).items():
        mask_stem = mask_stem.replace(old, new)
    for template in templates:
        pattern = template.format(
            stem=glob.escape(stem),
            name=glob.escape(image.name),
            ext=glob.escape(_ext(image.name)),
            mask_stem=glob.escape(mask_stem),
        )
        # normpath, not resolve: '../masks/x' names the mask folder's own entry, links included
        found += [
            Path(os.path.normpath(p)) for p in sorted(glob.glob(os.path.join(glob.escape(str(image.parent)), pattern)))
        ]
    found = [p for p in found if p != image]
    return [p for p in dict.fromkeys(found) if p.is_file()]


def _ext(name: str) -> str:
    lower = name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if lower.endswith(double):
            return name[-len(double) :]
    return Path(name).suffix


def _stem(name: str) -> str:
    ext = _ext(name)
    return name[: -len(ext)] if ext else name


def _mask_name_regex(templates: list[str], replace: dict[str, str] | None = None) -> re.Pattern | None:
    """A regex recognising a mask by its own name, from the templates that stay in the image's folder."""
    parts = []
    # {mask_stem} holds one of the replacement words (segmentation-0 holds 'segmentation')
    words = "|".join(re.escape(v) for v in (replace or {}).values() if v)
    mask_stem = f".*(?:{words}).*" if words else ".+"
    for t in templates:
        if "/" in t:
            continue
        rx = re.escape(t).replace(r"\{stem\}", ".+").replace(r"\{name\}", ".+").replace(r"\{ext\}", r"\.[^/]+")
        rx = rx.replace(r"\{mask_stem\}", mask_stem)
        parts.append(rx.replace(r"\*", ".*").replace(r"\?", "."))
    return re.compile("^(?:" + "|".join(parts) + ")$", re.IGNORECASE) if parts else None


def classify(files: list[Path], base: Path, params, sidecars: bool = True) -> tuple[list[Item], Counter]:
    """Inputs (with their masks attached) and skip counts for the files of a walk.

    ``sidecars=False`` tries JSON/text files as inputs too (a DICOM file may be named anything).
    """
    skipped: Counter = Counter()
    kept: list[Path] = []
    include, exclude = getattr(params, "include", []), getattr(params, "exclude", [])
    for path in files:
        rel = path.relative_to(base).as_posix()
        name = path.name.lower()
        if path.name.startswith("._"):
            skipped["macos_resource_fork"] += 1
        elif name in OS_METADATA:
            skipped["os_metadata"] += 1
        elif include and not any(fnmatch.fnmatch(rel, g) for g in include):
            skipped["excluded"] += 1
        elif exclude and any(fnmatch.fnmatch(rel, g) for g in exclude):
            skipped["excluded"] += 1
        elif sidecars and path.suffix.lower() in SIDECARS:
            skipped["sidecar"] += 1
        else:
            kept.append(path)
    templates = getattr(params, "masks", [])
    mask_dirs = getattr(params, "mask_dirs", [])
    splits = getattr(params, "split_globs", {})

    def split_of(path: Path) -> str | None:
        rel = path.relative_to(base).as_posix()
        return next((split for g, split in splits.items() if fnmatch.fnmatch(rel, g)), None)

    if not (templates or mask_dirs):
        return [Item(uri="", path=p, split=split_of(p)) for p in kept], skipped
    replace = getattr(params, "mask_stem_replace", {})
    regex = _mask_name_regex(templates, replace)
    in_mask_dir = {p for p in kept if any(fnmatch.fnmatch(p.parent.relative_to(base).as_posix(), d) for d in mask_dirs)}
    looks_like_mask = {p for p in kept if regex and regex.match(p.name)} | in_mask_dir
    claimed: set[Path] = set()
    items = []
    for path in kept:
        if path in in_mask_dir:
            continue
        masks = masks_for(path, templates, replace)
        if path in looks_like_mask and not masks:
            continue  # decided below: a mask of another image, or an orphan
        claimed.update(masks)
        items.append(
            Item(
                uri="",
                path=path,
                split=split_of(path),
                masks=masks,
                mask_label=getattr(params, "mask_label", None),
                mask_threshold=getattr(params, "mask_threshold", 0),
                min_region_pixels=getattr(params, "min_region_pixels", 1),
            )
        )
    items = [i for i in items if i.path not in claimed]
    for path in sorted(looks_like_mask):
        if path in claimed:
            skipped["mask"] += 1
        else:
            items.append(Item(uri="", path=path, reject=("bad_layout", f"mask '{path.name}' has no image beside it")))
    return sorted(items, key=lambda i: i.path), skipped
