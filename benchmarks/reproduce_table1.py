#!/usr/bin/env python
"""Table 1 of the paper (the ablation (a)-(f)) on one dataset: train and evaluate every row with the
same schedule, data and seeds, print the paper's layout with mean ± std over seeds, and store JSON +
markdown (with the exact command) under ``benchmarks/results/``.

Rows are the committed configs, nothing else differs between them:

    (a) configs/faster_rcnn_R101_FPN_2x.yaml           plain Faster R-CNN
    (b) configs/faster_rcnn_sep_R101_FPN_2x.yaml       Faster R-CNN, separate cls / reg streams
    (c) configs/ablation/c_aam_R101_FPN_2x.yaml        + AAM
    (d) configs/ablation/d_siamese_R101_FPN_2x.yaml    + siamese
    (e) configs/ablation/e_aam_siamese_R101_FPN_2x.yaml+ AAM + siamese
    (f) configs/ablation/f_full_R101_FPN_2x.yaml       + AAM + siamese + GIA (DeepACC)

Datasets (prepare them first, see docs/data.md; one command per dataset):

    gband        train gband_cells_train, evaluate gband_cells_val (the paper's ablation uses validation)
    mfish        train mfish_train,        evaluate mfish_val
    synth_shift  train deepacc_synth_train (default batch distribution), evaluate deepacc_synth_test
                 (same distribution) AND deepacc_synth_shift_test (the "shifted" batch distribution,
                 never seen in training): the batch-effect claim is about the second column set

Protocols:

    paper   the row configs as they are: R101-FPN from ImageNet weights, 1600x1200, batch 1,
            24 epochs (GPU; needs the ImageNet weights reachable)
    cpu     benchmarks/protocols/cpu_R18_GN.yaml applied on top of each row: ResNet-18-FPN + GN
            from scratch, 640x480, batch 2, --max-iter iterations; only row differences mean anything

    python benchmarks/reproduce_table1.py --dataset synth_shift --protocol cpu --seeds 0 1 2
    python benchmarks/reproduce_table1.py --dataset gband --protocol paper --seeds 0 1 2 --num-gpus 8

Every run trains through ``train_net.py --resume`` in its own output folder, so killing the
benchmark and running the same command again continues where it stopped; finished runs (their
metrics file exists) are not run again unless ``--rerun``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects", "DeepACC"))

#: row -> (label, config relative to configs/, L_AAM, Siamese, L_GIA)
ROWS = {
    "a": ("(a) Faster R-CNN", "faster_rcnn_R101_FPN_2x.yaml", False, False, False),
    "b": ("(b) Faster R-CNN (sep)", "faster_rcnn_sep_R101_FPN_2x.yaml", False, False, False),
    "c": ("(c) DeepACC", "ablation/c_aam_R101_FPN_2x.yaml", True, False, False),
    "d": ("(d) DeepACC", "ablation/d_siamese_R101_FPN_2x.yaml", False, True, False),
    "e": ("(e) DeepACC", "ablation/e_aam_siamese_R101_FPN_2x.yaml", True, True, False),
    "f": ("(f) DeepACC", "ablation/f_full_R101_FPN_2x.yaml", True, True, True),
}

#: dataset -> (train sets, {column label: test set})
DATASETS = {
    "gband": (("gband_cells_train",), {"val": "gband_cells_val"}),
    "mfish": (("mfish_train",), {"val": "mfish_val"}),
    "synth_shift": (("deepacc_synth_train",), {"same batch": "deepacc_synth_test",
                                               "shifted batch": "deepacc_synth_shift_test"}),
}

PROTOCOLS = {"paper": None, "cpu": os.path.join("benchmarks", "protocols", "cpu_R18_GN.yaml")}

METRICS = ("mAP", "mAP_max", "AER", "Acc")
#: Table 1 of the paper (validation set of its 3390 clinical images), for reference in the output.
PAPER_TABLE1 = {
    "a": (90.82, 88.10, 18.09, 83.34), "b": (90.89, 88.23, 18.09, 83.33), "c": (87.76, 87.23, 17.64, 83.80),
    "d": (91.24, 88.63, 17.73, 83.56), "e": (91.28, 89.13, 16.56, 84.56), "f": (91.43, 89.38, 16.22, 84.85),
}


# ------------------------------------------------------------------------------------------ configs
def build_run_config(row: str, dataset: str, protocol: str, seed: int, output_dir: str,
                     max_iter: Optional[int] = None, opts: Sequence[str] = ()):
    """The full config of one run: the row's config, then the protocol overlay, then data, seed, output."""
    from deepacc.config import get_cfg, load_config

    cfg = load_config(os.path.join(REPO, "configs", ROWS[row][1]), None, get_cfg())
    overlay = PROTOCOLS[protocol]
    if overlay:
        cfg.merge_from_file(os.path.join(REPO, overlay))
    train, tests = DATASETS[dataset]
    cfg.DATASETS.TRAIN = tuple(train)
    cfg.DATASETS.TEST = tuple(tests.values())
    cfg.SEED = int(seed)
    cfg.OUTPUT_DIR = output_dir
    # Table 1 is the paper's protocol: each call keeps the model's top-1 class (the karyotype
    # assignment, ours, is measured by benchmarks/karyotype_assignment.py)
    cfg.TEST.DEEPACC.ASSIGNMENT.ENABLED = False
    if max_iter:
        n = int(max_iter)
        cfg.SOLVER.EPOCHS = 0
        cfg.SOLVER.MAX_ITER = n
        # keep the paper's decay points (16 and 22 of 24 epochs) in proportion
        cfg.SOLVER.STEPS = (int(round(n * 16 / 24)), int(round(n * 22 / 24)))
        cfg.SOLVER.WARMUP_ITERS = min(int(cfg.SOLVER.WARMUP_ITERS), max(1, n // 6))
        cfg.SOLVER.CHECKPOINT_PERIOD = min(int(cfg.SOLVER.CHECKPOINT_PERIOD), max(1, n // 3))
    if opts:
        cfg.merge_from_list(list(opts))
    return cfg


def metrics_path(run_dir: str, test_set: str) -> str:
    from deepacc.evaluation.evaluator import METRICS_FILE

    return os.path.join(run_dir, "inference", test_set, METRICS_FILE)


def is_finished(run_dir: str, columns: Dict[str, str]) -> bool:
    """Every test set of ``columns`` has its evaluator's metrics file in ``run_dir``."""
    return all(os.path.exists(metrics_path(run_dir, ds)) for ds in columns.values())


def read_metrics(run_dir: str, columns: Dict[str, str]) -> Dict[str, Dict]:
    """The headline figures per test set of a run (test sets without a metrics file are left out)."""
    metrics = {}
    for ds in columns.values():
        path = metrics_path(run_dir, ds)
        if os.path.exists(path):
            with open(path) as f:
                res = json.load(f)
            metrics[ds] = {k: res.get(k) for k in METRICS + ("AP", "TP", "FP", "FN", "num_images")}
    return metrics


def read_train_speed(run_dir: str) -> Optional[float]:
    """Median seconds per iteration from ``metrics.json`` (its ``time`` spans 20 iterations)."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(path):
        return None
    per_it = []
    last = None
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "time" in rec and "iteration" in rec:
                if last is not None and rec["iteration"] > last:
                    per_it.append(rec["time"] / (rec["iteration"] - last))
                last = rec["iteration"]
    return statistics.median(per_it[1:] or per_it) if per_it else None


# --------------------------------------------------------------------------------------------- runs
def run_train_net(argv: Sequence[str], log_path: str, threads: Optional[int] = None) -> int:
    """``train_net.py --engine torchvision <argv>`` in a child process, its output appended to ``log_path``."""
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--engine", "torchvision", *argv]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    from deepacc.fileio import open_append

    with open_append(log_path) as log:  # never through a link
        log.write(f"\n$ {shlex.join(cmd)}\n")
        log.flush()
        return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def run_one(cfg, log_path: str, num_gpus: int, threads: Optional[int]) -> int:
    """Train + evaluate one config through ``train_net.py --resume``; output goes to ``log_path``."""
    from deepacc.fileio import atomic_write

    cfg_path = os.path.join(cfg.OUTPUT_DIR, "run_config.yaml")
    atomic_write(cfg_path, cfg.dump().encode("utf-8"))  # creates the folder
    return run_train_net(["--config-file", cfg_path, "--resume", "--num-gpus", str(num_gpus)], log_path, threads)


def mean_std(values: List[float]):
    """Mean and sample std of the defined values (Acc is undefined for a run without detections)."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(ms, n: Optional[int] = None, total: Optional[int] = None) -> str:
    """``mean ± std``; ``(n/total)`` appended when only ``n`` of ``total`` runs define the value."""
    m, s = ms
    if m is None:
        return "-"
    spread = (n >= 2) if n is not None else bool(s)
    out = f"{m:.2f} ± {s:.2f}" if spread else f"{m:.2f}"
    if n is not None and total is not None and n < total:
        out += f" ({n}/{total})"
    return out


def summarize(runs: List[Dict], rows: Sequence[str], columns: Dict[str, str]) -> Dict:
    out = {}
    for r in rows:
        mine = [x for x in runs if x["row"] == r and x.get("metrics")]
        entry = {"seeds": [x["seed"] for x in mine]}
        for col, ds in columns.items():
            entry[col] = {}
            for m in METRICS + ("AP",):
                vals = [x["metrics"][ds].get(m) for x in mine if ds in x["metrics"]]
                mean, std = mean_std(vals)
                entry[col][m] = {"mean": mean, "std": std, "n": sum(v is not None for v in vals)}
        entry["s_per_iter"] = dict(zip(("mean", "std"), mean_std([x.get("s_per_iter") for x in mine])))
        out[r] = entry
    return out


def table_markdown(summary: Dict, rows: Sequence[str], columns: Dict[str, str], reference: str = "a") -> str:
    """The paper's Table 1 layout, one block of metric columns per test set, then differences vs ``reference``."""
    head = ["Method", "L_AAM", "Siamese", "L_GIA"]
    for col in columns:
        suffix = f" [{col}]" if len(columns) > 1 else ""
        head += [f"mAP(%){suffix}", f"mAP_max(%){suffix}", f"AER(%){suffix}", f"Acc(%){suffix}"]
    head += ["seeds", "s/it"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    check = lambda b: "✓" if b else ""  # noqa: E731
    for r in rows:
        label, _, aam, siam, gia = ROWS[r]
        e = summary[r]
        cells = [label, check(aam), check(siam), check(gia)]
        for col in columns:
            cells += [fmt((e[col][m]["mean"], e[col][m]["std"]), e[col][m]["n"], len(e["seeds"])) for m in METRICS]
        cells += [str(len(e["seeds"])), fmt((e["s_per_iter"]["mean"], None))]
        lines.append("| " + " | ".join(cells) + " |")
    if reference in summary and len(rows) > 1:
        lines.append("")
        lines.append(f"Differences to row ({reference}), mean over seeds (AER: lower is better):")
        lines.append("")
        dh = ["Method"] + [f"Δ{m}{f' [{c}]' if len(columns) > 1 else ''}" for c in columns for m in METRICS]
        lines += ["| " + " | ".join(dh) + " |", "|" + "---|" * len(dh)]
        ref = summary[reference]
        for r in rows:
            if r == reference:
                continue
            cells = [ROWS[r][0]]
            for col in columns:
                for m in METRICS:
                    a, b = summary[r][col][m]["mean"], ref[col][m]["mean"]
                    cells.append("-" if a is None or b is None else f"{a - b:+.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment() -> Dict:
    import torch
    import torchvision

    try:
        commit = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=REPO, text=True).strip()
        dirty = bool(subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=no"],
                                             cwd=REPO, text=True).strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"git_commit": commit, "git_dirty": dirty, "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "gpu": gpu, "date": datetime.datetime.now().isoformat(timespec="seconds")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--protocol", default="cpu", choices=sorted(PROTOCOLS))
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max-iter", type=int, default=None,
                   help="iterations per run (decay points kept at 16/24 and 22/24); default: the protocol's")
    p.add_argument("--num-gpus", type=int, default=1, help="processes per run (train_net.py --num-gpus)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for each run (CPU)")
    p.add_argument("--work-dir", default=None, help="default: output/table1/<dataset>_<protocol>")
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--tag", default="", help="suffix of the result files' names")
    p.add_argument("--rerun", action="store_true", help="train again even when a run's metrics exist")
    p.add_argument("--order", choices=["seed", "row"], default="seed",
                   help="seed: all rows of seed 0 first, then seed 1 ... (a stopped benchmark still has "
                        "every row); row: all seeds of a row first")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="extra KEY VALUE config overrides for every run")
    args = p.parse_args(argv)
    if args.opts and args.opts[0] == "--":
        args.opts = args.opts[1:]

    name = f"table1_{args.dataset}_{args.protocol}{('_' + args.tag) if args.tag else ''}"
    work = args.work_dir or os.path.join(REPO, "output", "table1", f"{args.dataset}_{args.protocol}"
                                         f"{('_' + args.tag) if args.tag else ''}")
    columns = DATASETS[args.dataset][1]
    plan = ([(r, s) for s in args.seeds for r in args.rows] if args.order == "seed"
            else [(r, s) for r in args.rows for s in args.seeds])
    command = "python benchmarks/reproduce_table1.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    print(f"{name}: {len(plan)} runs ({len(args.rows)} rows x {len(args.seeds)} seeds) in {work}", flush=True)

    runs = []
    cfg0 = None
    for i, (row, seed) in enumerate(plan, 1):
        run_dir = os.path.join(work, f"{row}_seed{seed}")
        cfg = build_run_config(row, args.dataset, args.protocol, seed, run_dir, args.max_iter, args.opts)
        cfg0 = cfg0 or cfg
        t0 = time.time()
        status = "reused"
        if args.rerun or not is_finished(run_dir, columns):
            print(f"[{i}/{len(plan)}] {ROWS[row][0]} seed {seed}: training "
                  f"{cfg.SOLVER.MAX_ITER if not cfg.SOLVER.EPOCHS else str(cfg.SOLVER.EPOCHS) + ' epochs'} "
                  f"(log {os.path.join(run_dir, 'benchmark.log')})", flush=True)
            if args.rerun:
                for ds in columns.values():
                    if os.path.exists(metrics_path(run_dir, ds)):
                        os.remove(metrics_path(run_dir, ds))
            rc = run_one(cfg, os.path.join(run_dir, "benchmark.log"), args.num_gpus, args.threads)
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        metrics = read_metrics(run_dir, columns)
        rec = {"row": row, "seed": seed, "run_dir": os.path.relpath(run_dir, REPO), "status": status,
               "wall_s": round(time.time() - t0, 1) if status != "reused" else None,
               "s_per_iter": read_train_speed(run_dir), "max_iter": int(cfg.SOLVER.MAX_ITER),
               "metrics": metrics}
        runs.append(rec)
        shown = "  ".join(f"{col}: " + " ".join(f"{m} {metrics[ds][m]:.2f}" for m in METRICS if
                                                metrics.get(ds, {}).get(m) is not None)
                          for col, ds in columns.items())
        print(f"[{i}/{len(plan)}] {ROWS[row][0]} seed {seed}: {status}  {shown}", flush=True)

    summary = summarize(runs, args.rows, columns)
    table = table_markdown(summary, args.rows, columns)
    print()
    print(table)
    env = environment()
    ref = "\n".join(f"| {ROWS[r][0]} | " + " | ".join(f"{v:.2f}" for v in PAPER_TABLE1[r]) + " |" for r in args.rows)
    md = "\n".join([
        f"# Table 1 on `{args.dataset}`, protocol `{args.protocol}`", "",
        "Made by:", "", "```", command, "```", "",
        f"Train: {', '.join(DATASETS[args.dataset][0])}; evaluated on: "
        + ", ".join(f"{ds} ({col})" for col, ds in columns.items()) + ".",
        f"Schedule: {cfg0.SOLVER.MAX_ITER if not cfg0.SOLVER.EPOCHS else str(cfg0.SOLVER.EPOCHS) + ' epochs'} "
        f"iterations, batch {cfg0.SOLVER.IMS_PER_BATCH}, input {cfg0.INPUT.MIN_SIZE_TRAIN[0]}x{cfg0.INPUT.MAX_SIZE_TRAIN}"
        f" (short x long side), ResNet-{cfg0.MODEL.RESNETS.DEPTH} {cfg0.MODEL.RESNETS.NORM}, "
        f"weights: {cfg0.MODEL.WEIGHTS or 'none (from scratch)'}.",
        f"Seeds: {' '.join(map(str, args.seeds))}; mean ± sample std over the seeds that finished; (n/N): only n "
        "of N runs define the value (Acc is undefined for a run with no detection scoring ≥ 0.5).", "",
        f"Environment: torch {env['torch']}, torchvision {env['torchvision']}, {env['cpu_count']} CPUs, "
        f"GPU: {env['gpu'] or 'none'}; commit {env['git_commit']}{' (dirty)' if env['git_dirty'] else ''}; {env['date']}.",
        "", table, "",
        "For reference, the paper's Table 1 (R101-FPN, ImageNet weights, 24 epochs, validation set of 3390 "
        "clinical 1600x1200 images; not comparable in absolute terms):", "",
        "| Method | mAP(%) | mAP_max(%) | AER(%) | Acc(%) |", "|---|---|---|---|---|", ref, ""])
    os.makedirs(args.results, exist_ok=True)
    from deepacc.fileio import atomic_write

    atomic_write(os.path.join(args.results, name + ".md"), md.encode())
    record = {"command": command, "dataset": args.dataset, "protocol": args.protocol, "rows": args.rows,
              "seeds": args.seeds, "columns": columns, "environment": env, "runs": runs, "summary": summary}
    atomic_write(os.path.join(args.results, name + ".json"), json.dumps(record, indent=1).encode())
    print(f"\nwrote {os.path.join(args.results, name)}.{{md,json}}")
    return 0 if not any(r["status"].startswith("failed") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
