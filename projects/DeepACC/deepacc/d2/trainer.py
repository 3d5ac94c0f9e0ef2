"""Detectron2 training / evaluation of DeepACC (the Detectron2 engine of ``train_net.py``).

``train_net.py`` calls :func:`launch_main` when Detectron2 is the engine; this module also runs on
its own with Detectron2's usual flags::

    python -m deepacc.d2.trainer --config-file configs/DeepACC_R101_FPN_2x.yaml --num-gpus 8
    python -m deepacc.d2.trainer --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
    python -m deepacc.d2.trainer --config-file ... --resume

The same YAML files drive the torchvision engine.
"""
from __future__ import annotations

import logging
import os
import weakref

import torch

from detectron2.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, default_argument_parser, \
    default_setup, launch
from detectron2.engine.defaults import create_ddp_model
from detectron2.engine.train_loop import TrainerBase
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, verify_results
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger

from ..checkpoint_io import check_resume_start, load_weights_to_evaluate
from ..config import check_config, dump_config, load_config, resolve_epoch_schedule
from ..data.preflight import check_training_datasets
from ..data.scale import apply_reference, reference_state, training_files, training_reference
from ..fileio import LazyAppendFile, refuse_link, tidy_output_dir
from ..karyotype import AGNOSTIC
from ..precision import amp_dtype, autocast_to, resolve_precision
from ..solver import clip_gradients
from .checkpoint import DeepACCCheckpointer  # Detectron2's, also reads DeepACC pretrained trunks
from .config import get_cfg, use_deepacc_meta_arch
from .mapper import DeepACCDatasetMapper, register_datasets
from .evaluator import DeepACCEvaluator

__all__ = ["Trainer", "setup", "main", "launch_main"]

logger = logging.getLogger("deepacc.d2")


class _MetricPrinter(CommonMetricPrinter):
    """Detectron2's console printer, whose own ETA estimate divides by the iterations since its last
    write: zero when a run shorter than the iteration timer's warm-up (3 iterations) writes twice at
    its last iteration (periodic write, then ``after_train``). No ETA is printed then."""

    def _get_eta(self, storage):
        last = self._last_write
        if last is not None and last[0] == storage.iter:
            try:
                storage.history("time")
            except KeyError:
                return None
        return super()._get_eta(storage)


class MetricsJSONWriter(JSONWriter):
    """Detectron2's ``JSONWriter``, whose file is a :class:`deepacc.fileio.LazyAppendFile`: opened at
    the first write, i.e. after :meth:`Trainer.resume_or_load` tidied ``metrics.json`` (rows dropped
    or the file rotated, by replacing it), and never through a symbolic link (``UnsafeOutputError``).
    Detectron2's own opens the file in append mode when built, with the hooks, before the tidy-up."""

    def __init__(self, json_file, window_size=20):
        super().__init__(os.devnull, window_size)  # Detectron2's set-up of the rest, on a harmless file
        self._file_handle.close()
        self._file_handle = LazyAppendFile(json_file)


class CPUAutocastTrainer(SimpleTrainer):
    """``SimpleTrainer`` whose iterations run under CPU autocast (bfloat16): Detectron2's ``AMPTrainer``
    is CUDA-only, and bf16 needs no loss scaling."""

    def __init__(self, model, data_loader, optimizer, dtype=torch.bfloat16):
        super().__init__(model, data_loader, optimizer)
        self.dtype = dtype

    def run_step(self):
        with autocast_to("cpu", self.dtype):
            super().run_step()


