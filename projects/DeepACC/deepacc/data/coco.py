"""COCO json for metaphase datasets: validate, load into dataset dicts, write.

Dataset dicts follow Detectron2's standard format (see the project contract)::

    {"file_name": abs path, "height": H, "width": W, "image_id": int,
     "annotations": [{"bbox": [x0, y0, x1, y1], "bbox_mode": 0, "category_id": 0..23 or 25, "iscrowd": 0}],
     "karyotype": "46,XY" (optional), "case_id": "..." (optional),
     "annotation_complete": bool (optional), "annotation_kind": "agnostic"|"classes"|"mixed" (optional)}

Categories are matched **by name** (``"1"``..``"22"``, ``"X"``, ``"Y"``; aliases such as ``chr7``,
``23``/``24`` accepted through :func:`deepacc.karyotype.canonical_name`), never by id. A category
that names a chromosome without its identity (``chromosome``, ``chr``, ...:
:func:`deepacc.karyotype.is_agnostic_name`) is read as the class-agnostic core class
:data:`deepacc.karyotype.AGNOSTIC` (25, outside the 24 foreground classes 0..23 and background 24);
:func:`write_coco_json` writes it as category id 25 named ``chromosome``, only when an annotation
has it. An annotation's ``segmentation`` is written when the dataset dict has one (LabelMe
polygons) and is not read back (the detectors use boxes). Image entries may say
``annotation_complete`` (false: a partly annotated spread) and ``annotation_kind``; both are read
into the dataset dicts.

Every problem is reported as ``"<file>: <reason>"`` where ``<file>`` is the image concerned (or the
json file for problems of the json itself; the reason then names the entry, e.g. ``images[3]``).
:func:`validate_coco_json` returns the full list and never raises, whatever the file contains;
:func:`load_coco_json` (used in training) runs the same checks and raises a single
:class:`DatasetError` listing all of them. :func:`check_dataset_dicts` checks dataset dicts that are
already loaded (the trainers' check before the first iteration).

Image paths are confined to the image root: a ``file_name`` that leads outside it (``../x.png``, an
absolute path elsewhere) is a problem unless ``allow_outside_root=True`` is passed or the json
itself says ``"allow_outside_root": true`` at its top level (written by :func:`write_coco_json`
when it references images outside its root, e.g. ``datasets/prepare_voc.py`` without
``--copy-images``). The check is on the path's text; symbolic links are not resolved.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..fileio import atomic_write
from ..karyotype import AGNOSTIC, AGNOSTIC_NAME, CLASS_NAMES, canonical_name, is_agnostic_name, normalize_karyotype
from .images import ImageError, image_size, read_image

__all__ = [
    "Problem",
    "DatasetError",
    "format_problems",
    "default_image_root",
    "validate_coco_json",
    "load_coco_json",
    "check_dataset_dicts",
    "dicts_to_coco",
    "write_coco_json",
    "BOX_TOLERANCE",
    "ANNOTATION_KINDS",
    "AGNOSTIC_CATEGORY_ID",
    "category_index",
    "valid_class",
    "is_int",
    "is_finite_number",
    "short_repr",
]

#: A box may exceed the image border by at most this many pixels (floating point slack).
BOX_TOLERANCE = 1e-3
#: Values of an image's optional ``annotation_kind``.
ANNOTATION_KINDS = ("agnostic", "classes", "mixed")
#: COCO category id written for the class-agnostic class (the 24 named classes have ids 1..24).
AGNOSTIC_CATEGORY_ID = len(CLASS_NAMES) + 1
#: Optional image-entry keys carried between COCO json and dataset dicts.
_IMAGE_KEYS = ("karyotype", "case_id", "annotation_complete", "annotation_kind")


def category_index(name) -> int:
    """Core class of a COCO category name: 0..23 (aliases accepted) or :data:`AGNOSTIC` for a
    chromosome without identity; raises ``KeyError`` for anything else."""
    try:
        return CLASS_NAMES.index(canonical_name(name))
    except KeyError:
        if is_agnostic_name(name):
            return AGNOSTIC
        raise


def valid_class(c) -> bool:
    """A core class of a ground-truth annotation: 0..23 or :data:`AGNOSTIC`."""
    return is_int(c) and (0 <= c < len(CLASS_NAMES) or c == AGNOSTIC)


@dataclass(frozen=True)
class Problem:
    """One problem of a dataset: the file it concerns and the reason."""

    file: str
    reason: str
    image_id: Optional[int] = None

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


def format_problems(source: str, problems: Sequence[Problem], max_lines: int = 20) -> str:
    """One message listing ``problems`` of dataset ``source`` (the first ``max_lines``, then a count
    and the ``deepacc-data validate`` command that lists all of them)."""
    problems = list(problems)
    lines = [str(p) for p in problems[:max_lines]]
    more = len(problems) - len(lines)
    head = f"{len(problems)} problem(s) in dataset {source}"
    if len(problems) == 1:
        msg = f"{head}: {lines[0]}"
    else:
        msg = head + ":\n  " + "\n  ".join(lines)
    if more > 0:
        msg += f"\n  ... and {more} more (run `deepacc-data validate {source}` to list all)"
    return msg


class DatasetError(ValueError):
    """A dataset has problems; ``.problems`` lists all of them (message: :func:`format_problems`).
    ``.usable``: from :func:`load_coco_json`, the dataset dicts of the images that no problem names
    (``None`` when a problem concerns no image, e.g. one of the json itself)."""

    usable: Optional[List[Dict[str, Any]]] = None

    def __init__(self, source: str, problems: Sequence[Problem], max_lines: int = 20):
        self.source = str(source)
        self.problems = list(problems)
        super().__init__(format_problems(self.source, self.problems, max_lines))


def default_image_root(json_file: str) -> str:
    """Image root used when none is given: the parent of ``annotations/`` when the json lies in a
    folder named ``annotations`` (the layout written by ``datasets/prepare_*.py``), else the json's folder."""
    d = os.path.dirname(os.path.abspath(json_file))
    if os.path.basename(d) == "annotations":
        return os.path.dirname(d)
    return d


