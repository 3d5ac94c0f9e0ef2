"""``deepacc-data``: validate, inspect and generate metaphase datasets.

    deepacc-data validate <json> [--image-root DIR] [--quick]
    deepacc-data stats <dataset name | json> [--image-root DIR] [--json]
    deepacc-data synth --out DIR -n N [--seed S] [--batch shifted] [--split train] [--size 1600x1200] [--workers W]
    deepacc-data overlay <dataset name | json> --out DIR [-n N] [--image-root DIR]
    deepacc-data list
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Any, Dict, List, Optional

import numpy as np

from ..karyotype import CLASS_NAMES


def _load(target: str, image_root: Optional[str]) -> List[Dict[str, Any]]:
    from ..data import catalog
    from ..data.coco import load_coco_json

    if target.endswith(".json") or os.path.isfile(target):
        return load_coco_json(target, image_root, check_images="none")
    return catalog.get_dataset_dicts(target)


def cmd_validate(a) -> int:
    from ..data.coco import validate_coco_json

    problems = validate_coco_json(a.json, a.image_root, check_images="header" if a.quick else "full")
    if problems:
        for p in problems:
            print(p)
        keys = ("missing file", "corrupt", "truncated", "unsupported", "size mismatch", "outside the image",
                "zero-area", "duplicate image id", "duplicate annotation id", "unknown category", "no chromosome",
                "not valid json", "bbox")
        kinds = Counter(next((k for k in keys if k in p.reason), "other") for p in problems)
        print(f"\nINVALID: {len(problems)} problem(s) in {a.json}", file=sys.stderr)
        for k, n in kinds.most_common():
            print(f"  {n:6d}  {k}", file=sys.stderr)
        return 1
    with open(a.json, "r", encoding="utf-8") as f:
        data = json.load(f)
    print(f"OK: {a.json}: {len(data['images'])} images, {len(data['annotations'])} chromosomes, no problems")
    return 0


def compute_stats(dicts: List[Dict[str, Any]]) -> Dict[str, Any]:
    per_class = Counter()
    per_image = []
    widths, heights, longs = [], [], []
    karyo = Counter()
    sizes = Counter()
    for d in dicts:
        per_image.append(len(d["annotations"]))
        sizes[f"{d['width']}x{d['height']}"] += 1
        karyo[d.get("karyotype") or "(none)"] += 1
        for an in d["annotations"]:
            per_class[CLASS_NAMES[an["category_id"]]] += 1
            x0, y0, x1, y1 = an["bbox"]
            widths.append(x1 - x0)
            heights.append(y1 - y0)
            longs.append(max(x1 - x0, y1 - y0))

    def q(v):
        if not v:
            return {}
        v = np.asarray(v, float)
        return {"min": float(v.min()), "p5": float(np.percentile(v, 5)), "median": float(np.median(v)),
                "mean": round(float(v.mean()), 2), "p95": float(np.percentile(v, 95)), "max": float(v.max())}

    return {
        "images": len(dicts), "chromosomes": int(sum(per_image)),
        "image_sizes": dict(sizes.most_common()),
        "per_class": {n: per_class.get(n, 0) for n in CLASS_NAMES},
        "per_image": q(per_image), "box_width": q(widths), "box_height": q(heights), "box_long_side": q(longs),
        "karyotypes": dict(karyo.most_common()),
    }


def cmd_stats(a) -> int:
    s = compute_stats(_load(a.target, a.image_root))
    if a.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"dataset: {a.target}")
    print(f"images: {s['images']}   chromosomes: {s['chromosomes']}   sizes: {s['image_sizes']}")
    print("chromosomes per class:")
    items = list(s["per_class"].items())
    for i in range(0, len(items), 8):
        print("  " + "  ".join(f"{n:>2}:{c:6d}" for n, c in items[i:i + 8]))
    for key in ("per_image", "box_width", "box_height", "box_long_side"):
        v = s[key]
        if v:
            print(f"{key:14s} min {v['min']:.0f}  p5 {v['p5']:.0f}  median {v['median']:.0f}  mean {v['mean']:.1f}"
                  f"  p95 {v['p95']:.0f}  max {v['max']:.0f}")
    print("karyotypes:")
    for k, n in s["karyotypes"].items():
        print(f"  {n:6d}  {k}")
    return 0


def cmd_synth(a) -> int:
    from ..data.synthetic import generate_dataset

    try:
        w, h = (int(v) for v in a.size.lower().split("x"))
    except ValueError:
        print(f"--size {a.size!r}: expected WIDTHxHEIGHT such as 1600x1200", file=sys.stderr)
        return 2
    karyotypes = a.karyotype if a.karyotype else None
    path = generate_dataset(a.out, a.num, seed=a.seed, width=w, height=h, batch=a.batch, karyotypes=karyotypes,
                            workers=a.workers, progress=not a.quiet, split=a.split)
    print(path)
    return 0


def cmd_overlay(a) -> int:
    import cv2

    from ..data.images import read_image
    from ..data.overlay import draw_annotations

    dicts = _load(a.target, a.image_root)[: a.num]
    os.makedirs(a.out, exist_ok=True)
    for d in dicts:
        img = draw_annotations(read_image(d["file_name"]), d["annotations"], scale=a.scale)
        out = os.path.join(a.out, f"{d['image_id']:06d}_overlay.png")
        cv2.imwrite(out, img)
        print(out)
    return 0


def cmd_list(a) -> int:
    from ..data import catalog

    for n in catalog.list_datasets():
        m = catalog.get_metadata(n)
        ok = os.path.exists(m.get("json_file") or "")
        print(f"{n:28s} {'ready' if ok else 'missing':8s} {m.get('json_file')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepacc-data", description="Validate, inspect and generate DeepACC datasets.")
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="list EVERY problem of a COCO json dataset; exit 1 if any")
    v.add_argument("json")
    v.add_argument("--image-root", default=None, help="default: parent of annotations/ or the json's folder")
    v.add_argument("--quick", action="store_true", help="read image headers only (skip full decoding)")
    v.set_defaults(func=cmd_validate)
    s = sub.add_parser("stats", help="images, chromosomes per class/image, box sizes, karyotypes")
    s.add_argument("target", help="registered dataset name or COCO json path")
    s.add_argument("--image-root", default=None)
    s.add_argument("--json", action="store_true", help="print as json")
    s.set_defaults(func=cmd_stats)
    g = sub.add_parser("synth", help="generate synthetic spreads (COCO json + PNG)")
    g.add_argument("--out", required=True)
    g.add_argument("-n", "--num", type=int, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch", default="default", help="batch-effect distribution: default, shifted")
    g.add_argument("--split", default="train")
    g.add_argument("--size", default="1600x1200")
    g.add_argument("--karyotype", action="append", help="repeatable; default: XX/XY mix with ~10%% aneuploidies")
    g.add_argument("--workers", type=int, default=1)
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=cmd_synth)
    o = sub.add_parser("overlay", help="draw ground-truth boxes on the first N images")
    o.add_argument("target")
    o.add_argument("--out", required=True)
    o.add_argument("-n", "--num", type=int, default=4)
    o.add_argument("--scale", type=float, default=1.0)
    o.add_argument("--image-root", default=None)
    o.set_defaults(func=cmd_overlay)
    ls = sub.add_parser("list", help="registered datasets and whether their files exist")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except (KeyError, FileNotFoundError, ValueError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"deepacc-data {a.cmd}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
