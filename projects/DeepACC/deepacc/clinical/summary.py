"""Numerical karyotype summary of one metaphase spread, for human review.

The calls are the model's top-1 detections (``instances_top1`` of the prediction format) kept when
their score reaches the confidence threshold, de-duplicated by class-agnostic NMS (IoU 0.7), as in
the paper's Acc/AER protocol (:func:`select_calls`). :func:`summarize` turns them into

* the chromosome count and the sex chromosomes found,
* an ISCN-style numerical karyotype string (``46,XX``, ``47,XY,+21``, ``45,X``),
* per-class copy numbers with the mean confidence of each class,
* review flags: a class that does not have its expected number of copies (two for autosomes;
  X and Y judged against the sex inferred from the calls), and uncertain calls (score below
  ``review_score`` or a small margin between the two most probable classes).

The software suggests, a cytogeneticist decides: every summary carries :data:`REVIEW_NOTE`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..config import CALLS
from ..karyotype import CLASS_NAMES, NUM_CLASSES, canonical_name
from ..karyotype.iscn import numerical_karyotype

__all__ = [
    "REVIEW_NOTE",
    "ClassCount",
    "ReviewFlag",
    "KaryotypeSummary",
    "select_calls",
    "summarize",
    "format_summary_text",
    "top2_margin",
]

#: Shown in every JSON output and report: the result is a suggestion, not a diagnosis.
REVIEW_NOTE = (
    "Computer-generated suggestion, not a diagnosis: the software suggests, a cytogeneticist decides. "
    "Every count, class call and karyotype string must be reviewed and confirmed on the image by a "
    "qualified cytogeneticist before any clinical use."
)

_KEYS = ("boxes", "scores", "classes", "class_probs")


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def select_calls(
    instances: Mapping[str, object], score_threshold: float = CALLS.score_thresh,
    nms_threshold: float = CALLS.nms_thresh
) -> Dict[str, np.ndarray]:
    """Calls of one image: detections with ``score >= score_threshold``, then class-agnostic NMS.

    Args:
        instances: ``{"boxes": (N,4) xyxy, "scores": (N,), "classes": (N,) int 0..23,
            "class_probs": (N,25) optional}`` (numpy arrays or tensors), normally
            ``prediction["instances_top1"]``.
        score_threshold: minimum score kept (the paper uses 0.5).
        nms_threshold: IoU above which the lower-scoring of two overlapping calls is dropped,
            whatever their classes (the paper uses 0.7). ``None`` or ``>= 1`` disables it.

    Returns:
        dict with the same keys, numpy arrays sorted by decreasing score, plus ``"index"``: the row of
        each call in the input.
    """
    from ..evaluation.matching import filter_top1

    boxes = _as_numpy(instances["boxes"]).astype(np.float32).reshape(-1, 4)
    scores = _as_numpy(instances["scores"]).astype(np.float32).reshape(-1)
    classes = _as_numpy(instances["classes"]).astype(np.int64).reshape(-1)
    if not (len(boxes) == len(scores) == len(classes)):
        raise ValueError(
            f"instances have inconsistent lengths: {len(boxes)} boxes, {len(scores)} scores, "
            f"{len(classes)} classes"
        )
    if len(classes) and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
        raise ValueError(f"class indices must be in 0..{NUM_CLASSES - 1}, got {sorted(set(classes.tolist()))}")
    probs = instances.get("class_probs") if hasattr(instances, "get") else None
    if probs is not None:
        probs = _as_numpy(probs).astype(np.float32)
        probs = probs.reshape(len(scores), probs.shape[-1] if probs.ndim == 2 else -1)

    if nms_threshold is not None and nms_threshold < 1.0:
        # the same filter as the evaluator's Acc / AER (one definition of "a call")
        keep = filter_top1(boxes, scores, score_threshold, float(nms_threshold))
    else:
        keep = np.nonzero(scores >= score_threshold)[0]
        keep = keep[np.argsort(-scores[keep], kind="stable")]
    out = {"boxes": boxes[keep], "scores": scores[keep], "classes": classes[keep], "index": keep}
    if probs is not None:
        out["class_probs"] = probs[keep]
    return out


def top2_margin(class_probs, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Probability of the most probable foreground class minus that of the runner-up, per row of
    ``class_probs`` (N, K+1); the background column is ignored."""
    p = _as_numpy(class_probs).astype(np.float64)
    p = p.reshape(len(p), -1)[:, :num_classes]
    if p.shape[1] < 2:
        return p[:, 0] if p.shape[1] else np.zeros(len(p))
    top2 = -np.sort(-p, axis=1)[:, :2]
    return top2[:, 0] - top2[:, 1]


