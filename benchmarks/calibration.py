#!/usr/bin/env python
"""Why a head's calls fall below the clinical threshold: calibration, true-class probability, misses
by score band, sharpness of the probabilities, and (DeepACC) the siamese branch's local centres.

    python benchmarks/calibration.py \\
        --model a=configs/real/faster_rcnn_R18_real_cpu.yaml:output/real/faster_rcnn_R18/model_final.pth \\
        --model f=configs/real/DeepACC_R18_real_cpu.yaml:output/real/DeepACC_R18/model_final.pth \\
        --dataset gband_cells_val --out benchmarks/results/calibration_real_R18_cpu

Each model's predictor (:func:`deepacc.engine.build_predictor`, the checkpoint loaded as
``deepacc-predict`` loads it) runs on every image of the dataset (``--limit N``: the first N). From
the top-1 detections (``instances_top1``: boxes, scores, classes, class_probs) and the ground truth:

1. **reliability**: every top-1 detection kept by the Acc/AER protocol's class-agnostic NMS (no score
   threshold), its confidence (= its score, the top-1 class probability) in 10 equal bins of [0, 1]
   against its accuracy (1 when :func:`deepacc.evaluation.matching.match_image` makes it a TP: it
   claims a ground-truth chromosome of its own class at IoU >= 0.5). ECE = sum over bins of
   (bin count / all) * abs(accuracy - mean confidence).
2. **true-class probability**: for every ground-truth chromosome overlapped by a top-1 detection at
   IoU >= 0.5, the probability of its true class in the ``class_probs`` of the detection of highest
   IoU; quantiles and a histogram.
3. **misses by score band**: for every ground-truth chromosome, the highest top-1 score among the
   detections that overlap it at IoU >= 0.5 (0 when none), in the bands [0, .1), [.1, .3), [.3, .5)
   and [.5, 1]: a chromosome below .5 is missed by the calls, "found but scored below 0.5" when its
   band is above 0 and "not found" in [0, .1). The protocol's FN count (:func:`match_image`) is given
   next to it.
4. **sharpness**: the largest probability and the entropy (nats) of each detection's ``class_probs``
   row (final scores); for a model with a margin branch (rows (c)-(f)), the same two quantities of
   the margin branch's ``softmax(s * cos)`` and of the final probabilities over the proposals that
   are candidates (a final foreground probability above the test score threshold), read by a
   forward hook on the classifier (torchvision engine).
5. **siamese centres** (a model with the siamese branch, torchvision engine): per image and class, the
   margin branch's most confident proposal; where its probability passes delta it is the class's
   local centre (paper Eq. 2). Its proposal box is compared with the ground truth: "right" (IoU >= 0.5
   with a chromosome of that class), "other class" (only with chromosomes of other classes), "no
   chromosome" (with none); and "absent class": a local centre for a class that the image does not
   contain. Read by forward hooks (the prediction dict carries no siamese field).

Images whose ground truth has no classes count in 3 only. Writes ``<out>.md``, ``<out>.json``,
``<out>_reliability.png`` and ``<out>_trueprob.png``. What the figures mean for rows (a) and (f):
``docs/head_vs_faster_rcnn.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trained_models import add_model_argument, missing_model_file  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Score bands of the misses, [lo, hi) and the last one closed.
BANDS: Tuple[Tuple[float, float], ...] = ((0.0, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 1.0))
BAND_NAMES = ("[0,.1)", "[.1,.3)", "[.3,.5)", "[.5,1]")
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
NUM_BINS = 10
IOU = 0.5


class CalibrationError(ValueError):
    """A bad argument or input of this benchmark; ``str()`` says which."""


# ----------------------------------------------------------------------------------------- core (numpy)

def gt_arrays(d: Mapping, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """Ground truth of a dataset dict: ``(boxes (G, 4) xyxy, classes (G,))``, crowd regions left out;
    a class-agnostic chromosome has class ``num_classes + 1``."""
    boxes, classes = [], []
    for a in d.get("annotations", ()):
        if int(a.get("iscrowd", 0)):
            continue
        b = [float(v) for v in a["bbox"][:4]]
        if int(a.get("bbox_mode", 0)) == 1:  # XYWH_ABS
            b = [b[0], b[1], b[0] + b[2], b[1] + b[3]]
        boxes.append(b)
        classes.append(int(a["category_id"]))
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64)


def band_index(score: np.ndarray) -> np.ndarray:
    """Index into :data:`BANDS` of each score (the last band includes 1)."""
    edges = np.asarray([b[1] for b in BANDS[:-1]])
    return np.searchsorted(edges, np.asarray(score, np.float64), side="right")


def reliability(conf: Sequence[float], correct: Sequence[bool], num_bins: int = NUM_BINS) -> Dict[str, Any]:
    """Reliability diagram over ``num_bins`` equal bins of [0, 1] (the last includes 1) and the ECE."""
    conf = np.asarray(conf, np.float64).reshape(-1)
    correct = np.asarray(correct, np.float64).reshape(-1)
    idx = np.clip((conf * num_bins).astype(np.int64), 0, num_bins - 1)
    count = np.bincount(idx, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, num_bins) / count
        acc = np.bincount(idx, correct, num_bins) / count
    n = len(conf)
    ece = float(np.nansum(count / max(n, 1) * np.abs(acc - mean_conf))) if n else float("nan")
    return {"bins": num_bins, "count": count.tolist(),
            "confidence": [None if c == 0 else float(v) for c, v in zip(count, mean_conf)],
            "accuracy": [None if c == 0 else float(v) for c, v in zip(count, acc)],
            "ece": ece, "n": n, "mean_confidence": float(conf.mean()) if n else float("nan"),
            "accuracy_all": float(correct.mean()) if n else float("nan")}


def quantiles(x: Sequence[float]) -> Dict[str, Optional[float]]:
    x = np.asarray(x, np.float64).reshape(-1)
    out: Dict[str, Optional[float]] = {f"q{int(q * 100)}": (float(np.quantile(x, q)) if len(x) else None)
                                       for q in QUANTILES}
    out["mean"] = float(x.mean()) if len(x) else None
    out["n"] = int(len(x))
    return out


def entropy(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of ``p``."""
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)


