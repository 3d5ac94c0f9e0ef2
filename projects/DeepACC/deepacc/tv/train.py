"""Training and evaluation loop of the torchvision engine.

SGD with momentum and weight decay, linear warm-up then multi-step decay (fvcore param schedulers),
mixed precision on CPU (bf16) and GPU, fvcore checkpointing with atomic writes, ``--resume`` at the exact iteration (the data
stream is replayed from that iteration), periodic evaluation, metrics as JSON lines (and TensorBoard
when installed), a progress bar with ETA, and DDP across processes / machines.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from fvcore.common.checkpoint import PeriodicCheckpointer
from fvcore.common.param_scheduler import MultiStepParamScheduler
from torch import nn
from tqdm import tqdm

from ..checkpoint_io import check_loaded_weights
from ..config import resolve_epoch_schedule
from ..data.preflight import check_training_datasets
from ..data.scale import CHECKPOINT_KEY as SCALE_KEY
from ..data.scale import FRAME_KEY, apply_reference, training_files, training_reference
from ..fileio import atomic_write, tidy_output_dir
from ..precision import amp_dtype, autocast_to, needs_grad_scaler
from ..solver import clip_gradients
from . import comm
from .checkpoint import AtomicCheckpointer
from .data import build_test_loader, build_train_loader
from .model import build_model, is_imagenet_weights, load_imagenet_backbone

logger = logging.getLogger("deepacc")


# --------------------------------------------------------------------------------------------- setup
def setup_logging(output_dir: Optional[str]) -> None:
    """INFO logging to stderr (rank 0) and to ``output_dir/log.txt``; calling it again (another run in
    the same process) replaces the handlers it added before, so each run logs to its own folder."""
    rank = comm.get_rank()
    root = logging.getLogger()
    for h in getattr(root, "_deepacc_handlers", []):
        root.removeHandler(h)
        h.close()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter(f"[%(asctime)s r{rank}] %(name)s %(levelname)s: %(message)s", "%m/%d %H:%M:%S")
    handlers = []
    if rank == 0:
        handlers.append(logging.StreamHandler())
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root._deepacc_handlers = handlers


def resolve_device(cfg) -> torch.device:
    want = str(cfg.MODEL.DEVICE)
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            logger.warning("MODEL.DEVICE is %s but CUDA is not available: running on CPU.", want)
            return torch.device("cpu")
        if comm.get_world_size() > 1:
            return torch.device("cuda", torch.cuda.current_device())
    return torch.device(want)


def seed_all(seed: int) -> int:
    if seed < 0:
        seed = int.from_bytes(os.urandom(2), "little")
    seed += comm.get_rank()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def dataset_dicts(names) -> List[Dict]:
    from ..data.catalog import get_dataset_dicts

    out = []
    for name in names:
        out.extend(get_dataset_dicts(name))
    return out


# ----------------------------------------------------------------------------------- optimisation
def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD; norm-layer parameters use ``WEIGHT_DECAY_NORM``, biases ``BIAS_LR_FACTOR``/``WEIGHT_DECAY_BIAS``."""
    norm_types = (nn.GroupNorm, nn.BatchNorm2d, nn.SyncBatchNorm, nn.LayerNorm)
    base_lr, wd = float(cfg.SOLVER.BASE_LR), float(cfg.SOLVER.WEIGHT_DECAY)
    wd_bias = wd if cfg.SOLVER.WEIGHT_DECAY_BIAS is None else float(cfg.SOLVER.WEIGHT_DECAY_BIAS)
    groups, seen = [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr, decay = base_lr, wd
            if isinstance(module, norm_types):
                decay = float(cfg.SOLVER.WEIGHT_DECAY_NORM)
            elif name == "bias":
                lr, decay = base_lr * float(cfg.SOLVER.BIAS_LR_FACTOR), wd_bias
            groups.append({"params": [p], "lr": lr, "weight_decay": decay, "initial_lr": lr})
    return torch.optim.SGD(groups, lr=base_lr, momentum=float(cfg.SOLVER.MOMENTUM),
                           nesterov=bool(cfg.SOLVER.NESTEROV))


class WarmupMultiStep:
    """LR multiplier: fvcore ``MultiStepParamScheduler`` (x GAMMA at each of SOLVER.STEPS) times a
    linear or constant warm-up over ``WARMUP_ITERS`` starting at ``WARMUP_FACTOR``.

    Its attributes are plain numbers and lists: ``LambdaLR`` stores them in every checkpoint, which
    must load with ``torch.load(weights_only=True)``.
    """

    def __init__(self, cfg):
        self.max_iter = int(cfg.SOLVER.MAX_ITER)
        self.milestones = [int(s) for s in cfg.SOLVER.STEPS if 0 < int(s) < self.max_iter]
        if len(self.milestones) < len(cfg.SOLVER.STEPS):
            logger.warning("SOLVER.STEPS %s outside (0, MAX_ITER=%d) are ignored.", list(cfg.SOLVER.STEPS), self.max_iter)
        self.values = [float(cfg.SOLVER.GAMMA) ** i for i in range(len(self.milestones) + 1)]
        self.warmup_iters = int(cfg.SOLVER.WARMUP_ITERS)
        self.warmup_factor = float(cfg.SOLVER.WARMUP_FACTOR)
        self.method = str(cfg.SOLVER.WARMUP_METHOD)
        if self.method not in ("linear", "constant"):
            raise ValueError(f"SOLVER.WARMUP_METHOD {self.method!r}: use 'linear' or 'constant'")

    def __call__(self, it: int) -> float:
        value = 1.0
        if self.milestones:
            steps = MultiStepParamScheduler(self.values, num_updates=self.max_iter, milestones=self.milestones)
            value = steps(min(it, self.max_iter - 1) / self.max_iter)
        if it < self.warmup_iters:
            if self.method == "constant":
                return value * self.warmup_factor
            alpha = it / self.warmup_iters
            return value * (self.warmup_factor * (1 - alpha) + alpha)
        return value


def build_lr_scheduler(cfg, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupMultiStepLR":
        raise ValueError(f"SOLVER.LR_SCHEDULER_NAME {cfg.SOLVER.LR_SCHEDULER_NAME!r}: this engine has WarmupMultiStepLR")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupMultiStep(cfg))


# ------------------------------------------------------------------------------------- evaluation
def to_prediction(det: Dict[str, torch.Tensor], image_id=None) -> Dict:
    """One image's model output -> the project's prediction dict (numpy, image coordinates)."""
    def part(prefix):
        return {
            "boxes": det[prefix + "boxes"].detach().float().cpu().numpy(),
            "scores": det[prefix + "scores"].detach().float().cpu().numpy(),
            "classes": det[prefix + "classes"].detach().cpu().numpy().astype(np.int64),
            "class_probs": det[prefix + "class_probs"].detach().float().cpu().numpy(),
        }
    out = {"instances": part(""), "instances_top1": part("top1_")}
    if image_id is not None:
        out["image_id"] = image_id
    return out


def scale_of(record: Dict) -> Optional[float]:
    """The scale-aware resize factor the mapper chose for an image (``None``: the usual rule)."""
    info = record.get("input_scale") or {}
    return float(info["factor"]) if info.get("mode") == "scale_aware" else None


@torch.no_grad()
def inference_on_dataset(model: nn.Module, loader, evaluator, device, amp_dtype: Optional[torch.dtype] = None) -> Dict:
    model.eval()
    evaluator.reset()
    total = len(loader)
    bar = tqdm(loader, total=total, desc="inference", disable=not comm.is_main_process(), leave=False)
    start = time.perf_counter()
    for batch in bar:
        images = [b[0].to(device, non_blocking=True) for b in batch]
        scales = [scale_of(b[2]) for b in batch]
        with autocast_to(device.type, amp_dtype):
            outputs = model(images, scales=scales)
        evaluator.process([to_prediction(o, b[2]["image_id"]) for o, b in zip(outputs, batch)])
    elapsed = time.perf_counter() - start
    logger.info("Inference on %d images of this process: %.3f s/image.", total, elapsed / max(total, 1))
    return evaluator.evaluate()


def build_evaluator(cfg, dataset_name: str, dicts: List[Dict]):
    from ..evaluation import MetaphaseEvaluator
    from ..karyotype.assignment import assignment_settings

    out = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    return MetaphaseEvaluator(dicts, output_dir=out, score_thresh=cfg.TEST.DEEPACC.SCORE_THRESH,
                              nms_thresh=cfg.TEST.DEEPACC.NMS_THRESH, iou_thresh=cfg.TEST.DEEPACC.IOU_THRESH,
                              distributed=True, extra_copy_cost=assignment_settings(cfg).cost)


def test(cfg, model: nn.Module, device) -> Dict[str, Dict]:
    """Evaluate on every dataset of ``DATASETS.TEST``; the evaluator logs the paper-style tables."""
    results = {}
    for name in cfg.DATASETS.TEST:
        dicts = dataset_dicts([name])
        classifier = model.head.classifier
        classifier.pop_centre_usage()
        res = inference_on_dataset(model, build_test_loader(cfg, dicts), build_evaluator(cfg, name, dicts),
                                   device, amp_dtype(cfg, device.type))
        if classifier.siamese_enabled:
            total, images = comm.reduce_sum(list(classifier.pop_centre_usage()))
            if images:
                res["siamese_local_centre_pct"] = 100.0 * total / images
                logger.info("Siamese branch on %s: %.1f %% of the classes per image take a local centre "
                            "(most confident proposal's margin probability > delta = %.2f).", name,
                            res["siamese_local_centre_pct"], classifier.threshold)
        results[name] = res  # the evaluator has logged its tables (headline and per class)
    return results


# ---------------------------------------------------------------------------------------- writers
class MetricsWriter:
    """JSON lines in ``OUTPUT_DIR/metrics.json`` (Detectron2's format), plus TensorBoard when installed."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, "metrics.json")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(output_dir)
        except Exception:  # tensorboard is optional
            self.tb = None

    def write(self, iteration: int, scalars: Dict[str, float]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"iteration": iteration, **scalars}, sort_keys=True) + "\n")
        if self.tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, iteration)

    def close(self):
        if self.tb is not None:
            self.tb.close()


def _flatten(results: Dict[str, Dict]) -> Dict[str, float]:
    flat = {}
    for ds, res in results.items():
        for k, v in res.items():
            if isinstance(v, (int, float)):
                flat[f"{ds}/{k}"] = float(v)
    return flat


# ---------------------------------------------------------------------------------------- trainer
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


# ---------------------------------------------------------------------------------------- trainer
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
        self.amp_dtype = amp_dtype(cfg, self.device.type)
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(cfg, self.device.type))
        if self.amp_dtype is not None:
            logger.info("Mixed precision: %s autocast on %s.", str(self.amp_dtype).replace("torch.", ""),
                        self.device.type)
        self.checkpointer = AtomicCheckpointer(self.model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(),
                                               optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler)
        self.checkpointer.extra_state = dict(self.scale_state)  # the scale-aware reference, in every checkpoint
        self.ddp = self.model
        if comm.get_world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids, broadcast_buffers=False,
                                                           find_unused_parameters=False)
        self.start_iter = 0
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
        cfg = self.cfg
        main = comm.is_main_process()
        if self.start_iter >= self.max_iter:
            logger.info("Training already finished (iteration %d of %d).", self.start_iter, self.max_iter)
            return test(cfg, self.model, self.device) if cfg.DATASETS.TEST else {}
        loader = build_train_loader(cfg, self.train_dicts, start_iter=self.start_iter)
        periodic = PeriodicCheckpointer(self.checkpointer, int(cfg.SOLVER.CHECKPOINT_PERIOD), max_iter=self.max_iter)
        if main:
            tidy_output_dir(cfg.OUTPUT_DIR, self.start_iter)
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
                    writer.write(it, scalars)
                    bar.set_postfix(loss=f"{scalars['total_loss']:.3f}", lr=f"{lr:.2g}")
            bar.update(1)
            last = it + 1 == self.max_iter
            if cfg.DATASETS.TEST and ((eval_period > 0 and (it + 1) % eval_period == 0) or last):
                results = test(cfg, self.model, self.device)
                if main:
                    writer.write(it, _flatten(results))
                self.ddp.train()
        bar.close()
        if writer is not None:
            writer.close()
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
        ckpt = AtomicCheckpointer(model, cfg.OUTPUT_DIR)
        resumed = args.resume and ckpt.has_checkpoint()
        loaded = ckpt.get_checkpoint_file() if resumed else str(cfg.MODEL.WEIGHTS)
        extra = ckpt.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume) or {}
        info = check_loaded_weights(loaded, getattr(ckpt, "incompatible", None), getattr(args, "allow_untrained", False))
        logger.info("Evaluating weights %s (sha256 %s)", info["weights"] or "(none)", info["sha256"])
        apply_reference(cfg, extra, training_files(cfg))
        return test(cfg, model, device)
    trainer = Trainer(cfg)
    _dump_config(cfg)  # again: with what the trainer measured (INPUT.SCALE_AWARE.REFERENCE_*)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def _dump_config(cfg) -> None:
    if comm.is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        atomic_write(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump().encode("utf-8"))


def launch_main(args) -> None:
    from .launch import launch

    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
