"""Pixel normalisation of paper §3.1, shared by both engines' mappers and the predictors."""
from __future__ import annotations

import numpy as np

NORMALIZATIONS = ("per_image", "none")


def image_stats(gray: np.ndarray):
    """``(mean, std)`` of the image's pixels as ``"per_image"`` normalisation uses them: a constant
    image gets std 1 (so it maps to zeros)."""
    x = np.asarray(gray, dtype=np.float32)
    std = float(x.std())
    return float(x.mean()), (std if std > 1e-6 else 1.0)


def normalize_image(gray: np.ndarray, mode: str = "per_image", stats=None) -> np.ndarray:
    """``"per_image"``: ``(x - mean(x)) / std(x)`` over the image's own pixels (a constant image maps
    to zeros), paper §3.1, or with the given ``stats`` ``(mean, std)`` (scale-aware inference's
    framed statistics, :mod:`deepacc.data.scale`). ``"none"``: the raw 0..255 values as float32
    (``MODEL.PIXEL_MEAN/STD`` then apply inside the model)."""
    x = np.asarray(gray, dtype=np.float32)
    if mode == "per_image":
        mean, std = image_stats(x) if stats is None else (float(stats[0]), float(stats[1]))
        return (x - mean) / std
    if mode == "none":
        return x
    raise ValueError(f"INPUT.NORMALIZATION must be one of {NORMALIZATIONS}, got {mode!r}")


def to_model_input(gray: np.ndarray, mode: str = "per_image", stats=None):
    """HxW uint8 grayscale -> (3, H, W) float torch tensor (the gray plane repeated for ResNet stems).

    The three channels are one plane seen three times (an ``expand``ed view, channel stride 0): a
    third of the memory through the data loader's shared memory, and the torchvision engine's
    resize works on the one plane. Read-only: copy it (``.contiguous()``) before writing into it."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(normalize_image(gray, mode, stats)))
    return x.unsqueeze(0).expand(3, -1, -1)
