#!/usr/bin/env python
"""Learning curves of training runs: validation metrics at every evaluation, as a table and a plot.

Reads each run's ``OUTPUT_DIR/metrics.json`` (written by either engine with ``TEST.EVAL_PERIOD``), its
``config.yaml`` and, when the trunk was pretrained with ``deepacc-pretrain``, that run's
``metrics.json`` too, and writes ``benchmarks/results/curve_<name>.{md,json,png}``:

    python benchmarks/learning_curve.py output/gband/DeepACC_R18 output/gband/faster_rcnn_R18 \\
        --name gband_R18_cpu --command "the commands that made the runs"

Wall time on the x axis of the plot is the training's own (sum of the logged iteration times), plus
the pretraining's when there was one, so runs with and without pretraining compare at equal cost.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("mAP", "mAP_max", "AER", "Acc", "siamese_local_centre_pct")


def read_run(run_dir: str) -> Dict:
    """Evaluations of one run: ``[{iteration, minutes, <dataset>/<metric>...}]`` plus the run's label."""
    rows, train_s = [], 0.0
    with open(os.path.join(run_dir, "metrics.json")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    seen = {}
    for rec in recs:  # a resumed run repeats iterations: the later record wins
        if "time" in rec:
            seen[("t", rec["iteration"])] = rec
        if any("/" in k for k in rec):
            seen[("e", rec["iteration"])] = rec
    last_t = None
    for (kind, it), rec in sorted(seen.items(), key=lambda kv: (kv[0][1], kv[0][0] == "e")):
        if kind == "t":
            # "time" covers the iterations since the previous logged one
            span = it - last_t if last_t is not None else 1
            train_s += rec["time"] if span > 0 else 0.0
            last_t = it
        else:
            row = {"iteration": it + 1, "train_minutes": train_s / 60.0}
            row.update({k: v for k, v in rec.items() if "/" in k and k.split("/")[-1] in METRICS})
            rows.append(row)
    pre_min = 0.0
    weights = ""
    cfg_path = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(cfg_path):
        import yaml

        with open(cfg_path) as f:
            cfg = yaml.safe_load(f)
        weights = str(cfg.get("MODEL", {}).get("WEIGHTS", ""))
        pre_report = os.path.join(os.path.dirname(weights), "pretrain_report.json") if weights else ""
        if pre_report and os.path.isfile(pre_report):
            with open(pre_report) as f:
                hist = json.load(f)["history"]
            pre_min = hist[-1]["elapsed_s"] / 60.0 if hist else 0.0
    for r in rows:
        r["total_minutes"] = r["train_minutes"] + pre_min
    return {"run": run_dir, "weights": weights, "pretrain_minutes": pre_min, "evaluations": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="OUTPUT_DIRs of training runs")
    p.add_argument("--name", required=True, help="results name: benchmarks/results/curve_<name>.*")
    p.add_argument("--command", default="", help="the command(s) that made the runs, recorded with the results")
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    args = p.parse_args(argv)
    runs = [read_run(r) for r in args.runs]
    lines: List[str] = [f"# Learning curves: {args.name}", ""]
    if args.command:
        lines += ["Made by:", "", "```", args.command, "```", ""]
    lines += [f"Tables written {datetime.datetime.now().isoformat(timespec='seconds')} by "
              f"`python benchmarks/learning_curve.py {' '.join(args.runs)} --name {args.name}`.", ""]
    for run in runs:
        ds_keys = sorted({k for r in run["evaluations"] for k in r if "/" in k})
        datasets = sorted({k.split("/")[0] for k in ds_keys})
        lines += [f"## `{run['run']}`", "", f"MODEL.WEIGHTS: `{run['weights'] or '(none: from scratch)'}`; "
                  f"pretraining {run['pretrain_minutes']:.1f} min.", ""]
        for ds in datasets:
            cols = [m for m in METRICS if f"{ds}/{m}" in ds_keys]
            lines += [f"{ds}:", "", "| iteration | train min | total min | " + " | ".join(cols) + " |",
                      "|---" * (3 + len(cols)) + "|"]
            for r in run["evaluations"]:
                vals = [f"{r[f'{ds}/{m}']:.2f}" if f"{ds}/{m}" in r else "-" for m in cols]
                lines.append(f"| {r['iteration']} | {r['train_minutes']:.1f} | {r['total_minutes']:.1f} | "
                             + " | ".join(vals) + " |")
            lines.append("")
    from deepacc.fileio import atomic_write, save_figure

    base = os.path.join(args.results, f"curve_{args.name}")
    atomic_write(base + ".md", "\n".join(lines).encode("utf-8"))
    atomic_write(base + ".json", json.dumps({"command": args.command, "runs": runs}, indent=1).encode("utf-8"))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for run in runs:
            ds_keys = sorted({k for r in run["evaluations"] for k in r if "/" in k})
            for ds in sorted({k.split("/")[0] for k in ds_keys}):
                label = f"{os.path.basename(run['run'].rstrip('/'))} / {ds}"
                for ax, m in zip(axes, ("mAP", "Acc", "AER")):
                    pts = [(r["total_minutes"], r[f"{ds}/{m}"]) for r in run["evaluations"] if f"{ds}/{m}" in r]
                    if pts:
                        ax.plot(*zip(*pts), marker="o", label=label)
        for ax, m in zip(axes, ("mAP@0.5 (%)", "Acc (%)", "AER (%)")):
            ax.set_xlabel("wall time incl. pretraining (min, 2-core CPU)")
            ax.set_ylabel(m)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, base + ".png", dpi=90)
        print(f"wrote {base}.png")
    except Exception as e:  # plotting is a convenience; the tables are the record
        print(f"no plot: {e}", file=sys.stderr)
    print("\n".join(lines))
    print(f"wrote {base}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
