"""Image polarity: dark chromosomes on a light background (G-band), or bright on dark (fluorescence).

The model is trained on G-banded spreads: dark chromosomes on a light background. Fluorescence
images (Q-banding, DAPI) are the other way round, and the model finds nothing on them. With
``INPUT.POLARITY`` ``"auto"`` (the default) every image the model sees goes through
:func:`apply_polarity`, which recognises a bright-on-dark image from its own pixels and inverts it;
a dark-on-light image is returned as it is (the same array, bit-identical).
``"dark_on_light"`` never inverts (the images as stored), ``"bright_on_dark"`` always inverts.

**The rule** (:func:`measure_polarity`). Chromosomes and nuclei are what stands out of the
background: darker than it on a G-band image, brighter on a fluorescence image. The rule weighs both
sides: the *dark mass* is the sum, over the pixels darker than the background by more than its noise,
of how much darker they are, the *bright mass* the same above it, and

    margin = (dark mass - bright mass) / (dark mass + bright mass)    in [-1, 1]

is > 0 for dark-on-light and < 0 for bright-on-dark (+1 / -1: all the object signal on one side).
The decision needs ``|margin| >=`` :data:`MIN_MARGIN`. What "the background" is depends on the image:

* *spread rule* (short side of at least :data:`MIN_SPREAD_SIDE` pixels: a whole metaphase image).
  The image is averaged down to a long side of at most 512 pixels; the background is a local one,
  the median over windows of about 1/14 of the image (computed on a 4x coarser grid, interpolated
  back), which follows uneven illumination, a grey slide and large dark or bright areas (a black frame,
  the field stop, big nuclei) but not the chromosomes, a minority in any window. The noise is 3
  robust standard deviations (MAD) of the difference to it.
* *cut-out rule* (smaller images: single chromosomes cut out of a cell, where one chromosome may
  cover most of the pixels). The background is the highest peak of the histogram smoothed over a few
  levels (a flat background is a sharp peak, a stained object a broad spread), seconded by the median
  of the image's outer ring; when the two disagree the lighter of the two decides, and only for
  dark-on-light, so a disagreement never inverts an image.

No decision is possible (``decided`` False, the image is kept as stored and ``reason`` says why) when
the image is near-uniform (99.8 % of its pixels within :data:`MIN_CONTRAST` of the full scale: 8 gray
levels of 255 for 8-bit images, the largest magnitude of the image for other depths), or when the two
masses are too alike (e.g. pure noise).

Measured on the real sets at hand (docs/data.md, "Polarity"): all 23,992 G-band chromosome crops
(cut-out rule), 73 composed G-band spreads, 120 BioImLab Q-band spreads and 176 ADIR M-FISH DAPI
planes are classified right, none undecided; 16-bit and float images, grey slides with uneven
illumination and many nuclei (the synthetic generator's ``shifted`` batch and slide realism) too.

**Inverting.** The pipeline's images are the 8-bit gray planes of
:func:`deepacc.data.images.read_image`; they are inverted as ``255 - x``. 16-bit and float files are
already rescaled by their own min/max to 0..255 there, so ``255 - x`` is the same as inverting the
file's values within their own range (``min + max - v``) before that rescale (up to the rounding
of exact ties). :func:`invert_gray` called directly on another depth keeps the values in the
image's own range: ``min + max - x``.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Tuple

import numpy as np

__all__ = ["POLARITIES", "DARK_ON_LIGHT", "BRIGHT_ON_DARK", "MIN_CONTRAST", "MIN_MARGIN", "MIN_SPREAD_SIDE",
           "PolarityEstimate", "measure_polarity", "detect_polarity", "invert_gray", "apply_polarity",
           "check_polarity_mode"]

DARK_ON_LIGHT = "dark_on_light"
BRIGHT_ON_DARK = "bright_on_dark"
#: Values of ``INPUT.POLARITY``.
POLARITIES = ("auto", DARK_ON_LIGHT, BRIGHT_ON_DARK)

#: An image whose 0.1 % and 99.9 % quantiles are closer together than this fraction of the full scale
#: (255 for 8-bit images, the largest magnitude of the image for other depths) is near-uniform.
MIN_CONTRAST = 8.0 / 255.0
#: ``|margin|`` below this: the dark and bright object signals are too alike to decide.
MIN_MARGIN = 0.25
#: Images whose short side is at least this many pixels are whole spreads (the spread rule); smaller
#: ones are cut-outs of one or a few objects (the cut-out rule).
MIN_SPREAD_SIDE = 128
#: Fraction of the pixels in each tail used to measure the contrast.
_TAIL = 0.001
#: The spread rule works on the image averaged down to this long side (enough for chromosomes, fast).
_WORK_SIDE = 512


class PolarityEstimate(NamedTuple):
    """What :func:`measure_polarity` found.

    ``polarity``: ``"dark_on_light"`` or ``"bright_on_dark"`` (``"dark_on_light"``, i.e. keep as
    stored, when not ``decided``); ``decided``: False for a near-uniform or ambiguous image;
    ``margin``: (dark - bright) / (dark + bright) object mass, in [-1, 1], its size is the confidence;
    ``background``: the background level (median of the local background for a spread), in the
    image's units; ``contrast``: the distance between the 0.1 % and 99.9 % quantiles as a fraction of
    the full scale; ``reason``: one line saying what decided it.
    """

    polarity: str
    decided: bool
    margin: float
    background: float
    contrast: float
    reason: str

    def as_dict(self) -> Dict[str, object]:
        return {"detected": self.polarity, "decided": bool(self.decided), "margin": round(float(self.margin), 4),
                "background": round(float(self.background), 4), "contrast": round(float(self.contrast), 4),
                "reason": self.reason}


def _block_mean(a: np.ndarray, max_side: int) -> np.ndarray:
    """``a`` (float32) averaged over square blocks so that its long side is at most ``max_side``
    (block means keep each object's summed contrast and lower the pixel noise)."""
    h, w = a.shape
    f = -(-max(h, w) // max_side)
    if f <= 1 or h < f or w < f:
        return a.astype(np.float32, copy=False)
    hh, ww = h // f * f, w // f * f
    out = np.zeros((hh // f, ww // f), np.float32)
    for i in range(f):  # f * f strided additions: much faster than a reduction over short axes
        for j in range(f):
            out += a[i:hh:f, j:ww:f]
    return out / np.float32(f * f)


def _bilinear(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """``a`` resampled linearly to ``n`` samples along ``axis`` (pixel centres aligned, edges held)."""
    m = a.shape[axis]
    pos = np.clip((np.arange(n) + 0.5) * (m / n) - 0.5, 0, m - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, m - 1)
    w = (pos - i0).astype(np.float32)
    shape = [1, 1]
    shape[axis] = n
    w = w.reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i1, axis=axis) * w


def _spread_margin(u: np.ndarray) -> Tuple[float, float]:
    """``(margin, background)`` of a whole spread (the spread rule): objects are what stands out of the
    local background, a median over windows of 1/14 of the image, which follows uneven illumination
    and large dark or bright areas (a frame, the field stop) but not the chromosomes."""
    from scipy import ndimage as ndi

    s = _block_mean(u, _WORK_SIDE)
    c = _block_mean(s, max(8, max(s.shape) // 4))
    bc = ndi.median_filter(c, size=9, mode="nearest")
    back = _bilinear(_bilinear(bc, s.shape[0], 0), s.shape[1], 1)
    r = s - back
    noise = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    t = 3.0 * max(noise, 1.0)
    dark = float(np.sum(np.clip(-r - t, 0, None)))
    bright = float(np.sum(np.clip(r - t, 0, None)))
    margin = (dark - bright) / (dark + bright) if dark + bright > 0 else 0.0
    return margin, float(np.median(back))


def _smooth(h: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    r = int(3 * sigma)
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return np.convolve(np.pad(h, r, mode="constant"), k / k.sum(), mode="valid")


def _mass_margin(h: np.ndarray, bg: int, band: float) -> float:
    """(dark - bright) / (dark + bright) object mass of histogram ``h`` around level ``bg``."""
    levels = np.arange(h.size, dtype=np.float64)
    dark = float(np.sum(h * (bg - levels) * (levels < bg - band)))
    bright = float(np.sum(h * (levels - bg) * (levels > bg + band)))
    return (dark - bright) / (dark + bright) if dark + bright > 0 else 0.0


def _side(margin: float) -> str:
    return DARK_ON_LIGHT if margin >= MIN_MARGIN else BRIGHT_ON_DARK if margin <= -MIN_MARGIN else ""


def _cutout_margin(u: np.ndarray) -> Tuple[float, float, str]:
    """``(margin, background, note)`` of a small cut-out (the cut-out rule): the background is the
    highest peak of the smoothed histogram, seconded by the median of the image's outer ring; when
    the two disagree (a chromosome covering most of a tight crop makes the peak a chromosome level),
    the lighter of the two decides, and only for dark-on-light."""
    levels = u if u.dtype == np.uint8 else np.clip(np.rint(u), 0, 255).astype(np.int64)
    h = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    hs = _smooth(h)
    bg = int(np.argmax(hs))
    # noise band: twice the half width of the peak at half height, at least 2 levels (a peak at an
    # end of the scale, white 255 or black 0, is measured on its other side)
    half = hs[bg] / 2.0
    below = np.nonzero(hs[:bg] < half)[0]
    above = np.nonzero(hs[bg + 1:] < half)[0]
    widths = ([bg - below[-1]] if below.size else []) + ([above[0] + 1] if above.size else [])
    band = max(2.0, 2.0 * float(min(widths))) if widths else 2.0
    b = max(1, int(round(0.02 * min(levels.shape))))
    ring = (levels.ravel() if 2 * b >= min(levels.shape) else
            np.concatenate([levels[:b].ravel(), levels[-b:].ravel(), levels[b:-b, :b].ravel(), levels[b:-b, -b:].ravel()]))
    edge = int(np.median(ring))
    margin = _mass_margin(h, bg, band)
    edge_margin = margin if abs(edge - bg) <= band else _mass_margin(h, edge, band)
    if _side(margin) and _side(margin) == _side(edge_margin):
        return (margin if abs(margin) <= abs(edge_margin) else edge_margin), float(bg), ""
    light_margin, light = (margin, bg) if bg >= edge else (edge_margin, edge)
    if _side(light_margin) == DARK_ON_LIGHT:
        return light_margin, float(light), (f"; histogram peak {bg} and border {edge} disagree, the lighter "
                                            f"background decides")
    return 0.0, float(bg), f"; histogram peak {bg} (margin {margin:+.2f}) and border {edge} ({edge_margin:+.2f}) disagree"


def measure_polarity(gray: np.ndarray) -> PolarityEstimate:
    """Estimate the polarity of a grayscale image (any depth) from its pixels alone (rule in the
    module docstring)."""
    a = np.asarray(gray)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"expected a (H, W) grayscale image, got shape {a.shape}")
    if a.dtype == np.uint8:
        counts = np.bincount(a.ravel(), minlength=256)
        used = np.nonzero(counts)[0]
        x, lo, hi, full = a, float(used[0]), float(used[-1]), 255.0
        cum = np.cumsum(counts) / a.size
        q_lo, q_hi = float(np.searchsorted(cum, _TAIL)), float(np.searchsorted(cum, 1.0 - _TAIL))
    else:
        x = a.astype(np.float64)
        finite = np.isfinite(x)
        if not finite.all():
            if not finite.any():
                return PolarityEstimate(DARK_ON_LIGHT, False, 0.0, 0.0, 0.0,
                                        "no finite pixel: no decision, kept as stored")
            x = np.where(finite, x, np.min(x[finite]))
        lo, hi = float(x.min()), float(x.max())
        full = max(abs(lo), abs(hi))
        sub = x[:: max(1, x.shape[0] // 512), :: max(1, x.shape[1] // 512)]
        q_lo, q_hi = (float(v) for v in np.quantile(sub, (_TAIL, 1.0 - _TAIL)))
    contrast = (q_hi - q_lo) / full if full > 0 else 0.0
    if contrast < MIN_CONTRAST:
        return PolarityEstimate(DARK_ON_LIGHT, False, 0.0, float(np.median(x)), contrast,
                                f"near-uniform image (99.8 % of the pixels within {100 * contrast:.1f} % of the full "
                                f"scale): no decision, kept as stored")
    # the rules work on the 0..255 scale: 8-bit images as they are, other depths by their own min..max
    u = a if a.dtype == np.uint8 else ((x - lo) * (255.0 / (hi - lo))).astype(np.float32)
    to_value = (lambda v: v) if a.dtype == np.uint8 else (lambda v: lo + v * (hi - lo) / 255.0)
    if min(a.shape) >= MIN_SPREAD_SIDE:
        margin, bg = _spread_margin(u)
        rule, note = "spread rule", ""
    else:
        margin, bg, note = _cutout_margin(u)
        rule = "cut-out rule"
    background = float(to_value(bg))
    side = _side(margin)
    if not side:
        return PolarityEstimate(DARK_ON_LIGHT, False, margin, background, contrast,
                                f"no clear object side ({rule}, margin {margin:+.2f}{note}): no decision, kept as stored")
    what = "darker" if side == DARK_ON_LIGHT else "brighter"
    return PolarityEstimate(side, True, margin, background, contrast,
                            f"objects {what} than the background ({rule}, margin {margin:+.2f}{note})")


def detect_polarity(gray: np.ndarray) -> str:
    """``"dark_on_light"`` or ``"bright_on_dark"`` from the image alone (``"dark_on_light"``, i.e.
    keep as stored, when no decision is possible: see :func:`measure_polarity` for why)."""
    return measure_polarity(gray).polarity


def invert_gray(gray: np.ndarray) -> np.ndarray:
    """``255 - x`` for 8-bit images; ``min + max - x`` (the image's own range) for other depths."""
    a = np.asarray(gray)
    if a.dtype == np.uint8:
        return 255 - a
    if a.dtype.kind in "ui":
        lo, hi = int(a.min()), int(a.max())
        return (lo + hi - a.astype(np.int64)).astype(a.dtype)
    finite = np.isfinite(a)
    lo, hi = (float(a[finite].min()), float(a[finite].max())) if finite.any() else (0.0, 0.0)
    return (lo + hi - a).astype(a.dtype, copy=False)


def check_polarity_mode(mode) -> str:
    """``mode`` if it is a value of ``INPUT.POLARITY``, else ``ValueError`` naming the key and the choices."""
    if mode not in POLARITIES:
        raise ValueError(f"INPUT.POLARITY must be one of {', '.join(repr(p) for p in POLARITIES)}, got {mode!r}")
    return mode


def apply_polarity(gray: np.ndarray, mode: str = "auto") -> Tuple[np.ndarray, Dict[str, object]]:
    """The image as the model must see it (dark on light) for ``INPUT.POLARITY`` ``mode``, and what
    was done: ``{"mode", "detected", "decided", "margin", "background", "contrast", "reason",
    "inverted"}`` (``detected``: the image's own polarity, measured whatever the mode).

    ``"auto"`` inverts an image detected as bright-on-dark and returns any other one unchanged (the
    same array object, so a G-band image is bit-identical); ``"dark_on_light"`` never inverts,
    ``"bright_on_dark"`` always does. This is the one place where both engines' mappers (training
    and inference) and the predictors apply the setting.
    """
    check_polarity_mode(mode)
    est = measure_polarity(gray)
    invert = mode == BRIGHT_ON_DARK or (mode == "auto" and est.decided and est.polarity == BRIGHT_ON_DARK)
    info: Dict[str, object] = {"mode": mode, **est.as_dict(), "inverted": bool(invert)}
    return (invert_gray(gray) if invert else gray), info