def build_step_trainer(cfg, model, data_loader, optimizer):
    """The iteration runner for ``SOLVER.AMP.*`` (see :mod:`deepacc.precision`): plain fp32, CPU bf16
    autocast, or Detectron2's ``AMPTrainer`` on CUDA (with a grad scaler only for float16)."""
    device_type = next(model.parameters()).device.type
    dtype = amp_dtype(cfg, device_type)
    if dtype is None:
        return SimpleTrainer(model, data_loader, optimizer)
    if device_type == "cpu":
        return CPUAutocastTrainer(model, data_loader, optimizer, dtype)
    if dtype == torch.float16:
        return AMPTrainer(model, data_loader, optimizer)
    return AMPTrainer(model, data_loader, optimizer, precision=dtype,
                      grad_scaler=torch.amp.GradScaler("cuda", enabled=False))


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with DeepACC's data mapper and evaluators.

    Evaluation: :class:`DeepACCEvaluator` (mAP, mAP_max, Acc, AER, ..., and the class-agnostic
    figures) and, on datasets whose ground truth names the 24 classes, Detectron2's ``COCOEvaluator``
    (``bbox`` AP; it knows only the dataset's ``thing_classes``, so class-agnostic chromosomes, category
    ``AGNOSTIC``, would be an unknown category to it) on each dataset of ``DATASETS.TEST``.
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__'s body (Detectron2 0.6), copied because it hard-codes, with no hook,
        # the three things changed here: DDP without device_ids for a CPU model (DDP refuses them;
        # `--num-gpus N MODEL.DEVICE cpu` trains with gloo), the step runner (build_step_trainer: CPU
        # bf16 autocast) and the checkpointer (DeepACCCheckpointer, the scale reference in every file).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_cpu = next(model.parameters()).device.type == "cpu"
        model = create_ddp_model(model, broadcast_buffers=False, **({"device_ids": None} if on_cpu else {}))
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DeepACCCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.checkpointer.extra_state = reference_state(cfg)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume=True):
        """Detectron2's, then (main process) the same tidy-up as the torchvision engine
        (:func:`deepacc.fileio.tidy_output_dir`): temp files of killed checkpoint writes removed;
        ``metrics.json`` rows of iterations to be redone dropped (resumed from a checkpoint), or an
        earlier run's ``metrics.json`` kept as ``metrics.json.1`` (a new run). The JSON writer, built
        with the hooks before this, opens the file only at its first write (:class:`MetricsJSONWriter`)."""
        resumed = bool(resume and self.checkpointer.has_checkpoint())
        super().resume_or_load(resume=resume)
        if comm.is_main_process():
            tidy_output_dir(self.cfg.OUTPUT_DIR, self.start_iter, resumed=resumed)

    def build_writers(self):
        """Detectron2's writers (console, ``metrics.json``, TensorBoard), made to work without
        ``tensorboard`` installed (its writer is left out, with one line saying so) and on runs
        shorter than Detectron2's timer warm-up (:class:`_MetricPrinter`)."""
        writers = [_MetricPrinter(self.max_iter), MetricsJSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))]
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
        except ImportError:
            logger.info("TensorBoard logging off: the 'tensorboard' package is not installed "
                        "(pip install tensorboard to get it).")
        else:
            writers.append(TensorboardXWriter(self.cfg.OUTPUT_DIR))
        return writers

    def train(self):
        """Detectron2's loop, except that a run resumed after its last iteration only evaluates, as
        the torchvision engine does (Detectron2 would run its hooks' ``after_train`` on an empty loop,
        where its ``CommonMetricPrinter`` divides by the zero iterations done when no other writer,
        e.g. TensorBoard's, has recorded a time)."""
        if self.start_iter >= self.max_iter:
            logger.info("Training already finished (iteration %d of %d).", self.start_iter, self.max_iter)
            if not self.cfg.DATASETS.TEST:
                return {}
            res = self.test(self.cfg, self.model)
            if comm.is_main_process():
                verify_results(self.cfg, res)
            return res
        return super().train()

    @classmethod
    def build_optimizer(cls, cfg, model):
        """Detectron2's optimizer, plus ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE "full_model"`` (the norm of all
        gradients together, as the torchvision engine and MMDetection's ``grad_clip`` do), which
        Detectron2's config does not offer."""
        clip = cfg.SOLVER.CLIP_GRADIENTS
        if not (clip.ENABLED and clip.CLIP_TYPE == "full_model"):
            return super().build_optimizer(cfg, model)
        plain = cfg.clone()
        plain.defrost()
        plain.SOLVER.CLIP_GRADIENTS.ENABLED = False
        optimizer = super().build_optimizer(plain, model)
        clip = clip.clone()

        class FullModelGradientClip(type(optimizer)):
            def step(self, closure=None):
                clip_gradients((p for g in self.param_groups for p in g["params"]), clip)
                return super().step(closure)

        optimizer.__class__ = FullModelGradientClip
        return optimizer

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluators = [DeepACCEvaluator.from_config(cfg, dataset_name, output_folder)]
        agnostic = any(int(a.get("category_id", 0)) == AGNOSTIC
                       for d in DatasetCatalog.get(dataset_name) for a in d.get("annotations", []))
        if not agnostic:
            evaluators.append(COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder))
        return DatasetEvaluators(evaluators)

    @classmethod
    def build_train_loader(cls, cfg):
        """Detectron2's loader with DeepACC's mapper, after the training data check
        (``DATASETS.CHECK``; with ``DATASETS.SKIP_INVALID`` the images with problems are left out)."""
        dicts = check_training_datasets(cfg, get_dicts=DatasetCatalog.get)
        if cfg.DATASETS.SKIP_INVALID:
            return build_detection_train_loader(cfg, mapper=DeepACCDatasetMapper(cfg, True), dataset=dicts)
        return build_detection_train_loader(cfg, mapper=DeepACCDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=DeepACCDatasetMapper(cfg, False))


