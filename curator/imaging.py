"""Normalisation and encoding policy: a reader's frame in, encoded bytes out, once per build.

Steps, each recorded in the image row's ``transform``: physical aspect correction
(anisotropic pixels are resampled to square), a longest-side limit, quantisation
to the card's bit depth, and encoding (PNG or JPEG) with fixed settings so the
same input always gives the same bytes.

PNG goes through libpng in imagecodecs (pinned, so the bytes are reproducible) at
OpenCV's fast settings: zlib level 1, the RLE strategy, the Sub filter on every
row. Measured on synthetic 512x512 CT slices windowed to 8 bits (bench/bench_ingest.py):
about 5x faster than Pillow's default (level 6 with adaptive filters), which was
75% of ingest time, at 0.9-1.01x its bytes. Candidates measured and not taken:
Pillow at level 1 (1.2-4x faster, 1.06-1.19x bytes; Pillow exposes no filter or
strategy), libspng (1.2-2x, 1.04-1.17x), OpenCV (the same libpng settings behind a
50 MB dependency), a hand-framed PNG over libdeflate (as fast, but our own container
code). JPEG stays with Pillow (a card's ``format = "jpeg"``).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import imagecodecs
import numpy as np
from PIL import Image

from curator.errors import ReadError
from curator.readers import Frame
from curator.registry import ImagePolicy

# zlib level 1 with the RLE strategy: where the speed comes from (see the module docstring)
PNG_LEVEL = 1


@dataclass
class Encoded:
    data: bytes
    format: str
    width: int
    height: int
    bit_depth: int
    channels: int
    sha256: str
    phash: str
    transform: dict

    @property
    def ext(self) -> str:
        return "png" if self.format == "png" else "jpg"


def _target_size(h: int, w: int, spacing, max_side) -> tuple[int, int, dict]:
    notes: dict = {}
    th, tw = float(h), float(w)
    if spacing and spacing[0] > 0 and spacing[1] > 0 and abs(spacing[0] - spacing[1]) / max(spacing) > 0.01:
        unit = min(spacing)
        th, tw = h * spacing[0] / unit, w * spacing[1] / unit
        notes["aspect"] = {"pixel_spacing_mm": [round(spacing[0], 4), round(spacing[1], 4)]}
    if max_side and max(th, tw) > max_side:
        scale = max_side / max(th, tw)
        th, tw = th * scale, tw * scale
    return max(1, round(th)), max(1, round(tw)), notes


def _resize_float(unit: np.ndarray, h: int, w: int) -> np.ndarray:
    if unit.shape[:2] == (h, w):
        return unit
    chans = [unit] if unit.ndim == 2 else [unit[..., c] for c in range(unit.shape[2])]
    out = [np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((w, h), Image.LANCZOS)) for c in chans]
    res = out[0] if unit.ndim == 2 else np.stack(out, axis=-1)
    return np.clip(res, 0.0, 1.0)


def to_unit(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / 65535.0
    return pixels.astype(np.float32, copy=False)


def quantise(unit: np.ndarray, bits: int) -> np.ndarray:
    top = 255 if bits == 8 else 65535
    # in place on one temporary (clip, scale, round half to even): the same values as
    # np.round(np.clip(unit, 0, 1) * top), with one 1 MB array per slice instead of three
    scaled = np.clip(unit, 0.0, 1.0)
    scaled *= top
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8 if bits == 8 else np.uint16)


def dhash(grey: np.ndarray) -> str:
    """64-bit difference hash of a greyscale image (float [0, 1], or uint8): near-duplicates differ in few bits."""
    img = Image.fromarray(grey if grey.dtype == np.uint8 else quantise(grey, 8)).resize((9, 8), Image.BILINEAR)
    a = np.asarray(img, dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def normalise(frame: Frame, policy: ImagePolicy) -> Encoded:
    pixels = frame.pixels
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or min(pixels.shape[:2]) < 1:
        raise ReadError("corrupt", f"unexpected pixel array shape {pixels.shape}")
    colour = pixels.ndim == 3
    bits = 8 if (colour or policy.format == "jpeg") else policy.bit_depth
    h, w = pixels.shape[:2]
    th, tw, transform = _target_size(h, w, frame.pixel_spacing, policy.max_side)
    exact = (th, tw) == (h, w) and (
        (pixels.dtype == np.uint8 and bits == 8) or (pixels.dtype == np.uint16 and bits == 16)
    )
    if exact:
        out = pixels
    else:
        out = quantise(_resize_float(to_unit(pixels), th, tw), bits)
        if (th, tw) != (h, w):
            transform["resize"] = {"from": [w, h], "to": [tw, th], "filter": "lanczos"}
    if pixels.dtype == np.uint16 and bits == 8:
        transform["depth"] = "16-bit input quantised to 8-bit"
    if not colour and out.max() == out.min():
        raise ReadError("empty_image", "image is a single flat value after normalisation")

    if policy.format == "png":
        data = encode_png(out)
    else:
        buf = io.BytesIO()
        Image.fromarray(out).save(
            buf, format="JPEG", quality=policy.jpeg_quality, optimize=False, progressive=False, subsampling=0
        )
        data = buf.getvalue()
    transform.update({"encode": {"format": policy.format, "bit_depth": bits}})
    if policy.format == "jpeg":
        transform["encode"]["quality"] = policy.jpeg_quality
    # an 8-bit grey image is its own 8-bit hash input (the float round trip gives the same bytes)
    grey = (
        out if (out.dtype == np.uint8 and not colour) else (to_unit(out) if not colour else to_unit(out).mean(axis=2))
    )
    return Encoded(
        data=data,
        format=policy.format,
        width=tw,
        height=th,
        bit_depth=bits,
        channels=3 if colour else 1,
        sha256=hashlib.sha256(data).hexdigest(),
        phash=dhash(grey),
        transform={**frame.transform, **transform},
    )


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG of a uint8/uint16 grey (HxW) or RGB (HxWx3) array; settings in the module docstring."""
    return imagecodecs.png_encode(
        np.ascontiguousarray(pixels),
        level=PNG_LEVEL,
        strategy=imagecodecs.PNG.STRATEGY.RLE,
        filter=imagecodecs.PNG.FILTER.SUB,
    )
