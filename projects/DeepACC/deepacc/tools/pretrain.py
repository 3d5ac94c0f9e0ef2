"""``deepacc-pretrain``: in-domain pretraining of the detector's trunk on chromosome crops.

    deepacc-pretrain --config-file configs/gband/DeepACC_R18_gband_cpu.yaml
    deepacc-pretrain --config-file cfg.yaml --epochs 12 --max-minutes 15 --output output/pretrain/gband
    python train_net.py --config-file cfg.yaml MODEL.WEIGHTS output/pretrain/gband/model_pretrained.pth

Crops come from the config's ``DATASETS.TRAIN`` (or ``--train``) and are cut at the detector's input
scale (``INPUT.MIN_SIZE_TRAIN``/``MAX_SIZE_TRAIN``); accuracy is reported on the crops of
``DATASETS.TEST`` (or ``--val``). A training image that also appears in the validation datasets (same
file, or same ``case_id``) is refused. Running the same command again resumes an interrupted run.
See :mod:`deepacc.pretrain`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Dict, List


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepacc-pretrain", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Examples:\n" + __doc__.split("\n\n")[1])
    p.add_argument("--config-file", required=True, metavar="FILE",
                   help="the detector's config: its trunk (MODEL.RESNETS.*), input scale and datasets are used")
    p.add_argument("--output", default="",
                   help="output folder (default: the folder of MODEL.WEIGHTS when it names a model_pretrained.pth, "
                        "else <OUTPUT_DIR>/pretrain)")
    p.add_argument("--train", nargs="+", default=None, metavar="DATASET",
                   help="registered datasets whose crops train the trunk (default: DATASETS.TRAIN)")
    p.add_argument("--val", nargs="*", default=None, metavar="DATASET",
                   help="registered datasets whose crops measure accuracy (default: DATASETS.TEST; none to skip)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training crops (cosine LR schedule)")
    p.add_argument("--batch-size", type=int, default=128, help="crops per SGD step")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (SGD, Nesterov momentum 0.9)")
    p.add_argument("--stop-after", type=int, default=0, metavar="N",
                   help="stop after N epochs of the --epochs-long LR schedule (0: run all epochs); the same "
                        "budget on every machine")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop after the epoch that passes this wall time (0: no limit); what it trains depends "
                        "on the machine's speed (the report says how many epochs ran)")
    p.add_argument("--crop-size", type=int, default=0,
                   help="window side in pixels at detector scale (0: 99th percentile of chromosome length + 15%%)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batch order and augmentation")
    p.add_argument("--precision", choices=("auto", "bfloat16", "float32"), default="auto",
                   help="auto (default): bfloat16 autocast where the CPU has bf16 kernels (AVX-512-BF16/AMX), "
                        "float32 elsewhere (bf16 is emulated there, 12-30x slower)")
    p.add_argument("--no-amp", action="store_true", help="train in float32 whatever the CPU (= --precision float32)")
    p.add_argument("--restart", action="store_true", help="ignore an earlier unfinished run in --output")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, 'KEY VALUE' pairs")
    return p


def default_output(cfg) -> str:
    """Where the trunk goes: the folder of ``MODEL.WEIGHTS`` when the config names a pretrained trunk
    (``.../model_pretrained.pth``, so every row of a recipe finds it), else ``<OUTPUT_DIR>/pretrain``."""
    weights = str(cfg.MODEL.WEIGHTS)
    if weights and "://" not in weights and os.path.basename(weights) == "model_pretrained.pth":
        return os.path.dirname(weights) or "."
    return os.path.join(cfg.OUTPUT_DIR, "pretrain")


def check_disjoint(train: List[Dict], val: List[Dict]) -> List[str]:
    """Problems when a validation image or case also feeds pretraining (it would leak into val)."""
    problems = []
    files = {os.path.abspath(d["file_name"]) for d in train}
    shared = sorted({d["file_name"] for d in val if os.path.abspath(d["file_name"]) in files})
    if shared:
        problems.append(f"{len(shared)} validation image(s) are also training images, e.g. {shared[0]}")
    cases = {str(d["case_id"]) for d in train if d.get("case_id") not in (None, "")}
    shared_cases = sorted({str(d["case_id"]) for d in val if str(d.get("case_id")) in cases})
    if shared_cases:
        problems.append(f"{len(shared_cases)} case(s) appear in both training and validation, e.g. {shared_cases[0]}")
    return problems


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from ..checkpoint_io import CheckpointError
    from ..config import ConfigError, check_config, get_cfg, load_config, unknown_key_message
    from ..data.catalog import DatasetNotPreparedError
    from ..data.coco import DatasetError
    from ..pretrain import PretrainConfig, crop_size_for, cut_crops, pretrain
    from ..tv.dataloader import dataset_dicts
    from ..tv.runtime import setup_logging

    try:
        cfg = load_config(args.config_file, args.opts, get_cfg())
        check_config(cfg, args.config_file)
    except ConfigError as e:
        print(f"deepacc-pretrain: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a user mistake in the file or the overrides
        why = unknown_key_message(e, get_cfg()) or e
        print(f"deepacc-pretrain: cannot read the config {args.config_file}: {why}", file=sys.stderr)
        return 2
    out = args.output or default_output(cfg)
    train_names = list(args.train) if args.train else list(cfg.DATASETS.TRAIN)
    val_names = list(cfg.DATASETS.TEST) if args.val is None else list(args.val)
    # Before anything is read or written: the datasets are registered, the output folder takes files.
    from ..data.catalog import list_datasets, unknown_dataset_message
    from .checks import OutputDirError, check_writable_dir

    problems = []
    if not train_names:
        problems.append(f"no training dataset: DATASETS.TRAIN of {args.config_file} is empty and no --train was given "
                        f"(e.g. --train deepacc_synth_quick_train)")
    for flag, names in (("--train" if args.train else "DATASETS.TRAIN", train_names),
                        ("--val" if args.val is not None else "DATASETS.TEST", val_names)):
        problems += [f"{flag}: dataset {unknown_dataset_message(n)}" for n in names if n not in list_datasets()]
    try:
        check_writable_dir(out, "--output" if args.output else "the output folder", "--output output/pretrain/run1")
    except OutputDirError as e:
        problems.append(str(e))
    from ..fileio import UnsafeOutputError, refuse_link

    for name in ("metrics.json", "log.txt"):  # appended to: a symbolic link there is refused
        try:
            refuse_link(os.path.join(out, name), "metrics file" if name == "metrics.json" else "log file")
        except UnsafeOutputError as e:
            problems.append(str(e))
    if problems:
        print("deepacc-pretrain: " + "\n  ".join(problems), file=sys.stderr)
        return 2
    setup_logging(out)
    log = logging.getLogger("deepacc.pretrain")
    try:
        train_dicts, val_dicts = dataset_dicts(train_names), dataset_dicts(val_names)
    except (DatasetNotPreparedError, DatasetError, KeyError, ValueError) as e:
        print(f"deepacc-pretrain: {e}", file=sys.stderr)
        return 2
    problems = check_disjoint(train_dicts, val_dicts)
    if problems:
        print("deepacc-pretrain: training and validation data overlap:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    min_size, max_size = int(cfg.INPUT.MIN_SIZE_TRAIN[0]), int(cfg.INPUT.MAX_SIZE_TRAIN)
    size = args.crop_size or crop_size_for(train_dicts, min_size, max_size)
    log.info("Cutting %dx%d crops at detector scale (short side %d, long side <= %d) from %s; val: %s.",
             size, size, min_size, max_size, ", ".join(train_names), ", ".join(val_names) or "none")
    polarity = cfg.INPUT.get("POLARITY", "auto")  # the crops as the detector sees its images
    train = cut_crops(train_dicts, min_size, max_size, size, polarity=polarity)
    val = cut_crops(val_dicts, min_size, max_size, size, polarity=polarity) if val_dicts else None
    log.info("%d training crops from %d images, %d validation crops.", len(train), len(train_dicts),
             len(val) if val is not None else 0)
    if args.restart:  # the earlier run's metrics.json is kept, as metrics.json.1 (deepacc.fileio.tidy_output_dir)
        if os.path.lexists(os.path.join(out, "pretrain_last.pth")):
            os.remove(os.path.join(out, "pretrain_last.pth"))
    pc = PretrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        precision="float32" if args.no_amp else args.precision, max_minutes=args.max_minutes,
                        stop_after=args.stop_after)
    meta = {"command": " ".join(["deepacc-pretrain"] + (argv if argv is not None else sys.argv[1:])),
            "config_file": args.config_file, "train_datasets": ",".join(train_names),
            "val_datasets": ",".join(val_names), "input_min_size": min_size, "input_max_size": max_size}
    try:
        report = pretrain(cfg, train, val, pc, out, meta=meta)
    except CheckpointError as e:  # a corrupt pretrain_last.pth of an earlier run
        print(f"deepacc-pretrain: {e} (--restart starts over)", file=sys.stderr)
        return 2
    except UnsafeOutputError as e:  # an output of the folder is a symbolic link: refused
        print(f"deepacc-pretrain: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepacc-pretrain: interrupted; rerun the same command to resume from the last finished epoch",
              file=sys.stderr)
        return 130
    summary = {"checkpoint": os.path.join(out, "model_pretrained.pth"), "epochs_run": report["epochs_run"],
               "val_top1": report.get("val", {}).get("top1"), "val_crops": report["val_crops"],
               "train_crops": report["train_crops"], "epochs": report["epochs"],
               "precision": report["precision"], "minutes": round(report["history"][-1]["elapsed_s"] / 60, 2)
               if report["history"] else 0.0}
    print(json.dumps(summary))
    print(f"Pretrained {summary['epochs_run']} of {summary['epochs']} epochs in {summary['precision']}.")
    print(f"Use it with: MODEL.WEIGHTS {summary['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
