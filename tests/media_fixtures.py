"""Tiny real videos and whole-slide images, written by the real libraries (PyAV, tifffile) in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# container suffix -> (FFmpeg's own encoder, pixel format): LGPL encoders only, no x264
CODECS = {
    ".mp4": ("mpeg4", "yuv420p"),
    ".mov": ("mpeg4", "yuv420p"),
    ".avi": ("mjpeg", "yuvj420p"),
    ".mkv": ("ffv1", "yuv420p"),
}


def video_frame(i: int, size: tuple[int, int] = (64, 48), still: bool = False, seed: int = 0) -> np.ndarray:
    """Frame i: a bar that moves one row per frame (or stands still), over a per-second brightness step."""
    w, h = size
    img = np.full((h, w, 3), 40 + 60 * ((seed + i // 30) % 3), np.uint8)
    row = 4 if still else (i * 2) % h
    img[row : row + 3, :, 1] = 255
    return img


def write_video(
    path: Path, seconds: float = 3.0, fps: int = 30, size=(64, 48), still: bool = False, seed: int = 0, codec=None
) -> Path:
    import av

    codec, pix_fmt = codec or CODECS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    # faststart puts the MP4/MOV index first, as streaming-ready files have it, so a cut file keeps its head
    options = {"movflags": "faststart"} if path.suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(video_frame(i, size, still, seed), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def tissue(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An H&E-like RGB field: white glass with a pink-purple blob of tissue in the upper left."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 242, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    blob = ((yy - h * 0.35) / (h * 0.3)) ** 2 + ((xx - w * 0.35) / (w * 0.3)) ** 2 < 1
    noise = rng.integers(0, 40, (h, w, 1))
    img[blob] = (np.array([200, 110, 170]) - noise[blob]).astype(np.uint8)
    return img


def write_slide(path: Path, size=(2048, 1536), tile=256, levels=3, mpp: float | None = 0.5, seed: int = 0) -> Path:
    """A pyramidal tiled JPEG TIFF (sub-resolutions as SubIFDs, as Bio-Formats and QuPath write them)."""
    import tifffile

    w, h = size
    base = tissue(h, w, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {}
    if mpp:
        extra = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        tw.write(base, tile=(tile, tile), compression="jpeg", photometric="rgb", subifds=levels - 1, **extra)
        for k in range(1, levels):
            tw.write(base[:: 2**k, :: 2**k], tile=(tile, tile), compression="jpeg", subfiletype=1)
    return path


def break_tile(path: Path, index: int = 0, level: int = 0) -> Path:
    """Overwrite one stored tile of a pyramid level with zeros of the same length."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[level].keyframe
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\x00" * count
    path.write_bytes(bytes(data))
    return path
