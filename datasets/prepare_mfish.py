#!/usr/bin/env python
"""ADIR M-FISH image set #1 -> COCO dataset (whole real metaphase spreads).

    python datasets/prepare_mfish.py --src /path/to/mfish --out $DETECTRON2_DATASETS/mfish
        [--seed 0] [--split 0.7,0.15,0.15] [--min-area 40] [--no-split-touching] [--stretch] [--limit N]

Input: ``<src>/<slide>__<code>/<img>D.tif`` (DAPI plane) and ``<img>K.tif`` (label image), see the
set's README-ADIR.md (its copyright notice must travel with the images).

* **Image**: the DAPI plane, read by ``deepacc.data.images.read_image`` and **inverted**
  (``255 - DAPI``), so chromosomes are dark on a light background like G-band images. Written as PNG.
  DAPI is faint in this set (inverted chromosomes are light gray); ``--stretch`` adds a linear
  stretch between the 0.5 and 99.5 percentiles.
* **Boxes**: one per connected component (8-connectivity) of each class in the label image
  (0 background, 1..22, 23 = X, 24 = Y). Pixels labelled 255 (README: -1) are where chromosomes
  overlap: every connected overlap region is added to the mask of **every class touching it**
  (its 1-pixel rim), so each of the overlapping chromosomes gets its full extent. Components smaller
  than ``--min-area`` pixels (default 40; label fragments) are dropped and counted.
* **Touching homologues**: two touching chromosomes of the same class form one component. When the
  folder's karyotype is purely numerical and a class has fewer components than its expected copy
  number, the largest component is split in two by a distance-transform watershed, accepted only if
  both parts hold at least 20 % of its area (``--no-split-touching`` disables it). The count of
  splits is reported.
* **Karyotype**: the folder code (``XY``, ``21``, ...) is converted to the ISCN string of the README
  table (``21`` -> ``45,XY,-21``) and stored per image; code ``EX`` ("extreme", not karyotyped)
  stores no karyotype.
* **Splits by slide** (``A01``, ``P07``, ``V13``: probe set + slide number): slides are shuffled
  with ``--seed`` and cut by ``--split`` fractions, so no slide is in two splits.
* A ``D`` image without its ``K`` label image is skipped and counted.

Output: ``<out>/<split>/<img>.png``, ``<out>/annotations/<split>.json``, ``<out>/prepare_report.json``
and a copy of README-ADIR.md.
"""
import argparse
import json
import os
import re
import sys
from collections import Counter, defaultdict

import cv2
import numpy as np
from PIL import Image

from deepacc.data.coco import write_coco_json
from deepacc.data.images import ImageError, read_image
from deepacc.data.splits import limit_per_split
from deepacc.fileio import atomic_write, copy_file, write_image
from deepacc.karyotype import CLASS_NAMES, parse_karyotype

