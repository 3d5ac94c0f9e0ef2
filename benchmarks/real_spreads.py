#!/usr/bin/env python
"""Trained models on real (or any registered) spreads, side by side: class-agnostic detection and,
where the ground truth has classes, the paper's 24-class metrics.

Each model is run once per dataset as ``train_net.py --eval-only`` runs it: the torchvision
engine's predictor (the checkpoint, its scale-aware reference, the config's precision) through the
engine's own inference loop (:func:`deepacc.tv.evaluation.inference_on_dataset`), scored by
:class:`deepacc.evaluation.MetaphaseEvaluator` with the config's ``TEST.DEEPACC`` thresholds and
karyotype assignment. So every figure equals the ``--eval-only`` one of the same model and data.

    python benchmarks/real_spreads.py \\
        --model f=configs/gband/DeepACC_R18_gband_cpu.yaml:output/gband/DeepACC_R18/model_final.pth \\
        --model a=configs/gband/faster_rcnn_R18_gband_cpu.yaml:output/gband/faster_rcnn_R18/model_final.pth \\
        --datasets bioimlab_val mfish_val gband_cells_val --overlays 4 \\
        --out benchmarks/results/real_spreads_gband

One row per (model, dataset): ``kind`` (``classes``: 24-class ground truth, ``agnostic``: chromosomes
without class, ``mixed``: both kinds of image), images, the class-agnostic AP50 / AP (top-1
detections after the class-agnostic NMS, one category), recall / precision of the calls, the median
|count error| on the completely annotated spreads (their number in parentheses), for ground truth
with classes mAP, Acc and AER (``-`` where there are none), and the class-agnostic AP50 before that
NMS (the definition of before). Definitions: ``docs/evaluation.md``.

Writes ``<out>.md`` (the command, the machine, the table) and ``<out>.json`` (the command, the CPU
capability, per row the precision, the wall time, the thresholds and the full class-agnostic
block). ``--overlays N`` draws the chromosomes found (chromosome probability >= the call threshold, after
class-agnostic NMS: what the table scores; labelled with the top-1 class and its probability,
coloured by Denver group, and marked ``?`` where that probability is below the threshold, i.e. no
call of Acc/AER) of the first N images of each dataset, over the ground-truth boxes in thin grey,
into ``--overlay-dir`` (default ``<out>_overlays/``).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trained_models import add_model_argument, missing_model_file  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: (row key, column header) of the table, in order.
COLUMNS = (("model", "model"), ("dataset", "dataset"), ("kind", "kind"), ("images", "images"),
           ("agnostic_AP50", "AP50(%)"), ("agnostic_AP", "AP(%)"), ("recall", "recall(%)"),
           ("precision", "precision(%)"), ("count_error", "median abs(count err) (n)"),
           ("mAP", "mAP(%)"), ("Acc", "Acc(%)"), ("AER", "AER(%)"),
           ("agnostic_AP50_before_nms", "AP50 before NMS(%)"), ("wall_s", "wall (s)"))


class _Scoring:
    """The evaluator interface of :func:`~deepacc.tv.evaluation.inference_on_dataset`: the project's
    evaluator, plus the top-1 detections of the images to draw."""

    def __init__(self, evaluator, keep_ids: Sequence[int]):
        self.evaluator = evaluator
        self.keep_ids = set(int(i) for i in keep_ids)
        self.kept: Dict[int, Dict[str, np.ndarray]] = {}

    def reset(self):
        self.evaluator.reset()
        self.kept = {}

    def process(self, predictions):
        self.evaluator.process(predictions)
        for p in predictions:
            if int(p["image_id"]) in self.keep_ids:
                self.kept[int(p["image_id"])] = {k: np.asarray(v) for k, v in p["instances_top1"].items()
                                                 if k in ("boxes", "scores", "classes", "class_probs")}

    def evaluate(self):
        with contextlib.redirect_stdout(io.StringIO()):  # its tables: the benchmark prints its own
            return self.evaluator.evaluate()


def dataset_kind(dicts: Sequence[Mapping]) -> str:
    """``classes``, ``agnostic`` or ``mixed``, from the evaluator's reading of each image."""
    from deepacc.evaluation import image_kind

    kinds = {image_kind(d) for d in dicts}
    return kinds.pop() if len(kinds) == 1 else "mixed" if kinds else "classes"


