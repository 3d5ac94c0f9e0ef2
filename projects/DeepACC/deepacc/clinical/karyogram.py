"""Karyogram: the called chromosomes cut out, turned upright and laid out in ISCN order.

Layout (ISCN): row 1 = chromosomes 1-5, row 2 = 6-12 and X, row 3 = 13-18, row 4 = 19-22 and Y.
Homologues stand side by side above a line carrying the class label; every chromosome is drawn at
the same scale, so relative lengths are kept.

Each chromosome is cut out of its box and separated from the background and from neighbours that
reach into the box by a foreground mask: the dark chromosome is thresholded (Otsu) against the light
background, gaps at pale bands are closed, the mask is limited to the box, and only the component
covering the centre of the box is kept, with the pieces lying on its principal axis (a chromosome
split at a pale band). The cut-out is then rotated so that the principal axis of the mask (from the
image moments) is vertical, and by 180 degrees more when the narrowest point of its width profile
(taken as the centromere) lies in the lower half, so that the short arm points up as in ISCN
karyograms. This is a heuristic: acrocentric chromosomes and chromosomes without a visible
constriction keep whichever end came up, and a bend or a neighbour can be mistaken for the
constriction. Bent chromosomes are turned, not straightened. Overlapping chromosomes, or
chromosomes touching over a broad contact, keep the part of their neighbour inside the box.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..karyotype import CLASS_NAMES, DENVER_GROUPS, GROUP_COLORS, canonical_name, group_of
from ..settings import DEFAULT_CALLS
from .summary import top2_margin

__all__ = ["ISCN_ROWS", "Cutout", "extract_chromosome", "scale_cutouts", "karyogram_title", "karyogram_notes",
           "render_karyogram"]

#: Class names of each karyogram row, in ISCN order: Denver groups A+B, C (with X), D+E, F+G (with Y).
ISCN_ROWS: Tuple[Tuple[str, ...], ...] = tuple(sum((DENVER_GROUPS[g] for g in row), ()) for row in ("AB", "C", "DE", "FG"))

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_RED = (210, 0, 0)
_BLACK = (20, 20, 20)
_ORANGE = (235, 130, 0)


@dataclass
class Cutout:
    """One chromosome cut out of the spread and turned upright.

    ``image``: uint8 grayscale, background set to 255; ``mask``: bool, same shape; ``angle``: degrees
    the crop was rotated by (counter-clockwise); ``mask_found``: False when no usable foreground mask
    was found and the whole box was kept; ``flipped``: turned by 180 degrees so that the clearest
    constriction (taken as the centromere) is in the upper half, i.e. the short arm up.
    """

    image: np.ndarray
    mask: np.ndarray
    angle: float
    mask_found: bool
    flipped: bool = False  # turned by 180 degrees to put the short arm up


def _axis(mask: np.ndarray):
    """Centroid, unit direction of the principal axis and half-width of a binary mask."""
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean(), ys.mean()
    cov = np.cov(np.stack([xs - cx, ys - cy])) if len(xs) > 1 else np.zeros((2, 2))
    evals, evecs = np.linalg.eigh(cov)
    return (cx, cy), evecs[:, 1], math.sqrt(3.0 * max(evals[0], 0.0))


def _foreground_mask(crop: np.ndarray, inner: Tuple[int, int, int, int]) -> Optional[np.ndarray]:
    """Mask of the chromosome in ``crop`` (dark on light), or None when the threshold fails.

    ``inner`` = (x0, y0, x1, y1) of the detection box inside the padded crop. The threshold is
    computed on the padded crop; the mask is limited to the box plus 2 pixels. The main component
    is the one covering most of the central half of the box; other components are kept when they
    lie on its principal axis (a chromosome split at a pale band) or cover the centre as much.
    Components are found after an erosion by about a quarter of the chromosome width, so that
    neighbours touching the chromosome through a thin contact are separated, then grown back.
    """
    if crop.size == 0 or int(crop.max()) - int(crop.min()) < 12:
        return None
    blur = cv2.GaussianBlur(crop, (3, 3), 0)
    _, mask = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    k = max(3, (min(crop.shape) // 25) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    x0, y0, x1, y1 = inner
    limit = np.zeros_like(mask)
    limit[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = 1
    mask = mask * limit
    if not mask.any():
        return None
    # Erode by about a quarter of the chromosome width: thin contacts with touching neighbours
    # break, the components are chosen on the eroded mask and grown back inside the mask.
    dt = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    r = int(0.5 * np.percentile(dt[mask > 0], 95))
    core = mask
    if r >= 1:
        core = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        if not core.any():
            core, r = mask, 0
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(core, connectivity=8)
    if n <= 1:
        return None
    bw, bh = x1 - x0, y1 - y0
    # Central region of the box: the middle half in each direction (at least 3 px).
    cx0, cx1 = x0 + bw // 4, max(x0 + bw // 4 + 3, x1 - bw // 4)
    cy0, cy1 = y0 + bh // 4, max(y0 + bh // 4 + 3, y1 - bh // 4)
    central = labels[cy0:cy1, cx0:cx1]
    central_count = np.bincount(central.ravel(), minlength=n)
    central_count[0] = 0
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0
    main = int(np.argmax(central_count)) if central_count.max() > 0 else int(np.argmax(areas))
    (mx, my), direction, half_width = _axis(labels == main)
    ids = [main]
    for j in range(1, n):
        if j == main or areas[j] < 0.05 * areas[main]:
            continue
        dx, dy = centroids[j][0] - mx, centroids[j][1] - my
        off_axis = abs(dx * direction[1] - dy * direction[0])
        if off_axis <= half_width + 2 or (
            areas[j] >= 0.5 * areas[main] and central_count[j] >= 0.3 * central_count[main]
        ):
            ids.append(j)
    keep = np.isin(labels, ids)
    if r >= 1:
        grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 3, 2 * r + 3))
        keep = (cv2.dilate(keep.astype(np.uint8), grow) > 0) & (mask > 0)
    if keep[y0:y1, x0:x1].sum() < 0.03 * max(bw * bh, 1):
        return None
    return keep


def extract_chromosome(
    image: np.ndarray, box: Sequence[float], pad: int = 4, upright: bool = True
) -> Cutout:
    """Cut the chromosome in ``box`` (xyxy) out of the grayscale ``image`` and turn it upright."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    H, W = img.shape[:2]
    x0, y0, x1, y1 = box
    bx0, by0 = int(math.floor(max(0, min(W - 1, x0)))), int(math.floor(max(0, min(H - 1, y0))))
    bx1, by1 = int(math.ceil(max(bx0 + 1, min(W, x1)))), int(math.ceil(max(by0 + 1, min(H, y1))))
    px0, py0, px1, py1 = max(0, bx0 - pad), max(0, by0 - pad), min(W, bx1 + pad), min(H, by1 + pad)
    crop = img[py0:py1, px0:px1]
    inner = (bx0 - px0, by0 - py0, bx1 - px0, by1 - py0)
    mask = _foreground_mask(crop, inner)
    found = mask is not None
    if mask is None:
        mask = np.zeros(crop.shape, bool)
        mask[inner[1] : inner[3], inner[0] : inner[2]] = True
    cut = np.where(mask, crop, 255).astype(np.uint8)

    angle = 0.0
    if upright and mask.sum() >= 5:
        m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
        mu20, mu02, mu11 = m["mu20"], m["mu02"], m["mu11"]
        # Direction of the major axis, measured from the x axis (image y points down).
        theta = 0.5 * math.degrees(math.atan2(2.0 * mu11, mu20 - mu02))
        # Rotating by theta - 90 degrees (cv2: positive = counter-clockwise on screen) puts it vertical.
        angle = theta + 90.0
        angle = (angle + 90.0) % 180.0 - 90.0  # the smallest turn that gives the same axis
        if abs(angle) > 0.5:
            cut, mask = _rotate(cut, mask, angle)
    ys, xs = np.nonzero(mask)
    if len(ys):
        cut = cut[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        mask = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    flipped = False
    if upright and found:
        c = _centromere_row(mask)
        if c is not None and c > 0.5 * mask.shape[0]:
            # The constriction is in the lower half: the short arm is below. Turn by 180 degrees.
            cut, mask = cut[::-1, ::-1].copy(), mask[::-1, ::-1].copy()
            angle = (angle + 180.0) % 360.0
            flipped = True
    return Cutout(image=cut, mask=mask, angle=angle, mask_found=found, flipped=flipped)


def _centromere_row(mask: np.ndarray) -> Optional[int]:
    """Row of a clear constriction (primary constriction = centromere) of an upright mask, or None.

    The width profile (mask pixels per row, smoothed) is searched between 15 % and 85 % of the
    length; the narrowest row counts as a constriction when it is below 80 % of the median width.
    Acrocentric chromosomes (constriction at the very end) and chromosomes without a visible
    constriction give None and are left as they are.
    """
    h = mask.shape[0]
    if h < 12:
        return None
    width = mask.sum(axis=1).astype(np.float64)
    k = max(3, (h // 15) | 1)
    smooth = np.convolve(width, np.ones(k) / k, mode="same")
    lo, hi = int(0.15 * h), int(0.85 * h)
    inner = smooth[lo:hi]
    if inner.size == 0:
        return None
    j = int(np.argmin(inner))
    if inner[j] >= 0.8 * float(np.median(smooth[width > 0])):
        return None
    return lo + j


def _rotate(cut: np.ndarray, mask: np.ndarray, angle: float) -> Tuple[np.ndarray, np.ndarray]:
    h, w = cut.shape
    d = int(math.ceil(math.hypot(h, w))) + 2
    big = np.full((d, d), 255, np.uint8)
    bigm = np.zeros((d, d), np.uint8)
    oy, ox = (d - h) // 2, (d - w) // 2
    big[oy : oy + h, ox : ox + w] = cut
    bigm[oy : oy + h, ox : ox + w] = mask.astype(np.uint8) * 255
    M = cv2.getRotationMatrix2D((d / 2.0, d / 2.0), angle, 1.0)
    rot = cv2.warpAffine(big, M, (d, d), flags=cv2.INTER_LINEAR, borderValue=255)
    rotm = cv2.warpAffine(bigm, M, (d, d), flags=cv2.INTER_LINEAR, borderValue=0) >= 128
    rot = np.where(rotm, rot, 255).astype(np.uint8)
    return rot, rotm


def _fit(s: str, max_w: int, scale: float, thickness: int) -> str:
    """``s`` cut (with '...') to fit in ``max_w`` pixels."""
    if cv2.getTextSize(s, _FONT, scale, thickness)[0][0] <= max_w:
        return s
    while len(s) > 4 and cv2.getTextSize(s + "...", _FONT, scale, thickness)[0][0] > max_w:
        s = s[:-1]
    return s + "..."


def _text(canvas, s, x, y, scale, color, thickness=1, center=True):
    (tw, th), _ = cv2.getTextSize(s, _FONT, scale, thickness)
    xx = int(x - tw / 2) if center else int(x)
    cv2.putText(canvas, s, (xx, int(y)), _FONT, scale, color, thickness, cv2.LINE_AA)
    return tw, th


def scale_cutouts(images: Sequence[np.ndarray], max_height: int = 150) -> Tuple[List[np.ndarray], float]:
    """Resize the cut-outs to one common scale; returns ``(resized, scale)``.

    The 90th percentile of the heights is drawn at 90 % of ``max_height``, so that one huge box (a
    false call over a cluster) cannot shrink every chromosome; a cut-out that would end up taller
    than ``max_height`` is shrunk on its own.
    """
    heights = np.array([im.shape[0] for im in images], np.float64)
    ref = float(np.percentile(heights, 90)) if len(heights) else 1.0
    s = float(np.clip(0.9 * max_height / max(ref, 1.0), 0.2, 6.0))
    out: List[np.ndarray] = []
    for im in images:
        h, w = im.shape[:2]
        si = min(s, max_height / h)
        nh, nw = max(1, int(round(h * si))), max(1, int(round(w * si)))
        out.append(cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA if si < 1 else cv2.INTER_LINEAR))
    return out, s


def karyogram_title(summary=None) -> str:
    """First line of the karyogram's header: the suggested karyotype, or, when the count is outside
    the plausible range (``summary.karyotype_determined`` false), that the karyotype is not determined."""
    if summary is None:
        return "Karyogram"
    if not getattr(summary, "karyotype_determined", True) and summary.count:
        return f"Karyotype not determined: {summary.count} chromosomes called"
    return f"Suggested karyotype: {summary.karyotype}"


def karyogram_notes(summary=None) -> List[Tuple[str, Tuple[int, int, int]]]:
    """Lines under the title, with their colour: why the karyotype is not determined (red), the calls
    not counted and the clusters of overlapping calls (orange)."""
    if summary is None:
        return []
    lines: List[Tuple[str, Tuple[int, int, int]]] = []
    if not getattr(summary, "karyotype_determined", True) and summary.count:
        t = summary.thresholds
        lines.append((f"Outside the plausible count {t.get('count_min', 40):g}-{t.get('count_max', 52):g}: chromosomes "
                      "likely missed, merged or split. Count them on the image.", _RED))
    parts = []
    excluded = getattr(summary, "excluded", None) or []
    clusters = getattr(summary, "clusters", None) or []
    if excluded:
        parts.append(f"{len(excluded)} oversized round call(s) not counted (nucleus?), not shown")
    if clusters:
        n = sum(len(c["detections"]) for c in clusters)
        parts.append(f"{len(clusters)} cluster(s) of overlapping calls ({n} calls): check count and classes there")
    if parts:
        lines.append(("; ".join(parts), _ORANGE))
    return lines


def render_karyogram(
    image: np.ndarray,
    calls: Mapping[str, np.ndarray],
    summary=None,
    class_names: Sequence[str] = CLASS_NAMES,
    uncertain: Optional[Collection[int]] = None,
    max_chromosome_height: int = 150,
    title: Optional[str] = None,
) -> np.ndarray:
    """Render the karyogram of one spread as an RGB uint8 image.

    Args:
        image: the metaphase image (grayscale uint8, dark chromosomes on light background).
        calls: ``{"boxes", "scores", "classes"}`` (see :func:`deepacc.clinical.summary.select_calls`).
        summary: optional :class:`~deepacc.clinical.summary.KaryotypeSummary` of the calls: gives
            the title (:func:`karyogram_title`: the karyotype string, or "Karyotype not determined" when
            the count is outside the plausible range, with the reason in red below), the uncertain calls,
            the classes with abnormal copy numbers, and the calls excluded from the count (oversized
            round calls: not laid out) and the clusters (:func:`karyogram_notes`).
        uncertain: rows of ``calls`` to mark (red frame + score); default ``summary.uncertain``.
        max_chromosome_height: height in pixels of the longest chromosomes (one scale for all: the
            90th percentile of the cut-out heights is drawn at 90 % of it; a cut-out that would be
            taller is shrunk on its own).
        title: first line of the header (default: :func:`karyogram_title`).
    """
    boxes = np.asarray(calls["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(calls["scores"], dtype=np.float64).reshape(-1)
    classes = np.asarray(calls["classes"]).astype(int).reshape(-1)
    names = [canonical_name(class_names[c]) for c in classes]
    if uncertain is None:
        uncertain = summary.uncertain if summary is not None else ()
    uncertain = set(int(i) for i in uncertain)
    relabelled = set(int(i) for i in getattr(summary, "relabelled", ()) or ())
    model_classes = calls.get("model_classes") if hasattr(calls, "get") else None
    abnormal = {c.name for c in summary.per_class if c.abnormal} if summary is not None else set()

    margins = top2_margin(calls["class_probs"], len(class_names)) if "class_probs" in calls and len(names) else None
    margin_thr = summary.thresholds.get("review_margin", DEFAULT_CALLS.review_margin) if summary is not None \
        else DEFAULT_CALLS.review_margin
    # Calls excluded from the count (oversized round objects: nuclei) are not chromosomes: not laid out.
    excluded = {int(e["detection"]) for e in (getattr(summary, "excluded", None) or [])}
    shown = [i for i in range(len(names)) if i not in excluded]
    cutouts = {i: extract_chromosome(image, boxes[i]) for i in shown}
    scaled_list, _ = scale_cutouts([cutouts[i].image for i in shown], max_chromosome_height)
    scaled = dict(zip(shown, scaled_list))

    by_class: Dict[str, List[int]] = {n: [] for row in ISCN_ROWS for n in row}
    # Within a slot, most confident first (left).
    for i in np.argsort(-scores, kind="stable"):
        if int(i) not in excluded:
            by_class[names[i]].append(int(i))

    gap, frame, margin = 6, 3, 24
    label_h, score_h = 22, 26
    if relabelled:
        score_h += 12  # room for "was <class>" above the score lines
    min_slot = 44
    col_gap = 26
    notes = karyogram_notes(summary)
    title_h = 64 + 18 * len(notes)
    row_layout = []
    for row in ISCN_ROWS:
        slots = []
        for n in row:
            ws = [scaled[i].shape[1] + 2 * frame for i in by_class[n]]
            width = max(min_slot, sum(ws) + gap * max(len(ws) - 1, 0))
            slots.append((n, width))
        heights = [scaled[i].shape[0] for n in row for i in by_class[n]]
        row_h = max(heights + [int(0.35 * max_chromosome_height)]) + 2 * frame
        row_w = sum(w for _, w in slots) + col_gap * (len(slots) - 1)
        row_layout.append((slots, row_h, row_w))
    width = max(max(r[2] for r in row_layout) + 2 * margin, 700)
    height = title_h + sum(r[1] + label_h + score_h + 14 for r in row_layout) + margin + 30
    canvas = np.full((height, width, 3), 255, np.uint8)

    head = title if title is not None else karyogram_title(summary)
    undetermined = summary is not None and not getattr(summary, "karyotype_determined", True) and summary.count
    _text(canvas, _fit(head, width - 2 * margin, 0.75, 2), margin, 28, 0.75, _RED if undetermined else _BLACK, 2,
          center=False)
    for k, (line, color) in enumerate(notes):
        _text(canvas, _fit(line, width - 2 * margin, 0.45, 1), margin, 48 + 18 * k, 0.45, color, 1, center=False)
    sub = f"{len(shown)} chromosomes called"
    if summary is not None:
        sub += f"; {len(summary.flags)} review flag(s)" if summary.flags else "; no review flags"
    sub += "  |  red frame = uncertain call (score; m = top-2 margin); red label = unexpected copy number"
    if relabelled:
        sub += "; orange frame = relabelled by the karyotype assignment (was: model's class)"
    _text(canvas, sub, margin, title_h - 14, 0.42, (80, 80, 80), 1, center=False)

    y = title_h
    for slots, row_h, row_w in row_layout:
        x = (width - row_w) // 2
        base_y = y + row_h
        for n, slot_w in slots:
            idx = by_class[n]
            content_w = sum(scaled[i].shape[1] + 2 * frame for i in idx) + gap * max(len(idx) - 1, 0)
            cx = x + (slot_w - content_w) // 2
            for i in idx:
                chrom = scaled[i]
                h, w = chrom.shape
                top = base_y - frame - h
                canvas[top : top + h, cx + frame : cx + frame + w] = chrom[:, :, None]
                lines = []
                if i in relabelled:
                    cv2.rectangle(canvas, (cx, top - frame), (cx + w + 2 * frame - 1, base_y - 1), _ORANGE, 2)
                    if model_classes is not None:
                        lines.append((f"was {canonical_name(class_names[int(model_classes[i])])}", _ORANGE))
                if i in uncertain:
                    inner = 2 if i in relabelled else 0  # inside the orange frame when both
                    cv2.rectangle(canvas, (cx + inner, top - frame + inner),
                                  (cx + w + 2 * frame - 1 - inner, base_y - 1 - inner), _RED, 2)
                    lines.append((f"{scores[i]:.2f}", _RED))
                    if margins is not None and margins[i] < margin_thr:
                        lines.append((f"m{margins[i]:.2f}", _RED))
                for k, (txt, col) in enumerate(lines):  # under the chromosome, only when it fits
                    if cv2.getTextSize(txt, _FONT, 0.36, 1)[0][0] <= w + 2 * frame + gap:
                        _text(canvas, txt, cx + frame + w / 2, base_y + label_h + 12 + 12 * k, 0.36, col)
                cx += w + 2 * frame + gap
            color = GROUP_COLORS[group_of(n)]
            cv2.line(canvas, (x, base_y + 2), (x + slot_w - 1, base_y + 2), color, 2)
            lab = n if n not in abnormal else f"{n} ({len(idx)})"
            _text(canvas, lab, x + slot_w / 2, base_y + label_h - 2, 0.55, _RED if n in abnormal else _BLACK,
                  2 if n in abnormal else 1)
            x += slot_w + col_gap
        y = base_y + label_h + score_h + 14
    note = "Software suggests, a cytogeneticist decides: review every call on the image before use."
    _text(canvas, note, margin, height - 14, 0.42, (80, 80, 80), 1, center=False)
    return canvas
