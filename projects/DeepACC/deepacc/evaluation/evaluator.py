"""Framework-free evaluator of DeepACC (numpy + pycocotools; torch only to gather across ranks).

Both engines wrap :class:`MetaphaseEvaluator`: ``reset()`` before inference, ``process()`` with the
prediction dicts of each batch, ``evaluate()`` at the end. Metric definitions: ``docs/evaluation.md``
and :mod:`deepacc.evaluation.matching`.

Results (returned by ``evaluate()`` on rank 0, written to ``output_dir/metrics_deepacc.json``);
percentages are marked (%):

* ``mAP`` (%): COCO AP at IoU 0.5 over the classes with ground truth, on ``instances``
  (pycocotools); ``AP`` (%): AP@[.5:.95] on ``instances``; ``per_class_AP50`` / ``per_class_AP``.
* ``mAP_max`` (%): AP at IoU 0.5 on ``instances_top1``; ``per_class_AP50_max``.
* ``Acc`` (%), ``AER`` (%), with ``TP``, ``FP``, ``FN``, ``num_dets``, ``num_gt``.
* ``count_error``: per image ``|#kept top-1 detections - #ground truth|``: ``mean``, ``mean_signed``,
  ``exact`` (fraction of images with the right count), ``histogram``.
* ``confusion``: 24 x 24 matrix (true x predicted) of class-agnostically matched chromosomes,
  ``unmatched_dets``, ``unmatched_gt``, and ``denver``: misclassifications that stay within the
  true class's Denver group (``within_group_fraction``, and ``within_group_chance``: the fraction
  expected if a wrong class were drawn uniformly from the 23 others), a 7 x 7 group matrix.
* ``karyotype``: agreement of :func:`numerical_karyotype` of the kept detections with the
  dataset's ``karyotype`` (where stored) and with the karyotype of the ground-truth boxes.
* ``assignment`` (with ``extra_copy_cost`` set): the calls' classes are assigned per spread
  (:mod:`deepacc.karyotype.assignment`) before Acc/AER, the confusion and the karyotype are
  computed; mAP and mAP_max stay those of the model's detections. Reported: Acc / AER / TP / FP /
  FN without the assignment (the paper's protocol, ``assignment.without``), calls relabelled, and
  per image how the karyotype (against the ground-truth boxes) changed: ``fixed`` (argmax wrong,
  assigned right), ``broken`` (argmax right, assigned wrong), ``aneuploid_made_euploid`` (a right
  aneuploid argmax karyotype turned into a wrong euploid one, 46,XX or 46,XY); and per numerical
  abnormality of the ground truth (an autosome not at two copies, sex chromosomes other than XX /
  XY) whether the calls have its copy number before and after, and how often the assignment
  brought a rightly called abnormality back to normal (``abnormalities_made_normal``).
* ``agnostic``: the class-agnostic block (below), on every image.

Class-agnostic ground truth
---------------------------
An annotation whose ``category_id`` is ``K + 1`` (:data:`deepacc.karyotype.AGNOSTIC`, 25 with the
24 classes) is a chromosome whose identity is not annotated (e.g. BioImLab spreads, LabelMe
polygons all labelled ``chr``). Each image gets a *kind* from its non-crowd annotations:

* ``"classes"``: none is ``AGNOSTIC`` (every chromosome has one of the 24 classes);
* ``"agnostic"``: at least one is ``AGNOSTIC`` (all of them, or a "mixed" image where only some
  chromosomes are named: its classes are incomplete, so it cannot be scored per class either).
  An image without non-crowd annotations takes the dict's ``annotation_kind`` (``"agnostic"`` or
  ``"mixed"`` -> agnostic), else ``"classes"`` (as before).

The 24-class metrics (mAP, mAP_max, AP, Acc, AER, counts, per-class AP, ``count_error``, confusion,
karyotype, assignment) are computed **on the class images only** (mixed sets are scored per kind).
On a set without class images (or with ``class_agnostic=True``) they are not computed:
``mAP``, ``mAP_max``, ``AER``, ``Acc``, ``AP``, ``TP``, ``FP``, ``FN``, ``num_dets``, ``num_gt`` are
``None`` and the nested 24-class sections are absent; ``num_images`` counts the images behind the
24-class metrics (0 then). ``image_kinds`` gives ``{"classes": n, "agnostic": m}`` of the evaluated
images. On sets of class images only, every 24-class number is what it was before this block
existed.

``agnostic`` = ``{"all": {...}, "agnostic_images": {...}, "class_images": {...}}`` (a kind without
images is left out), classes ignored everywhere, so 24-class ground truth is scored this way too.
Each block (percentages marked (%)):

* **The chromosome score.** The block ranks and thresholds each top-1 detection by its
  **chromosome probability** ``P(chromosome) = 1 - P(background) = sum_j p_j`` (``instances_top1``'s
  ``class_probs``), the detector's answer to "is this a chromosome?", not by its top class's
  probability (the ``score`` of Acc/AER): a chromosome whose class the model hesitates between two
  (p = 0.45 each) is found with P(chromosome) = 0.9 but is no call of Acc/AER. Where a prediction has
  no ``class_probs`` (a COCO results file), or with ``agnostic_score="class"``, the top-1 score is used.
* ``AP50`` (%), ``AP`` (%, AP@[.5:.95]): pycocotools' COCO AP (as ``mAP`` / ``AP`` above, area
  "all", ``maxDets`` = ``max_dets`` per image) with the ground truth as ONE category
  ``"chromosome"`` (crowd annotations stay "ignore" regions) and as detections the **top-1 set**
  ``instances_top1`` ranked by the chromosome score after the **class-agnostic NMS at
  ``nms_thresh``** (no score threshold): the ranked list whose head at ``score_thresh`` is the
  chromosomes found below, i.e. what the pipeline reports. One box per proposal: not ``instances``,
  which holds one detection per (proposal, class), so every extra class of a proposal would be a
  second box on the same chromosome -- a false positive of a class-agnostic ranking -- and the AP
  would measure how many classes the model keeps, not how well it finds chromosomes. The NMS for the
  same reason: two proposals on one chromosome whose top-1 classes differ both survive the
  detector's per-class NMS, and the second would be a false positive the reported calls never hold.
  ``AP50_before_nms`` / ``AP_before_nms``: the same without that NMS (every top-1 detection). (Matching by
  :class:`~deepacc.evaluation.coco_ap.FastMatchingCOCOeval`: pycocotools' results, faster.)
* ``recall``, ``precision`` (%): the chromosomes **found**: top-1 detections with chromosome score
  ``>= score_thresh`` (the clinical threshold), then class-agnostic NMS at ``nms_thresh``
  (:func:`~deepacc.evaluation.matching.filter_top1`), matched greedily in descending score, each
  taking the not yet matched ground truth with the highest IoU ``>= iou_thresh``, classes ignored
  (:mod:`~deepacc.evaluation.matching`). ``TP`` = matched detections (= matched ground truths),
  ``FP`` = ``num_calls - TP`` (background, duplicates, poor boxes), ``FN`` = ``num_gt - TP``;
  ``recall = TP / num_gt``, ``precision = TP / num_calls`` (pooled over the images; NaN on a zero
  denominator). A well-placed detection of the wrong class is a TP here (and an FP of Acc). With the
  top-1 score (above) these are exactly the calls of Acc/AER.
* ``count_error``: per spread ``#found - #annotated chromosomes`` (non-crowd), on the spreads
  whose annotation is complete: the dict's ``annotation_complete`` when present, otherwise
  ``True`` for a class image (assumed complete, as ``count_error`` above assumes) and ``False``
  for an agnostic one. ``median_abs``, ``mean_abs``, ``mean_signed`` (positive = over-counting;
  NaN without complete spreads), ``n_spreads`` (complete spreads used), ``n_incomplete`` (left out).
* ``num_images``.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..karyotype import CLASS_NAMES, assign_classes, canonical_name, group_of, normalize_karyotype, numerical_karyotype
from ..jsonstream import json_safe
from ..settings import DEFAULT_CALLS
from .coco_ap import build_coco_dt, build_coco_gt, coco_ap, coco_ap_subsets
from .matching import filter_top1, match_image, ratios

__all__ = ["MetaphaseEvaluator", "format_table", "format_tables", "format_agnostic_table", "format_per_class_table",
           "flatten_scalars", "image_kind", "AGNOSTIC_KINDS"]

logger = logging.getLogger(__name__)

_XYXY_ABS, _XYWH_ABS = 0, 1
METRICS_FILE = "metrics_deepacc.json"
#: The blocks of ``results["agnostic"]``, in table order.
AGNOSTIC_KINDS = ("agnostic_images", "class_images", "all")
#: The 24-class headline keys, ``None`` when no image is scored with classes.
_CLASS_KEYS = ("mAP", "mAP_max", "AER", "Acc", "AP", "TP", "FP", "FN", "num_dets", "num_gt")


def _np(x, dtype=None) -> np.ndarray:
    """numpy view of an array-like or of a (possibly CUDA) torch tensor, without importing torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _kind(classes: np.ndarray, d: Mapping, k: int) -> str:
    if len(classes):
        return "agnostic" if (classes == k + 1).any() else "classes"
    # nothing to read the kind from: what the dict says, else a class image (as before)
    return "agnostic" if d.get("annotation_kind") in ("agnostic", "mixed") else "classes"


