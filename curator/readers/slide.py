"""Whole-slide images (pyramidal TIFF, SVS, NDPI, SCN, BIF) as tiles, through tifffile.

Why tifffile and not OpenSlide: tifffile is BSD-3-Clause with wheels everywhere
(its JPEG, JPEG 2000 and LZW tile codecs come from imagecodecs, BSD-3-Clause),
and it hands us each stored tile's bytes and decoder, so one tile is decoded at a
time and a broken tile is a reject of that tile only. OpenSlide (LGPL-2.1) reads a
few more vendor formats (MIRAX, VMS), but an error while reading a region puts
its handle in a sticky error state, losing every later tile of the slide.

Policy (``curator.registry.ImagePolicy``): tiles of ``tile_size`` pixels at the
pyramid level the card names (``slide_level``), or at the level nearest above the
card's ``slide_magnification`` (objective power from the SVS header, else from the
pixel size, 10 / microns-per-pixel), downsampled to that magnification when no level
matches exactly. Margins narrower than a tile are not tiled. Background (mostly
white glass or black empty scanner fill, over ``background_fraction`` of a tile) is
skipped and counted: first from the smallest pyramid level without decoding a
tile, then on the decoded tile. At most ``max_frames_per_file`` tiles, evenly spread
over the tissue. Only the baseline series is read: the label and macro images,
where a slide's label (and so a patient's name) may be photographed, never are,
and no header text leaves this module.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from curator.errors import ReadError
from curator.readers import Frame, FrameStream, PartReject, ReadOptions

# A tile counts as background pixel by pixel: bright and unsaturated (glass) or near black (scanner fill).
_WHITE = 0.85
_GREY_SPREAD = 0.08
_BLACK = 0.04
# The smallest level is used as a tissue map when it is at most this many pixels.
_MAP_PIXELS = 4_000_000


def is_slide(path: Path) -> bool:
    """A .tif/.tiff is read as a slide when tiled and either pyramidal or too large to decode whole."""
    import tifffile

    from curator.readers.raster import MAX_PIXELS

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            series = tif.series[0]
            return bool(page.is_tiled) and (len(series.levels) > 1 or page.imagewidth * page.imagelength > MAX_PIXELS)
    except Exception:  # noqa: BLE001 - not a readable TIFF: the raster reader reports why
        return False


def read_slide(path: Path, options: ReadOptions) -> FrameStream:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as exc:
        raise ReadError("corrupt", f"not a readable TIFF slide: {exc}") from None
    try:
        levels = [lv.keyframe for lv in tif.series[0].levels]
        base = levels[0]
        width, height = int(base.imagewidth), int(base.imagelength)
        if width * height > options.max_slide_pixels:
            raise ReadError(
                "decompression_bomb", f"slide of {width}x{height} exceeds {options.max_slide_pixels} pixels"
            )
        level, scale, note = _choose_level(tif, levels, options)
    except ReadError:
        tif.close()
        raise
    except (tifffile.TiffFileError, ValueError, IndexError, KeyError, AttributeError) as exc:
        tif.close()
        raise ReadError("corrupt", f"slide structure unreadable: {exc}") from None
    page = levels[level]
    if not page.is_tiled and page.imagewidth * page.imagelength > _MAP_PIXELS * 16:
        tif.close()
        raise ReadError("decompression_bomb", f"level {level} is not tiled and too large to decode whole")
    meta = {"format": f"slide-{tif.series[0].kind or 'tiff'}", "slide_width": width, "slide_height": height}
    down = width / page.imagewidth

    def frames(stream: FrameStream):
        with tif:
            yield from _tiles(tif, levels, level, scale, note, down, meta, options, stream)

    return FrameStream(frames)


def _tiles(tif, levels, level, scale, note, down, meta, options, stream):
    page = levels[level]
    size = options.tile_size
    span = int(round(size * scale))  # pixels read at the level for one output tile
    across, down_n = page.imagewidth // span, page.imagelength // span
    grid = [(ty, tx) for ty in range(down_n) for tx in range(across)]
    tissue = _tissue_map(tif, levels, page, span, options)
    candidates = []
    for ty, tx in grid:
        if tissue is not None and not tissue[ty, tx]:
            stream.skipped["background"] += 1
        else:
            candidates.append((ty, tx))
    limit = options.max_frames_per_file
    if limit and len(candidates) > limit:
        pick = np.unique(np.linspace(0, len(candidates) - 1, limit).round().astype(int))
        stream.skipped["frame_limit"] += len(candidates) - len(pick)
        candidates = [candidates[i] for i in pick]
    reader = _TileReader(tif, page)
    kept = failed = 0
    for ty, tx in candidates:
        x, y = tx * span, ty * span
        try:
            region = reader.region(x, y, span, span)
        except _TileError as exc:
            failed += 1
            stream.part_rejects.append(PartReject("tile_corrupt", f"level {level} tile at x={x} y={y}: {exc}"))
            continue
        if region.ndim == 3 and region.shape[2] == 4:
            region = region[..., :3]
        if span != size:
            region = _resize(region, size)
        if _background_fraction(region) > options.background_fraction:
            stream.skipped["background"] += 1
            continue
        kept += 1
        transform = {
            "slide": {"level": level, "downsample": round(down, 4), "level0_xy": [round(x * down), round(y * down)]}
        }
        if note:
            transform["slide"].update(note)
        yield Frame(pixels=region, meta=meta, transform=transform, tile=(level, x, y))
    if not kept and not failed:
        raise ReadError("empty_image", f"all {len(grid)} tiles of level {level} are background")
    if not kept:
        raise ReadError(
            "corrupt", f"every tile tried failed to decode ({failed}), the first: {stream.part_rejects[0].message}"
        )


class _TileError(Exception):
    pass


class _TileReader:
    """Decodes the stored tiles a region covers, one stored tile at a time, keeping only the current row's."""

    def __init__(self, tif, page):
        self.fh, self.page = tif.filehandle, page
        self.tw = int(page.tilewidth or page.imagewidth)
        self.th = int(page.tilelength or page.imagelength)
        self.across = -(-int(page.imagewidth) // self.tw)
        self.cache: dict[int, np.ndarray] = {}

    def _stored(self, index: int) -> np.ndarray:
        if index in self.cache:
            return self.cache[index]
        page = self.page
        if not page.is_tiled:
            arr = page.asarray()
            self.cache[index] = arr[..., None] if arr.ndim == 2 else arr
            return self.cache[index]
        if index >= len(page.dataoffsets) or not page.databytecounts[index]:
            raise _TileError(f"stored tile {index} is missing")
        try:
            self.fh.seek(page.dataoffsets[index])
            data = self.fh.read(page.databytecounts[index])
            seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as exc:  # noqa: BLE001 - any codec failure is this tile's reject, never the slide's
            raise _TileError(f"stored tile {index} does not decode: {exc}") from None
        if seg is None:
            raise _TileError(f"stored tile {index} is empty")
        arr = np.asarray(seg)[0]
        if len(self.cache) > 4 * self.across:
            self.cache.clear()
        self.cache[index] = arr
        return arr

    def region(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        if not self.page.is_tiled:
            arr = self._stored(0)
            out = arr[y : y + h, x : x + w]
            return out[..., 0] if out.shape[2] == 1 else out
        out = None
        for ty in range(y // self.th, (y + h - 1) // self.th + 1):
            for tx in range(x // self.tw, (x + w - 1) // self.tw + 1):
                tile = self._stored(ty * self.across + tx)
                if out is None:
                    out = np.zeros((h, w, tile.shape[2]), dtype=tile.dtype)
                x0, y0 = tx * self.tw, ty * self.th
                sx, sy = max(x, x0), max(y, y0)
                ex, ey = min(x + w, x0 + self.tw), min(y + h, y0 + self.th)
                out[sy - y : ey - y, sx - x : ex - x] = tile[sy - y0 : ey - y0, sx - x0 : ex - x0]
        return out[..., 0] if out.shape[2] == 1 else out


def _choose_level(tif, levels, options: ReadOptions) -> tuple[int, float, dict]:
    """(level, scale, note): scale > 1 when tiles are read larger and downsampled to the card's magnification."""
    if options.slide_level is not None:
        if options.slide_level >= len(levels):
            raise ReadError("missing_level", f"slide_level {options.slide_level}: the slide has {len(levels)} level(s)")
        return options.slide_level, 1.0, {}
    if options.slide_magnification is None:
        return 0, 1.0, {}
    base_mag = _base_magnification(tif, levels[0])
    if base_mag is None:
        raise ReadError(
            "missing_level", "the card asks for a magnification and the slide declares none (no AppMag, no pixel size)"
        )
    want = options.slide_magnification
    mags = [base_mag * lv.imagewidth / levels[0].imagewidth for lv in levels]
    usable = [i for i, m in enumerate(mags) if m >= want * 0.95]
    if not usable:
        raise ReadError("missing_level", f"{want}x asked, the slide's highest magnification is {mags[0]:.1f}x")
    level = min(usable, key=lambda i: mags[i])
    scale = max(1.0, mags[level] / want)
    scale = 1.0 if abs(scale - 1.0) < 0.05 else scale
    return level, scale, {"magnification": want, "level_magnification": round(mags[level], 3)}


def _base_magnification(tif, page) -> float | None:
    match = re.search(r"AppMag\s*=\s*([\d.]+)", page.description or "")
    if match:
        return float(match.group(1))
    if tif.is_ndpi and "Magnification" in (page.ndpi_tags or {}):
        return float(page.ndpi_tags["Magnification"])
    xres, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
    if xres is None or unit is None or int(unit.value) not in (2, 3):
        return None
    num, den = xres.value
    per_unit = num / den if den else 0
    if per_unit <= 1:
        return None
    microns = (25400.0 if int(unit.value) == 2 else 10000.0) / per_unit
    return 10.0 / microns  # the convention scanners use: 0.25 um/px is 40x


def _tissue_map(tif, levels, page, span: int, options: ReadOptions) -> np.ndarray | None:
    """Per output tile, is it tissue? From the smallest level when small enough; None when no map is possible."""
    small = levels[-1]
    if small is page or small.imagewidth * small.imagelength > _MAP_PIXELS:
        return None
    try:
        thumb = small.asarray()
    except Exception:  # noqa: BLE001 - a broken thumbnail only costs us the shortcut; tiles are checked anyway
        return None
    if thumb.ndim == 3 and thumb.shape[2] == 4:
        thumb = thumb[..., :3]
    bg = _background_mask(thumb)
    f = small.imagewidth / page.imagewidth
    across, down_n = page.imagewidth // span, page.imagelength // span
    out = np.ones((down_n, across), dtype=bool)
    for ty in range(down_n):
        for tx in range(across):
            y0, y1 = int(ty * span * f), max(int(ty * span * f) + 1, int((ty + 1) * span * f))
            x0, x1 = int(tx * span * f), max(int(tx * span * f) + 1, int((tx + 1) * span * f))
            # generous: only tiles clearly background on the map are skipped undecoded
            out[ty, tx] = bg[y0:y1, x0:x1].mean() <= min(1.0, options.background_fraction + 0.1)
    return out


def _background_mask(arr: np.ndarray) -> np.ndarray:
    top = 255.0 if arr.dtype == np.uint8 else float(np.iinfo(arr.dtype).max) if arr.dtype.kind == "u" else 1.0
    unit = arr.astype(np.float32) / top
    if unit.ndim == 2:
        return (unit > _WHITE) | (unit < _BLACK)
    spread = unit.max(axis=2) - unit.min(axis=2)
    mean = unit.mean(axis=2)
    return ((mean > _WHITE) & (spread < _GREY_SPREAD)) | (mean < _BLACK)


def _background_fraction(arr: np.ndarray) -> float:
    return float(_background_mask(arr).mean())


def _resize(region: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(region).resize((size, size), Image.LANCZOS))
