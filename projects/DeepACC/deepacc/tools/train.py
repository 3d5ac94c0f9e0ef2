"""``train_net.py`` / ``deepacc-train``: Detectron2's command line on either engine.

``--engine auto`` (default) runs on Detectron2 when it is importable, otherwise on the torchvision
engine; ``--engine torchvision`` or ``--engine detectron2`` forces one. It prints which engine runs.
"""
from __future__ import annotations

import argparse
import os
import sys


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
    parser.add_argument("--engine", choices=["auto", "detectron2", "torchvision"], default="auto",
                        help="which engine runs the model (auto: Detectron2 when importable)")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options at the end of the command, as 'PATH.KEY VALUE' pairs")
    return parser


def detectron2_available() -> bool:
    try:
        import detectron2  # noqa: F401
        from detectron2.modeling import ROI_HEADS_REGISTRY  # noqa: F401
    except Exception:
        return False
    return True


def choose_engine(requested: str) -> str:
    if requested == "auto":
        return "detectron2" if detectron2_available() else "torchvision"
    if requested == "detectron2" and not detectron2_available():
        raise SystemExit("--engine detectron2: Detectron2 is not importable. Install it "
                         "(see README, 'Detectron2 engine') or use --engine torchvision.")
    return requested


def main(argv=None) -> None:
    args = default_argument_parser().parse_args(argv)
    engine = choose_engine(args.engine)
    print(f"DeepACC: running on the {engine} engine"
          + (" (Detectron2 not importable)" if args.engine == "auto" and engine == "torchvision" else ""), flush=True)
    if engine == "detectron2":
        from deepacc.d2.train_net import launch_main
    else:
        from deepacc.tv.train import launch_main
    try:
        launch_main(args)
    except FileNotFoundError as e:  # a missing MODEL.WEIGHTS, config or dataset: one named line, not a traceback
        raise SystemExit(f"train_net.py: {e}") from None


if __name__ == "__main__":
    main()