def image_kind(d: Mapping, num_classes: int = len(CLASS_NAMES)) -> str:
    """``"classes"`` or ``"agnostic"``: how :class:`MetaphaseEvaluator` scores a dataset dict (an
    image with a non-crowd annotation of ``category_id == num_classes + 1`` is class-agnostic; one
    without non-crowd annotations follows its ``annotation_kind``, else counts as a class image)."""
    cls = [int(a["category_id"]) for a in d.get("annotations", ()) if not int(a.get("iscrowd", 0))]
    return _kind(np.asarray(cls, dtype=np.int64), d, num_classes)


def _gt_record(d: Mapping, k: int) -> Dict[str, Any]:
    where = d.get("file_name", f"image_id={d.get('image_id')!r}")
    for key in ("image_id", "annotations"):
        if key not in d:
            raise ValueError(f"dataset dict of {where}: missing key {key!r}")
    boxes, classes, crowd = [], [], []
    for j, a in enumerate(d["annotations"]):
        if "bbox" not in a or "category_id" not in a:
            raise ValueError(f"{where}: annotation {j} lacks 'bbox' or 'category_id'")
        b = [float(v) for v in a["bbox"]]
        if len(b) != 4:
            raise ValueError(f"{where}: annotation {j} has a bbox of {len(b)} numbers, expected 4")
        mode = int(a.get("bbox_mode", _XYXY_ABS))
        if mode == _XYWH_ABS:
            b = [b[0], b[1], b[0] + b[2], b[1] + b[3]]
        elif mode != _XYXY_ABS:
            raise ValueError(f"{where}: annotation {j} has bbox_mode {mode}; only 0 (XYXY_ABS) and 1 (XYWH_ABS) are supported")
        c = int(a["category_id"])
        if not (0 <= c < k or c == k + 1):
            raise ValueError(f"{where}: annotation {j} has category_id {c}, expected 0..{k - 1} "
                             f"(or {k + 1}: a chromosome without class)")
        boxes.append(b)
        classes.append(c)
        crowd.append(int(a.get("iscrowd", 0)))
    classes_a = np.asarray(classes, dtype=np.int64)
    crowd_a = np.asarray(crowd, dtype=np.int64)
    kind = _kind(classes_a[crowd_a == 0], d, k)
    complete = d.get("annotation_complete")
    return {
        "image_id": int(d["image_id"]),
        "height": int(d.get("height", 0)),
        "width": int(d.get("width", 0)),
        "boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        "classes": classes_a,
        "iscrowd": crowd_a,
        "karyotype": d.get("karyotype"),
        "where": where,
        "kind": kind,
        "complete": bool(complete) if complete is not None else kind == "classes",
    }