def is_int(v) -> bool:
    """An integer, not a bool (``True`` is an ``int`` to Python, never an id or a count here)."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_finite_number(v) -> bool:
    """A real number (not a bool) that is finite as a float: ``nan``, ``inf`` and integers beyond the
    float range are not."""
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:  # an integer beyond the float range
        return False


def _dim(v) -> bool:
    """A usable image height/width."""
    return is_int(v) and 0 < v < 2 ** 31


def _is_id(v) -> bool:
    """A usable (hashable, unambiguous) COCO id: an integer or a string."""
    return is_int(v) or isinstance(v, str)


def short_repr(v, n: int = 60) -> str:
    """``repr(v)``, cut to ``n`` characters (ending in ``...``): a value quoted in a problem message."""
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _inside(path: str, root: str) -> bool:
    """``path`` lies in ``root`` (compared as normalised absolute paths; links are not resolved)."""
    root = os.path.abspath(root)
    try:
        return os.path.commonpath([root, os.path.abspath(path)]) == root
    except ValueError:  # different drives
        return False


def _outside_reason(file_name: str, root: str) -> str:
    return (f"file_name {file_name!r} points outside the image root {os.path.abspath(root)} "
            f"(allow it with allow_outside_root=True or `deepacc-data validate --allow-outside-root`)")


def _image_check(path: str, decode: bool) -> Tuple[List[str], Optional[Tuple[int, int]]]:
    """Reasons why an image file is unusable, and its ``(height, width)`` when readable."""
    try:
        if decode:
            h, w = read_image(path).shape
        else:
            h, w = image_size(path)
        return [], (int(h), int(w))
    except ImageError as e:
        return [e.reason], None
    except Exception as e:  # read_image raises only ImageError; a safety net all the same
        return [f"unreadable image ({type(e).__name__}: {e})"], None


def _meta_problems(rec: Dict[str, Any]) -> List[str]:
    """Problems of the optional ``karyotype`` / ``case_id`` of an image entry or dataset dict."""
    out = []
    k = rec.get("karyotype")
    if k is not None:
        if not isinstance(k, str):
            out.append(f"karyotype {short_repr(k)} is not a string")
        elif k.strip():
            try:
                normalize_karyotype(k)
            except ValueError as e:
                out.append(str(e))
    c = rec.get("case_id")
    if c is not None and not _is_id(c):
        out.append(f"case_id {short_repr(c)} is not a string or an integer")
    c = rec.get("annotation_complete")
    if c is not None and not isinstance(c, bool):
        out.append(f"annotation_complete {short_repr(c)} is not true or false")
    c = rec.get("annotation_kind")
    if c is not None and c not in ANNOTATION_KINDS:
        out.append(f"annotation_kind {short_repr(c)} is not one of {', '.join(ANNOTATION_KINDS)}")
    return out


def _area_score_problems(a: Dict[str, Any], rec: Optional[Dict[str, Any]]) -> List[str]:
    """Problems of an annotation's optional ``area`` (a finite number >= 0, at most the image's
    ``W x H`` (+ :data:`BOX_TOLERANCE`): an area larger than the image is absurd) and ``score`` (a
    finite number: ground truth carries none, but a file that has one must not hide a nan)."""
    out = []
    if "area" in a and a["area"] is not None:
        v = a["area"]
        if not is_finite_number(v):
            out.append(f"area {short_repr(v)} is not a finite number")
        elif float(v) < 0:
            out.append(f"area {short_repr(v)} is negative")
        elif rec is not None and rec.get("height") is not None and rec.get("width") is not None \
                and float(v) > rec["height"] * rec["width"] * (1 + BOX_TOLERANCE):
            out.append(f"area {short_repr(v)} is larger than the {rec['width']}x{rec['height']} image")
    if "score" in a and a["score"] is not None and not is_finite_number(a["score"]):
        out.append(f"score {short_repr(a['score'])} is not a finite number")
    return out


def _read_json(json_file: str) -> Tuple[Any, List[Problem]]:
    """The parsed json, or ``None`` and the one problem that prevents reading it."""
    if not os.path.exists(json_file):
        return None, [Problem(json_file, "missing json file")]
    if os.path.isdir(json_file):
        return None, [Problem(json_file, "is a directory, not a json file")]
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        return None, [Problem(json_file, f"not valid json ({e})")]
    except RecursionError:
        return None, [Problem(json_file, "not valid json (nested too deeply)")]
    except OSError as e:
        return None, [Problem(json_file, f"cannot read the json file ({e.strerror or e})")]
    if not isinstance(data, dict):
        return None, [Problem(json_file, f"top level must be an object with images/annotations/categories, "
                                         f"got a {type(data).__name__}")]
    return data, []


def _check(json_file, image_root: Optional[str], check_images: str,
           allow_outside_root: bool = False) -> Tuple[List[Problem], List[Dict[str, Any]]]:
    """Shared worker: returns (problems, dataset dicts); never raises for any content of the file."""
    if check_images not in ("full", "header", "none"):
        raise ValueError(f"check_images must be 'full', 'header' or 'none', got {check_images!r}")
    json_file = os.fspath(json_file)
    data, problems = _read_json(json_file)
    if data is None:
        return problems, []
    root = os.path.abspath(os.fspath(image_root) if image_root is not None else default_image_root(json_file))

    def add(file, reason, image_id=None):
        problems.append(Problem(str(file), reason, image_id))

    lists = {}
    for key in ("images", "annotations", "categories"):
        v = data.get(key)
        if isinstance(v, list):
            lists[key] = v
        else:
            add(json_file, f"missing key {key!r}" if key not in data else
                f"{key!r} must be a list, got a {type(v).__name__}")
    marker = data.get("allow_outside_root", False)
    if not isinstance(marker, bool):
        add(json_file, f"'allow_outside_root' must be true or false, got {short_repr(marker)}")
        marker = False
    allow_outside_root = allow_outside_root or marker

    # categories -> core index, by name
    cat_map: Dict[Any, int] = {}
    for k, c in enumerate(lists.get("categories", [])):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            add(json_file, f"categories[{k}] must be an object with 'id' and 'name', got {short_repr(c)}")
            continue
        if not _is_id(c["id"]):
            add(json_file, f"categories[{k}]: id {short_repr(c['id'])} is not an integer or a string")
            continue
        if c["id"] in cat_map:
            add(json_file, f"duplicate category id {c['id']!r}")
            continue
        try:
            cat_map[c["id"]] = category_index(c["name"])
        except KeyError:
            add(json_file, f"unknown category name {short_repr(c['name'])} (id {c['id']!r}): expected 1..22, X, Y "
                           f"(aliases chr7, 23/24 for X/Y accepted) or {AGNOSTIC_NAME!r} (class-agnostic)")

    # images
    images: Dict[int, Dict[str, Any]] = {}
    where_of: Dict[int, str] = {}  # the file named in problems of an image's annotations
    for i, im in enumerate(lists.get("images", [])):
        if not isinstance(im, dict):
            add(json_file, f"images[{i}] must be an object with 'id' and 'file_name', got {short_repr(im)}")
            continue
        iid, fn = im.get("id"), im.get("file_name")
        entry = f"images[{i}]" + (f" (id {iid})" if is_int(iid) else "")
        if not is_int(iid):
            add(json_file, f"images[{i}]: " + ("missing 'id'" if "id" not in im
                                                else f"id {short_repr(iid)} is not an integer"))
        path = None
        if not isinstance(fn, str) or not fn.strip():
            add(json_file, f"{entry}: " + ("missing 'file_name'" if "file_name" not in im
                                            else f"file_name {short_repr(fn)} is not a non-empty string"))
        else:
            path = os.path.abspath(os.path.join(root, fn))
        where = path or json_file
        readable = path is not None
        if path is not None and not allow_outside_root and not _inside(path, root):
            add(json_file, f"{entry}: {_outside_reason(fn, root)}", iid if is_int(iid) else None)
            readable = False  # never touch a file outside the root
        iid = int(iid) if is_int(iid) else None
        duplicate = iid is not None and iid in images
        if duplicate:
            add(where, f"duplicate image id {iid} (also used by {where_of[iid]})", iid)
        h, w = im.get("height"), im.get("width")
        if h is not None and not _dim(h) or w is not None and not _dim(w):
            add(where, f"invalid height/width in json ({short_repr(h, 30)}, {short_repr(w, 30)}): "
                       f"must be positive integers", iid)
            h = w = None
        for reason in _meta_problems(im):
            add(where, reason, iid)
        if readable and (check_images != "none" or h is None or w is None):
            reasons, size = _image_check(path, check_images == "full")
            for reason in reasons:
                add(path, reason, iid)
            if size is not None and h is not None and w is not None and size != (h, w):
                add(path, f"size mismatch: json says {w}x{h} (WxH), image is {size[1]}x{size[0]}", iid)
            if (h is None or w is None) and size is not None:
                h, w = size
        if iid is None or duplicate:
            continue
        rec = {"file_name": path or "", "height": h, "width": w, "image_id": iid, "annotations": []}
        for k in _IMAGE_KEYS:
            if im.get(k) is not None:
                rec[k] = im[k]
        images[iid] = rec
        where_of[iid] = where

    # annotations
    ann_ids = set()
    referenced = set()  # images with at least one annotation (valid or not)
    for j, a in enumerate(lists.get("annotations", [])):
        if not isinstance(a, dict):
            add(json_file, f"annotations[{j}] must be an object, got {short_repr(a)}")
            continue
        aid, iid = a.get("id"), a.get("image_id")
        label = f"annotation {aid!r}" if _is_id(aid) else f"annotations[{j}]"
        rec = images.get(int(iid)) if is_int(iid) else None
        where = where_of[rec["image_id"]] if rec else json_file
        pid = rec["image_id"] if rec else None
        ok = True
        if aid is not None and not _is_id(aid):
            add(where, f"{label}: id {short_repr(aid)} is not an integer or a string", pid)
            ok = False
        elif aid is not None:
            if aid in ann_ids:
                add(where, f"duplicate annotation id {aid!r}", pid)
                ok = False
            ann_ids.add(aid)
        if not is_int(iid):
            add(json_file, f"{label}: " + ("missing 'image_id'" if "image_id" not in a
                                            else f"image_id {short_repr(iid)} is not an integer"))
            ok = False
        elif rec is None:
            if "images" in lists:  # else every annotation would say so
                add(json_file, f"{label} refers to unknown image id {iid!r}")
            ok = False
        else:
            referenced.add(rec["image_id"])
        cid = a.get("category_id")
        if "categories" not in lists:
            ok = False
        elif not _is_id(cid) or cid not in cat_map:
            add(where, f"{label}: unknown category id {short_repr(cid)}", pid)
            ok = False
        b = a.get("bbox")
        box = None
        if not isinstance(b, (list, tuple)) or len(b) != 4 or not all(is_finite_number(v) for v in b):
            add(where, f"{label}: bbox {short_repr(b)} must be 4 finite numbers [x, y, w, h]", pid)
            ok = False
        else:
            x, y, bw, bh = (float(v) for v in b)
            if bw < 0 or bh < 0:
                add(where, f"{label}: negative width or height in box {list(b)} (width/height must be > 0)", pid)
                ok = False
            elif bw == 0 or bh == 0:
                add(where, f"{label}: zero-area box {list(b)} (width/height must be > 0)", pid)
                ok = False
            elif rec is not None and rec["height"] is not None and rec["width"] is not None:
                H, W = rec["height"], rec["width"]
                t = BOX_TOLERANCE
                if x < -t or y < -t or x + bw > W + t or y + bh > H + t:
                    add(where, f"{label}: box outside the image: xywh {list(b)} vs image {W}x{H}", pid)
                    ok = False
            box = [x, y, x + bw, y + bh]
        for reason in _area_score_problems(a, rec):
            add(where, f"{label}: {reason}", pid)
            ok = False
        crowd = a.get("iscrowd", 0)
        if crowd is not None and not (isinstance(crowd, numbers.Integral) and crowd in (0, 1)):
            add(where, f"{label}: iscrowd {short_repr(crowd)} must be 0 or 1", pid)
            ok = False
        if ok:
            rec["annotations"].append({
                "bbox": box,
                "bbox_mode": 0,
                "category_id": cat_map[cid],
                "iscrowd": int(crowd or 0),
            })
    dicts: List[Dict[str, Any]] = []
    for iid, rec in images.items():
        if iid not in referenced and "annotations" in lists:
            add(where_of[iid], "image with no chromosome annotations (empty spread)", iid)
        dicts.append(rec)
    return problems, dicts


def validate_coco_json(json_file, image_root: Optional[str] = None, check_images: str = "full",
                       allow_outside_root: bool = False) -> List[Problem]:
    """Every problem of a dataset at once (empty list = valid); never raises for any file content.

    ``check_images``: ``"full"`` decodes every image (detects corrupt/truncated files),
    ``"header"`` reads headers only (missing files, unsupported formats, too large, size mismatches),
    ``"none"`` skips image files. ``allow_outside_root``: accept ``file_name`` values that lead
    outside the image root (see the module docstring).
    """
    if check_images not in ("full", "header", "none"):
        raise ValueError(f"check_images must be 'full', 'header' or 'none', got {check_images!r}")
    try:
        problems, _ = _check(json_file, image_root, check_images, allow_outside_root)
    except Exception as e:  # a bug of the checks must not end in a traceback either
        problems = [Problem(os.fspath(json_file), f"validation stopped by an internal error, please report it "
                                                  f"({type(e).__name__}: {e})")]
    return problems


def load_coco_json(json_file, image_root: Optional[str] = None, check_images: str = "header",
                   dataset_name: Optional[str] = None, allow_outside_root: bool = False) -> List[Dict[str, Any]]:
    """Load a COCO json into dataset dicts (contract format), sorted by image id.

    Runs the checks of :func:`validate_coco_json` (image headers only by default, for speed) and
    raises one :class:`DatasetError` listing **all** problems found.
    """
    problems, dicts = _check(json_file, image_root, check_images, allow_outside_root)
    dicts.sort(key=lambda d: d["image_id"])
    if problems:
        err = DatasetError(dataset_name or os.fspath(json_file), problems)
        # what DATASETS.SKIP_INVALID may train on: the images no problem names, when every problem names an
        # image (a bad box, area or score is one of its image); None when one concerns the json itself
        files = {d["file_name"] for d in dicts}
        bad = {p.file for p in problems}
        err.usable = [d for d in dicts if d["file_name"] not in bad] if bad <= files else None
        raise err
    return dicts


def check_dataset_dicts(dicts: Sequence[Dict[str, Any]], decode_images: bool = True,
                        image_root: Optional[str] = None, allow_outside_root: bool = False,
                        source: str = "dataset") -> List[Problem]:
    """Every problem of already-loaded dataset dicts (empty list = ready to use); never raises.

    Per dict: ``file_name`` a string naming an existing image (inside ``image_root`` when one is
    given, unless ``allow_outside_root``), at most :data:`~deepacc.data.images.MAX_IMAGE_PIXELS`,
    decoding completely (``decode_images=False``: header only), of the dict's ``height``/``width``
    (positive integers when present); ``image_id`` a unique integer; ``annotations`` a non-empty
    list of ``{"bbox": [x0, y0, x1, y1], "bbox_mode": 0, "category_id": 0..23 or 25 (AGNOSTIC),
    "iscrowd": 0/1}`` with finite, non-empty boxes inside the image (tolerance :data:`BOX_TOLERANCE`);
    ``karyotype`` readable by the evaluator; ``annotation_complete`` a bool and ``annotation_kind``
    one of :data:`ANNOTATION_KINDS` when present. ``source`` (a dataset name) names problems not tied to one image.
    Raise them with ``DatasetError(source, problems)``. Decoding the 364 G-band training images
    (1280x960 PNG) takes about 2 s.
    """
    problems: List[Problem] = []

    def add(file, reason, image_id=None):
        problems.append(Problem(str(file), reason, image_id))

    try:
        dicts = list(dicts)
    except Exception as e:
        return [Problem(source, f"the dataset must be a list of dicts, got {type(dicts).__name__} ({e})")]
    if not dicts:
        return [Problem(source, "the dataset has no images")]
    K = len(CLASS_NAMES)
    t = BOX_TOLERANCE
    seen: Dict[int, str] = {}
    for i, d in enumerate(dicts):
        entry = f"dataset dict [{i}]"
        if not isinstance(d, dict):
            add(source, f"{entry} is a {type(d).__name__}, not a dict")
            continue
        fn, iid = d.get("file_name"), d.get("image_id")
        pid = int(iid) if is_int(iid) else None
        path = fn if isinstance(fn, str) and fn.strip() else None
        where = path or source
        if path is None:
            add(source, f"{entry}: file_name {short_repr(fn)} is not a non-empty string", pid)
        if pid is None:
            add(where, f"{entry}: image_id {short_repr(iid)} is not an integer")
        elif pid in seen:  # a problem of the dataset, not of one image file
            add(source, f"duplicate image_id {pid}: {entry} ({where}) and {seen[pid]}", pid)
        else:
            seen[pid] = f"{entry} ({where})"
        h, w = d.get("height"), d.get("width")
        if (h is not None or w is not None) and not (_dim(h) and _dim(w)):
            add(where, f"invalid height/width ({short_repr(h, 30)}, {short_repr(w, 30)}): must be positive integers",
                pid)
            h = w = None
        for reason in _meta_problems(d):
            add(where, reason, pid)
        if path is not None:
            if image_root is not None and not allow_outside_root and not _inside(path, image_root):
                add(where, _outside_reason(fn, image_root), pid)
            else:
                reasons, size = _image_check(path, decode_images)
                for reason in reasons:
                    add(where, reason, pid)
                if size is not None and h is not None and size != (h, w):
                    add(where, f"size mismatch: the dataset says {w}x{h} (WxH), image is {size[1]}x{size[0]}", pid)
                if h is None and size is not None:
                    h, w = size
        anns = d.get("annotations")
        if not isinstance(anns, list):
            add(where, f"annotations {short_repr(anns)} must be a list", pid)
            continue
        if not anns:
            add(where, "image with no chromosome annotations (empty spread)", pid)
        for j, a in enumerate(anns):
            label = f"annotation [{j}]"
            if not isinstance(a, dict):
                add(where, f"{label} is a {type(a).__name__}, not a dict", pid)
                continue
            mode = a.get("bbox_mode", 0)
            if not (is_int(mode) and mode == 0):
                add(where, f"{label}: bbox_mode {short_repr(mode)} is not supported (only 0 = XYXY_ABS)", pid)
            b = a.get("bbox")
            if not isinstance(b, (list, tuple)) or len(b) != 4 or not all(is_finite_number(v) for v in b):
                add(where, f"{label}: bbox {short_repr(b)} must be 4 finite numbers [x0, y0, x1, y1]", pid)
            else:
                x0, y0, x1, y1 = (float(v) for v in b)
                if x1 < x0 or y1 < y0:
                    add(where, f"{label}: negative width or height in box {list(b)} (x1 > x0 and y1 > y0 "
                               f"needed)", pid)
                elif x1 == x0 or y1 == y0:
                    add(where, f"{label}: zero-area box {list(b)} (x1 > x0 and y1 > y0 needed)", pid)
                elif h is not None and (x0 < -t or y0 < -t or x1 > w + t or y1 > h + t):
                    add(where, f"{label}: box outside the image: xyxy {list(b)} vs image {w}x{h}", pid)
            c = a.get("category_id")
            if not valid_class(c):
                add(where, f"{label}: category_id {short_repr(c)} must be an integer 0..{K - 1} or {AGNOSTIC} "
                           f"(class-agnostic chromosome)", pid)
            crowd = a.get("iscrowd", 0)
            if crowd is not None and not (isinstance(crowd, numbers.Integral) and crowd in (0, 1)):
                add(where, f"{label}: iscrowd {short_repr(crowd)} must be 0 or 1", pid)
    return problems


def dicts_to_coco(dicts: Iterable[Dict[str, Any]], image_root: str, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Dataset dicts -> COCO dict (categories "1".."22","X","Y" with ids 1..24, plus "chromosome" with
    id 25 when an annotation has the class-agnostic class :data:`AGNOSTIC`; boxes XYWH, rounded to
    0.01 px at their corners; ``segmentation`` when the annotation has one; ``file_name`` relative
    to ``image_root``; ``"allow_outside_root": true`` when some image lies outside ``image_root``, so
    that the json loads without a flag)."""
    root = os.path.abspath(image_root)
    images, anns = [], []
    aid = 1
    outside = agnostic = False
    for d in dicts:
        outside = outside or not _inside(d["file_name"], root)
        fn = os.path.relpath(os.path.abspath(d["file_name"]), root).replace(os.sep, "/")
        im = {"id": int(d["image_id"]), "file_name": fn, "height": int(d["height"]), "width": int(d["width"])}
        for k in _IMAGE_KEYS:
            if d.get(k) is not None:
                im[k] = d[k]
        images.append(im)
        for a in d["annotations"]:
            if a.get("bbox_mode", 0) != 0:
                raise ValueError(f"{d['file_name']}: only bbox_mode 0 (XYXY_ABS) is supported when writing")
            c = a["category_id"]
            if not valid_class(c):
                raise ValueError(f"{d['file_name']}: category_id {c!r} is not a class 0..{len(CLASS_NAMES) - 1} "
                                 f"or {AGNOSTIC} (class-agnostic chromosome)")
            agnostic = agnostic or c == AGNOSTIC
            # round the corners, then take the size: x + w never exceeds a border the box touches
            x0, y0, x1, y1 = (round(float(v), 2) for v in a["bbox"])
            ann = {
                "id": aid, "image_id": int(d["image_id"]),
                "category_id": AGNOSTIC_CATEGORY_ID if c == AGNOSTIC else int(c) + 1,
                "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                "area": round((x1 - x0) * (y1 - y0), 2), "iscrowd": int(a.get("iscrowd", 0)),
            }
            if a.get("segmentation") is not None:
                ann["segmentation"] = [[round(float(v), 2) for v in poly] for poly in a["segmentation"]]
            anns.append(ann)
            aid += 1
    cats = [{"id": i + 1, "name": n, "supercategory": "chromosome"} for i, n in enumerate(CLASS_NAMES)]
    if agnostic:
        cats.append({"id": AGNOSTIC_CATEGORY_ID, "name": AGNOSTIC_NAME, "supercategory": "chromosome"})
    out: Dict[str, Any] = {}
    if info:
        out["info"] = info
    if outside:
        out["allow_outside_root"] = True
    out.update(images=images, annotations=anns, categories=cats)
    return out


def write_coco_json(dicts: Iterable[Dict[str, Any]], json_file: str, image_root: str,
                    info: Optional[Dict[str, Any]] = None) -> str:
    """Write dataset dicts as COCO json (deterministic formatting); returns the path."""
    data = dicts_to_coco(dicts, image_root, info)
    text = json.dumps(data, separators=(",", ":"), sort_keys=False) + "\n"
    atomic_write(json_file, text.encode("utf-8"))
    return json_file