def build_row(name: str, dataset: str, dicts: Sequence[Mapping], res: Mapping, wall_s: float,
              precision: str) -> Dict[str, Any]:
    """One table row (and its json record) from the evaluator's results."""
    agn = res.get("agnostic", {}).get("all", {})
    ce = agn.get("count_error", {})
    row: Dict[str, Any] = {
        "model": name, "dataset": dataset, "kind": dataset_kind(dicts), "images": agn.get("num_images", 0),
        "agnostic_AP50": agn.get("AP50"), "agnostic_AP": agn.get("AP"),
        "agnostic_AP50_before_nms": agn.get("AP50_before_nms"),
        "recall": agn.get("recall"), "precision": agn.get("precision"),
        "count_error_median_abs": ce.get("median_abs"), "count_error_spreads": ce.get("n_spreads", 0),
        "count_error_incomplete": ce.get("n_incomplete", 0),
        "mAP": res.get("mAP"), "mAP_max": res.get("mAP_max"), "Acc": res.get("Acc"), "AER": res.get("AER"),
        "AP": res.get("AP"), "class_images": res.get("num_images", 0),
        "wall_s": wall_s, "s_per_image": wall_s / max(agn.get("num_images", 0), 1), "precision_used": precision,
        "agnostic": res.get("agnostic", {}),
    }
    return row


def _cell(row: Mapping, key: str) -> str:
    if key == "count_error":
        v, n = row.get("count_error_median_abs"), row.get("count_error_spreads", 0)
        return "-" if not n or v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g} ({n})"
    v = row.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if key == "wall_s":
        return f"{v:.1f}"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def table(rows: Sequence[Mapping]) -> str:
    """The side-by-side markdown table, one line per (model, dataset)."""
    head = [c for _, c in COLUMNS]
    body = [[_cell(r, k) for k, _ in COLUMNS] for r in rows]
    w = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    n_text = 3  # model, dataset, kind: left-aligned

    def line(cells):
        return "| " + " | ".join(c.ljust(n) if i < n_text else c.rjust(n) for i, (c, n) in enumerate(zip(cells, w))) + " |"

    sep = "|" + "|".join("-" * (n + 2) if i < n_text else "-" * (n + 1) + ":" for i, n in enumerate(w)) + "|"
    return "\n".join([line(head), sep] + [line(b) for b in body])


def draw(folder: str, model: str, dataset: str, dicts: Sequence[Mapping], kept: Mapping[int, Mapping],
         thresholds) -> List[str]:
    """Overlay PNGs of the calls of the images in ``kept`` (ground-truth boxes in thin grey)."""
    import cv2

    from deepacc.clinical.overlay import draw_overlay, to_rgb
    from deepacc.data.images import read_image
    from deepacc.fileio import atomic_write
    from deepacc.evaluation import filter_top1

    os.makedirs(folder, exist_ok=True)
    written = []
    for d in dicts:
        iid = int(d["image_id"])
        if iid not in kept:
            continue
        top1 = kept[iid]
        # what the table scores: the chromosomes found (P(chromosome) >= the call threshold, NMS);
        # those whose best class is below the threshold too are marked uncertain ("?")
        probs = top1.get("class_probs")
        chrom = 1.0 - probs[:, -1] if probs is not None else top1["scores"]
        keep = filter_top1(top1["boxes"], chrom, thresholds.score_thresh, thresholds.nms_thresh)
        canvas = to_rgb(read_image(d["file_name"]))
        for a in d.get("annotations", []):
            x0, y0, x1, y1 = (float(v) for v in a["bbox"][:4])
            if int(a.get("bbox_mode", 0)) == 1:  # XYWH_ABS
                x1, y1 = x0 + x1, y0 + y1
            cv2.rectangle(canvas, (round(x0), round(y0)), (round(x1), round(y1)), (160, 160, 160), 1)
        found = {k: top1[k][keep] for k in ("boxes", "scores", "classes")}
        unsure = np.flatnonzero(found["scores"] < thresholds.score_thresh).tolist()
        image = draw_overlay(canvas, found, uncertain=unsure)
        stem = os.path.splitext(os.path.basename(str(d["file_name"])))[0]
        path = os.path.join(folder, f"{model}__{dataset}__{stem}.png")
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"{path}: cannot encode the overlay")
        atomic_write(path, png.tobytes())
        written.append(path)
    return written