def _instances(pred: Mapping, key: str, k: int) -> Dict[str, np.ndarray]:
    iid = pred.get("image_id")
    if key not in pred:
        raise ValueError(f"prediction for image_id={iid!r}: missing {key!r}")
    inst = pred[key]
    try:
        boxes = _np(inst["boxes"], np.float64).reshape(-1, 4)
        scores = _np(inst["scores"], np.float64).reshape(-1)
        classes = _np(inst["classes"]).reshape(-1).astype(np.int64)
    except KeyError as e:
        raise ValueError(f"prediction for image_id={iid!r}: {key!r} lacks {e}") from None
    if not len(boxes) == len(scores) == len(classes):
        raise ValueError(f"prediction for image_id={iid!r}: {key!r} has {len(boxes)} boxes, "
                         f"{len(scores)} scores and {len(classes)} classes")
    if len(classes) and (classes.min() < 0 or classes.max() >= k):
        raise ValueError(f"prediction for image_id={iid!r}: {key!r} has classes outside 0..{k - 1}")
    out = {"boxes": boxes, "scores": scores, "classes": classes}
    probs = inst.get("class_probs") if hasattr(inst, "get") else None
    if probs is not None:
        probs = _np(probs, np.float64)
        if probs.ndim == 2 and probs.shape == (len(scores), k + 1):
            out["chromosome_scores"] = 1.0 - probs[:, k]  # P(chromosome) = 1 - P(background)
    return out


