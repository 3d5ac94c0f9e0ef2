#!/usr/bin/env python
"""Do two revisions of the project give the same outputs? Byte for byte, on one trained model.

For a restructuring (code moved, nothing meant to change) the proof that behaviour stayed the same is
that every output is identical. This runs the code of two git revisions side by side on the same
inputs, each from its own ``git worktree`` (the data root, the inputs and the weights are this
checkout's), and compares what they write:

* ``configs``: every YAML under the revision's ``configs/`` as its loader reads it (the torchvision
  defaults, and Detectron2's when Detectron2 is importable), dumped;
* ``predict``: ``deepacc-predict`` on ``--inputs`` with ``--config``/``--weights`` (per-image JSON,
  summary, overlay and karyogram PNGs, ``karyotypes.csv``; ``report.html`` with ``--report``);
* ``eval``: ``deepacc-eval --predict-dir`` of those predictions against ``--gt`` (its metrics file and its
  printed tables);
* ``eval_only``: ``train_net.py --eval-only`` of the same weights on the config's test sets (the metrics
  files and the printed tables).

Every file is compared byte for byte; a JSON file that differs is also compared key by key, and the
keys that differ are listed (with both values, shortened), so an intended change (a renamed label, a
new metric) is told apart from an accident at a glance. Logs are not compared (they hold times);
the tables printed to them are.

    python benchmarks/same_outputs.py --before cd7d8f4 --after HEAD \\
        --config configs/quick/DeepACC_R18_synth_cpu.yaml \\
        --weights output/quick/DeepACC_R18_synth_cpu/model_final.pth \\
        --inputs datasets/deepacc_synth_quick/val --gt datasets/deepacc_synth_quick/annotations/val.json \\
        --out benchmarks/results/same_outputs_quick

Writes ``<out>.md`` (the command, the revisions, a table per output kind, the differing keys) and
``<out>.json``; the outputs themselves stay under ``<out>_runs/<revision>/`` (not committed).
Exit status 0 when everything is identical, 1 when something differs, 2 for a usage error.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The code each revision runs to dump its configs (its own loader, its own configs/ folder).
DUMP_CONFIGS = r"""
import glob, os, sys
from deepacc.config import load_config
from deepacc.fileio import atomic_write
tree, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
loaders = [("tv", None)]
try:
    import detectron2  # noqa: F401
    from deepacc.d2.config import get_cfg as d2_get_cfg
    loaders.append(("d2", d2_get_cfg))
except ImportError:
    pass
root = os.path.join(tree, "configs")
for path in sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)):
    name = os.path.relpath(path, root).replace(os.sep, "__")
    for engine, base in loaders:
        text = load_config(path, None, base() if base else None).dump()
        atomic_write(os.path.join(out, engine + "__" + name), text.encode())
