"""The box convention of every grounding and region entry.

``[x0, y0, x1, y1]``, integers from 0 to 1000: x grows to the right, y downwards, the
origin is the top-left corner of the image *as shipped* (the encoded blob, after
ingest's resize), and each coordinate is ``round(1000 * pixel / size)`` with
``size`` the image's width for x and height for y. This is the 0..1000 grid
Qwen-VL and InternVL ground on; it survives any later resize of the image.
Boxes arrive from ingest in output-image pixels, half-open ``[x0, y0, x1, y1)``.
"""

from __future__ import annotations

SCALE = 1000
# Masks resized with the image can put an edge a fraction of a pixel past the border.
TOLERANCE_PX = 0.5
CONVENTION = "[x0, y0, x1, y1] in 0..1000 of the shipped image (x right, y down, origin top-left)"


class BadBox(ValueError):
    """A box that lies (partly) outside its image, or has no area."""


def normalise(box: list[float], width: int, height: int) -> list[int]:
    if len(box) != 4 or not width or not height:
        raise BadBox(f"box {box} on a {width}x{height} image is not four coordinates on a sized image")
    x0, y0, x1, y1 = (float(v) for v in box)
    tol = TOLERANCE_PX
    if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
        raise BadBox(f"box {box} lies outside the {width}x{height} image")
    if x1 <= x0 or y1 <= y0:
        raise BadBox(f"box {box} has no area")
    x0, x1 = max(0.0, x0), min(float(width), x1)
    y0, y1 = max(0.0, y0), min(float(height), y1)
    n = [round(SCALE * x0 / width), round(SCALE * y0 / height), round(SCALE * x1 / width), round(SCALE * y1 / height)]
    if n[2] <= n[0] or n[3] <= n[1]:  # a sliver thinner than a thousandth of the image
        raise BadBox(f"box {box} is thinner than 1/{SCALE} of the {width}x{height} image")
    return n


def show(box: list[int]) -> str:
    return "[" + ", ".join(str(v) for v in box) + "]"
