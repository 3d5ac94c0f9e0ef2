"""COCO json for metaphase datasets: validate, load into dataset dicts, write.

Dataset dicts follow Detectron2's standard format (see the project contract)::

    {"file_name": abs path, "height": H, "width": W, "image_id": int,
     "annotations": [{"bbox": [x0, y0, x1, y1], "bbox_mode": 0, "category_id": 0..23, "iscrowd": 0}],
     "karyotype": "46,XY" (optional), "case_id": "..." (optional)}

Categories are matched **by name** (``"1"``..``"22"``, ``"X"``, ``"Y"``; aliases such as ``chr7``,
``23``/``24`` accepted through :func:`deepacc.karyotype.canonical_name`), never by id.

Every problem is reported as ``"<file>: <reason>"`` where ``<file>`` is the image concerned (or the
json file for problems of the json itself). :func:`validate_coco_json` returns the full list;
:func:`load_coco_json` (used in training) runs the same checks and raises a single
:class:`DatasetError` listing all of them.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ..fileio import atomic_write
from ..karyotype import CLASS_NAMES, canonical_name
from .images import ImageError, image_size, read_image

__all__ = [
    "Problem",
    "DatasetError",
    "default_image_root",
    "validate_coco_json",
    "load_coco_json",
    "dicts_to_coco",
    "write_coco_json",
    "BOX_TOLERANCE",
]

#: A box may exceed the image border by at most this many pixels (floating point slack).
BOX_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Problem:
    """One problem of a dataset: the file it concerns and the reason."""

    file: str
    reason: str
    image_id: Optional[int] = None

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


class DatasetError(ValueError):
    """A dataset has problems; ``.problems`` lists all of them."""

    def __init__(self, source: str, problems: Sequence[Problem], max_lines: int = 20):
        self.source = str(source)
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[:max_lines]]
        more = len(self.problems) - len(lines)
        head = f"{len(self.problems)} problem(s) in dataset {self.source}"
        if len(self.problems) == 1:
            msg = f"{head}: {lines[0]}"
        else:
            msg = head + ":\n  " + "\n  ".join(lines)
        if more > 0:
            msg += f"\n  ... and {more} more (run `deepacc-data validate {self.source}` to list all)"
        super().__init__(msg)


def default_image_root(json_file: str) -> str:
    """Image root used when none is given: the parent of ``annotations/`` when the json lies in a
    folder named ``annotations`` (the layout written by ``datasets/prepare_*.py``), else the json's folder."""
    d = os.path.dirname(os.path.abspath(json_file))
    if os.path.basename(d) == "annotations":
        return os.path.dirname(d)
    return d


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_json(json_file: str) -> Dict[str, Any]:
    if not os.path.exists(json_file):
        raise DatasetError(json_file, [Problem(json_file, "missing json file")])
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(json_file, [Problem(json_file, f"not valid json ({e})")]) from None
    if not isinstance(data, dict):
        raise DatasetError(json_file, [Problem(json_file, "top level must be an object with images/annotations/categories")])
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DatasetError(json_file, [Problem(json_file, f"missing or non-list key(s): {', '.join(missing)}")])
    return data


def _check(json_file: str, image_root: Optional[str], check_images: str, stop_at_first: bool):
    """Shared worker: returns (problems, dataset dicts)."""
    if check_images not in ("full", "header", "none"):
        raise ValueError(f"check_images must be 'full', 'header' or 'none', got {check_images!r}")
    json_file = os.fspath(json_file)
    data = _read_json(json_file)
    root = os.fspath(image_root) if image_root is not None else default_image_root(json_file)
    problems: List[Problem] = []

    class _Stop(Exception):
        pass

    def add(file, reason, image_id=None):
        problems.append(Problem(str(file), reason, image_id))
        if stop_at_first:
            raise _Stop

    dicts: List[Dict[str, Any]] = []
    try:
        # categories -> core index, by name
        cat_map: Dict[Any, int] = {}
        for c in data["categories"]:
            if not isinstance(c, dict) or "id" not in c or "name" not in c:
                add(json_file, f"category entry {c!r} needs 'id' and 'name'")
                continue
            if c["id"] in cat_map:
                add(json_file, f"duplicate category id {c['id']!r}")
                continue
            try:
                cat_map[c["id"]] = CLASS_NAMES.index(canonical_name(c["name"]))
            except KeyError:
                add(json_file, f"unknown category name {c['name']!r} (id {c['id']!r}): expected 1..22, X, Y "
                               f"(aliases chr7, 23/24 for X/Y accepted)")
        # images
        images: Dict[Any, Dict[str, Any]] = {}
        for im in data["images"]:
            if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                add(json_file, f"image entry {str(im)[:80]!r} needs 'id' and 'file_name'")
                continue
            iid = im["id"]
            path = os.path.join(root, im["file_name"])
            if not isinstance(iid, int) or isinstance(iid, bool):
                add(path, f"image id {iid!r} is not an integer")
                continue
            if iid in images:
                add(path, f"duplicate image id {iid} (also used by {images[iid]['file_name']})", iid)
                continue
            h, w = im.get("height"), im.get("width")
            if h is not None and (not isinstance(h, int) or h <= 0) or w is not None and (not isinstance(w, int) or w <= 0):
                add(path, f"invalid height/width in json ({h!r}, {w!r})", iid)
                h = w = None
            if check_images != "none" or h is None or w is None:
                try:
                    if check_images == "full":
                        ah, aw = read_image(path).shape
                    else:
                        ah, aw = image_size(path)
                except ImageError as e:
                    add(path, e.reason, iid)
                    ah = aw = None
                if ah is not None and h is not None and (ah, aw) != (h, w):
                    add(path, f"size mismatch: json says {w}x{h} (WxH), image is {aw}x{ah}", iid)
                if h is None or w is None:
                    h, w = ah, aw
            rec = {"file_name": os.path.abspath(path), "height": h, "width": w, "image_id": iid, "annotations": []}
            for k in ("karyotype", "case_id"):
                if im.get(k) is not None:
                    rec[k] = im[k]
            images[iid] = rec
        # annotations
        ann_ids = set()
        for a in data["annotations"]:
            if not isinstance(a, dict):
                add(json_file, f"annotation entry {str(a)[:80]!r} is not an object")
                continue
            iid = a.get("image_id")
            rec = images.get(iid)
            where = rec["file_name"] if rec else json_file
            aid = a.get("id")
            label = f"annotation {aid!r}"
            if aid is not None:
                if aid in ann_ids:
                    add(where, f"duplicate annotation id {aid!r}", iid)
                    continue
                ann_ids.add(aid)
            if rec is None:
                add(json_file, f"{label} refers to unknown image id {iid!r}")
                continue
            cid = a.get("category_id")
            if cid not in cat_map:
                add(where, f"{label}: unknown category id {cid!r}", iid)
                continue
            b = a.get("bbox")
            if not isinstance(b, (list, tuple)) or len(b) != 4 or not all(_num(v) for v in b):
                add(where, f"{label}: bbox {b!r} must be 4 finite numbers [x, y, w, h]", iid)
                continue
            x, y, bw, bh = (float(v) for v in b)
            if bw <= 0 or bh <= 0:
                add(where, f"{label}: zero-area box {list(b)} (width/height must be > 0)", iid)
                continue
            H, W = rec["height"], rec["width"]
            if H is not None and W is not None:
                t = BOX_TOLERANCE
                if x < -t or y < -t or x + bw > W + t or y + bh > H + t:
                    add(where, f"{label}: box outside the image: xywh {list(b)} vs image {W}x{H}", iid)
                    continue
            rec["annotations"].append({
                "bbox": [x, y, x + bw, y + bh],
                "bbox_mode": 0,
                "category_id": cat_map[cid],
                "iscrowd": int(a.get("iscrowd", 0) or 0),
            })
        for iid, rec in images.items():
            if not rec["annotations"]:
                add(rec["file_name"], "image with no chromosome annotations (empty spread)", iid)
            dicts.append(rec)
    except _Stop:
        pass
    return problems, dicts


