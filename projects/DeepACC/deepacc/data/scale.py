"""Scale-aware inference (ours, beyond the paper): chromosomes reach the model at the pixel size, and
with the image statistics, it was trained with, whatever the image's size, magnification or framing.

The usual rule resizes every image to ``INPUT.MIN_SIZE_TEST`` on its short side, so the chromosomes'
pixel size depends on how the picture was framed: a 524x581 crop around one spread is enlarged, a
1600x1200 frame with the same spread in a corner is shrunk. Here the typical chromosome size is
measured on the image itself (:func:`measure_spread`) and the image is resized so that it equals the
size the model saw in training (``INPUT.SCALE_AWARE.REFERENCE_SIZE``, measured on the training
images at the usual test resize and stored in the checkpoints).

The paper's per-image normalisation (mean and standard deviation over the whole image, §3.1) also
depends on framing: the same spread in a frame twice as wide has half the standard deviation (more
white), so its chromosomes come out twice as dark after standardisation. With
``INPUT.SCALE_AWARE.FRAMED_STATS`` the statistics are taken over a window centred on the spread
whose area, in units of the chromosome size squared, is that of the training frames
(``REFERENCE_FRAME``; the part of the window outside the image counts as background).

**The measurement.** Dark objects on the light background are found with Otsu's threshold; each
connected object of a permissive mask (darker than a quarter of the chromosomes' median darkness)
gets an *equivalent area*: its summed darkness (background level minus gray value) divided by the
chromosomes' median darkness. Summed darkness is unchanged by blur and resampling, so this area
scales exactly with the magnification squared, and the division removes the staining strength.
The chromosome size is the square root of the median equivalent area over the objects (tiny specks
below 5 % of the 75th percentile are left out; a nucleus or a cluster of touching chromosomes is
one object and does not move the median much). On 30 composed G-band val images resized by 0.5x,
0.75x, 1.5x and 2x, the measured size follows the resize to +4.4 %, +1.7 %, -0.8 % and -1.1 % (mean).
Sizes also vary from cell to cell (condensation: 10 % coefficient of variation on the G-band
training images), so images within ``TOLERANCE`` of the reference keep the usual factor.
"""
from __future__ import annotations

import logging
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Spread", "measure_spread", "chromosome_size", "framed_stats", "standard_factor", "measure_reference",
           "resize_factor", "input_stats", "training_files", "reference_state",
           "training_reference", "apply_reference", "stored_reference", "CHECKPOINT_KEY", "FRAME_KEY"]

#: Keys of the reference chromosome size and frame in the checkpoints both engines write.
CHECKPOINT_KEY = "input_reference_size"
FRAME_KEY = "input_reference_frame"

logger = logging.getLogger(__name__)

#: Objects smaller than this fraction of the 90th percentile of the objects' areas, or than
#: ``MIN_AREA`` pixels, are specks.
SPECK_FRACTION = 0.05
MIN_AREA = 12.0


def _otsu(u8: np.ndarray) -> int:
    """Otsu's threshold of a uint8 image (the level that maximises the between-class variance)."""
    hist = np.bincount(u8.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * levels)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    return int(np.argmax(w0 * w1 * (mu0 - mu1) ** 2))


class Spread(NamedTuple):
    """What :func:`measure_spread` finds on one image (pixels of that image)."""

    size: float  # typical chromosome size
    center: Tuple[float, float]  # (y, x) centroid of the chromosome pixels
    background: float  # gray level of the background


