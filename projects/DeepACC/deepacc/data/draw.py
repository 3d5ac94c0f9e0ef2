"""Draw ground-truth boxes and class labels on an image (for looking at datasets).

Named classes are coloured by Denver group; class-agnostic chromosomes (``category_id`` =
:data:`deepacc.karyotype.AGNOSTIC`, e.g. LabelMe polygons labelled ``chr``) are drawn in a neutral
gray and labelled ``chr``; any other id (not a class) in gray with its number.
"""
from __future__ import annotations

from typing import Any, Dict, List

import cv2
import numpy as np

from ..karyotype import AGNOSTIC, CLASS_NAMES, GROUP_COLORS, group_of

__all__ = ["draw_annotations"]

#: BGR colour of each class (OpenCV draws BGR): the project's Denver-group palette.
_COLOR_OF = {n: GROUP_COLORS[group_of(n)][::-1] for n in CLASS_NAMES}
#: BGR colour of class-agnostic chromosomes: a neutral gray, none of the group colours.
AGNOSTIC_COLOR = (128, 128, 128)
#: Label drawn on class-agnostic chromosomes.
AGNOSTIC_LABEL = "chr"


def _name_and_color(category_id):
    c = int(category_id)
    if 0 <= c < len(CLASS_NAMES):
        return CLASS_NAMES[c], _COLOR_OF[CLASS_NAMES[c]]
    if c == AGNOSTIC:
        return AGNOSTIC_LABEL, AGNOSTIC_COLOR
    return f"?{c}", AGNOSTIC_COLOR


def draw_annotations(image: np.ndarray, annotations: List[Dict[str, Any]], scale: float = 1.0,
                     thickness: int = 1) -> np.ndarray:
    """BGR uint8 copy of a grayscale/BGR image with XYXY boxes and class names, coloured by Denver group
    (class-agnostic chromosomes: gray, labelled ``chr``)."""
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if scale != 1.0:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    img = np.ascontiguousarray(img)
    fs = max(0.3, 0.35 * scale)
    for a in annotations:
        x0, y0, x1, y1 = (float(v) * scale for v in a["bbox"])
        name, col = _name_and_color(a["category_id"])
        cv2.rectangle(img, (int(round(x0)), int(round(y0))), (int(round(x1)) - 1, int(round(y1)) - 1), col, thickness)
        cv2.putText(img, name, (int(x0), max(8, int(y0) - 2)), cv2.FONT_HERSHEY_SIMPLEX, fs, col, 1, cv2.LINE_AA)
    return img
