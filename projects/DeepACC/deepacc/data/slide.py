"""Slide appearance: what a real metaphase image shows around the chromosomes (opt-in realism step).

Composed G-band spreads (``datasets/prepare_gband_cells.py``) sit on a perfectly white, noiseless
canvas, and the synthetic generator's background is plainer than a real slide's. :func:`apply_slide`
takes a finished spread (gray, dark chromosomes on light) with its boxes and adds, from a seedable
``numpy`` Generator:

* **illumination**: a background level, vignetting (radial fall-off around an off-centre optical
  axis) and a linear tilt, multiplied into every pixel, the chromosomes' too;
* **slide texture**: a faint smooth random field of a few chromosome widths' grain (mounting
  medium, uneven cover glass), also multiplicative;
* **halo**: a faint darkening around the chromosomes and nuclei (out-of-focus glow, cytoplasm haze
  around a spread), the objects' darkness widely blurred;
* **interphase nuclei**: large round/oval, textured dark blobs (``nucleus_size`` x the chromosome
  width across, darker spots for chromocentres, soft rims; drawn by
  :func:`deepacc.data.render.nucleus`, as the generator's own nuclei), placed near the spread. A
  nucleus never touches the chromosome mask and never covers more than ``max_box_cover`` of any
  annotated box's area; one that cannot be placed that way after 40 tries is left out (counted in
  the info). Nuclei are **not annotated**: for the detector they are background;
* **debris**: small dark specks anywhere off the chromosomes;
* **pixel noise** (Gaussian);
* optional **RGB** output with a brownish/grayish G-band colour cast whose BT.601 luma is the gray
  image (the project's reader, :func:`deepacc.data.images.read_image`, converts it back to gray);
* optional **JPEG artefacts**: the image is encoded and decoded by OpenCV at a quality drawn from a
  range (the file written stays lossless PNG; the artefacts are in its pixels).

The step never moves a chromosome: boxes and classes are the caller's, unchanged; chromosome
pixels get only the illumination, texture, halo, noise (and colour/JPEG) that every pixel gets.

A **realism spec** is a dict ``parameter -> (low, high)`` (drawn uniformly per image, integers for
``nuclei``), a fixed value, or ``None`` (off). ``realism`` arguments accept ``None`` (no step),
``True`` or a preset name (:data:`REALISM_PRESETS`), or a dict of overrides applied on a preset
(its ``"preset"`` key, else ``default``; the synthetic generator's base is ``synthetic``).
Parameters of the ``default`` preset (calibrated against real spreads, see docs/data.md, "Slide
realism"); ``synthetic`` differs where noted:

===================  ================  ==============================================================
``background``       (245, 253)        background gray level at the brightest point; ``None`` keeps
                                       the image's own level (``synthetic``: ``None``)
``vignetting``       (0.0, 0.08)       relative darkening at the farthest corner from the optical
                                       axis, which lies within +-25 % of the image centre
                                       (``synthetic``: 0 - 0.04)
``tilt``             (0.0, 0.03)       relative brightness change of a linear gradient across half
                                       the image diagonal (``synthetic``: 0 - 0.01)
``texture``          (0.1, 0.5)        std of the slide texture, gray levels
``texture_scale``    (1.0, 4.0)        grain of the texture, chromosome widths
``halo``             (0.1, 0.7)        out-of-focus glow / cytoplasm haze: this fraction of the
                                       objects' darkness blurred by ``halo_width`` darkens the slide
                                       (``synthetic``: 0 - 0.3)
``halo_width``       (1.5, 4.0)        Gaussian sigma of the halo, chromosome widths
``noise``            (0.7, 1.5)        sigma of the Gaussian pixel noise, gray levels
                                       (``synthetic``: 0 - 0.5)
``nuclei``           (0, 2)            interphase nuclei per image (integer; ``synthetic``: 0 - 1)
``nucleus_size``     (4.0, 9.0)        nucleus diameter, chromosome widths (per nucleus)
``nucleus_tone``     (0.6, 1.6)        nucleus darkness relative to the chromosomes' median darkness
                                       (per nucleus; > 1 is darker than a typical chromosome)
``debris``           (0.0, 12.0)       debris specks per megapixel (``synthetic``: 0 - 5)
``debris_size``      (0.15, 0.7)       speck diameter, chromosome widths (per speck)
``max_box_cover``    0.1               largest fraction of an annotated box's area a nucleus may cover
``rgb``              False             RGB output (BGR order, as ``cv2.imwrite`` expects)
``color``            (0.2, 1.0)        strength of the brown cast of the stained material (0 gray)
``jpeg``             None              JPEG quality range, e.g. ``(60, 95)``; ``None`` = no JPEG
===================  ================  ==============================================================

Optional parameters, in no preset (a spec without them gives the same images as before):
``nucleus_touch`` (probability per nucleus, 0 - 1) places a nucleus against the chromosomes
instead: its centre 0.5 - 1.1 radii out from a random border point of the chromosome mask, touching
the chromosomes or within the quarter-width margin around them, at most ``nucleus_under`` (0.2) of
its area under chromosome pixels and at most ``touch_box_cover`` (0.5) of any annotated box's area
covered. Where it lies under a chromosome, both absorb (the chromosome is darker there). It stays
unannotated; the info marks it ``touching`` with its ``under_chromosomes`` fraction. A nucleus
that finds no such place in 40 tries is placed as the other nuclei are. Real spreads
show it: 56 of the 221 nuclei of the ADIR spreads lie within half a chromosome width of a
chromosome, 4 of the 103 of the BioImLab spreads.

The chromosome width (for sizes) is twice the median over the mask's connected components of their
largest distance to the mask's edge.

:func:`measure_slide` computes the appearance statistics of docs/data.md (background level, noise,
gradient, dark non-chromosome blobs, ...) for an image and its chromosome mask, :func:`summarize`
sums them up over images. Their command line is :mod:`deepacc.tools.realism`:
``python -m deepacc.tools.realism measure ...`` prints them for real, composed and synthetic spreads and
``python -m deepacc.tools.realism figure ...`` draws the before/after figure of the docs.
:func:`add_realism_arguments` and :func:`realism_from_args` give the dataset scripts their
``--realistic`` flags.

This module imports only :mod:`deepacc.data.render` of the package (the generator imports this one).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from .render import grain_field, nucleus

__all__ = [
    "REALISM_PRESETS",
    "resolve_realism",
    "sample_slide_params",
    "apply_slide",
    "chromosome_width",
    "MEASURES",
    "measure_slide",
    "summarize",
    "add_realism_arguments",
    "realism_from_args",
]

#: Named realism specs (see the module docstring for the parameters).
REALISM_PRESETS: Dict[str, Dict[str, Any]] = {
    "default": {
        "background": (245.0, 253.0),
        "vignetting": (0.0, 0.08),
        "tilt": (0.0, 0.03),
        "texture": (0.1, 0.5),
        "texture_scale": (1.0, 4.0),
        "halo": (0.1, 0.7),
        "halo_width": (1.5, 4.0),
        "noise": (0.7, 1.5),
        "nuclei": (0, 2),
        "nucleus_size": (4.0, 9.0),
        "nucleus_tone": (0.6, 1.6),
        "debris": (0.0, 12.0),
        "debris_size": (0.15, 0.7),
        "max_box_cover": 0.1,
        "rgb": False,
        "color": (0.2, 1.0),
        "jpeg": None,
    },
}
#: The synthetic generator's preset: its batch distribution already sets the background level,
#: an illumination field, noise, 0-2 nuclei and debris, so less of each is added.
REALISM_PRESETS["synthetic"] = {
    **REALISM_PRESETS["default"],
    "background": None, "vignetting": (0.0, 0.04), "tilt": (0.0, 0.01),
    "noise": (0.0, 0.5), "nuclei": (0, 1), "debris": (0.0, 5.0), "halo": (0.0, 0.3),
}
_INT_PARAMS = ("nuclei",)
#: Drawn per nucleus / speck from their range (kept as ranges in the per-image parameters).
_PER_ITEM = ("nucleus_size", "nucleus_tone", "debris_size")
_FIXED = ("max_box_cover", "rgb", "nucleus_touch", "nucleus_under", "touch_box_cover")
#: Optional parameters (in no preset, so a spec without them is unchanged): nuclei against the
#: spread. ``nucleus_touch``: probability that a nucleus is placed against the chromosomes (touching
#: them or within a quarter width, partly under them) instead of away from them; ``nucleus_under``:
#: largest fraction of such a nucleus's area under chromosome pixels; ``touch_box_cover``: largest
#: fraction of an annotated box's area it may cover. Given ``nucleus_touch``, the other two default
#: to these values.
_OPTIONAL = {"nucleus_touch": None, "nucleus_under": 0.2, "touch_box_cover": 0.5}
_NUCLEUS_TRIES = 40


def resolve_realism(realism, preset: str = "default") -> Optional[Dict[str, Any]]:
    """The full spec of a ``realism`` argument (``None`` / ``False`` give ``None``).

    ``True`` is the preset ``preset`` (the synthetic generator passes ``"synthetic"``); a string
    names a preset; a dict overrides parameters of its ``"preset"`` key's preset, else of ``preset``.
    """
    if realism is None or realism is False:
        return None
    user: Dict[str, Any] = {}
    if realism is True:
        name = preset
    elif isinstance(realism, str):
        name = realism
    elif isinstance(realism, dict):
        user = dict(realism)
        name = user.pop("preset", preset)
    else:
        raise TypeError(f"realism must be None, True, a preset name or a dict, not {type(realism).__name__}")
    if name not in REALISM_PRESETS:
        raise KeyError(f"unknown realism preset {name!r}; known: {sorted(REALISM_PRESETS)}")
    spec = dict(REALISM_PRESETS[name])
    unknown = set(user) - set(spec) - set(_OPTIONAL)
    if unknown:
        raise KeyError(f"unknown realism parameter(s) {sorted(unknown)}; known: {sorted(set(spec) | set(_OPTIONAL))}")
    spec.update(user)
    if spec.get("nucleus_touch") is not None:
        for k, v in _OPTIONAL.items():
            if spec.get(k) is None:
                spec[k] = v
        for k in _OPTIONAL:
            if not isinstance(spec[k], (int, float)) or not 0.0 <= float(spec[k]) <= 1.0:
                raise ValueError(f"realism parameter {k!r}: expected a number in 0..1, got {spec[k]!r}")
            spec[k] = float(spec[k])
    else:
        for k in _OPTIONAL:
            spec.pop(k, None)
    for k, v in spec.items():
        if isinstance(v, (list, tuple)):
            if len(v) != 2 or not all(isinstance(x, (int, float)) for x in v) or v[0] > v[1]:
                raise ValueError(f"realism parameter {k!r}: expected a (low, high) range, got {v!r}")
            spec[k] = (v[0], v[1])
    if spec["jpeg"] is not None:
        lo, hi = spec["jpeg"] if isinstance(spec["jpeg"], tuple) else (spec["jpeg"], spec["jpeg"])
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"realism parameter 'jpeg': qualities must lie in 1..100, got {spec['jpeg']!r}")
    return spec


def sample_slide_params(rng: np.random.Generator, spec: Dict[str, Any]) -> Dict[str, Any]:
    """One image's parameters from a resolved spec (per-item ranges stay ranges)."""
    out: Dict[str, Any] = {}
    for k in sorted(spec):
        v = spec[k]
        if k in _PER_ITEM or k in _FIXED or not isinstance(v, tuple):
            out[k] = v
        elif k in _INT_PARAMS:
            out[k] = int(rng.integers(int(v[0]), int(v[1]) + 1))
        elif k == "jpeg":
            out[k] = int(rng.integers(int(v[0]), int(v[1]) + 1))
        else:
            out[k] = float(v[0] + (v[1] - v[0]) * rng.random())
    return out


