"""ADIR M-FISH image set #1: its image pairs, read as a gray spread and its chromosome mask.

The set holds, per image, a DAPI plane ``<img>D.tif`` and a label image ``<img>K.tif`` (0 =
background) in ``<slide>__<code>/`` folders (the set's README-ADIR.md). :func:`mfish_pairs` finds
the pairs and :func:`read_mfish` reads one the way the slide measurements
(:mod:`deepacc.tools.realism`) look at it. ``datasets/prepare_mfish.py`` converts the set into a
COCO dataset (boxes from the label classes, karyotypes from the folder codes, splits by slide).
"""
from __future__ import annotations

import glob
import os
from typing import Iterator, Tuple

import numpy as np

from .images import read_image

__all__ = ["mfish_pairs", "read_mfish"]


def mfish_pairs(src: str) -> Iterator[Tuple[str, str]]:
    """``(DAPI path, label path)`` of every ``*D.tif`` in ``src`` and in its sub-folders (one
    level) that has its ``*K.tif`` beside it, in sorted path order."""
    for d in sorted(glob.glob(os.path.join(src, "*D.tif")) + glob.glob(os.path.join(src, "*", "*D.tif"))):
        k = d[:-5] + "K.tif"
        if os.path.isfile(k):
            yield d, k


def read_mfish(dapi: str, labels: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(image, mask)`` of one pair: the inverted DAPI plane (``255 - DAPI``, uint8, dark
    chromosomes on light, as G-band spreads) and the chromosome pixels (label image read by
    :func:`~deepacc.data.images.read_image`, ``> 0``)."""
    return 255 - read_image(dapi), read_image(labels) > 0