class ModelStats:
    """Accumulates one model's diagnostics image by image (:meth:`add_image`), then :meth:`summary`."""

    def __init__(self, num_classes: int, score_thresh: float = 0.5, nms_thresh: float = 0.7,
                 iou_thresh: float = IOU):
        self.k = int(num_classes)
        self.score_thresh, self.nms_thresh, self.iou_thresh = float(score_thresh), float(nms_thresh), float(iou_thresh)
        self.conf: List[float] = []
        self.correct: List[bool] = []
        self.true_prob: List[float] = []
        self.best_score: List[float] = []  # per ground-truth chromosome
        self.det_maxprob: List[float] = []
        self.det_entropy: List[float] = []
        self.fn_protocol = 0
        self.calls = self.calls_tp = 0
        self.num_gt = self.num_gt_classes = 0
        self.images = self.class_images = 0
        self.branch: Dict[str, List[float]] = {"margin_maxprob": [], "margin_entropy": [],
                                               "final_maxprob": [], "final_entropy": []}
        self.centres = {"images": 0, "classes_checked": 0, "local": 0, "right": 0, "other_class": 0,
                        "no_chromosome": 0, "absent_class": 0}
        self.centre_fraction: List[float] = []

    def add_image(self, top1: Mapping[str, Any], gt_boxes: np.ndarray, gt_classes: np.ndarray) -> None:
        """One image: its top-1 detections (``boxes``, ``scores``, ``classes``, optional ``class_probs``)
        and its ground truth (``gt_arrays``)."""
        from deepacc.clinical.summary import select_calls
        from deepacc.evaluation.matching import box_iou, match_image

        boxes = np.asarray(top1["boxes"], np.float64).reshape(-1, 4)
        scores = np.asarray(top1["scores"], np.float64).reshape(-1)
        classes = np.asarray(top1["classes"], np.int64).reshape(-1)
        probs = top1.get("class_probs")
        probs = None if probs is None else np.asarray(probs, np.float64).reshape(len(scores), -1)
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        gt_classes = np.asarray(gt_classes, np.int64).reshape(-1)
        with_classes = bool(len(gt_classes)) and not bool((gt_classes > self.k).any())
        self.images += 1
        self.num_gt += len(gt_boxes)
        iou = box_iou(boxes, gt_boxes)  # (N, G)
        over = iou >= self.iou_thresh
        # 3. misses by band: the best top-1 score over each chromosome (0 if none overlaps it)
        self.best_score += np.where(over, scores[:, None], 0.0).max(axis=0, initial=0.0).tolist()
        # the protocol's FN (kept = score >= threshold, class-agnostic NMS): agnostic classes never
        # match, which leaves FN (class-blind) unchanged
        m = match_image(boxes, scores, classes, gt_boxes, gt_classes, self.score_thresh, self.nms_thresh,
                        self.iou_thresh)
        self.fn_protocol += int(m["fn"])
        calls = select_calls({"boxes": boxes, "scores": scores, "classes": classes}, self.score_thresh,
                             self.nms_thresh)
        self.calls += len(calls["scores"])
        if probs is not None and len(scores):
            self.det_maxprob += probs[:, :self.k].max(axis=1).tolist()
            self.det_entropy += entropy(probs).tolist()
        if not with_classes:
            return
        self.class_images += 1
        self.num_gt_classes += len(gt_boxes)
        self.calls_tp += int(m["tp"])
        # 1. reliability: every top-1 detection after the protocol's NMS, no score threshold
        r = match_image(boxes, scores, classes, gt_boxes, gt_classes, 0.0, self.nms_thresh, self.iou_thresh)
        self.conf += scores[r["kept"]].tolist()
        self.correct += (r["det_match"] >= 0).tolist()
        # 2. the true class's probability in the best-IoU top-1 detection of each found chromosome
        if probs is not None and len(scores):
            found = np.flatnonzero(over.any(axis=0))
            best = iou[:, found].argmax(axis=0)
            self.true_prob += probs[best, gt_classes[found]].tolist()

    def add_branches(self, margin_probs: Optional[np.ndarray], final_probs: np.ndarray,
                     candidate_thresh: float) -> None:
        """Sharpness of the margin branch vs the final probabilities over one image's candidate proposals
        (final foreground probability > ``candidate_thresh``)."""
        final_probs = np.asarray(final_probs, np.float64)
        cand = final_probs[:, :self.k].max(axis=1) > candidate_thresh
        self.branch["final_maxprob"] += final_probs[cand, :self.k].max(axis=1).tolist()
        self.branch["final_entropy"] += entropy(final_probs[cand]).tolist()
        if margin_probs is not None:
            mp = np.asarray(margin_probs, np.float64)[cand]
            self.branch["margin_maxprob"] += mp[:, :self.k].max(axis=1).tolist()
            self.branch["margin_entropy"] += entropy(mp).tolist()

    def add_centres(self, top_score: np.ndarray, centre_boxes: np.ndarray, threshold: float, gt_boxes: np.ndarray,
                    gt_classes: np.ndarray) -> None:
        """One image's siamese centres: ``top_score (K,)`` the margin probability of each class's most
        confident proposal, ``centre_boxes (K, 4)`` that proposal's box in image coordinates."""
        from deepacc.evaluation.matching import box_iou

        gt_classes = np.asarray(gt_classes, np.int64).reshape(-1)
        if not len(gt_classes) or (gt_classes > self.k).any():
            return  # the check needs classes
        top_score = np.asarray(top_score, np.float64).reshape(-1)
        local = top_score > threshold
        self.centres["images"] += 1
        self.centres["classes_checked"] += len(top_score)
        self.centres["local"] += int(local.sum())
        self.centre_fraction.append(float(local.mean()) if len(local) else 0.0)
        iou = box_iou(np.asarray(centre_boxes, np.float64).reshape(-1, 4), gt_boxes) >= self.iou_thresh
        same = gt_classes[None, :] == np.arange(len(top_score))[:, None]
        right = (iou & same).any(axis=1)
        other = ~right & iou.any(axis=1)
        none = ~iou.any(axis=1)
        absent = ~same.any(axis=1)
        self.centres["right"] += int((local & right).sum())
        self.centres["other_class"] += int((local & other).sum())
        self.centres["no_chromosome"] += int((local & none).sum())
        self.centres["absent_class"] += int((local & absent).sum())

    def summary(self) -> Dict[str, Any]:
        rel = reliability(self.conf, self.correct)
        band = np.bincount(band_index(np.asarray(self.best_score)), minlength=len(BANDS)) if self.best_score \
            else np.zeros(len(BANDS), np.int64)
        out: Dict[str, Any] = {
            "images": self.images, "class_images": self.class_images, "num_gt": self.num_gt,
            "num_gt_classes": self.num_gt_classes, "reliability": rel, "ece": rel["ece"],
            "mean_confidence": rel["mean_confidence"], "accuracy": rel["accuracy_all"], "detections": rel["n"],
            "true_prob": quantiles(self.true_prob),
            "true_prob_above_half": (float(np.mean(np.asarray(self.true_prob) >= 0.5)) if self.true_prob else None),
            "gt_by_band": dict(zip(BAND_NAMES, band.tolist())),
            "missed_below_threshold": int(band[:-1].sum()), "fn_protocol": self.fn_protocol,
            "calls": self.calls, "calls_tp": self.calls_tp,
            "detection_maxprob": quantiles(self.det_maxprob), "detection_entropy": quantiles(self.det_entropy),
            "branches": {k: quantiles(v) for k, v in self.branch.items()},
        }
        if self.centres["images"]:
            c = dict(self.centres)
            c["mean_fraction_local"] = float(np.mean(self.centre_fraction))
            out["siamese_centres"] = c
        return out