# ----------------------------------------------------------------------------------------------
# helpers


def _disk(r: float) -> np.ndarray:
    r = max(1, int(round(r)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _uniform(rng: np.random.Generator, rng_or_value) -> float:
    if isinstance(rng_or_value, tuple):
        lo, hi = rng_or_value
        return float(lo + (hi - lo) * rng.random())
    return float(rng_or_value)


def chromosome_width(mask: np.ndarray) -> float:
    """Typical chromosome width (px) of a boolean mask: twice the median over its connected
    components of their largest distance to the edge (``nan`` for an empty mask)."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    n, lab = cv2.connectedComponents(m, connectivity=8)
    if n <= 1:
        return float("nan")
    dt = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    on = m.astype(bool)
    mx = np.zeros(n, np.float64)
    np.maximum.at(mx, lab[on], dt[on])
    return 2.0 * float(np.median(mx[1:]))


def _boxes_array(boxes) -> np.ndarray:
    b = np.asarray([list(map(float, bb)) for bb in boxes], np.float64).reshape(-1, 4)
    return b


def _box_cover(foot: np.ndarray, x0: int, y0: int, boxes: np.ndarray) -> float:
    """Largest fraction of a box's area covered by the footprint ``foot`` placed at ``(x0, y0)``."""
    h, w = foot.shape
    worst = 0.0
    for bx0, by0, bx1, by1 in boxes:
        xa, ya = max(int(math.floor(bx0)), x0), max(int(math.floor(by0)), y0)
        xb, yb = min(int(math.ceil(bx1)), x0 + w), min(int(math.ceil(by1)), y0 + h)
        if xb <= xa or yb <= ya:
            continue
        area = max((bx1 - bx0) * (by1 - by0), 1.0)
        worst = max(worst, float(np.count_nonzero(foot[ya - y0:yb - y0, xa - x0:xb - x0])) / area)
    return worst


def _place_nucleus_touching(rng: np.random.Generator, foot: np.ndarray, diam: float, mask: np.ndarray,
                            avoid: np.ndarray, nuc_occ: np.ndarray, boxes: np.ndarray, p: Dict[str, Any]):
    """A position for a nucleus against the chromosomes: ``(x0, y0, xa, ya, xb, yb, box cover,
    fraction under chromosomes)`` or ``None`` after :data:`_NUCLEUS_TRIES` tries.

    Per try: a random border pixel of the chromosome mask, the outward direction there (from the
    centroid of the mask within 6 px), the nucleus centre 0.5 - 1.1 radii out along it. Kept when
    at least 60 % of the nucleus lies in the image, it touches the chromosomes or comes within the
    quarter-width margin around them, at most ``nucleus_under`` of its area lies under chromosome
    pixels, it covers at most ``touch_box_cover`` of any annotated box and nothing in ``nuc_occ``
    (other nuclei, dark things away from the chromosomes).
    """
    H, W = mask.shape
    m8 = mask.astype(np.uint8)
    border = mask & ~(cv2.erode(m8, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0)
    bys, bxs = np.nonzero(border)
    if bys.size == 0:
        return None
    ph, pw = foot.shape
    nfoot = max(int(np.count_nonzero(foot)), 1)
    for _ in range(_NUCLEUS_TRIES):
        k = int(rng.integers(bys.size))
        depth = float(rng.random())
        by, bx = int(bys[k]), int(bxs[k])
        wa, wb, wc, wd = max(by - 6, 0), min(by + 7, H), max(bx - 6, 0), min(bx + 7, W)
        wy, wx = np.nonzero(mask[wa:wb, wc:wd])
        d = np.array([bx - (wc + wx.mean()), by - (wa + wy.mean())])
        n = float(np.hypot(*d))
        if n < 0.3:
            continue
        d /= n
        dist = diam / 2.0 * (1.1 - 0.6 * depth)
        x0 = int(round(bx + d[0] * dist - pw / 2.0))
        y0 = int(round(by + d[1] * dist - ph / 2.0))
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + pw, W), min(y0 + ph, H)
        if xb <= xa or yb <= ya:
            continue
        sub = foot[ya - y0:yb - y0, xa - x0:xb - x0]
        if np.count_nonzero(sub) < 0.6 * nfoot:
            continue
        if not (sub & avoid[ya:yb, xa:xb]).any() or (sub & nuc_occ[ya:yb, xa:xb]).any():
            continue
        under = float(np.count_nonzero(sub & mask[ya:yb, xa:xb])) / nfoot
        if under > float(p["nucleus_under"]):
            continue
        cover = _box_cover(foot, x0, y0, boxes)
        if cover > float(p["touch_box_cover"]):
            continue
        return x0, y0, xa, ya, xb, yb, cover, under
    return None


def _spread_frame(boxes: np.ndarray, H: int, W: int) -> Tuple[float, float, float, float]:
    """Centre and half-extents of the spread (from the boxes; the image centre when there are none)."""
    if len(boxes) == 0:
        return W / 2.0, H / 2.0, W / 4.0, H / 4.0
    x0, y0 = float(boxes[:, 0].min()), float(boxes[:, 1].min())
    x1, y1 = float(boxes[:, 2].max()), float(boxes[:, 3].max())
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0, max((x1 - x0) / 2.0, 1.0), max((y1 - y0) / 2.0, 1.0)


# ----------------------------------------------------------------------------------------------
# the appearance step


def apply_slide(image: np.ndarray, boxes, rng: np.random.Generator, realism="default",
                mask: Optional[np.ndarray] = None, white: Optional[float] = None,
                return_masks: bool = False):
    """Give a finished spread a real slide's appearance; returns ``(image, info)``.

    ``image``: ``(H, W)`` uint8, dark chromosomes on light. ``boxes``: the annotated XYXY boxes
    (they are not changed; nuclei and debris avoid them as documented). ``mask``: boolean
    chromosome pixels (estimated inside the boxes when ``None``). ``white``: the gray level of the
    image's background (255 for the composer's canvas; the median outside the boxes when ``None``).
    The output is ``(H, W)`` uint8, or ``(H, W, 3)`` uint8 in BGR order with ``rgb``. ``info`` holds
    the drawn parameters (``params``), the placed nuclei (``nuclei``: ``bbox``, ``box_cover``, the
    largest fraction of an annotated box they cover), ``nuclei_skipped``, ``debris``,
    ``chromosome_width`` and, with ``return_masks``, ``nucleus_mask`` (bool, every nucleus pixel).
    """
    spec = resolve_realism(realism)
    if spec is None:
        raise ValueError("apply_slide needs a realism spec (got None)")
    img = np.asarray(image)
    if img.ndim != 2 or img.dtype != np.uint8:
        raise ValueError(f"apply_slide expects an (H, W) uint8 image, got {img.dtype} {img.shape}")
    H, W = img.shape
    p = sample_slide_params(rng, spec)
    bx = _boxes_array(boxes)
    I = img.astype(np.float32)
    inbox = np.zeros((H, W), bool)
    for x0, y0, x1, y1 in bx:
        inbox[max(int(y0), 0):max(int(math.ceil(y1)), 0), max(int(x0), 0):max(int(math.ceil(x1)), 0)] = True
    if white is None:
        out_pix = I[~inbox]
        white = float(np.median(out_pix)) if out_pix.size else float(np.percentile(I, 90))
    white = max(float(white), 1.0)
    if mask is None:
        mask = inbox & (I < 0.85 * white)
    mask = np.asarray(mask, bool)
    width = chromosome_width(mask) if mask.any() else float("nan")
    if not np.isfinite(width) or width < 1.0:
        width = max(2.0, 0.01 * math.sqrt(H * W))
    chrom_dark = float(1.0 - np.median(I[mask]) / white) if mask.any() else 0.5
    chrom_dark = min(max(chrom_dark, 0.15), 0.95)
    T = I / np.float32(white)  # transmission, 1 on the background

    # ---- nuclei and debris: darkness D (multiplicative absorbers), never on the chromosomes
    D = np.zeros((H, W), np.float32)
    avoid = cv2.dilate(mask.astype(np.uint8), _disk(max(2.0, 0.25 * width))) > 0
    # nuclei also keep off what is already dark off the chromosomes (e.g. the generator's own nuclei)
    nuc_occ = (T < 1.0 - 0.3 * chrom_dark) & ~mask
    if nuc_occ.any():
        nuc_occ = cv2.dilate(nuc_occ.astype(np.uint8), _disk(max(2.0, 0.25 * width))) > 0
    nuc_mask = np.zeros((H, W), bool)
    cx, cy, hx, hy = _spread_frame(bx, H, W)
    nuclei, skipped = [], 0
    p_touch = float(p.get("nucleus_touch") or 0.0)
    D_under = None  # darkness of the nuclei lying partly under chromosomes (kept on chromosome pixels)
    if p_touch > 0:  # what a nucleus against the chromosomes must keep off: dark things away from them
        # (a blurred chromosome's own fringe is not one) and the nuclei placed so far
        far_dark = nuc_occ & ~(cv2.dilate(mask.astype(np.uint8), _disk(max(2.0, 0.5 * width))) > 0)
    for _ in range(int(p["nuclei"])):
        diam = _uniform(rng, p["nucleus_size"]) * width
        patch = nucleus(rng, diam / 2.0, width, min(0.97, _uniform(rng, p["nucleus_tone"]) * chrom_dark))
        foot = patch > 0.02
        ph, pw = patch.shape
        placed = None
        if p_touch > 0 and rng.random() < p_touch and mask.any():
            placed = _place_nucleus_touching(rng, foot, diam, mask, avoid, far_dark | nuc_mask, bx, p)
            if placed is not None:
                x0, y0, xa, ya, xb, yb, cover, under = placed
                if D_under is None:
                    D_under = np.zeros((H, W), np.float32)
                np.maximum(D_under[ya:yb, xa:xb], patch[ya - y0:yb - y0, xa - x0:xb - x0], out=D_under[ya:yb, xa:xb])
                np.maximum(D[ya:yb, xa:xb], patch[ya - y0:yb - y0, xa - x0:xb - x0], out=D[ya:yb, xa:xb])
                nuc_occ[ya:yb, xa:xb] |= foot[ya - y0:yb - y0, xa - x0:xb - x0]
                nuc_mask[ya:yb, xa:xb] |= foot[ya - y0:yb - y0, xa - x0:xb - x0]
                nuclei.append({"bbox": [xa, ya, xb, yb], "box_cover": round(cover, 4), "touching": True,
                               "under_chromosomes": round(under, 4)})
                continue
            # no place against the chromosomes: placed as the other nuclei are
        for t in range(_NUCLEUS_TRIES):
            if t < _NUCLEUS_TRIES // 2:  # a ring around the spread
                ang, s = rng.random() * 2 * np.pi, 1.0 + 0.8 * rng.random()
                ncx = cx + (hx * s + 0.4 * diam) * math.cos(ang)
                ncy = cy + (hy * s + 0.4 * diam) * math.sin(ang)
            else:  # anywhere it fits
                ncx, ncy = rng.random() * W, rng.random() * H
            x0, y0 = int(round(ncx - pw / 2.0)), int(round(ncy - ph / 2.0))
            xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + pw, W), min(y0 + ph, H)
            if xb <= xa or yb <= ya:
                continue
            sub = foot[ya - y0:yb - y0, xa - x0:xb - x0]
            if np.count_nonzero(sub) < 0.6 * np.count_nonzero(foot):
                continue  # mostly outside the image
            if (sub & (avoid[ya:yb, xa:xb] | nuc_occ[ya:yb, xa:xb])).any():
                continue
            cover = _box_cover(foot, x0, y0, bx)
            if cover > float(p["max_box_cover"]):
                continue
            placed = (x0, y0, xa, ya, xb, yb, cover)
            break
        if placed is None:
            skipped += 1
            continue
        x0, y0, xa, ya, xb, yb, cover = placed
        np.maximum(D[ya:yb, xa:xb], patch[ya - y0:yb - y0, xa - x0:xb - x0], out=D[ya:yb, xa:xb])
        nuc_occ[ya:yb, xa:xb] |= foot[ya - y0:yb - y0, xa - x0:xb - x0]
        nuc_mask[ya:yb, xa:xb] |= foot[ya - y0:yb - y0, xa - x0:xb - x0]
        nuclei.append({"bbox": [xa, ya, xb, yb], "box_cover": round(cover, 4)})
    n_debris = int(round(float(p["debris"]) * H * W / 1e6))
    placed_debris = 0
    for _ in range(n_debris):
        d = max(1.2, _uniform(rng, p["debris_size"]) * width)
        x, y = rng.random() * W, rng.random() * H
        ax = (max(1, int(round(d / 2 * 16))), max(1, int(round(d / 2 * (0.5 + 0.5 * rng.random()) * 16))))
        val = float(0.15 + 0.6 * rng.random())
        ang = float(rng.uniform(0, 180))
        r = int(math.ceil(d / 2)) + 2
        xa, ya, xb, yb = max(int(x) - r, 0), max(int(y) - r, 0), min(int(x) + r + 1, W), min(int(y) + r + 1, H)
        if avoid[ya:yb, xa:xb].any():
            continue
        win = np.zeros((yb - ya, xb - xa), np.float32)
        cv2.ellipse(win, (int(round((x - xa) * 16)), int(round((y - ya) * 16))), ax, ang, 0, 360, val, -1,
                    lineType=cv2.LINE_AA, shift=4)
        np.maximum(D[ya:yb, xa:xb], win, out=D[ya:yb, xa:xb])
        placed_debris += 1
    D[mask] = 0.0
    if D_under is not None:  # a chromosome over a nucleus: both absorb (stacked)
        np.maximum(D, D_under, out=D)

    # ---- illumination (vignetting, tilt) and slide texture, multiplied into every pixel
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    ox = W / 2.0 + (rng.random() - 0.5) * 0.5 * W
    oy = H / 2.0 + (rng.random() - 0.5) * 0.5 * H
    rmax = max(math.hypot(ox, oy), math.hypot(W - ox, oy), math.hypot(ox, H - oy), math.hypot(W - ox, H - oy))
    F = 1.0 - np.float32(p["vignetting"]) * (((xx - ox) ** 2 + (yy - oy) ** 2) / np.float32(rmax * rmax))
    ang = rng.random() * 2 * np.pi
    half_diag = 0.5 * math.hypot(W, H)
    lin = ((xx - W / 2.0) * math.cos(ang) + (yy - H / 2.0) * math.sin(ang)) / np.float32(half_diag)
    F *= 1.0 + np.float32(p["tilt"]) * lin
    F /= np.float32(F.max())
    level = float(white if p["background"] is None else p["background"])
    tscale = float(p["texture_scale"]) * width
    tex = 0.85 * grain_field(rng, H, W, tscale) + 0.5 * grain_field(rng, H, W, 4.0 * tscale)
    F *= 1.0 + np.float32(p["texture"] / level) * tex
    if p["halo"] > 0:  # out-of-focus glow / cytoplasm haze: the objects' darkness, widely blurred
        small = (max(1, W // 4), max(1, H // 4))
        obj = cv2.resize(np.maximum(np.clip(1.0 - T, 0.0, 1.0), D), small, interpolation=cv2.INTER_AREA)
        obj = cv2.GaussianBlur(obj, (0, 0), max(0.5, float(p["halo_width"]) * width / 4.0))
        F *= 1.0 - np.float32(p["halo"]) * cv2.resize(obj, (W, H), interpolation=cv2.INTER_LINEAR)
    bgf = F * np.float32(level)  # the slide's background field
    G = bgf * T * (1.0 - D)  # noise-free gray image

    # ---- colour, noise, quantisation, JPEG
    if p["rgb"]:
        s = _uniform(rng, p["color"])
        wts = np.array([0.299, 0.587, 0.114])  # BT.601 luma weights (R, G, B)
        tint = 1.0 + 0.02 * (2 * rng.random() - 1) * np.array([1.0, 0.0, -1.0])  # warm or cool white
        k = np.array([1.0 - 0.15 * s, 1.0, 1.0 + 0.2 * s]) * (0.97 + 0.06 * rng.random(3))
        tint /= float(wts @ tint)
        k /= float(wts @ (tint * k))
        dark = 1.0 - G / np.maximum(bgf, 1e-3)
        chans = [bgf * np.float32(tint[c]) * np.clip(1.0 - np.float32(k[c]) * dark, 0.0, None) for c in (2, 1, 0)]
        out = np.stack(chans, axis=2)
        out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(p["noise"])
    else:
        out = G + rng.standard_normal((H, W), dtype=np.float32) * np.float32(p["noise"])
    out += np.float32(0.5)
    np.clip(out, 0, 255, out=out)
    out = out.astype(np.uint8)
    if p["jpeg"] is not None:
        ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(p["jpeg"])])
        if not ok:  # pragma: no cover
            raise RuntimeError("OpenCV could not JPEG-encode the image")
        out = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
    info: Dict[str, Any] = {
        "params": {k: (round(v, 4) if isinstance(v, float) else list(v) if isinstance(v, tuple) else v)
                   for k, v in p.items() if k != "color" or p["rgb"]},
        "nuclei": nuclei, "nuclei_skipped": skipped, "debris": placed_debris,
        "chromosome_width": round(width, 2),
    }
    if return_masks:
        info["nucleus_mask"] = nuc_mask
    return out, info


# ----------------------------------------------------------------------------------------------
# measuring the appearance of a spread

#: Statistics of :func:`measure_slide` (name -> meaning), in the order of docs/data.md.
MEASURES = {
    "bg": "background mean (gray levels)",
    "bg_std": "background std (gray levels)",
    "grad": "low-frequency background range p95 - p5 (gray levels)",
    "grad_pct": "same, % of the background mean",
    "noise": "pixel noise: std of neighbour differences / sqrt 2 (gray levels)",
    "texture": "slide texture: std of the far background (> 6 widths from any object) after removing the "
               "low-frequency field, smoothed with sigma 1.5 px to drop pixel noise (gray levels)",
    "halo": "background 4-8 widths from objects minus background 0.5-3 widths from them, medians (gray levels)",
    "contrast": "background median - chromosome median (gray levels)",
    "blob_pct": "% of the image in dark blobs that are not chromosomes",
    "nuclei": "nuclei per image (blobs >= 2.5 chromosome widths across)",
    "nucleus_size": "nucleus diameter / chromosome width (median)",
    "nucleus_tone": "(background - nucleus median) / contrast",
    "debris_mp": "smaller blobs per megapixel",
    "white_pct": "% of pixels at 255",
}


def _masked_low(img: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Low-frequency field of ``img`` over the pixels ``keep``: normalised Gaussian smoothing with
    sigma ``max(H, W) / 16``, computed at a quarter of the resolution."""
    H, W = img.shape
    small = (max(1, W // 4), max(1, H // 4))
    sig = max(H, W) / 64.0
    k = keep.astype(np.float32)
    num = cv2.GaussianBlur(cv2.resize(img * k, small, interpolation=cv2.INTER_AREA), (0, 0), sig)
    den = cv2.GaussianBlur(cv2.resize(k, small, interpolation=cv2.INTER_AREA), (0, 0), sig)
    return cv2.resize(num / np.maximum(den, 1e-3), (W, H), interpolation=cv2.INTER_LINEAR)


def measure_slide(image: np.ndarray, mask: np.ndarray) -> Dict[str, float]:
    """Appearance statistics (:data:`MEASURES`) of a gray spread and its chromosome mask.

    Background = pixels farther than half a chromosome width from the mask and from dark blobs.
    Dark blobs = connected pixels darker than ``local background - 0.25 * contrast`` that do not
    touch a chromosome, at least 3 px; the local background is the low-frequency field of the
    pixels off the chromosomes and off those darker than ``median background - 0.25 * contrast``
    (so that uneven illumination is not taken for blobs). Blobs >= 2.5 chromosome widths across
    (area-equivalent diameter) are nuclei, the rest debris. The low-frequency field is the
    background smoothed with a Gaussian of sigma ``max(H, W) / 16`` (normalised over the background
    pixels). Objects (for ``texture`` and ``halo``) are the chromosomes and the dark blobs.
    """
    img = np.asarray(image, np.float32)
    if img.ndim == 3:
        img = cv2.cvtColor(np.asarray(image), cv2.COLOR_BGR2GRAY).astype(np.float32)
    H, W = img.shape
    cm = np.asarray(mask, bool)
    width = chromosome_width(cm)
    excl = cv2.dilate(cm.astype(np.uint8), _disk(max(2.0, width / 2))) > 0
    chrom = float(np.median(img[cm]))
    bg0 = float(np.median(img[~excl]))
    con = max(bg0 - chrom, 1.0)
    first = cv2.dilate((img < bg0 - 0.25 * con).astype(np.uint8), _disk(max(2.0, width / 2))) > 0
    local = _masked_low(img, ~excl & ~first)
    n, lab, st, _ = cv2.connectedComponentsWithStats((img < local - 0.25 * con).astype(np.uint8), connectivity=8)
    onchr = np.zeros(n, bool)
    onchr[np.unique(lab[cm])] = True
    onchr[0] = True
    area = st[:, cv2.CC_STAT_AREA].astype(np.float64)
    keep = ~onchr & (area >= 3)
    diam = 2.0 * np.sqrt(area / np.pi)
    nuc, deb = keep & (diam >= 2.5 * width), keep & (diam < 2.5 * width)
    blob = keep[lab]
    bgm = ~excl & ~(cv2.dilate(blob.astype(np.uint8), _disk(max(2.0, width / 2))) > 0)
    b = img[bgm]
    low = _masked_low(img, bgm)
    lo = low[bgm]
    grad = float(np.percentile(lo, 95) - np.percentile(lo, 5))
    pair = bgm[:, 1:] & bgm[:, :-1]
    d = (img[:, 1:] - img[:, :-1])[pair]
    nuc_pix = img[nuc[lab]]
    dist = cv2.distanceTransform((~(cm | blob)).astype(np.uint8), cv2.DIST_L2, 5)
    far = dist > 6 * width
    near = (dist > max(2.0, width / 2)) & (dist <= 3 * width)
    mid = (dist > 4 * width) & (dist <= 8 * width)
    tex = float(cv2.GaussianBlur(img - low, (0, 0), 1.5)[far].std()) if far.any() else float("nan")
    halo = float(np.median(img[mid]) - np.median(img[near])) if near.any() and mid.any() else float("nan")
    return {
        "bg": float(b.mean()), "bg_std": float(b.std()), "grad": grad,
        "grad_pct": 100.0 * grad / max(float(b.mean()), 1.0),
        "noise": float(d.std() / math.sqrt(2)), "texture": tex, "halo": halo, "contrast": con,
        "blob_pct": 100.0 * float(blob.mean()), "nuclei": float(nuc.sum()),
        "nucleus_size": float(np.median(diam[nuc]) / width) if nuc.any() else float("nan"),
        "nucleus_tone": float((bg0 - np.median(nuc_pix)) / con) if nuc_pix.size else float("nan"),
        "debris_mp": float(deb.sum()) / (H * W / 1e6), "white_pct": 100.0 * float((img >= 255).mean()),
        "width": width,
    }


def summarize(rows: Sequence[Dict[str, float]]) -> Dict[str, Tuple[float, float, float]]:
    """``measure -> (median, 25th, 75th percentile)`` over images (nan-aware; for ``nuclei``, a
    count, the mean instead of the median)."""
    out = {}
    for k in list(MEASURES) + ["width"]:
        v = np.array([r[k] for r in rows], np.float64)
        if not np.isfinite(v).any():
            out[k] = (float("nan"),) * 3
            continue
        mid = float(np.nanmean(v)) if k == "nuclei" else float(np.nanmedian(v))
        out[k] = (mid, float(np.nanpercentile(v, 25)), float(np.nanpercentile(v, 75)))
    return out


# ----------------------------------------------------------------------------------------------
# command-line flags of the dataset scripts


def _range_arg(text: str, name: str, integer: bool = False):
    import argparse

    try:
        lo, hi = (int(v) if integer else float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: expected LO,HI, got {text!r}") from None
    if lo > hi or lo < 0:
        raise argparse.ArgumentTypeError(f"{name}: expected 0 <= LO <= HI, got {text!r}")
    return (lo, hi)


def add_realism_arguments(parser, preset: str = "default") -> None:
    """``--realistic`` and its refinements (``--jpeg``, ``--rgb``, ``--nuclei``, ``--debris``), as
    the dataset scripts offer them; read them back with :func:`realism_from_args`."""
    d = REALISM_PRESETS[preset]
    parser.add_argument("--realistic", action="store_true",
                        help=f"real slide appearance: background texture, vignetting, halo, unannotated interphase "
                             f"nuclei, debris, noise (deepacc.data.slide preset {preset!r}; layout and boxes unchanged)")
    parser.add_argument("--jpeg", type=lambda t: _range_arg(t, "--jpeg", True), default=None, metavar="LO,HI",
                        help="with --realistic: JPEG artefacts at a quality drawn from LO..HI (e.g. 60,95)")
    parser.add_argument("--rgb", action="store_true",
                        help="with --realistic: write RGB images with a brownish/grayish G-band colour cast")
    parser.add_argument("--nuclei", type=lambda t: _range_arg(t, "--nuclei", True), default=None, metavar="LO,HI",
                        help=f"with --realistic: interphase nuclei per image (default {_pair(d.get('nuclei'))})")
    parser.add_argument("--debris", type=lambda t: _range_arg(t, "--debris"), default=None, metavar="LO,HI",
                        help=f"with --realistic: debris specks per megapixel (default {_pair(d.get('debris'))})")


def _pair(v) -> str:
    return ",".join(f"{x:g}" for x in v) if isinstance(v, (list, tuple)) else str(v)


def realism_from_args(args, parser, preset: str = "default") -> Optional[Dict[str, Any]]:
    """The realism spec of the flags of :func:`add_realism_arguments` (``None`` without ``--realistic``;
    a refinement without it is a usage error)."""
    fine = {"jpeg": args.jpeg, "rgb": args.rgb or None, "nuclei": args.nuclei, "debris": args.debris}
    given = [k for k, v in fine.items() if v is not None]
    if not args.realistic:
        if given:
            parser.error(f"--{', --'.join(given)} need(s) --realistic")
        return None
    try:
        return resolve_realism({k: v for k, v in fine.items() if v is not None}, preset=preset)
    except ValueError as e:
        parser.error(str(e))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("the slide command line moved: python -m deepacc.tools.realism {measure,figure} ...")
