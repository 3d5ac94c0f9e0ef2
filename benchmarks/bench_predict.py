#!/usr/bin/env python
"""Throughput of ``deepacc-predict`` (spreads per second), on CPU by default.

Post-model part, always measured: synthetic spreads (``deepacc.data.synthetic.generate_spread``,
1600 x 1200, karyotypes cycling over 46,XX / 46,XY / 47,XY,+21 / 45,X) fed to a predictor that
returns their ground-truth boxes as ``instances_top1`` (so the model costs nothing). Stages, per
spread, best of ``--repeat`` passes:

* ``calls+summary``: threshold + class-agnostic NMS + numerical summary with flags;
* ``karyogram``: cut-outs, masks, rotation, layout;
* ``overlay``: the boxes drawn on the spread;
* ``postprocess (all three)``: the above together, in memory (:func:`deepacc.clinical.pipeline.postprocess`);
* ``per-image outputs``: the whole per-image step of the CLI with the fake model: read the PNG,
  post-process, encode the two PNGs, write them and the JSON atomically
  (:func:`deepacc.clinical.pipeline.process_image`).

Full pipeline, when a trained model is given (``--config-file`` and ``MODEL.WEIGHTS ...``):
``model only`` (the predictor call) and ``full pipeline`` (read + model + outputs) on the same
spreads, on ``MODEL.DEVICE`` (default here: cpu).

    python benchmarks/bench_predict.py [--spreads 20] [--repeat 3] [--threads 1]
    python benchmarks/bench_predict.py --config-file configs/quick/....yaml MODEL.WEIGHTS out/model_final.pth
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import cv2
import numpy as np

from deepacc.engine import ENGINES
from deepacc.fileio import write_image

KARYOTYPES = ("46,XX", "46,XY", "47,XY,+21", "45,X")


def make_spreads(n, width, height, seed=0):
    from deepacc.data.synthetic import generate_spread

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img, anns, _ = generate_spread(rng, width, height, karyotype=KARYOTYPES[i % len(KARYOTYPES)])
        boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        classes = np.array([a["category_id"] for a in anns], np.int64)
        out.append((img, boxes, classes))
    return out


def gt_prediction(boxes, classes, rng):
    n = len(classes)
    scores = rng.uniform(0.55, 0.99, n).astype(np.float32)
    probs = np.tile(((1 - scores) / 24)[:, None], (1, 25)).astype(np.float32)
    probs[np.arange(n), classes] = scores
    inst = {"boxes": boxes, "scores": scores, "classes": classes, "class_probs": probs}
    return {"instances": inst, "instances_top1": inst}


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spreads", type=int, default=20)
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=1200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenCV threads (default 1)")
    ap.add_argument("--config-file", default="", help="model config: also time the full pipeline")
    ap.add_argument("--engine", default="auto", choices=ENGINES)
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs (MODEL.WEIGHTS ...)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from deepacc.clinical import pipeline
    from deepacc.clinical.karyogram import render_karyogram
    from deepacc.clinical.overlay import draw_overlay
    from deepacc.clinical.summary import select_calls, summarize
    from deepacc.tools import predict as P

    t0 = time.perf_counter()
    spreads = make_spreads(args.spreads, args.width, args.height)
    print(f"generated {len(spreads)} spreads of {args.width}x{args.height} in {time.perf_counter() - t0:.1f} s; "
          f"torch threads {torch.get_num_threads()}", file=sys.stderr)
    rng = np.random.default_rng(1)
    preds = [gt_prediction(b, c, rng) for _, b, c in spreads]
    settings = pipeline.PredictSettings()
    pipeline.postprocess(spreads[0][0], preds[0], settings)  # warm-up (imports)

    stage_calls = [None] * len(spreads)
    stage_sum = [None] * len(spreads)

    def run_calls():
        for k, p in enumerate(preds):
            stage_calls[k] = select_calls(p["instances_top1"], 0.5, 0.7)
            stage_sum[k] = summarize(stage_calls[k])

    def run_karyogram():
        for (img, _, _), c, s in zip(spreads, stage_calls, stage_sum):
            render_karyogram(img, c, s)

    def run_overlay():
        for (img, _, _), c, s in zip(spreads, stage_calls, stage_sum):
            draw_overlay(img, c, uncertain=s.uncertain)

    def run_post():
        for (img, _, _), p in zip(spreads, preds):
            pipeline.postprocess(img, p, settings)

    rows = []
    n = len(spreads)
    for name, fn in (("calls+summary", run_calls), ("karyogram", run_karyogram), ("overlay", run_overlay),
                     ("postprocess (all three)", run_post)):
        rows.append((name, best_of(fn, args.repeat) / n))

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        lookup = {}
        for i, ((img, _, _), p) in enumerate(zip(spreads, preds)):
            path = os.path.join(tmp, f"spread_{i:03d}.png")
            write_image(path, img)
            paths.append(path)
            lookup[img.tobytes()] = p
        from deepacc.data.images import read_image

        out = os.path.join(tmp, "out")
        os.makedirs(out)
        stems = P.output_stems(paths)

        def fake():
            return lambda img: lookup[img.tobytes()]

        def run_files(get_predictor=fake):
            for path in paths:
                pipeline.process_image(path, get_predictor, out, stems[path], settings, read_image, overwrite=True)

        rows.append(("per-image outputs (read+post+write)", best_of(run_files, args.repeat) / n))

        if args.config_file:
            opts = list(args.opts or [])
            if "MODEL.DEVICE" not in opts:
                opts += ["MODEL.DEVICE", "cpu"]
            ns = argparse.Namespace(config_file=args.config_file, opts=opts, engine=args.engine,
                                    confidence_threshold=settings.confidence_threshold)
            predictor = P.build_default_predictor(ns)
            images = [read_image(p) for p in paths]
            predictor(images[0])  # warm-up

            def run_model():
                for img in images:
                    predictor(img)

            rows.append(("model only", best_of(run_model, 1) / n))
            rows.append(("full pipeline (read+model+outputs)", best_of(lambda: run_files(lambda: predictor), 1) / n))

    print(f"\n{'stage':<38}{'ms/spread':>12}{'spreads/s':>12}")
    print("-" * 62)
    for name, t in rows:
        print(f"{name:<38}{1000 * t:>12.1f}{1 / t:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
