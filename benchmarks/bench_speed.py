#!/usr/bin/env python
"""Training and inference speed, DeepACC (Table 1 row f) vs plain Faster R-CNN (row a), side by side.

Both models are built from the committed configs (``configs/DeepACC_R101_FPN_2x.yaml`` and
``configs/faster_rcnn_R101_FPN_2x.yaml``, random weights: speed does not depend on them) on the
same engine, device, thread count and synthetic 1600x1200 spreads, and timed interleaved (a, f, a,
f, ...) so that machine noise hits both alike:

* training: one SGD iteration by the trainer's own step (``deepacc.tv.trainer.train_step``: forward
  with losses, backward, gradient clipping, optimiser step; ``SOLVER.AMP`` with ``--amp``), seconds per
  iteration → iterations/s;
* inference: one spread through the model in eval mode incl. resizing and both detection
  selections, seconds per spread;
* peak memory of one training iteration / inference above what was in use before it (activations,
  gradients, optimiser state on the first step, workspace): on CUDA ``max_memory_allocated`` during
  the timed iterations; on CPU the peak resident set size of a fresh process per model and phase
  (the kernel's peak mark is reset after the model and data are built, then one step runs).

    python benchmarks/bench_speed.py                                  # CPU, R101-FPN, 1600x1200
    python benchmarks/bench_speed.py --device cuda --amp --train-iters 20 --infer-iters 20
    python benchmarks/bench_speed.py --depth 50 --size 800x600       # smaller, for slow machines
    python benchmarks/bench_speed.py --compare paths --protocol cpu --size 1280x960 --tag paths_cpu_protocol

``--compare paths`` times one model (row f) on the old execution path (fp32, channels-last
everywhere, torchvision's IoU, a 3-channel resize and normalisation pass: ``as_old_path``) and the new
one (``SOLVER.AMP.ENABLED`` = bf16 autocast on the CPU, ``MODEL.CHANNELS_LAST auto``, the engine's
fast matching and one-plane resize; with a frozen-BN trunk also the conv-BN folding) and reports
images/s speed-ups instead of the DeepACC / Faster R-CNN ratios.

Ratios DeepACC / Faster R-CNN are what to compare across machines, not absolute times. Results
go to ``benchmarks/results/speed_<device>_<tag>.{json,md}``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import subprocess
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects", "DeepACC"))

from deepacc.tv.trainer import train_step  # noqa: E402  (the trainer's own iteration)

MODELS = [("(a) Faster R-CNN", "faster_rcnn_R101_FPN_2x.yaml"), ("(f) DeepACC", "DeepACC_R101_FPN_2x.yaml")]
#: ``--compare paths``: the same model (row f) on the execution path before mixed precision on the CPU
#: (fp32, channels-last convolutions everywhere) and on today's defaults of a CPU recipe
#: (``SOLVER.AMP.ENABLED True`` = bf16 autocast on the CPU, ``MODEL.CHANNELS_LAST auto``).
#: The old path also puts back the steps the project has made cheaper since (see ``as_old_path``).
PATHS = [("old path: fp32, channels-last", "DeepACC_R101_FPN_2x.yaml",
          ["SOLVER.AMP.ENABLED", "False", "MODEL.CHANNELS_LAST", "on"]),
         ("new path: AMP, layout auto", "DeepACC_R101_FPN_2x.yaml",
          ["SOLVER.AMP.ENABLED", "True", "MODEL.CHANNELS_LAST", "auto"]),
         # what the CPU recipes (configs/gband, configs/quick) run: the same path with a frozen-BN trunk
         # (pretrained in-domain), which also drops the GroupNorm layers
         ("new path + frozen BN trunk", "DeepACC_R101_FPN_2x.yaml",
          ["SOLVER.AMP.ENABLED", "True", "MODEL.CHANNELS_LAST", "auto", "MODEL.RESNETS.NORM", "FrozenBN",
           "MODEL.FPN.NORM", ""])]
#: ``--compare precision``: the CPU recipes' model (row f, frozen-BN trunk) in float32 and in bf16 autocast,
#: whatever ``auto`` would choose on this machine (its choice is printed beside the table).
_FROZEN = ["MODEL.RESNETS.NORM", "FrozenBN", "MODEL.FPN.NORM", ""]
PRECISION_VARIANTS = [("float32", "DeepACC_R101_FPN_2x.yaml", ["SOLVER.AMP.ENABLED", "False", *_FROZEN]),
                      ("bfloat16 autocast", "DeepACC_R101_FPN_2x.yaml",
                       ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "bfloat16", *_FROZEN])]
PROTOCOLS = {"cpu": os.path.join(REPO, "benchmarks", "protocols", "cpu_R18_GN.yaml")}


def variants(args):
    """``(label, config file, extra overrides, old path?)`` of the models compared."""
    if args.compare == "paths":
        return [(label, cfg_file, extra, k == 0) for k, (label, cfg_file, extra) in enumerate(PATHS)]
    if args.compare == "precision":
        return [(label, cfg_file, extra, False) for label, cfg_file, extra in PRECISION_VARIANTS]
    amp = ["SOLVER.AMP.ENABLED", str(bool(args.amp))]
    return [(label, cfg_file, amp, False) for label, cfg_file in MODELS]


def as_old_path(model, train_batches, test_images):
    """Put back, on a built model and its inputs, the torchvision engine's steps as they were before the
    fast path: torchvision's ``box_iou`` for the anchor and proposal matching, the normalisation pass
    of the model's transform even where it is the identity, and images as three real channels (as the
    mapper made them before it handed the model one plane seen three times), so the resize works on
    three planes again. (The old path's GroupNorm trunk has no frozen BN to fold.) Returns the
    materialised ``(training batches, test images)``."""
    from torchvision.ops import box_iou

    model.rpn.box_similarity = box_iou
    model.roi_heads.box_similarity = box_iou
    model.transform._identity_normalize = False

    def materialised(sample):
        image, *rest = sample
        return (image.contiguous(), *rest)

    return [[materialised(s) for s in batch] for batch in train_batches], [materialised(s) for s in test_images]


def build(config: str, args, device, extra=()):
    from deepacc.config import get_cfg, load_config
    from deepacc.tv.model import build_model
    from deepacc.tv.optim import build_optimizer

    w, h = args.width, args.height
    if args.protocol:  # the protocol sets depth, norm and input size: only the device is ours
        cfg = load_config(os.path.join(REPO, "configs", config), [], get_cfg())
        cfg.merge_from_file(PROTOCOLS[args.protocol])
        cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", device.type, *extra])
    else:
        cfg = load_config(os.path.join(REPO, "configs", config),
                          ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device.type, "MODEL.RESNETS.DEPTH", args.depth,
                           "INPUT.MIN_SIZE_TRAIN", (min(w, h),), "INPUT.MAX_SIZE_TRAIN", max(w, h),
                           "INPUT.MIN_SIZE_TEST", min(w, h), "INPUT.MAX_SIZE_TEST", max(w, h),
                           "SOLVER.IMS_PER_BATCH", args.batch, *extra], get_cfg())
    args.batch = int(cfg.SOLVER.IMS_PER_BATCH)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    return cfg, model, build_optimizer(cfg, model)


def make_batches(args, cfg):
    """``--batch``-sized training batches and single test images from generated spreads (on disk, like training)."""
    from deepacc.data.coco import load_coco_json
    from deepacc.data.synthetic import generate_dataset
    from deepacc.tv.dataloader import MetaphaseMapper

    tmp = tempfile.mkdtemp(prefix="deepacc_speed_")
    n = max(2, args.batch * 2)
    json_path = generate_dataset(tmp, n, seed=7, width=args.width, height=args.height, progress=False)
    dicts = load_coco_json(json_path)
    train_mapper, test_mapper = MetaphaseMapper(cfg, True), MetaphaseMapper(cfg, False)
    train = [[train_mapper(d) for d in dicts[i:i + args.batch]] for i in range(0, n, args.batch)]
    test = [test_mapper(d) for d in dicts]
    return train, test


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def infer(model, image, device, cfg):
    from deepacc.precision import autocast

    with autocast(cfg, device.type):
        return model([image[0].to(device)])


def step(model, opt, cfg, batch, device):
    """The trainer's own iteration, in the variant's precision (``SOLVER.AMP``)."""
    from deepacc.precision import amp_dtype, needs_grad_scaler

    scaler = opt.__dict__.setdefault("_bench_scaler", torch.amp.GradScaler(
        "cuda", enabled=needs_grad_scaler(cfg, device.type)))
    return train_step(model, opt, scaler, cfg.SOLVER.CLIP_GRADIENTS, batch, device,
                      amp_dtype=amp_dtype(cfg, device.type))


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    dt = time.perf_counter() - t0
    mem = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    return dt, mem


def probe_cpu_memory(args, k: int, phase: str) -> float:
    """Peak RSS (MiB) of a fresh process running model ``k``'s ``phase`` ("train" or "infer")."""
    cmd = [sys.executable, os.path.abspath(__file__), "--device", "cpu", "--depth", str(args.depth), "--size",
           args.size, "--batch", str(args.batch), "--compare", args.compare, "--probe", f"{k}:{phase}"]
    if args.protocol:
        cmd += ["--protocol", args.protocol]
    if args.amp:
        cmd += ["--amp"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_probe(args, device, spec: str) -> None:
    """Build one model and its data, reset the kernel's peak-RSS mark, run one training iteration or
    inference, print the peak RSS above the level before it (MiB)."""
    k, phase = spec.split(":")
    label, cfg_file, extra, old = variants(args)[int(k)]
    cfg, model, opt = build(cfg_file, args, device, extra)
    train_batches, test_images = make_batches(args, cfg)
    if old:
        train_batches, test_images = as_old_path(model, train_batches, test_images)
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")
    base = _status_kib("VmRSS")
    if phase == "train":
        model.train()
        step(model, opt, cfg, train_batches[0], device)
    else:
        model.eval()
        infer(model, test_images[0], device, cfg)
    print((_status_kib("VmHWM") - base) / 1024.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--depth", type=int, default=101, choices=[18, 34, 50, 101])
    p.add_argument("--size", default="1600x1200", help="WxH of the generated spreads and the model input")
    p.add_argument("--batch", type=int, default=1, help="images per training iteration (the paper: 1)")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision for both rows (SOLVER.AMP: bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--compare", choices=["rows", "paths", "precision"], default="rows",
                   help="rows: DeepACC (f) vs Faster R-CNN (a); paths: row (f) on the old fp32 path vs the new "
                        "AMP/layout path; precision: row (f) with a frozen-BN trunk in float32 vs bf16 autocast "
                        "(and what SOLVER.AMP.PRECISION auto chooses on this CPU)")
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default=None,
                   help="lay a benchmark protocol over the configs (cpu: R18-GN 640x480, batch 2) instead of "
                        "--depth/--batch and the input size")
    p.add_argument("--warmup", type=int, default=1, help="untimed training iterations and inferences per model")
    p.add_argument("--train-iters", type=int, default=4, help="timed training iterations per model")
    p.add_argument("--infer-iters", type=int, default=6, help="timed inferences per model")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--tag", default="")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU memory probes (one process per model and phase)")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: "k:train" / "k:infer"
    args = p.parse_args(argv)
    args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = bool(args.amp)
    if args.probe:
        run_probe(args, device, args.probe)
        return 0

    chosen = variants(args)
    built = [(label, *build(cfg_file, args, device, extra)) for label, cfg_file, extra, _ in chosen]
    train_batches, test_images = make_batches(args, built[0][1])
    batches = {k: as_old_path(built[k][2], train_batches, test_images) if old else (train_batches, test_images)
               for k, (_, _, _, old) in enumerate(chosen)}  # model index -> (training batches, test images)
    n_params = [sum(p.numel() for p in m.parameters()) for _, _, m, _ in built]
    print(f"{args.depth}-layer ResNet-FPN, {args.width}x{args.height}, batch {args.batch}, {device}"
          f"{' AMP' if amp else ''}, {torch.get_num_threads()} threads; parameters: "
          + ", ".join(f"{lbl} {n / 1e6:.1f} M" for (lbl, *_), n in zip(built, n_params)), flush=True)

    train_t = [[] for _ in built]
    train_mem = [[] for _ in built]
    infer_t = [[] for _ in built]
    infer_mem = [[] for _ in built]
    for k, (label, cfg, model, opt) in enumerate(built):  # warm-up (allocator, kernels, oneDNN primitives)
        train_batches, test_images = batches[k]
        model.train()
        for i in range(args.warmup):
            step(model, opt, cfg, train_batches[i % len(train_batches)], device)
        model.eval()
        for i in range(args.warmup):
            infer(model, test_images[i % len(test_images)], device, cfg)
    total = args.train_iters * len(built)
    for i in range(args.train_iters):
        for k, (label, cfg, model, opt) in enumerate(built):
            model.train()
            train_batches = batches[k][0]
            batch = train_batches[i % len(train_batches)]
            dt, mem = timed(lambda: step(model, opt, cfg, batch, device), device)
            train_t[k].append(dt)
            train_mem[k].append(mem)
            print(f"  train {i * len(built) + k + 1}/{total} {label}: {dt:.3f} s", flush=True)
    for i in range(args.infer_iters):
        for k, (label, cfg, model, opt) in enumerate(built):
            model.eval()
            test_images = batches[k][1]
            image = test_images[i % len(test_images)]
            dt, mem = timed(lambda: infer(model, image, device, cfg), device)
            infer_t[k].append(dt)
            infer_mem[k].append(mem)
    if device.type == "cpu" and not args.no_memory:
        for k in range(len(built)):
            print(f"  memory probe {built[k][0]}: train, inference (fresh processes)", flush=True)
            train_mem[k] = [probe_cpu_memory(args, k, "train")]
            infer_mem[k] = [probe_cpu_memory(args, k, "infer")]
    rows = []
    for k, (label, *_rest) in enumerate(built):
        tr, inf = statistics.median(train_t[k]), statistics.median(infer_t[k])
        mem_tr = max((m for m in train_mem[k] if m is not None), default=None)
        mem_inf = max((m for m in infer_mem[k] if m is not None), default=None)
        rows.append({"model": label, "params_M": n_params[k] / 1e6, "train_s_per_iter": tr,
                     "train_it_per_s": 1.0 / tr, "train_s_all": train_t[k], "infer_s_per_spread": inf,
                     "infer_s_all": infer_t[k], "train_peak_mem_MiB": mem_tr, "infer_peak_mem_MiB": mem_inf})
    a, f = rows[0], rows[1]
    ratio = {"train_time": f["train_s_per_iter"] / a["train_s_per_iter"],
             "infer_time": f["infer_s_per_spread"] / a["infer_s_per_spread"]}
    if a["train_peak_mem_MiB"] and f["train_peak_mem_MiB"]:
        ratio["train_peak_mem"] = f["train_peak_mem_MiB"] / a["train_peak_mem_MiB"]
    if a["infer_peak_mem_MiB"] and f["infer_peak_mem_MiB"]:
        ratio["infer_peak_mem"] = f["infer_peak_mem_MiB"] / a["infer_peak_mem_MiB"]

    mem_kind = "CUDA max allocated above start" if device.type == "cuda" else "peak RSS above start, fresh process"
    fm = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    ratio_label = "speed-up new/old (images/s)" if args.compare == "paths" else "ratio (f)/(a)"
    by_speedup = args.compare in ("paths", "precision")
    for r in rows:
        r["train_images_per_s"] = args.batch / r["train_s_per_iter"]
        r["infer_images_per_s"] = 1.0 / r["infer_s_per_spread"]
    if by_speedup:  # speed-ups: images/s of each variant over the first one
        ratio["train_images_per_s"] = f["train_images_per_s"] / a["train_images_per_s"]
        ratio["infer_images_per_s"] = f["infer_images_per_s"] / a["infer_images_per_s"]
        ratio["per_variant"] = {r["model"]: {"train": r["train_images_per_s"] / a["train_images_per_s"],
                                             "infer": r["infer_images_per_s"] / a["infer_images_per_s"]}
                                for r in rows[1:]}
        first = "old" if args.compare == "paths" else rows[0]["model"]
        last = "\n".join(f"| **speed-up, {name} / {first}** | | | **{v['train']:.2f}x** | | **{v['infer']:.2f}x** | | |"
                         for name, v in ratio["per_variant"].items())
    else:
        last = (f"| **{ratio_label}** | {f['params_M'] / a['params_M']:.3f} | **{ratio['train_time']:.3f}** | "
                f"{1 / ratio['train_time']:.3f} | **{ratio['infer_time']:.3f}** | | "
                f"{fm(ratio.get('train_peak_mem'), 3)} | {fm(ratio.get('infer_peak_mem'), 3)} |")
    table = "\n".join([
        f"| model | params (M) | train s/it | train images/s | inference s/spread | inference images/s "
        f"| train peak mem (MiB, {mem_kind}) | inference peak mem (MiB) |", "|---|---|---|---|---|---|---|---|"]
        + [f"| {r['model']} | {r['params_M']:.1f} | {r['train_s_per_iter']:.3f} | {r['train_images_per_s']:.3f} | "
           f"{r['infer_s_per_spread']:.3f} | {r['infer_images_per_s']:.3f} | {fm(r['train_peak_mem_MiB'], 0)} | "
           f"{fm(r['infer_peak_mem_MiB'], 0)} |" for r in rows]
        + [last])
    print()
    print(table)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    command = "python benchmarks/bench_speed.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    cfg0 = built[0][1]
    model_desc = (f"ResNet-{cfg0.MODEL.RESNETS.DEPTH}-FPN ({cfg0.MODEL.RESNETS.NORM}), input "
                  f"{cfg0.INPUT.MAX_SIZE_TRAIN}x{cfg0.INPUT.MIN_SIZE_TRAIN[0]}"
                  + (f" (protocol {args.protocol})" if args.protocol else "")
                  + f", spreads {args.width}x{args.height}")
    precision = ("per variant" if by_speedup else ("AMP" if amp else "fp32"))
    setting = (f"{model_desc}, batch {args.batch}, {dev_name}, {precision}, {torch.get_num_threads()} threads, "
               f"torch {torch.__version__}; medians of {args.train_iters} training iterations and "
               f"{args.infer_iters} inferences per model after {args.warmup} warm-up each, interleaved")
    from deepacc.config import get_cfg
    from deepacc.precision import cpu_bf16_kernels, cpu_capability, resolve_precision

    auto_cfg = get_cfg()
    auto_cfg.merge_from_list(["SOLVER.AMP.ENABLED", "True"])
    cpu_line = (f"CPU capability {cpu_capability()}, oneDNN bf16 kernels: {cpu_bf16_kernels()}; "
                f"SOLVER.AMP.PRECISION auto chooses {resolve_precision(auto_cfg, device.type, log=False)}.")
    print(cpu_line)
    goal = {"paths": "Goal: >= 2.5x training and inference images/s.",
            "precision": "auto must choose the faster of the two on this machine."}.get(
        args.compare, "Goal: inference ratio ≤ 1.10, training ratio ≤ 1.15.")
    title = {"paths": "new vs old execution path", "precision": "float32 vs bf16 autocast"}.get(
        args.compare, "DeepACC vs Faster R-CNN")
    md = "\n".join([f"# Speed: {title} ({device.type})", "", "Made by:", "", "```", command, "```",
                    "", setting + f"; {datetime.datetime.now().isoformat(timespec='seconds')}.", "", cpu_line, "", table,
                    "", goal, ""])
    from deepacc.fileio import atomic_write

    name = f"speed_{device.type}{('_' + args.tag) if args.tag else ''}"
    os.makedirs(args.results, exist_ok=True)
    atomic_write(os.path.join(args.results, name + ".md"), md.encode())
    atomic_write(os.path.join(args.results, name + ".json"), json.dumps(
        {"command": command, "setting": setting, "cpu": cpu_line, "device": dev_name, "amp": amp, "rows": rows,
         "ratio": ratio},
        indent=1).encode())
    print(f"\nwrote {os.path.join(args.results, name)}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
