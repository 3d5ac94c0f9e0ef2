"""Detection-to-chromosome matching behind Acc, AER, the confusion matrix and the count error.

Everything here is numpy only. Definitions (the same text is in ``docs/evaluation.md``):

**Filter** (per image, on the top-1 detections, i.e. the top-1 foreground class of each proposal
with its box and score): drop detections with ``score < score_thresh`` (0.5), then class-agnostic
NMS at ``nms_thresh`` (0.7): in descending score order, a detection is removed when its IoU with
an already kept detection is ``> nms_thresh`` (exactly ``torchvision.ops.nms``; ties in score
keep the input order).

**Matching for Acc/AER** (per image, per class, as in COCO/VOC): the kept detections are visited
in descending score order (ties: input order). Each detection claims, among the ground-truth
chromosomes *of its own class* not yet claimed, the one with the highest IoU, provided that IoU
is ``>= iou_thresh`` (0.5; ties in IoU: the first ground truth in input order). A detection that
claims a ground truth is a **TP**; every other detection is an **FP** (wrong class, second box on
an already claimed chromosome, box on background or debris).

**FN** = a ground-truth chromosome that *no* kept detection overlaps at IoU ``>= iou_thresh``,
whatever the detection's class: a missed chromosome. A misclassified chromosome (overlapped only
by detections of other classes) is therefore counted once, as an FP, and is not an FN.

Pooled over the dataset: ``Acc = TP / #kept detections`` and ``AER = (FP + FN) / #ground truth``.

**Confusion matching** (for the confusion matrix only): the same greedy loop, but class-agnostic:
each kept detection, in descending score order, claims the unclaimed ground truth of *any* class
with the highest IoU ``>= iou_thresh``; the pair (true class, predicted class) is one entry of the
confusion matrix. Unmatched detections and unmatched ground truths are counted separately.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..settings import DEFAULT_CALLS

__all__ = ["box_iou", "nms", "filter_top1", "match_image", "acc_aer"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of two sets of XYXY boxes, computed in float64.

    Boxes of zero area give IoU 0 with everything (no division by zero).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS giving the same indices as ``torchvision.ops.nms`` on CPU.

    Computes in the dtype of ``boxes`` (float32 stays float32, like torchvision) with the same
    operation order, visits boxes by descending score with a stable sort, and removes a box when
    its IoU with a kept box is ``> iou_threshold``. Returns the kept indices in descending score
    order (int64).
    """
    boxes = np.asarray(boxes)
    if boxes.dtype.kind != "f":
        boxes = boxes.astype(np.float64)
    boxes = boxes.reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    n = boxes.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    zero = boxes.dtype.type(0)
    # the whole overlap matrix at once, element by element the same arithmetic as torchvision's
    # kernel (inter / (area_i + area_j - inter) in the boxes' dtype); then the greedy pass on lists
    w = np.maximum(zero, np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]))
    h = np.maximum(zero, np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :]))
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        over = inter / (areas[:, None] + areas[None, :] - inter) > iou_threshold
    np.fill_diagonal(over, False)
    rows, cols = np.nonzero(over)
    neighbours: List[List[int]] = [[] for _ in range(n)]
    for r, c in zip(rows.tolist(), cols.tolist()):
        neighbours[r].append(c)
    suppressed = [False] * n
    keep: List[int] = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        for j in neighbours[i]:
            suppressed[j] = True
    return np.asarray(keep, dtype=np.int64)


def filter_top1(
    boxes: np.ndarray, scores: np.ndarray, score_thresh: float = DEFAULT_CALLS.score_thresh,
    nms_thresh: float = DEFAULT_CALLS.nms_thresh
) -> np.ndarray:
    """Indices of the top-1 detections kept for Acc/AER: ``score >= score_thresh`` then
    class-agnostic NMS at ``nms_thresh``; returned in descending score order."""
    scores = np.asarray(scores).reshape(-1)
    idx = np.flatnonzero(scores >= score_thresh)
    if idx.size == 0:
        return idx.astype(np.int64)
    keep = nms(np.asarray(boxes).reshape(-1, 4)[idx], scores[idx], nms_thresh)
    return idx[keep]


def _greedy(iou: np.ndarray, allowed: Optional[np.ndarray], iou_thresh: float) -> np.ndarray:
    """Greedy claims: row ``d`` (detections already in score order) claims the unclaimed column
    with the highest IoU ``>= iou_thresh`` among ``allowed[d]``. Returns the claimed column per
    row, -1 when none."""
    n_det, n_gt = iou.shape
    out = np.full(n_det, -1, dtype=np.int64)
    if n_det == 0 or n_gt == 0:
        return out
    cand = iou >= iou_thresh
    if allowed is not None:
        cand &= allowed
    rows, cols = np.nonzero(cand)  # row-major: grouped by detection, in score order
    vals = iou[rows, cols].tolist()
    claimed = set()
    d_prev, best_g, best_v = -1, -1, -1.0
    for d, g, v in zip(rows.tolist(), cols.tolist(), vals):
        if d != d_prev:
            if best_g >= 0:
                out[d_prev] = best_g
                claimed.add(best_g)
            d_prev, best_g, best_v = d, -1, -1.0
        if g not in claimed and v > best_v:  # strict: ties keep the first ground truth
            best_g, best_v = g, v
    if best_g >= 0:
        out[d_prev] = best_g
    return out