def validate_coco_json(json_file, image_root: Optional[str] = None, check_images: str = "full") -> List[Problem]:
    """Every problem of a dataset at once (empty list = valid).

    ``check_images``: ``"full"`` decodes every image (detects corrupt/truncated files),
    ``"header"`` reads headers only (missing files, unsupported formats, size mismatches),
    ``"none"`` skips image files.
    """
    try:
        problems, _ = _check(json_file, image_root, check_images, stop_at_first=False)
    except DatasetError as e:
        return e.problems
    return problems


def load_coco_json(json_file, image_root: Optional[str] = None, check_images: str = "header",
                   dataset_name: Optional[str] = None) -> List[Dict[str, Any]]:
    """Load a COCO json into dataset dicts (contract format), sorted by image id.

    Runs the checks of :func:`validate_coco_json` (image headers only by default, for speed) and
    raises one :class:`DatasetError` listing **all** problems found.
    """
    problems, dicts = _check(json_file, image_root, check_images, stop_at_first=False)
    if problems:
        raise DatasetError(dataset_name or os.fspath(json_file), problems)
    dicts.sort(key=lambda d: d["image_id"])
    return dicts


def dicts_to_coco(dicts: Iterable[Dict[str, Any]], image_root: str, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Dataset dicts -> COCO dict (categories "1".."22","X","Y" with ids 1..24; boxes XYWH;
    ``file_name`` relative to ``image_root``)."""
    root = os.path.abspath(image_root)
    images, anns = [], []
    aid = 1
    for d in dicts:
        fn = os.path.relpath(os.path.abspath(d["file_name"]), root).replace(os.sep, "/")
        im = {"id": int(d["image_id"]), "file_name": fn, "height": int(d["height"]), "width": int(d["width"])}
        for k in ("karyotype", "case_id"):
            if d.get(k) is not None:
                im[k] = d[k]
        images.append(im)
        for a in d["annotations"]:
            if a.get("bbox_mode", 0) != 0:
                raise ValueError(f"{d['file_name']}: only bbox_mode 0 (XYXY_ABS) is supported when writing")
            x0, y0, x1, y1 = (float(v) for v in a["bbox"])
            anns.append({
                "id": aid, "image_id": int(d["image_id"]), "category_id": int(a["category_id"]) + 1,
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round((x1 - x0) * (y1 - y0), 2), "iscrowd": int(a.get("iscrowd", 0)),
            })
            aid += 1
    cats = [{"id": i + 1, "name": n, "supercategory": "chromosome"} for i, n in enumerate(CLASS_NAMES)]
    out: Dict[str, Any] = {}
    if info:
        out["info"] = info
    out.update(images=images, annotations=anns, categories=cats)
    return out


def write_coco_json(dicts: Iterable[Dict[str, Any]], json_file: str, image_root: str,
                    info: Optional[Dict[str, Any]] = None) -> str:
    """Write dataset dicts as COCO json (deterministic formatting); returns the path."""
    data = dicts_to_coco(dicts, image_root, info)
    text = json.dumps(data, separators=(",", ":"), sort_keys=False) + "\n"
    atomic_write(json_file, text.encode("utf-8"))
    return json_file