@dataclass
class ClassCount:
    """Copy number of one class in the calls."""

    name: str
    copies: int
    expected: int
    mean_score: Optional[float]  # None when the class was not called
    min_score: Optional[float]
    detections: List[int] = field(default_factory=list)  # rows of the calls

    @property
    def abnormal(self) -> bool:
        return self.copies != self.expected


@dataclass
class ReviewFlag:
    """Something a cytogeneticist must look at.

    ``kind`` is ``"copy_number"`` (a class without its expected number of copies), ``"count"`` (total
    number of chromosomes is not 46), ``"sex"`` (sex chromosomes not determinable) or
    ``"uncertain_call"`` (one detection with a low score or a small top-2 margin; ``detection`` is its
    row in the calls) or ``"relabelled"`` (the karyotype assignment gave the call another class than
    the model's most probable one; ``detection`` is its row).
    """

    kind: str
    message: str
    class_name: Optional[str] = None
    detection: Optional[int] = None


@dataclass
class KaryotypeSummary:
    count: int
    sex_chromosomes: str  # e.g. "XY", "XX", "X", "" (none found)
    inferred_sex: str  # "male" (a Y was called), "female" (X without Y), "undetermined"
    karyotype: str  # ISCN-style numerical string
    per_class: List[ClassCount]
    flags: List[ReviewFlag]
    uncertain: List[int]  # rows of the calls flagged as uncertain
    thresholds: Dict[str, float]
    review_note: str = REVIEW_NOTE
    relabelled: List[int] = field(default_factory=list)  # rows relabelled by the karyotype assignment
    assignment: Dict[str, object] = field(default_factory=lambda: {"enabled": False})

    @property
    def needs_review(self) -> bool:
        """True when at least one flag was raised (every result still needs a human check)."""
        return bool(self.flags)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["needs_review"] = self.needs_review
        return d


def _fmt(x: float, threshold: float) -> str:
    """``x`` (below ``threshold``) with two decimals, or more when two would print it as the threshold."""
    for nd in (2, 3, 4):
        t = f"{x:.{nd}f}"
        if float(t) < threshold:
            return t
    return f"{x:.6f}"


def _expected_copies(name: str, inferred_sex: str) -> int:
    if name == "X":
        return 1 if inferred_sex == "male" else 2
    if name == "Y":
        return 1 if inferred_sex == "male" else 0
    return 2


