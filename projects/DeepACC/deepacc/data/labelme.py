"""LabelMe annotations -> COCO dataset (the logic of ``datasets/prepare_labelme.py``).

    python datasets/prepare_labelme.py --src <folder of LabelMe json> --out $DETECTRON2_DATASETS/bioimlab
        [--seed 0] [--split 0.7,0.15,0.15] [--case-regex RE] [--complete-min 40]
        [--ignore-label nucleus] [--allow-outside-src] [--invert] [--max-lines N]

Input: every ``*.json`` file directly in ``--src`` (not in subfolders), each the annotation of one
spread as the LabelMe annotation tool writes it: ``shapes`` (a list of ``{"label", "points",
"shape_type", ...}``), ``imagePath``, ``imageData`` (the image file's bytes in base64, or null),
``imageHeight``, ``imageWidth``.

**Image**: decoded from ``imageData`` when it is present (not null, not empty), else read from
``imagePath``, relative to the json's folder (``\\`` separators of Windows are accepted). An
``imagePath`` that leads outside ``--src`` (``../x.jpg``, an absolute path elsewhere; compared as
normalised text, links not resolved) is refused unless ``--allow-outside-src``. The image is
converted to gray exactly as the training reads images (:func:`deepacc.data.images.read_image`:
RGB by BT.601 luma, 16-bit by its own min/max, the size limit) and written as an 8-bit PNG
``<out>/<split>/<json stem>.png``. Its polarity is kept as stored: fluorescence spreads (Q-banding,
DAPI; e.g. BioImLab) stay bright on dark unless ``--invert`` writes ``255 - gray`` (dark chromosomes
on light, like G-band images and ``datasets/prepare_mfish.py``'s output). ``imageHeight`` /
``imageWidth``, when present, must equal the decoded image's size.

**Shapes** (``shape_type``; a shape without one is a polygon, as in LabelMe):

* ``polygon`` with >= 3 points: the annotation's ``segmentation`` is the polygon, its box the
  tight XYXY box of the points;
* ``rectangle`` with 2 points (two opposite corners, in any order): the box, and as
  ``segmentation`` its 4-corner polygon.

LabelMe points are continuous image coordinates (pixel ``i`` spans ``[i, i + 1)``); they are kept
as they are, and clipped to the image (``0..W``, ``0..H``). Every other shape is skipped and named
with its file, its index (``shapes[3]``) and the reason: a ``circle``, ``line``, ``point`` or
``linestrip`` ("not an area"), an unknown ``shape_type``, too few points, malformed points,
non-finite coordinates (nan, inf), a coordinate far outside the image (more than
:data:`OUTSIDE_TOLERANCE` of the image's larger side beyond its border: points drawn just beyond
the border are clipped, farther ones mean a wrong coordinate system), a zero-area box after
clipping, a polygon whose points lie on one line, an unknown label.

**Labels**: a label that names one of the 24 classes (:func:`deepacc.karyotype.canonical_name`:
``1``, ``chr7``, ``X``, ``Chromosome 21``, ``23``/``24`` for X/Y) gets that class (core index
0..23); a label that names a chromosome without its identity
(:func:`deepacc.karyotype.is_agnostic_name`: ``chr``, ``chromosome``, ...) gets the class-agnostic
core index :data:`~deepacc.karyotype.AGNOSTIC` (25; COCO category ``chromosome``). Any other label
(``nucleus``, ``debris``) is skipped, named per shape and counted per label;
``--ignore-label NAME`` (repeatable, case-insensitive) silences labels known to be no chromosome:
those shapes are counted as ignored, and not listed as problems.

**Files**: a file that is not valid json, is no LabelMe annotation (no ``shapes`` list), has no
usable image (missing file, ``imageData`` that is not base64 or does not decode, a path outside
``--src``), or whose image size differs from ``imageHeight`` / ``imageWidth`` is skipped with its
reason; so is a file left without any chromosome shape, and a ``*.json`` entry that is no file (a
folder, a dangling link) is named the same way. One bad file never stops the conversion:
every problem is listed at the end and written to ``<out>/prepare_report.json``.

**Per image** (COCO image entry and dataset dict):

* ``annotation_complete``: ``true`` when the image keeps at least ``--complete-min`` (default
  :data:`COMPLETE_MIN` = 40) chromosome annotations, ``false`` below. A human metaphase holds about
  46 chromosomes; a spread annotated with fewer than 40 is taken as partly annotated (the BioImLab
  set has spreads with 2-39 polygons). The evaluator uses it to leave such spreads out of the
  per-spread count error; their boxes are still ground truth.
* ``annotation_kind``: ``"agnostic"`` when every annotation is class-agnostic, ``"classes"`` when
  every one names a class, ``"mixed"`` otherwise.

**Split**: reproducible and by file: each json is one spread, so the split groups are the json
stems, or, with ``--case-regex`` (its group 1, or the whole match, applied to the stem), the case
ids (a stem that does not match is its own group, noted in the report). The sorted groups are
shuffled by ``numpy.random.default_rng(seed).permutation`` (no hashing, independent of the file
system's order); the first ``round(val * n)`` groups go to val, the next ``round(test * n)`` to
test, the rest to train (fractions of the groups, normalised to sum 1). The groups are those of
**every** json file found, so a file that fails does not move the others.

Output: ``<out>/<split>/<stem>.png``, ``<out>/annotations/{train,val,test}.json`` (COCO as written
by :func:`deepacc.data.coco.write_coco_json`: categories ``1``..``22``, ``X``, ``Y`` with ids
1..24, plus ``chromosome`` id 25 when an annotation is class-agnostic; ``segmentation`` per
annotation) and ``<out>/prepare_report.json``. When no image converts, no annotation json is
written (the report is) and the command ends with exit status 2.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import numbers
import os
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..fileio import atomic_write
from ..karyotype import AGNOSTIC, AGNOSTIC_NAME, CLASS_NAMES, canonical_name, is_agnostic_name
from .coco import _inside, write_coco_json
from .images import ImageError, read_image

__all__ = [
    "LabelMeError",
    "COMPLETE_MIN",
    "OUTSIDE_TOLERANCE",
    "SPLITS",
    "label_class",
    "shape_annotation",
    "assign_splits",
    "convert_folder",
    "summary_lines",
]

SPLITS = ("train", "val", "test")
#: Fewer chromosome annotations than this: ``annotation_complete`` is false (``--complete-min``).
COMPLETE_MIN = 40
#: A point farther outside the image than this fraction of its larger side is a bad coordinate.
OUTSIDE_TOLERANCE = 0.05
#: LabelMe shape types that enclose no area we convert.
NOT_AREA = ("circle", "line", "point", "points", "linestrip")
#: Files named per unknown label in the report (the count is always complete).
MAX_FILES_NAMED = 20


class LabelMeError(ValueError):
    """A problem that stops the whole conversion (no source folder, no json file, no image converted);
    ``report`` is the written report when there is one (no image converted)."""

    def __init__(self, message: str, report: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.report = report


class _Skip(Exception):
    """One shape or file is skipped; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _short(v, n: int = 40) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def label_class(label) -> Optional[int]:
    """Core class of a LabelMe label: 0..23 for a named class, :data:`AGNOSTIC` for a chromosome
    without identity, ``None`` for anything else."""
    try:
        return CLASS_NAMES.index(canonical_name(label))
    except KeyError:
        pass
    return AGNOSTIC if is_agnostic_name(label) else None


