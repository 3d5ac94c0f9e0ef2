"""COCO-style AP with pycocotools, on in-memory COCO objects (no temporary files, no prints).

The numbers are pycocotools' own: ``COCOeval.evaluate()`` + ``accumulate()``, then the mean over
the ``precision`` array exactly as ``COCOeval.summarize()`` does it. Only what DeepACC reports is
evaluated: the area range "all" and ``maxDets = max_dets`` (per image and class, COCO's default
100). The per-(image, class) matching and the accumulation for that range are the same code as a
default ``COCOeval`` run, so ``AP@0.5`` equals ``stats[1]`` and ``AP@[.5:.95]`` equals
``stats[0]`` of a default run (the tests check it); the other area ranges and ``maxDets`` 1/10,
which DeepACC does not report, are simply not computed.
"""
from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["build_coco_gt", "build_coco_dt", "coco_ap"]


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
    ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
    p = ev.params
    p.imgIds = sorted(int(i) for i in img_ids)
    p.catIds = list(range(1, len(class_names) + 1))
    p.areaRng = [[0 ** 2, 1e5 ** 2]]
    p.areaRngLbl = ["all"]
    p.maxDets = [int(max_dets)]
    if iou_thrs is not None:
        p.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
    with _quiet():
        ev.evaluate()
        ev.accumulate()
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
    for k in range(len(class_names)):
        per50.append(_mean(prec[t50, :, k, 0, 0]))
        per.append(_mean(prec[:, :, k, 0, 0]) if full else float("nan"))
    return {"AP50": ap50, "AP": ap, "per_class_AP50": per50, "per_class_AP": per}