def setup(args):
    """Config from ``args`` (``config_file``, ``opts``, ``eval_only``): Detectron2's defaults +
    DeepACC's keys + the YAML + the trailing overrides; datasets mirrored into Detectron2's
    catalogs; ``GeneralizedRCNN`` read as ``DeepACCRCNN`` (:func:`~deepacc.d2.config.use_deepacc_meta_arch`);
    ``SOLVER.EPOCHS`` turned into ``MAX_ITER`` / ``STEPS``; then ``default_setup``."""
    cfg = load_config(args.config_file, args.opts, get_cfg())
    check_config(cfg, args.config_file or "config")
    register_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    switched_meta_arch = use_deepacc_meta_arch(cfg)
    if int(cfg.SOLVER.EPOCHS) > 0 and not getattr(args, "eval_only", False):
        num_images = sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TRAIN)
        resolve_epoch_schedule(cfg, num_images)
    # scale-aware inference (deepacc.data.scale): the reference measured on the training images; for
    # --eval-only, main() takes the one stored in the checkpoint it loads
    if not getattr(args, "eval_only", False):
        training_reference(cfg, training_files(cfg, DatasetCatalog.get))
    cfg.freeze()
    if cfg.OUTPUT_DIR:  # Detectron2 writes these itself (plain open, which follows a link): refuse links first
        for name in ("config.yaml", "log.txt", f"log.txt.rank{comm.get_rank()}", "metrics.json"):
            refuse_link(os.path.join(cfg.OUTPUT_DIR, name))
    default_setup(cfg, args)
    if cfg.INPUT.NORMALIZATION == "per_image" and any(float(v) != 0.0 for v in cfg.MODEL.PIXEL_MEAN):
        logger.warning("INPUT.NORMALIZATION is 'per_image' but MODEL.PIXEL_MEAN is %s: the zero-mean images are "
                       "shifted again (set it to [0, 0, 0]; MODEL.PIXEL_STD only scales)", list(cfg.MODEL.PIXEL_MEAN))
    if switched_meta_arch:
        logger.info("MODEL.META_ARCHITECTURE GeneralizedRCNN -> DeepACCRCNN (adds the top-1 detection set "
                    "to the inference outputs; training is the same)")
    if int(cfg.SOLVER.EPOCHS) > 0:
        logger.info("SOLVER.EPOCHS %d -> SOLVER.MAX_ITER %d, SOLVER.STEPS %s", cfg.SOLVER.EPOCHS,
                    cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS))
    return cfg


def main(args):
    """Train (optionally ``--resume``), or evaluate with ``--eval-only``; runs in each process."""
    cfg = setup(args)
    logger.info("DeepACC engine: detectron2")
    if args.eval_only:
        model = Trainer.build_model(cfg)
        _, extra = load_weights_to_evaluate(DeepACCCheckpointer(model, save_dir=cfg.OUTPUT_DIR), cfg.MODEL.WEIGHTS,
                                            args.resume, getattr(args, "allow_untrained", False))
        cfg.defrost()  # the scale-aware reference of the checkpoint just loaded (read once)
        apply_reference(cfg, extra, training_files(cfg, DatasetCatalog.get))
        cfg.freeze()
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    if args.resume:  # a bad last_checkpoint is named now, not after the data check and the model build
        check_resume_start(cfg.OUTPUT_DIR)
    trainer = Trainer(cfg)
    if comm.is_main_process():  # config.yaml again, naming the precision the step runner uses
        dump_config(cfg, cfg.OUTPUT_DIR, resolve_precision(cfg, cfg.MODEL.DEVICE.split(":")[0], log=False))
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def launch_main(args):
    """Run :func:`main` in ``args.num_gpus`` processes per machine (Detectron2's ``launch``;
    NCCL on GPUs, gloo on the CPU)."""
    dist_url = getattr(args, "dist_url", None) or "auto"
    return launch(main, int(args.num_gpus), num_machines=int(args.num_machines),
                  machine_rank=int(args.machine_rank), dist_url=dist_url, args=(args,))


if __name__ == "__main__":
    launch_main(default_argument_parser().parse_args())