def summarize(
    calls: Mapping[str, object],
    review_score: float = CALLS.review_score,
    review_margin: float = CALLS.review_margin,
    class_names: Sequence[str] = CLASS_NAMES,
    score_threshold: Optional[float] = None,
    assignment: Optional[Mapping[str, object]] = None,
) -> KaryotypeSummary:
    """Numerical summary of the calls of one spread (see the module docstring).

    Args:
        calls: output of :func:`select_calls` (``classes`` 0..23, ``scores``, optional
            ``class_probs`` (N, 25)), or of :func:`deepacc.karyotype.assignment.assign_calls`
            (then ``relabelled``, ``model_classes`` and both probabilities are used: every
            relabelled call gets a ``relabelled`` flag, and the summary records the settings).
        review_score: calls scoring below this are flagged as uncertain.
        review_margin: calls whose two most probable foreground classes differ by less than this
            probability are flagged as uncertain (needs ``class_probs``).
        class_names: names of the contiguous class indices (default 1..22, X, Y).
        score_threshold: the confidence threshold the calls were selected with (recorded only).
        assignment: the karyotype-assignment settings the calls were made with (recorded only).
    """
    classes = _as_numpy(calls["classes"]).astype(np.int64).reshape(-1)
    scores = _as_numpy(calls["scores"]).astype(np.float64).reshape(-1)
    names = [canonical_name(class_names[int(c)]) for c in classes]
    probs = calls.get("class_probs") if hasattr(calls, "get") else None

    # Sex inferred from the calls: a Y means male; X without Y means female.
    n_x, n_y = names.count("X"), names.count("Y")
    inferred_sex = "male" if n_y else ("female" if n_x else "undetermined")
    sex_chroms = "X" * n_x + "Y" * n_y

    per_class: List[ClassCount] = []
    flags: List[ReviewFlag] = []
    for name in (canonical_name(n) for n in class_names):
        rows = [i for i, n in enumerate(names) if n == name]
        s = scores[rows]
        cc = ClassCount(
            name=name,
            copies=len(rows),
            expected=_expected_copies(name, inferred_sex),
            mean_score=float(s.mean()) if len(rows) else None,
            min_score=float(s.min()) if len(rows) else None,
            detections=rows,
        )
        per_class.append(cc)
        if cc.abnormal:
            if name in ("X", "Y"):
                why = "with a Y called" if inferred_sex == "male" else "with no Y called"
                copies = f"{cc.copies} cop{'y' if cc.copies == 1 else 'ies'}"
                msg = f"chromosome {name}: {copies} (expected {cc.expected} {why})"
            else:
                msg = f"chromosome {name}: {cc.copies} cop{'y' if cc.copies == 1 else 'ies'} (expected 2)"
            flags.append(ReviewFlag("copy_number", msg, class_name=name))

    if len(names) != 46:
        flags.insert(0, ReviewFlag("count", f"{len(names)} chromosomes called (46 expected)"))
    if inferred_sex == "undetermined":
        flags.insert(0, ReviewFlag("sex", "no X or Y chromosome called: sex cannot be inferred"))

    uncertain: List[int] = []
    margins = top2_margin(probs, len(class_names)) if probs is not None and len(classes) else None
    boxes = calls.get("boxes") if hasattr(calls, "get") else None
    boxes = None if boxes is None else _as_numpy(boxes).reshape(-1, 4)
    for i, name in enumerate(names):
        reasons = []
        if scores[i] < review_score:
            reasons.append(f"score {_fmt(scores[i], review_score)} < {review_score:g}")
        if margins is not None and margins[i] < review_margin:
            p_i = _as_numpy(probs)[i, : len(class_names)].astype(np.float64).copy()
            p_i[classes[i]] = -np.inf  # the most probable class other than the call's own
            second = int(np.argmax(p_i))
            reasons.append(
                f"top-2 margin {_fmt(margins[i], review_margin)} < {review_margin:g} "
                f"(runner-up: {canonical_name(class_names[second])})"
            )
        if reasons:
            uncertain.append(i)
            where = ""
            if boxes is not None:
                where = f" at x={0.5 * (boxes[i, 0] + boxes[i, 2]):.0f}, y={0.5 * (boxes[i, 1] + boxes[i, 3]):.0f}"
            message = f"uncertain call: chromosome {name}{where}: " + "; ".join(reasons)
            flags.append(ReviewFlag("uncertain_call", message,
                                    class_name=name, detection=i))

    relabelled: List[int] = []
    if hasattr(calls, "get") and calls.get("relabelled") is not None:
        model_classes = _as_numpy(calls["model_classes"]).astype(np.int64).reshape(-1)
        p_model = _as_numpy(calls["model_class_prob"]).reshape(-1)
        p_assigned = _as_numpy(calls["assigned_class_prob"]).reshape(-1)
        for i in np.flatnonzero(_as_numpy(calls["relabelled"]).reshape(-1)).tolist():
            relabelled.append(i)
            where = ""
            if boxes is not None:
                where = f" at x={0.5 * (boxes[i, 0] + boxes[i, 2]):.0f}, y={0.5 * (boxes[i, 1] + boxes[i, 3]):.0f}"
            was = canonical_name(class_names[int(model_classes[i])])
            flags.append(ReviewFlag(
                "relabelled", f"relabelled call{where}: chromosome {names[i]} (p={p_assigned[i]:.2f}) by the "
                f"karyotype assignment; the model's most probable class was {was} (p={p_model[i]:.2f})",
                class_name=names[i], detection=i))

    thresholds = {"review_score": float(review_score), "review_margin": float(review_margin)}
    if score_threshold is not None:
        thresholds["score_threshold"] = float(score_threshold)
    return KaryotypeSummary(
        count=len(names),
        sex_chromosomes=sex_chroms,
        inferred_sex=inferred_sex,
        karyotype=numerical_karyotype(names),
        per_class=per_class,
        flags=flags,
        uncertain=uncertain,
        thresholds=thresholds,
        relabelled=relabelled,
        assignment=dict(assignment) if assignment is not None else {"enabled": False},
    )


def format_summary_text(summary: KaryotypeSummary) -> str:
    """Plain-text rendering of a summary (for the terminal and the text report)."""
    lines = [
        f"Karyotype (suggested): {summary.karyotype}",
        f"Chromosomes called: {summary.count}; sex chromosomes: {summary.sex_chromosomes or 'none'}"
        f" (inferred sex: {summary.inferred_sex})",
        "Copies per class (mean confidence):",
    ]
    cells = []
    for c in summary.per_class:
        conf = "-" if c.mean_score is None else f"{c.mean_score:.2f}"
        mark = " !" if c.abnormal else ""
        cells.append(f"{c.name:>2}: {c.copies} ({conf}){mark}")
    for i in range(0, len(cells), 6):
        lines.append("  " + "   ".join(cells[i : i + 6]))
    if summary.flags:
        lines.append(f"Review flags ({len(summary.flags)}):")
        lines.extend(f"  - {f.message}" for f in summary.flags)
    else:
        lines.append("Review flags: none")
    lines.append(summary.review_note)
    return "\n".join(lines)
