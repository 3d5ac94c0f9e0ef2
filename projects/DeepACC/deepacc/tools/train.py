"""``train_net.py`` / ``deepacc-train``: Detectron2's command line on either engine.

``--engine auto`` (default) runs on Detectron2 when it is importable, otherwise on the torchvision
engine; ``--engine torchvision`` or ``--engine detectron2`` forces one. It prints which engine runs.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from deepacc.engine import ENGINES, EngineError, choose_engine, engine_config, launch


def default_argument_parser(epilog: str = None) -> argparse.ArgumentParser:
    """Detectron2's ``default_argument_parser`` flags, plus ``--engine``."""
    parser = argparse.ArgumentParser(
        description="Train and evaluate DeepACC with Detectron2's command line, on the Detectron2 engine\n"
        "when it is importable, else on the torchvision engine.",
        epilog=epilog or (
            "Examples:\n  train_net.py --config-file configs/DeepACC_R101_FPN_2x.yaml --num-gpus 8\n"
            "  train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS output/model_final.pth\n"
            "  train_net.py --config-file cfg.yaml --num-gpus 8 --num-machines 2 --machine-rank 1 "
            "--dist-url tcp://HOST0:PORT\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument("--resume", action="store_true",
                        help="resume from OUTPUT_DIR/last_checkpoint if it exists (else load MODEL.WEIGHTS)")
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine (GPUs; on a machine without CUDA, CPU processes using gloo)")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)")
    port = 2 ** 15 + 2 ** 14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2 ** 14
    parser.add_argument("--dist-url", default=f"tcp://127.0.0.1:{port}",
                        help="initialization URL for pytorch distributed backend ('auto' picks a free local port)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="which engine runs the model (auto: Detectron2 when importable)")
    parser.add_argument("--allow-untrained", action="store_true",
                        help="with --eval-only: evaluate even without MODEL.WEIGHTS or with weights that do not fit "
                        "the model (refused otherwise)")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of every error (user mistakes are otherwise one named line, "
                        "exit status 2)")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options at the end of the command, as 'PATH.KEY VALUE' pairs")
    return parser


def preflight(args, engine: str):
    """What can be checked before any process starts: the config (unknown keys, invalid values), that
    ``OUTPUT_DIR`` is writable and, for several processes, the training data (each process of a
    single-process run checks it itself), that ``DATASETS.TRAIN`` / ``TEST`` name registered datasets
    and, for ``--eval-only``, that the weights are a readable file. Raises the user errors that
    :func:`user_error_message` names."""
    from deepacc.tools.checks import check_datasets, check_weights_file, check_writable_dir
    from deepacc.config import check_config, load_config

    cfg = load_config(args.config_file or None, args.opts, engine_config(engine))
    check_config(cfg, args.config_file or "config")
    extra = ()
    if engine == "detectron2":  # names registered in Detectron2's own catalog count too
        from detectron2.data import DatasetCatalog

        extra = DatasetCatalog.list()
    check_datasets(cfg, train=not args.eval_only, test=True, extra_known=extra, source=args.config_file or "config")
    out = str(cfg.OUTPUT_DIR)
    check_writable_dir(out, "OUTPUT_DIR", "OUTPUT_DIR ./output/run1")
    if not args.eval_only:  # training appends to metrics.json: a link there is refused before any process starts
        from deepacc.fileio import refuse_link

        refuse_link(os.path.join(out, "metrics.json"), "metrics file")
    if args.eval_only:
        from deepacc.checkpoint_io import resolve_last_checkpoint

        if not (args.resume and resolve_last_checkpoint(out)):  # --resume evaluates the last checkpoint
            check_weights_file(str(cfg.MODEL.WEIGHTS), getattr(args, "allow_untrained", False),
                               "; --eval-only evaluates these weights")
    if not args.eval_only and args.num_gpus * args.num_machines > 1 and engine == "torchvision":
        from deepacc.data.preflight import check_training_datasets

        check_training_datasets(cfg)
    return cfg


#: ``OUTPUT_DIR`` cannot be created or written (kept here for importers; :mod:`deepacc.tools.checks` raises it).
from deepacc.tools.checks import OutputDirError  # noqa: E402


def user_error_message(exc: BaseException, engine: str) -> Optional[str]:
    """One line (or a short list) for a mistake the user can fix, ``None`` for a bug (traceback)."""
    from deepacc.checkpoint_io import CheckpointError, UntrainedModelError
    from deepacc.config import ConfigError, unknown_key_message
    from deepacc.data.catalog import UnknownDatasetError
    from deepacc.data.coco import DatasetError
    from deepacc.fileio import UnsafeOutputError

    if isinstance(exc, UnsafeOutputError):  # an output path that is a symbolic link: refused
        return str(exc)
    if isinstance(exc, UnknownDatasetError):  # a name that reached the engine unchecked (e.g. a launcher)
        return str(exc)
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or 'no such file'}"
    if isinstance(exc, (ConfigError, CheckpointError, UntrainedModelError, DatasetError, OutputDirError,
                        FileNotFoundError)):
        msg = str(exc)
        if len(msg) > 1 and msg[0] in "'\"" and msg[-1] == msg[0]:  # a KeyError-style quoted message
            msg = msg[1:-1]
        return msg
    if isinstance(exc, (KeyError, AssertionError, ValueError)):  # yacs: unknown key, value of the wrong type
        try:
            return unknown_key_message(exc, engine_config(engine))
        except Exception:  # noqa: BLE001
            return None
    return None


def main(argv=None) -> None:
    args = default_argument_parser().parse_args(argv)
    try:
        engine = choose_engine(args.engine)
    except EngineError as e:
        print(f"train_net.py: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"DeepACC: running on the {engine} engine"
          + (" (Detectron2 not importable)" if args.engine == "auto" and engine == "torchvision" else ""), flush=True)
    try:
        preflight(args, engine)
        launch(engine, args)
    except KeyboardInterrupt:
        print("train_net.py: interrupted; rerun the same command with --resume to continue from the last "
              "checkpoint", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:  # noqa: BLE001  (user mistakes: named, exit 2; anything else: the traceback)
        msg = None if args.debug else user_error_message(e, engine)
        if msg is None:
            raise
        print(f"train_net.py: {msg}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
