#!/usr/bin/env python
"""Threads and loader workers on this machine: the same short training run under each setting, side by side.

Each setting runs ``train_net.py --engine torchvision`` in a fresh process for ``--iters`` iterations of
``--config-file`` (default: the README's quick job) with ``torch.set_num_threads`` = ``--threads``
(through ``OMP_NUM_THREADS``, which PyTorch reads at start-up; random weights, ``MODEL.WEIGHTS ""``: speed does not depend on them) and ``DATALOADER.NUM_WORKERS`` =
``--workers``, interleaved over ``--repeats`` rounds so that machine noise hits all alike. It reports the
median seconds per iteration after the first ``--skip`` logged intervals (start-up, first oneDNN
primitives) and the ratio to the fastest setting; the CPU's capability line and the precision the run
used are printed with it.

    python benchmarks/bench_threads.py                                  # 1/2 threads x 0/1 workers
    python benchmarks/bench_threads.py --settings 2:0 2:1 1:1 --iters 60 --repeats 2

It needs the quick data set (``python datasets/prepare_synthetic.py --quick``, which the main job makes).
Results go to ``benchmarks/results/threads_<tag>.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.path.join("configs", "quick", "DeepACC_R18_synth_cpu.yaml")


def run_once(config: str, threads: int, workers: int, iters: int, out: str) -> list:
    """Seconds per iteration of the logged intervals of one short run (from its ``metrics.json``)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--engine", "torchvision", "--config-file", config,
           "MODEL.WEIGHTS", "", "SOLVER.MAX_ITER", str(iters), "SOLVER.CHECKPOINT_PERIOD", str(10 ** 6), "DATASETS.TEST", "()",
           "DATALOADER.NUM_WORKERS", str(workers), "OUTPUT_DIR", out]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench_threads: the run with {threads} thread(s), {workers} worker(s) failed:\n"
                         + (r.stderr or r.stdout)[-2000:])
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json")) if line.strip()]
    per_it, last = [], None
    for row in rows:
        if "time" not in row:
            continue
        if last is not None and row["iteration"] > last:
            per_it.append(row["time"] / (row["iteration"] - last))
        last = row["iteration"]
    return per_it


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", default=QUICK)
    p.add_argument("--settings", nargs="+", default=["1:0", "1:1", "2:0", "2:1"], metavar="THREADS:WORKERS")
    p.add_argument("--iters", type=int, default=60, help="iterations per run (metrics are logged every 20)")
    p.add_argument("--repeats", type=int, default=1, help="rounds over the settings, interleaved")
    p.add_argument("--skip", type=int, default=1, help="logged intervals dropped at the start of each run")
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--tag", default="cpu")
    a = p.parse_args(argv)
    settings = []
    for s in a.settings:
        t, _, w = s.partition(":")
        if not (t.isdigit() and w.isdigit() and int(t) > 0):
            p.error(f"--settings {s!r}: expected THREADS:WORKERS, e.g. 2:1")
        settings.append((int(t), int(w)))
    import torch

    from deepacc.config import get_cfg, load_config
    from deepacc.precision import cpu_capability, resolve_precision

    cfg = load_config(a.config_file, [], get_cfg())
    precision = resolve_precision(cfg, "cpu", log=False)
    times = {s: [] for s in settings}
    with tempfile.TemporaryDirectory(prefix="deepacc_threads_") as tmp:
        for r in range(a.repeats):
            for t, w in settings:
                out = os.path.join(tmp, f"run_{r}_{t}_{w}")
                per_it = run_once(a.config_file, t, w, a.iters, out)[a.skip:]
                times[(t, w)] += per_it
                print(f"  round {r + 1}: {t} thread(s), {w} worker(s): "
                      f"{statistics.median(per_it) if per_it else float('nan'):.3f} s/it", flush=True)
    med = {s: statistics.median(v) for s, v in times.items() if v}
    best = min(med.values())
    lines = ["| torch threads | loader workers | s / iteration (median) | x fastest |", "|---:|---:|---:|---:|"]
    lines += [f"| {t} | {w} | {med[(t, w)]:.3f} | {med[(t, w)] / best:.2f} |" for t, w in settings if (t, w) in med]
    cpu = (f"CPU capability {cpu_capability()}, {os.cpu_count()} cores, torch {torch.__version__}; precision "
           f"{precision}")
    command = "python benchmarks/bench_threads.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    md = "\n".join([f"# Threads and loader workers ({a.config_file})", "", "Made by:", "", "```", command, "```", "",
                    cpu + f"; {a.iters} iterations per run, {a.repeats} round(s), first {a.skip} logged interval(s) "
                    "of each run dropped.", ""] + lines + [""])
    print("\n" + md)
    from deepacc.fileio import atomic_write

    os.makedirs(a.results, exist_ok=True)
    name = os.path.join(a.results, f"threads_{a.tag}")
    atomic_write(name + ".md", md.encode())
    atomic_write(name + ".json", json.dumps({"command": command, "cpu": cpu, "settings": [
        {"threads": t, "workers": w, "s_per_iter": med.get((t, w)), "all": times[(t, w)]} for t, w in settings]},
        indent=1).encode())
    print(f"wrote {name}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
