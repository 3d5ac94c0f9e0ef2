#!/usr/bin/env python
"""Composed G-band spreads today and with ``--real-like``, next to real spreads -> docs/images/composed_vs_real.png.

    python datasets/make_realistic_figure.py [--src ../shared/data/gband_cells] [--data ../shared/data]
        [--out docs/images/composed_vs_real.png] [--cells A,B,C] [--measure N]

Row 1: three validation cells of ``datasets/prepare_gband_cells.py`` composed as today (seed 0,
1280x960); row 2: the same cells composed with ``--real-like``; row 3: a real BioImLab spread
(Q-band fluorescence, bright-on-dark, as stored), the same inverted, and a real ADIR M-FISH spread
(DAPI plane, inverted). Every panel is scaled to the same size, so the framing (how much of the
image the spread fills) compares too.

``--measure N`` prints instead a table of layout and appearance measures (median and 25th-75th
percentile over images) of N validation cells composed today and with ``--real-like``, of the
BioImLab spreads with at least 40 annotated chromosomes (their polygons are the masks) and of the
ADIR spreads (connected components of each class of the label image, overlap pixels given to both
neighbours): touching / overlapping fractions, density and frame coverage, straightness of the long
chromosomes (:func:`deepacc.data.augment_spread.layout_stats`), contrast, edge width and mid-tone
level (:func:`appearance`). The ``--real-like`` ranges were chosen with it (docs/data.md,
"Composed spreads that look real").
"""
import argparse
import base64
import glob
import importlib.util
import json
import os
import sys

import cv2
import numpy as np

from deepacc.data.augment_spread import layout_stats
from deepacc.fileio import write_image
from deepacc.data.images import read_image
from deepacc.data.slide import chromosome_width

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CELLS = "97002023.12,97002140.17,97002204.11"
DEFAULT_BIOIMLAB = "original_105.json"
DEFAULT_MFISH = "V13__XY/V1312XYD.tif"


