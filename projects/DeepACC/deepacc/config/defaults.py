"""DeepACC's config keys and their defaults, and the functions that read them.

Every equation and hyper-parameter of the DeepACC paper maps to a key of ``MODEL.DEEPACC``:

====================================  =======  =====================================================
key                                    default  paper
====================================  =======  =====================================================
MODEL.DEEPACC.DECOUPLED_HEAD           True     §2.1: classification and regression streams share no FC
MODEL.DEEPACC.AAM.ENABLED              True     §2.2, Eq. 1: margin branch trained with AAM loss
MODEL.DEEPACC.AAM.SCALE                64.0     §3.1: s
MODEL.DEEPACC.AAM.MARGIN               0.25     §3.1: m
MODEL.DEEPACC.AAM.LOSS_WEIGHT          0.1      Eq. 4: alpha
MODEL.DEEPACC.SIAMESE.ENABLED          True     §2.3, Eq. 2: siamese inference branch (final scores)
MODEL.DEEPACC.SIAMESE.THRESHOLD        0.5      Eq. 2: delta (not given in the paper)
MODEL.DEEPACC.SIAMESE.LOSS_WEIGHT      1.0      Eq. 4: beta
MODEL.DEEPACC.SIAMESE.DETACH_CENTERS   False    stop gradients through the local class centres
MODEL.DEEPACC.GIA.ENABLED              True     §2.4, Eq. 3: Group Inner-Adjacency loss
MODEL.DEEPACC.GIA.LOSS_WEIGHT          0.1      Eq. 4: gamma
====================================  =======  =====================================================

Beyond the paper (ours): ``MODEL.DEEPACC.AGNOSTIC_LOSS_WEIGHT`` (1.0), how class-agnostic ground
truth (category "chromosome") counts in the classification losses.
"""
from __future__ import annotations

import functools
import math

from ..settings import CallThresholds, HeadOptions
from .d2_defaults import CfgNode, _detectron2_defaults


