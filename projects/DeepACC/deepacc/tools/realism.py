"""Slide appearance from the command line: measure spreads, draw the docs figure.

    python -m deepacc.tools.realism measure [--mfish DIR] [--images NAME=GLOB ...] [--masks-from DIR]
        [--synthetic N] [--limit N]
    python -m deepacc.tools.realism figure --before PNG --after PNG --after-json JSON --real TIF --out PNG
        [--height PX]

``measure`` prints, as a markdown table, the appearance statistics of
:func:`deepacc.data.slide.measure_slide` (median and 25th - 75th percentile over the images of each
source) for real ADIR M-FISH spreads (:mod:`deepacc.data.mfish`), composed spreads and synthetic
ones without and with the slide step. ``figure`` draws docs/images/realistic_slide.png
(:func:`make_figure`). The realism step itself is :mod:`deepacc.data.slide`.
"""
from __future__ import annotations

import argparse
import glob
import os
from typing import Tuple

import cv2
import numpy as np

from ..data.coco import load_coco_json
from ..data.images import read_image
from ..data.mfish import mfish_pairs, read_mfish
from ..data.draw import draw_annotations
from ..data.slide import MEASURES, measure_slide, summarize
from ..data.synthetic import generate_spread
from ..fileio import write_image

__all__ = ["make_figure", "main"]


def _rows_mfish(src: str, limit: int):
    rows = []
    for d, k in mfish_pairs(src):
        rows.append(measure_slide(*read_mfish(d, k)))
        if limit and len(rows) >= limit:
            break
    return rows


def _rows_images(pattern: str, masks_from: str, limit: int, mask_darkness: int = 25):
    """Images matching ``pattern``; chromosome mask = pixels of the same-named image in
    ``masks_from`` (a composed spread without realism) darker than ``255 - mask_darkness``."""
    rows = []
    for f in sorted(glob.glob(pattern)):
        ref = os.path.join(masks_from, os.path.basename(f)) if masks_from else f
        if not os.path.isfile(ref):
            continue
        rows.append(measure_slide(read_image(f), read_image(ref) < 255 - mask_darkness))
        if limit and len(rows) >= limit:
            break
    return rows


def _rows_synthetic(n: int, size: Tuple[int, int], realism, seed: int = 100):
    rows = []
    for i in range(n):
        img, _, info = generate_spread(np.random.default_rng(seed + i), size[0], size[1], "46,XY",
                                       return_masks=True, realism=realism)
        cm = np.zeros(img.shape[:2], bool)
        for x, y, m in info["masks"]:
            cm[y:y + m.shape[0], x:x + m.shape[1]] |= m
        rows.append(measure_slide(img, cm))
    return rows


def _print_table(results):
    names = list(results)
    print("| measure | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for k in list(MEASURES) + ["width"]:
        cells = []
        for nm in names:
            m, a, b = results[nm][k]
            cells.append("n/a" if not np.isfinite(m) else f"{m:.2f} ({a:.2f}–{b:.2f})")
        print(f"| `{k}` | " + " | ".join(cells) + " |")


def _panel(img: np.ndarray, title: str, height: int) -> np.ndarray:
    vis = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    s = height / vis.shape[0]
    vis = cv2.resize(vis, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    top = np.full((30, vis.shape[1], 3), 255, np.uint8)
    cv2.putText(top, title, (6, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([top, vis])


def make_figure(before: str, after: str, after_json: str, real: str, out: str, height: int = 420) -> str:
    """Four panels side by side: composed spread, the same with realism, its ground-truth boxes
    drawn on it, a real ADIR spread (DAPI inverted)."""
    a_img = cv2.imread(after, cv2.IMREAD_UNCHANGED)
    recs = [d for d in load_coco_json(after_json) if os.path.basename(d["file_name"]) == os.path.basename(after)]
    if not recs:
        raise KeyError(f"{after}: no entry in {after_json}")
    panels = [_panel(read_image(before), "composed G-band spread (default)", height),
              _panel(a_img, "the same with --realistic", height),
              _panel(draw_annotations(a_img, recs[0]["annotations"], thickness=2), "--realistic + ground-truth boxes",
                     height),
              _panel(255 - read_image(real), "real ADIR spread (inverted DAPI)", height)]
    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    row = [panels[0]]
    for pnl in panels[1:]:
        row += [gap, pnl]
    write_image(out, np.hstack(row), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m deepacc.tools.realism",
                                description="Slide appearance: measure spreads, draw the docs figure.")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="appearance statistics (median and 25th-75th percentile over images)")
    m.add_argument("--mfish", default="", help="ADIR M-FISH folder: <slide>__<code>/<img>D.tif + K.tif (inverted DAPI)")
    m.add_argument("--images", action="append", default=[], metavar="NAME=GLOB",
                   help="composed spreads, e.g. before='datasets/gband_cells/val/*.png' (repeatable)")
    m.add_argument("--masks-from", default="", help="folder of the same spreads without realism (chromosome masks)")
    m.add_argument("--synthetic", type=int, default=0,
                   help="also N synthetic 1600x1200 spreads (46,XY, seeds 100..), without and with realism")
    m.add_argument("--limit", type=int, default=0, help="at most N images per source")
    f = sub.add_parser("figure", help="draw docs/images/realistic_slide.png")
    f.add_argument("--before", required=True)
    f.add_argument("--after", required=True)
    f.add_argument("--after-json", required=True)
    f.add_argument("--real", required=True, help="an ADIR <img>D.tif")
    f.add_argument("--out", required=True)
    f.add_argument("--height", type=int, default=420)
    a = p.parse_args(argv)
    if a.cmd == "figure":
        print(make_figure(a.before, a.after, a.after_json, a.real, a.out, a.height))
        return 0
    results = {}
    if a.mfish:
        results["real ADIR"] = summarize(_rows_mfish(a.mfish, a.limit))
    for spec in a.images:
        name, _, pattern = spec.partition("=")
        results[name] = summarize(_rows_images(pattern, a.masks_from, a.limit))
    if a.synthetic:
        results["synthetic"] = summarize(_rows_synthetic(a.synthetic, (1600, 1200), None))
        results["synthetic + realism"] = summarize(_rows_synthetic(a.synthetic, (1600, 1200), True))
    _print_table(results)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