def _prepare_module():
    spec = importlib.util.spec_from_file_location("_prepare_gband_cells", os.path.join(HERE, "prepare_gband_cells.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------- real spreads


def load_bioimlab(path):
    """``(gray image as stored: bright-on-dark, [full-image bool mask per polygon])`` of a LabelMe json."""
    with open(path) as f:
        d = json.load(f)
    img = cv2.imdecode(np.frombuffer(base64.b64decode(d["imageData"]), np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{path}: imageData is not an image")
    masks = []
    for s in d.get("shapes", []):
        if s.get("shape_type", "polygon") != "polygon" or len(s["points"]) < 3:
            continue
        m = np.zeros(img.shape, np.uint8)
        cv2.fillPoly(m, [np.round(np.asarray(s["points"], np.float64)).astype(np.int32)], 1)
        masks.append(m > 0)
    return img, masks


def load_mfish(dapi_path, min_area=40):
    """``(inverted DAPI: dark-on-light, [full-image bool mask per chromosome])``: connected components
    of each class of the ``K`` label image; overlap pixels (255) next to a class go to it."""
    img = 255 - read_image(dapi_path)
    K = read_image(dapi_path[:-5] + "K.tif")
    ov = K == 255
    masks = []
    for c in range(1, 25):
        m = K == c
        if not m.any():
            continue
        m = m | (ov & (cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) > 0))
        n, lab, st, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        masks += [lab == j for j in range(1, n) if st[j, cv2.CC_STAT_AREA] >= min_area]
    return img, masks


# ---------------------------------------------------------------------------------------- measures


def appearance(img, union):
    """Appearance of a dark-on-light gray spread with its chromosome mask: ``contrast`` (median
    background - median chromosome; background = pixels more than a chromosome width from the
    mask), ``edge`` (contrast / 90th percentile of the gradient magnitude on the mask's border,
    in chromosome widths: larger = blurrier), ``mid`` ((background - median chromosome) /
    (background - 5th percentile chromosome): lower = chromosomes light in the mid-tones)."""
    img = np.asarray(img, np.float32)
    union = np.asarray(union, bool)
    width = chromosome_width(union)
    far = ~(cv2.dilate(union.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(2, int(width))) > 0)
    bg = float(np.median(img[far]))
    ch = img[union]
    con = bg - float(np.median(ch))
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    mag = np.hypot(gx, gy)
    u8 = union.astype(np.uint8)
    border = (cv2.dilate(u8, np.ones((3, 3), np.uint8)) > 0) & ~(cv2.erode(u8, np.ones((3, 3), np.uint8)) > 0)
    g90 = float(np.percentile(mag[border], 90))
    return {"contrast": con, "edge": con / max(g90, 1e-3) / width,
            "mid": con / max(bg - float(np.percentile(ch, 5)), 1.0), "width": width}


def _full_masks(placed, shape):
    out = []
    for x, y, m in placed:
        f = np.zeros(shape, bool)
        f[y:y + m.shape[0], x:x + m.shape[1]] = m
        out.append(f)
    return out


MEASURE_ROWS = [
    ("n", "chromosomes"), ("touching", "touching another (within 2 px), fraction"),
    ("overlapping", "overlapping another, fraction"), ("density", "chromosome area / convex hull"),
    ("hull_pct", "convex hull, % of the image"), ("fill", "long chromosomes: area / min. rectangle (1 = straight)"),
    ("contrast", "background - chromosome, gray levels"), ("edge", "edge width, chromosome widths"),
    ("mid", "mid-tone level (median / 5th pct darkness)"), ("width", "chromosome width, px"),
]


def _summary(rows):
    out = {}
    for k, _ in MEASURE_ROWS:
        v = np.array([r.get(k, np.nan) for r in rows], np.float64)
        out[k] = (np.nanmedian(v), np.nanpercentile(v, 25), np.nanpercentile(v, 75)) if np.isfinite(v).any() \
            else (np.nan,) * 3
    return out


def measure(mod, cells, data, size, seed):
    p = mod.build_parser()
    a = p.parse_args(["--src", "-", "--out", "-", "--real-like"])
    realism, spread = mod.specs_from_args(a, p)
    cols = {"composed (today)": [], "composed --real-like": [], "real BioImLab": [], "real ADIR": []}
    for c in cells:
        for name, kw in (("composed (today)", {}), ("composed --real-like", {"realism": realism, "spread": spread})):
            img, anns, _, info = mod.compose_cell(c, size[0], size[1], seed, return_info=True, return_masks=True, **kw)
            masks = _full_masks(info["masks"], img.shape[:2])
            row = layout_stats(masks, img.shape[:2])
            if info.get("spread", {}).get("polarity") != "bright_on_dark":  # appearance: dark-on-light only
                row.update(appearance(img, np.any(masks, 0)))
            cols[name].append(row)
    for f in sorted(glob.glob(os.path.join(data, "bioimlab", "*.json"))):
        img, masks = load_bioimlab(f)
        if len(masks) < 40:
            continue
        row = layout_stats(masks, img.shape)
        row.update(appearance(255 - img, np.any(masks, 0)))
        cols["real BioImLab"].append(row)
    for f in sorted(glob.glob(os.path.join(data, "mfish", "*", "*D.tif"))):
        if not os.path.isfile(f[:-5] + "K.tif"):
            continue
        img, masks = load_mfish(f)
        if len(masks) < 35:
            continue
        row = layout_stats(masks, img.shape)
        row.update(appearance(img, np.any(masks, 0)))
        cols["real ADIR"].append(row)
    sums = {k: _summary(v) for k, v in cols.items()}
    print("| measure | " + " | ".join(f"{k} ({len(cols[k])})" for k in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for k, meaning in MEASURE_ROWS:
        cells_txt = [("n/a" if not np.isfinite(sums[c][k][0]) else
                      f"{sums[c][k][0]:.2f} ({sums[c][k][1]:.2f}–{sums[c][k][2]:.2f})") for c in cols]
        print(f"| `{k}`: {meaning} | " + " | ".join(cells_txt) + " |")


# ---------------------------------------------------------------------------------------- figure


def _panel(img, title, size):
    vis = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    vis = cv2.resize(vis, size, interpolation=cv2.INTER_AREA)
    top = np.full((28, size[0], 3), 255, np.uint8)
    cv2.putText(top, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([top, vis])


def make_figure(mod, cells, data, out, size, seed, bioimlab, mfish, panel=(480, 360)):
    p = mod.build_parser()
    a = p.parse_args(["--src", "-", "--out", "-", "--real-like"])
    realism, spread = mod.specs_from_args(a, p)
    rows = [[], [], []]
    for c in cells:
        img, anns, _ = mod.compose_cell(c, size[0], size[1], seed)
        rows[0].append(_panel(img, f"composed today: {c['name']} ({len(anns)})", panel))
        img, anns, _, info = mod.compose_cell(c, size[0], size[1], seed, realism=realism, spread=spread,
                                             return_info=True)
        sp = info["spread"]
        pol = ", bright-on-dark" if sp.get("polarity") == "bright_on_dark" else ""
        rows[1].append(_panel(img, f"--real-like: {sp['bent']} bent, {sp['touching_placed']} touching{pol}", panel))
    bimg, bmasks = load_bioimlab(os.path.join(data, "bioimlab", bioimlab))
    rows[2].append(_panel(bimg, f"real BioImLab {bioimlab[:-5]} (Q-band, {len(bmasks)})", panel))
    rows[2].append(_panel(255 - bimg, "the same, inverted", panel))
    mimg, _ = load_mfish(os.path.join(data, "mfish", mfish))
    rows[2].append(_panel(mimg, f"real ADIR {os.path.basename(mfish)[:-5]} (DAPI, inverted)", panel))
    gap_v = np.full((rows[0][0].shape[0], 8, 3), 255, np.uint8)
    lines = []
    for r in rows:
        line = [r[0]]
        for pnl in r[1:]:
            line += [gap_v, pnl]
        lines.append(np.hstack(line))
    gap_h = np.full((8, lines[0].shape[1], 3), 255, np.uint8)
    fig = np.vstack([lines[0], gap_h, lines[1], gap_h, lines[2]])
    write_image(out, fig, [cv2.IMWRITE_PNG_COMPRESSION, 9])  # creates the folder
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default="../shared/data/gband_cells", help="the G-band crop folder")
    p.add_argument("--data", default="../shared/data", help="folder holding bioimlab/ and mfish/")
    p.add_argument("--out", default="docs/images/composed_vs_real.png")
    p.add_argument("--cells", default=DEFAULT_CELLS, help="comma-separated cell names (default: three val cells)")
    p.add_argument("--bioimlab", default=DEFAULT_BIOIMLAB, help="a LabelMe json under <data>/bioimlab")
    p.add_argument("--mfish", default=DEFAULT_MFISH, help="a DAPI plane under <data>/mfish")
    p.add_argument("--size", default="1280x960")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--measure", type=int, default=0, metavar="N",
                   help="print the measures of N validation cells and the real spreads instead of drawing")
    a = p.parse_args(argv)
    mod = _prepare_module()
    size = tuple(int(v) for v in a.size.lower().split("x"))
    cells, _ = mod.scan(a.src)
    cells = [c for c in cells if not (c["case"] == "426" or c["case"].endswith("426"))]
    if a.measure:
        split_of = mod.assign_splits([c["case"] for c in cells], a.seed, [0.7, 0.15, 0.15])
        val = [c for c in cells if split_of[c["case"]] == "val"][:a.measure]
        measure(mod, val, a.data, size, a.seed)
        return 0
    by_name = {c["name"]: c for c in cells}
    names = [n.strip() for n in a.cells.split(",") if n.strip()]
    missing = [n for n in names if n not in by_name]
    if missing:
        p.error(f"--cells: unknown cell(s) {', '.join(missing)}")
    print(make_figure(mod, [by_name[n] for n in names], a.data, a.out, size, a.seed, a.bioimlab, a.mfish))
    return 0


if __name__ == "__main__":
    sys.exit(main())
