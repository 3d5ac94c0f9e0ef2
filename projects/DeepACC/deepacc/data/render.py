"""Drawing pieces shared by the synthetic generator (:mod:`deepacc.data.synthetic`) and the slide
appearance step (:mod:`deepacc.data.slide`): smooth random fields and interphase nuclei.

Both callers draw from a seedable ``numpy`` Generator; every function here draws in a fixed order,
so the callers' images are reproducible.

* :func:`low_freq_field` - a coarse grid of random values stretched over the whole frame (the
  generator's illumination, chromatin and nucleus texture);
* :func:`grain_field` - a field of a given grain in pixels, standardised (the slide texture and
  the slide's nucleus texture);
* :func:`nucleus` - the darkness patch of one interphase nucleus, in the generator's plain look or
  the slide step's detailed one.

This module imports nothing of the package, so both callers can use it without importing each other.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import cv2
import numpy as np

__all__ = ["low_freq_field", "grain_field", "nucleus"]


def low_freq_field(rng: np.random.Generator, h: int, w: int, cells: Tuple[int, int] = (4, 3)) -> np.ndarray:
    """Smooth random field in about [-1, 1] (float32, ``(h, w)``): a grid of ``cells`` (columns,
    rows) standard normal values, divided by their largest magnitude, cubic-upsampled to the frame."""
    g = rng.standard_normal((cells[1], cells[0])).astype(np.float32)
    m = np.abs(g).max()
    if m > 0:
        g /= m
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def grain_field(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth random field of grain ``cell`` px (at least 2), zero mean and unit std (float32,
    ``(h, w)``): a grid of standard normal values ``cell`` px apart, cubic-upsampled, cut at a random
    offset."""
    cell = max(2.0, float(cell))
    gh, gw = int(math.ceil(h / cell)) + 2, int(math.ceil(w / cell)) + 2
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    f = cv2.resize(g, (int(round(gw * cell)), int(round(gh * cell))), interpolation=cv2.INTER_CUBIC)
    oy, ox = int(rng.integers(0, max(1, f.shape[0] - h + 1))), int(rng.integers(0, max(1, f.shape[1] - w + 1)))
    f = f[oy:oy + h, ox:ox + w]
    s = float(f.std())
    f -= np.float32(f.mean())
    if s > 1e-6:
        f /= np.float32(s)
    return np.ascontiguousarray(f)


def nucleus(rng: np.random.Generator, radius: float, width: Optional[float] = None,
            tone: Optional[float] = None) -> np.ndarray:
    """Darkness patch (float32, 0..1, square of odd side) of one interphase nucleus.

    Both looks share the shape: an ellipse of semi-axes ``radius`` x 0.85 - 1.15 (drawn per axis)
    at a random angle, with a soft rim, shaded from 1 in the middle to 0.8 at the rim.

    * ``width=None`` (the synthetic generator's): a 1.5 px rim, a coarse texture of +-15 %
      (:func:`low_freq_field`, 6 x 6 cells) and a darkness drawn in 0.45 - 0.7 (``tone`` unused);
    * ``width`` given, the chromosome width in px (the slide step's): a rim of 0.15 widths (at least
      1 px, smoothstep), a texture at two grains (half a width and two widths, :func:`grain_field`),
      0 - 8 darker chromocentre spots, darkness ``tone`` (capped at 0.97).
    """
    detailed = width is not None
    rx, ry = radius * (0.85 + 0.3 * rng.random()), radius * (0.85 + 0.3 * rng.random())
    # the patch's half side: the two looks have always rounded it in these two ways, equal up to float
    # rounding; both are kept so that every image stays byte-identical
    R = int(math.ceil(max(rx, ry) + 3)) if detailed else int(math.ceil(max(rx, ry))) + 3
    yy, xx = np.mgrid[-R:R + 1, -R:R + 1].astype(np.float32)
    th = rng.random() * np.pi
    c, s = math.cos(th), math.sin(th)
    u, v = (xx * c + yy * s) / rx, (-xx * s + yy * c) / ry
    rr = np.sqrt(u * u + v * v)
    shade = 0.8 + 0.2 * np.sqrt(np.clip(1.0 - rr * rr, 0.0, 1.0))
    n = 2 * R + 1
    if not detailed:
        edge = np.clip((1.0 - rr) * min(rx, ry) / 1.5 + 0.5, 0.0, 1.0)
        tex = low_freq_field(rng, n, n, (6, 6))
        dark = (0.45 + 0.25 * rng.random()) * (0.85 + 0.15 * tex) * shade
        return (edge * dark).astype(np.float32)
    if tone is None:
        raise ValueError("nucleus: the detailed look (width given) needs a tone")
    soft = max(1.0, 0.15 * width)  # rim width in px
    edge = np.clip((1.0 - rr) * min(rx, ry) / soft + 0.5, 0.0, 1.0)
    edge = edge * edge * (3.0 - 2.0 * edge)
    tex = 0.10 * grain_field(rng, n, n, max(2.0, 0.5 * width)) + 0.08 * grain_field(rng, n, n, max(3.0, 2.0 * width))
    spots = np.zeros((n, n), np.float32)
    for _ in range(int(rng.integers(0, 9))):
        a, d = rng.random() * 2 * np.pi, 0.75 * math.sqrt(rng.random())
        sx, sy = d * math.cos(a), d * math.sin(a)
        px, py = (sx * rx * c - sy * ry * s), (sx * rx * s + sy * ry * c)
        sig = max(1.0, (0.2 + 0.3 * rng.random()) * width)
        spots += np.float32(0.25 + 0.35 * rng.random()) * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sig * sig))
    dark = np.clip(tone * shade * (1.0 + tex + spots), 0.0, 0.97)
    return (edge * dark).astype(np.float32)
