#!/usr/bin/env python
"""Scale-aware resizing vs the usual resize on spreads re-rendered at other magnifications.

The G-band validation cells are composed again (``datasets/prepare_gband_cells.py``, same crops, same
seed) on canvases of ``W/m x H/m`` for each magnification ``m``: the chromosomes keep their pixel size
while the field of view shrinks (``m > 1``: a closer view, as in a crop around one spread) or grows
(``m < 1``: a wide frame). With the usual rule (short side to ``INPUT.MIN_SIZE_TEST``) the model then
sees chromosomes ``m`` times their training size; scale-aware resizing brings them back, and framed
statistics keep the per-image normalisation independent of the frame. Each trained model is evaluated
on every magnification three ways: ``usual``, ``resize`` (scale-aware resize, whole-image
statistics) and ``resize+stats`` (the default: scale-aware resize and framed statistics); one table
(mAP, mAP_max, Acc, AER, the median input factor and chromosome size the model saw) is written to
``<out>.md`` / ``.json``:

    python benchmarks/magnification.py --src ../shared/data/gband_cells \\
        --model f=configs/gband/DeepACC_R18_gband_cpu.yaml:output/gband/DeepACC_R18/model_final.pth \\
        --mags 0.5,0.75,1,1.5,2 --out benchmarks/results/magnification_gband
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trained_models import add_model_argument  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compose(src: str, root: str, m: float, size=(1280, 960), seed: int = 0) -> str:
    """The val split composed on a ``W/m x H/m`` canvas under ``root``; returns its json."""
    w, h = int(round(size[0] / m)), int(round(size[1] / m))
    out = os.path.join(root, f"m{m:g}")
    js = os.path.join(out, "annotations", "val.json")
    if not os.path.isfile(js):
        subprocess.run([sys.executable, os.path.join(REPO, "datasets", "prepare_gband_cells.py"), "--src", src,
                        "--out", out, "--size", f"{w}x{h}", "--seed", str(seed), "--only", "val", "--workers", "2"],
                       check=True, stdout=subprocess.DEVNULL)
    return js


MODES = {"usual": ("False", "False"), "resize": ("True", "False"), "resize+stats": ("True", "True")}


def evaluate(config: str, weights: str, dataset: str, mode: str, reference: Dict[str, float]) -> Dict:
    import torch
    from tqdm import tqdm

    from deepacc.config import load_config, method_of
    from deepacc.evaluation import MetaphaseEvaluator
    from deepacc.modeling.prediction import to_prediction
    from deepacc.precision import amp_dtype, autocast_to
    from deepacc.tv.checkpoint import AtomicCheckpointer
    from deepacc.tv.dataloader import build_test_loader, dataset_dicts
    from deepacc.tv.evaluation import scale_of
    from deepacc.tv.model import build_model

    enabled, framed = MODES[mode]
    cfg = load_config(config, ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu", "INPUT.SCALE_AWARE.ENABLED", enabled,
                               "INPUT.SCALE_AWARE.FRAMED_STATS", framed,
                               "INPUT.SCALE_AWARE.REFERENCE_SIZE", str(reference["size"]),
                               "INPUT.SCALE_AWARE.REFERENCE_FRAME", str(reference["frame"])])
    model = build_model(cfg).eval()
    AtomicCheckpointer(model).load(weights, checkpointables=[])
    dicts = dataset_dicts([dataset])
    ev = MetaphaseEvaluator(dicts, output_dir=None, distributed=False, save_plot=False,
                            extra_copy_cost=float(cfg.TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST)
                            if cfg.TEST.DEEPACC.ASSIGNMENT.ENABLED else None, method=method_of(cfg))
    dtype = amp_dtype(cfg, "cpu")
    factors, sizes = [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in tqdm(build_test_loader(cfg, dicts), desc=f"{dataset} {mode}",
                          mininterval=15):
            scales = [scale_of(b[2]) for b in batch]
            with autocast_to("cpu", dtype):
                dets = model([b[0] for b in batch], scales=scales)
            ev.process([to_prediction(d, b[2]["image_id"]) for d, b in zip(dets, batch)])
            for b, s in zip(batch, scales):
                hh, ww = b[0].shape[-2:]
                f = s if s is not None else min(cfg.INPUT.MIN_SIZE_TEST / min(hh, ww), cfg.INPUT.MAX_SIZE_TEST / max(hh, ww))
                factors.append(f)
                info = b[2].get("input_scale") or {}
                if info.get("chromosome_size"):
                    sizes.append(info["chromosome_size"] * f)
    with contextlib.redirect_stdout(io.StringIO()):
        res = ev.evaluate()
    return {"mAP": res["mAP"], "mAP_max": res["mAP_max"], "Acc": res["Acc"], "AER": res["AER"],
            "FN": res["FN"], "calls": res["num_dets"], "median_factor": float(np.median(factors)),
            "median_chromosome_px_at_model": float(np.median(sizes)) if sizes else None,
            "seconds": time.perf_counter() - t0}


def _fmt(v):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.2f}" if isinstance(v, float) else str(v))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="the gband_cells source folder (crops per cell)")
    add_model_argument(ap)
    ap.add_argument("--mags", default="0.5,0.75,1,1.5,2", help="magnifications (comma-separated)")
    ap.add_argument("--root", default=os.path.join(REPO, "output", "magnification"),
                    help="where the re-rendered datasets are written")
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "magnification_gband"),
                    help="output prefix (.md, .json)")
    a = ap.parse_args(argv)
    from deepacc.config import load_config
    from deepacc.data.catalog import list_datasets, register_coco_dataset
    from deepacc.data.scale import apply_reference, stored_reference, training_files

    mags = [float(x) for x in a.mags.split(",")]
    names = {}
    for m in mags:
        js = compose(a.src, a.root, m)
        name = f"gband_cells_val_m{m:g}"
        if name not in list_datasets():
            register_coco_dataset(name, js, os.path.dirname(os.path.dirname(js)))
        names[m] = name
    rows: List[Dict] = []
    for row_name, config, weights in a.model:
        cfg = load_config(config, ["MODEL.WEIGHTS", weights])
        apply_reference(cfg, stored_reference(weights), training_files(cfg))
        reference = {"size": float(cfg.INPUT.SCALE_AWARE.REFERENCE_SIZE), "frame": float(cfg.INPUT.SCALE_AWARE.REFERENCE_FRAME)}
        print(f"{row_name}: reference chromosome size {reference['size']:.2f} px (model input), frame "
              f"{reference['frame']:.0f}", flush=True)
        for m in mags:
            for mode in MODES:
                r = evaluate(config, weights, names[m], mode, reference)
                rows.append({"model": row_name, "magnification": m, "resize": mode,
                             "reference_px": reference["size"], "reference_frame": reference["frame"], **r})
                print(json.dumps(rows[-1]), flush=True)
    cols = [("model", "model"), ("magnification", "magnification"), ("resize", "resize"), ("mAP", "mAP(%)"),
            ("mAP_max", "mAP_max(%)"), ("Acc", "Acc(%)"), ("AER", "AER(%)"), ("calls", "calls"), ("FN", "FN"),
            ("median_factor", "median factor"), ("median_chromosome_px_at_model", "chromosome px at the model")]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |", "|" + "---:|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k, _ in cols) + " |" for r in rows]
    cmd = "python benchmarks/magnification.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = f"Command: `{cmd}`\n\nReference chromosome size (model input px): " + ", ".join(
        f"{r['model']} {r['reference_px']:.2f} (frame {r['reference_frame']:.0f})" for r in rows[:: len(MODES) * len(mags)]) + "\n\n" + "\n".join(lines) + "\n"
    from deepacc.fileio import atomic_write

    atomic_write(a.out + ".md", md.encode("utf-8"))
    atomic_write(a.out + ".json", json.dumps({"command": cmd, "rows": rows}, indent=1).encode("utf-8"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