class MetaphaseEvaluator:
    """mAP, mAP_max, Acc, AER and the chromosome-level diagnostics of DeepACC.

    Args:
        dataset_dicts: Detectron2-format dataset dicts (``image_id``, ``annotations`` with
            ``bbox``, ``bbox_mode`` 0/1, ``category_id`` 0..K-1, optional ``iscrowd``; optional
            ``karyotype``). Crowd annotations are COCO "ignore" regions for mAP and are left out
            of the Acc/AER/count ground truth.
        class_names: class name of each contiguous index (default 1..22, X, Y); Denver groups are
            looked up by name (group metrics are skipped when a name is not a chromosome).
        output_dir: where ``metrics_deepacc.json``, ``confusion_matrix.csv`` and
            ``confusion_matrix.png`` go (nothing is written when ``None``).
        score_thresh, nms_thresh, iou_thresh: Acc/AER filter and matching thresholds.
        distributed: gather the per-rank state with ``torch.distributed.all_gather_object`` when
            a process group with more than one rank is initialised.
        max_dets: COCO ``maxDets`` (per image and class) for mAP / mAP_max.
        save_plot: write the confusion PNG (matplotlib) when ``output_dir`` is set.
        extra_copy_cost: ``None`` (default): the calls keep the model's top-1 class (the paper);
            a number ``>= 0``: karyotype-consistent assignment of each spread's calls with this
            cost per extra copy (``TEST.DEEPACC.ASSIGNMENT``; needs ``class_probs`` in
            ``instances_top1``).
        class_agnostic: score every image with its classes ignored: only the ``agnostic`` block is
            computed, the 24-class metrics are ``None`` (``deepacc-eval --class-agnostic``).
        method: the name of the evaluated model in the printed table's ``Method`` column; the engines
            pass :func:`deepacc.config.method_of` of their config (``"Faster R-CNN"``, ``"DeepACC"``,
            ... :func:`deepacc.settings.method_label`).

    Ground truth with ``category_id == K + 1`` (:data:`deepacc.karyotype.AGNOSTIC`) is a chromosome
    without class: such images are scored class-agnostically only (module docstring).

    Only the images passed to :meth:`process` are evaluated (each ``image_id`` once; a repeated
    one, e.g. from a padded distributed sampler, is ignored).
    """

    def __init__(
        self,
        dataset_dicts: Sequence[Mapping],
        class_names: Sequence[str] = CLASS_NAMES,
        output_dir: Optional[str] = None,
        score_thresh: float = DEFAULT_CALLS.score_thresh,
        nms_thresh: float = DEFAULT_CALLS.nms_thresh,
        iou_thresh: float = DEFAULT_CALLS.iou_thresh,
        distributed: bool = True,
        max_dets: int = 100,
        save_plot: bool = True,
        extra_copy_cost: Optional[float] = None,
        class_agnostic: bool = False,
        agnostic_score: str = "chromosome",
        method: str = "DeepACC",
    ):
        self.method = str(method)
        self.class_names = tuple(str(n) for n in class_names)
        self.class_agnostic = bool(class_agnostic)
        if agnostic_score not in ("chromosome", "class"):
            raise ValueError(f"agnostic_score must be 'chromosome' or 'class', got {agnostic_score!r}")
        self.agnostic_score = agnostic_score
        self.output_dir = output_dir
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.iou_thresh = float(iou_thresh)
        self.distributed = bool(distributed)
        self.max_dets = int(max_dets)
        self.save_plot = bool(save_plot)
        self.extra_copy_cost = None if extra_copy_cost is None else float(extra_copy_cost)
        if self.extra_copy_cost is not None and not self.extra_copy_cost >= 0:
            raise ValueError(f"extra_copy_cost must be >= 0 (got {extra_copy_cost})")
        k = len(self.class_names)
        self._gt: Dict[int, Dict[str, Any]] = {}
        for d in dataset_dicts:
            r = _gt_record(d, k)
            if r["image_id"] in self._gt:
                raise ValueError(f"dataset dict of {r['where']}: image_id {r['image_id']} is not unique")
            self._gt[r["image_id"]] = r
        try:
            self._groups: Optional[List[str]] = [group_of(n) for n in self.class_names]
        except KeyError:
            self._groups = None
        self._coco_gt = None
        self._coco_gt_agnostic = None
        self.reset()

    def _with_classes(self, gt: Mapping[str, Any]) -> bool:
        """Whether an image enters the 24-class metrics (a class image, classes not ignored)."""
        return not self.class_agnostic and gt["kind"] == "classes"

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every processed prediction."""
        self._records: List[Dict[str, Any]] = []

    def process(self, predictions: Sequence[Mapping]) -> None:
        """Add the predictions of a batch: one contract prediction dict per image.

        Each dict: ``image_id``, ``instances`` and ``instances_top1`` with ``boxes`` (N, 4) XYXY in
        original image coordinates, ``scores`` (N,), ``classes`` (N,) 0..K-1 (numpy arrays or
        tensors; ``class_probs`` of ``instances_top1`` is needed only for the assignment and is
        not kept). The Acc/AER matching of the image is done here, so it is spread over the ranks.
        """
        k = len(self.class_names)
        for p in predictions:
            if "image_id" not in p:
                raise ValueError("prediction dict without 'image_id'")
            iid = int(p["image_id"])
            gt = self._gt.get(iid)
            if gt is None:
                raise ValueError(f"prediction for image_id={iid}: no such image in the dataset dicts")
            inst = _instances(p, "instances", k)
            top1 = _instances(p, "instances_top1", k)
            ok = gt["iscrowd"] == 0
            with_classes = self._with_classes(gt)
            classes, model_kept = top1["classes"], None
            if self.extra_copy_cost is not None and with_classes:
                classes, model_kept = self._assign(p, top1, iid)
            m = match_image(top1["boxes"], top1["scores"], classes, gt["boxes"][ok],
                            gt["classes"][ok], self.score_thresh, self.nms_thresh, self.iou_thresh)
            chrom = top1.get("chromosome_scores") if self.agnostic_score == "chromosome" else None
            if chrom is None:  # the calls: the confusion matching pairs them with chromosomes of any class
                agnostic = {"tp": m["num_dets"] - m["conf_unmatched_dets"], "num_calls": m["num_dets"],
                            "num_gt": m["num_gt"]}
            else:  # the chromosomes found: P(chromosome) >= score_thresh, whatever the class
                gt_any = np.zeros(int(ok.sum()), dtype=np.int64)
                ma = match_image(top1["boxes"], chrom, np.zeros_like(top1["classes"]), gt["boxes"][ok], gt_any,
                                 self.score_thresh, self.nms_thresh, self.iou_thresh)
                agnostic = {"tp": ma["tp"], "num_calls": ma["num_dets"], "num_gt": ma["num_gt"]}
            if not with_classes:  # no 24-class metric: keep what the class-agnostic block needs
                self._records.append({"image_id": iid, "instances_top1": top1, "agnostic": agnostic})
                continue
            if model_kept is not None:
                m["model_kept_classes"] = model_kept
                plain = match_image(top1["boxes"], top1["scores"], top1["classes"], gt["boxes"][ok],
                                    gt["classes"][ok], self.score_thresh, self.nms_thresh, self.iou_thresh)
                m["plain_tp"], m["plain_fp"], m["plain_fn"] = plain["tp"], plain["fp"], plain["fn"]
            self._records.append({
                "image_id": iid,
                "instances": inst,
                "instances_top1": top1,
                "match": {key: m[key] for key in ("tp", "fp", "fn", "num_dets", "num_gt", "kept_classes",
                                                 "conf_gt", "conf_pred", "conf_unmatched_dets",
                                                 "conf_unmatched_gt", "model_kept_classes", "plain_tp", "plain_fp",
                                                 "plain_fn") if key in m},
                "agnostic": agnostic,
            })

    def _assign(self, pred: Mapping, top1: Dict[str, np.ndarray], iid: int):
        """Classes of ``instances_top1`` with the kept calls assigned jointly, and the model's
        classes of the kept calls (in the filter's order)."""
        probs = pred["instances_top1"].get("class_probs") if hasattr(pred["instances_top1"], "get") else None
        if probs is None:
            raise ValueError(f"prediction for image_id={iid}: the karyotype assignment needs 'class_probs' in "
                             "'instances_top1'")
        probs = _np(probs, np.float64)
        probs = probs.reshape(len(top1["classes"]), -1) if len(top1["classes"]) else np.zeros((0, len(self.class_names) + 1))
        kept = filter_top1(top1["boxes"], top1["scores"], self.score_thresh, self.nms_thresh)
        classes = top1["classes"].copy()
        classes[kept] = assign_classes(probs[kept], self.extra_copy_cost, self.class_names)
        return classes, top1["classes"][kept]

    def _gather(self) -> Optional[List[Dict[str, Any]]]:
        records = self._records
        if not self.distributed:
            return records
        try:
            import torch.distributed as dist
        except ImportError:  # pragma: no cover - torch is a dependency of the package
            return records
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return records
        gathered: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, records)
        if dist.get_rank() != 0:
            return None
        return [r for part in gathered for r in part]

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, print_table: bool = True) -> Dict[str, Any]:
        """Compute every metric (rank 0; ``{}`` on other ranks and when nothing was processed).

        With ``print_table`` (the default) the tables of the results (:func:`format_tables`) are logged
        at INFO by this module's logger when logging is set up for it, else printed on stdout; with
        ``print_table=False`` nothing is shown: the caller formats ``results`` itself
        (``deepacc-eval``)."""
        records = self._gather()
        if records is None:
            return {}
        seen, recs = set(), []
        for r in sorted(records, key=lambda r: r["image_id"]):  # stable: first occurrence wins
            if r["image_id"] not in seen:
                seen.add(r["image_id"])
                recs.append(r)
        if not recs:
            logger.warning("MetaphaseEvaluator: no predictions were processed; nothing to evaluate")
            return {}
        missing = len(self._gt) - len(recs)
        if missing:
            logger.warning("MetaphaseEvaluator: %d of %d dataset images have no prediction and are "
                           "left out of the metrics", missing, len(self._gt))
        results = self._compute(recs)
        if self.output_dir:
            self._write(results)
        if print_table:
            table = format_tables(results, name=self.method)
            if logger.isEnabledFor(logging.INFO) and logger.hasHandlers():
                logger.info("DeepACC evaluation on %d images:\n%s", len(recs), table)
            else:
                print(f"DeepACC evaluation on {len(recs)} images:\n{table}")
        return results

    def _compute(self, recs: List[Dict[str, Any]]) -> Dict[str, Any]:
        cls_recs = [r for r in recs if self._with_classes(self._gt[r["image_id"]])]
        if cls_recs:
            results = self._compute_classes(cls_recs)
        else:  # nothing has classes to score: the 24-class metrics do not exist (not 0)
            results = {"num_images": 0, **{key: None for key in _CLASS_KEYS}, "settings": self._settings()}
        kinds = Counter(self._gt[r["image_id"]]["kind"] for r in recs)
        results["image_kinds"] = {"classes": int(kinds["classes"]), "agnostic": int(kinds["agnostic"])}
        results["agnostic"] = self._compute_agnostic(recs)
        return results

    def _settings(self) -> Dict[str, Any]:
        return {"score_thresh": self.score_thresh, "nms_thresh": self.nms_thresh,
                "iou_thresh": self.iou_thresh, "max_dets": self.max_dets,
                "assignment": {"enabled": self.extra_copy_cost is not None, "extra_copy_cost": self.extra_copy_cost},
                "class_agnostic": self.class_agnostic}

    def _agnostic_scores(self, rec: Mapping) -> np.ndarray:
        """Ranking score of the class-agnostic block: P(chromosome) where the prediction has
        ``class_probs`` (``agnostic_score="chromosome"``), else the top-1 class score."""
        top1 = rec["instances_top1"]
        chrom = top1.get("chromosome_scores") if self.agnostic_score == "chromosome" else None
        return top1["scores"] if chrom is None else chrom

    def _agnostic_dt(self, recs: List[Dict[str, Any]], nms: bool):
        """The COCO detections of the class-agnostic AP: each image's top-1 detections ranked by the
        chromosome score, one category; with ``nms`` only those kept by the class-agnostic NMS at
        ``nms_thresh`` (no score threshold): the ranked list whose head, at ``score_thresh``, is the
        chromosomes found."""
        rows = []
        for r in recs:
            top1, scores = r["instances_top1"], self._agnostic_scores(r)
            keep = (filter_top1(top1["boxes"], scores, -np.inf, self.nms_thresh) if nms
                    else np.arange(len(scores)))
            rows.append({"image_id": r["image_id"], "boxes": np.asarray(top1["boxes"]).reshape(-1, 4)[keep],
                         "scores": np.asarray(scores).reshape(-1)[keep], "classes": np.zeros(len(keep), dtype=np.int64)})
        return build_coco_dt(self._coco_gt_agnostic, rows)

    def _compute_agnostic(self, recs: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
        """The class-agnostic block of every kind that has images (definitions: module docstring)."""
        if self._coco_gt_agnostic is None:  # one category, every annotation in it (crowd stays crowd)
            self._coco_gt_agnostic = build_coco_gt(
                [dict(g, classes=np.zeros_like(g["classes"])) for g in self._gt.values()], ("chromosome",))
        groups = {"agnostic_images": [r for r in recs if self._gt[r["image_id"]]["kind"] != "classes"],
                  "class_images": [r for r in recs if self._gt[r["image_id"]]["kind"] == "classes"],
                  "all": recs}
        groups = {kind: g for kind, g in groups.items() if g}
        subsets = {kind: [r["image_id"] for r in g] for kind, g in groups.items()}
        aps = coco_ap_subsets(self._coco_gt_agnostic, self._agnostic_dt(recs, nms=True), subsets, ("chromosome",),
                              None, self.max_dets)
        # the same before the class-agnostic NMS: every top-1 detection (the definition of before)
        raw = coco_ap_subsets(self._coco_gt_agnostic, self._agnostic_dt(recs, nms=False), subsets, ("chromosome",),
                              None, self.max_dets)
        out: Dict[str, Dict[str, Any]] = {}
        for kind, g in groups.items():
            counts = np.asarray([[r["agnostic"]["tp"], r["agnostic"]["num_calls"], r["agnostic"]["num_gt"]] for r in g],
                                dtype=np.int64).reshape(-1, 3)
            tp, n_calls, n_gt = (int(v) for v in counts.sum(axis=0))
            complete = np.asarray([self._gt[r["image_id"]]["complete"] for r in g], dtype=bool)
            diff = (counts[:, 1] - counts[:, 2])[complete]
            out[kind] = {
                "num_images": len(g),
                "AP50": 100.0 * aps[kind]["AP50"],
                "AP": 100.0 * aps[kind]["AP"],
                "AP50_before_nms": 100.0 * raw[kind]["AP50"],
                "AP_before_nms": 100.0 * raw[kind]["AP"],
                "recall": 100.0 * tp / n_gt if n_gt else float("nan"),
                "precision": 100.0 * tp / n_calls if n_calls else float("nan"),
                "TP": tp, "FP": n_calls - tp, "FN": n_gt - tp, "num_calls": n_calls, "num_gt": n_gt,
                "count_error": {
                    "median_abs": float(np.median(np.abs(diff))) if diff.size else float("nan"),
                    "mean_abs": float(np.abs(diff).mean()) if diff.size else float("nan"),
                    "mean_signed": float(diff.mean()) if diff.size else float("nan"),
                    "n_spreads": int(diff.size),
                    "n_incomplete": int((~complete).sum()),
                },
            }
        return out

    def _compute_classes(self, recs: List[Dict[str, Any]]) -> Dict[str, Any]:
        """The 24-class metrics of the class images ``recs`` (exactly the evaluator's numbers of
        before the class-agnostic block)."""
        k = len(self.class_names)
        names = self.class_names
        img_ids = [r["image_id"] for r in recs]
        if self._coco_gt is None:  # built once, reused by every evaluate() and both AP runs
            self._coco_gt = build_coco_gt([g for g in self._gt.values() if self._with_classes(g)], names)
        dt_all = build_coco_dt(self._coco_gt, [dict(r["instances"], image_id=r["image_id"]) for r in recs])
        ap_all = coco_ap(self._coco_gt, dt_all, img_ids, names, None, self.max_dets)
        dt_top1 = build_coco_dt(self._coco_gt, [dict(r["instances_top1"], image_id=r["image_id"]) for r in recs])
        ap_top1 = coco_ap(self._coco_gt, dt_top1, img_ids, names, [0.5], self.max_dets)

        ms = [r["match"] for r in recs]
        tp = sum(m["tp"] for m in ms)
        fp = sum(m["fp"] for m in ms)
        fn = sum(m["fn"] for m in ms)
        n_det = sum(m["num_dets"] for m in ms)
        n_gt = sum(m["num_gt"] for m in ms)
        rat = ratios(tp, fp, fn, n_det, n_gt)

        diff = np.asarray([m["num_dets"] - m["num_gt"] for m in ms], dtype=np.int64)
        hist = Counter(np.abs(diff).tolist())

        conf = np.zeros((k, k), dtype=np.int64)
        cg = np.concatenate([m["conf_gt"] for m in ms]).astype(np.int64)
        cp = np.concatenate([m["conf_pred"] for m in ms]).astype(np.int64)
        np.add.at(conf, (cg, cp), 1)
        confusion: Dict[str, Any] = {
            "class_names": list(names),
            "matrix": conf.tolist(),
            "matched": int(conf.sum()),
            "correct": int(np.trace(conf)),
            "unmatched_dets": int(sum(m["conf_unmatched_dets"] for m in ms)),
            "unmatched_gt": int(sum(m["conf_unmatched_gt"] for m in ms)),
        }
        if self._groups is not None:
            confusion["denver"] = _denver_summary(conf, self._groups)

        results: Dict[str, Any] = {
            "num_images": len(recs),
            "mAP": 100.0 * ap_all["AP50"],
            "mAP_max": 100.0 * ap_top1["AP50"],
            "AER": 100.0 * rat["aer"],
            "Acc": 100.0 * rat["acc"],
            "AP": 100.0 * ap_all["AP"],
            "TP": tp, "FP": fp, "FN": fn, "num_dets": n_det, "num_gt": n_gt,
            "per_class_AP50": {n: 100.0 * v for n, v in zip(names, ap_all["per_class_AP50"])},
            "per_class_AP": {n: 100.0 * v for n, v in zip(names, ap_all["per_class_AP"])},
            "per_class_AP50_max": {n: 100.0 * v for n, v in zip(names, ap_top1["per_class_AP50"])},
            "count_error": {
                "mean": float(np.abs(diff).mean()),
                "mean_signed": float(diff.mean()),
                "exact": float((diff == 0).mean()),
                "histogram": {str(e): int(hist[e]) for e in sorted(hist)},
            },
            "confusion": confusion,
            "karyotype": self._karyotype_agreement(recs),
            "settings": self._settings(),
        }
        if self.extra_copy_cost is not None:
            results["assignment"] = self._assignment_changes(recs)
        return results

    def _assignment_changes(self, recs: List[Dict[str, Any]]) -> Dict[str, Any]:
        """What the assignment changed: calls relabelled, karyotypes fixed / broken, and whether the
        numerical abnormalities of the ground truth (an autosome not at 2 copies, sex chromosomes
        other than XX / XY) keep their copy number in the calls."""
        ms = [r["match"] for r in recs]
        tp, fp, fn = (sum(m[f"plain_{x}"] for m in ms) for x in ("tp", "fp", "fn"))
        plain = ratios(tp, fp, fn, sum(m["num_dets"] for m in ms), sum(m["num_gt"] for m in ms))
        out = {"extra_copy_cost": self.extra_copy_cost, "calls": 0, "relabelled": 0,
               "without": {"Acc": 100.0 * plain["acc"], "AER": 100.0 * plain["aer"], "TP": tp, "FP": fp, "FN": fn}}
        try:
            numerical_karyotype(list(self.class_names))
            canon = [canonical_name(n) for n in self.class_names]
        except (ValueError, KeyError):
            for r in recs:
                out["calls"] += len(r["match"]["model_kept_classes"])
                out["relabelled"] += int((r["match"]["model_kept_classes"] != r["match"]["kept_classes"]).sum())
            return out
        euploid = ("46,XX", "46,XY")
        fixed = broken = aneu_right = aneu_broken = 0
        abnormal = kept_before = kept_after = normalised = 0
        for r in recs:
            m = r["match"]
            model, assigned = m["model_kept_classes"], m["kept_classes"]
            out["calls"] += len(model)
            out["relabelled"] += int((model != assigned).sum())
            gt = self._gt[r["image_id"]]
            truth_names = [canon[c] for c in gt["classes"][gt["iscrowd"] == 0].tolist()]
            before_names = [canon[c] for c in model.tolist()]
            after_names = [canon[c] for c in assigned.tolist()]
            truth = numerical_karyotype(truth_names)
            before, after = numerical_karyotype(before_names), numerical_karyotype(after_names)
            fixed += before != truth and after == truth
            broken += before == truth and after != truth
            if before == truth and truth not in euploid:
                aneu_right += 1
                aneu_broken += after != truth and after in euploid
            tc, bc, ac = Counter(truth_names), Counter(before_names), Counter(after_names)
            units = [(n,) for n in canon if n not in ("X", "Y") and tc[n] != 2]
            if (tc["X"], tc["Y"]) not in ((2, 0), (1, 1)):
                units.append(("X", "Y"))
            for u in units:
                want = [tc[n] for n in u]
                abnormal += 1
                kept_before += [bc[n] for n in u] == want
                kept_after += [ac[n] for n in u] == want
                normal = [2] if u != ("X", "Y") else None
                normalised += ([bc[n] for n in u] == want and
                               ([ac[n] for n in u] == normal if normal else (ac["X"], ac["Y"]) in ((2, 0), (1, 1))))
        out.update({"karyotypes_fixed": fixed, "karyotypes_broken": broken,
                    "aneuploid_right_before": aneu_right, "aneuploid_made_euploid": aneu_broken,
                    "abnormalities": abnormal, "abnormalities_called_before": kept_before,
                    "abnormalities_called_after": kept_after, "abnormalities_made_normal": normalised})
        return out

    def _karyotype_agreement(self, recs: List[Dict[str, Any]]) -> Dict[str, Any]:
        try:
            canon = [c for c in self.class_names]
            numerical_karyotype(canon)
        except ValueError:
            return {}
        stored_n = stored_ok = gt_ok = 0
        for r in recs:
            pred = numerical_karyotype([self.class_names[c] for c in r["match"]["kept_classes"].tolist()])
            gt = self._gt[r["image_id"]]
            truth_boxes = numerical_karyotype([self.class_names[c] for c in gt["classes"][gt["iscrowd"] == 0].tolist()])
            gt_ok += pred == truth_boxes
            if gt["karyotype"]:
                try:
                    truth = normalize_karyotype(gt["karyotype"])
                except ValueError as e:
                    raise ValueError(f"dataset dict of {gt['where']}: {e}") from None
                stored_n += 1
                stored_ok += pred == truth
        return {
            "agreement_with_stored": 100.0 * stored_ok / stored_n if stored_n else float("nan"),
            "num_with_stored": stored_n,
            "agreement_with_gt_boxes": 100.0 * gt_ok / len(recs),
        }

    def _write(self, results: Dict[str, Any]) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        path = os.path.join(self.output_dir, METRICS_FILE)
        from ..fileio import atomic_write

        atomic_write(path, json.dumps(json_safe(results), indent=1).encode("utf-8"))
        if "confusion" not in results:  # no image scored with classes
            return
        conf = np.asarray(results["confusion"]["matrix"])
        from .plots import save_confusion_csv, save_confusion_png

        save_confusion_csv(conf, self.class_names, os.path.join(self.output_dir, "confusion_matrix.csv"))
        if self.save_plot:
            save_confusion_png(conf, self.class_names, os.path.join(self.output_dir, "confusion_matrix.png"),
                               groups=self._groups)


def _denver_summary(conf: np.ndarray, groups: Sequence[str]) -> Dict[str, Any]:
    """Within- vs across-group misclassifications of a confusion matrix (classes' group letters)."""
    k = len(groups)
    g = np.asarray(groups)
    same = g[:, None] == g[None, :]
    off = ~np.eye(k, dtype=bool)
    wrong = conf * off
    n_wrong = int(wrong.sum())
    within = int((wrong * same).sum())
    # expected within-group fraction if a wrong label were uniform over the other k-1 classes
    chance_per_class = (same.sum(axis=1) - 1) / max(k - 1, 1)
    wrong_per_true = wrong.sum(axis=1)
    letters = sorted(set(groups))
    gm = np.zeros((len(letters), len(letters)), dtype=np.int64)
    gi = np.asarray([letters.index(x) for x in groups])
    np.add.at(gm, (gi[:, None].repeat(k, 1), gi[None, :].repeat(k, 0)), conf)
    return {
        "misclassified": n_wrong,
        "within_group": within,
        "across_groups": n_wrong - within,
        "within_group_fraction": within / n_wrong if n_wrong else float("nan"),
        "within_group_chance": float((chance_per_class * wrong_per_true).sum() / n_wrong) if n_wrong else float("nan"),
        "groups": letters,
        "group_matrix": gm.tolist(),
    }


# ---------------------------------------------------------------------- tables
_COLUMNS = (("mAP(%)", "mAP"), ("mAP_max(%)", "mAP_max"), ("AER(%)", "AER"), ("Acc(%)", "Acc"),
            ("AP@[.5:.95](%)", "AP"))


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2f}"


