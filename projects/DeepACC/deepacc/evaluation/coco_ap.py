"""COCO-style AP with pycocotools, on in-memory COCO objects (no temporary files, no prints).

The numbers are pycocotools' own: ``COCOeval.evaluate()`` + ``accumulate()``, then the mean over
the ``precision`` array exactly as ``COCOeval.summarize()`` does it. Only what DeepACC reports is
evaluated: the area range "all" and ``maxDets = max_dets`` (per image and class, COCO's default
100). The per-(image, class) matching and the accumulation for that range are the same code as a
default ``COCOeval`` run, so ``AP@0.5`` equals ``stats[1]`` and ``AP@[.5:.95]`` equals
``stats[0]`` of a default run (the tests check it); the other area ranges and ``maxDets`` 1/10,
which DeepACC does not report, are simply not computed.

:func:`coco_ap_subsets` runs one evaluation and reads the AP of several subsets of the images from
it (pycocotools' ``accumulate()`` over the subset's per-image results: the same numbers as a separate
run on each subset, since COCO matches every image on its own). With ``fast_matching`` the
per-image matching (``COCOeval.evaluateImg``, a Python loop over every (threshold, detection,
ground truth) triple) is replaced by :class:`FastMatchingCOCOeval`, which visits only the pairs
that overlap enough and gives the same per-image results, hence the same AP (the tests compare both
on random sets with crowd regions and tied IoUs). It matters for a single category (the
class-agnostic AP: ~46 ground truths and ~100 detections per image in one category), where the
original loop is ~10x slower than the rest of the evaluation.
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["build_coco_gt", "build_coco_dt", "coco_ap", "coco_ap_subsets", "FastMatchingCOCOeval"]


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def build_coco_gt(images: Sequence[Mapping], class_names: Sequence[str]) -> COCO:
    """COCO ground-truth object from per-image records.

    ``images``: dicts with ``image_id``, ``height``, ``width``, ``boxes`` ``(G, 4)`` XYXY,
    ``classes`` ``(G,)`` contiguous indices and optionally ``iscrowd`` ``(G,)``. COCO category ids
    are ``index + 1``.
    """
    cats = [{"id": i + 1, "name": str(n)} for i, n in enumerate(class_names)]
    imgs, anns = [], []
    ann_id = 1
    for r in images:
        iid = int(r["image_id"])
        imgs.append({"id": iid, "height": int(r.get("height", 0)), "width": int(r.get("width", 0))})
        xywh = _xyxy_to_xywh(r["boxes"])
        cls = np.asarray(r["classes"], dtype=np.int64).reshape(-1)
        crowd = np.asarray(r.get("iscrowd", np.zeros(len(cls))), dtype=np.int64).reshape(-1)
        area = xywh[:, 2] * xywh[:, 3]
        for bb, c, a, z in zip(xywh.tolist(), cls.tolist(), area.tolist(), crowd.tolist()):
            anns.append({"id": ann_id, "image_id": iid, "category_id": c + 1, "bbox": bb,
                         "area": a, "iscrowd": z})
            ann_id += 1
    coco = COCO()
    coco.dataset = {"images": imgs, "annotations": anns, "categories": cats}
    with _quiet():
        coco.createIndex()
    return coco


def build_coco_dt(coco_gt: COCO, detections: Sequence[Mapping]) -> COCO:
    """COCO detection object (what ``COCO.loadRes`` builds, without the file round trip).

    ``detections``: dicts with ``image_id``, ``boxes`` ``(N, 4)`` XYXY, ``scores``, ``classes``.
    Annotation ids start at 1 in input order, ``area = w * h``, ``iscrowd = 0``.
    """
    anns: List[dict] = []
    ann_id = 1
    for r in detections:
        iid = int(r["image_id"])
        xywh = _xyxy_to_xywh(r["boxes"])
        if len(xywh) == 0:
            continue
        area = (xywh[:, 2] * xywh[:, 3]).tolist()
        cls = (np.asarray(r["classes"], dtype=np.int64).reshape(-1) + 1).tolist()
        sc = np.asarray(r["scores"], dtype=np.float64).reshape(-1).tolist()
        ids = range(ann_id, ann_id + len(sc))
        ann_id += len(sc)
        anns.extend(
            {"id": i, "image_id": iid, "category_id": c, "bbox": bb, "score": s, "area": a, "iscrowd": 0}
            for i, bb, c, s, a in zip(ids, xywh.tolist(), cls, sc, area)
        )
    coco = COCO()
    coco.dataset = {"images": list(coco_gt.dataset["images"]), "annotations": anns,
                    "categories": list(coco_gt.dataset["categories"])}
    with _quiet():
        coco.createIndex()
    return coco


class FastMatchingCOCOeval(COCOeval):
    """``COCOeval`` whose per-image matching visits only the (detection, ground truth) pairs whose
    IoU reaches the lowest threshold; every other step (``_prepare``, ``computeIoU``,
    ``accumulate``) is pycocotools' own.

    ``evaluateImg`` returns what the original returns, field for field: the same rule, in the same
    order. Per IoU threshold ``t``, detections by descending score (stable), each takes, among the
    ground truths not yet matched (a crowd region can be matched again), the one with the highest IoU
    ``>= min(t, 1 - 1e-10)`` (ties: the later one in the ground-truth order, non-ignored first); a
    detection that has a non-ignored candidate never takes an ignored one. Pairs below the lowest
    threshold cannot change the outcome of the original loop (it only ``continue``s past them), so
    leaving them out is exact; a pair whose detection and ground truth have no other candidate is
    matched at every threshold its IoU reaches, all such pairs at once (numpy); the others go
    through the loop above, in score order.
    """

    def evaluateImg(self, imgId, catId, aRng, maxDet):  # noqa: N802 (pycocotools' name)
        p = self.params
        if p.useCats:
            gt = self._gts[imgId, catId]
            dt = self._dts[imgId, catId]
        else:  # pragma: no cover - DeepACC always evaluates per category
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return None
        ig = np.asarray([1 if (g["ignore"] or g["area"] < aRng[0] or g["area"] > aRng[1]) else 0 for g in gt],
                        dtype=np.int64)
        for g, v in zip(gt, ig.tolist()):  # as the original, which leaves the flag on the annotations
            g["_ignore"] = v
        gtind = np.argsort(ig, kind="mergesort")
        gt = [gt[i] for i in gtind]
        gt_ig = ig[gtind]
        dtind = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in dtind[0:maxDet]]
        crowd = [bool(int(g["iscrowd"])) for g in gt]
        ious = self.ious[imgId, catId]
        ious = ious[:, gtind] if len(ious) > 0 else ious
        thrs = np.asarray(p.iouThrs, dtype=np.float64)
        T, G, D = len(thrs), len(gt), len(dt)
        gtm = np.zeros((T, G))
        dtm = np.zeros((T, D))
        dt_ig = np.zeros((T, D))
        if len(ious) != 0 and T:
            lows = [min(float(t), 1 - 1e-10) for t in thrs.tolist()]
            rows, cols = np.nonzero(ious >= min(lows))  # row-major: by detection, gts in order
            vals = ious[rows, cols]
            gt_ids = [g["id"] for g in gt]
            dt_ids = [d["id"] for d in dt]
            # a pair whose detection has no other candidate and whose ground truth no other detection
            # shares nothing with the rest: it matches exactly at the thresholds its IoU reaches
            alone = (np.bincount(rows, minlength=D)[rows] == 1) & (np.bincount(cols, minlength=G)[cols] == 1)
            if alone.any():
                r, c = rows[alone], cols[alone]
                hit = vals[alone][None, :] >= np.asarray(lows)[:, None]  # (T, pairs)
                ti, pi = np.nonzero(hit)
                dtm[ti, r[pi]] = np.asarray(gt_ids, dtype=np.float64)[c[pi]]
                gtm[ti, c[pi]] = np.asarray(dt_ids, dtype=np.float64)[r[pi]]
                dt_ig[ti, r[pi]] = gt_ig[c[pi]]
                rows, cols, vals = rows[~alone], cols[~alone], vals[~alone]
            vals = vals.tolist()
            rows, cols = rows.tolist(), cols.tolist()
            ig_list = gt_ig.tolist()
            n = len(rows)
            for tind, low in enumerate(lows):
                taken = [False] * G
                j = 0
                while j < n:
                    d = rows[j]
                    best, m = low, -1
                    while j < n and rows[j] == d:
                        g, v = cols[j], vals[j]
                        j += 1
                        if taken[g] and not crowd[g]:
                            continue
                        if m > -1 and ig_list[m] == 0 and ig_list[g] == 1:
                            while j < n and rows[j] == d:  # the original breaks out of this detection
                                j += 1
                            break
                        if v < best:
                            continue
                        best, m = v, g
                    if m == -1:
                        continue
                    dt_ig[tind, d] = ig_list[m]
                    dtm[tind, d] = gt_ids[m]
                    gtm[tind, m] = dt_ids[d]
                    taken[m] = True
        a = np.array([d["area"] < aRng[0] or d["area"] > aRng[1] for d in dt]).reshape((1, len(dt)))
        dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, np.repeat(a, T, 0)))
        return {
            "image_id": imgId,
            "category_id": catId,
            "aRng": aRng,
            "maxDet": maxDet,
            "dtIds": [d["id"] for d in dt],
            "gtIds": [g["id"] for g in gt],
            "dtMatches": dtm,
            "gtMatches": gtm,
            "dtScores": [d["score"] for d in dt],
            "gtIgnore": gt_ig,
            "dtIgnore": dt_ig,
        }


def _evaluated(coco_gt: COCO, coco_dt: COCO, img_ids: Sequence[int], n_classes: int,
               iou_thrs: Optional[Sequence[float]], max_dets: int, fast_matching: bool) -> COCOeval:
    """A ``COCOeval`` (area "all", one ``maxDets``) after ``evaluate()``, not yet accumulated."""
    ev = (FastMatchingCOCOeval if fast_matching else COCOeval)(coco_gt, coco_dt, iouType="bbox")
    p = ev.params
    p.imgIds = sorted(int(i) for i in img_ids)
    p.catIds = list(range(1, n_classes + 1))
    p.areaRng = [[0 ** 2, 1e5 ** 2]]
    p.areaRngLbl = ["all"]
    p.maxDets = [int(max_dets)]
    if iou_thrs is not None:
        p.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
    with _quiet():
        ev.evaluate()
    return ev


def _read_ap(ev: COCOeval, n_classes: int) -> Dict[str, object]:
    """``accumulate()`` and the AP table, read as ``COCOeval.summarize()`` reads it."""
    with _quiet():
        ev.accumulate()
    p = ev.params
    prec = ev.eval["precision"]  # (T, R, K, A=1, M=1)
    t50 = np.where(np.isclose(p.iouThrs, 0.5))[0]
    if len(t50) == 0:
        raise ValueError("coco_ap: iou_thrs must contain 0.5")

    def _mean(s: np.ndarray) -> float:
        s = s[s > -1]
        return float(np.mean(s)) if s.size else float("nan")

    # same slicing and reduction as COCOeval.summarize(): s[t][:, :, :, aind, mind]
    p50 = prec[t50][:, :, :, [0], [0]]
    ap50 = _mean(p50)
    full = len(p.iouThrs) == 10 and np.allclose(p.iouThrs, np.linspace(0.5, 0.95, 10))
    ap = _mean(prec[:, :, :, [0], [0]]) if full else float("nan")
    per50, per = [], []
    for k in range(n_classes):
        per50.append(_mean(prec[t50, :, k, 0, 0]))
        per.append(_mean(prec[:, :, k, 0, 0]) if full else float("nan"))
    return {"AP50": ap50, "AP": ap, "per_class_AP50": per50, "per_class_AP": per}


def coco_ap(
    coco_gt: COCO,
    coco_dt: COCO,
    img_ids: Sequence[int],
    class_names: Sequence[str],
    iou_thrs: Optional[Sequence[float]] = None,
    max_dets: int = 100,
) -> Dict[str, object]:
    """Run pycocotools' bbox ``COCOeval`` (area "all", one ``maxDets``) and read the AP table.

    Args:
        iou_thrs: ``None`` for COCO's ten thresholds 0.50:0.05:0.95 (gives AP@[.5:.95] too) or
            e.g. ``[0.5]`` when only AP@0.5 is needed (same AP@0.5, ten times less matching).

    Returns:
        fractions: ``AP50`` (mean over classes with ground truth), ``AP`` (AP@[.5:.95], NaN when
        ``iou_thrs`` has not the ten COCO thresholds), ``per_class_AP50`` and ``per_class_AP``
        (lists in ``class_names`` order, NaN for a class without ground truth).
    """
    ev = _evaluated(coco_gt, coco_dt, img_ids, len(class_names), iou_thrs, max_dets, fast_matching=False)
    return _read_ap(ev, len(class_names))


def coco_ap_subsets(
    coco_gt: COCO,
    coco_dt: COCO,
    subsets: Mapping[str, Sequence[int]],
    class_names: Sequence[str],
    iou_thrs: Optional[Sequence[float]] = None,
    max_dets: int = 100,
    fast_matching: bool = True,
) -> Dict[str, Dict[str, object]]:
    """:func:`coco_ap` of several subsets of the images, ``{name: image ids}``, from one evaluation.

    The images are matched once (all the subsets' images); each subset is then accumulated from
    its own images' results (the others' set aside), which is what a separate :func:`coco_ap` on
    that subset computes. ``fast_matching``: :class:`FastMatchingCOCOeval` (same results, faster).
    Returns ``{name: coco_ap-like dict}``; a subset without ground truth has NaN APs.
    """
    union = sorted({int(i) for ids in subsets.values() for i in ids})
    ev = _evaluated(coco_gt, coco_dt, union, len(class_names), iou_thrs, max_dets, fast_matching)
    every = ev.evalImgs
    out: Dict[str, Dict[str, object]] = {}
    done: Dict[tuple, Dict[str, object]] = {}
    try:
        for name, ids in subsets.items():
            key = tuple(sorted({int(i) for i in ids}))
            if key not in done:
                keep = set(key)
                ev.evalImgs = [e if e is not None and e["image_id"] in keep else None for e in every]
                done[key] = _read_ap(ev, len(class_names))
            out[name] = done[key]
    finally:
        ev.evalImgs = every
    return out
