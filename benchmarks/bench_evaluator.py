#!/usr/bin/env python
"""Speed of the DeepACC evaluator against pycocotools' COCOeval alone, on CPU.

Synthetic test set shaped like the paper's (678 images of 1600 x 1200, 46 chromosomes each) with
100 detections per image in ``instances`` (46 boxes on the chromosomes, 85 % with the right
class, 20 second-choice classes of the same proposals, 34 boxes on background) and the
top-1 detections of the same proposals in ``instances_top1`` (80 per image).

Measured (best of ``--repeat`` runs, single thread; wall-clock and process CPU time, the latter
being the steadier one on a shared machine):

* ``coco_default``: the reference, ``COCOeval(gt, dt, "bbox")`` with default parameters,
  ``evaluate()`` + ``accumulate()`` only, on the ``instances`` detections, with the COCO ground
  truth and ``loadRes`` detections built beforehand (untimed);
* ``evaluator``: the whole :class:`MetaphaseEvaluator` cycle ``reset()`` + ``process()`` of every
  image + ``evaluate()`` (COCO objects built in memory, AP on ``instances`` at ten IoU thresholds,
  AP@0.5 on ``instances_top1``, Acc/AER matching, confusion, count error, karyotype agreement),
  with ``output_dir=None``;
* ``evaluator+files``: the same, also writing the JSON, the CSV and the confusion PNG.

ratio = evaluator time / coco_default time (goal <= 1.5).

    python benchmarks/bench_evaluator.py [--images 678] [--repeat 3]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

import numpy as np

try:  # the evaluator itself does not use torch; keep any torch import single-threaded
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


def make_data(n_images: int, n_dets: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    dicts, preds = [], []
    gt_classes = np.concatenate([np.repeat(np.arange(22), 2), [22, 23]])
    for i in range(n_images):
        w = rng.uniform(15, 60, 46)
        h = rng.uniform(30, 140, 46)
        x0 = rng.uniform(0, 1600 - 60, 46)
        y0 = rng.uniform(0, 1200 - 140, 46)
        gtb = np.stack([x0, y0, x0 + w, y0 + h], 1)
        dicts.append({
            "file_name": f"/synthetic/{i:04d}.png", "image_id": i, "height": 1200, "width": 1600,
            "annotations": [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": int(c), "iscrowd": 0}
                            for b, c in zip(gtb, gt_classes)],
        })
        jit = rng.normal(0, 3, (46, 4))
        db = gtb + jit
        right = rng.uniform(size=46) < 0.85
        wrong = np.clip(gt_classes + rng.choice([-2, -1, 1, 2], 46), 0, 23)
        dc = np.where(right, gt_classes, wrong)
        ds = rng.uniform(0.4, 1.0, 46)
        n_bg = n_dets - 46 - 20
        bx0 = rng.uniform(0, 1500, n_bg)
        by0 = rng.uniform(0, 1100, n_bg)
        bgb = np.stack([bx0, by0, bx0 + rng.uniform(10, 60, n_bg), by0 + rng.uniform(10, 100, n_bg)], 1)
        bgc = rng.integers(0, 24, n_bg)
        bgs = rng.uniform(0.05, 0.7, n_bg)
        sec = rng.choice(46, 20, replace=False)  # second classes of 20 chromosome proposals
        sb = db[sec]
        sc = np.clip(dc[sec] + rng.choice([-1, 1], 20), 0, 23)
        ss = ds[sec] * rng.uniform(0.1, 0.5, 20)
        top1 = {"boxes": np.concatenate([db, bgb]), "scores": np.concatenate([ds, bgs]),
                "classes": np.concatenate([dc, bgc])}
        inst = {"boxes": np.concatenate([top1["boxes"], sb]), "scores": np.concatenate([top1["scores"], ss]),
                "classes": np.concatenate([top1["classes"], sc])}
        preds.append({"image_id": i, "instances": inst, "instances_top1": top1})
    return dicts, preds


def time_coco_default(dicts, preds) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = [{"id": d["image_id"], "height": d["height"], "width": d["width"]} for d in dicts]
    anns, k = [], 1
    for d in dicts:
        for a in d["annotations"]:
            x0, y0, x1, y1 = a["bbox"]
            anns.append({"id": k, "image_id": d["image_id"], "category_id": a["category_id"] + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
            k += 1
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c + 1, "name": str(c + 1)} for c in range(24)]}
    res = []
    for p in preds:
        inst = p["instances"]
        for b, s, c in zip(inst["boxes"].tolist(), inst["scores"].tolist(), inst["classes"].tolist()):
            res.append({"image_id": p["image_id"], "category_id": c + 1,
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(res)
        ev = COCOeval(gt, dt, "bbox")
        t0, c0 = time.perf_counter(), time.process_time()
        ev.evaluate()
        ev.accumulate()
        t = (time.perf_counter() - t0, time.process_time() - c0)
        ev.summarize()
    return t, ev.stats


def time_evaluator(dicts, preds, output_dir=None):
    from deepacc.evaluation import MetaphaseEvaluator

    ev = MetaphaseEvaluator(dicts, output_dir=output_dir, distributed=False)
    t0, c0 = time.perf_counter(), time.process_time()
    ev.reset()
    for p in preds:
        ev.process([p])
    with contextlib.redirect_stdout(io.StringIO()):
        res = ev.evaluate()
    return (time.perf_counter() - t0, time.process_time() - c0), res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=678)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    import logging

    logging.getLogger("deepacc").setLevel(logging.WARNING)
    dicts, preds = make_data(args.images, args.dets)
    n_inst = sum(len(p["instances"]["scores"]) for p in preds)
    n_top1 = sum(len(p["instances_top1"]["scores"]) for p in preds)
    print(f"{args.images} images, {46 * args.images} chromosomes, {n_inst} detections in instances, "
          f"{n_top1} in instances_top1; best of {args.repeat}, 1 thread")
    t_ref, t_ev, t_files = [], [], []
    stats = res = None
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            t, stats = time_coco_default(dicts, preds)
            t_ref.append(t)
            t, res = time_evaluator(dicts, preds)
            t_ev.append(t)
            t, _ = time_evaluator(dicts, preds, output_dir=os.path.join(tmp, "out"))
            t_files.append(t)
    def best(ts):  # best wall time and best CPU time (the machine may be shared)
        return min(t[0] for t in ts), min(t[1] for t in ts)

    ref, ev, files = best(t_ref), best(t_ev), best(t_files)
    assert 100 * stats[1] == res["mAP"] and 100 * stats[0] == res["AP"], "evaluator disagrees with COCOeval"
    rows = [("COCOeval default, evaluate+accumulate (reference)", ref),
            ("MetaphaseEvaluator, process+evaluate", ev),
            ("MetaphaseEvaluator, process+evaluate+files", files)]
    w = max(len(r[0]) for r in rows)
    print(f"| {'what'.ljust(w)} | wall (s) | ratio | CPU (s) | ratio |")
    print(f"|{'-' * (w + 2)}|---------:|------:|--------:|------:|")
    for name, t in rows:
        print(f"| {name.ljust(w)} | {t[0]:8.3f} | {t[0] / ref[0]:5.2f} | {t[1]:7.3f} | {t[1] / ref[1]:5.2f} |")
    print(f"mAP {res['mAP']:.2f} (COCOeval AP50 {100 * stats[1]:.2f}), AP {res['AP']:.2f}, "
          f"mAP_max {res['mAP_max']:.2f}, AER {res['AER']:.2f}, Acc {res['Acc']:.2f}")
    r_wall, r_cpu = ev[0] / ref[0], ev[1] / ref[1]
    print(f"goal ratio <= 1.5 (evaluator without files / reference): wall {r_wall:.2f}, CPU {r_cpu:.2f}: "
          f"{'met' if max(r_wall, r_cpu) <= 1.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