#: Karyotype codes of the ADIR M-FISH set #1 (README-ADIR.md), as ISCN strings without blanks.
#: Obvious typos of the README are corrected: 38 "-18-, 18" -> "-18,-18"; 45 "14" -> "-14";
#: 51 "(9;14)" -> "t(9;14)".
KARYOTYPE_CODES = {
    "XY": "46,XY", "XX": "46,XX", "EX": None,
    "02": "45,XY,-2", "08": "45,XY,-8", "09": "45,XY,-9", "12": "45,XY,-12", "13": "45,XY,-13",
    "15": "45,XY,-15", "17": "45,XX,-17", "18": "45,XY,-18", "20": "45,XY,-20", "21": "45,XY,-21",
    "25": "44,XY,-8,-13", "26": "45,XY,-13,-18,+der(5)", "27": "42,XY,-1,-7,-9,-22", "28": "44,XY,-1,-12",
    "29": "44,XY,-11,-22", "30": "43,XY,-19,-19,-22",
    "31": "44,XX,-7,-22", "32": "43,XX,-7,-21,-22", "33": "43,XX,-7,-22,-22", "34": "41,XX,-5,-6,-7,-9,-22",
    "35": "42,XX,-7,-15,-19,-22", "36": "43,XY,-14,-16,-22", "37": "40,XY,-2,-7,-16,-16,-17,-18",
    "38": "36,XY,-1,-3,-4,-9,-9,-14,-16,-16,-18,-18",
    "39": "32,XY,-2,-3,-8,-9,-9,-10,-13,-14,-14,-15,-18,-19,-22,-22",
    "40": "42,XY,-7,-11,-12,-15", "41": "47,XX,+r(9)", "42": "50,XY,+7,+8,+15,+20", "43": "49,XY,+7,+15,+20",
    "44": "44,X,-5,-14,+18,ins(11;8),t(5;16),t(7;16),t(9;14),t(14;15),t(5;17)",
    "45": "45,X,-5,-14,+18,ins(11;8),+ins(14;9),t(5;16),t(7;16),t(9;14),t(14;15),t(5;17)",
    "46": "46,XY,t(9;22)", "47": "45,XY,-22,t(9;22)", "48": "43,XY,-5,-12,-16,-17,+9,t(9;22)",
    "49": "45,XY,-20,t(9;22)",
    "50": "43,X,-5,-6,-14,-21,+2,+18,ins(11;8),t(5;16),t(7;16),t(9;14),t(14;15),t(5;17)",
    "51": "42,X,-5,-14,-21,-21,+18,ins(11;8),t(5;16),t(7;16),t(9;14),t(14;15),t(5;17)",
    "52": "46,XX,t(4;9)", "53": "46,XY,t(1;7)", "54": "46,XX,t(X;4)", "55": "45,XX,-11,t(X;4)", "56": "44,X,-6",
    "57": "45,XX,-21,t(X;4)", "58": "44,XX,-14,-21,t(X;4)", "59": "46,XY,t(3;13),t(8;3),t(16;8)",
    "60": "47,XY,+?13,t(3;13),t(8;3),t(16;8)", "61": "45,XY,-5,t(3;13),t(8;3),t(16;8)",
    "62": "45,XY,-18,-22,t(7;8),t(9;10),t(11;20),t(15;18),+t(20;5)",
    "63": "44,XY,-4,-18,-22,t(7;8),t(9;10),t(11;20),t(15;18),+t(20;5)",
    "64": "46,XY,-18,t(7;8),t(9;10),t(11;20),t(15;18),+t(20;5)",
}
DIR_RE = re.compile(r"^([APV]\d\d)__(\w\w)$")
OVERLAP = 255
SPLITS = ("train", "val", "test")


def iscn_of_code(code):
    if code not in KARYOTYPE_CODES:
        raise KeyError(f"unknown ADIR karyotype code {code!r}")
    return KARYOTYPE_CODES[code]


def expected_counts(karyotype):
    """Per-class copy numbers when the karyotype is purely numerical, else None."""
    if not karyotype:
        return None
    try:
        return parse_karyotype(karyotype)
    except ValueError:
        return None


