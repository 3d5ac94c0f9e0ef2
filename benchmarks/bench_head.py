#!/usr/bin/env python
"""Inference time of the DeepACC head vs the plain Faster R-CNN head, same backbone, same proposals.

One synthetic metaphase spread goes through one backbone + RPN once (timed); the ROI heads of
Table 1's rows (a) plain Faster R-CNN, (b) Faster R-CNN "sep" and (f) DeepACC then run on exactly
those features and one fixed proposal set, interleaved (a, b, f, a, b, f, ...) so that machine noise
hits all alike. The proposals are what a trained RPN returns on a spread: every chromosome's box
jittered several times, plus background boxes, ``--proposals`` in all (an untrained RPN's
proposals would say little about a trained model's head cost).
The head time covers ROI pooling, the box head, classifier and both detection selections.

    python benchmarks/bench_head.py                      # R101-FPN, 1600x1200, 1000 proposals, CPU
    python benchmarks/bench_head.py --depth 50 --repeat 10 --device cuda
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [
    ("(a) Faster R-CNN", "faster_rcnn_R101_FPN_2x.yaml"),
    ("(b) Faster R-CNN sep", "faster_rcnn_sep_R101_FPN_2x.yaml"),
    ("(f) DeepACC", "DeepACC_R101_FPN_2x.yaml"),
]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fixed_proposals(rng, anns, n, resized, original) -> torch.Tensor:
    """``n`` boxes: each ground-truth box jittered (IoU mostly > 0.5) until half are filled, the rest random."""
    gt = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
    h, w = original
    out = []
    k = max(1, (n // 2) // max(len(gt), 1))
    for box in gt:
        bw, bh = box[2] - box[0], box[3] - box[1]
        jitter = rng.normal(0, 0.08, size=(k, 4)) * np.array([bw, bh, bw, bh])
        out.append(box[None] + jitter)
    cx, cy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    sw, sh = rng.uniform(8, 120, n), rng.uniform(8, 120, n)
    out.append(np.stack([cx - sw / 2, cy - sh / 2, cx + sw / 2, cy + sh / 2], 1))
    boxes = np.concatenate(out)[:n]
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    scale = np.array([resized[1] / w, resized[0] / h] * 2, dtype=np.float32)
    return torch.from_numpy((boxes * scale).astype(np.float32))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=101)
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=1200)
    p.add_argument("--proposals", type=int, default=1000, help="RPN proposals per image (POST_NMS_TOPK_TEST)")
    p.add_argument("--repeat", type=int, default=7, help="timed rounds per head (median reported)")
    p.add_argument("--backbone-repeat", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from deepacc.config import load_config
    from deepacc.data.synthetic import generate_spread
    from deepacc.tv.dataloader import to_model_input
    from deepacc.tv.model import build_model

    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", args.device, "MODEL.RESNETS.DEPTH", str(args.depth),
            "MODEL.RPN.POST_NMS_TOPK_TEST", str(args.proposals), "MODEL.RPN.PRE_NMS_TOPK_TEST", str(args.proposals),
            "INPUT.MIN_SIZE_TEST", str(min(args.width, args.height)), "INPUT.MAX_SIZE_TEST", str(max(args.width, args.height))]
    models = []
    for name, cfg_file in VARIANTS:
        torch.manual_seed(0)
        cfg = load_config(os.path.join(REPO, "configs", cfg_file), opts)
        models.append((name, build_model(cfg).to(device).eval()))
    ref = models[-1][1]

    rng = np.random.default_rng(0)
    gray, anns, _ = generate_spread(rng, args.width, args.height)
    image = to_model_input(gray).to(device)
    backbone_times = []
    with torch.no_grad():
        for _ in range(args.backbone_repeat):
            _sync(device)
            t = time.perf_counter()
            images, _ = ref.transform([image])
            features = ref.backbone(images.tensors)
            ref.rpn(images, features)
            _sync(device)
            backbone_times.append(time.perf_counter() - t)
        proposals = [fixed_proposals(rng, anns, args.proposals, images.image_sizes[0], image.shape[-2:]).to(device)]
        n_prop = int(proposals[0].shape[0])
        times = {name: [] for name, _ in models}
        dets = {}
        for name, m in models:  # warm-up
            m.roi_heads(features, proposals, images.image_sizes)
        for _ in range(args.repeat):
            for name, m in models:
                _sync(device)
                t = time.perf_counter()
                out, _ = m.roi_heads(features, proposals, images.image_sizes)
                _sync(device)
                times[name].append(time.perf_counter() - t)
                dets[name] = (len(out[0].instances.boxes), len(out[0].instances_top1.boxes))

    bb = statistics.median(backbone_times)
    base = statistics.median(times[VARIANTS[0][0]])
    print(f"\nDeepACC head benchmark: ResNet-{args.depth}-FPN, {args.width}x{args.height}, {n_prop} proposals, "
          f"device {device}, torch threads {torch.get_num_threads()}, median of {args.repeat} interleaved rounds")
    print(f"backbone + RPN (shared): {bb * 1000:.1f} ms/image\n")
    print("| head | head ms/image | head ratio | image ms (backbone+RPN+head) | image ratio | params (head) | dets (all / top-1) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, m in models:
        h = statistics.median(times[name])
        n_par = sum(p.numel() for p in m.roi_heads.parameters())
        print(f"| {name} | {h * 1000:.1f} | {h / base:.2f} | {(bb + h) * 1000:.1f} | {(bb + h) / (bb + base):.2f} | "
              f"{n_par / 1e6:.2f}M | {dets[name][0]} / {dets[name][1]} |")
    print("\nRatios are against row (a) measured in the same run. Heads are randomly initialised, so the number "
          "of detections after the score threshold differs between rows.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
