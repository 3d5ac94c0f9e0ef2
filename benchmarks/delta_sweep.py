#!/usr/bin/env python
"""The siamese threshold δ (Eq. 2, ``MODEL.DEEPACC.SIAMESE.THRESHOLD``; the paper does not give its
value): how the metrics move with δ.

Two modes, same table:

* ``--run-dir DIR`` (inference sweep): one trained DeepACC run (a folder written by
  ``reproduce_table1.py`` or ``train_net.py``, with ``run_config.yaml``/``config.yaml`` and
  ``model_final.pth``) is evaluated with each δ. δ only decides, per image and class, whether the
  inference branch uses the local centre or the global weight, so this isolates its effect at test
  time. Cheap: inference only.
* ``--train`` (training sweep): row (f) is trained once per δ with ``reproduce_table1.py``'s setup
  (same protocol, data, seeds), because δ also shapes training ("local class centre may introduce
  some instability at the beginning stage of the training", §2.3).

    python benchmarks/delta_sweep.py --run-dir output/table1/synth_shift_cpu/f_seed0 --dataset synth_shift
    python benchmarks/delta_sweep.py --train --dataset synth_shift --protocol cpu --seeds 0 1 2

Results: ``benchmarks/results/delta_sweep_<dataset>_<mode>.{json,md}`` with the command.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reproduce_table1 as t1  # noqa: E402

REPO = t1.REPO


def _fmt_delta(d: float) -> str:
    return f"{d:g}".replace(".", "p")


def eval_with_delta(run_dir: str, delta: float, columns: Dict[str, str], log_path: str, threads=None) -> Dict:
    cfg_file = next((os.path.join(run_dir, n) for n in ("run_config.yaml", "config.yaml")
                     if os.path.exists(os.path.join(run_dir, n))), None)
    weights = os.path.join(run_dir, "model_final.pth")
    if cfg_file is None or not os.path.exists(weights):
        raise FileNotFoundError(f"{run_dir}: needs config.yaml (or run_config.yaml) and model_final.pth")
    out = os.path.join(run_dir, "delta_sweep", f"delta_{_fmt_delta(delta)}")
    if not t1.is_finished(out, columns):
        os.makedirs(out, exist_ok=True)
        rc = t1.run_train_net(["--eval-only", "--config-file", cfg_file, "MODEL.WEIGHTS", weights,
                               "MODEL.DEEPACC.SIAMESE.THRESHOLD", str(delta), "OUTPUT_DIR", out,
                               "DATASETS.TEST", repr(tuple(columns.values()))], log_path, threads)
        if rc:
            raise RuntimeError(f"evaluation with delta {delta} failed (exit {rc}); see {log_path}")
    return t1.read_metrics(out, columns)


def table(results: List[Dict], columns: Dict[str, str]) -> str:
    head = ["δ"] + [f"{m}(%){f' [{c}]' if len(columns) > 1 else ''}" for c in columns for m in t1.METRICS] + ["runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [f"{r['delta']:g}"]
        for ds in columns.values():
            for m in t1.METRICS:
                cells.append(t1.fmt(t1.mean_std([x[ds].get(m) for x in r["metrics"] if ds in x])))
        cells.append(str(len(r["metrics"])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=sorted(t1.DATASETS))
    p.add_argument("--deltas", nargs="+", type=float, default=[0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    p.add_argument("--run-dir", nargs="+", default=None, help="trained run folder(s): inference sweep")
    p.add_argument("--train", action="store_true", help="train row (f) once per δ and seed")
    p.add_argument("--protocol", default="cpu", choices=sorted(t1.PROTOCOLS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--max-iter", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    args = p.parse_args(argv)
    if bool(args.run_dir) == bool(args.train):
        p.error("give either --run-dir (inference sweep) or --train (training sweep)")
    columns = t1.DATASETS[args.dataset][1]
    command = "python benchmarks/delta_sweep.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    results = []
    for delta in args.deltas:
        metrics = []
        if args.run_dir:
            for rd in args.run_dir:
                rd = os.path.abspath(rd)
                metrics.append(eval_with_delta(rd, delta, columns, os.path.join(rd, "delta_sweep.log"), args.threads))
        else:
            work = args.work_dir or os.path.join(REPO, "output", "delta_sweep", f"{args.dataset}_{args.protocol}")
            for seed in args.seeds:
                run_dir = os.path.join(work, f"delta_{_fmt_delta(delta)}_seed{seed}")
                if not t1.is_finished(run_dir, columns):
                    cfg = t1.build_run_config("f", args.dataset, args.protocol, seed, run_dir, args.max_iter,
                                              ["MODEL.DEEPACC.SIAMESE.THRESHOLD", str(delta)])
                    rc = t1.run_one(cfg, os.path.join(run_dir, "benchmark.log"), 1, args.threads)
                    if rc:
                        print(f"δ {delta:g} seed {seed}: training failed (exit {rc})", flush=True)
                metrics.append(t1.read_metrics(run_dir, columns))
        results.append({"delta": delta, "metrics": metrics})
        shown = "  ".join(f"{c}: " + " ".join(f"{m} {x[ds][m]:.2f}" for m in t1.METRICS if x.get(ds, {}).get(m) is not None)
                          for x in metrics[:1] for c, ds in columns.items())
        print(f"δ {delta:g}: {shown}", flush=True)
    mode = "inference" if args.run_dir else "train"
    md_table = table(results, columns)
    print()
    print(md_table)
    env = t1.environment()
    source = (f"Trained run(s): {', '.join(os.path.relpath(os.path.abspath(r), REPO) for r in args.run_dir)}, each "
              "evaluated with every δ (the model's training used its own config's δ)." if args.run_dir else
              f"Row (f) trained once per δ and seed, protocol `{args.protocol}`, seeds {args.seeds}.")
    md = "\n".join([f"# δ sweep on `{args.dataset}` ({mode})", "", "Made by:", "", "```", command, "```", "",
                    source, "", f"Environment: torch {env['torch']}, commit {env['git_commit']}, {env['date']}.", "",
                    md_table, ""])
    from deepacc.fileio import atomic_write

    name = f"delta_sweep_{args.dataset}_{mode}"
    os.makedirs(args.results, exist_ok=True)
    atomic_write(os.path.join(args.results, name + ".md"), md.encode())
    atomic_write(os.path.join(args.results, name + ".json"), json.dumps(
        {"command": command, "dataset": args.dataset, "mode": mode, "columns": columns, "environment": env,
         "results": results}, indent=1).encode())
    print(f"\nwrote {os.path.join(args.results, name)}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