def run_model(name: str, config: str, weights: str, datasets: Mapping[str, List[Dict]], overlays: int,
              overlay_dir: Optional[str], opts: Sequence[str] = ()) -> List[Dict[str, Any]]:
    """Rows of one model on every dataset ``{name: dataset dicts}`` (the model is loaded once)."""
    from deepacc.config import call_thresholds, load_config, method_of
    from deepacc.evaluation import MetaphaseEvaluator
    from deepacc.karyotype.assignment import assignment_settings
    from deepacc.precision import amp_dtype, resolve_precision
    from deepacc.tv.dataloader import build_test_loader
    from deepacc.tv.evaluation import inference_on_dataset
    from deepacc.tv.predictor import TorchvisionPredictor

    t0 = time.perf_counter()
    try:
        p = TorchvisionPredictor(load_config(config, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"] + list(opts)))
    except (OSError, ValueError) as e:  # a config or checkpoint that cannot be used: one line
        raise SystemExit(f"real_spreads: --model {name}: {e}") from None
    load_s = time.perf_counter() - t0
    cfg = p.cfg
    precision = resolve_precision(cfg, p.device.type, log=False).name
    thresholds = call_thresholds(cfg)
    cost = assignment_settings(cfg).cost
    rows = []
    for ds, dicts in datasets.items():
        ev = MetaphaseEvaluator(dicts, output_dir=None, distributed=False, save_plot=False,
                                score_thresh=thresholds.score_thresh, nms_thresh=thresholds.nms_thresh,
                                iou_thresh=thresholds.iou_thresh, extra_copy_cost=cost, method=method_of(cfg))
        scoring = _Scoring(ev, [d["image_id"] for d in dicts[:max(overlays, 0)]])
        t = time.perf_counter()
        res = inference_on_dataset(p.model, build_test_loader(cfg, dicts), scoring, p.device,
                                   amp_dtype(cfg, p.device.type))
        wall = time.perf_counter() - t
        row = build_row(name, ds, dicts, res, wall, precision)
        row.update(config=config, weights=weights, model_load_s=load_s, overrides=list(opts),
                   thresholds={"score": thresholds.score_thresh, "nms": thresholds.nms_thresh,
                               "iou": thresholds.iou_thresh},
                   assignment={"enabled": cost is not None, "extra_copy_cost": cost},
                   weights_sha256=p.weights_info.get("sha256"))
        if overlays > 0 and overlay_dir:
            row["overlays"] = draw(overlay_dir, name, ds, dicts, scoring.kept, thresholds)
        rows.append(row)
        print(table([row]).splitlines()[-1], flush=True)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_argument(ap)
    ap.add_argument("--datasets", nargs="+", required=True, metavar="NAME",
                    help="registered dataset names (e.g. bioimlab_val mfish_val gband_cells_val)")
    ap.add_argument("--out", default=None, metavar="PREFIX",
                    help="output prefix: PREFIX.md and PREFIX.json (default benchmarks/results/real_spreads_<models>)")
    ap.add_argument("--overlays", type=int, default=0, metavar="N",
                    help="draw the calls of the first N images of each dataset (default 0: none)")
    ap.add_argument("--overlay-dir", default=None, metavar="DIR", help="folder of the overlays (default <out>_overlays)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME:KEY=VALUE",
                    help="a config override for one model's row (repeat), e.g. today:INPUT.POLARITY=dark_on_light: "
                         "the same weights can then appear twice under two names")
    a = ap.parse_args(argv)
    overrides: Dict[str, List[str]] = {}
    for spec in a.set:
        name, _, kv = spec.partition(":")
        key, eq, value = kv.partition("=")
        if not (name and key and eq) or name not in {m.name for m in a.model}:
            ap.error(f"--set {spec!r}: expected NAME:KEY=VALUE with NAME one of the --model names")
        overrides.setdefault(name, []).extend([key, value])
    if a.overlays < 0:
        ap.error("--overlays must be >= 0")
    from deepacc.data.catalog import list_datasets
    from deepacc.precision import cpu_capability

    unknown = [d for d in a.datasets if d not in list_datasets()]
    if unknown:
        print(f"real_spreads: dataset(s) not registered: {', '.join(unknown)} (registered: "
              f"{', '.join(list_datasets())})", file=sys.stderr)
        return 2
    missing = missing_model_file(a.model)
    if missing:
        print(f"real_spreads: {missing}", file=sys.stderr)
        return 2
    from deepacc.tv.dataloader import dataset_dicts

    datasets = {}
    for ds in a.datasets:  # every dataset readable before any model runs
        try:
            datasets[ds] = dataset_dicts([ds])
        except (OSError, ValueError) as e:  # not prepared here, or a bad file: one line
            print(f"real_spreads: dataset {ds}: {e}", file=sys.stderr)
            return 2
        if not datasets[ds]:
            print(f"real_spreads: dataset {ds}: no images", file=sys.stderr)
            return 2
    out = a.out or os.path.join(REPO, "benchmarks", "results", "real_spreads_" + "_".join(m.name for m in a.model))
    overlay_dir = a.overlay_dir or out + "_overlays"
    cmd = "python benchmarks/real_spreads.py " + " ".join(sys.argv[1:] if argv is None else list(argv))
    print(table([]).splitlines()[0], flush=True)
    rows = []
    t0 = time.perf_counter()
    for m in a.model:
        rows += run_model(m.name, m.config, m.weights, datasets, a.overlays, overlay_dir if a.overlays else None,
                          overrides.get(m.name, ()))
    total = time.perf_counter() - t0
    cap = cpu_capability()
    precisions = sorted({r["precision_used"] for r in rows})
    md = table(rows)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    from deepacc.fileio import atomic_write
    from deepacc.jsonstream import json_safe

    atomic_write(out + ".md", (
        f"Command: `{cmd}`\n\nCPU capability {cap}, precision {', '.join(precisions)}, "
        f"{platform.machine()}; {total:.0f} s in all. AP50 / AP: class-agnostic, top-1 detections after the class-agnostic NMS (AP50 before NMS: without it); "
        "recall / precision: the chromosomes found (P(chromosome) >= the call threshold, class-agnostic NMS); "
        "median abs(count err) on the completely annotated spreads (their number); mAP / Acc / AER on the images "
        "with 24-class ground truth.\n\n" + md + "\n").encode())
    record = {"command": cmd, "cpu_capability": cap, "precision": precisions, "machine": platform.machine(),
              "total_s": total, "columns": [c for _, c in COLUMNS], "rows": rows}
    atomic_write(out + ".json", json.dumps(json_safe(record), indent=1).encode())
    print("\n" + md)
    print(f"\nreal_spreads: {out}.md and {out}.json written"
          + (f"; overlays in {overlay_dir}" if a.overlays else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