# ------------------------------------------------------------------------------------- model plumbing

class BranchProbe:
    """Forward hooks on a torchvision-engine model that read, per forward pass, the classifier's output
    (final logits, margin-branch probabilities, local centres) and the proposals of the box head.
    ``available`` is False when the model has no such modules (e.g. the Detectron2 engine)."""

    def __init__(self, predictor):
        self.handles = []
        self.last: Dict[str, Any] = {}
        model = getattr(predictor, "model", None)
        head = getattr(model, "head", None)
        self.classifier = getattr(head, "classifier", None)
        roi = getattr(model, "roi_heads", None)
        self.available = self.classifier is not None and roi is not None
        if not self.available:
            return
        self.siamese = bool(getattr(self.classifier, "siamese_enabled", False))
        self.threshold = float(getattr(self.classifier, "threshold", 0.5))
        self.handles.append(roi.register_forward_pre_hook(self._proposals))
        self.handles.append(self.classifier.register_forward_hook(self._output))

    def _proposals(self, module, args):
        self.last["proposals"] = [p.detach().float().cpu().numpy() for p in args[1]]
        self.last["image_sizes"] = [tuple(int(v) for v in s) for s in args[2]]

    def _output(self, module, args, out):
        self.last["final_probs"] = out.probs().detach().float().cpu().numpy()
        mp = out.margin_probs
        self.last["margin_probs"] = None if mp is None else mp.detach().float().cpu().numpy()
        self.last["top_score"] = None if out.top_score is None else out.top_score.detach().float().cpu().numpy()
        self.last["top_index"] = None if out.top_index is None else out.top_index.detach().cpu().numpy()

    def centre_boxes(self, original_hw: Tuple[int, int]) -> Optional[np.ndarray]:
        """``(K, 4)`` proposal box of each class's most confident proposal, in input-image coordinates."""
        if self.last.get("top_index") is None or not self.last.get("proposals"):
            return None
        props = self.last["proposals"][0]
        h, w = self.last["image_sizes"][0]
        scale = np.asarray([original_hw[1] / w, original_hw[0] / h] * 2)
        return props[self.last["top_index"][0]] * scale

    def close(self):
        for h in self.handles:
            h.remove()