def format_table(results: Mapping, name: str = "DeepACC") -> str:
    """Table laid out like the paper's Table 1/2: ``Method | mAP(%) | mAP_max(%) | AER(%) | Acc(%)``
    plus ``AP@[.5:.95](%)``.

    ``results`` is one result dict of :meth:`MetaphaseEvaluator.evaluate` (one row called
    ``name``) or a mapping ``{row name: result dict}`` (one row each, e.g. an ablation).
    """
    if "mAP" in results:
        rows = [(name, results)]
    else:
        rows = list(results.items())
    head = ["Method"] + [c for c, _ in _COLUMNS]
    body = [[str(n)] + [_fmt(r.get(key)) for _, key in _COLUMNS] for n, r in rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


_KIND_LABELS = {"agnostic_images": "class-agnostic GT", "class_images": "24-class GT", "all": "all"}


def _agnostic_cells(kind: str, b: Mapping) -> List[str]:
    ce = b.get("count_error", {})
    med = ce.get("median_abs")
    n = ce.get("n_spreads", 0)
    count = "-" if not n or med is None or (isinstance(med, float) and math.isnan(med)) else f"{med:g} ({n})"
    return [_KIND_LABELS.get(kind, kind), str(b.get("num_images", "-")), _fmt(b.get("AP50")), _fmt(b.get("AP")),
            _fmt(b.get("recall")), _fmt(b.get("precision")), f"{b.get('num_calls', '-')}/{b.get('num_gt', '-')}",
            count]


def format_agnostic_table(results: Mapping) -> str:
    """The class-agnostic table: ``kind | images | AP50(%) | AP(%) | recall(%) | precision(%) |
    calls/GT | median abs(count err) (complete spreads)``, one row per kind of ``results["agnostic"]``
    (the last column reads ``median (number of complete spreads)``, ``-`` when none is complete).

    ``results``: one result dict of :meth:`MetaphaseEvaluator.evaluate`, or ``{row name: result
    dict}`` (then a first ``Method`` column names each row). ``""`` when there is no agnostic block.
    """
    multi = not ("agnostic" in results or "mAP" in results)
    named = list(results.items()) if multi else [(None, results)]
    head = (["Method"] if multi else []) + ["kind", "images", "AP50(%)", "AP(%)", "recall(%)", "precision(%)",
                                            "calls/GT", "median abs(count err) (complete spreads)"]
    body = []
    for n, r in named:
        blocks = r.get("agnostic") or {}
        for kind in AGNOSTIC_KINDS:
            if kind in blocks:
                body.append(([str(n)] if multi else []) + _agnostic_cells(kind, blocks[kind]))
    if not body:
        return ""
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    n_text = 2 if multi else 1  # left-aligned text columns

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if i < n_text else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join("-" * (w + 2) if i < n_text else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


def format_tables(results: Mapping, name: str = "DeepACC") -> str:
    """What the evaluator logs: the paper-style table, the assignment line, the per-class table (when
    images were scored with classes), then the class-agnostic table."""
    parts = []
    if results.get("num_images"):
        table = format_table(results, name=name) + "\n"
        if "assignment" in results:
            a = results["assignment"]
            table += (f"Acc / AER with the karyotype assignment (extra-copy cost {a['extra_copy_cost']:g}, "
                      f"{a['relabelled']} of {a['calls']} calls relabelled); without it (the paper's protocol): "
                      f"Acc {a['without']['Acc']:.2f}, AER {a['without']['AER']:.2f}\n")
        table += format_per_class_table(results)
        parts.append(table)
    else:
        kinds = results.get("image_kinds", {})
        why = ("classes ignored (class-agnostic scoring)" if results.get("settings", {}).get("class_agnostic")
               else f"no image has ground truth with classes ({kinds.get('agnostic', 0)} class-agnostic image(s))")
        parts.append(f"24-class metrics (mAP, mAP_max, Acc, AER, AP) not computed: {why}.")
    agn = format_agnostic_table(results)
    if agn:
        parts.append("Class-agnostic (chromosome vs background; calls at the clinical threshold):\n" + agn)
    return "\n".join(parts)


def format_per_class_table(results: Mapping) -> str:
    """Per-class AP@0.5 (instances), AP@0.5 (top-1) and AP@[.5:.95], one row per class, with the
    Denver group when known."""
    a50 = results.get("per_class_AP50", {})
    amax = results.get("per_class_AP50_max", {})
    a = results.get("per_class_AP", {})
    head = ["class", "group", "AP50(%)", "AP50_max(%)", "AP(%)"]
    body = []
    for n in a50:
        try:
            g = group_of(n)
        except KeyError:
            g = "-"
        body.append([n, g, _fmt(a50.get(n)), _fmt(amax.get(n)), _fmt(a.get(n))])
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |" for r in [head] + body]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def flatten_scalars(results: Mapping) -> Dict[str, float]:
    """Flat ``{name: float}`` view for loggers and Detectron2's ``print_csv_format``: the headline
    metrics, the counts, ``Acc_without_assignment`` / ``AER_without_assignment`` (when the karyotype
    assignment was on), ``count_error_mean``, ``within_group_fraction``, ``karyotype_agreement``
    and ``AP50-<class>`` per class; the class-agnostic block as ``agnostic/<kind>/<metric>``
    (``agnostic/all/AP50``, ``agnostic/agnostic_images/recall``,
    ``agnostic/class_images/count_error_median_abs``, ...). Metrics that were not computed
    (``None``) are left out."""
    out: Dict[str, float] = {}
    for key in ("mAP", "mAP_max", "AER", "Acc", "AP", "TP", "FP", "FN", "num_dets", "num_gt", "num_images"):
        if results.get(key) is not None:  # None: not computed (no image scored with classes)
            out[key] = float(results[key])
    without = results.get("assignment", {}).get("without")
    if without:
        out["Acc_without_assignment"] = float(without["Acc"])
        out["AER_without_assignment"] = float(without["AER"])
    if "count_error" in results:
        out["count_error_mean"] = float(results["count_error"]["mean"])
    den = results.get("confusion", {}).get("denver")
    if den:
        out["within_group_fraction"] = float(den["within_group_fraction"])
    kar = results.get("karyotype", {})
    if kar:
        out["karyotype_agreement_gt_boxes"] = float(kar["agreement_with_gt_boxes"])
        if kar.get("num_with_stored"):
            out["karyotype_agreement"] = float(kar["agreement_with_stored"])
    for n, v in results.get("per_class_AP50", {}).items():
        out[f"AP50-{n}"] = float(v)
    for kind, b in (results.get("agnostic") or {}).items():
        for key in ("AP50", "AP", "AP50_before_nms", "AP_before_nms", "recall", "precision", "TP", "FP", "FN",
                    "num_calls", "num_gt", "num_images"):
            if b.get(key) is not None:
                out[f"agnostic/{kind}/{key}"] = float(b[key])
        for key, v in (b.get("count_error") or {}).items():
            if v is not None:
                out[f"agnostic/{kind}/count_error_{key}"] = float(v)
    return out
