"""``deepacc-data``: validate, inspect and generate metaphase datasets.

    deepacc-data validate <dataset name | json> [--image-root DIR] [--quick] [--allow-outside-root]
    deepacc-data stats <dataset name | json> [--image-root DIR] [--json]
    deepacc-data synth --out DIR -n N [--seed S] [--batch shifted] [--split train] [--size 1600x1200] [--workers W]
    deepacc-data overlay <dataset name | json> --out DIR [-n N] [--image-root DIR]
    deepacc-data list

``validate`` exits 0 when the dataset is valid, 1 when it has problems (each listed on its own line
as ``<file>: <reason>``) and 2 on a usage error (unknown dataset name, missing file).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Any, Dict, List, Optional

import numpy as np

from ..karyotype import AGNOSTIC, AGNOSTIC_NAME, CLASS_NAMES


def _load(target: str, image_root: Optional[str], allow_outside_root: bool = False) -> List[Dict[str, Any]]:
    from ..data import catalog
    from ..data.coco import load_coco_json

    if target.endswith(".json") or os.path.isfile(target):
        return load_coco_json(target, image_root, check_images="none", allow_outside_root=allow_outside_root)
    return catalog.get_dataset_dicts(target)


class _UsageError(Exception):
    """A target that names neither a readable json file nor a registered dataset (exit code 2)."""


#: Summary kinds of ``validate``: (text found in the reason, label), first match wins.
_PROBLEM_KINDS = (
    ("missing file", "missing image file"), ("more than the maximum", "image too large"),
    ("larger than the maximum", "image too large"), ("truncated", "corrupt or truncated image"),
    ("corrupt", "corrupt or truncated image"), ("unsupported", "unsupported image format"),
    ("size mismatch", "size mismatch"), ("outside the image root", "file_name outside the image root"),
    ("box outside the image", "box outside the image"), ("zero-area", "zero-area box"),
    ("negative width or height", "negative width or height"), ("bbox", "malformed box"),
    (": area ", "non-finite or absurd area"), (": score ", "non-finite score"),
    ("duplicate image id", "duplicate image id"), ("duplicate annotation id", "duplicate annotation id"),
    ("unknown category", "unknown category"), ("unknown image id", "annotation of an unknown image"),
    ("no chromosome", "empty spread"), ("karyotype", "unreadable karyotype"), ("not valid json", "not valid json"),
    ("missing json", "missing json file"), ("height/width", "invalid height/width"),
    ("is not an integer", "malformed entry"), ("is not a non-empty string", "malformed entry"),
    ("must be an object", "malformed entry"), ("must be a list", "malformed entry"), ("missing '", "malformed entry"),
    ("is not a string", "malformed entry"), ("must be 0 or 1", "malformed entry"),
)


def _validate_target(a):
    """(problems, what was checked, images, chromosomes) of ``a.target``; raises :class:`_UsageError`."""
    from ..data import catalog
    from ..data.coco import DatasetError, Problem, check_dataset_dicts, load_coco_json, validate_coco_json

    target, mode = a.target, "header" if a.quick else "full"
    json_file, root, allow = None, a.image_root, a.allow_outside_root
    if os.path.isfile(target):
        json_file = target
    elif target in catalog.list_datasets():
        meta = catalog.get_metadata(target)
        json_file = meta.get("json_file")
        root = root if root is not None else meta.get("image_root")
        allow = allow or bool(meta.get("allow_outside_root", False))
        if json_file and not os.path.exists(json_file):
            try:  # generated on first use (quick synthetic splits), else a named DatasetNotPreparedError
                catalog.get_dataset_dicts(target)
            except catalog.DatasetNotPreparedError as e:
                raise _UsageError(str(e)) from None
            except DatasetError:
                pass  # its problems are listed below
            if not os.path.exists(json_file):
                raise _UsageError(f"dataset {target!r}: {json_file}: no such file")
        if not json_file:  # a dataset registered with a function: check what it returns
            try:
                dicts = catalog.get_dataset_dicts(target)
            except DatasetError as e:
                return e.problems, target, 0, 0
            except Exception as e:
                return [Problem(target, f"the dataset's function failed ({type(e).__name__}: {e})")], target, 0, 0
            problems = check_dataset_dicts(dicts, decode_images=not a.quick, image_root=a.image_root,
                                           allow_outside_root=allow, source=target)
            return problems, target, len(dicts), sum(len(d.get("annotations") or []) for d in dicts
                                                     if isinstance(d, dict))
    elif os.path.isdir(target):
        raise _UsageError(f"{target}: is a directory; give a COCO json file or a registered dataset name")
    elif target.endswith(".json") or os.sep in target:
        raise _UsageError(f"{target}: no such file")
    else:
        raise _UsageError(f"{target!r} is neither a COCO json file nor a registered dataset name "
                          f"(registered: {', '.join(catalog.list_datasets())}; `deepacc-data list` shows them)")
    problems = validate_coco_json(json_file, root, check_images=mode, allow_outside_root=allow)
    if problems:
        return problems, json_file, 0, 0
    dicts = load_coco_json(json_file, root, check_images="none", allow_outside_root=allow)
    return [], json_file, len(dicts), sum(len(d["annotations"]) for d in dicts)


def cmd_validate(a) -> int:
    try:
        problems, checked, n_images, n_chrom = _validate_target(a)
    except _UsageError as e:
        print(f"deepacc-data validate: error: {e}", file=sys.stderr)
        return 2
    name = a.target if checked == a.target else f"{a.target} ({checked})"
    if problems:
        for p in problems:
            print(p)
        kinds = Counter(next((label for key, label in _PROBLEM_KINDS if key in p.reason), "other") for p in problems)
        print(f"\nINVALID: {len(problems)} problem(s) in {name}", file=sys.stderr)
        for k, n in kinds.most_common():
            print(f"  {n:6d}  {k}", file=sys.stderr)
        return 1
    print(f"OK: {name}: {n_images} images, {n_chrom} chromosomes, no problems")
    note = _outside_root_note(checked)
    if note:
        print(note, file=sys.stderr)
    return 0


def _outside_root_note(json_file: str) -> Optional[str]:
    """A json that opts in to images outside its root says so itself: tell the user, with the count."""
    from ..data.coco import default_image_root

    if not (isinstance(json_file, str) and json_file.endswith(".json") and os.path.isfile(json_file)):
        return None
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and data.get("allow_outside_root") is True):
        return None
    root = os.path.abspath(default_image_root(json_file))
    outside = [im.get("file_name") for im in data.get("images", []) if isinstance(im, dict)
               and isinstance(im.get("file_name"), str)
               and not os.path.abspath(os.path.join(root, im["file_name"])).startswith(root + os.sep)]
    return (f"note: {json_file} declares \"allow_outside_root\": true; {len(outside)} image(s) are read from "
            f"outside {root} (e.g. {outside[0]!r}): check that you trust where they point"
            if outside else None)


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
            c = an["category_id"]
            per_class[AGNOSTIC_NAME if c == AGNOSTIC else CLASS_NAMES[c]] += 1
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
        "per_class": {n: per_class.get(n, 0)
                      for n in CLASS_NAMES + ((AGNOSTIC_NAME,) if per_class[AGNOSTIC_NAME] else ())},
        "per_image": q(per_image), "box_width": q(widths), "box_height": q(heights), "box_long_side": q(longs),
        "karyotypes": dict(karyo.most_common()),
    }


def cmd_stats(a) -> int:
    s = compute_stats(_load(a.target, a.image_root, a.allow_outside_root))
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
    from ..data.images import read_image
    from ..data.draw import draw_annotations
    from ..fileio import write_image

    dicts = _load(a.target, a.image_root, a.allow_outside_root)[: a.num]
    os.makedirs(a.out, exist_ok=True)
    for d in dicts:
        img = draw_annotations(read_image(d["file_name"]), d["annotations"], scale=a.scale)
        out = os.path.join(a.out, f"{d['image_id']:06d}_overlay.png")
        write_image(out, img)
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
    root_help = ("folder that file_name values are relative to (default: the registered image root, else the parent "
                 "of annotations/ or the json's folder)")
    outside_help = "accept file_name values that lead outside the image root (../x.png, absolute paths elsewhere)"
    v = sub.add_parser("validate", help="list EVERY problem of a dataset; exit 0 valid, 1 problems, 2 usage error")
    v.add_argument("target", help="registered dataset name (see `deepacc-data list`) or COCO json path")
    v.add_argument("--image-root", default=None, help=root_help)
    v.add_argument("--quick", action="store_true", help="read image headers only (skip full decoding)")
    v.add_argument("--allow-outside-root", action="store_true", help=outside_help)
    v.set_defaults(func=cmd_validate)
    s = sub.add_parser("stats", help="images, chromosomes per class/image, box sizes, karyotypes")
    s.add_argument("target", help="registered dataset name or COCO json path")
    s.add_argument("--image-root", default=None, help=root_help + "; only with a json path")
    s.add_argument("--allow-outside-root", action="store_true", help=outside_help + "; only with a json path")
    s.add_argument("--json", action="store_true", help="print as json")
    s.set_defaults(func=cmd_stats)
    g = sub.add_parser("synth", help="generate synthetic spreads (COCO json + PNG)")
    g.add_argument("--out", required=True, help="output folder (images in <out>/<split>/, json in <out>/annotations/)")
    g.add_argument("-n", "--num", type=int, required=True, help="number of spreads to generate")
    g.add_argument("--seed", type=int, default=0, help="random seed (same arguments give identical files)")
    g.add_argument("--batch", default="default", help="batch-effect distribution: default, shifted")
    g.add_argument("--split", default="train", help="split name: images in <out>/<split>/, json <split>.json")
    g.add_argument("--size", default="1600x1200", help="image size WIDTHxHEIGHT")
    g.add_argument("--karyotype", action="append", help="repeatable; default: XX/XY mix with ~10%% aneuploidies")
    g.add_argument("--workers", type=int, default=1, help="worker processes for rendering")
    g.add_argument("--quiet", action="store_true", help="no progress output")
    g.set_defaults(func=cmd_synth)
    o = sub.add_parser("overlay", help="draw ground-truth boxes on the first N images")
    o.add_argument("target", help="registered dataset name or COCO json path")
    o.add_argument("--out", required=True, help="folder for the <image id>_overlay.png files")
    o.add_argument("-n", "--num", type=int, default=4, help="number of images to draw")
    o.add_argument("--scale", type=float, default=1.0, help="resize factor of the drawings")
    o.add_argument("--image-root", default=None, help=root_help + "; only with a json path")
    o.add_argument("--allow-outside-root", action="store_true", help=outside_help + "; only with a json path")
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
