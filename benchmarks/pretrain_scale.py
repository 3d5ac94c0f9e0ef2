#!/usr/bin/env python
"""What downscaling costs: in-domain pretraining of the same trunk at several detector input scales.

For each ``SHORTxLONG`` input size, ``deepacc-pretrain`` cuts the training split's chromosome crops
at the scale the detector would see them (its ``INPUT.MIN_SIZE_TRAIN``/``MAX_SIZE_TRAIN`` resize of
each image) and trains the recipe's trunk for the same number of epochs; the validation split's
crop accuracy per epoch shows how much naming information survives the resize. Crop classification
stands in for the detector's classification here because it costs minutes, not hours.

    python benchmarks/pretrain_scale.py --config-file configs/gband/DeepACC_R18_gband_cpu.yaml \\
        --sizes 480x640 720x960 --epochs 4 --threads 1 --parallel

Runs go to ``--work/<size>`` (a finished run is reused, an interrupted one resumes); the table goes to
``benchmarks/results/pretrain_scale_<tag>.{md,json}``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _history(run_dir):
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", default=os.path.join("configs", "gband", "DeepACC_R18_gband_cpu.yaml"))
    p.add_argument("--sizes", nargs="+", default=["480x640", "720x960"], help="SHORTxLONG input sizes")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="OMP threads per run (0: torch's default)")
    p.add_argument("--parallel", action="store_true", help="run the sizes at the same time (use with --threads 1)")
    p.add_argument("--work", default=os.path.join("output", "pretrain_scale"))
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--tag", default="gband")
    args = p.parse_args(argv)

    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    procs = []
    for size in args.sizes:
        short, long_ = (int(v) for v in size.lower().split("x"))
        out = os.path.join(args.work, size)
        report = os.path.join(out, "pretrain_report.json")
        if os.path.isfile(report) and json.load(open(report)).get("epochs") == args.epochs:
            continue  # finished with this schedule
        cmd = [sys.executable, "-m", "deepacc.tools.pretrain", "--config-file", args.config_file, "--epochs",
               str(args.epochs), "--output", out, "INPUT.MIN_SIZE_TRAIN", f"({short},)", "INPUT.MAX_SIZE_TRAIN",
               str(long_)]
        print("+", shlex.join(cmd), flush=True)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        if args.parallel:
            procs.append(proc)
        elif proc.wait() != 0:
            return proc.returncode
    for proc in procs:
        if proc.wait() != 0:
            return proc.returncode

    rows = []
    for size in args.sizes:
        out = os.path.join(args.work, size)
        rep = json.load(open(os.path.join(out, "pretrain_report.json")))
        hist = rep["history"]
        rows.append({"size": size, "run_command": rep.get("command"), "val_top1_per_epoch": [h.get("val_top1") for h in hist],
                     "final_val_top1": rep.get("val", {}).get("top1"), "s_per_epoch": sum(h["seconds"] for h in hist) / len(hist),
                     "train_crops": rep["train_crops"], "val_crops": rep["val_crops"]})
    epochs = max(len(r["val_top1_per_epoch"]) for r in rows)
    head = "| input (short x long) | " + " | ".join(f"val top-1 ep {e + 1} (%)" for e in range(epochs)) + " | s/epoch |"
    lines = [head, "|---" * (epochs + 2) + "|"]
    for r in rows:
        accs = [f"{100 * a:.2f}" if a is not None else "-" for a in r["val_top1_per_epoch"]]
        lines.append(f"| {r['size']} | " + " | ".join(accs) + f" | {r['s_per_epoch']:.0f} |")
    table = "\n".join(lines)
    print(table)
    command = "python benchmarks/pretrain_scale.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    md = "\n".join([f"# Pretraining accuracy vs input scale ({args.tag})", "", "Made by:", "", "```", command, "```", "",
                    f"Config: `{args.config_file}` (its trunk, datasets and augmentations); {args.epochs} epochs each "
                    f"(cosine schedule over the run), seed 0; train crops from the training split, accuracy on the "
                    f"validation split's crops ({rows[0]['val_crops']}). s/epoch depends on the threads given and "
                    f"on what else ran: compare accuracies, not times. "
                    f"{datetime.datetime.now().isoformat(timespec='seconds')}.", "", table, "",
                    "Each run's own command (a finished run is reused, so it may have been made by an "
                    "equivalent config):", ""] + [f"- {r['size']}: `{r['run_command']}`" for r in rows] + [""])
    from deepacc.fileio import atomic_write

    name = os.path.join(args.results, f"pretrain_scale_{args.tag}")
    atomic_write(name + ".md", md.encode("utf-8"))
    atomic_write(name + ".json", json.dumps({"command": command, "config": args.config_file, "epochs": args.epochs,
                                             "rows": rows}, indent=1).encode("utf-8"))
    print(f"wrote {name}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