def _split_touching(comp: np.ndarray):
    """Split a component mask in two with a distance-transform watershed (None if not convincing)."""
    m = comp.astype(np.uint8)
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    for frac in (0.7, 0.6, 0.5, 0.4):
        n, seeds = cv2.connectedComponents((dist > frac * dist.max()).astype(np.uint8))
        if n - 1 == 2:
            break
    else:
        return None
    markers = seeds.astype(np.int32)
    markers[m == 0] = 0
    unknown = (m > 0) & (seeds == 0)
    markers[unknown] = 0
    rgb = cv2.cvtColor((255 - np.clip(dist * 255 / max(dist.max(), 1e-6), 0, 255)).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    markers[m == 0] = 3  # background marker
    cv2.watershed(rgb, markers)
    parts = [(markers == k) & (m > 0) for k in (1, 2)]
    # watershed lines (-1) and the component's outer rim: give each such pixel to the nearest part
    rest = (m > 0) & ~parts[0] & ~parts[1]
    if rest.any():
        d0 = cv2.distanceTransform((~parts[0]).astype(np.uint8), cv2.DIST_L2, 3)
        d1 = cv2.distanceTransform((~parts[1]).astype(np.uint8), cv2.DIST_L2, 3)
        parts = [parts[0] | (rest & (d0 <= d1)), parts[1] | (rest & (d0 > d1))]
    area = m.sum()
    if min(p.sum() for p in parts) < 0.2 * area:
        return None
    return parts


def boxes_from_labels(K: np.ndarray, min_area: int = 40, expected=None, split_touching=True):
    """Boxes (XYXY) and class indices from an ADIR label image; returns (anns, stats Counter)."""
    st = Counter()
    over = (K == OVERLAP)
    st["overlap_pixels"] = int(over.sum())
    n_over, over_lab = cv2.connectedComponents(over.astype(np.uint8), connectivity=8)
    touching = defaultdict(set)  # class -> overlap component ids touching it
    if n_over > 1:
        kernel = np.ones((3, 3), np.uint8)
        for j in range(1, n_over):
            comp = (over_lab == j).astype(np.uint8)
            rim = (cv2.dilate(comp, kernel) > 0) & (comp == 0)
            for c in np.unique(K[rim]):
                if 1 <= c <= 24:
                    touching[int(c)].add(j)
            if not any(j in s for s in touching.values()):
                st["overlap_regions_without_class"] += 1
    anns = []
    for c in range(1, 25):
        mask = K == c
        if touching.get(c):
            mask = mask | np.isin(over_lab, list(touching[c]))
        if not mask.any():
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        comps = []
        for j in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[j])
            if area < min_area:
                st["dropped_fragments"] += 1
                st["dropped_fragment_pixels"] += area
                continue
            comps.append((area, j, (x, y, x + w, y + h)))
        want = expected.get(CLASS_NAMES[c - 1]) if expected else None
        if split_touching and want and len(comps) < want and comps:
            comps.sort(reverse=True)
            area, j, (x0, y0, x1, y1) = comps[0]
            parts = _split_touching(lab[y0:y1, x0:x1] == j)
            if parts is not None:
                comps = comps[1:]
                for p in parts:
                    rows, cols = np.flatnonzero(p.any(1)), np.flatnonzero(p.any(0))
                    comps.append((int(p.sum()), -1, (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)))
                st["split_touching_homologues"] += 1
        for _, _, (x0, y0, x1, y1) in sorted(comps, key=lambda t: t[2]):
            anns.append({"bbox": [float(x0), float(y0), float(x1), float(y1)], "bbox_mode": 0,
                         "category_id": c - 1, "iscrowd": 0})
    return anns, st


def scan(src):
    items, report = [], Counter()
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src}: source folder not found")
    for d in sorted(os.listdir(src)):
        m = DIR_RE.match(d)
        if not m or not os.path.isdir(os.path.join(src, d)):
            continue
        slide, code = m.groups()
        for f in sorted(os.listdir(os.path.join(src, d))):
            if not f.endswith("D.tif"):
                continue
            stem = f[:-len("D.tif")]
            kf = os.path.join(src, d, stem + "K.tif")
            if not os.path.exists(kf):
                report["skipped_without_label_image"] += 1
                continue
            items.append({"stem": stem, "slide": slide, "code": code, "dapi": os.path.join(src, d, f), "labels": kf})
    return items, report


def assign_splits(slides, seed, fractions):
    """Slide -> split. ``slides``: one entry per image. Slides are shuffled with ``seed``; val then
    test take whole slides until they hold their fraction of the images (at least one slide each)."""
    counts = Counter(slides)
    names = sorted(counts)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    total = sum(counts.values())
    out, filled = {}, Counter()
    targets = [("val", fractions[1] * total), ("test", fractions[2] * total)]
    for sl in order:
        for split, target in targets:
            if len(names) >= 3 and (filled[split] == 0 or filled[split] + counts[sl] / 2 <= target):
                if filled[split] < target:
                    out[sl] = split
                    filled[split] += counts[sl]
                    break
        else:
            out[sl] = "train"
    return out


