"""``deepacc-eval``: score any detector's output on a COCO ground truth with DeepACC's metrics.

Usage::

    deepacc-eval --gt test.json --results coco_instances_results.json --output out/eval
    deepacc-eval --gt test.json --predict-dir out/predict/ [--image-root DIR] [--json]

Two kinds of predictions are read:

* ``--results``: a COCO results json (a list of ``{"image_id", "category_id", "bbox": [x, y, w, h],
  "score"}``, e.g. Detectron2's ``coco_instances_results.json``). ``category_id`` is an id of the
  ground-truth json's categories (mapped to 1..22, X, Y through their names). Such a detector gives
  one class per box, so the same detections are ``instances`` and ``instances_top1`` of the
  evaluator: mAP_max = mAP by construction. An optional ``"class_probs"`` (25 numbers, order 1..22,
  X, Y, background) per result is kept for the karyotype assignment; without it the assignment
  cannot run (off by default for such a file, ``--assignment on`` is an error). Every image of the
  ground truth is scored; an image without results has no detections (as in COCO).
* ``--predict-dir``: a folder of ``deepacc-predict`` outputs (one ``<stem>.json`` per image), matched
  to the ground-truth images by absolute path, else by file name. Their detections are the *calls*
  (top-1, already cut at the confidence threshold and NMS-ed), scored as given (an assignment made
  at prediction time is kept, never redone): Acc / AER / confusion / karyotype are exactly those of
  the evaluator at the same thresholds, while mAP is computed on the calls only (the low-score tail
  of the ranking is missing) and is not comparable to the training-time mAP. Ground-truth images
  without an output are left out of the metrics (named in a warning).

Class-agnostic ground truth (a category named ``chromosome``, ``chr``, ...: chromosomes without
class, :data:`deepacc.karyotype.AGNOSTIC`) is scored per kind automatically: the 24-class metrics on
the images with classes, the class-agnostic block (AP50 / AP of the top-1 detections as one
category, recall and precision of the calls, count error on complete spreads) on each kind and on
all images. ``--class-agnostic`` ignores every class (ground truth and predictions) and prints only
the class-agnostic table. Results whose category is the ``chromosome`` one (a class-agnostic
detector) can be scored only that way: with ``--class-agnostic`` or on a ground truth without classes.

Thresholds: ``TEST.DEEPACC.SCORE_THRESH`` / ``NMS_THRESH`` / ``IOU_THRESH`` of ``--config-file``
(the default config when none), overridden by ``--score-thresh`` / ``--nms-thresh`` /
``--iou-thresh``; the values used are printed and recorded in ``metrics_deepacc.json``.

Output: the paper-style table, the per-class table and the class-agnostic table on stdout (on stderr with ``--json``, which
prints the flat scalars of :func:`deepacc.evaluation.flatten_scalars` as JSON on stdout);
``metrics_deepacc.json``, ``confusion_matrix.csv`` and ``confusion_matrix.png`` in ``--output``.

Bad numbers and huge files: a detection whose only fault is a number that cannot be scored (``NaN``
/ ``Infinity`` in a box, score or ``class_probs``, a negative width or height) is skipped, counted
and named in a warning and in ``metrics_deepacc.json`` (``inputs.skipped_detections``). A results
file is read one detection at a time (:mod:`deepacc.jsonstream`) and only the
``--max-dets-per-image`` (:data:`MAX_DETECTIONS_PER_IMAGE`) highest-scored detections of each image
are kept, the others counted (``inputs.dropped_detections``): memory and time are bounded by the
ground truth's size, not the file's.

Exit status: 0 scored; 2 usage error or bad input (every problem of the input named as
``<file>: <reason>``, all of them collected before stopping; no traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import numbers
import os
import sys
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# the dataset checker's value tests, so a results file and a ground truth are judged alike
from ..data.coco import _is_int, _short
from ..data.coco import _num as _finite

__all__ = ["MAX_PROBLEM_LINES", "MAX_DETECTIONS_PER_IMAGE", "MAX_PREDICT_FILE_BYTES", "EvalInputError",
           "format_problems", "get_parser", "load_ground_truth", "read_coco_results", "read_predict_dir", "main"]

PROG = "deepacc-eval"
#: Problems printed before the rest is summarised by a count.
MAX_PROBLEM_LINES = 20
#: Order of a result's ``class_probs``: the 24 classes, then background.
PROB_ORDER = "1..22, X, Y, background"
#: Detections kept per image (``--max-dets-per-image``): the highest-scored ones (ties: file order),
#: chosen while the file is read, so memory and time stay bounded whatever the file's size. 2400 =
#: 24 classes x COCO's ``maxDets`` 100 per image and class, far above what a detector emits
#: (Detectron2 and DeepACC keep ``TEST.DETECTIONS_PER_IMAGE`` = 100); the number dropped is reported.
MAX_DETECTIONS_PER_IMAGE = 2400
#: Largest ``deepacc-predict`` output read by ``--predict-dir`` (one image's calls: kilobytes).
MAX_PREDICT_FILE_BYTES = 64 << 20
#: Problems and skipped detections kept in memory (all are counted).
_MAX_KEPT = 1000


class EvalInputError(ValueError):
    """Bad input of ``deepacc-eval``: ``problems`` lists every ``(file, reason)`` found (exit status 2;
    ``total`` counts them when more were found than kept)."""

    def __init__(self, what: str, problems: Sequence[Tuple[str, str]], max_lines: int = MAX_PROBLEM_LINES,
                 total: Optional[int] = None):
        self.what = what
        self.problems = list(problems)
        self.total = max(len(self.problems), total or 0)
        super().__init__(format_problems(what, self.problems, max_lines, self.total))


def format_problems(what: str, problems: Sequence[Tuple[str, str]], max_lines: int = MAX_PROBLEM_LINES,
                    total: Optional[int] = None) -> str:
    """``N problem(s) in <what>:`` then one ``<file>: <reason>`` line each (the first ``max_lines``,
    then a count of the rest; ``total``: how many there are when not all were kept)."""
    total = max(len(problems), total or 0)
    lines = [f"{f}: {r}" for f, r in problems[:max_lines]]
    msg = f"{total} problem(s) in {what}"
    msg = f"{msg}: {lines[0]}" if total == 1 else msg + ":\n  " + "\n  ".join(lines)
    more = total - len(lines)
    if more > 0:
        msg += f"\n  ... and {more} more"
    return msg


# ---------------------------------------------------------------------------------------------- CLI
def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Score a detector's output on a COCO ground truth with DeepACC's metrics (mAP, mAP_max, "
        "AER, Acc, confusion matrix and Denver groups, karyotype agreement).",
        epilog="Exit status: 0 scored, 2 usage error or bad input (every problem named with its file).",
    )
    p.add_argument("--gt", required=True, metavar="GT.json", help="ground truth: a COCO json (categories named "
                   "1..22, X, Y; aliases such as chr7 accepted; a category named 'chromosome' holds chromosomes "
                   "without class, scored class-agnostically)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--results", metavar="RESULTS.json",
                     help="COCO results json: a list of {image_id, category_id, bbox [x, y, w, h], score[, "
                     "class_probs]} (e.g. Detectron2's coco_instances_results.json)")
    src.add_argument("--predict-dir", metavar="DIR", help="folder of deepacc-predict outputs (<stem>.json per image)")
    p.add_argument("--image-root", metavar="DIR", default=None,
                   help="image root of the ground truth's file_name (default: the json's folder, or the parent of "
                   "an annotations/ folder)")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="accept ground-truth file_name values outside the image root (no image is read)")
    p.add_argument("--output", metavar="DIR", default=None,
                   help="write metrics_deepacc.json, confusion_matrix.csv and confusion_matrix.png here")
    p.add_argument("--config-file", metavar="FILE", default="",
                   help="config whose TEST.DEEPACC.* thresholds and ASSIGNMENT are used (default: the default config)")
    p.add_argument("--score-thresh", type=float, default=None, metavar="S",
                   help="Acc/AER score threshold (default: TEST.DEEPACC.SCORE_THRESH, 0.5)")
    p.add_argument("--nms-thresh", type=float, default=None, metavar="N",
                   help="IoU of the class-agnostic NMS before Acc/AER (default: TEST.DEEPACC.NMS_THRESH, 0.7)")
    p.add_argument("--iou-thresh", type=float, default=None, metavar="I",
                   help="matching IoU of Acc/AER and the confusion matrix (default: TEST.DEEPACC.IOU_THRESH, 0.5)")
    p.add_argument("--assignment", choices=("on", "off"), default=None,
                   help="karyotype-consistent assignment of each spread's calls before Acc/AER (needs class_probs "
                   "in every result; default: the config's TEST.DEEPACC.ASSIGNMENT.ENABLED when every result has "
                   "class_probs, else off; never with --predict-dir, whose calls are scored as given)")
    p.add_argument("--extra-copy-cost", type=float, default=None, metavar="C",
                   help="the assignment's cost per extra copy (default: TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST)")
    p.add_argument("--class-agnostic", action="store_true",
                   help="ignore every class: score chromosome vs background only (AP50 / AP of the detections as one "
                   "category, recall / precision of the calls, count error on complete spreads) and print the "
                   "class-agnostic table; without it a ground truth with class-less chromosomes is scored per kind")
    p.add_argument("--max-dets-per-image", type=_positive_int, default=MAX_DETECTIONS_PER_IMAGE, metavar="K",
                   help=f"keep the K highest-scored detections of each image while reading, drop (and count) the "
                   f"rest: memory and time stay bounded on huge results files (default: {MAX_DETECTIONS_PER_IMAGE} "
                   "= 24 classes x COCO's maxDets 100)")
    p.add_argument("--json", action="store_true",
                   help="print the flat scalar metrics as JSON on stdout (the tables then go to stderr)")
    return p


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return v


# ------------------------------------------------------------------------------------------ helpers
def _check_numbers(v, n: int, what: str, layout: str) -> Tuple[Optional[List[float]], Optional[str], bool]:
    """``(n floats, None, False)``, or ``(None, reason, skippable)``: ``skippable`` when the only fault
    is a number that is not finite (nan, inf; the item is skipped and counted, not an input error)."""
    if not isinstance(v, (list, tuple)):
        return None, f"{what} {_short(v)} must be a list of {n} numbers {layout}", False
    if len(v) != n:
        return None, f"{what} has {len(v)} numbers, expected {n} {layout}", False
    nonfinite = False
    for x in v:
        t = type(x)
        if t is float:  # the json reader's types first: this runs for every number of a huge file
            nonfinite = nonfinite or not math.isfinite(x)
        elif t is int:
            nonfinite = nonfinite or x.bit_length() >= 1024  # beyond the float range
        elif isinstance(x, bool) or not isinstance(x, numbers.Real):
            return None, f"{what} {_short(list(v))} has a non-numeric value", False
        else:
            nonfinite = nonfinite or not _finite(x)
    if nonfinite:
        return None, f"{what} {_short(list(v))} has a non-finite value (nan or inf)", True
    return [float(x) for x in v], None, False


def _check_score(s) -> Tuple[Optional[str], bool]:
    """``(None, False)`` for a finite score, else ``(reason, skippable)``."""
    t = type(s)
    if (t is float and math.isfinite(s)) or (t is int and s.bit_length() < 1024):
        return None, False
    if isinstance(s, bool) or not isinstance(s, numbers.Real):
        return f"score {_short(s)} is not a number", False
    if not _finite(s):
        return f"score {_short(s)} is not a finite number", True
    return None, False


def _keep_top(dets: List[tuple], k: int) -> int:
    """Keep the ``k`` highest-scored of ``dets`` (``(score, file order, ...)`` tuples; ties: file
    order), in file order; returns how many were dropped."""
    if len(dets) <= k:
        return 0
    dets.sort(key=lambda d: (-d[0], d[1]))
    dropped = len(dets) - k
    del dets[k:]
    dets.sort(key=lambda d: d[1])
    return dropped


def _ids_text(ids) -> str:
    """``1..24`` for a run of integers, else the ids listed (the first 12)."""
    ids = sorted(ids, key=lambda v: (isinstance(v, str), v))
    if ids and all(_is_int(v) for v in ids) and ids == list(range(ids[0], ids[0] + len(ids))) and len(ids) > 2:
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(repr(v) if isinstance(v, str) else str(v) for v in ids[:12]) + (", ..." if len(ids) > 12 else "")


def _read_json(path: str) -> Tuple[Any, Optional[str]]:
    """The parsed json, or ``None`` and why it cannot be read."""
    if not os.path.exists(path):
        return None, "no such file"
    if os.path.isdir(path):
        return None, "is a directory, not a json file"
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f), None
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"not valid json ({e})"
    except RecursionError:
        return None, "not valid json (nested too deeply)"
    except OSError as e:
        return None, f"cannot read the file ({e.strerror or e})"


def _empty_instances(with_probs: bool) -> Dict[str, np.ndarray]:
    inst = {"boxes": np.zeros((0, 4), np.float64), "scores": np.zeros((0,), np.float64),
            "classes": np.zeros((0,), np.int64)}
    if with_probs:
        inst["class_probs"] = np.zeros((0, 25), np.float64)
    return inst


def _prediction(iid: int, boxes, scores, classes, probs=None) -> Dict[str, Any]:
    """Contract prediction dict whose ``instances`` and ``instances_top1`` are the same detections."""
    inst = {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4), "scores": np.asarray(scores, np.float64),
            "classes": np.asarray(classes, np.int64)}
    if probs is not None:
        inst["class_probs"] = np.asarray(probs, np.float64).reshape(len(inst["scores"]), -1)
    return {"image_id": int(iid), "instances": dict(inst), "instances_top1": dict(inst)}


# ------------------------------------------------------------------------------------- ground truth
def load_ground_truth(gt_file: str, image_root: Optional[str] = None, allow_outside_root: bool = False
                      ) -> Tuple[List[Dict[str, Any]], Dict[Any, int]]:
    """Dataset dicts of a COCO json (project loader, image files not decoded) and the map from the
    json's category ids to the contiguous classes 0..23 (by name), a class-less ``chromosome``
    category (:func:`deepacc.karyotype.is_agnostic_name`) to :data:`~deepacc.karyotype.AGNOSTIC`.
    Raises :class:`deepacc.data.coco.DatasetError` listing every problem."""
    from ..data.coco import load_coco_json
    from ..karyotype.classes import AGNOSTIC, CLASS_NAMES, canonical_name, is_agnostic_name

    dicts = load_coco_json(gt_file, image_root, check_images="none", allow_outside_root=allow_outside_root)
    with open(gt_file, "r", encoding="utf-8") as f:  # valid: the loader has read it
        cats = json.load(f)["categories"]
    cat_map = {c["id"]: AGNOSTIC if is_agnostic_name(c["name"]) else CLASS_NAMES.index(canonical_name(c["name"]))
               for c in cats}
    return dicts, cat_map


# ----------------------------------------------------------------------------------- COCO results
def read_coco_results(results_file: str, gt_dicts: Sequence[Mapping], cat_map: Mapping[Any, int],
                      gt_file: str = "the ground truth", class_less_ok: bool = False,
                      max_dets_per_image: int = MAX_DETECTIONS_PER_IMAGE
                      ) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Prediction dicts (one per ground-truth image; an image without results has no detections)
    of a COCO results json, and what was read: ``num_entries`` (the file's list), ``num_results``
    (the usable ones), ``num_with_class_probs``, ``num_class_less``, ``num_skipped`` and ``skipped``
    (results whose numbers are not finite or absurd: a bbox or class_probs with nan / inf, a score
    nan / inf, a negative width or height; each is left out, counted, and the first
    ``_MAX_KEPT`` named), ``num_dropped`` / ``images_capped`` / ``max_dets_per_image`` (the
    detections beyond the ``max_dets_per_image`` highest-scored of their image, dropped while reading).

    The file is read one result at a time (:func:`deepacc.jsonstream.iter_json_list`) and only the
    kept detections are held: memory is bounded by ``max_dets_per_image`` x the ground truth's
    images, whatever the file's size.

    A result in the class-less ``chromosome`` category (``cat_map`` value
    :data:`~deepacc.karyotype.AGNOSTIC`) is accepted only with ``class_less_ok`` (classes ignored,
    or no ground truth with classes); it gets class 0 as a placeholder that no metric reads.
    Raises :class:`EvalInputError` listing every problem of the file (malformed entries: not an
    object, a key missing, an unknown image or category, a value that is no number)."""
    from ..jsonstream import JSONListError, NotAListError, iter_json_list
    from ..karyotype.classes import AGNOSTIC

    what = f"results {results_file}"
    if not os.path.exists(results_file):
        raise EvalInputError(what, [(results_file, "no such file")])
    if os.path.isdir(results_file):
        raise EvalInputError(what, [(results_file, "is a directory, not a json file")])
    k_max = int(max_dets_per_image)
    if k_max < 1:
        raise ValueError(f"max_dets_per_image must be >= 1, got {max_dets_per_image}")
    gt_ids = {int(d["image_id"]) for d in gt_dicts}
    known_txt = _ids_text(cat_map)
    problems: List[Tuple[str, str]] = []
    skipped: List[str] = []
    counts = Counter()
    # per image: (score, file order, xyxy box, class, class_probs or None)
    per_image: Dict[int, List[tuple]] = {i: [] for i in gt_ids}
    capped = set()

    def bad(reason):
        counts["problems"] += 1
        if len(problems) < _MAX_KEPT:
            problems.append((results_file, reason))

    try:
        with open(results_file, "r", encoding="utf-8") as f:
            for j, r in enumerate(iter_json_list(f)):
                counts["entries"] += 1
                label = f"results[{j}]"
                if not isinstance(r, dict):
                    bad(f"{label}: must be an object {{image_id, category_id, bbox, score}}, got {_short(r)}")
                    continue
                errors: List[str] = []
                faults: List[str] = []  # non-finite / absurd numbers: the result is skipped
                iid = r.get("image_id")
                if "image_id" not in r:
                    errors.append("missing 'image_id'")
                elif type(iid) is not int and not _is_int(iid):  # the json reader's int first: it runs per result
                    errors.append(f"image_id {_short(iid)} is not an integer")
                elif iid not in gt_ids:
                    errors.append(f"image_id {iid} is not an image of the ground truth {gt_file}")
                cid = r.get("category_id")
                if "category_id" not in r:
                    errors.append("missing 'category_id'")
                elif isinstance(cid, bool) or not isinstance(cid, (int, str)) or cid not in cat_map:
                    errors.append(f"unknown category id {_short(cid)} (the categories of {gt_file} have ids "
                                  f"{known_txt})")
                elif cat_map[cid] == AGNOSTIC and not class_less_ok:
                    errors.append(f"category id {_short(cid)} is the class-less 'chromosome' category of {gt_file}: "
                                  "such a detection has no class and can only be scored with --class-agnostic")
                box = None
                if "bbox" not in r:
                    errors.append("missing 'bbox'")
                else:
                    box, why, skip = _check_numbers(r["bbox"], 4, "bbox", "[x, y, w, h]")
                    if why:
                        (faults if skip else errors).append(why)
                    elif box[2] < 0 or box[3] < 0:
                        faults.append(f"bbox {r['bbox']} has a negative width or height")
                score = r.get("score")
                if "score" not in r:
                    errors.append("missing 'score'")
                else:
                    why, skip = _check_score(score)
                    if why:
                        (faults if skip else errors).append(why)
                probs = None
                if r.get("class_probs") is not None:
                    probs, why, skip = _check_numbers(r["class_probs"], 25, "class_probs", f"(order {PROB_ORDER})")
                    if why:
                        (faults if skip else errors).append(why)
                if errors:  # a malformed entry: every reason of it is a problem
                    for why in errors + faults:
                        bad(f"{label}: {why}")
                    continue
                if faults:
                    counts["skipped"] += 1
                    if len(skipped) < _MAX_KEPT:
                        skipped.append(f"{results_file}: {label}: {'; '.join(faults)}")
                    continue
                counts["results"] += 1
                counts["with_probs"] += probs is not None
                x, y, w, h = box
                c = cat_map[cid]
                if c == AGNOSTIC:
                    counts["class_less"] += 1
                    c = 0  # placeholder: scored class-agnostically only
                dets = per_image[iid]
                dets.append((float(score), j, [x, y, x + w, y + h], c, probs))
                if len(dets) >= 2 * k_max:  # amortised: sorted once every k_max additions
                    counts["dropped"] += _keep_top(dets, k_max)
                    capped.add(iid)
    except NotAListError as e:
        raise EvalInputError(what, [(
            results_file, "top level must be a list of detections {image_id, category_id, bbox [x, y, w, h], "
                          f"score}} (a COCO results json), got a {e.kind}")]) from None
    except JSONListError as e:
        bad(f"not valid json ({e.reason})")
    except UnicodeDecodeError as e:
        bad(f"not valid json ({e})")
    except OSError as e:
        bad(f"cannot read the file ({e.strerror or e})")
    if problems:
        raise EvalInputError(what, problems, total=counts["problems"])
    for iid, dets in per_image.items():
        n = _keep_top(dets, k_max)
        if n:
            counts["dropped"] += n
            capped.add(iid)
    all_probs = counts["with_probs"] == counts["results"]
    preds = []
    for iid in sorted(per_image):
        dets = per_image[iid]
        if not dets:
            p = {"image_id": iid, "instances": _empty_instances(False), "instances_top1": _empty_instances(all_probs)}
        else:
            p = _prediction(iid, [d[2] for d in dets], [d[0] for d in dets], [d[3] for d in dets],
                            [d[4] for d in dets] if all_probs else None)
        preds.append(p)
    return preds, {"num_results": counts["results"], "num_entries": counts["entries"],
                   "num_with_class_probs": counts["with_probs"], "num_class_less": counts["class_less"],
                   "num_skipped": counts["skipped"], "skipped": skipped, "num_dropped": counts["dropped"],
                   "images_capped": len(capped), "max_dets_per_image": k_max}