def add_deepacc_config(cfg) -> None:
    """Add DeepACC's keys (with their defaults) to a Detectron2 or framework-free config.

    Works on any fvcore/yacs ``CfgNode``; it is the one place those defaults are written.
    """
    _C = cfg
    _C.MODEL.DEEPACC = type(cfg)()
    # §2.1: separate classification stream (2 x FC 1024) from the regression stream (2 x FC 1024).
    # False gives the plain Faster R-CNN box head (one shared 2-FC trunk), Table 1 row (a).
    _C.MODEL.DEEPACC.DECOUPLED_HEAD = True
    # Weight of the plain cross-entropy loss of the linear classifier used when neither the margin
    # branch nor the siamese branch is enabled (Table 1 rows (a), (b)).
    _C.MODEL.DEEPACC.CLS_LOSS_WEIGHT = 1.0

    # §2.2, Eq. 1: margin branch = bias-free cosine classifier over K+1 classes, AAM loss.
    _C.MODEL.DEEPACC.AAM = type(cfg)()
    # True: train the margin branch with the additive angular margin MARGIN.
    # False while SIAMESE.ENABLED: the margin branch is still needed to pick local class centres; it
    # is then trained with the same loss at margin 0 (normalised softmax), Table 1 row (d).
    _C.MODEL.DEEPACC.AAM.ENABLED = True
    _C.MODEL.DEEPACC.AAM.SCALE = 64.0  # s
    _C.MODEL.DEEPACC.AAM.MARGIN = 0.25  # m
    _C.MODEL.DEEPACC.AAM.LOSS_WEIGHT = 0.1  # alpha in Eq. 4

    # §2.3, Eq. 2: siamese inference branch; its softmax scores are the model's final scores.
    _C.MODEL.DEEPACC.SIAMESE = type(cfg)()
    _C.MODEL.DEEPACC.SIAMESE.ENABLED = True
    # delta: a class takes the L2-normalised feature of its most confident proposal in the image as
    # its weight when that proposal's margin-branch probability for the class is > THRESHOLD.
    _C.MODEL.DEEPACC.SIAMESE.THRESHOLD = 0.5
    _C.MODEL.DEEPACC.SIAMESE.LOSS_WEIGHT = 1.0  # beta in Eq. 4
    # Stop gradients flowing into the features that serve as local class centres.
    _C.MODEL.DEEPACC.SIAMESE.DETACH_CENTERS = False

    # §2.4, Eq. 3: Group Inner-Adjacency loss over the seven Denver groups (needs the margin branch).
    _C.MODEL.DEEPACC.GIA = type(cfg)()
    _C.MODEL.DEEPACC.GIA.ENABLED = True
    _C.MODEL.DEEPACC.GIA.LOSS_WEIGHT = 0.1  # gamma in Eq. 4

    # Ours, beyond the paper: class-agnostic ground truth (category "chromosome", e.g. BioImLab spreads
    # read from LabelMe) trains the RPN, the box regression and chromosome-vs-background; in the
    # classification losses its proposals count with this weight through the likelihood of "one of
    # the 24 classes" (no margin, no GIA), so they never teach one class (deepacc.modeling.losses).
    # 0: they teach the RPN and the boxes only. Without such images in DATASETS.TRAIN it does nothing.
    _C.MODEL.DEEPACC.AGNOSTIC_LOSS_WEIGHT = 1.0

    # §3.1: "All images are normalized by mean and standard deviation": "per_image" standardises each
    # image by its own mean and std in the data mapper (then set MODEL.PIXEL_MEAN 0 / PIXEL_STD 1);
    # "none" leaves 0..255 pixels for MODEL.PIXEL_MEAN / PIXEL_STD.
    _C.INPUT.NORMALIZATION = "per_image"
    # Image polarity (ours; deepacc.data.polarity): the model works on dark chromosomes on a light
    # background (G-band). "auto" = recognise bright-on-dark images (fluorescence: Q-band, DAPI) from
    # the image itself and invert them (255 - x) where they are read, in both engines' mappers
    # (training and inference) and the predictors; a dark-on-light image is passed on bit-identical.
    # "dark_on_light" = never invert (the images as stored); "bright_on_dark" = always invert.
    _C.INPUT.POLARITY = "auto"

    # Scale-aware inference (ours, beyond the paper; deepacc.data.scale): each image is resized so that
    # its chromosomes (size measured on the image) have the size the model saw in training, instead of
    # "short side to MIN_SIZE_TEST". REFERENCE_SIZE: that size in model-input pixels; 0 = measured on
    # the training images when training starts, stored in the checkpoints and read back from them.
    # The factor stays within [MIN_FACTOR, MAX_FACTOR] x the usual one and gives a long side of at most
    # MAX_SIZE. FRAMED_STATS: the per-image normalisation statistics are taken over a window around the
    # spread of the training frames' area in chromosome units (REFERENCE_FRAME, measured and stored
    # like REFERENCE_SIZE), not over the whole image, whose framing changes them. Training itself keeps
    # the usual resize and statistics.
    _C.INPUT.SCALE_AWARE = type(cfg)()
    _C.INPUT.SCALE_AWARE.ENABLED = True
    _C.INPUT.SCALE_AWARE.REFERENCE_SIZE = 0.0
    # No rescaling while the size at the usual factor is within TOLERANCE (relative) of the reference,
    # beyond it to the tolerance's edge; 0 = every image to the reference size (best on the G-band val
    # cells, docs/scale.md).
    _C.INPUT.SCALE_AWARE.TOLERANCE = 0.0
    _C.INPUT.SCALE_AWARE.FRAMED_STATS = True
    _C.INPUT.SCALE_AWARE.REFERENCE_FRAME = 0.0
    _C.INPUT.SCALE_AWARE.MIN_FACTOR = 0.25
    _C.INPUT.SCALE_AWARE.MAX_FACTOR = 4.0
    _C.INPUT.SCALE_AWARE.MAX_SIZE = 3000

    # Epoch-based schedule (the paper trains 24 epochs with steps at 16 and 22). When EPOCHS > 0 the
    # trainer derives SOLVER.MAX_ITER and SOLVER.STEPS from the training-set size and IMS_PER_BATCH.
    _C.SOLVER.EPOCHS = 0
    _C.SOLVER.EPOCH_STEPS = (16, 22)

    # Mixed precision (SOLVER.AMP.ENABLED, Detectron2's key) on CPU and CUDA: "auto" = bfloat16 on a
    # CPU whose oneDNN has bf16 kernels (AVX-512-BF16 / AMX) and float32 on any other CPU (bf16 is
    # emulated there, 12-30x slower), float16 + loss scaling on CUDA; or "bfloat16" / "float16" (CUDA)
    # / "float32". The margin and siamese branches stay fp32 whatever this says. See deepacc.precision.
    _C.SOLVER.AMP.PRECISION = "auto"
    # Channels-last (NHWC) convolutions: "auto" = on, except GroupNorm backbones on the CPU (slow
    # NHWC GroupNorm backward there); "on" / "off" force it. Torchvision engine.
    _C.MODEL.CHANNELS_LAST = "auto"

    # The training data check before the first iteration (deepacc.data.preflight): "full" decodes
    # every training image, "header" reads headers only, "off" skips it. A broken dataset stops the
    # run with every problem named, unless SKIP_INVALID leaves the bad images out (logged).
    _C.DATASETS.CHECK = "full"
    _C.DATASETS.SKIP_INVALID = False

    # Evaluation thresholds of Acc / AER (paper §3.1), used by the DeepACC evaluator.
    _C.TEST.DEEPACC = type(cfg)()
    _C.TEST.DEEPACC.SCORE_THRESH = 0.5
    _C.TEST.DEEPACC.NMS_THRESH = 0.7
    _C.TEST.DEEPACC.IOU_THRESH = 0.5
    # Review flags of the numerical summary (deepacc-predict, report, karyogram): calls scoring below
    # REVIEW_SCORE, or whose two most probable classes differ by less than REVIEW_MARGIN, are flagged.
    _C.TEST.DEEPACC.REVIEW_SCORE = 0.7
    _C.TEST.DEEPACC.REVIEW_MARGIN = 0.2
    # Karyotype-consistent class assignment of each spread's calls (ours, beyond the paper; see
    # deepacc.karyotype.assignment): the labels of the calls kept at SCORE_THRESH / NMS_THRESH are
    # chosen jointly, 2 free copies per autosome and X, 1 for Y, EXTRA_COPY_COST (log-probability)
    # per copy beyond them. Used by the evaluator (Acc, AER, confusion, karyotype; not mAP / mAP_max,
    # which score the model's detections), deepacc-predict, the summary and the karyogram.
    _C.TEST.DEEPACC.ASSIGNMENT = type(cfg)()
    _C.TEST.DEEPACC.ASSIGNMENT.ENABLED = True
    _C.TEST.DEEPACC.ASSIGNMENT.EXTRA_COPY_COST = 3.0


