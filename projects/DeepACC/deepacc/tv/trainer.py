"""The torchvision engine's training: the loop (:class:`Trainer`), one process's run (:func:`main`:
training, or ``--eval-only``) and its launch over processes / machines (:func:`launch_main`, what
``train_net.py --engine torchvision`` calls through :func:`deepacc.engine.launch`).

SGD with momentum and weight decay, linear warm-up then multi-step decay (:mod:`.optim`), mixed
precision on CPU (bf16) and GPU, fvcore checkpointing with atomic writes, ``--resume`` at the exact
iteration (the data stream is replayed from that iteration), periodic evaluation (:mod:`.evaluation`),
metrics as JSON lines and TensorBoard (:mod:`.metrics`), a progress bar with ETA, and DDP across
processes / machines.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Dict, Optional

import torch
from fvcore.common.checkpoint import PeriodicCheckpointer
from torch import nn
from tqdm import tqdm

from ..checkpoint_io import check_resume_start, load_weights_to_evaluate
from ..config import dump_config, resolve_epoch_schedule
from ..data.preflight import check_training_datasets
from ..data.scale import CHECKPOINT_KEY as SCALE_KEY
from ..data.scale import FRAME_KEY, apply_reference, training_files, training_reference
from ..fileio import tidy_output_dir
from ..precision import autocast_to, needs_grad_scaler, resolve_precision
from ..solver import clip_gradients
from . import comm
from .checkpoint import AtomicCheckpointer
from .dataloader import build_train_loader
from .evaluation import test
from .launch import launch
from .metrics import MetricsWriter, flatten_results
from .model import build_model, is_imagenet_weights, load_imagenet_backbone
from .optim import build_lr_scheduler, build_optimizer
from .runtime import resolve_device, seed_all, setup_logging

logger = logging.getLogger("deepacc")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, clip_cfg,
               batch, device: torch.device, iteration: int = -1,
               amp_dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """One SGD iteration on a mapped batch: forward with losses (autocast in ``amp_dtype`` when given;
    ``scaler`` scales float16 losses and is disabled otherwise), a finite-loss check, backward,
    ``SOLVER.CLIP_GRADIENTS`` and the optimiser step. Returns the loss dict."""
    images = [b[0].to(device, non_blocking=True) for b in batch]
    targets = [{k: v.to(device) for k, v in b[1].items()} for b in batch]
    with autocast_to(device.type, amp_dtype):
        loss_dict = model(images, targets)
    losses = sum(loss_dict.values())
    if not torch.isfinite(losses):
        raise FloatingPointError(f"Loss became infinite or NaN at iteration {iteration}: "
                                 f"{ {k: float(v) for k, v in loss_dict.items()} }")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses).backward()
    if clip_cfg.ENABLED:
        scaler.unscale_(optimizer)
        clip_gradients(model.parameters(), clip_cfg)
    scaler.step(optimizer)
    scaler.update()
    return loss_dict


class Trainer:
    """Builds model, optimiser, scheduler, data and checkpointer from a config and runs training."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.device = resolve_device(cfg)
        # DATASETS.CHECK: every training image decoded before the first iteration (deepacc.data.preflight)
        self.train_dicts = check_training_datasets(cfg)
        self.scale_state = training_reference(cfg, [d["file_name"] for d in self.train_dicts])
        resolve_epoch_schedule(cfg, len(self.train_dicts))
        model = build_model(cfg)
        if cfg.MODEL.RESNETS.NORM == "SyncBN" and comm.get_world_size() > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.precision = resolve_precision(cfg, self.device.type)  # logs the choice and why
        self.amp_dtype = self.precision.dtype
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(cfg, self.device.type))
        self.checkpointer = AtomicCheckpointer(self.model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(),
                                               optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler)
        self.checkpointer.extra_state = dict(self.scale_state)  # the scale-aware reference, in every checkpoint
        self.ddp = self.model
        if comm.get_world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids, broadcast_buffers=False,
                                                           find_unused_parameters=False)
        self.start_iter = 0
        self.resumed = False  # set by resume_or_load: continuing a run from its checkpoint
        self.max_iter = int(cfg.SOLVER.MAX_ITER)

    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from ``OUTPUT_DIR/last_checkpoint`` (with optimiser, scheduler, iteration) when
        ``resume`` and one exists; otherwise load ``MODEL.WEIGHTS`` (a checkpoint path, or an
        ImageNet alias such as ``detectron2://ImageNetPretrained/MSRA/R-101.pkl`` which this engine
        reads as torchvision's ImageNet ResNet weights)."""
        weights = str(self.cfg.MODEL.WEIGHTS)
        if resume and self.checkpointer.has_checkpoint():
            ckpt = self.checkpointer.resume_or_load(weights, resume=True)
            self.start_iter = int(ckpt.get("iteration", -1)) + 1
            self.resumed = True
            stored = {k: ckpt[k] for k in (SCALE_KEY, FRAME_KEY) if ckpt.get(k)}
            if stored and stored != self.scale_state:
                logger.warning("Scale-aware reference: the checkpoint says %s, the training images now give %s; "
                               "keeping the checkpoint's.", stored, self.scale_state)
                self.cfg.INPUT.SCALE_AWARE.REFERENCE_SIZE = float(stored.get(SCALE_KEY, 0.0))
                self.cfg.INPUT.SCALE_AWARE.REFERENCE_FRAME = float(stored.get(FRAME_KEY, 0.0))
                self.scale_state = dict(stored)
                self.checkpointer.extra_state = dict(stored)
            logger.info("Resuming from %s at iteration %d.", self.checkpointer.get_checkpoint_file(), self.start_iter)
        elif weights and is_imagenet_weights(weights):
            load_imagenet_backbone(self.model, self.cfg)
        elif weights:
            if not os.path.isfile(weights):
                raise FileNotFoundError(
                    f"MODEL.WEIGHTS {weights!r}: no such file. A recipe that starts from an in-domain pretrained "
                    f"trunk makes it first with: deepacc-pretrain --config-file <the same config>")
            self.checkpointer.load(weights, checkpointables=[])

    def train(self) -> Dict[str, Dict]:
        """Iterate from ``start_iter`` to ``SOLVER.MAX_ITER`` with periodic checkpoints, metrics and
        evaluation (every ``TEST.EVAL_PERIOD`` and at the end); returns the last evaluation's results."""
        cfg = self.cfg
        main = comm.is_main_process()
        if self.start_iter >= self.max_iter:
            logger.info("Training already finished (iteration %d of %d).", self.start_iter, self.max_iter)
            return test(cfg, self.model, self.device) if cfg.DATASETS.TEST else {}
        loader = build_train_loader(cfg, self.train_dicts, start_iter=self.start_iter)
        periodic = PeriodicCheckpointer(self.checkpointer, int(cfg.SOLVER.CHECKPOINT_PERIOD), max_iter=self.max_iter)
        if main:
            tidy_output_dir(cfg.OUTPUT_DIR, self.start_iter, resumed=self.resumed)  # before the writer opens it
        writer = MetricsWriter(cfg.OUTPUT_DIR) if main else None
        clip = cfg.SOLVER.CLIP_GRADIENTS
        eval_period = int(cfg.TEST.EVAL_PERIOD)
        logger.info("Training %d images from iteration %d to %d on %s (%d process(es)).", len(self.train_dicts),
                    self.start_iter, self.max_iter, self.device, comm.get_world_size())
        bar = tqdm(total=self.max_iter, initial=self.start_iter, desc="train", disable=not main, dynamic_ncols=True)
        results: Dict[str, Dict] = {}
        data_iter = iter(loader)
        self.ddp.train()
        t_last = time.perf_counter()
        for it in range(self.start_iter, self.max_iter):
            t0 = time.perf_counter()
            batch = next(data_iter)
            data_time = time.perf_counter() - t0
            loss_dict = train_step(self.ddp, self.optimizer, self.scaler, clip, batch, self.device, it, self.amp_dtype)
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            periodic.step(it)  # saves model_{it:07d}.pth every CHECKPOINT_PERIOD and model_final at the end

            if (it + 1) % 20 == 0 or it == self.start_iter or it + 1 == self.max_iter:
                scalars = comm.reduce_dict_mean({k: float(v.detach()) for k, v in loss_dict.items()})
                now = time.perf_counter()
                scalars.update(total_loss=sum(scalars.values()), lr=lr, data_time=data_time, time=now - t_last)
                t_last = now
                if main:
                    writer.write(it, {**scalars, "precision": self.precision.name})
                    bar.set_postfix(loss=f"{scalars['total_loss']:.3f}", lr=f"{lr:.2g}")
            bar.update(1)
            last = it + 1 == self.max_iter
            if cfg.DATASETS.TEST and ((eval_period > 0 and (it + 1) % eval_period == 0) or last):
                results = test(cfg, self.model, self.device)
                if main:
                    writer.write(it, flatten_results(results))
                self.ddp.train()
        bar.close()
        if writer is not None:
            writer.close()
        per_epoch = max(1, -(-len(self.train_dicts) // int(cfg.SOLVER.IMS_PER_BATCH)))
        logger.info("Trained iterations %d-%d of %d (%.2f epochs of %d training images) in %s.", self.start_iter,
                    self.max_iter, self.max_iter, self.max_iter / per_epoch, len(self.train_dicts), self.precision)
        comm.synchronize()
        return results


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