def run_model(name: str, config: str, weights: str, dicts: Sequence[Mapping], progress: bool = True) -> Dict[str, Any]:
    """Diagnostics of one model on ``dicts`` (the model is loaded once)."""
    from deepacc.config import call_thresholds, load_config
    from deepacc.data.images import read_image
    from deepacc.engine import EngineError, build_predictor
    from deepacc.karyotype import NUM_CLASSES

    t0 = time.perf_counter()
    try:
        cfg = load_config(config, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"])
        predictor = build_predictor(cfg)
    except (OSError, ValueError, KeyError, EngineError) as e:  # config, checkpoint, engine: one line
        raise CalibrationError(f"--model {name}: {e}") from None
    load_s = time.perf_counter() - t0
    th = call_thresholds(cfg)
    stats = ModelStats(NUM_CLASSES, th.score_thresh, th.nms_thresh, th.iou_thresh)
    probe = BranchProbe(predictor)
    cand = float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)
    it: Any = dicts
    if progress:
        from tqdm import tqdm

        it = tqdm(dicts, desc=name, unit="image", file=sys.stderr)
    t = time.perf_counter()
    try:
        for d in it:
            gray = read_image(d["file_name"])
            pred = predictor(gray)
            gb, gc = gt_arrays(d, NUM_CLASSES)
            stats.add_image(pred["instances_top1"], gb, gc)
            if probe.available and probe.last.get("final_probs") is not None:
                stats.add_branches(probe.last["margin_probs"], probe.last["final_probs"], cand)
                if probe.siamese:
                    boxes = probe.centre_boxes(gray.shape[:2])
                    if boxes is not None:
                        stats.add_centres(probe.last["top_score"][0], boxes, probe.threshold, gb, gc)
            probe.last = {}
    finally:
        probe.close()
    wall = time.perf_counter() - t
    s = stats.summary()
    h = getattr(getattr(getattr(predictor, "model", None), "head", None), "classifier", None)
    s.update(model=name, config=config, weights=weights, model_load_s=load_s, wall_s=wall,
             s_per_image=wall / max(len(dicts), 1), _true_prob_values=list(stats.true_prob),
             weights_sha256=getattr(predictor, "weights_info", {}).get("sha256"),
             thresholds={"score": th.score_thresh, "nms": th.nms_thresh, "iou": th.iou_thresh,
                         "candidate": cand},
             head={"probe": probe.available,
                   "margin_branch": bool(getattr(h, "use_margin_branch", False)),
                   "siamese": bool(getattr(h, "siamese_enabled", False)),
                   "scale_s": getattr(h, "scale", None) if getattr(h, "use_margin_branch", False) else None,
                   "margin_m": getattr(h, "margin", None) if getattr(h, "use_margin_branch", False) else None,
                   "delta": getattr(h, "threshold", None) if getattr(h, "siamese_enabled", False) else None})
    return s


