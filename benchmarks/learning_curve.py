#!/usr/bin/env python
"""Learning curves of training runs: validation metrics at every evaluation, as a table and a plot.

Reads each run's ``OUTPUT_DIR/metrics.json`` (written by either engine with ``TEST.EVAL_PERIOD``), its
``config.yaml`` and, when the trunk was pretrained with ``deepacc-pretrain``, that run's
``metrics.json`` too, and writes ``benchmarks/results/curve_<name>.{md,json,png}``:

    python benchmarks/learning_curve.py output/gband/DeepACC_R18 output/gband/faster_rcnn_R18 \\
        --name gband_R18_cpu --command "the commands that made the runs"

Wall time on the x axis of the plot is the training's own (sum of the logged iteration times), plus
the pretraining's when there was one, so runs with and without pretraining compare at equal cost.

The tables show, per data set, the 24-class metrics (:data:`METRICS`) and the class-agnostic ones of
all its images (:data:`AGNOSTIC`: AP50, recall, median absolute count error) where evaluated, so a
data set with only class-agnostic boxes (``bioimlab_val``) has a table too. What each loss term
contributes over training: the logged loss terms (already weighted, as they enter ``total_loss``)
averaged over windows of ``--loss-window`` iterations, with their share of ``total_loss``, as a table
per run and ``curve_<name>_losses.png``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("mAP", "mAP_max", "AER", "Acc", "siamese_local_centre_pct")
#: class-agnostic evaluation keys (after ``<dataset>/``) shown too, with their column titles
AGNOSTIC = {"agnostic/all/AP50": "agnostic AP50", "agnostic/all/recall": "agnostic recall",
            "agnostic/all/count_error_median_abs": "count error (median abs)"}
LOSS_WINDOW = 50


def _is_curve_key(key: str) -> bool:
    """An evaluation key shown in the curves: ``<dataset>/<one of METRICS>`` or ``<dataset>/<AGNOSTIC key>``."""
    return "/" in key and (key.split("/")[-1] in METRICS or key.split("/", 1)[1] in AGNOSTIC)


def loss_windows(train: Dict[int, Dict], window: int = LOSS_WINDOW) -> List[Dict]:
    """Loss terms of the training records ``{iteration: record}`` (one per iteration, as logged)
    averaged over windows of ``window`` iterations: ``[{window: "0-49", first, last, records,
    mean: {loss_*..., total_loss}, share_pct: {loss_*...}}]``, windows without records left out.
    The last window ends at the last logged iteration (it may be shorter). A record without
    ``total_loss`` counts the sum of its terms; a share is the term's mean over the window's mean
    total in % (the logged terms are already weighted as they enter the total, so they add up to it).
    """
    if window < 1:
        raise ValueError(f"loss window must be at least 1 iteration, not {window}")
    its = sorted(it for it, rec in train.items() if "total_loss" in rec or any(k.startswith("loss_") for k in rec))
    out: List[Dict] = []
    if not its:
        return out
    groups: Dict[int, List[Dict]] = {}
    for it in its:
        groups.setdefault(it // window, []).append(train[it])
    for w in sorted(groups):
        recs = groups[w]
        terms = sorted({k for r in recs for k in r if k.startswith("loss_")})
        mean = {}
        for k in terms:
            vals = [float(r[k]) for r in recs if k in r]
            mean[k] = math.fsum(vals) / len(vals)
        totals = [float(r["total_loss"]) if "total_loss" in r else
                  math.fsum(float(v) for k, v in r.items() if k.startswith("loss_")) for r in recs]
        mean["total_loss"] = math.fsum(totals) / len(totals)
        tot = mean["total_loss"]
        share = {k: (100.0 * mean[k] / tot if tot else None) for k in terms}
        first, last = w * window, min((w + 1) * window - 1, its[-1])
        out.append({"window": f"{first}-{last}", "first": first, "last": last, "records": len(recs),
                    "mean": mean, "share_pct": share})
    return out


def loss_table(windows: List[Dict]) -> List[str]:
    """Markdown table of :func:`loss_windows`: per window each term's mean and share of the total."""
    terms = sorted({k for w in windows for k in w["share_pct"]})
    head = "| window | records | " + "".join(f"{t} | {t} % | " for t in terms) + "total_loss |"
    lines = [head, "|---" * (3 + 2 * len(terms)) + "|"]
    for w in windows:
        cells = []
        for t in terms:
            share = w["share_pct"].get(t)
            cells += [f"{w['mean'][t]:.4f}" if t in w["mean"] else "-",
                      f"{share:.1f}" if share is not None else "-"]
        lines.append(f"| {w['window']} | {w['records']} | " + "".join(c + " | " for c in cells)
                     + f"{w['mean']['total_loss']:.4f} |")
    return lines