def measure_spread(gray: np.ndarray) -> Optional[Spread]:
    """The typical chromosome size (the square root of the median blur-invariant equivalent area of
    the dark objects, see the module docstring), the spread's centre and the background level of a
    grayscale spread (dark chromosomes on light); ``None`` when fewer than 3 objects are found.

    The background is a smooth field (a grey closing wider than a chromosome, so uneven illumination
    does not count as darkness), objects must stand out from the pixel noise (estimated from the
    image), and objects below ``max(SPECK_FRACTION x the 90th percentile area, MIN_AREA)`` are specks.
    numpy and scipy only: no OpenCV, whose thread pool, once started in a process, deadlocks the data
    loader workers forked from it; this runs in both."""
    from scipy import ndimage

    gray = np.asarray(gray)
    if gray.ndim != 2 or min(gray.shape) < 8:
        return None
    g = gray.astype(np.float32)
    h, w = g.shape
    smooth = ndimage.gaussian_filter(g, 1.0)
    k = max(5, int(round(min(h, w) / 60)))  # on the half-resolution image: ~1/30 of the short side
    half = smooth[::2, ::2]
    field = ndimage.minimum_filter(ndimage.maximum_filter(half, size=k), size=k)
    background = ndimage.zoom(field, (h / field.shape[0], w / field.shape[1]), order=1)[:h, :w]
    dark = np.clip(background - smooth, 0.0, None)
    noise = 1.4826 * float(np.median(np.abs(g - smooth)))
    core = dark > max(_otsu(np.clip(dark, 0, 255).astype(np.uint8)), 4.0 * noise)
    if core.sum() < 10:
        return None
    level = float(np.median(dark[core]))
    labels, n = ndimage.label(dark > max(0.25 * level, 3.0 * noise), structure=np.ones((3, 3), bool))
    if n < 1:
        return None
    mass = np.bincount(labels.ravel(), weights=dark.ravel(), minlength=n + 1)[1:]
    area = mass / level
    area = area[area > max(SPECK_FRACTION * np.percentile(area, 90), MIN_AREA)]
    if len(area) < 3:
        return None
    ys, xs = np.nonzero(core)
    return Spread(float(np.sqrt(np.median(area))), (float(ys.mean()), float(xs.mean())), float(np.median(background)))


def chromosome_size(gray: np.ndarray) -> Optional[float]:
    """Typical chromosome size of a grayscale spread, in pixels (:func:`measure_spread`)."""
    spread = measure_spread(gray)
    return None if spread is None else spread.size


