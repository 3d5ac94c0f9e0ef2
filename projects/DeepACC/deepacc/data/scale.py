"""Scale-aware resizing (ours, beyond the paper): chromosomes reach the model at the pixel size it was
trained at, whatever the image's size or magnification.

The usual rule resizes every image to ``INPUT.MIN_SIZE_TEST`` on its short side, so the chromosomes'
pixel size depends on how the picture was framed: a 524x581 crop around one spread is enlarged, a
1600x1200 frame with the same spread in a corner is shrunk. Here the typical chromosome size is
measured on the image itself (:func:`chromosome_size`) and the image is resized so that it equals
the size the model saw in training (``INPUT.SCALE_AWARE.REFERENCE_SIZE``, measured on the training
images at the usual test resize, :func:`measure_reference_size`, and stored in the checkpoints).

**The measurement.** Dark objects on the light background are found with Otsu's threshold; each
connected object of a permissive mask (darker than a quarter of the chromosomes' median darkness)
gets an *equivalent area*: its summed darkness (background level minus gray value) divided by the
chromosomes' median darkness. Summed darkness is unchanged by blur and resampling, so this area
scales exactly with the magnification squared, and the division removes the staining strength.
The chromosome size is the square root of the median equivalent area over the objects (tiny specks
below 5 % of the 75th percentile are left out; a nucleus or a cluster of touching chromosomes is
one object and does not move the median much). On the composed G-band val images resized from 0.5x
to 2x, the measured size follows the resize within 1 % (``tests/test_scale.py``).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["chromosome_size", "standard_factor", "measure_reference_size", "resize_factor", "resolve_reference",
           "training_files", "training_reference_size", "stored_reference", "CHECKPOINT_KEY"]

#: Key of the reference chromosome size in the checkpoints both engines write.
CHECKPOINT_KEY = "input_reference_size"

logger = logging.getLogger(__name__)

#: Objects smaller than this fraction of the 75th percentile of the objects' areas are specks.
SPECK_FRACTION = 0.05


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


def chromosome_size(gray: np.ndarray) -> Optional[float]:
    """Typical chromosome size of a grayscale spread (dark chromosomes on light), in pixels: the
    square root of the median blur-invariant equivalent area of its dark objects (see the module
    docstring). ``None`` when fewer than 3 objects are found (blank or unusual image).

    numpy and scipy only: no OpenCV, whose thread pool, once started in a process, deadlocks the data
    loader workers forked from it; this runs in both."""
    from scipy import ndimage

    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.size == 0:
        return None
    g = gray.astype(np.float32)
    background = float(np.percentile(g, 90))
    dark = np.clip(background - g, 0.0, None)
    u8 = gray if gray.dtype == np.uint8 else np.clip(g, 0, 255).astype(np.uint8)
    core_dark = dark[u8 <= _otsu(u8)]
    level = float(np.median(core_dark)) if core_dark.size else 0.0
    if level <= 1.0:
        return None
    labels, n = ndimage.label(dark > 0.25 * level, structure=np.ones((3, 3), bool))
    if n < 1:
        return None
    mass = np.bincount(labels.ravel(), weights=dark.ravel(), minlength=n + 1)[1:]
    area = mass / level
    area = area[area > SPECK_FRACTION * np.percentile(area, 75)]
    if len(area) < 3:
        return None
    return float(np.sqrt(np.median(area)))


def standard_factor(height: int, width: int, min_size: int, max_size: int) -> float:
    """The usual resize factor: short side to ``min_size``, long side at most ``max_size``."""
    short, long_ = min(height, width), max(height, width)
    f = min_size / short
    if long_ * f > max_size:
        f = max_size / long_
    return float(f)


def measure_reference_size(file_names: Sequence[str], min_size: int, max_size: int, max_images: int = 64,
                           seed: int = 0) -> Optional[float]:
    """Median chromosome size, in model-input pixels, of (up to ``max_images``, drawn with ``seed``)
    training images at the usual test resize: the reference that scale-aware resizing matches."""
    from .images import read_image

    names = list(file_names)
    if not names:
        return None
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(names))[:max_images]
    sizes: List[float] = []
    for i in pick:
        gray = read_image(names[int(i)])
        s = chromosome_size(gray)
        if s is not None:
            sizes.append(s * standard_factor(gray.shape[0], gray.shape[1], min_size, max_size))
    return float(np.median(sizes)) if sizes else None


def resize_factor(gray: np.ndarray, cfg, reference: Optional[float] = None) -> Tuple[float, Dict[str, object]]:
    """Resize factor of one image for inference, and what decided it.

    With ``INPUT.SCALE_AWARE.ENABLED`` and a reference size (``reference`` or
    ``INPUT.SCALE_AWARE.REFERENCE_SIZE``), the factor makes the image's chromosomes that size,
    bounded to ``[MIN_FACTOR, MAX_FACTOR]`` times the usual factor and to a long side of at most
    ``MAX_SIZE``; otherwise (or when the image's size cannot be measured) the usual factor
    (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``). The info dict records ``mode``
    (``"scale_aware"`` / ``"standard"``), the measured ``chromosome_size`` and the ``reference``.
    """
    h, w = int(gray.shape[0]), int(gray.shape[1])
    base = standard_factor(h, w, int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST))
    node = cfg.INPUT.SCALE_AWARE
    ref = float(reference if reference is not None else node.REFERENCE_SIZE)
    info: Dict[str, object] = {"mode": "standard", "factor": base, "chromosome_size": None, "reference": ref or None}
    if not node.ENABLED or ref <= 0:
        return base, info
    size = chromosome_size(gray)
    info["chromosome_size"] = size
    if size is None:
        return base, info
    f = ref / size
    f = min(max(f, base * float(node.MIN_FACTOR)), base * float(node.MAX_FACTOR))
    f = min(f, float(node.MAX_SIZE) / max(h, w))
    info.update(mode="scale_aware", factor=float(f))
    return float(f), info


def resolve_reference(cfg, stored: Optional[float] = None, train_files: Optional[Sequence[str]] = None) -> float:
    """The reference chromosome size for inference: ``INPUT.SCALE_AWARE.REFERENCE_SIZE`` when set,
    else the one stored in the checkpoint, else measured on ``train_files`` (the model's training
    images); ``0.0`` (= the usual resize) when none is available or the feature is off."""
    node = cfg.INPUT.SCALE_AWARE
    if not node.ENABLED:
        return 0.0
    if float(node.REFERENCE_SIZE) > 0:
        return float(node.REFERENCE_SIZE)
    if stored:
        return float(stored)
    if train_files:
        ref = measure_reference_size(train_files, int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST))
        if ref:
            logger.info("Scale-aware resizing: reference chromosome size %.2f px measured on the training images "
                        "(not stored in the checkpoint).", ref)
            return ref
    logger.warning("INPUT.SCALE_AWARE is on but no reference chromosome size is known (not in the config, "
                   "not in the checkpoint, no training images): using the usual resize.")
    return 0.0


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


def training_reference_size(cfg, file_names: Sequence[str]) -> float:
    """At training start (both engines): ``INPUT.SCALE_AWARE.REFERENCE_SIZE``, measured on the
    training images when it is 0 and the feature is on, and written back into ``cfg`` (the config
    must not be frozen) so that evaluation during training and the checkpoints use it."""
    node = cfg.INPUT.SCALE_AWARE
    if not node.ENABLED:
        return 0.0
    if float(node.REFERENCE_SIZE) <= 0:
        seed = int(cfg.SEED) if int(cfg.SEED) >= 0 else 0
        ref = measure_reference_size(file_names, int(cfg.INPUT.MIN_SIZE_TEST), int(cfg.INPUT.MAX_SIZE_TEST), seed=seed)
        node.REFERENCE_SIZE = float(ref or 0.0)
        logger.info("Scale-aware resizing: reference chromosome size %.2f px (model input), measured on the "
                    "training images; stored in the checkpoints.", node.REFERENCE_SIZE)
    return float(node.REFERENCE_SIZE)


def stored_reference(weights: str) -> Optional[float]:
    """The reference size stored in a checkpoint file (read safely), ``None`` when absent."""
    import os

    from ..checkpoint_io import CheckpointError, load_checkpoint_file

    if not weights or not os.path.isfile(weights):
        return None
    try:
        value = load_checkpoint_file(weights).get(CHECKPOINT_KEY)
    except CheckpointError:
        return None  # the load proper names the problem
    return float(value) if value else None
