#!/usr/bin/env python
"""Regenerate ``docs/images/synthetic_example.png`` (synthetic spreads shown in the docs).

    python datasets/make_synthetic_figure.py [--out docs/images/synthetic_example.png]
"""
import argparse
import os

import cv2
import numpy as np

from deepacc.data.draw import draw_annotations
from deepacc.data.synthetic import generate_spread
from deepacc.fileio import write_image

PANELS = ((21, "47,XY,+21", "default", False), (21, "47,XY,+21", "default", True), (5, "46,XX", "shifted", False))


def spread_crop(anns, shape, pad=40):
    b = np.array([a["bbox"] for a in anns])
    return (max(0, int(b[:, 0].min()) - pad), max(0, int(b[:, 1].min()) - pad),
            min(shape[1], int(b[:, 2].max()) + pad), min(shape[0], int(b[:, 3].max()) + pad))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "images",
                                                 "synthetic_example.png"))
    p.add_argument("--height", type=int, default=560)
    a = p.parse_args(argv)
    panels = []
    for seed, karyotype, batch, boxes in PANELS:
        img, anns, _ = generate_spread(np.random.default_rng(seed), 1600, 1200, karyotype, batch=batch)
        x0, y0, x1, y1 = spread_crop(anns, img.shape)
        vis = draw_annotations(img, anns) if boxes else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        vis = vis[y0:y1, x0:x1]
        s = a.height / vis.shape[0]
        vis = cv2.resize(vis, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        top = np.full((34, vis.shape[1], 3), 255, np.uint8)
        label = f"{karyotype}, batch '{batch}'" + (" + boxes" if boxes else "")
        cv2.putText(top, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 1, cv2.LINE_AA)
        panels += [np.vstack([top, vis]), np.full((a.height + 34, 8, 3), 255, np.uint8)]
    write_image(a.out, np.hstack(panels[:-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(a.out)


if __name__ == "__main__":
    main()