def framed_stats(gray: np.ndarray, spread: Spread, frame: float) -> Tuple[float, float]:
    """``(mean, std)`` of ``gray`` over a window centred on the spread, of area ``frame`` x size^2 and
    the image's aspect ratio; the part of the window outside the image counts as background."""
    g = np.asarray(gray, dtype=np.float64)
    h, w = g.shape
    area = float(frame) * spread.size ** 2
    aspect = min(max(w / h, 0.5), 2.0)
    wh, hh = np.sqrt(area * aspect), np.sqrt(area / aspect)
    cy, cx = spread.center
    y0, y1 = int(round(cy - hh / 2)), int(round(cy + hh / 2))
    x0, x1 = int(round(cx - wh / 2)), int(round(cx + wh / 2))
    win = g[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    total = max((y1 - y0) * (x1 - x0), 1)
    pad = max(total - win.size, 0)
    n = win.size + pad
    mean = (win.sum() + pad * spread.background) / n
    var = ((win ** 2).sum() + pad * spread.background ** 2) / n - mean ** 2
    std = float(np.sqrt(max(var, 0.0)))
    return float(mean), (std if std > 1e-6 else 1.0)


def standard_factor(height: int, width: int, min_size: int, max_size: int) -> float:
    """The usual resize factor: short side to ``min_size``, long side at most ``max_size``."""
    short, long_ = min(height, width), max(height, width)
    f = min_size / short
    if long_ * f > max_size:
        f = max_size / long_
    return float(f)


def measure_reference(file_names: Sequence[str], min_size: int, max_size: int, max_images: int = 64,
                      seed: int = 0, polarity: str = "auto") -> Tuple[Optional[float], Optional[float]]:
    """``(size, frame)`` of (up to ``max_images``, drawn with ``seed``) training images: the median
    chromosome size in model-input pixels at the usual test resize, and the median frame area in units
    of the chromosome size squared. ``(None, None)`` when nothing can be measured. The images are
    measured as the model sees them: dark on light by ``polarity`` (``INPUT.POLARITY``)."""
    from .images import read_image
    from .polarity import apply_polarity

    names = list(file_names)
    if not names:
        return None, None
    rng = np.random.default_rng(seed)
    sizes: List[float] = []
    frames: List[float] = []
    for i in rng.permutation(len(names))[:max_images]:
        gray, _ = apply_polarity(read_image(names[int(i)]), polarity)
        spread = measure_spread(gray)
        if spread is not None:
            h, w = gray.shape
            sizes.append(spread.size * standard_factor(h, w, min_size, max_size))
            frames.append(h * w / spread.size ** 2)
    if not sizes:
        return None, None
    return float(np.median(sizes)), float(np.median(frames))


def resize_factor(gray: np.ndarray, cfg, reference: Optional[float] = None) -> Tuple[float, Dict[str, object]]:
    """Resize factor of one image for inference, and what decided it.

    With ``INPUT.SCALE_AWARE.ENABLED`` and a reference size (``reference`` or
    ``INPUT.SCALE_AWARE.REFERENCE_SIZE``), the factor brings the image's chromosomes within
    ``TOLERANCE`` of that size (the usual factor when they already are), bounded to ``[MIN_FACTOR, MAX_FACTOR]`` times the usual factor and to a long side of at most
    ``MAX_SIZE``; otherwise (or when the image's spread cannot be measured) the usual factor
    (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``). The info dict records ``mode`` (``"scale_aware"``
    / ``"standard"``), ``factor``, the measured ``chromosome_size``, the ``reference`` and, with
    ``FRAMED_STATS`` and a ``REFERENCE_FRAME``, the normalisation ``stats`` ``[mean, std]`` to use
    instead of the whole image's.
    """
    h, w = int(gray.shape[0]), int(gray.shape[1])
    base = standard_factor(h, w, int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST))
    node = cfg.INPUT.SCALE_AWARE
    ref = float(reference if reference is not None else node.REFERENCE_SIZE)
    info: Dict[str, object] = {"mode": "standard", "factor": base, "chromosome_size": None, "reference": ref or None}
    if not node.ENABLED or ref <= 0:
        return base, info
    spread = measure_spread(gray)
    if spread is None:
        return base, info
    info["chromosome_size"] = spread.size
    # within TOLERANCE of the reference at the usual factor (the size variation of the training
    # images themselves), keep the usual factor; beyond it, bring the size to the tolerance's edge
    tol = float(node.TOLERANCE)
    at_base = spread.size * base
    target = min(max(at_base, ref * (1.0 - tol)), ref * (1.0 + tol))
    f = base * target / at_base
    f = min(max(f, base * float(node.MIN_FACTOR)), base * float(node.MAX_FACTOR))
    f = min(f, float(node.MAX_SIZE) / max(h, w))
    info.update(mode="scale_aware", factor=float(f))
    if node.FRAMED_STATS and float(node.REFERENCE_FRAME) > 0:
        info["stats"] = list(framed_stats(gray, spread, float(node.REFERENCE_FRAME)))
    return float(f), info


def input_stats(info: Optional[Dict[str, object]]):
    """The normalisation statistics :func:`resize_factor` chose, or ``None`` (the image's own)."""
    stats = (info or {}).get("stats")
    return tuple(stats) if stats else None


def training_files(cfg, get_dicts=None) -> List[str]:
    """Image files of ``DATASETS.TRAIN`` when those datasets can be read here, else ``[]`` (a
    predictor run far from the training data)."""
    if get_dicts is None:
        from .catalog import get_dataset_dicts as get_dicts
    files: List[str] = []
    for name in cfg.DATASETS.TRAIN:
        try:
            files += [str(d["file_name"]) for d in get_dicts(name)]
        except Exception:  # noqa: BLE001  (not registered or not prepared here)
            return []
    return files