# ------------------------------------------------------------------------------- deepacc-predict
def _predict_jsons(folder: str) -> List[str]:
    from ..evaluation import METRICS_FILE
    from ..fileio import TEMP_PATTERN

    names = []
    for name in sorted(os.listdir(folder)):
        if (not name.lower().endswith(".json") or name.startswith(".") or TEMP_PATTERN.match(name)
                or name == METRICS_FILE or not os.path.isfile(os.path.join(folder, name))):
            continue
        names.append(os.path.join(folder, name))
    return names


def _norm(path: str) -> str:
    return os.path.normcase(os.path.normpath(os.path.abspath(path)))


def read_predict_dir(folder: str, gt_dicts: Sequence[Mapping], gt_file: str = "the ground truth",
                     max_dets_per_image: int = MAX_DETECTIONS_PER_IMAGE
                     ) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Prediction dicts of a folder of ``deepacc-predict`` outputs (the calls as ``instances`` and
    ``instances_top1``), one per ground-truth image that has an output, and what was read: the JSON
    files, the ground-truth images without an output, the distinct prediction settings, the
    detections skipped for non-finite or absurd numbers (``num_skipped``, ``skipped``: a box or score
    nan / inf, a box with x1 < x0 or y1 < y0) and those beyond the ``max_dets_per_image``
    highest-scored of their image (``num_dropped``, ``images_capped``).

    Raises :class:`EvalInputError` listing every problem of the folder (an output larger than
    :data:`MAX_PREDICT_FILE_BYTES` is one: it is not read)."""
    from ..karyotype.classes import CLASS_NAMES, canonical_name

    what = f"deepacc-predict outputs {folder}"
    if not os.path.isdir(folder):
        raise EvalInputError(what, [(folder, "no such folder" if not os.path.exists(folder) else "not a folder")])
    files = _predict_jsons(folder)
    if not files:
        raise EvalInputError(what, [(folder, "no deepacc-predict output (<name>.json) in this folder")])
    by_path = {_norm(d["file_name"]): int(d["image_id"]) for d in gt_dicts if d.get("file_name")}
    by_name: Dict[str, List[int]] = {}
    for d in gt_dicts:
        if d.get("file_name"):
            by_name.setdefault(os.path.basename(d["file_name"]), []).append(int(d["image_id"]))
    gt_name = {int(d["image_id"]): d.get("file_name", "") for d in gt_dicts}
    problems: List[Tuple[str, str]] = []
    taken: Dict[int, str] = {}
    preds: List[Dict[str, Any]] = []
    settings: Counter = Counter()
    untrained = 0
    k_max = int(max_dets_per_image)
    skipped: List[str] = []
    n_skipped = n_dropped = n_capped = 0
    for path in files:
        def bad(reason, path=path):
            problems.append((path, reason))

        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        if size > MAX_PREDICT_FILE_BYTES:
            bad(f"{size / 2 ** 20:.0f} MiB, more than a deepacc-predict output can be (the limit is "
                f"{MAX_PREDICT_FILE_BYTES // 2 ** 20} MiB, deepacc.tools.eval.MAX_PREDICT_FILE_BYTES); not read")
            continue
        rec, why = _read_json(path)
        if why:
            bad(why)
            continue
        if not isinstance(rec, dict):
            bad(f"not a deepacc-predict output: top level must be an object with 'file_name' and 'detections', "
                f"got a {type(rec).__name__}")
            continue
        fn, dets = rec.get("file_name"), rec.get("detections")
        ok = True
        if not isinstance(fn, str) or not fn.strip():
            bad("not a deepacc-predict output: " + ("missing 'file_name'" if "file_name" not in rec
                                                     else f"file_name {_short(fn)} is not a non-empty string"))
            ok = False
        if not isinstance(dets, list):
            bad("not a deepacc-predict output: " + ("missing 'detections'" if "detections" not in rec
                                                     else f"'detections' must be a list, got a {type(dets).__name__}"))
            ok = False
        iid = None
        if isinstance(fn, str) and fn.strip():
            iid = by_path.get(_norm(fn))
            if iid is None:
                hits = by_name.get(os.path.basename(fn), [])
                if len(hits) == 1:
                    iid = hits[0]
                elif len(hits) > 1:
                    bad(f"file_name {fn!r} matches no ground-truth image by path, and {len(hits)} of {gt_file} by "
                        f"file name (image ids {', '.join(str(h) for h in sorted(hits)[:10])}): ambiguous")
                    ok = False
                else:
                    bad(f"file_name {fn!r} is not an image of the ground truth {gt_file} (by path or by file name)")
                    ok = False
            if iid is not None and iid in taken:
                bad(f"same ground-truth image as {taken[iid]} (image id {iid}, {gt_name[iid]})")
                ok = False
        kept: List[tuple] = []  # (score, order, box, class)
        for k, d in enumerate(dets if isinstance(dets, list) else []):
            label = f"detections[{k}]"
            if not isinstance(d, dict):
                bad(f"{label} must be an object with 'box', 'class' and 'score', got {_short(d)}")
                ok = False
                continue
            n_bad = len(problems)
            faults: List[str] = []  # non-finite / absurd numbers: the detection is skipped
            box, why, skip = (_check_numbers(d.get("box"), 4, "box", "[x0, y0, x1, y1]") if "box" in d
                              else (None, "missing 'box'", False))
            if not why and (box[2] < box[0] or box[3] < box[1]):
                why, skip = f"box {d['box']} has x1 < x0 or y1 < y0 (a negative width or height)", True
            if why and skip:
                faults.append(why)
            elif why:
                bad(f"{label}: {why}")
                ok = False
            c = None
            if "class" in d:
                try:
                    c = CLASS_NAMES.index(canonical_name(d["class"]))
                except KeyError:
                    bad(f"{label}: unknown class {_short(d['class'])} (expected 1..22, X, Y)")
                    ok = False
                if c is not None and "class_id" in d and d["class_id"] != c:
                    bad(f"{label}: class {d['class']!r} and class_id {_short(d['class_id'])} disagree")
                    ok = False
            elif "class_id" in d:
                if _is_int(d["class_id"]) and 0 <= d["class_id"] < len(CLASS_NAMES):
                    c = int(d["class_id"])
                else:
                    bad(f"{label}: class_id {_short(d['class_id'])} must be an integer 0..{len(CLASS_NAMES) - 1}")
                    ok = False
            else:
                bad(f"{label}: missing 'class'")
                ok = False
            s = d.get("score")
            if "score" not in d:
                bad(f"{label}: missing 'score'")
                ok = False
            else:
                why, skip = _check_score(s)
                if why and skip:
                    faults.append(why)
                elif why:
                    bad(f"{label}: {why}")
                    ok = False
            if len(problems) > n_bad:  # a malformed detection: its non-finite numbers are problems too
                for why in faults:
                    bad(f"{label}: {why}")
            elif faults:
                n_skipped += 1
                if len(skipped) < _MAX_KEPT:
                    skipped.append(f"{path}: {label}: {'; '.join(faults)}")
            elif ok:
                kept.append((float(s), k, box, c))
        if not ok:
            continue
        n = _keep_top(kept, k_max)
        n_dropped += n
        n_capped += n > 0
        taken[iid] = path
        preds.append(_prediction(iid, [d[2] for d in kept], [d[0] for d in kept], [d[3] for d in kept]))
        settings[_settings_key(rec)] += 1
        model = rec.get("model")
        untrained += isinstance(model, dict) and model.get("status") not in (None, "trained")
    if problems:
        raise EvalInputError(what, problems)
    missing = sorted(set(gt_name) - set(taken))
    preds.sort(key=lambda p: p["image_id"])
    return preds, {"num_files": len(files), "missing": [gt_name[i] for i in missing],
                   "settings": [dict(k, num_files=n) for k, n in settings.items()], "untrained": int(untrained),
                   "num_skipped": n_skipped, "skipped": skipped, "num_dropped": n_dropped,
                   "images_capped": n_capped, "max_dets_per_image": k_max}


def _settings_key(rec: Mapping):
    """The thresholds and assignment an output was made with (hashable, for counting)."""
    s = rec.get("settings") if isinstance(rec.get("settings"), dict) else {}
    a = s.get("assignment")
    cost = s.get("extra_copy_cost")
    summary_a = (rec.get("summary") or {}).get("assignment") if isinstance(rec.get("summary"), dict) else None
    if a is None and isinstance(summary_a, dict):  # recorded with the summary too
        a, cost = summary_a.get("enabled"), summary_a.get("extra_copy_cost", cost)
    return _Frozen(confidence_threshold=s.get("confidence_threshold"), nms_threshold=s.get("nms_threshold"),
                   assignment=a, extra_copy_cost=cost if a else None)


class _Frozen(dict):
    def __hash__(self):
        return hash(tuple(sorted((k, repr(v)) for k, v in self.items())))


# --------------------------------------------------------------------------------------- settings
def _thresholds(args) -> Tuple[Dict[str, float], Any, str]:
    """(thresholds used, cfg, where they come from); raises ValueError with a one-line message."""
    from ..config import ConfigError, get_cfg, load_config, unknown_key_message, validate_config

    try:
        cfg = load_config(args.config_file or None)
    except Exception as exc:  # noqa: BLE001  (a file the user gave: one line)
        if isinstance(exc, ConfigError):  # a folder, YAML syntax, a _BASE_ loop: named by deepacc.config
            raise ValueError(f"--config-file {exc}") from None
        if args.config_file and not os.path.exists(args.config_file):
            raise ValueError(f"--config-file {args.config_file}: no such file") from None
        raise ValueError(f"--config-file {args.config_file}: {unknown_key_message(exc, get_cfg()) or exc}") from None
    source = args.config_file or "the default config"
    flags = {"SCORE_THRESH": ("--score-thresh", args.score_thresh), "NMS_THRESH": ("--nms-thresh", args.nms_thresh),
             "IOU_THRESH": ("--iou-thresh", args.iou_thresh)}
    overridden = []
    for key, (flag, v) in flags.items():
        if v is not None:
            cfg.TEST.DEEPACC[key] = float(v)
            overridden.append(flag)
    if args.extra_copy_cost is not None:
        cfg.TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST = float(args.extra_copy_cost)
    problems = [p for p in validate_config(cfg) if p.startswith("TEST.DEEPACC.")]
    if problems:
        raise ConfigError(problems, source if not overridden else f"{source} with {', '.join(overridden)}")
    t = {"score_thresh": float(cfg.TEST.DEEPACC.SCORE_THRESH), "nms_thresh": float(cfg.TEST.DEEPACC.NMS_THRESH),
         "iou_thresh": float(cfg.TEST.DEEPACC.IOU_THRESH)}
    if overridden:
        source += f", overridden by {', '.join(overridden)}"
    return t, cfg, source


def _fmt_num(v) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, (int, float)) else str(v)


# ------------------------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``deepacc-eval``; returns the exit status (0 scored, 2 usage error / bad input)."""
    parser = get_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return int(e.code or 0)
    out = sys.stderr if args.json else sys.stdout

    def fail(msg: str) -> int:
        print(f"{PROG}: {msg}", file=sys.stderr)
        return 2

    def say(msg: str) -> None:
        print(msg, file=out)

    warnings: List[str] = []
    notes: List[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        print(f"{PROG}: warning: {msg}", file=sys.stderr)

    def note(msg: str) -> None:
        notes.append(msg)
        print(f"{PROG}: note: {msg}", file=sys.stderr)

    # thresholds and assignment settings first: a usage error costs no reading
    try:
        thresholds, cfg, source = _thresholds(args)
    except ValueError as e:
        return fail(str(e))
    if args.output:  # before anything is read: a file in the way or no permission is found now
        from .checks import OutputDirError, check_writable_dir

        try:
            check_writable_dir(args.output, "--output", "--output out/eval")
        except OutputDirError as e:
            return fail(str(e))
    kind = "predict-dir" if args.predict_dir else "coco-results"
    if args.class_agnostic and args.assignment == "on":
        return fail("--assignment on does not apply to --class-agnostic: the classes are ignored")
    if kind == "predict-dir" and args.assignment == "on":
        return fail("--assignment on does not apply to --predict-dir: the calls of deepacc-predict outputs are "
                    "scored as given (assigned at prediction time when deepacc-predict ran with the assignment on; "
                    "rerun deepacc-predict --assignment on|off to change them)")

    # ground truth
    from ..data.coco import DatasetError

    try:
        gt_dicts, cat_map = load_ground_truth(args.gt, args.image_root, args.allow_outside_root)
    except DatasetError as e:
        return fail(f"ground truth: {e}")
    if not gt_dicts:
        return fail(f"ground truth: {args.gt}: the json has no images")
    from ..evaluation import image_kind

    n_agnostic = sum(image_kind(d) == "agnostic" for d in gt_dicts)
    with_classes = not args.class_agnostic and n_agnostic < len(gt_dicts)  # any image scored per class

    # predictions
    try:
        if kind == "coco-results":
            preds, info = read_coco_results(args.results, gt_dicts, cat_map, args.gt, class_less_ok=not with_classes,
                                            max_dets_per_image=args.max_dets_per_image)
        else:
            preds, info = read_predict_dir(args.predict_dir, gt_dicts, args.gt,
                                           max_dets_per_image=args.max_dets_per_image)
    except EvalInputError as e:
        return fail(str(e))
    source_path = args.results or args.predict_dir
    if info["num_skipped"]:
        shown = info["skipped"][:MAX_PROBLEM_LINES]
        more = info["num_skipped"] - len(shown)
        warn(f"{info['num_skipped']} detection(s) skipped for non-finite or absurd numbers (a box or score nan / "
             f"inf, a negative width or height), left out of the metrics:\n  " + "\n  ".join(shown)
             + (f"\n  ... and {more} more" if more > 0 else ""))
    if info["num_dropped"]:
        warn(f"{info['num_dropped']} detection(s) dropped on {info['images_capped']} image(s): beyond the "
             f"{info['max_dets_per_image']} highest-scored of their image (--max-dets-per-image "
             f"{info['max_dets_per_image']}; a detector emits far fewer: check the file, or raise the limit)")

    # assignment
    cost = float(cfg.TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST)
    enabled = False
    if not with_classes:
        why = ("classes ignored (--class-agnostic)" if args.class_agnostic
               else f"the ground truth has no chromosome with a class ({len(gt_dicts)} class-agnostic image(s))")
        note(f"class-agnostic scoring only: {why}; the 24-class metrics (mAP, mAP_max, Acc, AER) are not computed")
        if args.assignment == "on":
            note("--assignment on unused: no image is scored with classes")
    if kind == "coco-results":
        n, n_probs = info["num_results"], info["num_with_class_probs"]
        if with_classes:
            if args.assignment == "on" and n_probs < n:
                return fail(f"{args.results}: --assignment on needs 'class_probs' (25 numbers, order {PROB_ORDER}) "
                            f"in every result; {n - n_probs} of {n} result(s) have none")
            if args.assignment is None:
                enabled = bool(cfg.TEST.DEEPACC.ASSIGNMENT.ENABLED) and n_probs == n
                if bool(cfg.TEST.DEEPACC.ASSIGNMENT.ENABLED) and not enabled:
                    note(f"karyotype assignment off: {n - n_probs} of {n} result(s) carry no 'class_probs' "
                         f"(25 numbers, order {PROB_ORDER}), which the assignment needs; Acc/AER are the paper's "
                         "(model's top-1 classes)")
            else:
                enabled = args.assignment == "on"
            note("a COCO results json has one class per detection and no separate top-1 set: its detections serve "
                 "as both instances and instances_top1, so mAP_max = mAP by construction")
        if not with_classes or n_agnostic:
            note("class-agnostic AP50 / AP: every detection of the results json is ranked as a chromosome (there is "
                 "no top-1 set), so a detector that lists several classes per box has the extra ones counted as "
                 "duplicates there (the calls, after class-agnostic NMS, are not affected)")
    else:
        made = [s for s in info["settings"] if s.get("assignment")]
        if made and with_classes:
            costs = sorted({_fmt_num(s.get("extra_copy_cost")) for s in made})
            note(f"{sum(s['num_files'] for s in made)} of {len(preds)} output(s) were made with the karyotype "
                 f"assignment on (extra-copy cost {', '.join(costs)}): their calls are scored as given, not "
                 "re-assigned")
        for s in info["settings"]:
            ct, nt = s.get("confidence_threshold"), s.get("nms_threshold")
            st, ns = thresholds["score_thresh"], thresholds["nms_thresh"]
            if ct == st and nt == ns:
                continue
            why = []
            if not isinstance(ct, (int, float)) or not isinstance(nt, (int, float)):
                why.append("the output does not record its thresholds")
            elif st < ct:
                why.append(f"the calls below {ct:g} were dropped at prediction and cannot come back")
            elif st > ct and s.get("assignment") and with_classes:
                why.append("the calls were assigned jointly at the prediction's threshold, so a higher one here "
                           "is not the same as predicting at it")
            elif st > ct and nt == ns:
                why.append("a higher score threshold than the prediction's gives the same calls (exact)")
            if isinstance(nt, (int, float)) and nt != ns:
                why.append(f"the calls were NMS-ed at {_fmt_num(nt)} at prediction, which NMS at {ns:g} here "
                           "does not undo")
            warn(f"{s['num_files']} output(s) in {args.predict_dir} were made with --confidence-threshold "
                 f"{_fmt_num(ct)} --nms-threshold {_fmt_num(nt)}, scored at score {st:g} NMS {ns:g}: "
                 + "; ".join(why))
        if info["missing"]:
            shown = ", ".join(os.path.basename(m) for m in info["missing"][:5])
            more = f" and {len(info['missing']) - 5} more" if len(info["missing"]) > 5 else ""
            warn(f"{len(info['missing'])} of {len(gt_dicts)} ground-truth image(s) have no output in "
                 f"{args.predict_dir} and are left out of the metrics: {shown}{more}")
        if info["untrained"]:
            warn(f"{info['untrained']} output(s) come from an untrained model (deepacc-predict --allow-untrained)")
        if with_classes:
            note("mAP and mAP_max are computed on the calls only (cut at the confidence threshold, NMS-ed, one class "
                 "per box): not comparable to the training-time mAP; Acc, AER, the confusion matrix and the "
                 "karyotype agreement are")
        if not with_classes or n_agnostic:
            note("the class-agnostic AP50 / AP are computed on the calls only (cut at the confidence threshold): a "
                 "lower bound of the AP of the model's top-1 detections; the class-agnostic recall, precision and "
                 "count error are those of the evaluator at the same thresholds")
    if args.extra_copy_cost is not None and not enabled:
        note(f"--extra-copy-cost {args.extra_copy_cost:g} unused: the karyotype assignment is off")

    n_dets = sum(len(p["instances_top1"]["scores"]) for p in preds)
    n_gt = sum(len(d["annotations"]) for d in gt_dicts)
    kinds_txt = ""
    if n_agnostic:
        kinds_txt = (f"; {n_agnostic} image(s) without classes (scored class-agnostically), "
                     f"{len(gt_dicts) - n_agnostic} with the 24 classes")
    say(f"{PROG}: ground truth {args.gt}: {len(gt_dicts)} image(s), {n_gt} chromosome(s){kinds_txt}")
    say(f"{PROG}: predictions {source_path} ({'COCO results' if kind == 'coco-results' else 'deepacc-predict outputs'}"
        f"): {n_dets} detection(s) on {len(preds)} image(s)")
    assign_txt = f"on (extra-copy cost {cost:g})" if enabled else "off"
    say(f"{PROG}: thresholds: score {thresholds['score_thresh']:g}, NMS {thresholds['nms_thresh']:g}, "
        f"IoU {thresholds['iou_thresh']:g} ({source}); karyotype assignment {assign_txt}"
        + ("; classes ignored (--class-agnostic)" if args.class_agnostic else ""))

    # evaluation
    from ..evaluation import (METRICS_FILE, MetaphaseEvaluator, flatten_scalars, format_agnostic_table,
                              format_per_class_table, format_table)

    ev_logger = logging.getLogger(MetaphaseEvaluator.__module__)
    level = ev_logger.level
    if kind == "predict-dir" and info["missing"]:
        ev_logger.setLevel(logging.ERROR)  # the images left out are named above already
    try:
        ev = MetaphaseEvaluator(gt_dicts, output_dir=args.output, distributed=False,
                                extra_copy_cost=cost if enabled else None, class_agnostic=args.class_agnostic,
                                **thresholds)
        ev.process(preds)
        with contextlib.redirect_stdout(io.StringIO()):  # its own table: printed below, where it belongs
            results = ev.evaluate()
    except ValueError as e:
        return fail(str(e))
    except OSError as e:
        return fail(f"--output {args.output}: cannot write ({e.strerror or e})")
    finally:
        ev_logger.setLevel(level)
    if not results:
        return fail("nothing to evaluate")
    inputs = {
        "ground_truth": os.path.abspath(args.gt),
        "predictions": os.path.abspath(source_path),
        "kind": kind,
        "num_detections": n_dets,
        "instances_equal_top1": True,
        "thresholds": dict(thresholds, source=source),
        "assignment": {"enabled": enabled, "extra_copy_cost": cost if enabled else None},
        "class_agnostic": bool(args.class_agnostic),
        "image_kinds": {"classes": len(gt_dicts) - n_agnostic, "agnostic": n_agnostic},
        "notes": notes,
        "warnings": warnings,
    }
    inputs["skipped_detections"] = {"count": info["num_skipped"], "reasons": info["skipped"]}
    inputs["dropped_detections"] = {"count": info["num_dropped"], "images": info["images_capped"],
                                    "max_dets_per_image": info["max_dets_per_image"]}
    if kind == "predict-dir":
        inputs.update(images_without_output=info["missing"], prediction_settings=info["settings"])
    results["inputs"] = inputs
    if args.output:
        path = os.path.join(args.output, METRICS_FILE)
        try:
            with open(path, "r", encoding="utf-8") as f:
                written = json.load(f)
            written["inputs"] = inputs
            from ..fileio import atomic_write

            atomic_write(path, json.dumps(written, indent=1).encode("utf-8"))
        except (OSError, ValueError) as e:
            return fail(f"{path}: cannot record the inputs ({e})")

    label = os.path.basename(os.path.normpath(source_path)) or "DeepACC"
    if label.lower().endswith(".json"):
        label = label[:-5]
    kinds = results.get("image_kinds", {})
    if results["num_images"]:
        other = f" with classes ({kinds['agnostic']} class-agnostic image(s) in the table below)" \
            if kinds.get("agnostic") else ""
        say(f"\nDeepACC evaluation on {results['num_images']} image(s){other}:")
        say(format_table(results, name=label))
        if "assignment" in results:
            a = results["assignment"]
            say(f"Acc / AER with the karyotype assignment (extra-copy cost {a['extra_copy_cost']:g}, "
                f"{a['relabelled']} of {a['calls']} calls relabelled); without it (the paper's protocol): "
                f"Acc {a['without']['Acc']:.2f}, AER {a['without']['AER']:.2f}")
        den = results["confusion"].get("denver", {})
        kar = results.get("karyotype", {})
        line = (f"TP {results['TP']}, FP {results['FP']}, FN {results['FN']}; {results['num_dets']} kept call(s), "
                f"{results['num_gt']} chromosome(s)")
        if den:
            line += f"; misclassified {den['misclassified']}, within the Denver group {den['within_group']}"
        if kar:
            line += f"; karyotype agreement {kar['agreement_with_gt_boxes']:.2f}% with the ground-truth boxes"
            if kar.get("num_with_stored"):
                line += (f", {kar['agreement_with_stored']:.2f}% with the stored karyotype "
                         f"({kar['num_with_stored']} image(s))")
        say(line)
        say(format_per_class_table(results))
    agn = results.get("agnostic", {})
    if agn:
        n_all = agn["all"]["num_images"]
        say(f"\nDeepACC class-agnostic evaluation of {label} on {n_all} image(s) (chromosome vs background; "
            f"recall / precision of the calls at score >= {thresholds['score_thresh']:g}; count error on the "
            "complete spreads):")
        say(format_agnostic_table(results))
        a = agn["all"]
        ce = a["count_error"]
        line = (f"class-agnostic, all images: TP {a['TP']}, FP {a['FP']}, FN {a['FN']}; {a['num_calls']} call(s), "
                f"{a['num_gt']} chromosome(s); count error on {ce['n_spreads']} complete spread(s)")
        if ce["n_spreads"]:
            line += f": median |error| {ce['median_abs']:g}, mean signed {ce['mean_signed']:+.2f}"
        if ce["n_incomplete"]:
            line += f"; {ce['n_incomplete']} spread(s) left out as incompletely annotated"
        say(line)
    if args.output:
        files = f"{METRICS_FILE}, confusion_matrix.csv and confusion_matrix.png" if "confusion" in results \
            else METRICS_FILE
        say(f"{PROG}: {files} in {os.path.abspath(args.output)}")
    if args.json:
        flat = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in flatten_scalars(results).items()}
        print(json.dumps(flat, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