def match_image(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    score_thresh: float = DEFAULT_CALLS.score_thresh,
    nms_thresh: float = DEFAULT_CALLS.nms_thresh,
    iou_thresh: float = DEFAULT_CALLS.iou_thresh,
) -> Dict[str, Union[int, np.ndarray]]:
    """Filter and match the top-1 detections of one image (definitions in the module docstring).

    Args:
        boxes, scores, classes: the image's top-1 detections, XYXY boxes ``(N, 4)``, ``(N,)``, ``(N,)``.
        gt_boxes, gt_classes: its ground-truth chromosomes, ``(G, 4)`` XYXY and ``(G,)``.

    Returns:
        dict with ``tp``, ``fp``, ``fn``, ``num_dets`` (kept), ``num_gt``; ``kept`` (indices of the
        kept detections, descending score); ``kept_classes``; ``det_match`` (per kept detection,
        index of the ground truth it claimed as a TP, or -1); ``conf_gt`` / ``conf_pred`` (true and
        predicted classes of the class-agnostic confusion pairs); ``conf_unmatched_dets`` and
        ``conf_unmatched_gt``.
    """
    boxes = np.asarray(boxes).reshape(-1, 4)
    scores = np.asarray(scores).reshape(-1)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_classes = np.asarray(gt_classes).reshape(-1).astype(np.int64)
    if not (len(boxes) == len(scores) == len(classes)):
        raise ValueError(
            f"detections have {len(boxes)} boxes, {len(scores)} scores and {len(classes)} classes"
        )
    if len(gt_boxes) != len(gt_classes):
        raise ValueError(f"ground truth has {len(gt_boxes)} boxes but {len(gt_classes)} classes")

    kept = filter_top1(boxes, scores, score_thresh, nms_thresh)
    kcls = classes[kept]
    iou = box_iou(boxes[kept], gt_boxes)  # (D, G), rows already in descending score order
    same = kcls[:, None] == gt_classes[None, :]
    det_match = _greedy(iou, same, iou_thresh)
    tp = int((det_match >= 0).sum())
    n_det = int(len(kept))
    n_gt = int(len(gt_boxes))
    fn = int((~(iou >= iou_thresh).any(axis=0)).sum()) if n_gt else 0
    conf = _greedy(iou, None, iou_thresh)
    m = conf >= 0
    return {
        "tp": tp,
        "fp": n_det - tp,
        "fn": fn,
        "num_dets": n_det,
        "num_gt": n_gt,
        "kept": kept,
        "kept_classes": kcls,
        "det_match": det_match,
        "conf_gt": gt_classes[conf[m]],
        "conf_pred": kcls[m],
        "conf_unmatched_dets": int((~m).sum()),
        "conf_unmatched_gt": n_gt - int(m.sum()),
    }


def _as_list(x) -> list:
    return [x] if isinstance(x, Mapping) else list(x)


def acc_aer(
    detections: Union[Mapping, Sequence[Mapping]],
    ground_truths: Union[Mapping, Sequence[Mapping]],
    score_thresh: float = DEFAULT_CALLS.score_thresh,
    nms_thresh: float = DEFAULT_CALLS.nms_thresh,
    iou_thresh: float = DEFAULT_CALLS.iou_thresh,
) -> Dict[str, float]:
    """Acc and AER of top-1 detections, pooled over images (definitions in the module docstring).

    Filter per image: ``score >= score_thresh``, then class-agnostic NMS at ``nms_thresh``.
    Greedy matching by descending score: a detection claims the unclaimed ground truth **of its
    own class** with the highest IoU ``>= iou_thresh`` (TP); every other detection is an FP
    (wrong class, duplicate, background). FN = ground truth overlapped by no kept detection at
    IoU ``>= iou_thresh`` (a misclassified chromosome is one FP, not an FN).
    ``acc = TP / #kept detections``, ``aer = (FP + FN) / #ground truth``.

    Args:
        detections: one dict per image (or a single dict) with ``boxes`` ``(N, 4)`` XYXY,
            ``scores`` ``(N,)``, ``classes`` ``(N,)`` — the top-1 detections
            (``instances_top1`` of a prediction).
        ground_truths: aligned with ``detections``: dicts with ``boxes`` ``(G, 4)`` XYXY and
            ``classes`` ``(G,)``.

    Returns:
        ``{"acc", "aer"}`` as fractions (NaN when their denominator is 0) and the integer counts
        ``tp``, ``fp``, ``fn``, ``num_dets``, ``num_gt``.
    """
    dets = _as_list(detections)
    gts = _as_list(ground_truths)
    if len(dets) != len(gts):
        raise ValueError(f"acc_aer: {len(dets)} detection entries but {len(gts)} ground-truth entries")
    tot = {"tp": 0, "fp": 0, "fn": 0, "num_dets": 0, "num_gt": 0}
    for i, (d, g) in enumerate(zip(dets, gts)):
        try:
            r = match_image(
                d["boxes"], d["scores"], d["classes"], g["boxes"], g["classes"],
                score_thresh, nms_thresh, iou_thresh,
            )
        except KeyError as e:
            raise KeyError(f"acc_aer: entry {i} lacks the key {e}") from None
        for k in tot:
            tot[k] += r[k]
    return dict(tot, **ratios(tot["tp"], tot["fp"], tot["fn"], tot["num_dets"], tot["num_gt"]))


def ratios(tp: int, fp: int, fn: int, num_dets: int, num_gt: int) -> Dict[str, float]:
    """``acc = tp / num_dets`` and ``aer = (fp + fn) / num_gt`` (NaN on a zero denominator)."""
    return {
        "acc": tp / num_dets if num_dets else float("nan"),
        "aer": (fp + fn) / num_gt if num_gt else float("nan"),
    }