def reference_state(cfg) -> Dict[str, float]:
    """The reference values of ``cfg`` as the checkpoints store them (empty when unknown)."""
    node = cfg.INPUT.SCALE_AWARE
    out = {}
    if float(node.REFERENCE_SIZE) > 0:
        out[CHECKPOINT_KEY] = float(node.REFERENCE_SIZE)
    if float(node.REFERENCE_FRAME) > 0:
        out[FRAME_KEY] = float(node.REFERENCE_FRAME)
    return out


def training_reference(cfg, file_names: Sequence[str]) -> Dict[str, float]:
    """At training start (both engines): ``REFERENCE_SIZE`` and ``REFERENCE_FRAME`` measured on the
    training images where they are 0 (feature on), written back into ``cfg`` (not frozen) so that
    evaluation during training uses them; returns them as the checkpoints store them."""
    node = cfg.INPUT.SCALE_AWARE
    if not node.ENABLED:
        return {}
    if float(node.REFERENCE_SIZE) <= 0 or float(node.REFERENCE_FRAME) <= 0:
        seed = int(cfg.SEED) if int(cfg.SEED) >= 0 else 0
        size, frame = measure_reference(file_names, int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST),
                                        seed=seed, polarity=cfg.INPUT.get("POLARITY", "auto"))
        if float(node.REFERENCE_SIZE) <= 0:
            node.REFERENCE_SIZE = float(size or 0.0)
        if float(node.REFERENCE_FRAME) <= 0:
            node.REFERENCE_FRAME = float(frame or 0.0)
        logger.info("Scale-aware inference: reference chromosome size %.2f px (model input), frame %.0f "
                    "chromosome sizes squared, measured on the training images; stored in the checkpoints.",
                    node.REFERENCE_SIZE, node.REFERENCE_FRAME)
    return reference_state(cfg)


def apply_reference(cfg, stored: Optional[Dict] = None, train_files: Optional[Sequence[str]] = None) -> None:
    """Before inference (both engines' evaluation, ``--eval-only`` and predictors): fill
    ``REFERENCE_SIZE`` / ``REFERENCE_FRAME`` where 0 from the checkpoint's stored values, else by
    measuring ``train_files`` (the model's training images); left 0 (= the usual resize and the
    image's own statistics) when neither is available. ``cfg`` must not be frozen."""
    node = cfg.INPUT.SCALE_AWARE
    if not node.ENABLED or (float(node.REFERENCE_SIZE) > 0 and float(node.REFERENCE_FRAME) > 0):
        return
    stored = stored or {}
    size, frame = stored.get(CHECKPOINT_KEY), stored.get(FRAME_KEY)
    if (not size or not frame) and train_files:
        m_size, m_frame = measure_reference(train_files, int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST),
                                            polarity=cfg.INPUT.get("POLARITY", "auto"))
        size, frame = size or m_size, frame or m_frame
        logger.info("Scale-aware inference: reference measured on the training images (not stored in the checkpoint).")
    if float(node.REFERENCE_SIZE) <= 0:
        node.REFERENCE_SIZE = float(size or 0.0)
    if float(node.REFERENCE_FRAME) <= 0:
        node.REFERENCE_FRAME = float(frame or 0.0)
    if float(node.REFERENCE_SIZE) <= 0:
        logger.warning("INPUT.SCALE_AWARE is on but no reference chromosome size is known (not in the config, "
                       "not in the checkpoint, no training images): using the usual resize.")


def stored_reference(weights: str) -> Dict[str, float]:
    """The reference values stored in a checkpoint file (read safely); ``{}`` when absent."""
    import os

    from ..checkpoint_io import CheckpointError, load_checkpoint_file

    if not weights or not os.path.isfile(weights):
        return {}
    try:
        data = load_checkpoint_file(weights)
    except CheckpointError:
        return {}  # the load proper names the problem
    return {k: float(data[k]) for k in (CHECKPOINT_KEY, FRAME_KEY) if data.get(k)}
