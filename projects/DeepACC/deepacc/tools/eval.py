"""``deepacc-eval``: score any detector's output on a COCO ground truth with DeepACC's metrics.

Usage::

    deepacc-eval --gt test.json --results coco_instances_results.json --output out/eval
    deepacc-eval --gt test.json --predict-dir out/predict/ [--image-root DIR] [--json]

Two kinds of predictions are read (by the library's :mod:`deepacc.evaluation.readers`:
:func:`~deepacc.evaluation.readers.read_coco_results`, :func:`~deepacc.evaluation.readers.read_predict_dir`):

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
import json
import logging
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..settings import AssignmentSettings, CallThresholds

# The readers of the predictions (and their limits and errors): deepacc.evaluation.readers; their names
# stay importable from here.
from ..evaluation.readers import (MAX_DETECTIONS_PER_IMAGE, MAX_PREDICT_FILE_BYTES, MAX_PROBLEM_LINES,  # noqa: F401
                                  PROB_ORDER, EvalInputError, format_problems, read_coco_results, read_predict_dir)

__all__ = ["MAX_PROBLEM_LINES", "MAX_DETECTIONS_PER_IMAGE", "MAX_PREDICT_FILE_BYTES", "EvalInputError",
           "format_problems", "get_parser", "load_ground_truth", "read_coco_results", "read_predict_dir", "main"]

PROG = "deepacc-eval"


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


# --------------------------------------------------------------------------------------- settings
def _thresholds(args) -> Tuple[CallThresholds, AssignmentSettings, str]:
    """(call thresholds, assignment settings, where they come from): read once from the config, the
    flags override those objects; raises ValueError with a one-line message."""
    from ..config import (ConfigError, call_thresholds, get_cfg, load_config, unknown_key_message, validate_config,
                          validate_values)
    from ..karyotype.assignment import assignment_settings

    try:
        cfg = load_config(args.config_file or None)
    except Exception as exc:  # noqa: BLE001  (a file the user gave: one line)
        if isinstance(exc, ConfigError):  # a folder, YAML syntax, a _BASE_ loop: named by deepacc.config
            raise ValueError(f"--config-file {exc}") from None
        if args.config_file and not os.path.exists(args.config_file):
            raise ValueError(f"--config-file {args.config_file}: no such file") from None
        raise ValueError(f"--config-file {args.config_file}: {unknown_key_message(exc, get_cfg()) or exc}") from None
    source = args.config_file or "the default config"
    flags = {"score_thresh": ("--score-thresh", "TEST.DEEPACC.SCORE_THRESH", args.score_thresh),
             "nms_thresh": ("--nms-thresh", "TEST.DEEPACC.NMS_THRESH", args.nms_thresh),
             "iou_thresh": ("--iou-thresh", "TEST.DEEPACC.IOU_THRESH", args.iou_thresh)}
    given = {field: (flag, key, float(v)) for field, (flag, key, v) in flags.items() if v is not None}
    if args.extra_copy_cost is not None:
        given["extra_copy_cost"] = ("--extra-copy-cost", "TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST",
                                    float(args.extra_copy_cost))
    overridden_flags = [flag for flag, _, _ in given.values()]
    # the config's own values where no flag replaces them, then the flags' values: all problems at once
    problems = [p for p in validate_config(cfg) if p.startswith("TEST.DEEPACC.")
                and not any(p.startswith(key + " ") for _, key, _ in given.values())]
    problems += validate_values({key: v for _, key, v in given.values()})
    if problems:
        raise ConfigError(problems, source if not overridden_flags else f"{source} with {', '.join(overridden_flags)}")
    calls = call_thresholds(cfg)._replace(**{f: v for f, (_, _, v) in given.items() if f != "extra_copy_cost"})
    assignment = assignment_settings(cfg, None, args.extra_copy_cost)
    if overridden_flags:
        source += f", overridden by {', '.join(overridden_flags)}"
    return calls, assignment, source


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
        calls, assignment, source = _thresholds(args)
        thresholds = {"score_thresh": calls.score_thresh, "nms_thresh": calls.nms_thresh, "iou_thresh": calls.iou_thresh}
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
                                           max_dets_per_image=args.max_dets_per_image,
                                           max_file_bytes=MAX_PREDICT_FILE_BYTES,
                                           max_file_bytes_name="deepacc.tools.eval.MAX_PREDICT_FILE_BYTES")
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
    cost = assignment.extra_copy_cost
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
                enabled = assignment.enabled and n_probs == n
                if assignment.enabled and not enabled:
                    note(f"karyotype assignment off: {n - n_probs} of {n} result(s) carry no 'class_probs' "
                         f"(25 numbers, order {PROB_ORDER}), which the assignment needs; Acc/AER are the paper's "
                         "(model's top-1 classes)")
            else:
                enabled = args.assignment == "on"
            note("a COCO results json has one class per detection and no separate top-1 set: its detections serve "
                 "as both instances and instances_top1, so mAP_max = mAP by construction")
        if not with_classes or n_agnostic:
            note("class-agnostic AP50 / AP: every detection of the results json is ranked as a chromosome (there is "
                 f"no top-1 set) after the class-agnostic NMS at {calls.nms_thresh:g}, so several classes listed for "
                 "one box count once; boxes of one chromosome that overlap less count as duplicates")
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

    # The table's row is named after the predictions scored (their file or folder): they may come from
    # any detector, and --config-file gives the thresholds and the assignment, not the model that made them.
    label = os.path.basename(os.path.normpath(source_path)) or "DeepACC"
    if label.lower().endswith(".json"):
        label = label[:-5]
    ev_logger = logging.getLogger(MetaphaseEvaluator.__module__)
    level = ev_logger.level
    if kind == "predict-dir" and info["missing"]:
        ev_logger.setLevel(logging.ERROR)  # the images left out are named above already
    try:
        ev = MetaphaseEvaluator(gt_dicts, output_dir=args.output, distributed=False,
                                extra_copy_cost=cost if enabled else None, class_agnostic=args.class_agnostic,
                                method=label, **thresholds)
        ev.process(preds)
        results = ev.evaluate(print_table=False)  # the tables are printed below, where they belong
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