def read_run(run_dir: str, loss_window: int = LOSS_WINDOW) -> Dict:
    """Evaluations of one run: ``[{iteration, minutes, <dataset>/<metric>...}]`` plus the run's label,
    and its loss terms by window of ``loss_window`` iterations (:func:`loss_windows`)."""
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
            row.update({k: v for k, v in rec.items() if _is_curve_key(k)})
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
    losses = loss_windows({it: rec for (kind, it), rec in seen.items() if kind == "t"}, loss_window)
    return {"run": run_dir, "weights": weights, "pretrain_minutes": pre_min, "evaluations": rows,
            "loss_window": loss_window, "losses": losses}


def plot_losses(runs: List[Dict], plt):
    """One subplot per run: each loss term's (and total_loss's, dashed) windowed mean against the
    window's middle iteration; a log y axis when the plotted values span more than 100x."""
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        wins = run["losses"]
        x = [(w["first"] + w["last"]) / 2.0 for w in wins]
        positive = []
        for t in sorted({k for w in wins for k in w["mean"]}, key=lambda k: (k == "total_loss", k)):
            pts = [(xi, w["mean"][t]) for xi, w in zip(x, wins) if t in w["mean"]]
            ax.plot(*zip(*pts), marker=".", label=t, **({"color": "k", "linestyle": "--"} if t == "total_loss" else {}))
            positive += [v for _, v in pts if v > 0 and math.isfinite(v)]
        if positive and max(positive) > 100 * min(positive):
            ax.set_yscale("log")
        ax.set_title(os.path.basename(run["run"].rstrip("/")), fontsize=9)
        ax.set_xlabel(f"iteration (mean over windows of {run['loss_window']})")
        ax.set_ylabel("loss (weighted, as in total_loss)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="OUTPUT_DIRs of training runs")
    p.add_argument("--name", required=True, help="results name: benchmarks/results/curve_<name>.*")
    p.add_argument("--command", default="", help="the command(s) that made the runs, recorded with the results")
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--loss-window", type=int, default=LOSS_WINDOW, metavar="N",
                   help=f"average the loss terms over windows of N iterations (default {LOSS_WINDOW})")
    args = p.parse_args(argv)
    if args.loss_window < 1:
        p.error(f"--loss-window must be at least 1, not {args.loss_window}")
    runs = [read_run(r, args.loss_window) for r in args.runs]
    lines: List[str] = [f"# Learning curves: {args.name}", ""]
    if args.command:
        lines += ["Made by:", "", "```", args.command, "```", ""]
    window_opt = f" --loss-window {args.loss_window}" if args.loss_window != LOSS_WINDOW else ""
    lines += [f"Tables written {datetime.datetime.now().isoformat(timespec='seconds')} by "
              f"`python benchmarks/learning_curve.py {' '.join(args.runs)} --name {args.name}{window_opt}`.", ""]
    for run in runs:
        ds_keys = sorted({k for r in run["evaluations"] for k in r if "/" in k})
        datasets = sorted({k.split("/")[0] for k in ds_keys})
        lines += [f"## `{run['run']}`", "", f"MODEL.WEIGHTS: `{run['weights'] or '(none: from scratch)'}`; "
                  f"pretraining {run['pretrain_minutes']:.1f} min.", ""]
        for ds in datasets:
            cols = [m for m in (*METRICS, *AGNOSTIC) if f"{ds}/{m}" in ds_keys]
            lines += [f"{ds}:", "", "| iteration | train min | total min | "
                      + " | ".join(AGNOSTIC.get(m, m) for m in cols) + " |",
                      "|---" * (3 + len(cols)) + "|"]
            for r in run["evaluations"]:
                vals = [f"{r[f'{ds}/{m}']:.2f}" if f"{ds}/{m}" in r else "-" for m in cols]
                lines.append(f"| {r['iteration']} | {r['train_minutes']:.1f} | {r['total_minutes']:.1f} | "
                             + " | ".join(vals) + " |")
            lines.append("")
        if run["losses"]:
            lines += [f"Loss terms as logged (weighted, as they enter total_loss), mean over windows of "
                      f"{run['loss_window']} iterations (0-based, the last window may be shorter) and "
                      f"share of total_loss in %:", ""] + loss_table(run["losses"]) + [""]
    from deepacc.fileio import atomic_write, save_figure

    base = os.path.join(args.results, f"curve_{args.name}")
    atomic_write(base + ".md", "\n".join(lines).encode("utf-8"))
    atomic_write(base + ".json", json.dumps({"command": args.command, "loss_window": args.loss_window, "runs": runs},
                                            indent=1).encode("utf-8"))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [("mAP", "mAP@0.5 (%)"), ("Acc", "Acc (%)"), ("AER", "AER (%)")]
        if any(k.split("/", 1)[1] in AGNOSTIC for run in runs for r in run["evaluations"] for k in r if "/" in k):
            panels += [("agnostic/all/AP50", "class-agnostic AP50 (%)"),
                       ("agnostic/all/recall", "class-agnostic recall (%)"),
                       ("agnostic/all/count_error_median_abs", "count error, median |found - annotated|")]
        fig, axes = plt.subplots(len(panels) // 3, 3, figsize=(15, 4 * (len(panels) // 3)))
        axes = list(axes.ravel())
        line = 0  # one colour per run and data set in every panel, whichever panels it has points in
        for run in runs:
            ds_keys = sorted({k for r in run["evaluations"] for k in r if "/" in k})
            for ds in sorted({k.split("/")[0] for k in ds_keys}):
                label = f"{os.path.basename(run['run'].rstrip('/'))} / {ds}"
                for ax, (m, _) in zip(axes, panels):
                    pts = [(r["total_minutes"], r[f"{ds}/{m}"]) for r in run["evaluations"] if f"{ds}/{m}" in r]
                    if pts:
                        ax.plot(*zip(*pts), marker="o", label=label, color=f"C{line % 10}")
                line += 1
        for ax, (_, m) in zip(axes, panels):
            ax.set_xlabel("wall time incl. pretraining (min, 2-core CPU)")
            ax.set_ylabel(m)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        if len(axes) > 3:  # a data set with class-agnostic boxes only has no line in the mAP panel
            axes[3].legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, base + ".png", dpi=90)
        plt.close(fig)
        print(f"wrote {base}.png")
    except Exception as e:  # plotting is a convenience; the tables are the record
        print(f"no plot: {e}", file=sys.stderr)
    with_losses = [run for run in runs if run["losses"]]
    if with_losses:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig = plot_losses(with_losses, plt)
            save_figure(fig, base + "_losses.png", dpi=90)
            plt.close(fig)
            print(f"wrote {base}_losses.png")
        except Exception as e:
            print(f"no loss plot: {e}", file=sys.stderr)
    print("\n".join(lines))
    print(f"wrote {base}.{{md,json}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
