"""Composed spreads that look real: layout and appearance variations of the G-band composer.

``datasets/prepare_gband_cells.py`` composes metaphases from real single-chromosome crops
(:mod:`deepacc.data.compose` places them). Real spreads differ from those compositions in ways this
module reproduces, each switchable and each with its own random stream in the composer, so that a
run without them is exactly today's:

* **touching and overlapping chromosomes**: :func:`place_touching` puts a chromosome against an
  already placed one (from a border point of the placed chromosomes it slides the new one outwards
  until its overlap drops to a drawn target, 0 for touching); :func:`occlusion` says, per
  chromosome, its placement order (later = on top) and the fraction of its mask that later ones
  cover;
* **bent chromosomes**: :func:`bend_patch` bends a crop smoothly along its long axis (a circular
  arc over a part of its length, straight before and after it; one ``cv2.remap``);
* **photometric variation**: :func:`vary_photometric` scales the darkness (contrast), applies a
  gamma and a Gaussian blur to a whole composed image;
* **bright-on-dark rendering**: :func:`render_bright_on_dark` turns a dark-on-light spread into a
  fluorescence-like one (Q-band / DAPI: bright chromosomes on a dark background);
* **density** and the **overlap rate / allowance** are the composer's existing draws with other
  ranges.

A **spread spec** is a dict of the keys of :data:`SPREAD_KEYS` (a key left out keeps today's
behaviour); :func:`resolve_spread` checks one, :data:`SPREAD_PRESETS` holds ``real_like``, the
combination of the composer's ``--real-like`` flag:

==================  ==============  ===============================================================
key                 ``real_like``   meaning (today's behaviour when absent)
==================  ==============  ===============================================================
``density``         (0.10, 0.30)    chromosome area / spread-ellipse area, drawn per image
                                    (today 0.08 - 0.14)
``overlap_rate``    (0.04, 0.22)    fraction of the chromosomes allowed to overlap another, drawn
                                    per image (today 0.04 - 0.15)
``overlap_allow``   0.35            largest fraction of such a chromosome's mask over others
                                    (today 0.35)
``touch``           0.12            probability that a chromosome is placed against an already
                                    placed one (:func:`place_touching`; today 0)
``bend``            (15, 70)        bend angle in degrees, drawn per bent chromosome (today none)
``bend_rate``       0.4             fraction of the chromosomes bent (default 0.5 with ``bend``)
``contrast``        (0.6, 1.05)     scale of the darkness ``255 - gray`` per image (today 1)
``gamma``           (0.7, 1.2)      gamma of the normalised image per image (> 1 darkens mid-tones)
``blur``            (0.6, 3.2)      Gaussian sigma in px per image (today 0)
``blend``           ``multiply``    how overlapping chromosomes combine: ``max`` (darkest pixel,
                                    today) or ``multiply`` (stacked absorbers: transmissions
                                    multiply, so a crossing is darker than either chromosome)
``bright_on_dark``  0.2             fraction of the images rendered bright-on-dark (today 0)
``dark_level``      (4, 30)         background gray level of a bright-on-dark image
``bright_level``    (170, 250)      gray level of the brightest chromosome pixels (99.5th pct)
==================  ==============  ===============================================================

``real_like`` also turns on the slide appearance (:mod:`deepacc.data.slide`, preset ``default``)
with ``nucleus_touch`` 0.2 (a fifth of the nuclei lie against the spread, partly under
chromosomes). The ranges were chosen by looking at and measuring real spreads (BioImLab Q-band and
ADIR DAPI, see docs/data.md, "Composed spreads that look real"; :func:`layout_stats` is the
measure).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "SPREAD_KEYS",
    "SPREAD_PRESETS",
    "resolve_spread",
    "bend_patch",
    "place_touching",
    "occlusion",
    "vary_photometric",
    "render_bright_on_dark",
    "layout_stats",
    "add_spread_arguments",
    "spread_from_args",
]

#: key -> kind: ``range`` (low, high), ``prob`` (0..1), ``frac`` (0..1), ``choice``.
SPREAD_KEYS: Dict[str, str] = {
    "density": "range", "overlap_rate": "range", "overlap_allow": "frac", "touch": "prob",
    "bend": "range", "bend_rate": "prob", "contrast": "range", "gamma": "range", "blur": "range",
    "blend": "choice", "bright_on_dark": "prob", "dark_level": "range", "bright_level": "range",
}
_BLENDS = ("max", "multiply")
#: Defaults filled in when a related key is given (``bend`` -> ``bend_rate``, ``bright_on_dark`` ->
#: the levels).
_IMPLIED = {"bend": {"bend_rate": 0.5}, "bright_on_dark": {"dark_level": (4.0, 30.0), "bright_level": (170.0, 250.0)}}

SPREAD_PRESETS: Dict[str, Dict[str, Any]] = {
    "real_like": {
        "density": (0.10, 0.30),
        "overlap_rate": (0.04, 0.22),
        "overlap_allow": 0.35,
        "touch": 0.12,
        "bend": (15.0, 70.0),
        "bend_rate": 0.4,
        "contrast": (0.6, 1.05),
        "gamma": (0.7, 1.2),
        "blur": (0.6, 3.2),
        "blend": "multiply",
        "bright_on_dark": 0.2,
        "dark_level": (4.0, 30.0),
        "bright_level": (170.0, 250.0),
    },
}
#: Slide-appearance overrides that ``real_like`` adds (:func:`deepacc.data.slide.resolve_realism`).
REAL_LIKE_REALISM: Dict[str, Any] = {"nucleus_touch": 0.2}


def resolve_spread(spec) -> Optional[Dict[str, Any]]:
    """Check and complete a spread spec (``None`` or ``{}`` give ``None``: today's composer).

    A string names a preset; a dict may name one under ``"preset"`` and override its keys. Ranges
    become ``(low, high)`` float tuples; implied keys are filled in (``bend_rate`` 0.5 with
    ``bend``; the bright-on-dark levels with ``bright_on_dark``).
    """
    if spec is None or spec is False:
        return None
    user: Dict[str, Any]
    if isinstance(spec, str):
        user = {"preset": spec}
    elif isinstance(spec, dict):
        user = dict(spec)
    else:
        raise TypeError(f"spread spec must be None, a preset name or a dict, not {type(spec).__name__}")
    name = user.pop("preset", None)
    out: Dict[str, Any] = {}
    if name is not None:
        if name not in SPREAD_PRESETS:
            raise KeyError(f"unknown spread preset {name!r}; known: {sorted(SPREAD_PRESETS)}")
        out.update(SPREAD_PRESETS[name])
    unknown = set(user) - set(SPREAD_KEYS)
    if unknown:
        raise KeyError(f"unknown spread parameter(s) {sorted(unknown)}; known: {sorted(SPREAD_KEYS)}")
    out.update({k: v for k, v in user.items() if v is not None})
    for key, implied in _IMPLIED.items():
        if key in out:
            for k, v in implied.items():
                out.setdefault(k, v)
    if not out:
        return None
    for k, v in list(out.items()):
        kind = SPREAD_KEYS[k]
        if kind == "range":
            if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v)):
                raise ValueError(f"spread parameter {k!r}: expected a (low, high) range, got {v!r}")
            lo, hi = float(v[0]), float(v[1])
            if lo > hi or lo < 0 or (k in ("density", "contrast", "gamma") and lo <= 0):
                raise ValueError(f"spread parameter {k!r}: expected 0 <= low <= high (low > 0 for {k}), got {v!r}")
            if k == "bend" and hi > 180:
                raise ValueError(f"spread parameter 'bend': angles above 180 degrees are not supported, got {v!r}")
            out[k] = (lo, hi)
        elif kind in ("prob", "frac"):
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"spread parameter {k!r}: expected a number in 0..1, got {v!r}")
            out[k] = float(v)
        elif v not in _BLENDS:
            raise ValueError(f"spread parameter 'blend': expected one of {_BLENDS}, got {v!r}")
    return {k: out[k] for k in sorted(out)}


# ----------------------------------------------------------------------------------------------
# bent chromosomes


def _principal_axes(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(np.float64)
    mu = pts.mean(0)
    if len(pts) < 2:
        return mu, np.array([0.0, 1.0]), np.array([1.0, 0.0]), pts
    cov = np.cov((pts - mu).T)
    w, v = np.linalg.eigh(cov)
    e1 = v[:, int(np.argmax(w))]
    if e1[1] < 0 or (e1[1] == 0 and e1[0] < 0):
        e1 = -e1
    e2 = np.array([e1[1], -e1[0]])
    return mu, e1, e2, pts


def bend_patch(patch: np.ndarray, angle_deg: float, center: float = 0.5, extent: float = 1.0,
               threshold: float = 0) -> np.ndarray:
    """Bend a darkness patch (0 = background) along its long axis; returns a new, tight-ish patch.

    The long axis is the principal axis of the pixels above ``threshold``. Along it, the part
    ``center +- extent / 2`` (fractions of the chromosome's length) is mapped onto a circular arc
    that turns by ``angle_deg`` (sign = side); the parts before and after stay straight. Each
    point keeps its distance along the axis and its offset across it (the offset is measured
    along the arc's radius), so the area is kept to first order: the inner side is compressed as
    much as the outer side is stretched. The arc's radius is at least 1.25 x the chromosome's
    half-width (sharper bends are spread over a longer part). One bilinear ``cv2.remap``.
    """
    patch = np.asarray(patch)
    theta = math.radians(float(angle_deg))
    mask = patch > threshold
    if abs(theta) < 1e-3 or np.count_nonzero(mask) < 3:
        return patch.copy()
    sigma = 1.0 if theta > 0 else -1.0
    theta = abs(theta)
    mu, e1, e2, pts = _principal_axes(mask)
    a = (pts - mu) @ e1
    b = (pts - mu) @ e2
    amin, amax = float(a.min()) - 0.5, float(a.max()) + 0.5
    length = amax - amin
    half_w = max(float(np.abs(b).max()) + 0.5, 1.0)
    L = max(min(max(extent, 0.05), 1.0) * length, theta * 1.25 * half_w)
    sc = amin + min(max(center, 0.0), 1.0) * length
    s1 = sc - L / 2.0
    R = L / theta
    s2 = s1 + L
    # output frame: before the arc, (X, Y) = (t, s) with s along e1 and t along e2
    O = np.array([sigma * R, s1])
    uT = np.array([-sigma * math.cos(theta), math.sin(theta)])  # unit vector O -> arc end
    T = np.array([sigma * math.sin(theta), math.cos(theta)])  # tangent after the arc

    def forward(s, t):
        s = np.asarray(s, np.float64)
        t = np.asarray(t, np.float64)
        phi = np.clip((s - s1) / R, 0.0, theta)
        rad = R - sigma * t
        X = np.where(s <= s1, t, O[0] + rad * (-sigma * np.cos(phi)))
        Y = np.where(s <= s1, s, O[1] + rad * np.sin(phi))
        after = s > s2
        X = np.where(after, O[0] + rad * uT[0] + (s - s2) * T[0], X)
        Y = np.where(after, O[1] + rad * uT[1] + (s - s2) * T[1], Y)
        return X, Y

    # bounds of the mapped pixels (their corners, with a margin)
    corners = []
    for dx in (-0.5, 0.5):
        for dy in (-0.5, 0.5):
            q = pts + np.array([dx, dy])
            corners.append(forward((q - mu) @ e1, (q - mu) @ e2))
    X = np.concatenate([c[0] for c in corners])
    Y = np.concatenate([c[1] for c in corners])
    x0, x1 = math.floor(X.min()) - 2, math.ceil(X.max()) + 2
    y0, y1 = math.floor(Y.min()) - 2, math.ceil(Y.max()) + 2
    gx, gy = np.meshgrid(np.arange(x0, x1 + 1, dtype=np.float64), np.arange(y0, y1 + 1, dtype=np.float64))
    # inverse map: which part of the bent chromosome a pixel belongs to. Each part (straight
    # before, arc, straight after) claims the pixels that map into the chromosome's band of width
    # (its offset within the half-width + 2 px); when parts overlap (a bend beyond ~90 degrees can
    # fold the end back over the start), the later part lies on top; unclaimed pixels stay empty.
    band = half_w + 2.0
    vx, vy = gx - O[0], gy - O[1]
    s = np.full(gx.shape, -1e6)
    t = np.full(gx.shape, -1e6)
    before = (gy <= s1) & (np.abs(gx) <= band)
    s = np.where(before, gy, s)
    t = np.where(before, gx, t)
    rho = np.hypot(vx, vy)
    phi = np.arctan2(vy, -sigma * vx)
    t_arc = sigma * (R - rho)
    arc = (phi > 0) & (phi <= theta) & (np.abs(t_arc) <= band)
    s = np.where(arc, s1 + R * phi, s)
    t = np.where(arc, t_arc, t)
    along = vx * T[0] + vy * T[1]
    t_after = sigma * (R - (vx * uT[0] + vy * uT[1]))
    after = (along > 0) & (np.abs(t_after) <= band)
    s = np.where(after, s2 + along, s)
    t = np.where(after, t_after, t)
    src_x = mu[0] + s * e1[0] + t * e2[0]
    src_y = mu[1] + s * e1[1] + t * e2[1]
    # the (s, t) frame's origin is the centroid: s was measured from it via a = (p - mu) . e1
    out = cv2.remap(patch, src_x.astype(np.float32), src_y.astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    rows, cols = np.flatnonzero(out.any(1)), np.flatnonzero(out.any(0))
    if rows.size == 0:
        return patch.copy()
    return np.ascontiguousarray(out[max(rows[0] - 1, 0):rows[-1] + 2, max(cols[0] - 1, 0):cols[-1] + 2])


# ----------------------------------------------------------------------------------------------
# touching placement and occlusion


_K3 = np.ones((3, 3), np.uint8)


def place_touching(rng: np.random.Generator, mask: np.ndarray, occupied: np.ndarray, allow: float = 0.0,
                   tries: int = 12) -> Optional[Tuple[int, int]]:
    """Top-left ``(x, y)`` that puts ``mask`` against the chromosomes already in ``occupied``.

    Per try: a random border pixel of ``occupied``; the outward direction there (from the centroid
    of the occupied pixels within 6 px to that pixel); the patch's centroid is put on the pixel and
    slid outwards 1 px at a time until the fraction of its mask over ``occupied`` is at most a
    target drawn from ``0 .. allow`` (``allow = 0``: no overlap, touching). The position is kept
    when it lies inside the image and the mask comes within 2 px of ``occupied``. ``None`` when no
    try succeeds (or nothing is placed yet): the caller falls back to its usual placement.
    """
    H, W = occupied.shape
    h, w = mask.shape
    if w > W or h > H or not occupied.any():
        return None
    occ8 = occupied.astype(np.uint8)
    border = occupied & ~(cv2.erode(occ8, _K3, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0)
    bys, bxs = np.nonzero(border)
    if bys.size == 0:
        return None
    mys, mxs = np.nonzero(mask)
    my, mx = float(mys.mean()), float(mxs.mean())
    msum = max(float(mys.size), 1.0)
    # the mask grown by 2 px, in a window 2 px larger on every side (contact may lie outside the crop)
    near = cv2.dilate(np.pad(mask.astype(np.uint8), 2), _K3, iterations=2) > 0
    for _ in range(tries):
        k = int(rng.integers(bys.size))
        target = float(allow) * float(rng.random())
        by, bx = int(bys[k]), int(bxs[k])
        ya, yb, xa, xb = max(by - 6, 0), min(by + 7, H), max(bx - 6, 0), min(bx + 7, W)
        wy, wx = np.nonzero(occupied[ya:yb, xa:xb])
        d = np.array([bx - (xa + wx.mean()), by - (ya + wy.mean())])
        n = float(np.hypot(*d))
        if n < 0.3:
            ang = rng.random() * 2 * np.pi
            d = np.array([math.cos(ang), math.sin(ang)])
        else:
            d /= n
        pos = None
        for step in range(0, h + w + 4):
            px = int(round(bx + d[0] * step - mx))
            py = int(round(by + d[1] * step - my))
            if px < 0 or py < 0 or px + w > W or py + h > H:
                break
            ov = np.count_nonzero(occupied[py:py + h, px:px + w] & mask) / msum
            if ov <= target:
                pos = (px, py)
                break
        if pos is None:
            continue
        px, py = pos
        xa, ya = max(px - 2, 0), max(py - 2, 0)
        win = occupied[ya:min(py + h + 2, H), xa:min(px + w + 2, W)]
        if (near[ya - (py - 2):ya - (py - 2) + win.shape[0], xa - (px - 2):xa - (px - 2) + win.shape[1]] & win).any():
            return pos
    return None


def occlusion(placed: Sequence[Tuple[int, int, np.ndarray]], shape: Tuple[int, int]) -> List[Tuple[int, float]]:
    """``(occlusion_order, occluded_fraction)`` per chromosome ``(x, y, mask)`` in placement order.

    The later-placed chromosome lies on top: ``occlusion_order`` is the placement index (0 =
    bottom) and ``occluded_fraction`` the fraction of the mask's pixels covered by the masks of
    chromosomes placed after it.
    """
    later = np.zeros(shape, bool)
    out: List[Tuple[int, float]] = [(0, 0.0)] * len(placed)
    for k in range(len(placed) - 1, -1, -1):
        x, y, m = placed[k]
        h, w = m.shape
        n = max(int(np.count_nonzero(m)), 1)
        out[k] = (k, float(np.count_nonzero(later[y:y + h, x:x + w] & m)) / n)
        later[y:y + h, x:x + w] |= m
    return out


# ----------------------------------------------------------------------------------------------
# photometric variation and polarity


def vary_photometric(image: np.ndarray, contrast: float = 1.0, gamma: float = 1.0, blur: float = 0.0,
                     white: float = 255.0) -> np.ndarray:
    """Contrast, gamma and blur of a gray dark-on-light spread (uint8 in, uint8 out), in that order.

    ``contrast`` scales the darkness ``white - gray`` (0.6: lighter chromosomes; the canvas stays
    ``white``); ``gamma`` maps ``g -> 255 (g / 255) ** gamma`` (> 1 darkens mid-tones, as the
    synthetic generator's ``gamma``); ``blur`` is a Gaussian sigma in px (0: none), applied to every
    pixel, the chromosomes' too.
    """
    img = np.asarray(image)
    I = img.astype(np.float32)
    if contrast != 1.0:
        I = np.float32(white) - np.float32(contrast) * (np.float32(white) - I)
    np.clip(I, 0.0, 255.0, out=I)
    if gamma != 1.0:
        I = np.float32(255.0) * (I / np.float32(255.0)) ** np.float32(gamma)
    if blur > 0:
        I = cv2.GaussianBlur(I, (0, 0), float(blur))
    return np.clip(I + 0.5, 0, 255).astype(np.uint8)


def render_bright_on_dark(image: np.ndarray, mask: Optional[np.ndarray] = None, dark_level: float = 12.0,
                          bright_level: float = 220.0) -> np.ndarray:
    """A fluorescence-like rendering of a dark-on-light spread: bright chromosomes on a dark background.

    The darkness ``255 - gray`` (of the luma, for a BGR image) is mapped linearly so that the
    background's median (pixels off ``mask``; all pixels when ``None``) becomes ``dark_level`` and
    the 99.5th percentile of the chromosome pixels becomes ``bright_level``; what the slide step
    added (texture, nuclei, noise) follows the same map, so nuclei turn bright too. No white canvas
    is left: the background sits at ``dark_level`` (plus its own variations).
    """
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    d = np.float32(255.0) - img.astype(np.float32)
    if mask is not None and np.asarray(mask).any() and not np.asarray(mask).all():
        m = np.asarray(mask, bool)
        bg = float(np.median(d[~m]))
        top = float(np.percentile(d[m], 99.5))
    else:
        bg = float(np.median(d))
        top = float(np.percentile(d, 99.5))
    gain = (float(bright_level) - float(dark_level)) / max(top - bg, 1.0)
    out = np.float32(dark_level) + np.float32(gain) * (d - np.float32(bg))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# measuring a spread's layout (real or composed)


def layout_stats(masks: Sequence[np.ndarray], shape: Tuple[int, int], gap: int = 2) -> Dict[str, float]:
    """Layout measures of one spread from its per-chromosome full-image boolean masks.

    ``touching``: fraction of the chromosomes within ``gap`` px of another (overlapping included);
    ``overlapping``: fraction sharing pixels with another; ``density``: union area / area of its
    convex hull; ``hull_pct``: convex hull, % of the image; ``fill``: median over the long
    chromosomes (minimum-area rectangle at least 4 widths long) of mask area / rectangle area
    (1 = a straight rod; a bend lowers it); ``n``: chromosomes.
    """
    H, W = shape
    cnt = np.zeros((H, W), np.int16)
    for m in masks:
        cnt += np.asarray(m, bool)
    n = len(masks)
    touch = over = 0
    fills = []
    for m in masks:
        m = np.asarray(m, bool)
        others = (cnt - m) > 0
        if (m & others).any():
            over += 1
        if (cv2.dilate(m.astype(np.uint8), _K3, iterations=gap) > 0)[others].any():
            touch += 1
        ys, xs = np.nonzero(m)
        if ys.size < 20:
            continue
        (_, _), (ra, rb), _ = cv2.minAreaRect(np.stack([xs, ys], 1).astype(np.float32))
        wid = 2.0 * float(cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 5).max())
        if max(ra, rb) >= 4 * wid:
            fills.append(ys.size / max(ra * rb, 1.0))
    union = cnt > 0
    if not union.any():
        return {"n": 0, "touching": float("nan"), "overlapping": float("nan"), "density": float("nan"),
                "hull_pct": 0.0, "fill": float("nan")}
    ys, xs = np.nonzero(union)
    hull = cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32))
    ha = max(float(cv2.contourArea(hull)), 1.0)
    return {"n": n, "touching": touch / max(n, 1), "overlapping": over / max(n, 1),
            "density": float(union.sum()) / ha, "hull_pct": 100.0 * ha / (H * W),
            "fill": float(np.median(fills)) if fills else float("nan")}


# ----------------------------------------------------------------------------------------------
# command-line flags


def _range(text: str, name: str):
    import argparse

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: expected LO,HI, got {text!r}") from None
    if lo > hi or lo < 0:
        raise argparse.ArgumentTypeError(f"{name}: expected 0 <= LO <= HI, got {text!r}")
    return (lo, hi)


def _frac(text: str, name: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: expected a number in 0..1, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{name}: expected a number in 0..1, got {text!r}")
    return v


def add_spread_arguments(parser) -> None:
    """The composer's flags of this module (each off by default); read back with :func:`spread_from_args`."""
    g = parser.add_argument_group("spreads that look real (each off by default: today's output)")
    r = lambda name: (lambda t: _range(t, name))  # noqa: E731
    f = lambda name: (lambda t: _frac(t, name))  # noqa: E731
    g.add_argument("--real-like", action="store_true",
                   help="the combination measured against real spreads (deepacc.data.augment_spread preset "
                        "'real_like', with --realistic and --nuclei-touch 0.2); the flags below override its values")
    g.add_argument("--overlap-rate", type=r("--overlap-rate"), default=None, metavar="LO,HI",
                   help="fraction of the chromosomes allowed to overlap another, drawn per image (default 0.04,0.15)")
    g.add_argument("--overlap-allow", type=f("--overlap-allow"), default=None, metavar="F",
                   help="largest fraction of an overlapping chromosome's mask over others (default 0.35)")
    g.add_argument("--touch", type=f("--touch"), default=None, metavar="P",
                   help="probability that a chromosome is placed against an already placed one")
    g.add_argument("--bend", type=r("--bend"), default=None, metavar="LO,HI",
                   help="bend chromosomes by an angle (degrees) drawn from LO..HI")
    g.add_argument("--bend-rate", type=f("--bend-rate"), default=None, metavar="P",
                   help="with --bend: fraction of the chromosomes bent (default 0.5)")
    g.add_argument("--density", type=r("--density"), default=None, metavar="LO,HI",
                   help="chromosome area / spread area, drawn per image (default 0.08,0.14)")
    g.add_argument("--contrast", type=r("--contrast"), default=None, metavar="LO,HI",
                   help="scale of the darkness per image (1 = the crops' own)")
    g.add_argument("--gamma", type=r("--gamma"), default=None, metavar="LO,HI", help="gamma per image (> 1 darker)")
    g.add_argument("--blur", type=r("--blur"), default=None, metavar="LO,HI", help="Gaussian blur sigma (px) per image")
    g.add_argument("--blend", choices=_BLENDS, default=None,
                   help="overlapping chromosomes: darkest pixel (max, default) or stacked absorbers (multiply)")
    g.add_argument("--bright-on-dark", type=f("--bright-on-dark"), default=None, metavar="P",
                   help="render a fraction P of the images bright-on-dark (fluorescence-like)")
    g.add_argument("--nuclei-touch", type=f("--nuclei-touch"), default=None, metavar="P",
                   help="with --realistic: probability that a nucleus lies against the spread, partly under "
                        "chromosomes (never annotated)")


def spread_from_args(args, parser) -> Optional[Dict[str, Any]]:
    """The spread spec of :func:`add_spread_arguments`'s flags (``None`` when none is given)."""
    given = {"overlap_rate": args.overlap_rate, "overlap_allow": args.overlap_allow, "touch": args.touch,
             "bend": args.bend, "bend_rate": args.bend_rate, "density": args.density, "contrast": args.contrast,
             "gamma": args.gamma, "blur": args.blur, "blend": args.blend, "bright_on_dark": args.bright_on_dark}
    if args.bend_rate is not None and args.bend is None and not args.real_like:
        parser.error("--bend-rate needs --bend")
    spec: Dict[str, Any] = {"preset": "real_like"} if args.real_like else {}
    spec.update({k: v for k, v in given.items() if v is not None})
    try:
        return resolve_spread(spec)
    except (ValueError, KeyError) as e:
        parser.error(str(e))
