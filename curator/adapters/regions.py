"""Masks become regions: one box per connected component, on the label the mask marks.

A mask is never an image of its own (BUSI's ``benign (1)_mask.png``, Kvasir-SEG's
``masks/``, SLAKE's ``mask.png``): it is read here, thresholded, split into
4-connected components (the rule ``scipy.ndimage.label`` uses by default), and each
component's bounding box ``[x0, y0, x1, y1)`` in the image's pixel frame is attached
to the label. Several masks of one image (BUSI's ``_mask_1``) add their components.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

from curator.adapters.base import Box, Item, Label
from curator.errors import ReadError


def components(mask: np.ndarray, min_pixels: int = 1) -> list[tuple[int, int, int, int]]:
    """Bounding boxes of the 4-connected components of a boolean mask, sorted (top, left).

    Union-find over horizontal runs, so the Python work grows with the number of runs,
    not of pixels (a 1000x1000 mask has a few thousand runs).
    """
    runs: list[tuple[int, int, int]] = []  # (row, start, end)
    starts_by_row: list[list[int]] = []
    for y, row in enumerate(mask):
        padded = np.concatenate(([0], row.astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(padded))
        first = len(runs)
        runs += [(y, int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        starts_by_row.append([first, len(runs)])
    parent = list(range(len(runs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for y in range(1, len(starts_by_row)):
        prev, cur = starts_by_row[y - 1], starts_by_row[y]
        j = prev[0]
        for i in range(*cur):
            _, a, b = runs[i]
            while j < prev[1] and runs[j][2] <= a:
                j += 1
            k = j
            while k < prev[1] and runs[k][1] < b:
                parent[find(i)] = find(k)
                k += 1
    boxes: dict[int, list[int]] = {}
    for i, (y, a, b) in enumerate(runs):
        r = find(i)
        box = boxes.setdefault(r, [a, y, b, y + 1, 0])
        box[0], box[1], box[2], box[3] = min(box[0], a), min(box[1], y), max(box[2], b), max(box[3], y + 1)
        box[4] += b - a
    out = [tuple(b[:4]) for b in boxes.values() if b[4] >= min_pixels]
    return sorted(out, key=lambda b: (b[1], b[0], b[3], b[2]))


def read_mask(path, threshold: int = 0) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ReadError("corrupt", f"mask '{path.name}' cannot be read: {exc}") from None
    return arr > threshold


def mask_boxes(item: Item, shape: tuple[int, int]) -> list[Box]:
    """Boxes of every mask of an item, on its mask label (else its first label, else "region")."""
    if item.mask_label:
        label = next((lb for lb in item.labels if lb.native == item.mask_label), None)
        if label is None:
            label = Label(item.mask_label)
            item.labels.append(label)
    elif item.labels:
        label = item.labels[0]
    else:
        label = Label("region")
        item.labels.append(label)
    boxes = []
    for path in item.masks:
        mask = read_mask(path, item.mask_threshold)
        if mask.shape != tuple(shape):
            raise ReadError(
                "mask_mismatch",
                f"mask '{path.name}' is {mask.shape[1]}x{mask.shape[0]}, its image {shape[1]}x{shape[0]}",
            )
        boxes += [Box(label, tuple(float(v) for v in b)) for b in components(mask, item.min_region_pixels)]
    return boxes