def shape_annotation(shape: Dict[str, Any], width: int, height: int, cls: int) -> Dict[str, Any]:
    """The dataset-dict annotation of one LabelMe shape of class ``cls`` on a ``width`` x ``height``
    image; raises :class:`_Skip` with the reason when the shape is not a usable area."""
    return _shape(shape, width, height, cls)[0]


def _shape(shape: Dict[str, Any], width: int, height: int, cls: int) -> Tuple[Dict[str, Any], bool]:
    """:func:`shape_annotation` and whether a point had to be clipped to the image."""
    st = shape.get("shape_type")
    st = "polygon" if st is None else st
    if not isinstance(st, str):
        raise _Skip(f"shape_type {_short(st)} is not a string")
    if st in NOT_AREA:
        raise _Skip(f"shape_type {st!r} is not an area (only polygon and rectangle shapes are converted)")
    if st not in ("polygon", "rectangle"):
        raise _Skip(f"unknown shape_type {_short(st)} (only polygon and rectangle shapes are converted)")
    pts = shape.get("points")
    if not isinstance(pts, list):
        raise _Skip(f"points {_short(pts)} must be a list of [x, y] pairs")
    for k, p in enumerate(pts):
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_real(v) for v in p)):
            raise _Skip(f"malformed point {k}: {_short(p)} (expected [x, y] numbers)")
    need = 3 if st == "polygon" else 2
    if len(pts) < need:
        raise _Skip(f"too few points ({len(pts)}; a {st} needs {'at least 3' if need == 3 else '2'})")
    if st == "rectangle" and len(pts) != 2:
        raise _Skip(f"a rectangle needs 2 points (two opposite corners), got {len(pts)}")
    try:
        a = np.asarray(pts, dtype=np.float64)
    except OverflowError:  # an integer beyond the float range
        raise _Skip("non-finite coordinate (an integer beyond the float range)") from None
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _Skip(f"non-finite coordinate (nan/inf) in point {k}: {_short(pts[k])}")
    tol = OUTSIDE_TOLERANCE * max(width, height)
    out = (a[:, 0] < -tol) | (a[:, 0] > width + tol) | (a[:, 1] < -tol) | (a[:, 1] > height + tol)
    if out.any():
        k = int(np.flatnonzero(out)[0])
        raise _Skip(f"coordinate far outside the {width}x{height} image: point {k} "
                    f"({a[k, 0]:.6g}, {a[k, 1]:.6g})")
    clipped = bool(((a < 0) | (a > np.array([width, height], dtype=np.float64))).any())
    a[:, 0] = np.clip(a[:, 0], 0.0, float(width))
    a[:, 1] = np.clip(a[:, 1], 0.0, float(height))
    x0, y0 = float(a[:, 0].min()), float(a[:, 1].min())
    x1, y1 = float(a[:, 0].max()), float(a[:, 1].max())
    if x1 <= x0 or y1 <= y0:
        raise _Skip(f"zero-area box [{x0:.6g}, {y0:.6g}, {x1:.6g}, {y1:.6g}] (after clipping to the image)")
    if st == "rectangle":
        poly = [x0, y0, x1, y0, x1, y1, x0, y1]
    else:
        x, y = a[:, 0], a[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        if area < 1e-6:
            raise _Skip("the polygon encloses no area (its points lie on one line)")
        poly = [float(v) for v in a.reshape(-1)]
    return {"bbox": [x0, y0, x1, y1], "bbox_mode": 0, "category_id": int(cls), "iscrowd": 0,
            "segmentation": [poly]}, clipped


def _decode_image_data(data) -> np.ndarray:
    """``imageData`` (base64 image file bytes) -> ``(H, W) uint8`` gray, by the project's reader."""
    if not isinstance(data, str):
        raise _Skip(f"imageData {_short(data)} is not a base64 string")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise _Skip(f"imageData is not valid base64 ({e})") from None
    if not raw:
        raise _Skip("imageData is empty after base64 decoding")
    folder = tempfile.mkdtemp(prefix="deepacc-labelme-")  # private (0700) and new: the reader takes a path
    tmp = os.path.join(folder, "imageData.img")
    try:
        atomic_write(tmp, raw)
        try:
            return read_image(tmp)
        except ImageError as e:
            raise _Skip(f"imageData does not decode to an image ({e.reason})") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _dim(data: Dict[str, Any], key: str) -> Optional[int]:
    v = data.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise _Skip(f"{key} {_short(v)} is not a positive integer")
    return int(v)


def _load_file(path: str, src: str, allow_outside_src: bool) -> Tuple[Dict[str, Any], np.ndarray, str]:
    """``(LabelMe dict, gray image, where the image came from)``; raises :class:`_Skip`."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise _Skip(f"not valid json ({e})") from None
    except RecursionError:
        raise _Skip("not valid json (nested too deeply)") from None
    except OSError as e:
        raise _Skip(f"cannot read the file ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise _Skip(f"not a LabelMe annotation: the top level is a {type(data).__name__}, not an object")
    if not isinstance(data.get("shapes"), list):
        raise _Skip("not a LabelMe annotation: " + ("no 'shapes' list" if "shapes" not in data
                                                    else f"'shapes' is a {type(data['shapes']).__name__}, not a list"))
    h, w = _dim(data, "imageHeight"), _dim(data, "imageWidth")
    image_data = data.get("imageData")
    if image_data is not None and image_data != "":
        gray, origin = _decode_image_data(image_data), "imageData"
    else:
        ip = data.get("imagePath")
        if not isinstance(ip, str) or not ip.strip():
            raise _Skip("no image: imageData is empty and imagePath is " +
                        ("missing" if ip is None else f"{_short(ip)}, not a file name"))
        full = os.path.abspath(os.path.join(os.path.dirname(path), ip.replace("\\", "/")))
        if not allow_outside_src and not _inside(full, src):
            raise _Skip(f"imagePath {ip!r} leads outside the source folder {os.path.abspath(src)} "
                        f"(allow it with --allow-outside-src)")
        try:
            gray = read_image(full)
        except ImageError as e:
            raise _Skip(f"image of imagePath {ip!r} ({full}): {e.reason}") from None
        origin = full
    ih, iw = gray.shape
    if (h is not None and h != ih) or (w is not None and w != iw):
        raise _Skip(f"size mismatch: imageWidth x imageHeight = {w}x{h}, the image ({origin}) is {iw}x{ih}")
    return data, gray, origin


def assign_splits(groups: Sequence[str], seed: int, fractions: Sequence[float]) -> Dict[str, str]:
    """Split of each group: the sorted groups shuffled by ``default_rng(seed).permutation``, the first
    ``round(f_val * n)`` to val, the next ``round(f_test * n)`` to test, the rest to train."""
    names = sorted(set(groups))
    total = float(sum(fractions))
    n = len(names)
    n_val = int(math.floor(fractions[1] / total * n + 0.5))
    n_test = min(n - n_val, int(math.floor(fractions[2] / total * n + 0.5)))
    order = [names[i] for i in np.random.default_rng(seed).permutation(n)]
    return {g: "val" if i < n_val else "test" if i < n_val + n_test else "train" for i, g in enumerate(order)}


def _case_of(stem: str, case_regex: Optional[str]) -> Optional[str]:
    if not case_regex:
        return None
    m = re.search(case_regex, stem)
    if m is None:
        return None
    cid = m.group(1) if m.re.groups else m.group(0)
    return cid or None


def _check_fractions(fractions) -> Tuple[float, float, float]:
    try:
        fr = tuple(float(v) for v in (fractions.split(",") if isinstance(fractions, str) else fractions))
    except (TypeError, ValueError):
        fr = ()
    if len(fr) != 3 or not all(math.isfinite(v) and v >= 0 for v in fr) or sum(fr) <= 0:
        raise LabelMeError(f"split fractions must be three non-negative numbers train,val,test with a positive "
                           f"sum, got {fractions!r}")
    return fr


def convert_folder(src: str, out: str, seed: int = 0, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                   case_regex: Optional[str] = None, complete_min: int = COMPLETE_MIN,
                   ignore_labels: Sequence[str] = (), allow_outside_src: bool = False,
                   invert: bool = False) -> Dict[str, Any]:
    """Convert a folder of LabelMe json files (see the module docstring); returns the report, also
    written to ``<out>/prepare_report.json``. Raises :class:`LabelMeError` when the conversion cannot
    run (no folder, no json file, bad options) or when no image converted (the report is written)."""
    fractions = _check_fractions(fractions)
    if case_regex:
        try:
            re.compile(case_regex)
        except re.error as e:
            raise LabelMeError(f"--case-regex {case_regex!r}: {e}") from None
    if not os.path.isdir(src):
        raise LabelMeError(f"{src}: " + ("not a folder" if os.path.exists(src) else "source folder not found"))
    src = os.path.abspath(src)
    out = os.path.abspath(out)
    files = sorted(f for f in os.listdir(src) if f.lower().endswith(".json") and os.path.isfile(os.path.join(src, f)))
    if not files:
        raise LabelMeError(f"{src}: no LabelMe *.json file in this folder")
    ignore = {str(v).strip().lower() for v in ignore_labels}

    stems: Dict[str, str] = {}
    skipped_files: List[Dict[str, str]] = []
    for f in sorted(os.listdir(src)):  # a folder or a dangling link named *.json: named, not silently left out
        full = os.path.join(src, f)
        if f.lower().endswith(".json") and not os.path.isfile(full):
            what = ("a folder" if os.path.isdir(full) else "a dangling symbolic link" if os.path.islink(full)
                    else "not a regular file")
            skipped_files.append({"file": full, "reason": f"is {what}, not a LabelMe json file"})
    for f in files:
        stem = f[: -len(".json")]
        if stem in stems:
            skipped_files.append({"file": os.path.join(src, f),
                                  "reason": f"same stem {stem!r} as {stems[stem]}: its image would overwrite that one"})
            continue
        stems[stem] = f
    cases = {s: _case_of(s, case_regex) for s in stems}
    group_of = {s: cases[s] or s for s in stems}
    split_of_group = assign_splits(list(group_of.values()), seed, fractions)
    split_of = {s: split_of_group[g] for s, g in group_of.items()}

    counts: Counter = Counter(json_files=len(files))
    labels: Dict[str, Counter] = defaultdict(Counter)  # label as written -> {"chromosomes", "unknown", "ignored"}
    unknown_files: Dict[str, List[str]] = defaultdict(list)
    skipped_shapes: List[Dict[str, Any]] = []
    kinds: Counter = Counter()
    recs: Dict[str, List[Dict[str, Any]]] = {s: [] for s in SPLITS}
    per_image, incomplete = [], []

    for stem in sorted(stems):
        path = os.path.join(src, stems[stem])
        split = split_of[stem]
        try:
            data, gray, origin = _load_file(path, src, allow_outside_src)
            H, W = gray.shape
            anns = []
            for k, shape in enumerate(data["shapes"]):
                counts["shapes"] += 1
                label = shape.get("label") if isinstance(shape, dict) else None
                try:
                    if not isinstance(shape, dict):
                        raise _Skip(f"not an object: {_short(shape)}")
                    if not isinstance(label, str):
                        raise _Skip("no label" if label is None else f"label {_short(label)} is not a string")
                    cls = label_class(label)
                    if cls is None:
                        if label.strip().lower() in ignore:
                            labels[label]["ignored"] += 1
                            counts["shapes_ignored"] += 1
                            continue
                        labels[label]["unknown"] += 1
                        if path not in unknown_files[label] and len(unknown_files[label]) < MAX_FILES_NAMED:
                            unknown_files[label].append(path)
                        raise _Skip(f"unknown label {label!r}: neither a chromosome class (1..22, X, Y, chr7, ...) "
                                    f"nor a class-agnostic chromosome (chr, chromosome); --ignore-label "
                                    f"{label.strip()!r} silences it")
                    ann, clipped = _shape(shape, W, H, cls)
                    anns.append(ann)
                    counts["shapes_clipped_to_the_image"] += clipped
                    labels[label]["chromosomes"] += 1
                except _Skip as e:
                    counts["shapes_skipped"] += 1
                    skipped_shapes.append({"file": path, "shape": k,
                                           "label": label if isinstance(label, str) else None, "reason": e.reason})
            if not anns:
                raise _Skip(f"no chromosome shape left of its {len(data['shapes'])} shape(s)")
            png = os.path.join(out, split, stem + ".png")
            ok, buf = _encode_png(255 - gray if invert else gray)
            if not ok:
                raise _Skip("the image could not be encoded as PNG")
            try:
                atomic_write(png, buf)
            except OSError as e:
                raise _Skip(f"cannot write {png} ({e.strerror or e})") from None
        except _Skip as e:
            skipped_files.append({"file": path, "reason": e.reason})
            continue
        except Exception as e:  # a safety net: one file never stops the conversion
            skipped_files.append({"file": path,
                                  "reason": f"internal error, please report it ({type(e).__name__}: {e})"})
            continue
        n_agn = sum(1 for a in anns if a["category_id"] == AGNOSTIC)
        kind = "agnostic" if n_agn == len(anns) else "classes" if n_agn == 0 else "mixed"
        complete = len(anns) >= complete_min
        kinds[kind] += 1
        counts["annotations"] += len(anns)
        counts["agnostic_annotations"] += n_agn
        counts["class_annotations"] += len(anns) - n_agn
        counts["images_from_imageData" if origin == "imageData" else "images_from_imagePath"] += 1
        per_image.append(len(anns))
        if not complete:
            incomplete.append({"file": path, "chromosomes": len(anns), "split": split})
        rec = {"file_name": png, "height": int(H), "width": int(W), "annotations": anns,
               "annotation_complete": complete, "annotation_kind": kind, "_stem": stem}
        if cases[stem] is not None:
            rec["case_id"] = cases[stem]
        recs[split].append(rec)

    counts["images_converted"] = sum(len(v) for v in recs.values())
    counts["files_skipped"] = len(skipped_files)
    counts["images_incomplete"] = len(incomplete)
    problems = [f"{e['file']}: {e['reason']}" for e in skipped_files]
    problems += [f"{e['file']}: shapes[{e['shape']}]" + (f" (label {e['label']!r})" if e["label"] is not None else "")
                 + f": {e['reason']}" for e in skipped_shapes]
    split_rule = (f"by case id (--case-regex {case_regex!r}, group 1, on the json stem; stems without one: their own "
                  f"group)" if case_regex else "by file (one group per json)")
    split_rule += f", sorted groups shuffled by numpy default_rng({seed}).permutation, fractions of the groups"
    report: Dict[str, Any] = {
        "source": src, "out": out, "seed": seed, "fractions": list(fractions), "case_regex": case_regex,
        "split_rule": split_rule, "complete_min": complete_min, "allow_outside_src": bool(allow_outside_src),
        "inverted": bool(invert),
        "ignore_labels": sorted(ignore),
        "counts": dict(sorted(counts.items())),
        "splits": {},
        "annotation_kind": dict(sorted(kinds.items())),
        "chromosomes_per_image": ({"min": min(per_image), "max": max(per_image),
                                   "mean": round(sum(per_image) / len(per_image), 2)} if per_image else None),
        "labels": {k: dict(v) for k, v in sorted(labels.items())},
        "unknown_labels": {k: {"shapes": labels[k]["unknown"], "files": v} for k, v in sorted(unknown_files.items())},
        "stems_without_case_id": sorted(s for s in stems if case_regex and cases[s] is None),
        "incomplete_images": incomplete,
        "skipped_files": skipped_files,
        "skipped_shapes": skipped_shapes,
        "problems": problems,
        "split_of": {s: split_of[s] for s in sorted(stems)},
        "annotations": {},
    }
    if counts["images_converted"]:
        for s in SPLITS:
            rs = recs[s]
            for i, r in enumerate(rs, 1):
                r["image_id"] = i
            js = os.path.join(out, "annotations", f"{s}.json")
            write_coco_json([{k: v for k, v in r.items() if k != "_stem"} for r in rs], js, out,
                            info={"description": f"converted from LabelMe json files in {src}", "split": s,
                                  "seed": seed, "complete_min": complete_min, "inverted": bool(invert)})
            report["annotations"][s] = js
            report["splits"][s] = {
                "images": len(rs), "groups": len({group_of[r["_stem"]] for r in rs}),
                "chromosomes": sum(len(r["annotations"]) for r in rs),
                "incomplete": sum(1 for r in rs if not r["annotation_complete"])}
    os.makedirs(out, exist_ok=True)
    atomic_write(os.path.join(out, "prepare_report.json"), (json.dumps(report, indent=1) + "\n").encode("utf-8"))
    if not counts["images_converted"]:
        first = problems[0] if problems else "no file"
        raise LabelMeError(f"no image converted from {len(files)} LabelMe file(s) in {src} ({len(problems)} "
                           f"problem(s), listed in {os.path.join(out, 'prepare_report.json')}; the first: {first})",
                           report)
    return report


def _encode_png(gray: np.ndarray):
    import cv2

    ok, buf = cv2.imencode(".png", gray)
    return ok, buf.tobytes() if ok else b""


def summary_lines(report: Dict[str, Any], max_lines: int = 0) -> List[str]:
    """The end-of-run summary: splits, counts, labels, then every problem (``max_lines`` > 0: at most
    that many problem lines, then how many more; all are in the report)."""
    c = report["counts"]
    lines = []
    for s in SPLITS:
        sp = report["splits"].get(s)
        if sp is not None:
            lines.append(f"{s:5s}: {sp['images']:4d} images, {sp['chromosomes']:6d} chromosomes, "
                         f"{sp['incomplete']:3d} incomplete (< {report['complete_min']}) -> {report['annotations'][s]}")
    lines.append(f"split: {report['split_rule']}")
    lines.append(f"converted {c.get('images_converted', 0)} of {c.get('json_files', 0)} json file(s); "
                 f"{c.get('annotations', 0)} chromosomes ({c.get('agnostic_annotations', 0)} class-agnostic "
                 f"'{AGNOSTIC_NAME}', {c.get('class_annotations', 0)} with a class); "
                 f"annotation kinds {report['annotation_kind']}")
    cpi = report["chromosomes_per_image"]
    if cpi:
        lines.append(f"chromosomes per image: min {cpi['min']}, mean {cpi['mean']}, max {cpi['max']}; "
                     f"{c.get('images_incomplete', 0)} image(s) with fewer than {report['complete_min']}: "
                     f"annotation_complete false")
    if c.get("shapes_clipped_to_the_image"):
        lines.append(f"{c['shapes_clipped_to_the_image']} shape(s) reached beyond the image border (within "
                     f"{OUTSIDE_TOLERANCE:.0%} of its larger side) and were clipped to it")
    for label, e in report["unknown_labels"].items():
        lines.append(f"unknown label {label!r}: {e['shapes']} shape(s) skipped in {len(e['files'])}"
                     f"{'+' if len(e['files']) >= MAX_FILES_NAMED else ''} file(s) (--ignore-label {label.strip()!r} "
                     f"silences it)")
    ignored = {k: v["ignored"] for k, v in report["labels"].items() if v.get("ignored")}
    if ignored:
        lines.append(f"ignored labels (--ignore-label): {ignored}")
    if report["stems_without_case_id"]:
        lines.append(f"note: {len(report['stems_without_case_id'])} file(s) without a case id by --case-regex "
                     f"(each its own group): {', '.join(report['stems_without_case_id'][:10])}")
    probs = report["problems"]
    if probs:
        lines.append(f"{len(report['skipped_files'])} file(s) skipped, {len(report['skipped_shapes'])} shape(s) "
                     f"skipped; {len(probs)} problem(s):")
        shown = probs if max_lines <= 0 else probs[:max_lines]
        lines += [f"  {p}" for p in shown]
        if len(shown) < len(probs):
            lines.append(f"  ... and {len(probs) - len(shown)} more (all in the report)")
    else:
        lines.append("no problems")
    lines.append(f"report: {os.path.join(report['out'], 'prepare_report.json')}")
    return lines
