"""Which frames of a time series (a video, a DICOM cine loop) become images.

The policy, shared by every time series so a cine loop and an MP4 of the same
echo give the same frames: one frame per ``1 / video_fps`` seconds, the first at
t = 0; when ``max_frames_per_file`` would be exceeded over the declared duration,
the interval widens so the kept frames still span the whole file (a cap that kept
the first minutes only would bias a surgery set toward its opening). A sampled
frame that repeats the last kept one (mean absolute difference of 32x32 grey
thumbnails below ``near_duplicate_mad``, on a 0-1 scale) is skipped and counted.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from curator.readers import ReadOptions

_THUMB = 32


class TimeSampler:
    """``frame_period`` (the source's seconds per frame), when known, lets a frame up to half a period
    early count as on time, so a 33.333 ms cine sampled at 30 frames a second keeps every frame."""

    def __init__(self, options: ReadOptions, duration_s: float | None, frame_period: float | None = None):
        self.tolerance = frame_period / 2 if frame_period and frame_period > 0 else 1e-6
        self.interval = 1.0 / options.video_fps
        self.limit = options.max_frames_per_file
        if duration_s and self.limit:
            self.interval = max(self.interval, duration_s / self.limit)
        self.threshold = options.near_duplicate_mad
        self._next = 0.0
        self._last: np.ndarray | None = None
        self.kept = 0

    @property
    def full(self) -> bool:
        return self.limit is not None and self.kept >= self.limit

    def due(self, t: float) -> bool:
        """Is a frame at time ``t`` (seconds from the start) the next one to sample? Advances the clock if so."""
        if t + self.tolerance < self._next:
            return False
        while self._next <= t + self.tolerance:
            self._next += self.interval
        return True

    def repeats(self, pixels: np.ndarray) -> bool:
        """Does this frame repeat the last kept one? If not, it becomes the new reference and counts as kept."""
        thumb = thumbnail(pixels)
        if self._last is not None and float(np.abs(thumb - self._last).mean()) < self.threshold:
            return True
        self._last = thumb
        self.kept += 1
        return False


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """A 32x32 grey float thumbnail in [0, 1] of a uint8/uint16/float frame (grey or RGB)."""
    arr = pixels.astype(np.float32)
    if pixels.dtype == np.uint8:
        arr /= 255.0
    elif pixels.dtype == np.uint16:
        arr /= 65535.0
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=2)
    img = Image.fromarray(np.clip(arr, 0.0, 1.0)).resize((_THUMB, _THUMB), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)
