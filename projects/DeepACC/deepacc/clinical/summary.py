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

Real spreads are not the clean composed spreads the model was trained on (``docs/predict.md``,
"Real spreads: clusters, nuclei, counts"), so the summary also

* excludes from the count and the karyotype the **oversized round calls** (box area at least
  ``oversized_area`` times the spread's median call box area, box aspect at most
  ``oversized_aspect`` and, when the image is given, at least ``oversized_fill`` of the box dark):
  an interphase nucleus, not a chromosome (:func:`oversized_calls`; listed in ``excluded``);
* flags **clusters**: calls whose boxes overlap by at least ``cluster_overlap`` of the smaller box,
  joined into connected components (:func:`overlap_clusters`; rows in ``clustered``), where
  chromosomes touch or cross and the detector may have merged or split them;
* does not give a karyotype when the count is outside ``count_range`` (40..52): the karyotype is
  then :data:`KARYOTYPE_NOT_DETERMINED` and the numerical string of the calls is kept in
  ``karyotype_from_calls``.

The software suggests, a cytogeneticist decides: every summary carries :data:`REVIEW_NOTE`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..karyotype import CLASS_NAMES, NUM_CLASSES, canonical_name
from ..karyotype.iscn import numerical_karyotype
from ..settings import DEFAULT_CALLS

__all__ = [
    "REVIEW_NOTE",
    "KARYOTYPE_NOT_DETERMINED",
    "CLUSTER_OVERLAP",
    "OVERSIZED_AREA",
    "OVERSIZED_AREA_BOX_ONLY",
    "OVERSIZED_ASPECT",
    "OVERSIZED_FILL",
    "COUNT_RANGE",
    "ClassCount",
    "ReviewFlag",
    "KaryotypeSummary",
    "select_calls",
    "summarize",
    "format_summary_text",
    "top2_margin",
    "box_overlap_fraction",
    "overlap_clusters",
    "oversized_calls",
]

#: Shown in every JSON output and report: the result is a suggestion, not a diagnosis.
REVIEW_NOTE = (
    "Computer-generated suggestion, not a diagnosis: the software suggests, a cytogeneticist decides. "
    "Every count, class call and karyotype string must be reviewed and confirmed on the image by a "
    "qualified cytogeneticist before any clinical use."
)

#: ``summary.karyotype`` when the count is outside ``count_range``: no karyotype is suggested.
KARYOTYPE_NOT_DETERMINED = "not determined"

#: Two calls belong to one cluster when their boxes' intersection covers at least this fraction of
#: the smaller box. On the synthetic generator's spreads (ground-truth boxes) a quarter caught 72 %
#: of the pairs of chromosomes that overlap and 39 % of those that merely touch, at about three
#: flagged pairs per spread of which about half touch (box overlap also comes from neighbouring
#: diagonal chromosomes); lower values flag many more neighbours that do not touch.
CLUSTER_OVERLAP = 0.25

#: An oversized call's box area, in multiples of the median call box area of the spread, when the
#: image is given (then the fill check below separates a nucleus from a long chromosome lying
#: diagonally, whose box is nearly square and up to about 5x the median area: 4.8x on the synthetic
#: generator's spreads, up to about 8x in simulations with long thin chromosomes).
OVERSIZED_AREA = 4.0
#: The same multiple without the image (boxes only: no fill check), above the diagonal chromosomes.
OVERSIZED_AREA_BOX_ONLY = 10.0
#: Longer box side / shorter box side at most this: round (nuclei are round, chromosomes elongated).
OVERSIZED_ASPECT = 1.5
#: With the image: at least this fraction of the box darker than the spread's Otsu threshold (a disc
#: fills pi/4 = 0.79 of its box, a diagonal chromosome 0.12-0.41 on the generator's spreads).
OVERSIZED_FILL = 0.5
#: Counts (calls kept after excluding oversized ones) for which a karyotype string is given: 46 with
#: room for numerical abnormalities (45,X ... 49,XXXXY) and a few missed or extra calls. Outside it
#: chromosomes are most likely missed, merged or split, and no karyotype is suggested.
COUNT_RANGE: Tuple[int, int] = (40, 52)

