#!/usr/bin/env python
"""Karyotype-consistent assignment vs the model's argmax: Acc, AER, Denver share, karyotype agreement.

Runs each trained model once per dataset, as ``train_net.py --eval-only`` does (torchvision engine,
scale-aware reference of the checkpoint, the config's call thresholds; the predictions, with
``class_probs``, are cached as ``.npz`` under ``--cache`` so the sweep is re-scored without re-running
the model), then scores the same predictions with the assignment off and at every ``--costs`` value
with the project's :class:`MetaphaseEvaluator`; writes ``<out>.md`` and ``<out>.json``:

    python benchmarks/karyotype_assignment.py \\
        --model a=configs/gband/faster_rcnn_R18_gband_cpu.yaml:output/gband/faster_rcnn_R18/model_final.pth \\
        --model f=configs/gband/DeepACC_R18_gband_cpu.yaml:output/gband/DeepACC_R18/model_final.pth \\
        --datasets gband_cells_val gband_cells_val_aneuploid --costs 1,2,3,4,6,inf \\
        --out benchmarks/results/assignment_gband

Columns: mAP, mAP_max (the model's, the same with and without the assignment), Acc, AER (%), calls relabelled, within-Denver-group share of the misnamed chromosomes,
karyotype agreement with the ground-truth boxes (% of spreads), spreads whose karyotype the
assignment fixed / broke, and right aneuploid karyotypes turned into a wrong euploid one.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trained_models import add_model_argument  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("instances", "instances_top1")
FIELDS = ("boxes", "scores", "classes", "class_probs")
#: Part of the cache file names: predictions of v2 use the checkpoint's scale-aware reference (v1 did not).
CACHE_VERSION = "v2"


def save_predictions(path: str, preds: List[Dict]) -> None:
    arrays = {}
    for p in preds:
        for part in PARTS:
            for f in FIELDS:
                arrays[f"{p['image_id']}/{part}/{f}"] = np.asarray(p[part][f])
    from deepacc.fileio import atomic_write

    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def load_predictions(path: str) -> List[Dict]:
    with np.load(path, allow_pickle=False) as z:
        by_id: Dict[int, Dict] = {}
        for key in z.files:
            iid, part, f = key.split("/")
            by_id.setdefault(int(iid), {"image_id": int(iid)}).setdefault(part, {})[f] = z[key]
    return [by_id[i] for i in sorted(by_id)]


class _Collect:
    """The evaluator interface of :func:`deepacc.tv.evaluation.inference_on_dataset`, keeping the predictions."""

    def reset(self):
        self.predictions = []

    def process(self, predictions):
        self.predictions += predictions

    def evaluate(self):
        return self.predictions


def load_model_config(config: str, weights: str):
    from deepacc.config import load_config

    return load_config(config, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"])


def predict_dataset(cfg, dataset: str) -> List[Dict]:
    """The predictions of ``--eval-only`` on ``dataset``: the torchvision engine's predictor (trained
    weights required, the scale-aware reference stored in the checkpoint) run by its inference loop."""
    from deepacc.precision import amp_dtype
    from deepacc.tv.dataloader import build_test_loader, dataset_dicts
    from deepacc.tv.evaluation import inference_on_dataset
    from deepacc.tv.predictor import TorchvisionPredictor

    p = TorchvisionPredictor(cfg)
    loader = build_test_loader(p.cfg, dataset_dicts([dataset]))
    return inference_on_dataset(p.model, loader, _Collect(), p.device, amp_dtype(p.cfg, p.device.type))


def score(dicts, preds, cost, thresholds) -> Dict:
    """Metrics of ``preds`` at extra-copy ``cost`` (``None``: no assignment) with the model config's
    call ``thresholds`` (:func:`deepacc.config.call_thresholds`)."""
    import contextlib
    import io

    from deepacc.evaluation import MetaphaseEvaluator

    ev = MetaphaseEvaluator(dicts, output_dir=None, distributed=False, save_plot=False, extra_copy_cost=cost,
                            score_thresh=thresholds.score_thresh, nms_thresh=thresholds.nms_thresh,
                            iou_thresh=thresholds.iou_thresh)
    ev.process(preds)
    with contextlib.redirect_stdout(io.StringIO()):
        res = ev.evaluate()
    den = res["confusion"].get("denver", {})
    row = {"Acc": res["Acc"], "AER": res["AER"], "TP": res["TP"], "FP": res["FP"], "FN": res["FN"],
           "calls": res["num_dets"], "misnamed": den.get("misclassified"),
           "within_group_pct": 100.0 * den["within_group_fraction"] if den.get("misclassified") else float("nan"),
           "karyotype_agreement_pct": res["karyotype"]["agreement_with_gt_boxes"],
           "mAP": res["mAP"], "mAP_max": res["mAP_max"]}
    if "assignment" in res:
        row.update({k: res["assignment"][k] for k in ("relabelled", "karyotypes_fixed", "karyotypes_broken",
                                                      "aneuploid_right_before", "aneuploid_made_euploid",
                                                      "abnormalities", "abnormalities_called_before",
                                                      "abnormalities_called_after", "abnormalities_made_normal")})
    return row


def _fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def _json(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    return v


def table(rows: List[Dict]) -> str:
    cols = [("model", "model"), ("dataset", "dataset"), ("assignment", "assignment"), ("mAP", "mAP(%)"),
            ("mAP_max", "mAP_max(%)"), ("Acc", "Acc(%)"),
            ("AER", "AER(%)"), ("calls", "calls"), ("relabelled", "relabelled"), ("misnamed", "misnamed"),
            ("within_group_pct", "within-group(%)"), ("karyotype_agreement_pct", "karyotype agr.(%)"),
            ("karyotypes_fixed", "fixed"), ("karyotypes_broken", "broken"),
            ("aneuploid_made_euploid", "aneuploid->euploid"), ("abnormalities", "abnormal"),
            ("abnormalities_called_before", "called before"), ("abnormalities_called_after", "called after"),
            ("abnormalities_made_normal", "made normal")]
    head = [c[1] for c in cols]
    body = [[_fmt(r.get(k)) for k, _ in cols] for r in rows]
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.rjust(n) for c, n in zip(cells, w)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (n + 1) + ":" for n in w) + "|"] + [line(b) for b in body])


def time_solver(sizes=(46, 50, 100), repeats=200, cost=3.0) -> str:
    """Median and 95th-percentile time of :func:`assign_classes` on random (N, 25) matrices."""
    from deepacc.karyotype.assignment import assign_classes

    rng = np.random.default_rng(0)
    assign_classes(rng.dirichlet(np.ones(25), size=4), cost)  # import scipy once
    lines = ["| calls | median (ms) | p95 (ms) |", "|---:|---:|---:|"]
    for n in sizes:
        ts = []
        for _ in range(repeats):
            p = rng.dirichlet(np.ones(25) * 0.3, size=n)
            t = time.perf_counter()
            assign_classes(p, cost)
            ts.append(1e3 * (time.perf_counter() - t))
        lines.append(f"| {n} | {np.median(ts):.2f} | {np.percentile(ts, 95):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_argument(ap)
    ap.add_argument("--datasets", nargs="+", required=True, help="registered dataset names")
    ap.add_argument("--costs", default="1,2,3,4,6,inf", help="extra-copy costs to score (comma-separated)")
    ap.add_argument("--cache", default=os.path.join(REPO, "output", "assignment_cache"),
                    help="folder of cached predictions (.npz)")
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "assignment"),
                    help="output prefix (.md, .json)")
    a = ap.parse_args(argv)
    from deepacc.config import call_thresholds
    from deepacc.tv.dataloader import dataset_dicts

    costs = [float(c) for c in a.costs.split(",") if c.strip()]
    os.makedirs(a.cache, exist_ok=True)
    rows, timing = [], {}
    for name, config, weights in a.model:
        cfg = load_model_config(config, weights)
        for ds in a.datasets:
            cache = os.path.join(a.cache, f"{name}__{ds}__{CACHE_VERSION}.npz")
            if os.path.isfile(cache) and os.path.getmtime(cache) >= os.path.getmtime(weights):
                preds = load_predictions(cache)
            else:
                preds = predict_dataset(cfg, ds)
                save_predictions(cache, preds)
            dicts = dataset_dicts([ds])
            for cost in [None] + costs:
                t = time.perf_counter()
                row = {"model": name, "dataset": ds, "assignment": "off" if cost is None else f"cost {cost:g}",
                       "extra_copy_cost": cost, **score(dicts, preds, cost, call_thresholds(cfg))}
                timing[f"{name}/{ds}/{cost}"] = time.perf_counter() - t
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
    md = table(rows) + "\n\nSolver time (one spread, extra-copy cost 3, this machine):\n\n" + time_solver()
    cmd = "python benchmarks/karyotype_assignment.py " + " ".join(sys.argv[1:] if argv is None else argv)
    from deepacc.fileio import atomic_write

    atomic_write(a.out + ".md", f"Command: `{cmd}`\n\n{md}\n".encode("utf-8"))
    atomic_write(a.out + ".json", json.dumps(
        {"command": cmd, "rows": [{k: _json(v) for k, v in r.items()} for r in rows]}, indent=1).encode("utf-8"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
