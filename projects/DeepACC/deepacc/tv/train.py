"""Entry point of the torchvision engine (``train_net.py --engine torchvision``): one process's run
(:func:`main`: training, or ``--eval-only``) and its launch over processes / machines."""
from __future__ import annotations

import logging
from typing import Dict

import torch

from ..checkpoint_io import check_resume_start, load_weights_to_evaluate
from ..data.scale import apply_reference, training_files
from ..config import dump_config
from . import comm
from .checkpoint import AtomicCheckpointer
from .evaluation import test
from .launch import launch
from .model import build_model
from .runtime import resolve_device, seed_all, setup_logging
from .trainer import Trainer

logger = logging.getLogger("deepacc")


def main(args) -> Dict:
    """Entry point of one process (called directly or by :func:`~deepacc.tv.launch.launch`)."""
    from ..config import check_config, get_cfg, load_config

    cfg = load_config(args.config_file, args.opts, get_cfg())
    check_config(cfg, args.config_file or "config")
    setup_logging(cfg.OUTPUT_DIR)
    seed = seed_all(int(cfg.SEED))
    _dump_config(cfg)
    logger.info("Engine: torchvision %s, torch %s; seed %d; config %s", __import__("torchvision").__version__,
                torch.__version__, seed, args.config_file)
    if args.eval_only:
        device = resolve_device(cfg)
        model = build_model(cfg).to(device)
        _, extra = load_weights_to_evaluate(AtomicCheckpointer(model, cfg.OUTPUT_DIR), cfg.MODEL.WEIGHTS,
                                            args.resume, getattr(args, "allow_untrained", False))
        apply_reference(cfg, extra, training_files(cfg))
        return test(cfg, model, device)
    if args.resume:  # a bad last_checkpoint is named now, not after the data check and the model build
        check_resume_start(cfg.OUTPUT_DIR)
    trainer = Trainer(cfg)
    # again: with what the trainer measured (INPUT.SCALE_AWARE.REFERENCE_*) and the precision it chose
    _dump_config(cfg, trainer.precision)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def _dump_config(cfg, precision=None) -> None:
    if comm.is_main_process():
        dump_config(cfg, cfg.OUTPUT_DIR, precision)


def launch_main(args) -> None:
    """:func:`main` in ``--num-gpus`` processes on each of ``--num-machines`` machines."""
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
