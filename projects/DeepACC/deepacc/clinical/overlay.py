"""Overlay of the calls on the metaphase image: boxes coloured by Denver group, with labels."""
from __future__ import annotations

from typing import Collection, Mapping, Sequence, Tuple

import cv2
import numpy as np

from ..karyotype import CLASS_NAMES, DENVER_GROUPS, GROUP_COLORS, group_of

__all__ = ["to_rgb", "draw_overlay", "draw_label"]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GRAY = (120, 120, 120)
_MAGENTA = (200, 0, 200)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 RGB copy of a grayscale (H, W) or RGB (H, W, 3) image."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return img.copy()
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {img.shape}")


def draw_label(
    canvas: np.ndarray,
    text: str,
    org: Tuple[int, int],
    color: Tuple[int, int, int],
    scale: float = 0.4,
    text_color: Tuple[int, int, int] = (255, 255, 255),
    thickness: int = 1,
) -> None:
    """Text on a filled background box whose bottom-left corner is ``org`` (clipped to the canvas)."""
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
    h, w = canvas.shape[:2]
    x = int(min(max(org[0], 0), max(w - tw - 2, 0)))
    y = int(min(max(org[1], th + base + 1), h - 1))
    cv2.rectangle(canvas, (x, y - th - base - 1), (x + tw + 2, y), color, -1)
    cv2.putText(canvas, text, (x + 1, y - base), _FONT, scale, text_color, thickness, cv2.LINE_AA)


def draw_overlay(
    image: np.ndarray,
    calls: Mapping[str, np.ndarray],
    class_names: Sequence[str] = CLASS_NAMES,
    uncertain: Collection[int] = (),
    show_scores: bool = True,
    legend: bool = True,
    excluded: Collection[int] = (),
    clusters: Sequence[Sequence[float]] = (),
) -> np.ndarray:
    """RGB image with one box per call, coloured by the Denver group of its class.

    Labels read ``<class> <score>``; uncertain calls (rows listed in ``uncertain``) get a ``?`` and a
    dashed-looking double frame in red so they stand out. Calls listed in ``excluded`` (not counted:
    oversized round objects, ``summary.excluded``) are drawn in gray labelled ``not counted``; each
    box of ``clusters`` (xyxy, ``summary.clusters[*]["box"]``) gets a magenta frame around it
    labelled ``cluster``. The legend names these only when there are some.
    """
    canvas = to_rgb(image)
    h, w = canvas.shape[:2]
    boxes = np.asarray(calls["boxes"], dtype=np.float64).reshape(-1, 4)
    # Label size follows the size of the chromosomes, so dense spreads stay readable.
    if len(boxes):
        size = float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
        scale = float(np.clip(size / 110.0, 0.3, 0.7))
    else:
        scale = 0.4
    thick = max(1, int(round(max(h, w) / 1000)))
    uncertain = set(int(i) for i in uncertain)
    excluded = set(int(i) for i in excluded)
    scores = np.asarray(calls["scores"], dtype=np.float64).reshape(-1)
    classes = np.asarray(calls["classes"]).astype(int).reshape(-1)
    for box in clusters:  # under the calls' boxes, a few pixels outside the cluster
        o = 3 * thick + 3
        x0, y0, x1, y1 = [int(round(v)) for v in box]
        cv2.rectangle(canvas, (x0 - o, y0 - o), (x1 + o, y1 + o), _MAGENTA, thick)
        draw_label(canvas, "cluster", (x0 - o, y1 + o + int(16 * scale) + 2), _MAGENTA, scale)
    # Draw low scores first so confident boxes end up on top.
    for i in np.argsort(scores, kind="stable"):
        name = class_names[classes[i]]
        color = GROUP_COLORS[group_of(name)]
        x0, y0, x1, y1 = [int(round(v)) for v in boxes[i]]
        if i in excluded:
            cv2.rectangle(canvas, (x0, y0), (x1, y1), _GRAY, thick)
            draw_label(canvas, f"not counted ({name}?)", (x0, y0 - 1), _GRAY, scale)
            continue
        if i in uncertain:
            o = thick + 1
            cv2.rectangle(canvas, (x0 - o, y0 - o), (x1 + o, y1 + o), (220, 0, 0), thick)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), color, thick)
        text = f"{name} {scores[i]:.2f}" if show_scores else name
        if i in uncertain:
            text += " ?"
        draw_label(canvas, text, (x0, y0 - 1), (220, 0, 0) if i in uncertain else color, scale)
    if legend:
        extra = []
        if excluded:
            extra.append(("gray = not counted (oversized round: nucleus?)", _GRAY))
        if len(clusters):
            extra.append(("magenta = cluster of overlapping calls", _MAGENTA))
        canvas = _with_legend(canvas, float(np.clip(w / 1600.0, 0.4, 0.7)), extra)
    return canvas


def _with_legend(canvas: np.ndarray, scale: float, extra=()) -> np.ndarray:
    """The canvas with a legend strip (Denver group colours, then ``extra`` (text, colour)) added below the image."""
    (_, th), base = cv2.getTextSize("Ag", _FONT, scale, 1)
    texts = []
    for letter in sorted(DENVER_GROUPS):
        names = DENVER_GROUPS[letter]
        t = {"C": "C: 6-12, X", "G": "G: 21-22, Y"}.get(letter, f"{letter}: {names[0]}-{names[-1]}")
        texts.append((t, GROUP_COLORS[letter]))
    texts.append(("? = uncertain call", (220, 0, 0)))
    texts.extend(extra)
    widths = [cv2.getTextSize(t, _FONT, scale, 1)[0][0] + 12 for t, _ in texts]
    w = canvas.shape[1]
    lines, x = [[]], 0
    for (t, c), tw in zip(texts, widths):
        if x + tw > w - 8 and lines[-1]:
            lines.append([])
            x = 0
        lines[-1].append((t, c, x))
        x += tw
    step = th + base + 8
    strip = np.full((step * len(lines) + 6, w, 3), 255, np.uint8)
    for k, line in enumerate(lines):
        for t, c, xx in line:
            draw_label(strip, t, (6 + xx, 4 + step * (k + 1) - 4), c, scale)
    return np.concatenate([canvas, strip], axis=0)