def stretch(img, lo_pct=0.5, hi_pct=99.5):
    """Linear contrast stretch between two percentiles (used with ``--stretch``)."""
    lo, hi = np.percentile(img, [lo_pct, hi_pct])
    if hi <= lo:
        return img
    return np.clip(np.rint((img.astype(np.float32) - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def convert(item, out, split, min_area=40, split_touching=True, do_stretch=False):
    """One spread -> (dataset dict without image_id, stats)."""
    try:
        dapi = read_image(item["dapi"])
    except ImageError as e:
        return None, Counter({"unreadable_images": 1}), str(e)
    with Image.open(item["labels"]) as im:
        K = np.array(im)  # raw label values (palette indices), never through read_image
    if K.ndim != 2 or K.shape != dapi.shape:
        return None, Counter({"label_size_mismatch": 1}), f"{item['labels']}: label image {K.shape} does not match DAPI {dapi.shape}"
    karyotype = iscn_of_code(item["code"])
    anns, st = boxes_from_labels(K, min_area, expected_counts(karyotype), split_touching)
    fn = os.path.join(out, split, item["stem"] + ".png")
    img = 255 - dapi
    write_image(fn, stretch(img) if do_stretch else img)  # creates the folder
    rec = {"file_name": fn, "height": int(K.shape[0]), "width": int(K.shape[1]), "annotations": anns,
           "case_id": item["slide"]}
    if karyotype:
        rec["karyotype"] = karyotype
    return rec, st, None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True,
                   help="folder of the ADIR M-FISH set (<slide>__<code>/<img>D.tif and <img>K.tif)")
    p.add_argument("--out", required=True, help="output dataset folder (e.g. $DETECTRON2_DATASETS/mfish)")
    p.add_argument("--seed", type=int, default=0, help="seed of the slide split (default: 0)")
    p.add_argument("--split", default="0.7,0.15,0.15", help="train,val,test fractions of the slides")
    p.add_argument("--min-area", type=int, default=40,
                   help="drop label components smaller than this many pixels (default: 40)")
    p.add_argument("--no-split-touching", action="store_true",
                   help="do not split touching homologues (one component where two copies are expected)")
    p.add_argument("--limit", type=int, default=0, help="keep only N spreads (quick runs)")
    p.add_argument("--stretch", action="store_true",
                   help="stretch the inverted DAPI between its 0.5 and 99.5 percentiles (default: as stored)")
    a = p.parse_args(argv)
    fr = [float(v) for v in a.split.split(",")]
    out = os.path.abspath(a.out)
    items, report = scan(a.src)
    split_of = assign_splits([it["slide"] for it in items], a.seed, fr)
    by_split = defaultdict(list)
    for it in items:
        by_split[split_of[it["slide"]]].append(it)
    by_split = limit_per_split(by_split, a.limit, fr)
    summary = {"source": os.path.abspath(a.src), "seed": a.seed, "min_area": a.min_area, "splits": {}}
    total = Counter(report)
    for s in SPLITS:
        recs = []
        for it in by_split.get(s, []):
            rec, st, err = convert(it, out, s, a.min_area, not a.no_split_touching, a.stretch)
            total.update(st)
            if err:
                print("warning:", err, file=sys.stderr)
                continue
            if not rec["annotations"]:
                total["dropped_empty_spreads"] += 1
                continue
            rec["image_id"] = len(recs) + 1
            recs.append(rec)
        js = write_coco_json(recs, os.path.join(out, "annotations", f"{s}.json"), out,
                             info={"description": "ADIR M-FISH image set #1 (inverted DAPI), boxes from label images",
                                   "split": s, "seed": a.seed})
        slides = sorted({r["case_id"] for r in recs})
        summary["splits"][s] = {"images": len(recs), "slides": slides,
                                "chromosomes": sum(len(r["annotations"]) for r in recs)}
        print(f"{s:5s}: {len(recs):4d} images from slides {','.join(slides)} -> {js}")
    summary.update(dict(total))
    readme = os.path.join(a.src, "README-ADIR.md")
    if os.path.exists(readme):
        copy_file(readme, os.path.join(out, "README-ADIR.md"))
    atomic_write(os.path.join(out, "prepare_report.json"), json.dumps(summary, indent=1).encode("utf-8"))
    print(json.dumps({k: v for k, v in summary.items() if k != "splits"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