"""


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", REPO, *args], check=True, capture_output=True, text=True).stdout.strip()


def table_lines(text: str) -> str:
    """The markdown tables a run printed (lines starting with ``|``): what a user reads, without times."""
    return "\n".join(line for line in text.splitlines() if line.startswith("|")) + "\n"


def run_revision(tree: str, out: str, args) -> Dict[str, Any]:
    """Run the four jobs with the code of ``tree``; returns ``{job: {"rc": exit status, "wall_s": seconds}}``."""
    from deepacc.fileio import atomic_write

    if os.path.isdir(out):  # a fresh run: deepacc-predict would skip images whose outputs exist
        shutil.rmtree(out)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(tree, "projects", "DeepACC")]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    os.makedirs(out, exist_ok=True)
    weights = ["MODEL.WEIGHTS", args.weights, "MODEL.DEVICE", "cpu"]
    jobs = {
        "configs": [sys.executable, "-c", DUMP_CONFIGS, tree, os.path.join(out, "configs")],
        "predict": [sys.executable, "-m", "deepacc.tools.predict", "--config-file", args.config, "--engine", args.engine,
                    "--input", args.inputs, "--output", os.path.join(out, "predict"), "--no-progress"]
                   + (["--report"] if args.report else []) + weights,
        "eval": [sys.executable, "-m", "deepacc.tools.eval", "--gt", args.gt, "--predict-dir", os.path.join(out, "predict"),
                 "--config-file", args.config, "--output", os.path.join(out, "eval")],
        "eval_only": [sys.executable, os.path.join(tree, "train_net.py"), "--engine", args.engine, "--config-file",
                      args.config, "--eval-only"] + weights + ["OUTPUT_DIR", os.path.join(out, "eval_only")],
    }
    status = {}
    for job, cmd in jobs.items():
        if job not in args.jobs or (job == "eval" and "predict" not in args.jobs):
            continue
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        status[job] = {"rc": proc.returncode, "wall_s": round(time.perf_counter() - t, 1)}
        atomic_write(os.path.join(out, f"{job}.log"), (proc.stdout + proc.stderr).encode())
        if job in ("eval", "eval_only"):
            # the tables as printed: deepacc-eval prints to stdout, the engines log to stderr
            atomic_write(os.path.join(out, f"{job}_tables.txt"), table_lines(proc.stdout + "\n" + proc.stderr).encode())
        if proc.returncode != 0:
            print(f"same_outputs: {job} of {tree} exited {proc.returncode}; its log: {out}/{job}.log", file=sys.stderr)
    return status


def _files(root: str) -> Dict[str, str]:
    out = {}
    for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
        rel = os.path.relpath(path, root)
        if os.path.isfile(path) and not rel.endswith(".log") and not os.path.basename(rel).startswith("."):
            if rel.split(os.sep)[0] == "eval_only" and os.path.basename(rel) in ("log.txt", "config.yaml"):
                continue  # a log, and a dump of the run's config that names its own OUTPUT_DIR
            out[rel] = path
    return out


def json_differences(a: Any, b: Any, prefix: str = "", limit: int = 40) -> List[Tuple[str, str, str]]:
    """``(key path, value before, value after)`` of every leaf that differs (at most ``limit``)."""
    found: List[Tuple[str, str, str]] = []

    def short(v: Any) -> str:
        s = json.dumps(v, sort_keys=True)
        return s if len(s) <= 60 else s[:57] + "..."

    def walk(x: Any, y: Any, path: str) -> None:
        if len(found) >= limit:
            return
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str):
                p = f"{path}.{k}" if path else str(k)
                if k not in x:
                    found.append((p, "(absent)", short(y[k])))
                elif k not in y:
                    found.append((p, short(x[k]), "(absent)"))
                else:
                    walk(x[k], y[k], p)
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (u, v) in enumerate(zip(x, y)):
                walk(u, v, f"{path}[{i}]")
        elif json.dumps(x, sort_keys=True) != json.dumps(y, sort_keys=True):
            found.append((path, short(x), short(y)))

    walk(a, b, prefix)
    return found


def compare(before: str, after: str) -> Dict[str, Any]:
    """Per output kind (the first folder of each file): identical / differing / only on one side."""
    fa, fb = _files(before), _files(after)
    kinds: Dict[str, Dict[str, Any]] = {}
    for rel in sorted(set(fa) | set(fb)):
        kind = rel.split(os.sep)[0] if os.sep in rel else os.path.splitext(rel)[0]
        k = kinds.setdefault(kind, {"identical": 0, "different": [], "only_before": [], "only_after": []})
        if rel not in fb:
            k["only_before"].append(rel)
        elif rel not in fa:
            k["only_after"].append(rel)
        else:
            with open(fa[rel], "rb") as x, open(fb[rel], "rb") as y:
                da, db = x.read(), y.read()
            if da == db:
                k["identical"] += 1
                continue
            entry: Dict[str, Any] = {"file": rel}
            if rel.endswith(".json"):
                try:
                    entry["keys"] = json_differences(json.loads(da), json.loads(db))
                except ValueError:
                    pass
            k["different"].append(entry)
    return kinds


def report(cmd: str, revs: Mapping[str, str], status: Mapping[str, Any], kinds: Mapping[str, Any]) -> str:
    lines = ["# Same outputs before and after", "", "Made by:", "", "```", cmd, "```", ""]
    lines += [f"- {side}: `{rev}`" for side, rev in revs.items()]
    lines += ["", "Jobs (exit status, wall time):", ""]
    for side, st in status.items():
        lines.append(f"- {side}: " + ", ".join(f"{j} rc {s['rc']} ({s['wall_s']} s)" for j, s in st.items()))
    lines += ["", "| output | identical files | different | only before | only after |", "|---|---:|---:|---:|---:|"]
    for kind, k in kinds.items():
        lines.append(f"| {kind} | {k['identical']} | {len(k['different'])} | {len(k['only_before'])} | "
                     f"{len(k['only_after'])} |")
    for kind, k in kinds.items():
        if not (k["different"] or k["only_before"] or k["only_after"]):
            continue
        lines += ["", f"## {kind}", ""]
        for e in k["different"]:
            lines.append(f"- `{e['file']}` differs" + (":" if e.get("keys") else ""))
            for key, x, y in e.get("keys", []):
                lines.append(f"  - `{key}`: `{x}` -> `{y}`")
        lines += [f"- only before: `{f}`" for f in k["only_before"]]
        lines += [f"- only after: `{f}`" for f in k["only_after"]]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision of before (e.g. a commit)")
    parser.add_argument("--after", default="HEAD", help="git revision of after (default HEAD)")
    parser.add_argument("--config", required=True, help="config file (of this checkout) of the model")
    parser.add_argument("--weights", required=True, help="trained checkpoint")
    parser.add_argument("--inputs", required=True, help="image folder for deepacc-predict")
    parser.add_argument("--gt", required=True, help="COCO ground truth of the inputs, for deepacc-eval")
    parser.add_argument("--engine", default="torchvision", choices=("torchvision", "detectron2"))
    parser.add_argument("--report", action="store_true", help="deepacc-predict --report too (report.html compared)")
    parser.add_argument("--jobs", nargs="+", default=["configs", "predict", "eval", "eval_only"],
                        choices=("configs", "predict", "eval", "eval_only"), help="which jobs to run (default all)")
    parser.add_argument("--out", default="benchmarks/results/same_outputs", help="output prefix (PREFIX.md, PREFIX.json)")
    args = parser.parse_args(argv)
    problems = [f"--{what} {path}: no such {kind}" for what, path, kind in
                (("config", args.config, "file"), ("weights", args.weights, "file"), ("inputs", args.inputs, "folder"),
                 ("gt", args.gt, "file")) if not os.path.exists(path)]
    try:
        revs = {"before": git("rev-parse", "--short", args.before), "after": git("rev-parse", "--short", args.after)}
    except subprocess.CalledProcessError as e:
        problems.append(f"not a revision of this repository: {e.stderr.strip()}")
    if problems:
        print("same_outputs: " + "; ".join(problems), file=sys.stderr)
        return 2
    sys.path.insert(0, os.path.join(REPO, "projects", "DeepACC"))
    from deepacc.fileio import atomic_write

    runs = os.path.abspath(args.out + "_runs")
    status: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="same_outputs_") as tmp:
        for side, rev in revs.items():
            tree = os.path.join(tmp, side)
            git("worktree", "add", "--detach", tree, rev)
            try:
                status[side] = run_revision(tree, os.path.join(runs, side), args)
            finally:
                git("worktree", "remove", "--force", tree)
    kinds = compare(os.path.join(runs, "before"), os.path.join(runs, "after"))
    cmd = "python benchmarks/same_outputs.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    text = report(cmd, revs, status, kinds)
    atomic_write(args.out + ".md", text.encode())
    atomic_write(args.out + ".json", json.dumps({"command": cmd, "revisions": revs, "status": status, "outputs": kinds},
                                                indent=1, sort_keys=True).encode())
    print(text)
    same = all(not (k["different"] or k["only_before"] or k["only_after"]) for k in kinds.values())
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