_KEYS = ("boxes", "scores", "classes", "class_probs")


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def select_calls(
    instances: Mapping[str, object], score_threshold: float = DEFAULT_CALLS.score_thresh,
    nms_threshold: float = DEFAULT_CALLS.nms_thresh
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
    the model's most probable one; ``detection`` is its row), ``"cluster"`` (calls whose boxes
    overlap: ``detections`` are their rows) or ``"oversized"`` (a round call much larger than the
    spread's chromosomes, excluded from the count; ``detection`` is its row). A ``"count"`` flag
    outside ``count_range`` says that no karyotype is suggested.
    """

    kind: str
    message: str
    class_name: Optional[str] = None
    detection: Optional[int] = None
    detections: Optional[List[int]] = None  # rows of a cluster


@dataclass
class KaryotypeSummary:
    count: int  # calls counted as chromosomes (the oversized calls in ``excluded`` are not)
    sex_chromosomes: str  # e.g. "XY", "XX", "X", "" (none found)
    inferred_sex: str  # "male" (a Y was called), "female" (X without Y), "undetermined"
    karyotype: str  # ISCN-style numerical string, or KARYOTYPE_NOT_DETERMINED (count out of range)
    per_class: List[ClassCount]
    flags: List[ReviewFlag]
    uncertain: List[int]  # rows of the calls flagged as uncertain
    thresholds: Dict[str, float]
    review_note: str = REVIEW_NOTE
    relabelled: List[int] = field(default_factory=list)  # rows relabelled by the karyotype assignment
    assignment: Dict[str, object] = field(default_factory=lambda: {"enabled": False})
    # The numerical string of the counted calls, also when ``karyotype`` is not determined.
    karyotype_from_calls: str = ""
    karyotype_determined: bool = True  # False: the count is outside thresholds count_min..count_max
    clustered: List[int] = field(default_factory=list)  # rows of the calls in clusters (sorted)
    # one per cluster: {"detections": rows, "box": [x0, y0, x1, y1] (union), "classes": names}
    clusters: List[Dict[str, object]] = field(default_factory=list)
    # calls not counted: {"detection", "class_name", "score", "box", "area_ratio", "aspect", "fill", "reason"}
    excluded: List[Dict[str, object]] = field(default_factory=list)

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


def _box_areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_overlap_fraction(boxes) -> np.ndarray:
    """(N, N) intersection of every two xyxy boxes over the area of the smaller one (0 on the diagonal).

    A box inside a larger one gives 1, whatever the size of the larger one (a split or a part
    called apart); boxes without area overlap nothing.
    """
    b = _as_numpy(boxes).astype(np.float64).reshape(-1, 4)
    area = _box_areas(b)
    iw = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    smaller = np.minimum(area[:, None], area[None, :])
    frac = np.divide(iw * ih, smaller, out=np.zeros_like(smaller), where=smaller > 0)
    np.fill_diagonal(frac, 0.0)
    return frac


def _components(adjacent: np.ndarray) -> np.ndarray:
    """Connected-component label of each node of a symmetric boolean adjacency matrix: the smallest
    node index of its component (min-label propagation with pointer jumping)."""
    n = len(adjacent)
    label = np.arange(n)
    linked = adjacent | np.eye(n, dtype=bool)
    while True:
        new = np.where(linked, label[None, :], n).min(axis=1)
        new = new[new]
        if np.array_equal(new, label):
            return label
        label = new


def overlap_clusters(boxes, min_overlap: float = CLUSTER_OVERLAP) -> List[List[int]]:
    """Clusters of overlapping boxes: the connected components of the graph linking two boxes whose
    intersection covers at least ``min_overlap`` of the smaller box (:func:`box_overlap_fraction`).

    Returns the components of two boxes or more, each as its sorted rows, in the order of their first row.
    """
    b = _as_numpy(boxes).reshape(-1, 4)
    if len(b) < 2:
        return []
    label = _components(box_overlap_fraction(b) >= min_overlap)
    roots, sizes = np.unique(label, return_counts=True)
    return [np.flatnonzero(label == r).tolist() for r in roots[sizes >= 2]]


def _dark_threshold(image: np.ndarray) -> Optional[float]:
    """Otsu threshold separating the dark objects from the light background of ``image``, or None
    for an image without contrast."""
    import cv2

    img = _as_numpy(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_RGB2GRAY)
    img = img.astype(np.uint8) if img.dtype != np.uint8 else img
    if img.size == 0 or int(img.max()) - int(img.min()) < 12:
        return None
    t, _ = cv2.threshold(cv2.GaussianBlur(img, (3, 3), 0), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t)


def oversized_calls(
    boxes,
    image: Optional[np.ndarray] = None,
    area_ratio: Optional[float] = None,
    max_aspect: float = OVERSIZED_ASPECT,
    min_fill: float = OVERSIZED_FILL,
) -> Tuple[np.ndarray, List[Dict[str, Optional[float]]]]:
    """Calls that are round objects much larger than the spread's chromosomes (interphase nuclei).

    A call is oversized when its box area is at least ``area_ratio`` times the median box area of the
    calls, its box aspect (longer side / shorter side) at most ``max_aspect`` and, when ``image``
    (grayscale, dark chromosomes on a light background, the boxes' pixel frame) is given, at least
    ``min_fill`` of its box is darker than the image's Otsu threshold. The box alone cannot tell a
    nucleus from a long chromosome lying diagonally (nearly square box, sparsely filled), hence the
    fill check, and without the image a higher default multiple.

    Args:
        area_ratio: default :data:`OVERSIZED_AREA` (4) with ``image``, :data:`OVERSIZED_AREA_BOX_ONLY`
            (10) without.

    Returns:
        ``(mask, measures)``: a boolean (N,) mask and, per call, ``{"area_ratio", "aspect", "fill"}``
        (``fill`` None when not measured).
    """
    b = _as_numpy(boxes).astype(np.float64).reshape(-1, 4)
    n = len(b)
    if area_ratio is None:
        area_ratio = OVERSIZED_AREA if image is not None else OVERSIZED_AREA_BOX_ONLY
    w, h = np.clip(b[:, 2] - b[:, 0], 0, None), np.clip(b[:, 3] - b[:, 1], 0, None)
    area = w * h
    med = float(np.median(area)) if n else 0.0
    ratio = area / med if med > 0 else np.zeros(n)
    aspect = np.maximum(w, h) / np.maximum(np.minimum(w, h), 1e-6)
    mask = (ratio >= area_ratio) & (aspect <= max_aspect) & (area > 0)
    fill: List[Optional[float]] = [None] * n
    if image is not None and mask.any():
        img = _as_numpy(image)
        t = _dark_threshold(img)
        if img.ndim == 3:
            import cv2

            img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_RGB2GRAY)
        H, W = img.shape[:2]
        for i in np.flatnonzero(mask).tolist():
            x0, y0 = int(np.clip(np.floor(b[i, 0]), 0, W)), int(np.clip(np.floor(b[i, 1]), 0, H))
            x1, y1 = int(np.clip(np.ceil(b[i, 2]), 0, W)), int(np.clip(np.ceil(b[i, 3]), 0, H))
            crop = img[y0:y1, x0:x1]
            if t is None or crop.size == 0:
                mask[i] = False  # nothing to measure: keep the call
                continue
            fill[i] = float((crop < t).mean())
            mask[i] = fill[i] >= min_fill
    measures = [{"area_ratio": float(ratio[i]), "aspect": float(aspect[i]), "fill": fill[i]} for i in range(n)]
    return mask, measures


def _centre(box) -> str:
    return f"x={0.5 * (box[0] + box[2]):.0f}, y={0.5 * (box[1] + box[3]):.0f}"


def summarize(
    calls: Mapping[str, object],
    review_score: float = DEFAULT_CALLS.review_score,
    review_margin: float = DEFAULT_CALLS.review_margin,
    class_names: Sequence[str] = CLASS_NAMES,
    score_threshold: Optional[float] = None,
    assignment: Optional[Mapping[str, object]] = None,
    *,
    image: Optional[np.ndarray] = None,
    cluster_overlap: float = CLUSTER_OVERLAP,
    oversized_area: Optional[float] = None,
    oversized_aspect: float = OVERSIZED_ASPECT,
    oversized_fill: float = OVERSIZED_FILL,
    count_range: Tuple[int, int] = COUNT_RANGE,
    oversized: Optional[Tuple[np.ndarray, List[Dict[str, Optional[float]]]]] = None,
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
        image: the spread (grayscale uint8, dark on light, the boxes' pixel frame); optional, used
            only for the fill check of the oversized calls (:func:`oversized_calls`).
        cluster_overlap: two calls are in one cluster when their boxes' intersection covers at least
            this fraction of the smaller box (:data:`CLUSTER_OVERLAP`, 0.25).
        oversized_area: box area, in multiples of the median call box area, from which a round call
            is oversized (default :data:`OVERSIZED_AREA` = 4 with ``image``,
            :data:`OVERSIZED_AREA_BOX_ONLY` = 10 without).
        oversized_aspect: an oversized call's box has longer side / shorter side at most this (1.5).
        oversized_fill: with ``image``, at least this fraction of an oversized call's box is dark (0.5).
        count_range: ``(lo, hi)``; a count outside it gets the karyotype
            :data:`KARYOTYPE_NOT_DETERMINED` and a ``count`` flag saying why (default 40..52).
        oversized: what :func:`oversized_calls` returned for these calls' boxes and ``image``, when the
            caller has it already (``deepacc-predict`` finds the nuclei before the assignment); else
            it is computed here with the ``oversized_*`` settings.

    The oversized calls are excluded from the count, the copy numbers, the sex and the karyotype,
    and get no uncertain/relabelled flags; the clusters are found among the counted calls. Rows
    (``per_class[*].detections``, ``uncertain``, ``clustered``, ``excluded[*].detection``, flags)
    always index the calls as given.
    """
    classes = _as_numpy(calls["classes"]).astype(np.int64).reshape(-1)
    scores = _as_numpy(calls["scores"]).astype(np.float64).reshape(-1)
    all_names = [canonical_name(class_names[int(c)]) for c in classes]
    probs = calls.get("class_probs") if hasattr(calls, "get") else None
    boxes = calls.get("boxes") if hasattr(calls, "get") else None
    boxes = None if boxes is None else _as_numpy(boxes).astype(np.float64).reshape(-1, 4)

    # Oversized round calls (nuclei): not chromosomes, not counted.
    excluded: List[Dict[str, object]] = []
    out_flags: List[ReviewFlag] = []
    is_out = np.zeros(len(classes), bool)
    if boxes is not None and len(boxes) == len(classes):
        is_out, measures = oversized if oversized is not None else oversized_calls(
            boxes, image, oversized_area, oversized_aspect, oversized_fill)
        for i in np.flatnonzero(is_out).tolist():
            m = measures[i]
            shape = f"box {m['area_ratio']:.1f}x the median call box area, aspect {m['aspect']:.2f}"
            if m["fill"] is not None:
                shape += f", {100 * m['fill']:.0f}% of the box dark"
            reason = f"round and oversized ({shape}): likely an interphase nucleus, not a chromosome"
            excluded.append({"detection": i, "class_name": all_names[i], "score": round(float(scores[i]), 4),
                             "box": [round(float(v), 2) for v in boxes[i]],
                             "area_ratio": round(m["area_ratio"], 3), "aspect": round(m["aspect"], 3),
                             "fill": None if m["fill"] is None else round(m["fill"], 3), "reason": reason})
            out_flags.append(ReviewFlag(
                "oversized", f"oversized call at {_centre(boxes[i])} (called chromosome {all_names[i]}, score "
                f"{scores[i]:.2f}): {reason}; not counted, check on the image", class_name=all_names[i], detection=i))
    counted = [i for i in range(len(classes)) if not is_out[i]]
    names = [all_names[i] for i in counted]

    # Sex inferred from the calls: a Y means male; X without Y means female.
    n_x, n_y = names.count("X"), names.count("Y")
    inferred_sex = "male" if n_y else ("female" if n_x else "undetermined")
    sex_chroms = "X" * n_x + "Y" * n_y

    per_class: List[ClassCount] = []
    flags: List[ReviewFlag] = []
    for name in (canonical_name(n) for n in class_names):
        rows = [i for i in counted if all_names[i] == name]
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

    # Clusters of overlapping calls (among the counted ones).
    clusters: List[Dict[str, object]] = []
    cluster_flags: List[ReviewFlag] = []
    if boxes is not None and len(boxes) == len(classes) and len(counted) >= 2:
        order = {canonical_name(c): k for k, c in enumerate(class_names)}
        for comp in overlap_clusters(boxes[counted], cluster_overlap):
            rows = [counted[k] for k in comp]
            b = boxes[rows]
            union = [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())]
            cls = sorted((all_names[i] for i in rows), key=order.__getitem__)
            clusters.append({"detections": rows, "box": [round(v, 2) for v in union], "classes": cls})
            cluster_flags.append(ReviewFlag(
                "cluster", f"cluster of {len(rows)} overlapping calls at {_centre(union)} (box x {union[0]:.0f}-"
                f"{union[2]:.0f}, y {union[1]:.0f}-{union[3]:.0f}): chromosomes {', '.join(cls)}; touching or "
                f"crossing chromosomes may be merged or split here: check the count and the classes there by eye",
                detections=rows))
    clustered = sorted(i for c in clusters for i in c["detections"])

    count = len(names)
    lo, hi = int(count_range[0]), int(count_range[1])
    from_calls = numerical_karyotype(names)
    determined = lo <= count <= hi
    karyotype = from_calls if determined or count == 0 else KARYOTYPE_NOT_DETERMINED
    head: List[ReviewFlag] = []
    if inferred_sex == "undetermined":
        head.append(ReviewFlag("sex", "no X or Y chromosome called: sex cannot be inferred"))
    if not determined:
        not_counted = f" ({len(excluded)} oversized call(s) not counted)" if excluded else ""
        head.append(ReviewFlag(
            "count", f"{count} chromosomes called{not_counted}, outside the plausible range {lo}-{hi} (46 expected): "
            f"chromosomes are likely missed, merged (touching chromosomes in one box) or split (one chromosome in "
            f"several boxes); karyotype not determined, count the chromosomes on the image"))
    elif count != 46:
        head.append(ReviewFlag("count", f"{count} chromosomes called (46 expected)"))
    # count and sex first (as before), then what makes the count doubtful, then the per-class flags
    flags = head + out_flags + cluster_flags + flags

    uncertain: List[int] = []
    margins = top2_margin(probs, len(class_names)) if probs is not None and len(classes) else None
    for i in counted:
        name = all_names[i]
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
            where = f" at {_centre(boxes[i])}" if boxes is not None else ""
            message = f"uncertain call: chromosome {name}{where}: " + "; ".join(reasons)
            flags.append(ReviewFlag("uncertain_call", message,
                                    class_name=name, detection=i))

    relabelled: List[int] = []
    if hasattr(calls, "get") and calls.get("relabelled") is not None:
        model_classes = _as_numpy(calls["model_classes"]).astype(np.int64).reshape(-1)
        p_model = _as_numpy(calls["model_class_prob"]).reshape(-1)
        p_assigned = _as_numpy(calls["assigned_class_prob"]).reshape(-1)
        for i in np.flatnonzero(_as_numpy(calls["relabelled"]).reshape(-1)).tolist():
            if is_out[i]:
                continue  # not a chromosome
            relabelled.append(i)
            where = f" at {_centre(boxes[i])}" if boxes is not None else ""
            was = canonical_name(class_names[int(model_classes[i])])
            flags.append(ReviewFlag(
                "relabelled", f"relabelled call{where}: chromosome {all_names[i]} (p={p_assigned[i]:.2f}) by the "
                f"karyotype assignment; the model's most probable class was {was} (p={p_model[i]:.2f})",
                class_name=all_names[i], detection=i))

    thresholds = {"review_score": float(review_score), "review_margin": float(review_margin)}
    if score_threshold is not None:
        thresholds["score_threshold"] = float(score_threshold)
    thresholds.update({
        "cluster_overlap": float(cluster_overlap),
        "oversized_area": float(oversized_area if oversized_area is not None
                                else OVERSIZED_AREA if image is not None else OVERSIZED_AREA_BOX_ONLY),
        "oversized_aspect": float(oversized_aspect),
        "count_min": lo,
        "count_max": hi,
    })
    if image is not None:
        thresholds["oversized_fill"] = float(oversized_fill)
    return KaryotypeSummary(
        count=count,
        sex_chromosomes=sex_chroms,
        inferred_sex=inferred_sex,
        karyotype=karyotype,
        per_class=per_class,
        flags=flags,
        uncertain=uncertain,
        thresholds=thresholds,
        relabelled=relabelled,
        assignment=dict(assignment) if assignment is not None else {"enabled": False},
        karyotype_from_calls=from_calls,
        karyotype_determined=determined,
        clustered=clustered,
        clusters=clusters,
        excluded=excluded,
    )


def format_summary_text(summary: KaryotypeSummary) -> str:
    """Plain-text rendering of a summary (for the terminal and the text report)."""
    lines = [f"Karyotype (suggested): {summary.karyotype}"]
    if not summary.karyotype_determined and summary.count:
        lo = summary.thresholds.get("count_min", COUNT_RANGE[0])
        hi = summary.thresholds.get("count_max", COUNT_RANGE[1])
        lines.append(f"  {summary.count} chromosomes called, outside {lo:g}-{hi:g}: chromosomes likely missed, "
                     "merged or split; count them on the image")
        lines.append(f"  numerical string of the calls (not a karyotype): {summary.karyotype_from_calls}")
    lines += [
        f"Chromosomes called: {summary.count}; sex chromosomes: {summary.sex_chromosomes or 'none'}"
        f" (inferred sex: {summary.inferred_sex})",
    ]
    if summary.excluded:
        lines.append(f"Not counted ({len(summary.excluded)}):")
        lines.extend(f"  - call {e['detection']} (chromosome {e['class_name']}) at {_centre(e['box'])}: {e['reason']}"
                     for e in summary.excluded)
    if summary.clusters:
        lines.append(f"Clusters of overlapping calls: {len(summary.clusters)} ({len(summary.clustered)} calls; "
                     "check the count and the classes there)")
    lines.append("Copies per class (mean confidence):")
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