# -------------------------------------------------------------------------------------------- outputs

def _f(v, fmt="{:.3f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return fmt.format(v) if isinstance(v, float) else str(v)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    w = [max(len(str(x[i])) for x in [head] + list(rows)) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(str(c).ljust(n) if i == 0 else str(c).rjust(n)  # noqa: E731
                                           for i, (c, n) in enumerate(zip(cells, w))) + " |"
    sep = "|" + "|".join("-" * (n + 2) if i == 0 else "-" * (n + 1) + ":" for i, n in enumerate(w)) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in rows])


def tables(results: Sequence[Mapping]) -> str:
    """The markdown tables of the report (one row per model in each)."""
    q = [f"q{int(x * 100)}" for x in QUANTILES]
    t1 = _table(["model", "images", "dets", "mean conf", "accuracy", "ECE", "GT", "calls >= .5", "TP of calls"],
                [[r["model"], r["images"], r["detections"], _f(r["mean_confidence"]), _f(r["accuracy"]),
                  _f(r["ece"]), r["num_gt"], r["calls"], r["calls_tp"]] for r in results])
    t2 = _table(["model", "found GT"] + [f"P(true) {x}" for x in q] + ["share >= .5"],
                [[r["model"], r["true_prob"]["n"]] + [_f(r["true_prob"][x]) for x in q]
                 + [_f(r["true_prob_above_half"])] for r in results])
    t3 = _table(["model", "GT"] + [f"best score {b}" for b in BAND_NAMES] + ["below .5", "FN (protocol)"],
                [[r["model"], r["num_gt"]] + [r["gt_by_band"][b] for b in BAND_NAMES]
                 + [r["missed_below_threshold"], r["fn_protocol"]] for r in results])
    rows4 = []
    for r in results:
        b = r["branches"]
        rows4.append([r["model"], _f(r["detection_maxprob"]["q50"]), _f(r["detection_entropy"]["q50"]),
                      b["final_maxprob"]["n"], _f(b["final_maxprob"]["q50"]), _f(b["final_entropy"]["q50"]),
                      _f(b["margin_maxprob"]["q50"]), _f(b["margin_entropy"]["q50"]),
                      _f(b["margin_maxprob"]["q10"]), _f(b["margin_maxprob"]["q90"])])
    t4 = _table(["model", "det max-p q50", "det entropy q50", "candidates", "final max-p q50", "final entropy q50",
                 "margin max-p q50", "margin entropy q50", "margin max-p q10", "margin max-p q90"], rows4)
    out = ["Calibration (top-1 detections after class-agnostic NMS, no score threshold):", "", t1, "",
           "Probability of the true class, best-IoU top-1 detection of each found chromosome:", "", t2, "",
           "Ground-truth chromosomes by the best top-1 score over them at IoU >= 0.5 (0: none):", "", t3, "",
           "Sharpness (max foreground probability, entropy in nats): detections' class_probs; candidate "
           "proposals' final and margin-branch softmax(s cos) probabilities:", "", t4]
    cent = [r for r in results if r.get("siamese_centres")]
    if cent:
        t5 = _table(["model", "images", "classes", "local centres", "mean fraction local", "right", "other class",
                     "no chromosome", "absent class"],
                    [[r["model"], c["images"], c["classes_checked"], c["local"], _f(c["mean_fraction_local"]),
                      c["right"], c["other_class"], c["no_chromosome"], c["absent_class"]]
                     for r in cent for c in [r["siamese_centres"]]])
        out += ["", "Siamese local centres (margin probability > delta), their proposal box against the ground "
                "truth:", "", t5]
    return "\n".join(out)


