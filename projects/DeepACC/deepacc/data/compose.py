"""Placing chromosome patches on a canvas as a metaphase spread (shared by the synthetic generator
and the composed G-band datasets).

A spread is an ellipse whose area is ``total chromosome area / density``. Each patch is placed at a
random point of the ellipse; a placement is accepted when the fraction of the patch's mask that
overlaps already placed chromosomes is at most ``allow`` (0 for most chromosomes: they may touch
but not overlap; ``overlap_allow`` for a fraction ``overlap_rate`` of them). After ``tries`` failed
attempts the least-overlapping one is kept. Patches are combined by darkest-pixel blending (maximum
of darkness), so overlapping chromosomes look like stacked absorbers.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

__all__ = ["spread_ellipse", "place_patch", "rotate_patch", "crop_to_mask"]


def spread_ellipse(rng: np.random.Generator, total_area: float, density: float, width: int, height: int
                   ) -> Tuple[float, float, float, float]:
    """``(cx, cy, rx, ry)`` of a spread covering ``total_area / density`` pixels, inside the image."""
    area = total_area / max(density, 1e-3)
    aspect = 0.75 + 0.5 * rng.random()
    rx = min(math.sqrt(area * aspect / math.pi), width * 0.46)
    ry = min(math.sqrt(area / aspect / math.pi), height * 0.46)
    cx = width / 2.0 + (width / 2.0 - rx) * (rng.random() * 1.4 - 0.7)
    cy = height / 2.0 + (height / 2.0 - ry) * (rng.random() * 1.4 - 0.7)
    return cx, cy, rx, ry


def place_patch(rng: np.random.Generator, mask: np.ndarray, ellipse, occupied: np.ndarray, allow: float = 0.0,
                tries: int = 25) -> Optional[Tuple[int, int]]:
    """Top-left ``(x, y)`` for ``mask`` inside the image (``None`` when it does not fit)."""
    H, W = occupied.shape
    h, w = mask.shape
    if w > W or h > H:
        return None
    cx, cy, rx, ry = ellipse
    msum = max(float(np.count_nonzero(mask)), 1.0)
    best = None
    for t in range(tries):
        ang = rng.random() * 2 * np.pi
        rr = math.sqrt(rng.random()) * (1.0 + 0.1 * t / tries)
        px = int(round(cx + rr * rx * math.cos(ang) - w / 2.0))
        py = int(round(cy + rr * ry * math.sin(ang) - h / 2.0))
        px, py = min(max(px, 0), W - w), min(max(py, 0), H - h)
        ov = np.count_nonzero(occupied[py:py + h, px:px + w] & mask) / msum
        if best is None or ov < best[0]:
            best = (ov, px, py)
        if ov <= allow:
            break
    return best[1], best[2]


def rotate_patch(patch: np.ndarray, angle_deg: float, border=0, interpolation=None) -> np.ndarray:
    """Rotate ``patch`` by ``angle_deg`` (counter-clockwise) into a canvas that holds all of it."""
    import cv2

    h, w = patch.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle_deg, 1.0)
    c, s = abs(M[0, 0]), abs(M[0, 1])
    nw, nh = int(math.ceil(h * s + w * c)) + 2, int(math.ceil(h * c + w * s)) + 2
    M[0, 2] += nw / 2.0 - w / 2.0
    M[1, 2] += nh / 2.0 - h / 2.0
    return cv2.warpAffine(patch, M, (nw, nh), flags=cv2.INTER_LINEAR if interpolation is None else interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def crop_to_mask(patch: np.ndarray, mask: np.ndarray):
    """Crop ``patch`` and ``mask`` to the bounding box of ``mask`` (``None`` if empty)."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return patch[r0:r1, c0:c1], mask[r0:r1, c0:c1]