def get_cfg() -> CfgNode:
    """A framework-free config with Detectron2's defaults and DeepACC's keys."""
    cfg = _detectron2_defaults()
    add_deepacc_config(cfg)
    return cfg


def resolve_epoch_schedule(cfg, num_train_images: int) -> None:
    """Turn ``SOLVER.EPOCHS`` / ``SOLVER.EPOCH_STEPS`` into ``MAX_ITER`` / ``STEPS`` in place.

    One epoch is ``ceil(num_train_images / SOLVER.IMS_PER_BATCH)`` iterations. Does nothing when
    ``SOLVER.EPOCHS`` is 0.
    """
    epochs = int(cfg.SOLVER.EPOCHS)
    if epochs <= 0:
        return
    if num_train_images <= 0:
        raise ValueError("SOLVER.EPOCHS > 0 needs a non-empty training set")
    per_epoch = int(math.ceil(num_train_images / float(cfg.SOLVER.IMS_PER_BATCH)))
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.SOLVER.MAX_ITER = epochs * per_epoch
    cfg.SOLVER.STEPS = tuple(int(e) * per_epoch for e in cfg.SOLVER.EPOCH_STEPS if int(e) < epochs)
    if was_frozen:
        cfg.freeze()


def head_options(cfg) -> HeadOptions:
    """The DeepACC head's arguments, read from a config (shared by both engines):
    :class:`deepacc.settings.HeadOptions`, frozen."""
    d = cfg.MODEL.DEEPACC
    name = cfg.MODEL.ROI_HEADS.NAME
    # Detectron2's own StandardROIHeads means the plain Faster R-CNN box head, whatever DEEPACC says.
    plain = name == "StandardROIHeads"
    return HeadOptions(
        num_classes=int(cfg.MODEL.ROI_HEADS.NUM_CLASSES),
        fc_dim=int(cfg.MODEL.ROI_BOX_HEAD.FC_DIM),
        num_fc=int(cfg.MODEL.ROI_BOX_HEAD.NUM_FC),
        decoupled=bool(d.DECOUPLED_HEAD) and not plain,
        cls_agnostic_bbox_reg=bool(cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG),
        cls_loss_weight=float(d.CLS_LOSS_WEIGHT),
        aam_enabled=bool(d.AAM.ENABLED) and not plain,
        aam_scale=float(d.AAM.SCALE),
        aam_margin=float(d.AAM.MARGIN),
        aam_weight=float(d.AAM.LOSS_WEIGHT),
        siamese_enabled=bool(d.SIAMESE.ENABLED) and not plain,
        siamese_threshold=float(d.SIAMESE.THRESHOLD),
        siamese_weight=float(d.SIAMESE.LOSS_WEIGHT),
        siamese_detach=bool(d.SIAMESE.DETACH_CENTERS),
        gia_enabled=bool(d.GIA.ENABLED) and not plain,
        gia_weight=float(d.GIA.LOSS_WEIGHT),
        agnostic_weight=float(d.AGNOSTIC_LOSS_WEIGHT),
    )


def method_of(cfg) -> str:
    """The name of the config's model in the metrics tables (:func:`deepacc.settings.method_label`:
    ``"Faster R-CNN"``, ``"Faster R-CNN (sep)"``, ``"DeepACC"``, ``"DeepACC (AAM)"``, ...)."""
    return head_options(cfg).method_label(str(cfg.MODEL.ROI_HEADS.NAME))


def call_thresholds(cfg=None) -> CallThresholds:
    """The thresholds of ``cfg`` (default: the project's defaults, :func:`default_calls`), as the frozen
    :class:`deepacc.settings.CallThresholds` (defined there, with the same numbers as the default
    config in :data:`deepacc.settings.DEFAULT_CALLS`)."""
    t = (cfg if cfg is not None else get_cfg()).TEST.DEEPACC
    return CallThresholds(float(t.SCORE_THRESH), float(t.NMS_THRESH), float(t.IOU_THRESH),
                          float(t.REVIEW_SCORE), float(t.REVIEW_MARGIN))


@functools.lru_cache(maxsize=None)
def default_calls() -> CallThresholds:
    """The default thresholds (the paper's: score 0.5, NMS 0.7, IoU 0.5; review 0.7 / 0.2), read from
    the default config on first use (never at import): functions use these as their defaults instead
    of repeating the numbers."""
    return call_thresholds()
