"""Readers of a detector's predictions for the evaluator: prediction dicts of
:class:`~deepacc.evaluation.MetaphaseEvaluator` from

* :func:`read_coco_results`: a COCO results json (a list of ``{"image_id", "category_id", "bbox":
  [x, y, w, h], "score"[, "class_probs"]}``, e.g. Detectron2's ``coco_instances_results.json``), read
  one detection at a time with only the ``max_dets_per_image`` highest-scored of each image kept;
* :func:`read_predict_dir`: a folder of ``deepacc-predict`` outputs (one ``<stem>.json`` per image,
  :mod:`deepacc.clinical.pipeline`), matched to the ground-truth images by path, else by file name.

Both give every detection as ``instances`` and ``instances_top1`` (one class per box), skip (and
count, and name) a detection whose only fault is a number that cannot be scored, and raise
:class:`EvalInputError` listing every other problem of the input. ``deepacc-eval``
(:mod:`deepacc.tools.eval`) is their command line.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# the dataset checker's value tests, so a results file and a ground truth are judged alike
from ..data.coco import is_finite_number, is_int, short_repr

__all__ = ["MAX_PROBLEM_LINES", "MAX_DETECTIONS_PER_IMAGE", "MAX_PREDICT_FILE_BYTES", "PROB_ORDER", "EvalInputError",
           "format_problems", "read_coco_results", "read_predict_dir"]

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
    """Bad predictions or ground truth (``deepacc-eval``: exit status 2): ``problems`` lists every
    ``(file, reason)`` found (``total`` counts them when more were found than kept)."""

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


# ------------------------------------------------------------------------------------------ helpers
def _check_numbers(v, n: int, what: str, layout: str) -> Tuple[Optional[List[float]], Optional[str], bool]:
    """``(n floats, None, False)``, or ``(None, reason, skippable)``: ``skippable`` when the only fault
    is a number that is not finite (nan, inf; the item is skipped and counted, not an input error)."""
    if not isinstance(v, (list, tuple)):
        return None, f"{what} {short_repr(v)} must be a list of {n} numbers {layout}", False
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
            return None, f"{what} {short_repr(list(v))} has a non-numeric value", False
        else:
            nonfinite = nonfinite or not is_finite_number(x)
    if nonfinite:
        return None, f"{what} {short_repr(list(v))} has a non-finite value (nan or inf)", True
    return [float(x) for x in v], None, False


def _check_score(s) -> Tuple[Optional[str], bool]:
    """``(None, False)`` for a finite score, else ``(reason, skippable)``."""
    t = type(s)
    if (t is float and math.isfinite(s)) or (t is int and s.bit_length() < 1024):
        return None, False
    if isinstance(s, bool) or not isinstance(s, numbers.Real):
        return f"score {short_repr(s)} is not a number", False
    if not is_finite_number(s):
        return f"score {short_repr(s)} is not a finite number", True
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
    if ids and all(is_int(v) for v in ids) and ids == list(range(ids[0], ids[0] + len(ids))) and len(ids) > 2:
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
                    bad(f"{label}: must be an object {{image_id, category_id, bbox, score}}, got {short_repr(r)}")
                    continue
                errors: List[str] = []
                faults: List[str] = []  # non-finite / absurd numbers: the result is skipped
                iid = r.get("image_id")
                if "image_id" not in r:
                    errors.append("missing 'image_id'")
                elif type(iid) is not int and not is_int(iid):  # the json reader's int first: it runs per result
                    errors.append(f"image_id {short_repr(iid)} is not an integer")
                elif iid not in gt_ids:
                    errors.append(f"image_id {iid} is not an image of the ground truth {gt_file}")
                cid = r.get("category_id")
                if "category_id" not in r:
                    errors.append("missing 'category_id'")
                elif isinstance(cid, bool) or not isinstance(cid, (int, str)) or cid not in cat_map:
                    errors.append(f"unknown category id {short_repr(cid)} (the categories of {gt_file} have ids "
                                  f"{known_txt})")
                elif cat_map[cid] == AGNOSTIC and not class_less_ok:
                    errors.append(f"category id {short_repr(cid)} is the class-less 'chromosome' category of "
                                  f"{gt_file}: such a detection has no class and can only be scored with "
                                  "--class-agnostic")
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
    from .evaluator import METRICS_FILE
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
                     max_dets_per_image: int = MAX_DETECTIONS_PER_IMAGE, max_file_bytes: Optional[int] = None,
                     max_file_bytes_name: str = f"{__name__}.MAX_PREDICT_FILE_BYTES"
                     ) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Prediction dicts of a folder of ``deepacc-predict`` outputs (the calls as ``instances`` and
    ``instances_top1``), one per ground-truth image that has an output, and what was read: the JSON
    files, the ground-truth images without an output, the distinct prediction settings, the
    detections skipped for non-finite or absurd numbers (``num_skipped``, ``skipped``: a box or score
    nan / inf, a box with x1 < x0 or y1 < y0) and those beyond the ``max_dets_per_image``
    highest-scored of their image (``num_dropped``, ``images_capped``).

    Raises :class:`EvalInputError` listing every problem of the folder (an output larger than
    ``max_file_bytes`` is one: it is not read; default :data:`MAX_PREDICT_FILE_BYTES`, named in the
    message as ``max_file_bytes_name``)."""
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
    limit = MAX_PREDICT_FILE_BYTES if max_file_bytes is None else int(max_file_bytes)
    skipped: List[str] = []
    n_skipped = n_dropped = n_capped = 0
    for path in files:
        def bad(reason, path=path):
            problems.append((path, reason))

        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        if size > limit:
            bad(f"{size / 2 ** 20:.0f} MiB, more than a deepacc-predict output can be (the limit is "
                f"{limit // 2 ** 20} MiB, {max_file_bytes_name}); not read")
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
                                                     else f"file_name {short_repr(fn)} is not a non-empty string"))
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
                bad(f"{label} must be an object with 'box', 'class' and 'score', got {short_repr(d)}")
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
                    bad(f"{label}: unknown class {short_repr(d['class'])} (expected 1..22, X, Y)")
                    ok = False
                if c is not None and "class_id" in d and d["class_id"] != c:
                    bad(f"{label}: class {d['class']!r} and class_id {short_repr(d['class_id'])} disagree")
                    ok = False
            elif "class_id" in d:
                if is_int(d["class_id"]) and 0 <= d["class_id"] < len(CLASS_NAMES):
                    c = int(d["class_id"])
                else:
                    bad(f"{label}: class_id {short_repr(d['class_id'])} must be an integer 0..{len(CLASS_NAMES) - 1}")
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


