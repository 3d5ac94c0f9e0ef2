#!/usr/bin/env python
"""Pascal VOC XML chromosome annotations -> COCO dataset (e.g. the Cell Image Library "24 chromosomes" set).

    python datasets/prepare_voc.py --src /path/to/voc --out $DETECTRON2_DATASETS/voc_chromosomes
        [--images-dir JPEGImages] [--ann-dir Annotations] [--splits-dir ImageSets/Main] [--seed 0]
        [--split 0.7,0.15,0.15] [--copy-images]

Input: ``<src>/<ann-dir>/*.xml`` (one per image, ``<filename>``, ``<size>``, ``<object><name>`` =
class, ``<bndbox>`` xmin, ymin, xmax, ymax) and images in ``<src>/<images-dir>/``. Class names go
through ``deepacc.karyotype.canonical_name`` (``1``..``22``, ``X``, ``Y``, ``chr7``, ``23``/``24``);
an unknown name stops the conversion with the file and the name.

Coordinates: VOC boxes are 1-based and inclusive; they are converted to 0-based pixel-edge XYXY
(``x0 = xmin - 1``, ``x1 = xmax``) and clipped to the image. Boxes that are empty after clipping
are dropped and counted.

Splits: ``<splits-dir>/{train,val,test}.txt`` when present (one image id per line), else a seeded
random split of the images by the ``--split`` fractions (no case information in VOC).
Images are referenced in place (``file_name`` relative to ``--out``), or copied with ``--copy-images``.
Output: ``<out>/annotations/{train,val,test}.json``.
"""
import argparse
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np

from deepacc.data.coco import write_coco_json
from deepacc.data.images import image_size
from deepacc.karyotype import CLASS_NAMES, canonical_name

SPLITS = ("train", "val", "test")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


class VOCError(ValueError):
    pass


def parse_voc_xml(path):
    """``(filename, width or None, height or None, [(class name, xmin, ymin, xmax, ymax)])``."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise VOCError(f"{path}: not valid XML ({e})") from None
    fn = (root.findtext("filename") or "").strip()
    size = root.find("size")
    w = int(float(size.findtext("width"))) if size is not None and size.findtext("width") else None
    h = int(float(size.findtext("height"))) if size is not None and size.findtext("height") else None
    objs = []
    for o in root.iter("object"):
        name = (o.findtext("name") or "").strip()
        try:
            name = canonical_name(name)
        except KeyError:
            raise VOCError(f"{path}: unknown chromosome class {name!r} in <object><name>") from None
        b = o.find("bndbox")
        if b is None:
            raise VOCError(f"{path}: <object> {name!r} without <bndbox>")
        try:
            vals = [float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise VOCError(f"{path}: <bndbox> of {name!r} needs numeric xmin, ymin, xmax, ymax") from None
        objs.append((name, *vals))
    return fn, w, h, objs


def _find_image(src, images_dir, stem, fn):
    cands = [os.path.join(src, images_dir, fn)] if fn else []
    cands += [os.path.join(src, images_dir, stem + e) for e in IMAGE_EXTS]
    for c in cands:
        if os.path.exists(c):
            return c
    return None


def convert(src, out, images_dir="JPEGImages", ann_dir="Annotations", splits_dir="ImageSets/Main", seed=0,
            fractions=(0.7, 0.15, 0.15), copy_images=False):
    ann_path = os.path.join(src, ann_dir)
    if not os.path.isdir(ann_path):
        raise FileNotFoundError(f"{ann_path}: annotation folder not found")
    out = os.path.abspath(out)
    stats = Counter()
    recs = {}
    for f in sorted(os.listdir(ann_path)):
        if not f.endswith(".xml"):
            continue
        stem = f[:-4]
        fn, w, h, objs = parse_voc_xml(os.path.join(ann_path, f))
        img = _find_image(src, images_dir, stem, fn)
        if img is None:
            raise VOCError(f"{os.path.join(ann_path, f)}: image {fn or stem} not found in {os.path.join(src, images_dir)}")
        ih, iw = image_size(img)
        if (w, h) != (None, None) and (w, h) != (iw, ih):
            stats["xml_size_differs_from_image"] += 1
        anns = []
        for name, x0, y0, x1, y1 in objs:
            x0, y0 = max(0.0, x0 - 1), max(0.0, y0 - 1)
            x1, y1 = min(float(iw), x1), min(float(ih), y1)
            if x1 <= x0 or y1 <= y0:
                stats["dropped_empty_boxes"] += 1
                continue
            anns.append({"bbox": [x0, y0, x1, y1], "bbox_mode": 0, "category_id": CLASS_NAMES.index(name), "iscrowd": 0})
        if not anns:
            stats["dropped_images_without_boxes"] += 1
            continue
        if copy_images:
            dst = os.path.join(out, "images", os.path.basename(img))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(img, dst)
            img = dst
        recs[stem] = {"file_name": os.path.abspath(img), "height": ih, "width": iw, "annotations": anns, "case_id": stem}
    split_of = {}
    sd = os.path.join(src, splits_dir)
    if all(os.path.exists(os.path.join(sd, f"{s}.txt")) for s in ("train", "val")):
        for s in SPLITS:
            p = os.path.join(sd, f"{s}.txt")
            if os.path.exists(p):
                for line in open(p):
                    if line.strip():
                        split_of[line.split()[0]] = s
    else:
        stems = sorted(recs)
        order = [stems[i] for i in np.random.default_rng(seed).permutation(len(stems))]
        n_val, n_test = int(round(fractions[1] * len(order))), int(round(fractions[2] * len(order)))
        for i, s in enumerate(order):
            split_of[s] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    paths = {}
    for s in SPLITS:
        rs = [recs[k] for k in sorted(recs) if split_of.get(k) == s]
        for i, r in enumerate(rs, 1):
            r["image_id"] = i
        paths[s] = write_coco_json(rs, os.path.join(out, "annotations", f"{s}.json"), out,
                                   info={"description": f"converted from VOC XML {os.path.abspath(src)}", "split": s})
        stats[f"{s}_images"] = len(rs)
    stats["unassigned_images"] = sum(1 for k in recs if k not in split_of)
    return paths, stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="folder of the VOC data set (annotations, images, split lists)")
    p.add_argument("--out", required=True, help="output dataset folder (e.g. $DETECTRON2_DATASETS/voc_chromosomes)")
    p.add_argument("--images-dir", default="JPEGImages", help="image folder, relative to --src (default: JPEGImages)")
    p.add_argument("--ann-dir", default="Annotations",
                   help="folder of the XML annotations, relative to --src (default: Annotations)")
    p.add_argument("--splits-dir", default="ImageSets/Main",
                   help="folder of the split lists {train,val,test}.txt, relative to --src; without train.txt "
                   "and val.txt there, a random split by --split (default: ImageSets/Main)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split (default: 0)")
    p.add_argument("--split", default="0.7,0.15,0.15",
                   help="train,val,test fractions of the random split (default: 0.7,0.15,0.15)")
    p.add_argument("--copy-images", action="store_true",
                   help="copy the images to <out>/images (default: reference them in place)")
    a = p.parse_args(argv)
    try:
        paths, stats = convert(a.src, a.out, a.images_dir, a.ann_dir, a.splits_dir, a.seed,
                               [float(v) for v in a.split.split(",")], a.copy_images)
    except (VOCError, FileNotFoundError) as e:
        print(f"prepare_voc: error: {e}", file=sys.stderr)
        return 1
    for s, pth in paths.items():
        print(f"{s:5s}: {stats[s + '_images']:4d} images -> {pth}")
    print(dict(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
