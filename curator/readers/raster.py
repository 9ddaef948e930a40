"""PNG, JPEG, TIFF and BMP through Pillow, with exact 8/16-bit values.

Policy: greyscale 8- and 16-bit values are kept exactly; grey+alpha and RGBA are
composited on black (medical backgrounds are dark); palette and CMYK become RGB;
EXIF orientation is applied; a multi-page TIFF gives its first page only (later
pages are usually thumbnails or other resolutions); the pixel count is checked
against :data:`MAX_PIXELS` before any decoding, and ``load()`` (not ``verify()``,
which passes truncated JPEGs) decodes the data.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from curator.errors import ReadError
from curator.readers import Frame, Limits

# 64 megapixels: larger than any whole-slide thumbnail or radiograph we shard,
# small enough that a crafted header cannot exhaust memory.
MAX_PIXELS = Limits().max_pixels  # the default; a card's image.max_pixels overrides it


def read_raster(path: Path, data: bytes | None = None, limits: Limits | None = None) -> list[Frame]:
    max_pixels = (limits or Limits()).max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if data is None else io.BytesIO(data)) as img:
                # the header's declared size, before a byte of pixel data is decoded
                if img.width * img.height > max_pixels:
                    raise ReadError("decompression_bomb", f"{img.width}x{img.height} exceeds {max_pixels} pixels")
                img.load()  # verify() passes truncated JPEGs; only load() decodes them
                fmt = img.format
                img = ImageOps.exif_transpose(img)
                pixels, mode_note = _to_array(img)
    except ReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ReadError("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError:
        raise ReadError("corrupt", "not a readable image") from None
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise ReadError(reason, str(exc)) from None
    transform = {"source_mode": mode_note} if mode_note else {}
    return [Frame(pixels=pixels, meta={"format": (fmt or "").lower()}, transform=transform)]


def _to_array(img: Image.Image) -> tuple[np.ndarray, str | None]:
    mode = img.mode
    if mode in ("L", "RGB"):
        return np.asarray(img), None
    if mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.uint16), mode
    if mode == "I":
        arr = np.asarray(img)
        if arr.min() >= 0 and arr.max() <= 65535:
            return arr.astype(np.uint16), mode
        raise ReadError("corrupt", "32-bit integer image outside 16-bit range")
    if mode in ("LA", "RGBA", "PA"):
        # Composite on black: medical images put background at the low end.
        base = "L" if mode == "LA" else "RGB"
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(black, rgba).convert(base)), f"{mode} composited on black"
    if mode == "1":
        return np.asarray(img.convert("L")), mode
    if mode == "P":
        return np.asarray(img.convert("RGB")), mode
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        from curator.readers import percentile_to_unit

        return percentile_to_unit(arr)[0], mode
    return np.asarray(img.convert("RGB")), mode