def plot_reliability(results: Sequence[Mapping], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepacc.fileio import save_figure

    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    for ax, r in zip(axes[0], results):
        rel = r["reliability"]
        width = 1.0 / rel["bins"]
        centres = (np.arange(rel["bins"]) + 0.5) * width
        acc = [np.nan if a is None else a for a in rel["accuracy"]]
        ax.bar(centres, acc, width=width * 0.9, color="tab:blue", alpha=0.8, label="accuracy")
        conf = [np.nan if c is None else c for c in rel["confidence"]]
        ax.plot(centres, conf, "o", color="tab:orange", ms=4, label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=1)
        for x, c in zip(centres, rel["count"]):
            if c:
                ax.text(x, 0.02, str(c), ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-1 score)")
        ax.set_ylabel("accuracy (TP of own class)")
        ax.set_title(f"{r['model']}: ECE {_f(rel['ece'])}, n={rel['n']}")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_true_prob(results: Sequence[Mapping], values: Mapping[str, Sequence[float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deepacc.fileio import save_figure

    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        v = np.asarray(values.get(r["model"], ()), np.float64)
        ax.hist(v, bins=np.linspace(0, 1, 21), color="tab:green", alpha=0.85)
        ax.axvline(0.5, color="red", lw=1, ls="--")
        ax.set_xlabel("probability of the true class")
        ax.set_ylabel("found chromosomes")
        ax.set_title(f"{r['model']}: median {_f(r['true_prob']['q50'])}, n={len(v)}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_argument(ap)
    ap.add_argument("--dataset", required=True, metavar="NAME", help="a registered dataset, e.g. gband_cells_val")
    ap.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (a quick run)")
    ap.add_argument("--out", default=None, metavar="PREFIX",
                    help="output prefix (default benchmarks/results/calibration_<models>)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    if a.limit is not None and a.limit < 1:
        ap.error("--limit must be >= 1")
    names = [m.name for m in a.model]
    if len(set(names)) != len(names):
        ap.error(f"--model names must differ, got {', '.join(names)}")
    from deepacc.data.catalog import list_datasets

    if a.dataset not in list_datasets():
        print(f"calibration: dataset {a.dataset!r} is not registered (registered: {', '.join(list_datasets())})",
              file=sys.stderr)
        return 2
    missing = missing_model_file(a.model)
    if missing:
        print(f"calibration: {missing}", file=sys.stderr)
        return 2
    from deepacc.data.catalog import get_dataset_dicts

    try:
        dicts = get_dataset_dicts(a.dataset)
    except (OSError, ValueError) as e:
        print(f"calibration: dataset {a.dataset}: {e}", file=sys.stderr)
        return 2
    if a.limit is not None:
        dicts = dicts[:a.limit]
    if not dicts:
        print(f"calibration: dataset {a.dataset}: no images", file=sys.stderr)
        return 2
    out = a.out or os.path.join(REPO, "benchmarks", "results", "calibration_" + "_".join(names))
    cmd = "python benchmarks/calibration.py " + " ".join(sys.argv[1:] if argv is None else list(argv))
    results, values = [], {}
    t0 = time.perf_counter()
    for m in a.model:
        try:
            r = run_model(m.name, m.config, m.weights, dicts, progress=not a.no_progress)
        except CalibrationError as e:
            print(f"calibration: {e}", file=sys.stderr)
            return 2
        values[m.name] = r.pop("_true_prob_values", None) or []
        results.append(r)
    total = time.perf_counter() - t0
    md = tables(results)
    from deepacc.fileio import atomic_write
    from deepacc.jsonstream import json_safe

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    atomic_write(out + ".md", (
        f"Command: `{cmd}`\n\n{a.dataset}, {len(dicts)} images, {platform.machine()}, {total:.0f} s in all. "
        "Definitions: benchmarks/calibration.py (docstring); reading: docs/head_vs_faster_rcnn.md.\n\n"
        f"![reliability]({os.path.basename(out)}_reliability.png)\n![true-class probability]"
        f"({os.path.basename(out)}_trueprob.png)\n\n" + md + "\n").encode())
    atomic_write(out + ".json", json.dumps(json_safe({"command": cmd, "dataset": a.dataset, "images": len(dicts),
                                                  "total_s": total, "models": results}), indent=1).encode())
    plot_reliability(results, out + "_reliability.png")
    plot_true_prob(results, values, out + "_trueprob.png")
    print(md)
    print(f"\ncalibration: {out}.md, .json, _reliability.png, _trueprob.png written ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
